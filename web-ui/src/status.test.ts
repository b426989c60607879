import { describe, expect, it } from "vitest";
import { cameraRow, clockSkewWarning, featureLabel, formatBitrate, formatUptime, type CameraStatus } from "./status";

const cam: CameraStatus = {
  id: "gate",
  name: "Gate",
  source: "synthetic",
  filter: "motion",
  masks: 2,
  width: 1280,
  height: 720,
  state: "running",
  fps: 14.96,
  frames_total: 1000,
  frames_dropped: 12345,
  frames_encoded: 990,
  fps_encoded: 15,
  bitrate_kbps: 4210,
  encoder: "openh264",
  encode_ms: 3.1,
  latency_ms: 6.2,
  queue_depth: 0,
};

describe("formatUptime", () => {
  it("shows the two largest units", () => {
    expect(formatUptime(42)).toBe("42 s");
    expect(formatUptime(125)).toBe("2 min 5 s");
    expect(formatUptime(7500)).toBe("2 h 5 min");
    expect(formatUptime(3 * 86400 + 4 * 3600 + 59)).toBe("3 d 4 h");
    expect(formatUptime(-5)).toBe("0 s");
  });
});

describe("cameraRow", () => {
  it("describes a running camera", () => {
    const row = cameraRow(cam);
    expect(row).toMatchObject({ label: "Gate (gate)", source: "synthetic 1280×720", state: "Running", fps: "15.0", bitrate: "4.2 Mbit/s", dropped: "12,345", tone: "ok" });
    expect(row.thumbnail).toBe("/api/cameras/gate/snapshot.jpg?width=320");
    expect(row.privacy).toBe("motion + 2 masks");
  });
  it("shows the error of a failing camera and hides its rate", () => {
    const row = cameraRow({ ...cam, name: "gate", state: "retrying", last_error: "camera unplugged", masks: 0, filter: "masks-only" });
    expect(row.privacy).toBe("masks-only");
    expect(row).toMatchObject({ label: "gate", state: "Retrying", fps: "–", bitrate: "–", problem: "camera unplugged", tone: "warn" });
    expect(row.thumbnail).toBeUndefined();
  });
});

describe("formatBitrate", () => {
  it("switches to Mbit/s at 1000 kbit/s", () => {
    expect(formatBitrate(435.4)).toBe("435 kbit/s");
    expect(formatBitrate(4210)).toBe("4.2 Mbit/s");
  });
});

describe("featureLabel", () => {
  it("names each state", () => {
    expect(featureLabel({ state: "not_configured" })).toBe("Not configured");
    expect(featureLabel({ state: "disconnected", reason: "TLS handshake failed" })).toBe("Disconnected: TLS handshake failed");
  });
});

describe("clockSkewWarning", () => {
  it("is silent within a minute and warns beyond", () => {
    expect(clockSkewWarning(1_000_000, 1_030_000)).toBeUndefined();
    expect(clockSkewWarning(0, 7_200_000)).toContain("2 h 0 min");
  });
});
