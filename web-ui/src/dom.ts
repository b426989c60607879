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

/** A control with its label and the slot under it for the server's message on that field. */
function labelled<T extends HTMLElement>(label: string, name: string, make: (id: string) => T): { wrap: HTMLElement; input: T } {
  const id = `f-${name.replace(/[^a-z0-9]/gi, "-")}-${++fieldSeq}`;
  const input = make(id);
  const wrap = h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    h("p", { class: "field-error", id: `${id}-err`, "data-error-for": name, "aria-live": "polite" }),
  );
  return { wrap, input };
}

/** A labelled input. */
export function field(label: string, name: string, attrs: Attrs = {}): { wrap: HTMLElement; input: HTMLInputElement } {
  return labelled(label, name, (id) => h("input", { id, name, "aria-describedby": `${id}-err`, ...attrs }));
}

/** A labelled text area (certificates, keys). */
export function textArea(label: string, name: string, attrs: Attrs = {}): { wrap: HTMLElement; input: HTMLTextAreaElement } {
  return labelled(label, name, (id) => h("textarea", { id, name, rows: 4, spellcheck: "false", "aria-describedby": `${id}-err`, ...attrs }));
}

/** A labelled select. */
export function select(label: string, name: string, options: [string, string][], value = ""): { wrap: HTMLElement; input: HTMLSelectElement } {
  return labelled(label, name, (id) => {
    const input = h("select", { id, name, "aria-describedby": `${id}-err` });
    for (const [v, text] of options) {
      const o = h("option", { value: v }, text);
      if (v === value) o.selected = true;
      input.append(o);
    }
    return input;
  });
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

/** Shows why a live stream an <img> shows was refused: an <img> cannot read the answer, so
 * ask once more with fetch for the message (and let go of the stream if it is granted). */
export function explainRefusal(img: HTMLImageElement, url: () => string, slot: HTMLElement) {
  img.addEventListener("error", async () => {
    // A stream the page closed itself (src emptied on leaving, or the card gone) needs no
    // explanation, and asking again would reopen a stream of a camera that may be gone.
    if (!img.getAttribute("src") || !img.isConnected) return;
    const ask = new AbortController();
    try {
      const res = await fetch(url(), { signal: ask.signal });
      if (!res.ok) slot.textContent = ((await res.json()) as { message?: string }).message ?? `preview refused (${res.status})`;
    } catch {
      // The page moved on.
    } finally {
      ask.abort();
    }
  });
}
