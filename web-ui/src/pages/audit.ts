// The audit log: who changed what and when, filterable, downloadable as CSV.
import { api } from "../api";
import type { Ctx } from "../app";
import { field, h, showError } from "../dom";
import { auditQuery } from "../nav";
import { when, fromSiteInput, zoneName } from "../time";

interface Entry {
  seq: number;
  time: string;
  actor: string;
  action: string;
  subject: string;
  before: unknown;
  after: unknown;
}

const short = (v: unknown) => (v === null || v === undefined ? "" : JSON.stringify(v));

export async function auditPage(ctx: Ctx) {
  const inputs = {
    actor: field("Who", "actor", { placeholder: "user name, fleet, device" }),
    action: field("What", "action", { placeholder: "e.g. request. or user.create" }),
    subject: field("Subject contains", "subject"),
    since: field(`From (${zoneName()})`, "since", { type: "datetime-local", step: 1 }),
    until: field(`To (${zoneName()})`, "until", { type: "datetime-local", step: 1 }),
  };
  const csv = h("a", { href: "/api/audit.csv", download: "audit.csv" }, "Download as CSV");
  const tbody = h("tbody");
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter the audit log" },
    ...Object.values(inputs).map((i) => i.wrap),
    h("p", { class: "form-error", role: "alert" }),
    h("button", { type: "submit" }, "Filter"),
  );
  const values = () => {
    // The fields are the site's time, like the table below them.
    const iso = (v: string) => {
      const t = fromSiteInput(v);
      return Number.isNaN(t) ? "" : new Date(t).toISOString();
    };
    return {
      actor: inputs.actor.input.value,
      action: inputs.action.input.value,
      subject: inputs.subject.input.value,
      since: iso(inputs.since.input.value),
      until: iso(inputs.until.input.value),
    };
  };
  const load = async () => {
    const q = auditQuery(values());
    csv.setAttribute("href", `/api/audit.csv${q}`);
    try {
      const entries = await api<Entry[]>("GET", `/api/audit${q}`);
      showError(form, null);
      tbody.replaceChildren(
        ...entries.map((e) =>
          h("tr", {}, h("td", {}, String(e.seq)), h("td", {}, when(e.time)), h("td", {}, e.actor), h("th", { scope: "row" }, e.action), h("td", {}, e.subject), h("td", { class: "json" }, short(e.before)), h("td", { class: "json" }, short(e.after))),
        ),
      );
      if (!entries.length) tbody.append(h("tr", {}, h("td", { colspan: 7 }, "No entries match.")));
    } catch (err) {
      showError(form, err);
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void load();
  });
  ctx.main.append(
    h("h1", {}, "Audit log"),
    h("p", {}, "Every change by a person, the fleet or the device, newest first. The log is hash-chained: `veild verify-audit` on the device detects any edit. ", csv),
    form,
    h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ...["#", "When", "Who", "What", "Subject", "Before", "After"].map((t) => h("th", { scope: "col" }, t)))), tbody)),
  );
  await load();
}
