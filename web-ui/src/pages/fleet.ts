// Fleet settings: the MQTT broker and the upload target, their certificates, a test that
// tries them without saving, and "save and apply" (the session reconnects at once).
import { api, can } from "../api";
import type { Ctx } from "../app";
import { field, h, showError, textArea } from "../dom";
import { featureLabel, type FeatureState } from "../status";

interface Mqtt {
  broker: string;
  ca_file?: string;
  username?: string;
  password?: string;
  topic_prefix?: string;
}
interface Upload {
  endpoint: string;
  region?: string;
  bucket: string;
  access_key: string;
  secret_key: string;
  prefix?: string;
}


export async function fleetPage(ctx: Ctx) {
  const data = await api<{ settings: { mqtt: Mqtt | null; upload: Upload | null }; state: { mqtt: FeatureState; upload: FeatureState } }>("GET", "/api/fleet");
  const m = data.settings.mqtt, u = data.settings.upload;
  const f = {
    broker: field("Broker", "mqtt.broker", { placeholder: "mqtts://broker.example.net:8883" }),
    username: field("User name", "mqtt.username", { autocomplete: "off" }),
    password: field("Password", "mqtt.password", { type: "password", autocomplete: "new-password" }),
    ca: textArea(m?.ca_file ? `Broker CA certificate (PEM; empty keeps ${m.ca_file})` : "Broker CA certificate (PEM)", "mqtt_ca_pem"),
    cert: textArea("Client certificate (PEM, for mutual TLS)", "mqtt_client_cert_pem"),
    key: textArea("Client key (PEM)", "mqtt_client_key_pem"),
    endpoint: field("Upload endpoint", "upload.endpoint", { placeholder: "https://s3.example.net" }),
    region: field("Region", "upload.region", { placeholder: "us-east-1" }),
    bucket: field("Bucket", "upload.bucket"),
    access: field("Access key", "upload.access_key", { autocomplete: "off" }),
    secret: field("Secret key", "upload.secret_key", { type: "password", autocomplete: "new-password" }),
    prefix: field("Key prefix", "upload.prefix", { placeholder: "device id/" }),
    uploadCa: textArea("Upload CA certificate (PEM; for a private endpoint)", "upload_ca_pem"),
  };
  f.broker.input.value = m?.broker ?? "";
  f.username.input.value = m?.username ?? "";
  f.password.input.value = m?.password ?? "";
  f.endpoint.input.value = u?.endpoint ?? "";
  f.region.input.value = u?.region ?? "";
  f.bucket.input.value = u?.bucket ?? "";
  f.access.input.value = u?.access_key ?? "";
  f.secret.input.value = u?.secret_key ?? "";
  f.prefix.input.value = u?.prefix ?? "";
  const state = h("dl", {}, h("dt", {}, "MQTT fleet link"), h("dd", {}, featureLabel(data.state.mqtt)), h("dt", {}, "Evidence upload"), h("dd", {}, featureLabel(data.state.upload)));
  const result = h("p", { role: "status", class: "test-result" });
  const manage = can(ctx.session, "system", "manage");
  const test = h("button", { type: "button" }, "Test connection");
  const form = h(
    "form",
    { novalidate: true, "aria-labelledby": "fleet-title" },
    h("h2", {}, "Broker"),
    f.broker.wrap, f.username.wrap, f.password.wrap, f.ca.wrap, f.cert.wrap, f.key.wrap,
    h("h2", {}, "Upload target (S3-compatible)"),
    f.endpoint.wrap, f.region.wrap, f.bucket.wrap, f.access.wrap, f.secret.wrap, f.prefix.wrap, f.uploadCa.wrap,
    h("p", { class: "form-error", role: "alert" }),
    result,
    manage ? h("div", { class: "buttons" }, test, h("button", { type: "submit" }, "Save and apply")) : null,
  );
  if (!manage) for (const el of Array.from(form.querySelectorAll<HTMLInputElement>("input, textarea"))) el.disabled = true;
  const body = () => {
    const v = (x: { input: HTMLInputElement | HTMLTextAreaElement }) => x.input.value.trim();
    const opt = (s: string) => (s ? s : undefined);
    return JSON.parse(
      JSON.stringify({
        // Keys the form does not show (CA file paths, topic prefix, intervals) stay as they are.
        mqtt: v(f.broker) ? { ...(m ?? {}), broker: v(f.broker), username: opt(v(f.username)), password: opt(v(f.password)) } : null,
        upload: v(f.endpoint) ? { ...(u ?? {}), endpoint: v(f.endpoint), region: opt(v(f.region)), bucket: v(f.bucket), access_key: v(f.access), secret_key: v(f.secret), prefix: opt(v(f.prefix)) } : null,
        mqtt_ca_pem: opt(v(f.ca)),
        mqtt_client_cert_pem: opt(v(f.cert)),
        mqtt_client_key_pem: opt(v(f.key)),
        upload_ca_pem: opt(v(f.uploadCa)),
      }),
    );
  };
  test.addEventListener("click", async () => {
    result.textContent = "Trying…";
    try {
      const r = await api<{ mqtt: string; upload: string }>("POST", "/api/fleet/test", body());
      showError(form, null);
      result.textContent = `Broker: ${r.mqtt}. Upload target: ${r.upload}.`;
    } catch (err) {
      result.textContent = "";
      showError(form, err);
    }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("PUT", "/api/fleet", body());
      showError(form, null);
      result.textContent = "Saved; the device reconnects with these settings now.";
    } catch (err) {
      showError(form, err);
    }
  });
  ctx.main.append(h("h1", { id: "fleet-title" }, "Fleet"), state, form);
}
