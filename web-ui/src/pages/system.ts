// The device: identity, firmware, time, certificate and services.
import { api } from "../api";
import type { Ctx } from "../app";
import { h } from "../dom";
import { featureLabel, formatUptime, type StatusResponse } from "../status";

export async function systemPage(ctx: Ctx) {
  const s = await api<StatusResponse & { device: { https_fingerprint?: string } }>("GET", "/api/status");
  const row = (k: string, v: string) => [h("dt", {}, k), h("dd", {}, v)];
  ctx.main.append(
    h("h1", {}, "System"),
    h(
      "dl",
      {},
      ...row("Device id", s.device.id),
      ...row("Name", s.device.name),
      ...row("Board", s.device.board),
      ...row("Firmware", s.device.firmware_version),
      ...row("Up", formatUptime(s.device.uptime_seconds)),
      ...row("Device time", new Date(s.device.time_ms).toISOString()),
      ...row("Time zone", ctx.session.site?.time_zone ?? "UTC"),
      ...row("HTTPS certificate (SHA-256)", s.device.https_fingerprint ?? "plain HTTP on loopback"),
      ...row("MQTT fleet link", featureLabel(s.features.mqtt)),
      ...row("Evidence upload", featureLabel(s.features.upload)),
    ),
    h("p", {}, "Compare the certificate fingerprint with the one your browser shows before you trust this page on a new network."),
  );
}
