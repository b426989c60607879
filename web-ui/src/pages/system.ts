// The device: identity, firmware, time, certificate and services.
import { api, can } from "../api";
import type { Ctx } from "../app";
import { field, h, select, showError, textArea } from "../dom";
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
  ctx.main.append(await firmware(can(ctx.session, "system", "manage")));
  if (can(ctx.session, "system", "manage") && s.device.https_fingerprint) ctx.main.append(certificateForm());
  ctx.main.append(await scrapers(can(ctx.session, "system", "manage")));
}

interface UpdateJob {
  job_id: string;
  status: string;
  step: string | null;
  progress: number;
  reason: string | null;
  version: string;
  from_version: string;
  reboot_at: string | null;
  updated_at: string;
}

const STEPS: Record<string, string> = {
  downloading: "downloading",
  verifying: "checking the signature",
  installing: "writing the other slot",
  awaiting_reboot: "installed, waiting for the restart",
  rebooting: "restarting",
  confirming: "started, waiting for its health check",
};

/** The firmware update job, and (admins) a bundle to upload and install. */
async function firmware(manage: boolean): Promise<HTMLElement> {
  const box = h("section", { "aria-labelledby": "firmware-title" }, h("h2", { id: "firmware-title" }, "Firmware update"));
  const state = h("p", { role: "status", "data-update": "" });
  let timer: number | undefined;
  const render = async () => {
    const u = await api<{ firmware_version: string; job: UpdateJob | null }>("GET", "/api/system/update");
    const j = u.job;
    if (!j) {
      state.textContent = `Running ${u.firmware_version}. No update was installed yet.`;
    } else if (j.status === "QUEUED" || j.status === "IN_PROGRESS") {
      const due = j.step === "awaiting_reboot" ? (j.reboot_at ? ` (restart due ${j.reboot_at})` : " (restart it when convenient)") : "";
      state.textContent = `Updating to ${j.version}: ${STEPS[j.step ?? ""] ?? "queued"}, ${Math.round(j.progress * 100)} %${due}.`;
    } else {
      state.textContent = `Update ${j.job_id} to ${j.version}: ${j.status}${j.reason ? `: ${j.reason}` : ""}. Running ${u.firmware_version}.`;
    }
    if (j && (j.status === "QUEUED" || j.status === "IN_PROGRESS")) timer = window.setTimeout(() => void render().catch(() => {}), 2000);
  };
  box.append(state);
  await render();
  if (manage) {
    const bundle = field("Bundle (.raucb, signed for this device)", "bundle", { type: "file", accept: ".raucb", required: true });
    const file = bundle.input;
    const restart = select("Restart", "reboot", [["now", "As soon as it is installed"], ["manual", "When I restart it"]], "now");
    const reboot = restart.input;
    const form = h(
      "form",
      { "aria-label": "Install a firmware bundle" },
      bundle.wrap,
      restart.wrap,
      h("p", { class: "form-error", role: "alert" }),
      h("button", { type: "submit" }, "Upload and install"),
      h("p", { class: "hint" }, "The signature is checked before anything is written; the running firmware stays as it is until the new one has started and passed its health check."),
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = file.files?.[0];
      if (!f) return;
      if (!confirm(`Install ${f.name}? The device restarts into it; cameras stop recording for about a minute.`)) return;
      state.textContent = `Uploading ${f.name}…`;
      try {
        await api("POST", `/api/system/update?reboot=${reboot.value}`, f);
        showError(form, null);
      } catch (err) {
        showError(form, err);
      }
      window.clearTimeout(timer);
      await render();
    });
    box.append(form);
  }
  return box;
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
