import { describe, expect, it } from "vitest";
import { auditQuery, place, visiblePages } from "./nav";
import { problem, relative, segmentsIntersect } from "./polygon";

describe("polygons", () => {
  it("maps pointer positions into the frame and clamps", () => {
    expect(relative(160, 90, 320, 180)).toEqual([0.5, 0.5]);
    expect(relative(-5, 400, 320, 180)).toEqual([0, 1]);
  });
  it("finds crossings like the device does", () => {
    expect(segmentsIntersect([0, 0], [1, 1], [0, 1], [1, 0])).toBe(true);
    expect(segmentsIntersect([0, 0], [1, 0], [0, 1], [1, 1])).toBe(false);
    expect(problem([[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]])).toMatch(/cross/);
    expect(problem([[0.1, 0.1], [0.5, 0.1]])).toMatch(/3 points/);
    expect(problem([[0.1, 0.1], [0.5, 0.1], [0.9, 0.1]])).toMatch(/area/);
    expect(problem([[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]])).toBeNull();
  });
});

describe("navigation", () => {
  it("shows only the pages a role may see", () => {
    const viewer = visiblePages({ cameras: "view", recordings: "view", requests: "none", incidents: "view", users: "none", system: "none" });
    expect(viewer.map((p) => p.path)).toEqual(["/", "/cameras", "/recordings", "/incidents"]);
    const admin = visiblePages({ cameras: "manage", recordings: "manage", requests: "manage", incidents: "manage", incident_properties: "manage", users: "manage", system: "manage" });
    expect(admin.length).toBe(11);
  });
  it("builds the audit filter query", () => {
    expect(auditQuery({ actor: "admin", action: "", since: " " })).toBe("?actor=admin");
    expect(auditQuery({})).toBe("");
  });
});

import { cameraFromForm } from "./camera-form";

describe("camera form", () => {
  const base = { id: " gate ", name: "", kind: "rtsp", url: "rtsp://cam/1", username: "", password: "", transport: "tcp", device: "", path: "", width: "", height: "", fps: "", filter: "faces-plates", mount: "fixed", lat: "", lon: "", retention_days: "", storage: "anonymized" };
  it("sends only the keys of the chosen source, empty fields left out", () => {
    expect(cameraFromForm(base)).toEqual({ id: "gate", source: { kind: "rtsp", url: "rtsp://cam/1", transport: "tcp" }, filter: "faces-plates", mount: "fixed", storage: "anonymized" });
    const syn = cameraFromForm({ ...base, kind: "synthetic", width: "320", height: "240", fps: "5", lat: "52.5", lon: "13.4", retention_days: "7" });
    expect(syn.source).toEqual({ kind: "synthetic", width: 320, height: 240, fps: 5 });
    expect(syn.position).toEqual({ lat: 52.5, lon: 13.4 });
    expect(syn.retention_days).toBe(7);
  });
  it("lets the device name a half-given position", () => {
    expect(cameraFromForm({ ...base, lat: "52.5" }).position).toEqual({ lat: 52.5, lon: null });
  });
});

describe("timeline", () => {
  it("places stretches on the bar and clips them to the window", () => {
    expect(place(0, 100, { from_ms: 25, to_ms: 75 })).toEqual({ left: 25, width: 50 });
    expect(place(0, 100, { from_ms: -50, to_ms: 10 })).toEqual({ left: 0, width: 10 });
  });
});

describe("incident sequence draft", () => {
  it("keeps marked periods once each and survives bad storage", async () => {
    const { addToDraft, readDraft, writeDraft } = await import("./draft");
    const mem = new Map<string, string>();
    const store = { getItem: (k: string) => mem.get(k) ?? null, setItem: (k: string, v: string) => void mem.set(k, v) };
    const a = { camera: "dock", from: "2026-12-01T08:00:00.000Z", to: "2026-12-01T08:05:00.000Z" };
    let list = addToDraft([], a);
    list = addToDraft(list, { ...a });
    expect(list.length).toBe(1);
    writeDraft(addToDraft(list, { ...a, camera: "yard" }), store);
    expect(readDraft(store).map((d) => d.camera)).toEqual(["dock", "yard"]);
    mem.set("veil.incident-draft", "{not json");
    expect(readDraft(store)).toEqual([]);
    mem.set("veil.incident-draft", JSON.stringify([{ camera: 1 }, a]));
    expect(readDraft(store)).toEqual([a]);
  });
});
