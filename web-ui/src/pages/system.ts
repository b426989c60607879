// The device: identity, firmware, time, certificate and services.
import { api, can } from "../api";
import type { Ctx } from "../app";
import { h, showError, textArea } from "../dom";
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
  ctx.main.append(h("p", {}, h("a", { href: "/api/system/logs", download: "" }, "Download the device log")));
  if (can(ctx.session, "system", "manage")) {
    const reboot = h("button", { type: "button" }, "Restart the device");
    const said = h("p", { role: "status" });
    reboot.addEventListener("click", async () => {
      if (!confirm("Restart the device? Cameras stop recording for about a minute.")) return;
      try {
        await api("POST", "/api/system/reboot");
        said.textContent = "Restarting: this page reconnects when the device is back.";
      } catch (e) {
        said.textContent = (e as Error).message;
      }
    });
    ctx.main.append(h("div", { class: "buttons" }, reboot), said);
  }
  if (can(ctx.session, "system", "manage") && s.device.https_fingerprint) ctx.main.append(certificateForm());
}


/** Installs the site's own certificate (PEM) in place of the self-signed one. */
function certificateForm(): HTMLElement {
  const cert = textArea("Certificate (PEM, then any intermediates)", "cert_pem");
  const key = textArea("Private key (PEM)", "key_pem");
  const done = h("p", { role: "status" });
  const form = h("form", { novalidate: true, "aria-labelledby": "cert-title" }, h("h2", { id: "cert-title" }, "Install a certificate"), cert.wrap, key.wrap, h("p", { class: "form-error", role: "alert" }), h("button", { type: "submit" }, "Install certificate"), done);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api<{ fingerprint: string }>("PUT", "/api/system/certificate", { cert_pem: cert.input.value, key_pem: key.input.value });
      showError(form, null);
      key.input.value = "";
      done.textContent = `Installed; new connections use it. SHA-256 ${r.fingerprint}`;
    } catch (err) {
      showError(form, err);
    }
  });
  return form;
}
