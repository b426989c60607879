// Calls to the device's API: JSON in and out, the CSRF token on every change, and errors as
// { code, message, field } the forms show next to the field.

export type Access = "none" | "view" | "manage";
export type Role = "admin" | "operator" | "viewer";

export interface Session {
  user: string;
  role: Role;
  csrf_token: string;
  expires_ms: number;
  permissions: Record<string, Access>;
  site?: { device_name: string; time_zone: string };
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public field?: string,
  ) {
    super(message);
  }
}

let csrf = "";
let onSignedOut: () => void = () => {};

export function setSession(s: Session | null) {
  csrf = s?.csrf_token ?? "";
}

export function whenSignedOut(f: () => void) {
  onSignedOut = f;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  // A file (a firmware bundle) goes as it is; everything else as JSON.
  const raw = body instanceof Blob;
  if (body !== undefined) headers["Content-Type"] = raw ? "application/octet-stream" : "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : raw ? (body as Blob) : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!res.ok) {
    const e = (data ?? {}) as { code?: string; message?: string; field?: string };
    const err = new ApiError(res.status, e.code ?? "error", e.message ?? `the device answered ${res.status}`, e.field);
    if (res.status === 401 && path !== "/api/login" && path !== "/api/session/password") onSignedOut();
    throw err;
  }
  return data as T;
}

export function can(s: Session | null, area: string, level: Access): boolean {
  const have = s?.permissions[area] ?? "none";
  const order: Access[] = ["none", "view", "manage"];
  return order.indexOf(have) >= order.indexOf(level);
}
