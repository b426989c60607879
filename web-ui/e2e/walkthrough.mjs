// The web page end to end in a real browser (Debian's Chromium driven by playwright-core):
// setup wizard, sign-in, a privacy mask drawn with the mouse and checked in the live preview's
// pixels, a video request approved, the audit entries read. Screenshots of every page go to
// $VEIL_OUT. Run by firmware/veild/tests/web_e2e.rs against a real veild over HTTPS.
import { execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request as httpsRequest } from "node:https";
import { chromium } from "playwright-core";

const base = process.env.VEIL_URL;
const requestId = process.env.VEIL_REQUEST;
const liveId = process.env.VEIL_LIVE;
const camera = process.env.VEIL_CAMERA;
const out = process.env.VEIL_OUT;
const password = "Gatehouse-42";
if (!base || !requestId || !liveId || !camera || !out) throw new Error("set VEIL_URL, VEIL_REQUEST, VEIL_LIVE, VEIL_CAMERA and VEIL_OUT");
mkdirSync(out, { recursive: true });

const profile = mkdtempSync(join(tmpdir(), "veil-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.VEIL_BROWSER ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  // The device's certificate is self-signed: the test checks its fingerprint instead.
  ignoreHTTPSErrors: true,
  viewport: { width: 1280, height: 900 },
});
const page = context.pages()[0] ?? (await context.newPage());
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && !/the server responded with a status of (401|400|403|409)/.test(m.text()) && problems.push(`console: ${m.text()}`));
// Signed out, the page asks nothing that must fail: no 401 for the session it does not have.
page.on("response", (r) => r.status() === 401 && new URL(r.url()).pathname === "/api/session" && problems.push(`401 for ${r.url()}`));

page.on("response", (r) => r.status() === 404 && problems.push(`404 for ${r.url()}`));
const step = (name) => console.log(`e2e: ${name}`);
/** A GET from outside the browser (no session), as a scraper makes it. */
const outside = (url, headers) =>
  new Promise((ok, fail) => {
    const r = httpsRequest(url, { headers, rejectUnauthorized: false }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => ok({ status: res.statusCode, body }));
    });
    r.on("error", fail);
    r.end();
  });
/** Live encodes the device has open (sessions' and previews through another filter). */
const encodes = () => page.evaluate(async () => (await (await fetch("/api/live")).json()).encodes_in_use);
// Polled from here: waitForFunction takes a promise a predicate returns as truthy at once.
async function noEncodes() {
  for (let i = 0; i < 60; i++) {
    if ((await encodes()) === 0) return;
    await page.waitForTimeout(500);
  }
  throw new Error(`live encodes still in use 30 s after the previews closed: ${await encodes()}`);
}
const shot = (name) => page.screenshot({ path: join(out, `${name}.png`), fullPage: true });

/** Every form control on the page has a label a screen reader reads. */
async function labelled(where) {
  const unlabelled = await page.$$eval("input, select, textarea", (els) =>
    els.filter((e) => e.type !== "hidden" && !(e.labels && e.labels.length) && !e.getAttribute("aria-label")).map((e) => e.name || e.outerHTML.slice(0, 60)),
  );
  if (unlabelled.length) {
    const html = await page.$eval("main", (m) => m.innerHTML);
    throw new Error(`${where}: controls without a label: ${unlabelled.join(", ")}\n${html}`);
  }
}

/** Luma statistics of a rectangle of a PNG screenshot, decoded by the browser itself. */
async function luma(png, x, y, w, h) {
  return page.evaluate(
    async ({ data, x, y, w, h }) => {
      const img = new Image();
      img.src = `data:image/png;base64,${data}`;
      await img.decode();
      const c = document.createElement("canvas");
      c.width = img.width;
      c.height = img.height;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      const px = g.getImageData(x, y, w, h).data;
      let sum = 0, sq = 0, n = 0;
      for (let i = 0; i < px.length; i += 4) {
        const l = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
        sum += l;
        sq += l * l;
        n++;
      }
      const mean = sum / n;
      return { mean, sd: Math.sqrt(Math.max(0, sq / n - mean * mean)) };
    },
    { data: png.toString("base64"), x, y, w, h },
  );
}

try {
  step("the first visit opens the setup wizard");
  await page.goto(base);
  await page.waitForURL("**/setup");
  await page.getByRole("heading", { name: "Set up this device" }).waitFor();
  await labelled("setup");
  await page.getByLabel("Device name").fill("Gate house");
  await page.getByLabel("Time zone").fill("Europe/Berlin");
  await page.getByLabel("Admin user name").fill("admin");
  // A weak password is refused next to the field.
  await page.getByLabel("Admin password").fill("hunter2");
  await page.getByLabel("Password again").fill("hunter2");
  await page.getByRole("button", { name: "Create admin and sign in" }).click();
  await page.locator('[data-error-for="password"]', { hasText: "too weak" }).waitFor();
  await shot("setup");
  await page.getByLabel("Admin password").fill(password);
  await page.getByLabel("Password again").fill(password);
  await page.getByRole("button", { name: "Create admin and sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  await page.locator(".spark").first().waitFor();
  await shot("dashboard");

  step("sign out, then sign in again");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await labelled("login");
  await page.getByLabel("User name").fill("admin");
  await page.getByLabel("Password").fill("wrong password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator(".form-error", { hasText: "wrong user name or password" }).waitFor();
  await shot("login");
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  // The setup page is closed for good.
  await page.goto(`${base}/setup`);
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();

  // Early: the request is refused for the operator after a minute without an answer.
  step("live sharing: preview what a waiting viewer would get, then refuse with a reason");
  await page.getByRole("link", { name: "Live sharing" }).click();
  const ask = page.locator(`form[data-live="${liveId}"]`);
  await ask.waitFor();
  await ask.getByRole("button", { name: "Preview what they would see" }).click();
  await page.waitForFunction(() => document.querySelector('section[aria-labelledby="look-title"] img')?.naturalWidth > 0, null, { timeout: 30000 });
  if ((await encodes()) !== 1) throw new Error(`the viewer's preview holds ${await encodes()} live encodes, not 1`);
  await labelled("live");
  await shot("live");
  await ask.getByLabel("Reason to refuse").fill("no operator on shift");
  // Typed text outlives the page's refresh.
  await page.waitForTimeout(3500);
  await ask.getByRole("button", { name: "Refuse" }).click();
  await page.locator(`tr[data-live="${liveId}"]`, { hasText: "refused by operator:admin: no operator on shift" }).waitFor();
  await page.getByRole("button", { name: "Close preview" }).click();
  await noEncodes();

  step("add a synthetic camera, with a connection test and a bad frame rate first");
  await page.getByRole("link", { name: "Cameras" }).click();
  await page.getByRole("button", { name: "Add a camera" }).click();
  const add = page.locator("form.camera-form");
  await add.getByLabel("Camera id").fill("lab");
  await add.getByLabel("Name").fill("Lab bench");
  await add.getByLabel("Source").selectOption("synthetic");
  await add.getByLabel("Width (pixels)").fill("320");
  await add.getByLabel("Height (pixels)").fill("180");
  await add.getByLabel("Frames per second").fill("500");
  await add.getByRole("button", { name: "Test connection" }).click();
  await add.locator('[data-error-for="source.fps"]', { hasText: "500" }).waitFor();
  await add.getByLabel("Frames per second").fill("5");
  await add.getByRole("button", { name: "Test connection" }).click();
  await add.getByText("Connected: 320×180 at 5 frames/s.").waitFor();
  await add.getByLabel("Privacy filter").selectOption("masks-only");
  await add.getByLabel("Latitude (WGS 84)").fill("52.52");
  await add.getByLabel("Longitude (WGS 84)").fill("13.405");
  await labelled("camera form");
  await shot("cameras-add");
  await add.getByRole("button", { name: "Add camera" }).click();
  const labCard = page.locator('section.card[data-camera="lab"]');
  await labCard.waitFor();
  await page.waitForFunction(() => document.querySelector('section.card[data-camera="lab"] img.preview')?.naturalWidth > 0);

  step("draw a privacy mask over the left half of the live picture");
  const card = page.locator(`section.card[data-camera="${camera}"]`);
  await card.waitFor();
  const preview = card.locator("img.preview");
  await page.waitForFunction((sel) => document.querySelector(sel)?.naturalWidth > 0, `section.card[data-camera="${camera}"] img.preview`);
  const before = await preview.screenshot();
  const box0 = await preview.boundingBox();
  const left0 = await luma(before, 4, 4, Math.floor(box0.width / 2) - 8, Math.floor(box0.height) - 8);
  await card.getByRole("button", { name: "Edit privacy masks" }).click();
  const canvas = card.locator("canvas.draw");
  await page.waitForFunction((sel) => document.querySelector(sel)?.naturalWidth > 0, `section.card[data-camera="${camera}"] img.still`);
  await page.waitForFunction((sel) => document.querySelector(sel)?.getBoundingClientRect().height > 50, `section.card[data-camera="${camera}"] canvas.draw`);
  await canvas.scrollIntoViewIfNeeded();
  const c = await canvas.boundingBox();
  // The outline of the left half, a pixel inside the picture's edges.
  for (const [fx, fy] of [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]) {
    await page.mouse.click(c.x + 1 + fx * (c.width - 2), c.y + 1 + fy * (c.height - 2));
  }
  await card.getByRole("button", { name: "Finish shape" }).click();
  await card.getByLabel("Mask 1 name").fill("neighbour's garden");
  await labelled("cameras");
  await card.getByRole("button", { name: "Save masks" }).click();
  await card.locator(".form-error", { hasText: "Saved 1 mask" }).waitFor();
  await shot("cameras-mask");

  step("the live preview shows the masked half blanked");
  let left, right;
  for (let i = 0; i < 30; i++) {
    await page.waitForTimeout(300);
    const png = await preview.screenshot();
    const box = await preview.boundingBox();
    const half = Math.floor(box.width / 2);
    left = await luma(png, 4, 4, half - 12, Math.floor(box.height) - 8);
    right = await luma(png, half + 8, 4, half - 12, Math.floor(box.height) - 8);
    if (left.sd < 4 && left.mean < 40) break;
  }
  console.log(`e2e: preview left half before ${JSON.stringify(left0)}, after ${JSON.stringify(left)}, right half ${JSON.stringify(right)}`);
  if (!(left.sd < 4 && left.mean < 40)) throw new Error(`the masked half is not blank: ${JSON.stringify(left)}`);
  if (!(right.sd > 8)) throw new Error(`the open half shows no picture: ${JSON.stringify(right)}`);
  if (!(left0.sd > 8)) throw new Error(`the left half was not picture before the mask: ${JSON.stringify(left0)}`);

  step("preview through a consumer's filter: one live encode while shown, the mask still blank");
  await card.getByLabel("Preview through").selectOption("silhouette");
  let mosaic;
  for (let i = 0; i < 60; i++) {
    await page.waitForTimeout(300);
    const png = await preview.screenshot();
    const box = await preview.boundingBox();
    const half = Math.floor(box.width / 2);
    mosaic = await luma(png, 4, 4, half - 12, Math.floor(box.height) - 8);
    if ((await encodes()) === 1 && mosaic.sd < 4 && mosaic.mean < 40) break;
  }
  if ((await encodes()) !== 1) throw new Error(`the silhouette preview holds ${await encodes()} live encodes, not 1`);
  if (!(mosaic.sd < 4 && mosaic.mean < 40)) throw new Error(`the masked half shows through the silhouette preview: ${JSON.stringify(mosaic)}`);
  await card.getByLabel("Preview through").selectOption("");
  await noEncodes();

  step("approve the pending video request");
  await page.getByRole("link", { name: "Requests" }).click();
  const request = page.locator(`form[data-request="${requestId}"]`);
  await request.waitFor();
  await shot("requests");
  await request.getByRole("button", { name: "Approve" }).click();
  await page.locator(`tr[data-request="${requestId}"]`, { hasText: "approved by admin" }).waitFor();

  step("the audit log shows who approved it");
  await page.getByRole("link", { name: "Audit log" }).click();
  await page.getByLabel("What").fill("request.");
  await page.getByRole("button", { name: "Filter" }).click();
  const approve = page.locator("tbody tr", { hasText: "request.approve" });
  await approve.waitFor();
  if (!(await approve.innerText()).includes("admin")) throw new Error("request.approve is not by admin");
  await labelled("audit");
  await shot("audit");
  await page.getByLabel("What").fill("camera.masks");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.locator("tbody tr", { hasText: "neighbour's garden" }).waitFor();

  step("recordings: the timeline, an export of the window, played in the page");
  await page.getByRole("link", { name: "Recordings" }).click();
  await page.getByLabel("Camera", { exact: true }).selectOption(camera);
  await page.getByRole("button", { name: "Show" }).click();
  await page.locator(".timeline .span").first().waitFor();
  // The approved request's export is listed first: it covers the minute asked for.
  await page.locator('.job[data-job="job-vr-web"]').waitFor();
  const known = await page.locator(".job").evaluateAll((els) => els.map((e) => e.dataset.job));
  await page.getByRole("button", { name: "Export this window" }).click();
  await page.waitForFunction((old) => [...document.querySelectorAll(".job")].some((e) => !old.includes(e.dataset.job) && e.textContent.includes("SUCCEEDED") && e.querySelector("video")), known, { timeout: 120000 });
  const id = await page.evaluate((old) => [...document.querySelectorAll(".job")].find((e) => !old.includes(e.dataset.job)).dataset.job, known);
  const video = page.locator(`.job[data-job="${id}"] video`);
  await page.waitForFunction((sel) => document.querySelector(sel)?.readyState >= 1, `.job[data-job="${id}"] video`);
  const duration = await video.evaluate((v) => v.duration);
  const manifest = await page.evaluate(async (id) => (await fetch(`/api/exports/${id}/files/manifest.json`)).json(), id);
  console.log(`e2e: export ${id} plays, ${duration.toFixed(1)} s: ${JSON.stringify(manifest.cameras[0].files)}`);
  if (!(duration > 3)) throw new Error(`the exported video lasts ${duration} s`);
  if (!manifest.signature) throw new Error("the export's manifest is not signed");
  await shot("recordings");


  step("incident properties: two types, two categories with values, an integer, two checkboxes and a decimal field");
  await page.getByRole("link", { name: "Incident properties" }).click();
  await page.getByRole("heading", { name: "Incident properties" }).waitFor();
  const types = page.locator('fieldset[data-list="types"]');
  for (const [i, name] of ["Workplace injury - employee", "Workplace injury - visitor"].entries()) {
    await types.getByRole("button", { name: "Add type" }).click();
    await page.locator(`[name="types[${i}].name"]`).fill(name);
  }
  const categories = { Reason: ["Trapped between objects", "Tripped or fallen", "Other"], Location: ["Laboratory", "Parking lot"] };
  for (const [i, [name, values]] of Object.entries(categories).entries()) {
    await page.getByRole("button", { name: "Add category" }).click();
    await page.locator(`[name="categories[${i}].name"]`).fill(name);
    await page.locator(`[name="categories[${i}].description"]`).fill(`The ${name.toLowerCase()} of the incident`);
    const list = page.locator(`fieldset[data-list="categories[${i}].values"]`);
    for (const [j, value] of values.entries()) {
      await list.getByRole("button", { name: "Add value" }).click();
      await page.locator(`[name="categories[${i}].values[${j}].name"]`).fill(value);
    }
  }
  const dataFields = [["integer", "People involved"], ["checkbox", "First aid given"], ["checkbox", "Police called"], ["decimal", "Damage (EUR)"]];
  for (const [i, [kind, name]] of dataFields.entries()) {
    await page.getByRole("button", { name: "Add data field" }).click();
    await page.locator(`[name="fields[${i}].kind"]`).selectOption(kind);
    await page.locator(`[name="fields[${i}].name"]`).fill(name);
  }
  await page.getByLabel("Report title").fill("Gate house site");
  await labelled("incident properties");
  await page.getByRole("button", { name: "Save properties" }).click();
  await page.getByText("Saved.").waitFor();
  await shot("incident-properties");

  step("mark a recording period of each camera on the Recordings timeline");
  await page.getByRole("link", { name: "Recordings" }).click();
  for (const cam of [camera, "lab"]) {
    await page.getByLabel("Camera", { exact: true }).selectOption(cam);
    await page.getByRole("button", { name: "Show" }).click();
    await page.locator(`.periods[data-camera="${cam}"] button`).first().click();
  }
  await page.locator(".draft li[data-draft]").nth(1).waitFor();
  // The draft survives a reload.
  await page.reload();
  await page.locator(".draft li[data-draft]").nth(1).waitFor();

  step("a project from the two sequences: type, status, categories, data, a comment and a call");
  await page.getByRole("link", { name: "Incidents", exact: true }).click();
  await page.getByRole("button", { name: "New project" }).click();
  await page.getByRole("heading", { name: /^Project \d+/ }).waitFor();
  const projectId = Number(new URL(page.url()).searchParams.get("id"));
  await page.getByLabel("Name", { exact: true }).fill("Fall at the loading bay");
  await page.getByLabel("Type", { exact: true }).selectOption({ label: "Workplace injury - visitor" });
  await page.getByLabel("Status", { exact: true }).selectOption({ label: "In progress" });
  await page.getByLabel("People involved").fill("2");
  await page.getByLabel("First aid given").check();
  await page.getByLabel("Damage (EUR)").fill("1250.5");
  await page.getByRole("button", { name: "Save details" }).click();
  await page.getByText("In progress · created by admin").waitFor();
  await page.getByRole("tab", { name: "Categories" }).click();
  await page.getByLabel("Reason").selectOption({ label: "Tripped or fallen" });
  await page.getByLabel("Location").selectOption({ label: "Parking lot" });
  await page.getByRole("button", { name: "Save categories" }).click();
  await page.getByRole("tab", { name: "Activity log" }).click();
  await page.getByRole("tabpanel").getByText("Location: none → Parking lot").waitFor();
  await page.getByRole("tab", { name: /^Comments/ }).click();
  await page.getByLabel("New comment").fill("Visitor slipped on oil near bay 3; first aid at 08:10.");
  await page.getByRole("button", { name: "Add comment" }).click();
  await page.locator("article.comment", { hasText: "slipped on oil" }).waitFor();
  await page.getByRole("tab", { name: /^Calls/ }).click();
  await page.getByLabel("Caller").fill("Gate house");
  await page.getByLabel("Called", { exact: true }).fill("Emergency services");
  await page.getByLabel("When").fill("2026-12-01T08:04:00");
  await page.getByLabel("Phone number").fill("+49 112");
  await page.getByLabel("Notes").fill("Ambulance sent");
  await page.getByRole("button", { name: "Add call" }).click();
  await page.locator("article.call", { hasText: "Gate house called Emergency services" }).waitFor();
  await page.getByRole("tab", { name: /^Sequence list/ }).click();
  const rows = await page.locator("tr[data-sequence]").allInnerTexts();
  if (rows.length !== 2 || !rows.some((r) => r.includes(camera)) || !rows.some((r) => r.includes("lab"))) throw new Error(`the sequence list is not the two marked periods: ${rows}`);
  await labelled("incident project");
  await shot("incident-project");

  step("the report as PDF, read back with poppler as text and as a picture");
  const pdf = await page.evaluate(async (id) => {
    const bytes = new Uint8Array(await (await fetch(`/api/incidents/${id}/report.pdf`)).arrayBuffer());
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }, projectId);
  const pdfPath = join(out, "incident-report.pdf");
  writeFileSync(pdfPath, Buffer.from(pdf, "base64"));
  const text = execFileSync("pdftotext", ["-layout", pdfPath, "-"]).toString();
  for (const want of ["Gate house site", "Incident report", "Fall at the loading bay", "Workplace injury - visitor", "In progress", "Tripped or fallen", "Parking lot", "People involved", "First aid given", "Damage (EUR)", "1250.5", "slipped on oil", "Gate house called Emergency services", "lab", camera, "Activity log"]) {
    if (!text.includes(want)) throw new Error(`the report PDF lacks "${want}":\n${text}`);
  }
  execFileSync("pdftoppm", ["-png", "-r", "60", "-singlefile", pdfPath, join(out, "incident-report")]);

  step("export the project as evidence: its sequences, report and data, signed");
  await page.getByLabel("Case", { exact: true }).selectOption("existing");
  await page.getByLabel("Case reference").fill("CASE-2026-114");
  await labelled("incident export");
  await page.getByRole("button", { name: "Export as evidence" }).click();
  const queued = await page.getByText(/Export incident-\S+ queued/).innerText();
  const incidentJob = queued.match(/Export (incident-\S+) queued/)[1];
  // Polled from here: a predicate that returns a promise is not waited on by waitForFunction.
  let done = null;
  for (let i = 0; i < 360 && !done; i++) {
    done = await page.evaluate(async (job) => {
      const jobs = await (await fetch("/api/exports")).json();
      const j = jobs.find((x) => x.id === job);
      if (j?.status === "FAILED") return { failed: j.reason };
      return j?.status === "SUCCEEDED" ? j : null;
    }, incidentJob);
    if (!done) await page.waitForTimeout(500);
  }
  if (!done) throw new Error(`the incident export ${incidentJob} did not finish in 3 minutes`);
  if (done.failed) throw new Error(`the incident export failed: ${done.failed}`);
  const incidentManifest = await page.evaluate(async (job) => (await fetch(`/api/exports/${job}/files/manifest.json`)).json(), incidentJob);
  const attached = (incidentManifest.attachments ?? []).map((a) => a.file).sort();
  if (attached.join() !== "project.json,report.pdf") throw new Error(`the export carries ${attached}, not the report and project.json`);
  if (incidentManifest.cameras.length !== 2) throw new Error(`the export holds ${incidentManifest.cameras.length} sequences, not 2`);
  const projectJson = await page.evaluate(async (job) => (await fetch(`/api/exports/${job}/files/project.json`)).json(), incidentJob);
  if (projectJson.project.name !== "Fall at the loading bay") throw new Error("project.json is not the project");
  if (projectJson.case.reference !== "CASE-2026-114") throw new Error(`project.json names case ${JSON.stringify(projectJson.case)}`);
  console.log(`e2e: incident export ${incidentJob}: ${JSON.stringify(incidentManifest.cameras.map((c) => c.files.map((f) => f.file)))}`);
  process.stdout.write(`e2e-incident-job=${incidentJob}\n`);

  step("a viewer reads the project and can change nothing");
  await page.evaluate(async () => {
    const { csrf_token } = await (await fetch("/api/session")).json();
    const r = await fetch("/api/users", { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf_token }, body: JSON.stringify({ name: "vic", role: "viewer", password: "Viewer-Pass-77" }) });
    if (r.status !== 201) throw new Error(`cannot create the viewer: ${r.status} ${await r.text()}`);
  });
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("User name").fill("vic");
  await page.getByLabel("Password").fill("Viewer-Pass-77");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  await page.getByRole("link", { name: "Incidents", exact: true }).click();
  await page.locator(`tr[data-project="${projectId}"]`).waitFor();
  if (await page.getByRole("button", { name: "New project" }).count()) throw new Error("a viewer is offered a new project");
  await page.locator(`tr[data-project="${projectId}"] a`).click();
  await page.getByRole("heading", { name: /^Project \d+/ }).waitFor();
  await page.getByRole("tab", { name: "Main details" }).click();
  for (const name of ["Save details", "Export as evidence", "Delete project"]) {
    if (await page.getByRole("button", { name }).count()) throw new Error(`a viewer is offered "${name}"`);
  }
  if (!(await page.getByLabel("Name", { exact: true }).isDisabled())) throw new Error("a viewer can edit the project's name");
  await page.getByRole("tab", { name: /^Comments/ }).click();
  if (await page.getByLabel("New comment").count()) throw new Error("a viewer is offered a comment form");
  const refused = await page.evaluate(async (id) => {
    const { csrf_token } = await (await fetch("/api/session")).json();
    const r = await fetch(`/api/incidents/${id}`, { method: "PATCH", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf_token }, body: JSON.stringify({ name: "changed by a viewer" }) });
    return r.status;
  }, projectId);
  if (refused !== 403) throw new Error(`a viewer's change got ${refused}, not 403`);
  await shot("incident-viewer");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("User name").fill("admin");
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();

  step("a camera removed on the page is not asked for again");
  page.once("dialog", (d) => d.accept());
  await page.evaluate(async () => {
    const { csrf_token } = await (await fetch("/api/session")).json();
    const r = await fetch("/api/cameras", { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf_token }, body: JSON.stringify({ id: "spare", source: { kind: "synthetic", width: 160, height: 90, fps: 5 } }) });
    if (r.status !== 201) throw new Error(`cannot add the spare camera: ${r.status} ${await r.text()}`);
  });
  await page.getByRole("link", { name: "Cameras" }).click();
  await page.locator('section.card[data-camera="spare"] img.preview').waitFor();
  const asked = [];
  const watch = (r) => r.url().includes("/api/cameras/spare/") && asked.push(r.url());
  page.on("request", watch);
  await page.getByRole("button", { name: "Remove spare" }).click();
  await page.waitForFunction(() => !document.querySelector('section.card[data-camera="spare"]'));
  await page.getByRole("link", { name: "Dashboard" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  await page.waitForTimeout(1500);
  page.off("request", watch);
  if (asked.length) throw new Error(`the removed camera was asked for again: ${asked.join(", ")}`);

  step("users, system, and the dashboard at 360 px");
  await page.getByRole("link", { name: "Users" }).click();
  await page.getByRole("heading", { name: "Add a user" }).waitFor();
  await page.getByLabel("User name", { exact: true }).fill("olga");
  await page.getByLabel("Role", { exact: true }).selectOption("operator");
  await page.getByLabel("Password", { exact: true }).fill("short");
  await page.getByRole("button", { name: "Add user" }).click();
  await page.locator('[data-error-for="password"]', { hasText: "too weak" }).first().waitFor();
  await page.getByLabel("Password", { exact: true }).fill("Operator-Pass-9");
  await page.getByRole("button", { name: "Add user" }).click();
  await page.getByRole("rowheader", { name: "olga" }).waitFor();
  await labelled("users");
  await shot("users");
  await page.getByRole("link", { name: "Fleet" }).click();
  await page.getByLabel("Broker", { exact: true }).waitFor();
  await labelled("fleet");
  // The walkthrough's device is on a broker: its password is shown as ***, never in clear.
  if ((await page.getByLabel("Password", { exact: true }).inputValue()) !== "***") throw new Error("the broker password is not masked");
  await page.getByRole("button", { name: "Test connection" }).click();
  await page.getByText("Broker: ok.").waitFor();
  await shot("fleet");
  await page.getByRole("link", { name: "System" }).click();
  await page.getByText("HTTPS certificate (SHA-256)").waitFor();
  const log = await page.evaluate(async () => (await fetch("/api/system/logs")).text());
  if (!log.includes("serving the web page and API")) throw new Error("the downloaded log lacks the start-up lines");
  await shot("system");
  step("a firmware bundle uploaded on the System page: not signed for this device, refused before anything is written");
  await page.getByText("No update was installed yet.").waitFor();
  const junk = join(profile, "not-a-bundle.raucb");
  writeFileSync(junk, Buffer.alloc(256 * 1024, 7));
  await page.getByLabel("Bundle (.raucb, signed for this device)").setInputFiles(junk);
  page.once("dialog", (d) => d.accept());
  await page.getByRole("button", { name: "Upload and install" }).click();
  await page.getByText(/refused before anything was written: RAUC/).waitFor();
  const refusals = await page.evaluate(async () => (await fetch("/api/audit?action=firmware.refused")).json());
  if (refusals.length !== 1 || refusals[0].after.bytes !== 256 * 1024) throw new Error(`the refused bundle is not in the audit log: ${JSON.stringify(refusals)}`);
  step("a metrics scraper's token, made on the System page, reads /metrics and nothing else");
  await page.getByLabel("Scraper name").fill("prometheus-dc1");
  await page.getByRole("button", { name: "Make a token" }).click();
  const secret = await page.locator('[role="status"] code').innerText();
  // A client without the page's session, as Prometheus is.
  const bearer = { Authorization: `Bearer ${secret}` };
  const scraped = await outside(`${base}/metrics`, bearer);
  if (scraped.status !== 200 || !scraped.body.includes("veil_")) throw new Error(`/metrics with the token: ${scraped.status}`);
  if ((await outside(`${base}/api/status`, bearer)).status !== 401) throw new Error("a scrape token opened /api/status");
  page.once("dialog", (d) => d.accept());
  await page.getByRole("button", { name: "Revoke prometheus-dc1" }).click();
  await page.getByText("No scraper has a token.").waitFor();
  if ((await outside(`${base}/metrics`, bearer)).status !== 401) throw new Error("a revoked token still reads /metrics");
  await page.setViewportSize({ width: 360, height: 780 });
  const firstProject = await page.evaluate(async () => (await (await fetch("/api/incidents")).json()).projects[0].id);
  for (const path of ["/", "/cameras", "/recordings", "/requests", "/live", "/incidents", `/incident?id=${firstProject}`, "/incident-properties", "/audit", "/users", "/fleet", "/system"]) {
    await page.goto(`${base}${path}`);
    await page.locator("main h1").waitFor();
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 360) throw new Error(`${path} is ${wide} px wide at a 360 px viewport`);
    // No column is hidden on a small screen: a wide table scrolls instead.
    const hidden = await page.evaluate(() =>
      [...document.querySelectorAll("main th, main td")].filter((c) => getComputedStyle(c).display === "none").length);
    if (hidden > 0) throw new Error(`${path} hides ${hidden} table cells at a 360 px viewport`);
  }
  await page.goto(`${base}/`);
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  await shot("dashboard-360");

  step("an operator changes their own password from the header");
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("User name").fill("olga");
  await page.getByLabel("Password").fill("Operator-Pass-9");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  await page.getByRole("link", { name: "olga (operator)" }).click();
  await page.getByRole("heading", { name: "Change your password" }).waitFor();
  await page.getByLabel("Current password").fill("Operator-Pass-9");
  await page.getByLabel("New password").fill("Operator-Pass-10");
  await page.getByRole("button", { name: "Change password" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("User name").fill("olga");
  await page.getByLabel("Password").fill("Operator-Pass-10");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();

  step("keyboard only: the skip link and the navigation are reachable with Tab");
  await page.setViewportSize({ width: 1280, height: 900 });
  // A fresh visit: the first Tab, whenever it comes, reaches the skip link.
  await page.goto(`${base}/`);
  await page.keyboard.press("Tab");
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  const focused = await page.evaluate(() => document.activeElement?.textContent);
  if (focused !== "Skip to content") throw new Error(`first Tab focuses "${focused}"`);

  if (problems.length) throw new Error(problems.join("\n"));
  console.log("e2e: passed");
} catch (e) {
  await shot("failure").catch(() => {});
  console.error(`e2e: FAILED: ${e.stack ?? e}`);
  // What the page showed and what the device says, so a failure explains itself.
  const main = await page.locator("main").innerText({ timeout: 2000 }).catch((err) => `(no main: ${err.message})`);
  console.error(`e2e: the page at ${page.url()} shows:\n${main.slice(0, 4000)}`);
  const jobs = await page.evaluate(async () => (await fetch("/api/exports")).text()).catch((err) => `(${err.message})`);
  console.error(`e2e: GET /api/exports: ${jobs.slice(0, 4000)}`);
  if (problems.length) console.error(`e2e: also seen:\n${problems.join("\n")}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
