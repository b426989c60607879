// Which pages a user sees, from the role's permissions (the server enforces them anyway).
import type { Access } from "./api";

export interface Page {
  path: string;
  title: string;
  area?: string;
  level?: Access;
}

export const PAGES: Page[] = [
  { path: "/", title: "Dashboard" },
  { path: "/cameras", title: "Cameras", area: "cameras", level: "view" },
  { path: "/recordings", title: "Recordings", area: "recordings", level: "view" },
  { path: "/requests", title: "Requests", area: "requests", level: "view" },
  { path: "/live", title: "Live sharing", area: "requests", level: "view" },
  { path: "/incidents", title: "Incidents", area: "incidents", level: "view" },
  { path: "/incident-properties", title: "Incident properties", area: "incident_properties", level: "manage" },
  { path: "/users", title: "Users", area: "users", level: "view" },
  { path: "/audit", title: "Audit log", area: "system", level: "view" },
  { path: "/fleet", title: "Fleet", area: "system", level: "view" },
  { path: "/system", title: "System", area: "system", level: "view" },
];

const ORDER: Access[] = ["none", "view", "manage"];

export function visiblePages(permissions: Record<string, Access>): Page[] {
  return PAGES.filter((p) => !p.area || ORDER.indexOf(permissions[p.area] ?? "none") >= ORDER.indexOf(p.level ?? "view"));
}

/** The audit page's filter as a query string (empty fields left out). */
export function auditQuery(f: Record<string, string>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v.trim()) q.set(k, v.trim());
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Where each stretch lies on a bar of the window, in percent (for the timeline). */
export function place(from: number, to: number, span: { from_ms: number; to_ms: number }): { left: number; width: number } {
  const total = Math.max(1, to - from);
  const a = Math.max(from, span.from_ms), b = Math.min(to, span.to_ms);
  return { left: ((a - from) / total) * 100, width: (Math.max(0, b - a) / total) * 100 };
}
