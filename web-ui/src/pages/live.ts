// Live sharing: other domains' requests to view a camera live (anonymized), waiting for an
// operator; sessions running now, which an operator may end; and how recent ones ended (a
// viewer who stopped, a refusal, a preemption), so the owner's operators are told.
import { api, can } from "../api";
import type { Ctx } from "../app";
import { explainRefusal, field, h, showError } from "../dom";
import { when } from "../time";

interface Session {
  id: string;
  camera: string;
  consumer: string;
  filter: string;
  priority: string;
  phase: string;
  requested_ms: number;
  active_ms?: number;
  bytes_sent: number;
}

interface Ended {
  id: string;
  camera: string;
  consumer: string;
  filter: string;
  outcome: string;
  by: string;
  reason: string;
  ended_ms: number;
}

interface Live {
  capacity: number;
  encodes_in_use: number;
  sessions: Session[];
  recent: Ended[];
}

function facts(s: Session | Ended) {
  return h(
    "dl",
    {},
    h("dt", {}, "Camera"), h("dd", {}, s.camera),
    h("dt", {}, "Viewer"), h("dd", {}, s.consumer),
    h("dt", {}, "Filter"), h("dd", {}, s.filter),
  );
}

export async function livePage(ctx: Ctx) {
  const body = h("div");
  // Outside the list that refreshes, so the picture keeps streaming while the lists update.
  const look = h("section", { class: "card", "aria-labelledby": "look-title", hidden: true });
  ctx.main.append(h("h1", {}, "Live sharing"), look, body);
  const manage = can(ctx.session, "requests", "manage");
  const closeLook = () => {
    look.querySelector<HTMLImageElement>("img")?.setAttribute("src", "");
    look.replaceChildren();
    look.hidden = true;
  };
  /** What the viewer would get: the camera through their filter, from the same encode. */
  const showLook = (s: Session) => {
    closeLook();
    const url = `/api/cameras/${encodeURIComponent(s.camera)}/preview.mjpg?width=640&filter=${encodeURIComponent(s.filter)}`;
    const img = h("img", { alt: `${s.camera} as ${s.consumer} would see it (${s.filter})`, class: "preview", width: 640, src: url });
    const problem = h("p", { class: "form-error", role: "alert" });
    explainRefusal(img, () => url, problem);
    const close = h("button", { type: "button" }, "Close preview");
    close.addEventListener("click", closeLook);
    look.append(h("h2", { id: "look-title" }, `What ${s.consumer} would see of ${s.camera}`), img, problem, h("div", { class: "buttons" }, close));
    look.hidden = false;
  };
  ctx.onLeave(closeLook);
  // Reasons being typed survive the refresh.
  const drafts = new Map<string, string>();
  const render = async () => {
    // Not while someone types: the refresh would take their cursor away.
    if (document.activeElement instanceof HTMLInputElement && body.contains(document.activeElement)) return;
    const data = await api<Live>("GET", "/api/live");
    const waiting = data.sessions.filter((s) => s.phase === "awaiting_operator");
    const running = data.sessions.filter((s) => s.phase !== "awaiting_operator");
    body.replaceChildren(
      h("p", {}, `Live encodes in use: ${data.encodes_in_use} of ${data.capacity}. What a viewer sees is anonymized on this device; nothing is stored.`),
      h("h2", {}, `Waiting for an operator (${waiting.length})`),
    );
    if (!waiting.length) body.append(h("p", {}, "No request is waiting."));
    for (const s of waiting) {
      const reason = field("Reason to refuse (the viewer sees it)", "reason", { maxlength: 500, placeholder: "all operators busy" });
      reason.input.value = drafts.get(s.id) ?? "";
      reason.input.addEventListener("input", () => drafts.set(s.id, reason.input.value));
      const accept = h("button", { type: "button" }, "Accept");
      const preview = h("button", { type: "button" }, "Preview what they would see");
      preview.addEventListener("click", () => showLook(s));
      const refuse = h("button", { type: "submit" }, "Refuse");
      const form = h(
        "form",
        { class: "card", "aria-label": `Live request ${s.id}`, "data-live": s.id },
        h("h3", {}, `${s.consumer} asks to view ${s.camera}`),
        facts(s),
        h("p", {}, `Asked ${when(s.requested_ms)}${s.priority === "owner" ? " (the owner's own use)" : ""}`),
        manage ? reason.wrap : null,
        h("p", { class: "form-error", role: "alert" }),
        h("div", { class: "buttons" }, preview, manage ? accept : null, manage ? refuse : null),
      );
      const decide = async (yes: boolean) => {
        try {
          await api("POST", `/api/live/${encodeURIComponent(s.id)}/decision`, { accept: yes, reason: reason.input.value || undefined });
          drafts.delete(s.id);
          reason.input.blur();
          await render();
        } catch (err) {
          showError(form, err);
        }
      };
      accept.addEventListener("click", () => void decide(true));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        void decide(false);
      });
      body.append(form);
    }
    body.append(h("h2", {}, `Running (${running.length})`));
    if (!running.length) body.append(h("p", {}, "No camera is shared right now."));
    for (const s of running) {
      const stop = h("button", { type: "submit" }, "End session");
      const form = h(
        "form",
        { class: "card", "aria-label": `Live session ${s.id}`, "data-live": s.id },
        h("h3", {}, `${s.camera} → ${s.consumer}`),
        facts(s),
        h("p", {}, s.active_ms ? `Live since ${when(s.active_ms)}, ${(s.bytes_sent / 1e6).toFixed(1)} MB sent` : "Connecting…"),
        h("p", { class: "form-error", role: "alert" }),
        manage ? h("div", { class: "buttons" }, stop) : null,
      );
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        api("POST", `/api/live/${encodeURIComponent(s.id)}/stop`, {}).then(render, (err) => showError(form, err));
      });
      body.append(form);
    }
    body.append(h("h2", {}, "Ended"));
    const tbody = h("tbody");
    for (const e of data.recent) {
      tbody.append(
        h(
          "tr",
          { "data-live": e.id },
          h("th", { scope: "row" }, `${e.camera} → ${e.consumer}`),
          h("td", {}, `${e.outcome} by ${e.by}: ${e.reason}`),
          h("td", {}, when(e.ended_ms)),
        ),
      );
    }
    if (!data.recent.length) tbody.append(h("tr", {}, h("td", { colspan: 3 }, "Nothing yet.")));
    body.append(h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Session"), h("th", { scope: "col" }, "How it ended"), h("th", { scope: "col" }, "When"))), tbody));
  };
  try {
    await render();
  } catch (e) {
    body.append(h("p", { role: "alert" }, (e as Error).message));
  }
  const timer = setInterval(() => void render().catch(() => {}), 3000);
  ctx.onLeave(() => clearInterval(timer));
}
