// The single-page app: which page a path shows, the navigation for the signed-in role, and
// the way back to sign-in when a session ends.
import { api, setSession, whenSignedOut, type Session } from "./api";
import { h } from "./dom";
import { visiblePages } from "./nav";
import { setZone } from "./time";
import { auditPage } from "./pages/audit";
import { camerasPage } from "./pages/cameras";
import { dashboardPage } from "./pages/dashboard";
import { fleetPage } from "./pages/fleet";
import { incidentPropertiesPage } from "./pages/incident-properties";
import { incidentPage, incidentsPage } from "./pages/incidents";
import { livePage } from "./pages/live";
import { loginPage, setupPage } from "./pages/session";
import { recordingsPage } from "./pages/recordings";
import { requestsPage } from "./pages/requests";
import { systemPage } from "./pages/system";
import { accountPage, usersPage } from "./pages/users";

export interface Ctx {
  session: Session;
  main: HTMLElement;
  go: (path: string) => void;
  /** Called when the page is left: stop timers and streams. */
  onLeave: (f: () => void) => void;
}

type Render = (ctx: Ctx) => void | Promise<void>;

const ROUTES: Record<string, Render> = {
  "/": dashboardPage,
  "/cameras": camerasPage,
  "/recordings": recordingsPage,
  "/requests": requestsPage,
  "/live": livePage,
  "/incidents": incidentsPage,
  "/incident-properties": incidentPropertiesPage,
  // One project: reached from the list (`/incident?id=N`).
  "/incident": incidentPage,
  "/users": usersPage,
  "/audit": auditPage,
  "/fleet": fleetPage,
  "/system": systemPage,
  // Not in the navigation: reached from the user name in the header, for every role.
  "/account": accountPage,
};

let session: Session | null = null;
let leave: (() => void)[] = [];
// The first page of a visit leaves focus where the browser put it, so the first Tab reaches
// the skip link; pages opened from the page move focus to their content for screen readers.
let navigated = false;

const $ = (id: string) => document.getElementById(id)!;

function go(path: string) {
  if (location.pathname + location.search !== path) history.pushState(null, "", path);
  void show();
}

function renderNav() {
  const nav = $("nav");
  nav.replaceChildren();
  if (!session) {
    nav.hidden = true;
    $("user").hidden = true;
    return;
  }
  const ul = h("ul");
  for (const p of visiblePages(session.permissions)) {
    const a = h("a", { href: p.path }, p.title);
    if (p.path === location.pathname) a.setAttribute("aria-current", "page");
    ul.append(h("li", {}, a));
  }
  nav.append(ul);
  nav.hidden = false;
  $("user").hidden = false;
  $("user-name").textContent = `${session.user} (${session.role})`;
  if (session.site) $("device-name").textContent = session.site.device_name;
  setZone(session.site?.time_zone);
}

async function show() {
  for (const f of leave) f();
  leave = [];
  const main = $("page");
  main.replaceChildren();
  const path = location.pathname;
  if (!session) {
    const { setup_open, signed_in } = await api<{ setup_open: boolean; signed_in: boolean }>("GET", "/api/setup");
    if (setup_open) {
      if (path !== "/setup") history.replaceState(null, "", "/setup");
      renderNav();
      setupPage(main, signedIn);
      return;
    }
    try {
      // Signed out: straight to the sign-in page, without a request that must fail.
      if (!signed_in) throw new Error("signed out");
      session = await api<Session>("GET", "/api/session");
      setSession(session);
    } catch {
      if (path !== "/login") history.replaceState(null, "", "/login");
      renderNav();
      loginPage(main, signedIn);
      return;
    }
  }
  if (path === "/login" || path === "/setup") history.replaceState(null, "", "/");
  renderNav();
  const render = ROUTES[location.pathname];
  if (!render) {
    main.append(h("h1", {}, "Not found"), h("p", {}, "There is no such page. "), h("a", { href: "/" }, "Go to the dashboard"));
    return;
  }
  await render({ session: session!, main, go, onLeave: (f) => leave.push(f) });
  if (navigated) main.focus({ preventScroll: true });
  navigated = true;
}

function signedIn(s: Session) {
  session = s;
  setSession(s);
  go("/");
}

export function start() {
  whenSignedOut(() => {
    // Only a session that ended while in use leads back to sign-in (no loop while signed out).
    if (!session) return;
    session = null;
    setSession(null);
    void show();
  });
  document.addEventListener("click", (e) => {
    const a = (e.target as Element).closest?.("a");
    if (!a || a.target || a.hasAttribute("download") || e.ctrlKey || e.metaKey || e.shiftKey) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
    e.preventDefault();
    go(url.pathname + url.search);
  });
  window.addEventListener("popstate", () => void show());
  $("sign-out").addEventListener("click", async () => {
    try {
      await api("POST", "/api/logout");
    } finally {
      session = null;
      setSession(null);
      go("/login");
    }
  });
  void show().catch((e) => {
    const err = $("error");
    err.textContent = `Cannot reach the device: ${(e as Error).message}`;
    err.hidden = false;
  });
}
