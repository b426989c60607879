// The device: identity, firmware, time, certificate and services.
import { api, can } from "../api";
import type { Ctx } from "../app";
import { field, h, showError, textArea } from "../dom";
import { when } from "../time";
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
  ctx.main.append(await scrapers(can(ctx.session, "system", "manage")));
}

interface ScrapeToken {
  id: string;
  name: string;
  created_ms: number;
  created_by: string;
  last_used_ms: number | null;
}

/** Read-only tokens for metrics scrapers (Prometheus' `authorization` credentials). */
async function scrapers(manage: boolean): Promise<HTMLElement> {
  const box = h("section", { "aria-labelledby": "scrape-title" }, h("h2", { id: "scrape-title" }, "Metrics scrapers"));
  const list = h("ul", { class: "tokens" });
  const render = async () => {
    const tokens = await api<ScrapeToken[]>("GET", "/api/system/scrape-tokens");
    list.replaceChildren(
      ...tokens.map((t) => {
        const revoke = h("button", { type: "button", "aria-label": `Revoke ${t.name}` }, "Revoke");
        revoke.addEventListener("click", async () => {
          if (!confirm(`Revoke ${t.name}? Its scraper is refused from the next scrape.`)) return;
          await api("DELETE", `/api/system/scrape-tokens/${encodeURIComponent(t.id)}`);
          await render();
        });
        return h("li", { "data-token": t.id }, `${t.name}: made by ${t.created_by} ${when(t.created_ms)}, ${t.last_used_ms ? `last used ${when(t.last_used_ms)}` : "never used"} `, manage ? revoke : null);
      }),
    );
    if (!tokens.length) list.append(h("li", {}, "No scraper has a token."));
  };
  box.append(h("p", { class: "hint" }, "GET /metrics with the header Authorization: Bearer <token> (Prometheus: authorization.credentials). A token reads metrics and nothing else."), list);
  if (manage) {
    const name = field("Scraper name", "name", { maxlength: 64, placeholder: "prometheus-dc1" });
    const shown = h("p", { role: "status" });
    const form = h("form", { "aria-label": "Make a scrape token" }, name.wrap, h("p", { class: "form-error", role: "alert" }), h("button", { type: "submit" }, "Make a token"), shown);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const made = await api<{ token: ScrapeToken; secret: string }>("POST", "/api/system/scrape-tokens", { name: name.input.value });
        showError(form, null);
        shown.replaceChildren(`Token for ${made.token.name} (shown once, copy it now): `, h("code", {}, made.secret));
        await render();
      } catch (err) {
        showError(form, err);
      }
    });
    box.append(form);
  }
  await render();
  return box;
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
