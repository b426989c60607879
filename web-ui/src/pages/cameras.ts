// Cameras: the live anonymized preview of each, and the privacy-mask editor: polygons drawn
// with a mouse, a pen or a finger on a live picture, or typed as points from the keyboard.
import { api, can } from "../api";
import type { Ctx } from "../app";
import { explainRefusal, field, h, select, showError } from "../dom";
import { problem, relative, type Pt } from "../polygon";
import { cameraForm, FILTERS, type CameraConfig } from "../camera-form";
import { cameraRow, type StatusResponse } from "../status";

interface Mask {
  name: string;
  points: Pt[];
}

export async function camerasPage(ctx: Ctx) {
  const [s, configs] = await Promise.all([api<StatusResponse>("GET", "/api/status"), api<CameraConfig[]>("GET", "/api/cameras")]);
  const manage = can(ctx.session, "cameras", "manage");
  const reload = () => ctx.go("/cameras");
  ctx.main.append(h("h1", {}, "Cameras"));
  if (manage) {
    const add = h("button", { type: "button" }, "Add a camera");
    add.addEventListener("click", () => {
      add.replaceWith(cameraForm(null, reload));
      ctx.main.querySelector<HTMLInputElement>(".camera-form input")?.focus();
    });
    ctx.main.append(add);
  }
  if (!s.cameras.length) ctx.main.append(h("p", {}, "No cameras configured."));
  const list = h("div", { class: "cards" });
  ctx.main.append(list);
  for (const c of s.cameras) {
    const r = cameraRow(c);
    const img = h("img", { alt: `Live anonymized view of ${r.label}`, width: 640, height: Math.round((640 * c.height) / Math.max(1, c.width)), class: "preview" });
    const stream = (filter: string) => `/api/cameras/${encodeURIComponent(c.id)}/preview.mjpg?width=640${filter ? `&filter=${encodeURIComponent(filter)}` : ""}`;
    if (r.thumbnail) img.src = stream("");
    // What a live consumer with another filter gets, from the same encode their session reads.
    const through = select(
      "Preview through",
      `through-${c.id}`,
      [["", `The camera's own filter (${c.filter})`], ...FILTERS.filter(([f]) => f !== c.filter).map(([f, text]): [string, string] => [f, `${text}: as a live consumer with ${f} sees it`])],
    );
    const previewError = h("p", { class: "form-error", role: "alert" });
    through.input.addEventListener("change", () => {
      previewError.textContent = "";
      img.src = stream(through.input.value);
    });
    explainRefusal(img, () => stream(through.input.value), previewError);
    const edit = h("button", { type: "button" }, "Edit privacy masks");
    const config = configs.find((x) => x.id === c.id) ?? null;
    const change = h("button", { type: "button" }, `Change ${r.label}`);
    const remove = h("button", { type: "button" }, `Remove ${r.label}`);
    change.addEventListener("click", () => change.replaceWith(cameraForm(config, reload)));
    // Kept originals: an admin may look at the picture as captured; each look is audited.
    const original = h("button", { type: "button" }, "Show the picture as captured (audited)");
    original.addEventListener("click", () => {
      const img = h("img", { alt: `${r.label} as captured, before anonymization`, class: "preview", width: 640 });
      img.src = `/api/cameras/${encodeURIComponent(c.id)}/original.jpg?width=640&t=${Date.now()}`;
      original.replaceWith(img);
    });
    remove.addEventListener("click", async () => {
      if (!confirm(`Remove camera ${r.label}? Its recorded footage stays until retention removes it.`)) return;
      try {
        await api("DELETE", `/api/cameras/${encodeURIComponent(c.id)}`);
        reload();
      } catch (e) {
        alert((e as Error).message);
      }
    });
    const card = h(
      "section",
      { class: "card", "aria-labelledby": `cam-${c.id}`, "data-camera": c.id },
      h("h2", { id: `cam-${c.id}` }, r.label),
      h("p", {}, `${r.source} · ${r.privacy} · ${r.state} · ${r.fps}`),
      img,
      r.thumbnail ? through.wrap : null,
      previewError,
      manage ? h("div", { class: "buttons" }, edit, config ? change : null, remove, config?.storage === "originals" ? original : null) : null,
    );
    edit.addEventListener("click", () => {
      edit.remove();
      void maskEditor(card, c.id, img);
    });
    list.append(card);
  }
  ctx.onLeave(() => {
    // Closing the streams frees the device's encoder work for them.
    for (const img of Array.from(ctx.main.querySelectorAll<HTMLImageElement>("img.preview"))) img.src = "";
  });
}

function draw(canvas: HTMLCanvasElement, masks: Mask[], open: Pt[]) {
  const g = canvas.getContext("2d")!;
  g.clearRect(0, 0, canvas.width, canvas.height);
  const path = (pts: Pt[], close: boolean) => {
    g.beginPath();
    pts.forEach(([x, y], i) => (i ? g.lineTo(x * canvas.width, y * canvas.height) : g.moveTo(x * canvas.width, y * canvas.height)));
    if (close) g.closePath();
  };
  for (const m of masks) {
    path(m.points, true);
    g.fillStyle = "rgba(255, 200, 0, 0.25)";
    g.fill();
    g.strokeStyle = "#ffc800";
    g.lineWidth = 2;
    g.stroke();
  }
  if (open.length) {
    path(open, false);
    g.strokeStyle = "#00c8ff";
    g.lineWidth = 2;
    g.stroke();
    for (const [x, y] of open) {
      g.fillStyle = "#00c8ff";
      g.fillRect(x * canvas.width - 3, y * canvas.height - 3, 6, 6);
    }
  }
}

function pointsText(points: Pt[]): string {
  return points.map(([x, y]) => `${x} ${y}`).join(", ");
}

function parsePoints(text: string): Pt[] | null {
  const pts = text.split(",").map((p) => p.trim().split(/\s+/).map(Number));
  if (pts.some((p) => p.length !== 2 || p.some((v) => !Number.isFinite(v)))) return null;
  return pts as Pt[];
}

async function maskEditor(card: HTMLElement, camera: string, live: HTMLImageElement) {
  const { masks } = await api<{ masks: Mask[] }>("GET", `/api/cameras/${encodeURIComponent(camera)}/masks`);
  let open: Pt[] = [];
  const still = h("img", { alt: `Still picture of ${camera} to draw on`, class: "still" });
  still.src = `/api/cameras/${encodeURIComponent(camera)}/snapshot.jpg?width=960&t=${Date.now()}`;
  const canvas = h("canvas", { class: "draw", width: 960, height: 540, "aria-label": "Drawing area: click or tap to add a point of the mask outline" });
  const stage = h("div", { class: "stage" }, still, canvas);
  const rows = h("ol", { class: "masks" });
  const status = h("p", { class: "form-error", role: "alert" });
  const finish = h("button", { type: "button" }, "Finish shape");
  const undo = h("button", { type: "button" }, "Undo point");
  const save = h("button", { type: "submit" }, "Save masks");
  const form = h(
    "form",
    { class: "mask-editor", "aria-label": `Privacy masks of ${camera}` },
    h("p", { class: "hint" }, "Click or tap the picture to outline an area that is always hidden; finish the shape, name it, then save. Points can also be typed as “x y” pairs from 0 to 1."),
    stage,
    h("div", { class: "buttons" }, undo, finish),
    rows,
    status,
    save,
  );
  card.append(form);
  still.addEventListener("load", () => {
    canvas.width = still.naturalWidth;
    canvas.height = still.naturalHeight;
    draw(canvas, masks, open);
  });

  const renderRows = () => {
    rows.replaceChildren();
    masks.forEach((m, i) => {
      const name = field(`Mask ${i + 1} name`, `masks[${i}].name`, { required: true, maxlength: 64 });
      name.input.value = m.name;
      name.input.addEventListener("input", () => (m.name = name.input.value));
      const pts = field(`Mask ${i + 1} points`, `masks[${i}].points`, { required: true });
      pts.input.value = pointsText(m.points);
      pts.input.addEventListener("change", () => {
        const p = parsePoints(pts.input.value);
        if (p) {
          m.points = p;
          draw(canvas, masks, open);
        } else showError(form, { field: `masks[${i}].points`, message: "write points as “x y” pairs separated by commas, e.g. 0.1 0.1, 0.4 0.1, 0.4 0.5" });
      });
      const remove = h("button", { type: "button" }, `Remove mask ${i + 1}`);
      remove.addEventListener("click", () => {
        masks.splice(i, 1);
        renderRows();
        draw(canvas, masks, open);
      });
      rows.append(h("li", {}, name.wrap, pts.wrap, remove));
    });
    const add = h("button", { type: "button" }, "Add a mask by typing its points");
    add.addEventListener("click", () => {
      masks.push({ name: `Mask ${masks.length + 1}`, points: [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3], [0.1, 0.3]] });
      renderRows();
      draw(canvas, masks, open);
      rows.querySelector<HTMLInputElement>(`li:last-child input`)?.focus();
    });
    rows.append(h("li", { class: "add" }, add));
  };
  renderRows();

  canvas.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    const box = canvas.getBoundingClientRect();
    open.push(relative(e.clientX - box.left, e.clientY - box.top, box.width, box.height));
    status.textContent = `${open.length} point${open.length > 1 ? "s" : ""}; finish the shape when done`;
    draw(canvas, masks, open);
  });
  undo.addEventListener("click", () => {
    open.pop();
    draw(canvas, masks, open);
  });
  finish.addEventListener("click", () => {
    const why = problem(open);
    if (why) {
      status.textContent = `This shape cannot be a mask: ${why}.`;
      return;
    }
    masks.push({ name: `Mask ${masks.length + 1}`, points: open });
    open = [];
    status.textContent = "Shape added; name it and save.";
    renderRows();
    draw(canvas, masks, open);
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const saved = await api<{ masks: Mask[] }>("PUT", `/api/cameras/${encodeURIComponent(camera)}/masks`, { masks });
      showError(form, null);
      status.textContent = `Saved ${saved.masks.length} mask${saved.masks.length === 1 ? "" : "s"}: hidden from the next frame on.`;
      // Restart the live view so it shows the new masks at once.
      const src = live.src;
      live.src = "";
      live.src = src;
    } catch (err) {
      showError(form, err);
    }
  });
}
