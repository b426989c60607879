// Incident projects: the list (filters, pages) and one project with its tabs (main details,
// categories, comments, sequence list, calls, activity log), its report and its export.
import { api, can } from "../api";
import type { Ctx } from "../app";
import { readDraft, writeDraft } from "../draft";
import { field, h, select, showError, textArea } from "../dom";
import { fromSiteInput, toSiteInput, when } from "../time";
import type { Properties } from "./incident-properties";

interface Summary {
  id: number;
  version: number;
  name: string;
  type_id: string | null;
  type_name: string | null;
  status_id: string;
  status_name: string;
  created_by: string;
  created_at: string;
  updated_at: string;
  start: string | null;
  end: string | null;
  expires_at: string;
  comment_count: number;
  sequence_count: number;
}
interface Comment {
  id: number;
  author: string;
  at: string;
  text: string;
  edited_at: string | null;
  history: { text: string; at: string }[];
}
interface Call {
  id: number;
  caller: string;
  callee: string;
  at: string;
  phone: string;
  notes: string;
  added_by: string;
}
interface Sequence {
  id: number;
  camera: string;
  from: string;
  to: string;
  added_by: string;
}
interface Project extends Summary {
  categories: Record<string, string>;
  fields: Record<string, unknown>;
  unreadable: string[];
}
interface FullProject extends Project {
  comments: Comment[];
  calls: Call[];
  sequences: Sequence[];
  activity: { at: string; by: string; action: string; detail: string }[];
}

// Time fields are the site's time, as every time the page shows.
const local = (iso: string | null) => (iso ? toSiteInput(Date.parse(iso)) : "");
const isoOf = (v: string) => {
  const t = fromSiteInput(v);
  return Number.isNaN(t) ? (v ? v : null) : new Date(t).toISOString();
};

export async function incidentsPage(ctx: Ctx) {
  const props = await api<Properties>("GET", "/api/incident-properties");
  const status = select("Status", "status", [["", "Any"], ...props.statuses.map((s): [string, string] => [s.id, s.name])]);
  const type = select("Type", "type", [["", "Any"], ...props.types.map((t): [string, string] => [t.id, t.name])]);
  const value = select("Category value", "category_value", [["", "Any"], ...props.categories.flatMap((c) => c.values.map((v): [string, string] => [v.id, `${c.name}: ${v.name}`]))]);
  const from = field("From", "from", { type: "datetime-local", step: 1 });
  const to = field("To", "to", { type: "datetime-local", step: 1 });
  const creator = field("Created by", "created_by", { maxlength: 64 });
  const q = field("Text in name or comments", "q", { type: "search", maxlength: 200 });
  const filters = h("form", { class: "filters", "aria-label": "Filter incident projects" }, status.wrap, type.wrap, value.wrap, from.wrap, to.wrap, creator.wrap, q.wrap, h("p", { class: "form-error", role: "alert" }), h("button", { type: "submit" }, "Filter"));
  const table = h("div", { class: "scroll" });
  const pager = h("div", { class: "buttons" });
  const newButton = h("button", { type: "button" }, "New project");
  const draft = readDraft();
  ctx.main.append(
    h("h1", {}, "Incident projects"),
    ...(can(ctx.session, "incidents", "manage")
      ? [h("p", {}, newButton, draft.length ? ` The new project takes the ${draft.length} marked sequence${draft.length === 1 ? "" : "s"} from Recordings.` : "")]
      : []),
    filters,
    table,
    pager,
  );
  newButton.addEventListener("click", async () => {
    try {
      const sequences = readDraft();
      const p = await api<Summary>("POST", "/api/incidents", sequences.length ? { sequences } : {});
      writeDraft([]);
      ctx.go(`/incident?id=${p.id}`);
    } catch (err) {
      showError(filters, err);
    }
  });
  let offset = 0;
  const limit = 50;
  const load = async () => {
    const query = new URLSearchParams({ limit: String(limit), offset: String(offset) });
    for (const [k, v] of [["status", status.input.value], ["type", type.input.value], ["category_value", value.input.value], ["created_by", creator.input.value.trim()], ["q", q.input.value.trim()]]) if (v) query.set(k, v);
    if (from.input.value) query.set("from", isoOf(from.input.value)!);
    if (to.input.value) query.set("to", isoOf(to.input.value)!);
    try {
      const page = await api<{ total: number; projects: Summary[] }>("GET", `/api/incidents?${query}`);
      showError(filters, null);
      const rows = page.projects.map((p) =>
        h("tr", { "data-project": p.id },
          h("td", {}, h("a", { href: `/incident?id=${p.id}` }, `#${p.id} ${p.name || "(no name)"}`)),
          h("td", {}, p.type_name ?? "—"),
          h("td", {}, p.status_name),
          h("td", {}, p.start ? when(p.start) : "—"),
          h("td", {}, p.created_by),
          h("td", {}, when(p.created_at)),
          h("td", {}, `${p.sequence_count} / ${p.comment_count}`),
        ),
      );
      table.replaceChildren(
        page.total
          ? h("table", {}, h("caption", { class: "visually-hidden" }, "Incident projects"),
              h("thead", {}, h("tr", {}, ...["Project", "Type", "Status", "Incident start", "Created by", "Created", "Sequences / comments"].map((t) => h("th", { scope: "col" }, t)))),
              h("tbody", {}, ...rows))
          : h("p", {}, "No project matches."),
      );
      const prev = h("button", { type: "button", disabled: offset === 0 }, "Previous page");
      const next = h("button", { type: "button", disabled: offset + limit >= page.total }, "Next page");
      prev.addEventListener("click", () => { offset = Math.max(0, offset - limit); void load(); });
      next.addEventListener("click", () => { offset += limit; void load(); });
      pager.replaceChildren(h("span", { role: "status" }, page.total ? `${offset + 1}–${Math.min(offset + limit, page.total)} of ${page.total}` : ""), prev, next);
    } catch (err) {
      showError(filters, err);
    }
  };
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    offset = 0;
    void load();
  });
  await load();
}

/** Gives each option of `select` the description of its item as a tooltip. */
function tooltips(select: HTMLSelectElement, items: { id: string; description: string }[]) {
  for (const o of Array.from(select.options)) {
    const d = items.find((i) => i.id === o.value)?.description;
    if (d) o.title = d;
  }
}

/** The tabs of a project: one panel shown at a time, arrow keys move between tabs. */
function tabs(names: string[], panels: HTMLElement[]): HTMLElement {
  const list = h("div", { role: "tablist", "aria-label": "Project", class: "tabs" });
  const buttons = names.map((n, i) => {
    const id = `tab-${i}`;
    panels[i].setAttribute("role", "tabpanel");
    panels[i].setAttribute("aria-labelledby", id);
    panels[i].id = `panel-${i}`;
    const b = h("button", { type: "button", role: "tab", id, "aria-controls": `panel-${i}` }, n);
    b.addEventListener("click", () => pick(i));
    b.addEventListener("keydown", (e) => {
      const k = (e as KeyboardEvent).key;
      if (k === "ArrowRight" || k === "ArrowLeft") {
        const j = (i + (k === "ArrowRight" ? 1 : names.length - 1)) % names.length;
        pick(j);
        buttons[j].focus();
      }
    });
    return b;
  });
  const pick = (i: number) => {
    buttons.forEach((b, j) => {
      b.setAttribute("aria-selected", String(i === j));
      b.tabIndex = i === j ? 0 : -1;
      panels[j].hidden = i !== j;
    });
    sessionStorage.setItem("veil.incident-tab", String(i));
  };
  list.append(...buttons);
  pick(Math.min(Number(sessionStorage.getItem("veil.incident-tab") ?? 0) || 0, names.length - 1));
  return h("div", {}, list, ...panels);
}

export async function incidentPage(ctx: Ctx) {
  const id = Number(new URLSearchParams(location.search).get("id"));
  const s = ctx.session;
  const manage = can(s, "incidents", "manage");
  const body = h("div");
  ctx.main.append(body);
  const render = async () => {
    const [props, p] = await Promise.all([
      api<Properties>("GET", "/api/incident-properties"),
      api<FullProject>("GET", `/api/incidents/${id}`),
    ]);
    const refresh = () => void render().catch((e) => showError(body, e));

    // Main details: name, type, status, times and the data fields.
    const name = field("Name", "name", { value: p.name, maxlength: 120, disabled: !manage });
    const type = select("Type", "type_id", [["", "None"], ...props.types.map((t): [string, string] => [t.id, t.name])], p.type_id ?? "");
    const status = select("Status", "status_id", props.statuses.map((t): [string, string] => [t.id, t.name]), p.status_id);
    const start = field("Incident start", "start", { type: "datetime-local", step: 1, value: local(p.start), disabled: !manage });
    const end = field("Incident end", "end", { type: "datetime-local", step: 1, value: local(p.end), disabled: !manage });
    type.input.disabled = status.input.disabled = !manage;
    // Descriptions are the tooltips of what they describe.
    tooltips(type.input, props.types);
    tooltips(status.input, props.statuses);
    const dataInputs = props.fields
      .filter((f) => f.enabled || f.id in p.fields)
      .map((f) => {
        const v = p.fields[f.id];
        const key = `fields.${f.id}`;
        const attrs = { title: f.description || undefined, disabled: !manage || !f.enabled };
        const input =
          f.kind === "checkbox"
            ? field(f.name, key, { type: "checkbox", ...attrs })
            : f.kind === "integer"
              ? field(f.name, key, { type: "number", step: 1, value: v === undefined ? "" : String(v), ...attrs })
              : f.kind === "decimal"
                ? field(f.name, key, { type: "number", step: "any", value: v === undefined ? "" : String(v), ...attrs })
                : f.kind === "date_time"
                  ? field(f.name, key, { type: "datetime-local", step: 1, value: local((v as string) ?? null), ...attrs })
                  : field(f.name, key, { value: (v as string) ?? "", maxlength: 4000, ...attrs });
        if (f.kind === "checkbox") input.input.checked = v === true;
        const read = (): unknown => {
          const raw = input.input.value;
          if (f.kind === "checkbox") return input.input.checked;
          if (raw === "") return null;
          if (f.kind === "integer" || f.kind === "decimal") return Number(raw);
          if (f.kind === "date_time") return isoOf(raw);
          return raw;
        };
        return { f, input, read };
      });
    const mainForm = h("form", { "aria-label": "Main details" }, name.wrap, type.wrap, status.wrap, start.wrap, end.wrap,
      dataInputs.length ? h("fieldset", {}, h("legend", {}, "Incident data"), ...dataInputs.map((d) => d.input.wrap)) : null,
      h("p", { class: "form-error", role: "alert" }),
      manage ? h("button", { type: "submit" }, "Save details") : null);
    mainForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const fields: Record<string, unknown> = {};
      for (const d of dataInputs) if (d.f.enabled) fields[d.f.id] = d.read();
      try {
        await api("PATCH", `/api/incidents/${id}`, {
          version: p.version, name: name.input.value, type_id: type.input.value || null, status_id: status.input.value,
          start: isoOf(start.input.value), end: isoOf(end.input.value), fields,
        });
        refresh();
      } catch (err) {
        showError(mainForm, err);
      }
    });

    // Categories: one value each.
    const catSelects = props.categories.map((c) => {
      const sel = select(c.name, `categories.${c.id}`, [["", "None"], ...c.values.map((v): [string, string] => [v.id, v.name])], p.categories[c.id] ?? "");
      sel.input.disabled = !manage;
      if (c.description) sel.input.title = c.description;
      tooltips(sel.input, c.values);
      return { c, sel };
    });
    const catForm = h("form", { "aria-label": "Categories" },
      ...(catSelects.length ? catSelects.map((x) => x.sel.wrap) : [h("p", {}, "No categories are defined.")]),
      h("p", { class: "form-error", role: "alert" }),
      manage && catSelects.length ? h("button", { type: "submit" }, "Save categories") : null);
    catForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const categories: Record<string, string | null> = {};
      for (const { c, sel } of catSelects) categories[c.id] = sel.input.value || null;
      try {
        await api("PATCH", `/api/incidents/${id}`, { version: p.version, categories });
        refresh();
      } catch (err) {
        showError(catForm, err);
      }
    });

    // Comments: newest last; the author may edit (the old text stays in the history).
    const canComment = can(s, "incident_comments", "manage");
    const comments = h("div", {}, ...(p.comments.length ? [] : [h("p", {}, "No comments yet.")]));
    for (const c of p.comments) {
      const card = h("article", { class: "card comment", "data-comment": c.id },
        h("h3", {}, `${c.author}, ${when(c.at)}${c.edited_at ? ` (edited ${when(c.edited_at)})` : ""}`),
        h("p", { class: "pre" }, c.text));
      if (c.history.length) card.append(h("details", {}, h("summary", {}, `Earlier versions (${c.history.length})`), ...c.history.map((v) => h("p", { class: "pre" }, `${when(v.at)}: ${v.text}`))));
      if (canComment && c.author === s.user) {
        const edit = textArea("Edit your comment", "text", { maxlength: 4000 });
        edit.input.value = c.text;
        const f = h("form", { "aria-label": `Edit comment ${c.id}` }, edit.wrap, h("p", { class: "form-error", role: "alert" }), h("button", { type: "submit" }, "Save comment"));
        f.addEventListener("submit", async (e) => {
          e.preventDefault();
          try {
            await api("PATCH", `/api/incidents/${id}/comments/${c.id}`, { text: edit.input.value });
            refresh();
          } catch (err) {
            showError(f, err);
          }
        });
        card.append(h("details", {}, h("summary", {}, "Edit"), f));
      }
      comments.append(card);
    }
    const newComment = textArea("New comment", "text", { maxlength: 4000, required: true });
    const commentForm = h("form", { "aria-label": "Add a comment" }, newComment.wrap, h("p", { class: "form-error", role: "alert" }), h("button", { type: "submit" }, "Add comment"));
    commentForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("POST", `/api/incidents/${id}/comments`, { text: newComment.input.value });
        refresh();
      } catch (err) {
        showError(commentForm, err);
      }
    });

    // Sequences: the footage the project holds.
    const canSeq = can(s, "incident_sequences", "manage");
    const seqTable = p.sequences.length
      ? h("div", { class: "scroll" }, h("table", {}, h("caption", { class: "visually-hidden" }, "Sequence list"),
          h("thead", {}, h("tr", {}, ...["Camera", "From", "To", "Added by", ""].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, ...p.sequences.map((q) => {
            const remove = h("button", { type: "button", "aria-label": `Remove sequence ${q.camera} ${when(q.from)}` }, "Remove");
            remove.addEventListener("click", async () => {
              await api("DELETE", `/api/incidents/${id}/sequences/${q.id}`).catch((e) => showError(seqPanel, e));
              refresh();
            });
            return h("tr", { "data-sequence": q.id }, h("td", {}, q.camera), h("td", {}, when(q.from)), h("td", {}, when(q.to)), h("td", {}, q.added_by), h("td", {}, canSeq ? remove : ""));
          }))))
      : h("p", {}, "No sequences. Mark recording periods on the Recordings page, then add them here.");
    const draft = readDraft();
    const addDraft = h("button", { type: "button" }, `Add the ${draft.length} marked sequence${draft.length === 1 ? "" : "s"}`);
    addDraft.addEventListener("click", async () => {
      try {
        await api("POST", `/api/incidents/${id}/sequences`, { sequences: readDraft() });
        writeDraft([]);
        refresh();
      } catch (err) {
        showError(seqPanel, err);
      }
    });
    const seqPanel = h("section", {}, seqTable, h("p", { class: "form-error", role: "alert" }), canSeq && draft.length ? addDraft : null);

    // Calls.
    const canCall = can(s, "incident_calls", "manage");
    const calls = h("div", {}, ...(p.calls.length ? [] : [h("p", {}, "No calls recorded.")]),
      ...p.calls.map((c) => h("article", { class: "card call", "data-call": c.id }, h("h3", {}, `${when(c.at)}: ${c.caller} called ${c.callee}${c.phone ? `, ${c.phone}` : ""}`), c.notes ? h("p", { class: "pre" }, c.notes) : null, h("p", { class: "hint" }, `Recorded by ${c.added_by}`))));
    const caller = field("Caller", "caller", { required: true, maxlength: 200 });
    const callee = field("Called", "callee", { required: true, maxlength: 200 });
    const at = field("When", "at", { type: "datetime-local", step: 1, required: true });
    const phone = field("Phone number", "phone", { type: "tel", maxlength: 40 });
    const notes = textArea("Notes", "notes", { maxlength: 4000 });
    const callForm = h("form", { "aria-label": "Record a call" }, caller.wrap, callee.wrap, at.wrap, phone.wrap, notes.wrap, h("p", { class: "form-error", role: "alert" }), h("button", { type: "submit" }, "Add call"));
    callForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("POST", `/api/incidents/${id}/calls`, { caller: caller.input.value, callee: callee.input.value, at: isoOf(at.input.value) ?? "", phone: phone.input.value, notes: notes.input.value });
        refresh();
      } catch (err) {
        showError(callForm, err);
      }
    });

    const activity = h("div", { class: "scroll" }, h("table", {}, h("caption", { class: "visually-hidden" }, "Activity log"),
      h("thead", {}, h("tr", {}, ...["When", "Who", "What"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, ...p.activity.map((a) => h("tr", {}, h("td", {}, when(a.at)), h("td", {}, a.by), h("td", {}, `${a.action.replace(/_/g, " ")}: ${a.detail}`))))));

    const actions = h("div", { class: "buttons" });
    if (can(s, "incident_reports", "view")) {
      actions.append(
        h("a", { href: `/api/incidents/${id}/report.html`, target: "_blank", rel: "noopener" }, "Report preview"),
        h("a", { href: `/api/incidents/${id}/report.pdf`, download: `incident-${id}.pdf` }, "Report PDF"),
      );
    }
    let exportForm: HTMLElement | null = null;
    if (can(s, "incident_export", "manage")) {
      // The case the evidence belongs to, and who may open it (age keys; none: plain files).
      const kind = select("Case", "case.kind", [["none", "No case"], ["new", "New case"], ["existing", "Existing case"]], "none");
      const reference = field("Case reference", "case.reference", { maxlength: 128 });
      const recipients = textArea("Encrypt to (age public keys, one per line)", "recipients", { rows: 2 });
      const message = h("p", { role: "status" });
      const form = h("form", { "aria-label": "Export as evidence", class: "card" }, h("h2", {}, "Export as evidence"), kind.wrap, reference.wrap, recipients.wrap, h("p", { class: "form-error", role: "alert" }), message, h("button", { type: "submit" }, "Export as evidence"));
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const keys = recipients.input.value.split("\n").map((k) => k.trim()).filter(Boolean);
        const caseRef = kind.input.value === "existing" ? { kind: "existing", reference: reference.input.value } : { kind: kind.input.value };
        try {
          const job = await api<{ id: string }>("POST", `/api/incidents/${id}/export`, { case: caseRef, recipients: keys });
          showError(form, null);
          message.textContent = `Export ${job.id} queued: follow it on the Recordings page.`;
        } catch (err) {
          showError(form, err);
        }
      });
      exportForm = form;
    }
    if (manage) {
      const del = h("button", { type: "button", class: "danger" }, "Delete project");
      del.addEventListener("click", async () => {
        if (!confirm(`Delete project ${id} with its comments, calls and sequences? Its footage is no longer held.`)) return;
        await api("DELETE", `/api/incidents/${id}`);
        ctx.go("/incidents");
      });
      actions.append(del);
    }
    body.replaceChildren(
      h("p", {}, h("a", { href: "/incidents" }, "All incident projects")),
      h("h1", {}, `Project ${p.id}${p.name ? `: ${p.name}` : ""}`),
      h("p", { class: "meta" }, `${p.status_name} · created by ${p.created_by} ${when(p.created_at)} · deleted after ${when(p.expires_at)}`),
      ...(p.unreadable.length ? [h("p", { class: "form-error", role: "alert" }, `Could not be read: ${p.unreadable.join("; ")}`)] : []),
      h("p", { class: "form-error", role: "alert" }),
      actions,
      tabs(
        ["Main details", "Categories", `Comments (${p.comments.length})`, `Sequence list (${p.sequences.length})`, `Calls (${p.calls.length})`, "Activity log"],
        [
          h("section", {}, mainForm),
          h("section", {}, catForm),
          h("section", {}, comments, canComment ? commentForm : null),
          seqPanel,
          h("section", {}, calls, canCall ? callForm : null),
          h("section", {}, activity),
        ],
      ),
      ...(exportForm ? [exportForm] : []),
    );
  };
  await render();
}
