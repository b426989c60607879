// Setup wizard (first visit only) and sign-in.
import { api, type Session } from "../api";
import { field, h, showError } from "../dom";

function zones(): string[] {
  const intl = Intl as unknown as { supportedValuesOf?: (k: string) => string[] };
  return intl.supportedValuesOf?.("timeZone") ?? ["UTC"];
}

export function setupPage(main: HTMLElement, done: (s: Session) => void) {
  const name = field("Device name", "device_name", { required: true, maxlength: 64, autocomplete: "off" });
  const tz = field("Time zone", "time_zone", { required: true, list: "zones", autocomplete: "off" });
  tz.input.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const list = h("datalist", { id: "zones" }, ...zones().map((z) => h("option", { value: z })));
  const user = field("Admin user name", "username", { required: true, autocomplete: "username" });
  user.input.value = "admin";
  const pw = field("Admin password", "password", { type: "password", required: true, autocomplete: "new-password", minlength: 10 });
  const pw2 = field("Password again", "password_again", { type: "password", required: true, autocomplete: "new-password" });
  const hint = h("p", { class: "hint" }, "At least 10 characters mixing three of lower case, upper case, digits and symbols, or 16 characters of any kind. There is no default password: this account is the only way in.");
  const form = h(
    "form",
    { novalidate: true, "aria-labelledby": "setup-title" },
    h("h1", { id: "setup-title" }, "Set up this device"),
    h("p", {}, "Name the device and create its admin account. This page is shown once."),
    name.wrap, tz.wrap, list, user.wrap, pw.wrap, hint, pw2.wrap,
    h("p", { class: "form-error", role: "alert" }),
    h("button", { type: "submit" }, "Create admin and sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (pw.input.value !== pw2.input.value) {
      showError(form, { field: "password_again", message: "the two passwords differ" });
      return;
    }
    try {
      const s = await api<Session>("POST", "/api/setup", {
        device_name: name.input.value,
        time_zone: tz.input.value,
        username: user.input.value,
        password: pw.input.value,
      });
      done(s);
    } catch (err) {
      showError(form, err);
    }
  });
  main.append(form);
  name.input.focus();
}

export function loginPage(main: HTMLElement, done: (s: Session) => void) {
  const user = field("User name", "username", { required: true, autocomplete: "username" });
  const pw = field("Password", "password", { type: "password", required: true, autocomplete: "current-password" });
  const form = h(
    "form",
    { novalidate: true, "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in"),
    user.wrap, pw.wrap,
    h("p", { class: "form-error", role: "alert" }),
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      done(await api<Session>("POST", "/api/login", { username: user.input.value, password: pw.input.value }));
    } catch (err) {
      showError(form, err);
      pw.input.value = "";
    }
  });
  main.append(form);
  user.input.focus();
}
