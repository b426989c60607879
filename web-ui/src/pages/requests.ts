// Video requests waiting for the owner's decision, and the export jobs they became.
import { api, can } from "../api";
import type { Ctx } from "../app";
import { field, h, showError } from "../dom";
import { when } from "../time";

interface Request {
  id: string;
  requester: { name: string; organisation?: string };
  case: { kind: string; reference?: string };
  cameras: string[];
  from_ms: number;
  to_ms: number;
  reason?: string;
  status: string;
  decided_by?: string;
  decision_reason?: string;
  job_id?: string;
}

interface Job {
  id: string;
  status: string;
  progress: number;
  reason?: string;
}


export async function requestsPage(ctx: Ctx) {
  const body = h("div");
  ctx.main.append(h("h1", {}, "Video requests"), body);
  const manage = can(ctx.session, "requests", "manage");
  const render = async () => {
    const data = await api<{ requests: Request[]; jobs: Job[] }>("GET", "/api/requests");
    const pending = data.requests.filter((r) => r.status === "pending");
    body.replaceChildren(h("h2", {}, `Waiting for a decision (${pending.length})`));
    if (!pending.length) body.append(h("p", {}, "No request is waiting."));
    for (const r of pending) {
      const reason = field("Reason to decline (the requester sees it)", "reason", { maxlength: 500 });
      const approve = h("button", { type: "button" }, "Approve");
      const decline = h("button", { type: "submit" }, "Decline");
      const form = h(
        "form",
        { class: "card request", "aria-label": `Request ${r.id}`, "data-request": r.id },
        h("h3", {}, `Request ${r.id}`),
        h(
          "dl",
          {},
          h("dt", {}, "Requested by"), h("dd", {}, r.requester.name + (r.requester.organisation ? `, ${r.requester.organisation}` : "")),
          h("dt", {}, "Case"), h("dd", {}, r.case.kind === "none" ? "none" : `${r.case.kind} ${r.case.reference ?? ""}`.trim()),
          h("dt", {}, "Cameras"), h("dd", {}, r.cameras.join(", ")),
          h("dt", {}, "Footage"), h("dd", {}, `${when(r.from_ms)} – ${when(r.to_ms)}`),
          h("dt", {}, "Purpose"), h("dd", {}, r.reason ?? ""),
        ),
        manage ? reason.wrap : null,
        h("p", { class: "form-error", role: "alert" }),
        manage ? h("div", { class: "buttons" }, approve, decline) : null,
      );
      const decide = async (yes: boolean) => {
        try {
          await api("POST", `/api/requests/${encodeURIComponent(r.id)}/decision`, { approve: yes, reason: reason.input.value || undefined });
          await render();
        } catch (err) {
          showError(form, err);
        }
      };
      approve.addEventListener("click", () => void decide(true));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        void decide(false);
      });
      body.append(form);
    }
    body.append(h("h2", {}, "History"));
    const rows = data.requests.filter((r) => r.status !== "pending");
    const jobs = new Map(data.jobs.map((j) => [j.id, j]));
    const tbody = h("tbody");
    for (const r of rows) {
      const job = r.job_id ? jobs.get(r.job_id) : undefined;
      const progress = job ? h("progress", { max: 1, value: job.progress, "aria-label": `Export of ${r.id}` }) : null;
      tbody.append(
        h(
          "tr",
          { "data-request": r.id },
          h("th", { scope: "row" }, r.id),
          h("td", {}, r.status + (r.decided_by ? ` by ${r.decided_by}` : "") + (r.decision_reason ? `: ${r.decision_reason}` : "")),
          h("td", {}, job ? `${job.status}${job.reason ? `: ${job.reason}` : ""} ` : "", progress),
        ),
      );
    }
    if (!rows.length) tbody.append(h("tr", {}, h("td", { colspan: 3 }, "Nothing yet.")));
    body.append(h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Request"), h("th", { scope: "col" }, "Decision"), h("th", { scope: "col" }, "Export"))), tbody));
  };
  try {
    await render();
  } catch (e) {
    body.append(h("p", { role: "alert" }, (e as Error).message));
  }
  const timer = setInterval(() => void render().catch(() => {}), 5000);
  ctx.onLeave(() => clearInterval(timer));
}
