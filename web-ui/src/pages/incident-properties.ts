// Incident properties (admins): types, statuses, up to 5 categories with their values, up to 3
// data fields of each kind, retention and the report's title. Saved whole with the version
// loaded, so a save on top of another admin's is refused with "refresh the list".
import { api, can } from "../api";
import type { Ctx } from "../app";
import { field, h, select, showError } from "../dom";

export interface Item {
  id: string;
  name: string;
  description: string;
}
export interface Category extends Item {
  values: Item[];
}
export type FieldKind = "integer" | "decimal" | "text" | "checkbox" | "date_time";
export interface Field extends Item {
  kind: FieldKind;
  enabled: boolean;
}
export interface Properties {
  version: number;
  types: Item[];
  statuses: Item[];
  categories: Category[];
  fields: Field[];
  retention_days: number;
  report_title: string;
}

export const KINDS: [FieldKind, string][] = [
  ["integer", "Integer"],
  ["decimal", "Decimal"],
  ["text", "Text"],
  ["checkbox", "Checkbox"],
  ["date_time", "Date and time"],
];

/** An editable list of named items (name and description each), with add and remove. */
function itemList(title: string, one: string, key: string, items: Item[], editable: boolean, onChange: () => void): HTMLElement {
  const box = h("fieldset", { class: "items", "data-list": key }, h("legend", {}, title));
  const render = () => {
    box.replaceChildren(h("legend", {}, title));
    items.forEach((it, i) => {
      const name = field("Name", `${key}[${i}].name`, { value: it.name, maxlength: 120, required: true, disabled: !editable });
      const desc = field("Description (tooltip)", `${key}[${i}].description`, { value: it.description, maxlength: 4000, disabled: !editable });
      name.input.addEventListener("input", () => (it.name = name.input.value));
      desc.input.addEventListener("input", () => (it.description = desc.input.value));
      const remove = h("button", { type: "button", class: "remove", "aria-label": `Remove ${one} ${it.name || i + 1}` }, "Remove");
      remove.addEventListener("click", () => {
        items.splice(i, 1);
        render();
        onChange();
      });
      box.append(h("div", { class: "item", "data-item": it.id || `new-${i}` }, name.wrap, desc.wrap, editable ? remove : null));
    });
    if (editable) {
      const add = h("button", { type: "button", class: "add" }, `Add ${one}`);
      add.addEventListener("click", () => {
        items.push({ id: "", name: "", description: "" });
        render();
        onChange();
        box.querySelector<HTMLInputElement>(`[name="${key}[${items.length - 1}].name"]`)?.focus();
      });
      box.append(add);
    }
  };
  render();
  return box;
}

export async function incidentPropertiesPage(ctx: Ctx) {
  const editable = can(ctx.session, "incident_properties", "manage");
  const body = h("div");
  ctx.main.append(
    h("h1", {}, "Incident properties"),
    h("p", { class: "hint" }, "What operators choose from in every incident project. A property a project uses cannot be deleted; renaming it shows everywhere."),
    body,
  );
  const render = async () => {
    const p = await api<Properties>("GET", "/api/incident-properties");
    const form = h("form", { "aria-label": "Incident properties" });
    const sections = h("div");
    const draw = () => {
      sections.replaceChildren(
        itemList("Types", "type", "types", p.types, editable, draw),
        itemList("Statuses", "status", "statuses", p.statuses, editable, draw),
      );
      const cats = h("fieldset", { class: "items", "data-list": "categories" }, h("legend", {}, `Categories (${p.categories.length} of 5)`));
      p.categories.forEach((c, i) => {
        const name = field("Category name", `categories[${i}].name`, { value: c.name, maxlength: 120, required: true, disabled: !editable });
        const desc = field("Description (tooltip)", `categories[${i}].description`, { value: c.description, disabled: !editable });
        name.input.addEventListener("input", () => (c.name = name.input.value));
        desc.input.addEventListener("input", () => (c.description = desc.input.value));
        const remove = h("button", { type: "button", class: "remove", "aria-label": `Remove category ${c.name || i + 1}` }, "Remove category");
        remove.addEventListener("click", () => {
          p.categories.splice(i, 1);
          draw();
        });
        cats.append(h("div", { class: "item category", "data-item": c.id || `new-${i}` }, name.wrap, desc.wrap, itemList(`Values of ${c.name || "this category"}`, "value", `categories[${i}].values`, c.values, editable, () => {}), editable ? remove : null));
      });
      if (editable && p.categories.length < 5) {
        const add = h("button", { type: "button", class: "add" }, "Add category");
        add.addEventListener("click", () => {
          p.categories.push({ id: "", name: "", description: "", values: [] });
          draw();
          sections.querySelector<HTMLInputElement>(`[name="categories[${p.categories.length - 1}].name"]`)?.focus();
        });
        cats.append(add);
      }
      const fields = h("fieldset", { class: "items", "data-list": "fields" }, h("legend", {}, "Incident data fields (up to 3 of each kind)"));
      p.fields.forEach((f, i) => {
        const kind = select("Kind", `fields[${i}].kind`, KINDS, f.kind);
        kind.input.disabled = !editable || f.id !== "";
        kind.input.addEventListener("change", () => (f.kind = kind.input.value as FieldKind));
        const name = field("Name", `fields[${i}].name`, { value: f.name, maxlength: 120, required: true, disabled: !editable });
        const desc = field("Description (tooltip)", `fields[${i}].description`, { value: f.description, disabled: !editable });
        const enabled = field("Enabled", `fields[${i}].enabled`, { type: "checkbox", disabled: !editable });
        enabled.input.checked = f.enabled;
        name.input.addEventListener("input", () => (f.name = name.input.value));
        desc.input.addEventListener("input", () => (f.description = desc.input.value));
        enabled.input.addEventListener("change", () => (f.enabled = enabled.input.checked));
        const remove = h("button", { type: "button", class: "remove", "aria-label": `Remove field ${f.name || i + 1}` }, "Remove");
        remove.addEventListener("click", () => {
          p.fields.splice(i, 1);
          draw();
        });
        fields.append(h("div", { class: "item", "data-item": f.id || `new-${i}` }, kind.wrap, name.wrap, desc.wrap, enabled.wrap, editable ? remove : null));
      });
      if (editable) {
        const add = h("button", { type: "button", class: "add" }, "Add data field");
        add.addEventListener("click", () => {
          p.fields.push({ id: "", kind: "integer", name: "", description: "", enabled: true });
          draw();
        });
        fields.append(add);
      }
      sections.append(cats, fields);
    };
    draw();
    const retention = field("Delete projects after (days, 1–365 000)", "retention_days", { type: "number", min: 1, max: 365000, value: p.retention_days, required: true, disabled: !editable });
    const title = field("Report title", "report_title", { value: p.report_title, maxlength: 120, required: true, disabled: !editable });
    const message = h("p", { class: "form-error", role: "alert" });
    const saved = h("p", { role: "status", class: "hint" });
    const save = h("button", { type: "submit" }, "Save properties");
    form.append(sections, retention.wrap, title.wrap, message, saved, ...(editable ? [save] : []));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      saved.textContent = "";
      try {
        await api("PUT", "/api/incident-properties", { ...p, retention_days: Number(retention.input.value), report_title: title.input.value });
        await render();
        body.querySelector<HTMLElement>('[role="status"]')!.textContent = "Saved.";
      } catch (err) {
        showError(form, err);
      }
    });
    body.replaceChildren(form);
  };
  await render();
}
