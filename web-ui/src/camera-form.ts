// The camera form: every key of a camera in the config file, with a "test connection" button
// that opens the source on the device and reads one frame.
import { api } from "./api";
import { field, h, select, showError } from "./dom";

export interface CameraConfig {
  id: string;
  name?: string;
  enabled?: boolean;
  source: Record<string, unknown> & { kind: string };
  filter?: string;
  mount?: string;
  position?: { lat: number; lon: number };
  retention_days?: number;
  storage?: string;
  masks?: unknown[];
}

export const FILTERS: [string, string][] = [
  ["faces-plates", "Faces and licence plates (default)"],
  ["faces", "Faces"],
  ["strict", "Faces, plates and anything moving"],
  ["motion", "Anything moving"],
  ["silhouette", "Whole picture as coarse blocks"],
  ["masks-only", "Masks only"],
];

/** The camera JSON for the API from the form's values (empty fields left out). */
export function cameraFromForm(v: Record<string, string>): CameraConfig {
  const num = (x: string) => (x.trim() === "" ? undefined : Number(x));
  const source: Record<string, unknown> & { kind: string } = { kind: v.kind };
  if (v.kind === "rtsp") Object.assign(source, { url: v.url, username: v.username || undefined, password: v.password || undefined, transport: v.transport || "tcp" });
  if (v.kind === "v4l2") Object.assign(source, { device: v.device });
  if (v.kind === "file") Object.assign(source, { path: v.path });
  if (v.kind === "synthetic" || v.kind === "v4l2") Object.assign(source, { width: num(v.width), height: num(v.height) });
  if (v.kind !== "rtsp") Object.assign(source, { fps: num(v.fps) });
  const cam: CameraConfig = { id: v.id.trim(), source, filter: v.filter, mount: v.mount, storage: v.storage };
  if (v.name.trim()) cam.name = v.name.trim();
  const lat = num(v.lat), lon = num(v.lon);
  if (lat !== undefined || lon !== undefined) cam.position = { lat: lat ?? NaN, lon: lon ?? NaN };
  const days = num(v.retention_days);
  if (days !== undefined) cam.retention_days = days;
  return JSON.parse(JSON.stringify(cam)); // drops undefined keys
}

/** A form to add a camera (no `existing`) or change one; calls `saved` after the device took it. */
export function cameraForm(existing: CameraConfig | null, saved: () => void): HTMLFormElement {
  const s = (existing?.source ?? { kind: "synthetic" }) as Record<string, string | number | undefined>;
  const str = (x: unknown) => (x === undefined || x === null ? "" : String(x));
  const f = {
    id: field("Camera id", "id", { required: true, placeholder: "e.g. gate-north", autocomplete: "off" }),
    name: field("Name", "name", { placeholder: "shown to people" }),
    kind: select("Source", "source.kind", [["synthetic", "Test pattern"], ["rtsp", "IP camera (RTSP)"], ["v4l2", "USB or CSI camera (V4L2)"], ["file", "Video file"]], str(s.kind)),
    url: field("RTSP address", "source.url", { placeholder: "rtsp://192.168.1.20:554/stream1" }),
    username: field("RTSP user", "source.username", { autocomplete: "off" }),
    password: field("RTSP password", "source.password", { type: "password", autocomplete: "new-password" }),
    transport: select("RTSP transport", "source.transport", [["tcp", "TCP (through firewalls)"], ["udp", "UDP"]], str(s.transport) || "tcp"),
    device: field("Device", "source.device", { placeholder: "/dev/video0" }),
    path: field("File", "source.path", { placeholder: "/var/lib/veil/clip.mp4" }),
    width: field("Width (pixels)", "source.width", { inputmode: "numeric" }),
    height: field("Height (pixels)", "source.height", { inputmode: "numeric" }),
    fps: field("Frames per second", "source.fps", { inputmode: "numeric" }),
    filter: select("Privacy filter", "filter", FILTERS, existing?.filter ?? "faces-plates"),
    mount: select("Mounted", "mount", [["fixed", "Fixed"], ["vehicle", "On a vehicle"]], existing?.mount ?? "fixed"),
    lat: field("Latitude (WGS 84)", "position.lat", { inputmode: "decimal", placeholder: "52.5200" }),
    lon: field("Longitude (WGS 84)", "position.lon", { inputmode: "decimal", placeholder: "13.4050" }),
    retention_days: field("Keep footage (days)", "retention_days", { inputmode: "numeric", placeholder: "device default" }),
    storage: select("Record", "storage", [["anonymized", "The anonymized stream"], ["originals", "The originals, encrypted (anonymized on export)"]], existing?.storage ?? "anonymized"),
  };
  if (existing) {
    f.id.input.value = existing.id;
    f.id.input.readOnly = true;
    f.name.input.value = existing.name ?? "";
    for (const k of ["url", "username", "password", "device", "path", "width", "height", "fps"] as const) f[k].input.value = str(s[k]);
    f.lat.input.value = str(existing.position?.lat);
    f.lon.input.value = str(existing.position?.lon);
    f.retention_days.input.value = str(existing.retention_days);
  }
  const bySource: Record<string, (keyof typeof f)[]> = {
    synthetic: ["width", "height", "fps"],
    rtsp: ["url", "username", "password", "transport"],
    v4l2: ["device", "width", "height", "fps"],
    file: ["path", "fps"],
  };
  const sourceFields = ["url", "username", "password", "transport", "device", "path", "width", "height", "fps"] as const;
  const showSource = () => {
    for (const k of sourceFields) f[k].wrap.hidden = !bySource[f.kind.input.value].includes(k);
  };
  f.kind.input.addEventListener("change", showSource);
  showSource();
  const result = h("p", { role: "status", class: "test-result" });
  const test = h("button", { type: "button" }, "Test connection");
  const form = h(
    "form",
    { novalidate: true, class: "camera-form", "aria-label": existing ? `Change camera ${existing.id}` : "Add a camera" },
    h("h2", {}, existing ? `Change ${existing.id}` : "Add a camera"),
    ...Object.values(f).map((x) => x.wrap),
    h("p", { class: "form-error", role: "alert" }),
    result,
    h("div", { class: "buttons" }, test, h("button", { type: "submit" }, existing ? "Save and restart camera" : "Add camera")),
  );
  const values = () => Object.fromEntries(Object.entries(f).map(([k, x]) => [k, x.input.value]));
  test.addEventListener("click", async () => {
    result.textContent = "Opening the source…";
    try {
      const r = await api<{ width: number; height: number; fps: number }>("POST", "/api/sources/test", { source: cameraFromForm(values()).source });
      showError(form, null);
      result.textContent = `Connected: ${r.width}×${r.height} at ${r.fps} frames/s.`;
    } catch (err) {
      result.textContent = "";
      showError(form, err);
    }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const cam = cameraFromForm(values());
      if (existing) await api("PUT", `/api/cameras/${encodeURIComponent(existing.id)}`, cam);
      else await api("POST", "/api/cameras", cam);
      saved();
    } catch (err) {
      showError(form, err);
    }
  });
  return form;
}
