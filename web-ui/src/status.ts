// Pure view logic for the status page: no DOM, so it is unit-tested in node.

export type CameraState = "starting" | "running" | "retrying" | "disabled" | "stopped";

export interface CameraStatus {
  id: string;
  name: string;
  source: string;
  filter: string;
  masks: number;
  width: number;
  height: number;
  state: CameraState;
  fps: number;
  frames_total: number;
  frames_dropped: number;
  frames_encoded: number;
  fps_encoded: number;
  bitrate_kbps: number;
  encoder: string;
  encode_ms: number;
  latency_ms: number;
  queue_depth: number;
  last_error?: string;
}

export type FeatureState =
  | { state: "not_configured" }
  | { state: "connected" }
  | { state: "disconnected"; reason: string };

export interface StatusResponse {
  device: {
    id: string;
    name: string;
    board: string;
    firmware_version: string;
    uptime_seconds: number;
    time_ms: number;
  };
  cameras: CameraStatus[];
  features: { mqtt: FeatureState; upload: FeatureState };
}

/** "3 d 4 h", "2 h 5 min", "42 s": the two largest units. */
export function formatUptime(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

export interface CameraRow {
  label: string;
  source: string;
  /** "motion + 2 masks" */
  privacy: string;
  state: string;
  fps: string;
  bitrate: string;
  dropped: string;
  /** The anonymized picture, when the camera runs. */
  thumbnail?: string;
  /** Shown under the row; a technician's next step. */
  problem?: string;
  tone: "ok" | "warn" | "off";
}

const STATE_LABELS: Record<CameraState, string> = {
  starting: "Starting",
  running: "Running",
  retrying: "Retrying",
  disabled: "Disabled",
  stopped: "Stopped",
};

export function cameraRow(c: CameraStatus): CameraRow {
  const tone = c.state === "running" ? "ok" : c.state === "disabled" || c.state === "stopped" ? "off" : "warn";
  return {
    label: c.name === c.id ? c.id : `${c.name} (${c.id})`,
    source: `${c.source} ${c.width}×${c.height}`,
    privacy: c.masks > 0 ? `${c.filter} + ${c.masks} mask${c.masks === 1 ? "" : "s"}` : c.filter,
    state: STATE_LABELS[c.state] ?? c.state,
    fps: c.state === "running" ? c.fps.toFixed(1) : "–",
    bitrate: c.state === "running" ? formatBitrate(c.bitrate_kbps) : "–",
    dropped: c.frames_dropped.toLocaleString("en-US"),
    thumbnail: c.state === "running" ? `/api/cameras/${encodeURIComponent(c.id)}/snapshot.jpg?width=320` : undefined,
    problem: c.last_error,
    tone,
  };
}

/** "850 kbit/s", "4.2 Mbit/s". */
export function formatBitrate(kbps: number): string {
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${Math.round(kbps)} kbit/s`;
}

export function featureLabel(f: FeatureState): string {
  switch (f.state) {
    case "not_configured":
      return "Not configured";
    case "connected":
      return "Connected";
    case "disconnected":
      return `Disconnected: ${f.reason}`;
  }
}

/** Warns when the device clock is far from the viewer's: footage times would be wrong. */
export function clockSkewWarning(deviceMs: number, browserMs: number): string | undefined {
  const skew = Math.abs(deviceMs - browserMs) / 1000;
  return skew > 60 ? `The device clock differs from this computer's by ${formatUptime(skew)}.` : undefined;
}
