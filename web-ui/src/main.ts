import "./style.css";
import { cameraRow, clockSkewWarning, featureLabel, formatUptime, type StatusResponse } from "./status";

const $ = (id: string) => document.getElementById(id)!;

function cell(row: HTMLTableRowElement, text: string, header = false) {
  const el = document.createElement(header ? "th" : "td");
  if (header) el.setAttribute("scope", "row");
  el.textContent = text;
  row.appendChild(el);
}

function render(s: StatusResponse) {
  document.title = `${s.device.name} · Veil`;
  $("device-name").textContent = s.device.name;
  const skew = clockSkewWarning(s.device.time_ms, Date.now());
  $("device-meta").textContent =
    `${s.device.id} · board ${s.device.board} · firmware ${s.device.firmware_version} · up ${formatUptime(s.device.uptime_seconds)}` +
    (skew ? ` · ${skew}` : "");

  const body = $("cameras");
  body.replaceChildren();
  for (const c of s.cameras) {
    const r = cameraRow(c);
    const tr = document.createElement("tr");
    tr.className = r.tone;
    cell(tr, r.label, true);
    cell(tr, r.source);
    cell(tr, r.privacy);
    cell(tr, r.state);
    cell(tr, r.fps);
    cell(tr, r.bitrate);
    cell(tr, r.dropped);
    body.appendChild(tr);
    if (r.problem) {
      const err = document.createElement("tr");
      err.className = "problem";
      const td = document.createElement("td");
      td.colSpan = 7;
      td.textContent = r.problem;
      err.appendChild(td);
      body.appendChild(err);
    }
  }
  if (s.cameras.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 7;
    td.textContent = "No cameras configured.";
    tr.appendChild(td);
    body.appendChild(tr);
  }

  renderThumbnails(s);

  const services = $("services");
  services.replaceChildren();
  for (const [name, f] of [["MQTT fleet link", s.features.mqtt], ["Evidence upload", s.features.upload]] as const) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = featureLabel(f);
    services.append(dt, dd);
  }
}

let thumbnailsAt = 0;

/** One anonymized picture per running camera, refreshed every 5 s. */
function renderThumbnails(s: StatusResponse) {
  const now = Date.now();
  const fresh = now - thumbnailsAt > 5000;
  const box = $("thumbnails");
  const wanted = new Set<string>();
  for (const c of s.cameras) {
    const r = cameraRow(c);
    if (!r.thumbnail) continue;
    wanted.add(c.id);
    let fig = box.querySelector<HTMLElement>(`figure[data-camera="${CSS.escape(c.id)}"]`);
    if (!fig) {
      fig = document.createElement("figure");
      fig.dataset.camera = c.id;
      const img = document.createElement("img");
      img.alt = `Anonymized view of ${r.label}`;
      img.width = 320;
      const cap = document.createElement("figcaption");
      cap.textContent = r.label;
      fig.append(img, cap);
      box.appendChild(fig);
    }
    const img = fig.querySelector("img")!;
    if (fresh || !img.src) img.src = `${r.thumbnail}&t=${now}`;
  }
  for (const fig of Array.from(box.querySelectorAll<HTMLElement>("figure"))) {
    if (!wanted.has(fig.dataset.camera ?? "")) fig.remove();
  }
  if (fresh) thumbnailsAt = now;
}

async function refresh() {
  const error = $("error");
  try {
    const res = await fetch("/api/status", { headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error(`the device answered ${res.status}`);
    render((await res.json()) as StatusResponse);
    error.hidden = true;
  } catch (e) {
    error.textContent = `Cannot reach the device: ${(e as Error).message}. Retrying…`;
    error.hidden = false;
  }
}

refresh();
setInterval(refresh, 2000);
