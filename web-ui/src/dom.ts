// A small element builder: pages are built from plain DOM, no framework (the page must stay
// small and fast on a phone).

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children) if (c) el.append(c);
  return el;
}

let fieldSeq = 0;

/** A labelled input; the error slot under it shows the server's message for that field. */
export function field(
  label: string,
  name: string,
  attrs: Attrs = {},
): { wrap: HTMLElement; input: HTMLInputElement } {
  const id = `f-${name.replace(/[^a-z0-9]/gi, "-")}-${++fieldSeq}`;
  const input = h("input", { id, name, "aria-describedby": `${id}-err`, ...attrs });
  const wrap = h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    h("p", { class: "field-error", id: `${id}-err`, "data-error-for": name, "aria-live": "polite" }),
  );
  return { wrap, input };
}

/** A labelled select. */
export function select(label: string, name: string, options: [string, string][], value = ""): { wrap: HTMLElement; input: HTMLSelectElement } {
  const id = `f-${name}-${++fieldSeq}`;
  const input = h("select", { id, name, "aria-describedby": `${id}-err` });
  for (const [v, text] of options) {
    const o = h("option", { value: v }, text);
    if (v === value) o.selected = true;
    input.append(o);
  }
  const wrap = h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    h("p", { class: "field-error", id: `${id}-err`, "data-error-for": name, "aria-live": "polite" }),
  );
  return { wrap, input };
}

/** Shows an API error next to its field (or in the form's message line) and focuses it. */
export function showError(form: HTMLElement, err: unknown) {
  for (const p of Array.from(form.querySelectorAll<HTMLElement>(".field-error, .form-error"))) p.textContent = "";
  for (const i of Array.from(form.querySelectorAll("[aria-invalid]"))) i.removeAttribute("aria-invalid");
  if (!err) return;
  const e = err as { field?: string; message?: string };
  const message = e.message ?? String(err);
  const slot = e.field ? form.querySelector<HTMLElement>(`[data-error-for="${CSS.escape(e.field)}"]`) : null;
  if (slot) {
    slot.textContent = message;
    const input = form.querySelector<HTMLElement>(`[name="${CSS.escape(e.field!)}"]`);
    input?.setAttribute("aria-invalid", "true");
    input?.focus();
  } else {
    const general = form.querySelector<HTMLElement>(".form-error");
    if (general) general.textContent = message;
  }
}
