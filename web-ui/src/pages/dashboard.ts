// Device health: cameras, services, and small graphs of the last hour (kept by the device).
import { api } from "../api";
import type { Ctx } from "../app";
import { h } from "../dom";
import { cameraRow, clockSkewWarning, featureLabel, formatUptime, type StatusResponse } from "../status";

interface History {
  interval_s: number;
  samples: { t: number; cpu: number; temp_c: number | null; disk_used_pct: number; fps: Record<string, number> }[];
}

/** A small line graph of values (nulls are gaps), with its label and latest value in words. */
export function sparkline(label: string, values: (number | null)[], unit: string, max?: number): HTMLElement {
  const w = 160, hgt = 40;
  const known = values.filter((v): v is number => v !== null);
  const top = max ?? Math.max(1, ...known);
  let d = "";
  if (values.length === 1 && values[0] !== null) values = [values[0], values[0]]; // one sample: a flat line
  values.forEach((v, i) => {
    if (v === null) return;
    const x = values.length > 1 ? (i / (values.length - 1)) * w : w;
    const y = hgt - (Math.min(v, top) / top) * hgt;
    d += `${d && values[i - 1] !== null ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const last = known.length ? known[known.length - 1] : null;
  const text = last === null ? "no data" : `${last.toFixed(unit === "%" ? 0 : 1)} ${unit}`;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${label} over the last hour, now ${text}`);
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", d || "M0,0");
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "1.5");
  svg.append(path);
  return h("figure", { class: "spark" }, svg, h("figcaption", {}, `${label}: ${text}`));
}

export async function dashboardPage(ctx: Ctx) {
  const meta = h("p", { class: "meta" });
  const alerts = h("ul", { class: "alerts", "aria-live": "polite" });
  const graphs = h("div", { class: "graphs" });
  const tbody = h("tbody");
  const services = h("dl");
  ctx.main.append(
    h("h1", {}, "Dashboard"),
    meta,
    alerts,
    h("section", { "aria-labelledby": "health-title" }, h("h2", { id: "health-title" }, "Health"), graphs),
    h(
      "section",
      { "aria-labelledby": "cams-title" },
      h("h2", { id: "cams-title" }, "Cameras"),
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, "Camera state, frame rate and errors"),
        h("thead", {}, h("tr", {}, ...["Camera", "Source", "Privacy", "State", "Frames/s", "Bitrate", "Dropped"].map((t) => h("th", { scope: "col" }, t)))),
        tbody,
      ),
    ),
    h("section", { "aria-labelledby": "svc-title" }, h("h2", { id: "svc-title" }, "Services"), services),
  );
  const refresh = async () => {
    try {
      const s = await api<StatusResponse>("GET", "/api/status");
      const skew = clockSkewWarning(s.device.time_ms, Date.now());
      meta.textContent = `${s.device.id} · board ${s.device.board} · firmware ${s.device.firmware_version} · up ${formatUptime(s.device.uptime_seconds)}`;
      alerts.replaceChildren();
      if (skew) alerts.append(h("li", {}, skew));
      tbody.replaceChildren();
      for (const c of s.cameras) {
        const r = cameraRow(c);
        const tr = h("tr", { class: r.tone }, h("th", { scope: "row" }, r.label), h("td", {}, r.source), h("td", {}, r.privacy), h("td", {}, r.state), h("td", {}, r.fps), h("td", {}, r.bitrate), h("td", {}, r.dropped));
        tbody.append(tr);
        if (r.problem) {
          alerts.append(h("li", {}, `${r.label}: ${r.problem}`));
        }
      }
      if (!s.cameras.length) tbody.append(h("tr", {}, h("td", { colspan: 7 }, "No cameras configured.")));
      services.replaceChildren();
      for (const [name, f] of [["MQTT fleet link", s.features.mqtt], ["Evidence upload", s.features.upload]] as const) {
        services.append(h("dt", {}, name), h("dd", {}, featureLabel(f)));
        if (f.state === "disconnected") alerts.append(h("li", {}, `${name}: ${f.reason}`));
      }
      const hist = await api<History>("GET", "/api/status/history");
      graphs.replaceChildren(
        sparkline("CPU", hist.samples.map((x) => x.cpu), "%", 100),
        sparkline("Temperature", hist.samples.map((x) => x.temp_c), "°C"),
        sparkline("Disk used", hist.samples.map((x) => x.disk_used_pct), "%", 100),
        ...s.cameras.map((c) => sparkline(`${c.name || c.id} frames/s`, hist.samples.map((x) => x.fps[c.id] ?? null), "fps")),
      );
    } catch (e) {
      alerts.replaceChildren(h("li", {}, `Cannot reach the device: ${(e as Error).message}`));
    }
  };
  await refresh();
  const timer = setInterval(refresh, 5000);
  ctx.onLeave(() => clearInterval(timer));
}
