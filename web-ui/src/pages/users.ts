// Accounts and roles; one's own password.
import { api, can, type Role } from "../api";
import type { Ctx } from "../app";
import { field, h, select, showError } from "../dom";

interface User {
  name: string;
  role: Role;
  created: string;
  disabled: boolean;
}

const ROLES: [string, string][] = [
  ["viewer", "Viewer: looks, changes nothing"],
  ["operator", "Operator: requests, recordings, incidents"],
  ["admin", "Admin: everything"],
];

export async function usersPage(ctx: Ctx) {
  const manage = can(ctx.session, "users", "manage");
  const tbody = h("tbody");
  const render = async () => {
    const users = await api<User[]>("GET", "/api/users");
    tbody.replaceChildren();
    for (const u of users) {
      const role = select(`Role of ${u.name}`, "role", ROLES, u.role);
      role.input.disabled = !manage;
      const err = h("p", { class: "form-error", role: "alert" });
      role.input.addEventListener("change", async () => {
        try {
          await api("PATCH", `/api/users/${encodeURIComponent(u.name)}`, { role: role.input.value });
          await render();
        } catch (e) {
          err.textContent = (e as Error).message;
          role.input.value = u.role;
        }
      });
      const toggle = h("button", { type: "button" }, u.disabled ? `Enable ${u.name}` : `Disable ${u.name}`);
      toggle.addEventListener("click", async () => {
        try {
          await api("PATCH", `/api/users/${encodeURIComponent(u.name)}`, { disabled: !u.disabled });
          await render();
        } catch (e) {
          err.textContent = (e as Error).message;
        }
      });
      const del = h("button", { type: "button" }, `Delete ${u.name}`);
      del.addEventListener("click", async () => {
        if (!confirm(`Delete the account ${u.name}?`)) return;
        try {
          await api("DELETE", `/api/users/${encodeURIComponent(u.name)}`);
          await render();
        } catch (e) {
          err.textContent = (e as Error).message;
        }
      });
      tbody.append(
        h(
          "tr",
          {},
          h("th", { scope: "row" }, u.name),
          h("td", {}, role.wrap),
          h("td", {}, u.disabled ? "disabled" : "active"),
          h("td", {}, manage ? toggle : null, manage ? del : null, err),
        ),
      );
    }
  };
  ctx.main.append(
    h("h1", {}, "Users"),
    h("table", {}, h("thead", {}, h("tr", {}, ...["User", "Role", "State", "Actions"].map((t) => h("th", { scope: "col" }, t)))), tbody),
  );
  if (manage) {
    const name = field("User name", "name", { required: true, autocomplete: "off" });
    const role = select("Role", "role", ROLES, "viewer");
    const pw = field("Password", "password", { type: "password", required: true, autocomplete: "new-password" });
    const form = h("form", { novalidate: true, "aria-labelledby": "new-user" }, h("h2", { id: "new-user" }, "Add a user"), name.wrap, role.wrap, pw.wrap, h("p", { class: "form-error", role: "alert" }), h("button", { type: "submit" }, "Add user"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("POST", "/api/users", { name: name.input.value, role: role.input.value, password: pw.input.value });
        form.reset();
        showError(form, null);
        await render();
      } catch (err) {
        showError(form, err);
      }
    });
    ctx.main.append(form);
  }
  ctx.main.append(ownPassword());
  await render();
}

/** Every signed-in user's own page: who they are, and their password. */
export async function accountPage(ctx: Ctx) {
  ctx.main.append(
    h("h1", {}, "Your account"),
    h("p", {}, `Signed in as ${ctx.session.user}, role ${ctx.session.role}.`),
    ownPassword(),
  );
}

export function ownPassword(): HTMLElement {
  const cur = field("Current password", "current_password", { type: "password", required: true, autocomplete: "current-password" });
  const next = field("New password", "new_password", { type: "password", required: true, autocomplete: "new-password" });
  const form = h("form", { novalidate: true, "aria-labelledby": "own-pw" }, h("h2", { id: "own-pw" }, "Change your password"), cur.wrap, next.wrap, h("p", { class: "form-error", role: "alert" }), h("button", { type: "submit" }, "Change password"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("POST", "/api/session/password", { current_password: cur.input.value, new_password: next.input.value });
      location.assign("/login");
    } catch (err) {
      showError(form, err);
    }
  });
  return form;
}
