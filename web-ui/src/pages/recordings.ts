// Recordings: a timeline per camera with its gaps, exports of a range with a progress bar,
// the signed export's files to play and download.
import { api, can } from "../api";
import type { Ctx } from "../app";
import { field, h, select, showError } from "../dom";
import { addToDraft, readDraft, writeDraft, type DraftSequence } from "../draft";
import { place } from "../nav";
import type { StatusResponse } from "../status";
import { clockTime as clock, fromSiteInput, toSiteInput, when, zoneName } from "../time";

interface Span {
  from_ms: number;
  to_ms: number;
}
interface Timeline {
  camera: string;
  from_ms: number;
  to_ms: number;
  spans: Span[];
  gaps: Span[];
}
interface Job {
  id: string;
  status: string;
  progress: number;
  reason?: string;
  job: { cameras: string[]; from_ms: number; to_ms: number };
  result?: { files?: number };
}

/** Job states after which nothing changes. */
const FINISHED = new Set(["SUCCEEDED", "FAILED", "CANCELED", "REJECTED"]);

// The window's fields are the site's time, as every time the page shows.
const local = (ms: number) => toSiteInput(ms);
const iso = (v: string) => {
  const t = fromSiteInput(v);
  return Number.isNaN(t) ? v : new Date(t).toISOString();
};

export async function recordingsPage(ctx: Ctx) {
  const s = await api<StatusResponse>("GET", "/api/status");
  const now = Date.now();
  const camera = select("Camera", "camera", s.cameras.map((c) => [c.id, c.name || c.id]));
  const from = field(`From (${zoneName()})`, "from", { type: "datetime-local", step: 1 });
  const to = field(`To (${zoneName()})`, "to", { type: "datetime-local", step: 1 });
  from.input.value = local(now - 3600_000);
  to.input.value = local(now);
  const bar = h("div", { class: "timeline", role: "img" });
  const gaps = h("ul", { class: "gaps" });
  const show = h("button", { type: "submit" }, "Show");
  const form = h("form", { class: "filters", "aria-label": "Choose a camera and a time window" }, camera.wrap, from.wrap, to.wrap, h("p", { class: "form-error", role: "alert" }), show);
  const jobs = h("div", { class: "jobs" });
  // Marking recording periods for an incident project: the draft survives reloads.
  const marking = can(ctx.session, "incident_sequences", "manage");
  const periods = h("ul", { class: "periods" });
  const draftList = h("ul", { class: "draft" });
  const renderDraft = () => {
    const list = readDraft();
    draftList.replaceChildren(
      ...list.map((d: DraftSequence, i: number) => {
        const remove = h("button", { type: "button", "aria-label": `Unmark ${d.camera} ${when(d.from)}` }, "Unmark");
        remove.addEventListener("click", () => {
          writeDraft(readDraft().filter((_, j) => j !== i));
          renderDraft();
        });
        return h("li", { "data-draft": i }, `${d.camera}: ${when(d.from)} – ${clock(d.to)} `, remove);
      }),
    );
    if (!list.length) draftList.append(h("li", {}, "No period marked."));
  };
  const mark = (d: DraftSequence) => {
    writeDraft(addToDraft(readDraft(), d));
    renderDraft();
  };
  const exportButton = h("button", { type: "button" }, "Export this window");
  ctx.main.append(
    h("h1", {}, "Recordings"),
    form,
    h("section", { "aria-labelledby": "tl-title" }, h("h2", { id: "tl-title" }, "Timeline"), bar, gaps, can(ctx.session, "recordings", "manage") ? exportButton : null),
    ...(marking
      ? [h("section", { "aria-labelledby": "mk-title" }, h("h2", { id: "mk-title" }, "Sequences for an incident project"),
          h("p", { class: "hint" }, "Mark uninterrupted recording periods, then make a project of them on the Incidents page (or add them to an open project's sequence list)."),
          periods, h("h3", {}, "Marked"), draftList, h("p", {}, h("a", { href: "/incidents" }, "Go to incident projects")))]
      : []),
    h("section", { "aria-labelledby": "ex-title" }, h("h2", { id: "ex-title" }, "Exports"), jobs),
  );
  renderDraft();
  const load = async () => {
    try {
      const t = await api<Timeline>("GET", `/api/recordings?camera=${encodeURIComponent(camera.input.value)}&from=${iso(from.input.value)}&to=${iso(to.input.value)}`);
      showError(form, null);
      bar.replaceChildren(
        ...t.spans.map((sp) => {
          const p = place(t.from_ms, t.to_ms, sp);
          return h("span", { class: "span", style: `left:${p.left}%;width:${p.width}%`, title: `${clock(sp.from_ms)} – ${clock(sp.to_ms)}` });
        }),
      );
      const footage = t.spans.reduce((n, sp) => n + sp.to_ms - sp.from_ms, 0);
      bar.setAttribute("aria-label", `${Math.round(footage / 1000)} s of footage in the window, ${t.gaps.length} gap${t.gaps.length === 1 ? "" : "s"}`);
      gaps.replaceChildren(...t.gaps.map((g) => h("li", {}, `No footage ${clock(g.from_ms)} – ${clock(g.to_ms)}`)));
      periods.dataset.camera = t.camera;
      periods.replaceChildren(
        ...t.spans.map((sp) => {
          const b = h("button", { type: "button" }, `Mark ${clock(sp.from_ms)} – ${clock(sp.to_ms)}`);
          b.addEventListener("click", () => mark({ camera: t.camera, from: new Date(sp.from_ms).toISOString(), to: new Date(sp.to_ms).toISOString() }));
          return h("li", {}, b);
        }),
      );
      if (!t.spans.length) periods.append(h("li", {}, "No recording in this window to mark."));
      if (!t.gaps.length) gaps.append(h("li", {}, "No gaps in this window."));
    } catch (err) {
      bar.replaceChildren();
      gaps.replaceChildren();
      showError(form, err);
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void load();
  });
  exportButton.addEventListener("click", async () => {
    try {
      await api("POST", "/api/exports", { cameras: [camera.input.value], from: iso(from.input.value), to: iso(to.input.value) });
      showError(form, null);
      pending = true;
      await renderJobs().catch(() => {});
    } catch (err) {
      showError(form, err);
    }
  });
  // Renders are built off-page and swapped in whole; a render that started earlier than the
  // one on show is dropped, so overlapping refreshes never mix old cards with new ones.
  let rendered = 0;
  let started = 0;
  let pending = true;
  const renderJobs = async () => {
    const mine = ++started;
    let list: Job[];
    try {
      list = await api<Job[]>("GET", "/api/exports");
    } catch (err) {
      // Keep polling: a refresh that failed must not freeze the progress on show.
      pending = true;
      throw err;
    }
    const cards: HTMLElement[] = [];
    if (!list.length) cards.push(h("p", {}, "No exports yet."));
    for (const j of list) {
      const card = h(
        "div",
        { class: "card job", "data-job": j.id, "data-status": j.status },
        h("h3", {}, `${j.job.cameras.join(", ")}: ${when(j.job.from_ms)} – ${clock(j.job.to_ms)}`),
        h("p", {}, `${j.status}${j.reason ? `: ${j.reason}` : ""} `, h("progress", { max: 1, value: j.progress, "aria-label": `Export ${j.id}` })),
      );
      if (j.status === "SUCCEEDED") {
        const manifest = await api<{ cameras: { files: { file: string; bytes: number }[] }[] }>("GET", `/api/exports/${encodeURIComponent(j.id)}/files/manifest.json`).catch(() => null);
        const files = manifest?.cameras.flatMap((c) => c.files) ?? [];
        const links = h("ul", {}, h("li", {}, h("a", { href: `/api/exports/${encodeURIComponent(j.id)}/files/manifest.json`, download: "manifest.json" }, "Signed manifest")));
        for (const f of files) links.append(h("li", {}, h("a", { href: `/api/exports/${encodeURIComponent(j.id)}/files/${encodeURIComponent(f.file)}`, download: f.file }, `${f.file} (${(f.bytes / 1e6).toFixed(1)} MB)`)));
        card.append(links);
        const mp4 = files.find((f) => f.file.endsWith(".mp4"));
        if (mp4) card.append(h("video", { controls: true, preload: "metadata", src: `/api/exports/${encodeURIComponent(j.id)}/files/${encodeURIComponent(mp4.file)}`, "aria-label": `Play ${mp4.file}`, width: 480 }));
        // A manifest that could not be read is fetched again on the next refresh.
        if (!manifest) pending = true;
      }
      cards.push(card);
    }
    if (mine < rendered) return;
    rendered = mine;
    pending = list.some((j) => !FINISHED.has(j.status)) || pending;
    jobs.replaceChildren(...cards);
  };
  if (s.cameras.length) await load();
  await renderJobs().catch(() => {});
  const timer = setInterval(() => {
    // Refresh while a job is queued or running, or the last refresh failed (finished cards
    // keep their video element).
    if (!pending) return;
    pending = false;
    void renderJobs().catch(() => {});
  }, 2000);
  ctx.onLeave(() => clearInterval(timer));
}
