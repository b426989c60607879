//! Accounts, roles, sessions and the login rate limit of the local web page.
//!
//! Kept in `state/web.sqlite3`: users (Argon2id PHC strings), sessions (only the SHA-256 of
//! each token is stored, so a copied database opens no session) and the setup settings.
//! There are no default credentials: until the setup wizard creates the first admin, only
//! setup is possible, and once it has, setup is closed for good.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use veil_core::{Clock, Error, ErrorKind};

/// A feature area of the device; each role has an access level per area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    Cameras,
    /// Recordings and exports.
    Recordings,
    Requests,
    /// Incident projects: their values, list and deletion.
    Incidents,
    /// What admins define for incidents: types, statuses, categories, data fields, retention.
    IncidentProperties,
    IncidentComments,
    IncidentCalls,
    /// A project's sequences (which hold footage).
    IncidentSequences,
    IncidentReports,
    /// Exporting a project as signed evidence.
    IncidentExport,
    Users,
    /// Device health, audit log, network and fleet settings, reboot.
    System,
}

impl Area {
    pub const ALL: [Area; 12] = [
        Area::Cameras,
        Area::Recordings,
        Area::Requests,
        Area::Incidents,
        Area::IncidentProperties,
        Area::IncidentComments,
        Area::IncidentCalls,
        Area::IncidentSequences,
        Area::IncidentReports,
        Area::IncidentExport,
        Area::Users,
        Area::System,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Area::Cameras => "cameras",
            Area::Recordings => "recordings",
            Area::Requests => "requests",
            Area::Incidents => "incidents",
            Area::IncidentProperties => "incident_properties",
            Area::IncidentComments => "incident_comments",
            Area::IncidentCalls => "incident_calls",
            Area::IncidentSequences => "incident_sequences",
            Area::IncidentReports => "incident_reports",
            Area::IncidentExport => "incident_export",
            Area::Users => "users",
            Area::System => "system",
        }
    }
}

/// How much a role may do in an area; ordered, so `Manage` implies `View`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    None,
    View,
    Manage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Installs and runs the device: everything.
    Admin,
    /// The camera owner's staff: handles requests, recordings and incidents.
    Operator,
    /// Looks, changes nothing.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Viewer];

    /// The permission matrix (docs/privacy.md shows it as a table).
    pub fn access(self, area: Area) -> Access {
        use Access::*;
        match (self, area) {
            (Role::Admin, _) => Manage,
            (Role::Operator, Area::Cameras) => View,
            (Role::Operator, Area::Recordings | Area::Requests | Area::Incidents) => Manage,
            (
                Role::Operator,
                Area::IncidentComments
                | Area::IncidentCalls
                | Area::IncidentSequences
                | Area::IncidentExport,
            ) => Manage,
            // Reports are read: making one changes nothing.
            (Role::Operator, Area::IncidentProperties | Area::IncidentReports) => View,
            (Role::Operator, Area::Users) => None,
            (Role::Operator, Area::System) => View,
            (Role::Viewer, Area::Cameras | Area::Recordings | Area::Incidents) => View,
            (
                Role::Viewer,
                Area::IncidentProperties
                | Area::IncidentComments
                | Area::IncidentCalls
                | Area::IncidentSequences
                | Area::IncidentReports,
            ) => View,
            (Role::Viewer, Area::IncidentExport) => None,
            (Role::Viewer, Area::Requests | Area::Users | Area::System) => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// A read-only credential for a metrics scraper (Prometheus' `authorization` credentials):
/// only its SHA-256 is kept, so the secret is shown once, when it is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScrapeToken {
    pub id: String,
    /// What it is for, e.g. `prometheus-dc1`.
    pub name: String,
    pub created_ms: u64,
    pub created_by: String,
    /// When it was last accepted (ms since the epoch), if ever.
    pub last_used_ms: Option<u64>,
}

/// The prefix of every scrape token's secret (a scanner for leaked secrets can match it).
pub const SCRAPE_TOKEN_PREFIX: &str = "veil_scrape_";

/// A user as the API shows it (never the hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// RFC 3339.
    pub created: String,
    pub disabled: bool,
}

/// The signed-in caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub expires_ms: u64,
}

/// Sessions end after this long without a request…
pub const SESSION_IDLE_MS: u64 = 30 * 60 * 1000;
/// …and in any case this long after sign-in.
pub const SESSION_MAX_MS: u64 = 12 * 60 * 60 * 1000;
/// Failed sign-ins to one account from one address within [`LOGIN_WINDOW_MS`] before that
/// pair must wait.
pub const LOGIN_FAILURES: usize = 5;
/// Failed sign-ins to one account from all addresses together before it waits too: guessing
/// from many addresses is slowed as well (high enough that one address cannot lock the owner
/// out alone).
pub const LOGIN_FAILURES_PER_ACCOUNT: usize = 4 * LOGIN_FAILURES;
/// Failed sign-ins from one address to all accounts together: a valid sign-in to one account
/// never clears the failures against another.
pub const LOGIN_FAILURES_PER_CLIENT: usize = 4 * LOGIN_FAILURES;
pub const LOGIN_WINDOW_MS: u64 = 5 * 60 * 1000;

/// Checks a user name: 2–32 of a–z, 0–9, `.`, `_`, `-`, starting with a letter.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok = (2..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid user name: use 2 to 32 lower-case letters, digits, '.', '_' \
             or '-', starting with a letter"
        ))
    }
}

/// Passwords people pick first; refused whatever their length.
const COMMON: &[&str] = &[
    "password", "passw0rd", "123456", "qwerty", "letmein", "welcome", "admin", "veil", "changeme",
    "iloveyou", "abc123", "camera", "monkey", "dragon", "football",
];

/// Minimum strength: 10 characters with three kinds of lower case, upper case, digits and
/// symbols, or 16 characters of any kind; not built on the user name or a common password.
pub fn check_password(password: &str, user: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len > 128 {
        return Err("is longer than 128 characters".into());
    }
    let lower = password.to_lowercase();
    if lower.contains(user) && user.len() >= 3 {
        return Err("must not contain the user name".into());
    }
    let stem: String = lower.chars().filter(|c| c.is_alphabetic()).collect();
    if COMMON
        .iter()
        .any(|c| stem == *c || lower.starts_with(c) && len < 16)
    {
        return Err("is a common password; choose another".into());
    }
    let kinds = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ]
    .iter()
    .filter(|k| **k)
    .count();
    let distinct = password
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if len >= 16 && distinct >= 6 || len >= 10 && kinds >= 3 && distinct >= 5 {
        Ok(())
    } else {
        Err(
            "is too weak: use at least 10 characters mixing three of lower case, upper case, \
             digits and symbols, or at least 16 characters"
                .into(),
        )
    }
}

/// Settings the setup wizard records.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SiteSettings {
    pub device_name: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
}

pub struct Auth {
    db: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    hasher: Argon2<'static>,
    failures: Mutex<LoginFailures>,
}

/// When sign-ins failed, counted three ways: per (address, account), per account and per
/// address. A success clears only what concerns the account that signed in.
#[derive(Default)]
struct LoginFailures {
    pair: HashMap<(IpAddr, String), Vec<u64>>,
    account: HashMap<String, Vec<u64>>,
    client: HashMap<IpAddr, Vec<u64>>,
}

impl LoginFailures {
    /// The name as counted: cut short, so a flood of long made-up names stays small.
    fn key(name: &str) -> String {
        name.chars().take(64).collect()
    }

    fn forget_old(&mut self, now: u64) {
        let fresh = |l: &mut Vec<u64>| {
            l.retain(|t| now.saturating_sub(*t) < LOGIN_WINDOW_MS);
            !l.is_empty()
        };
        self.pair.retain(|_, l| fresh(l));
        self.account.retain(|_, l| fresh(l));
        self.client.retain(|_, l| fresh(l));
    }

    /// How long a sign-in to `name` from `client` must wait, and why, if it must.
    fn wait(&mut self, now: u64, client: IpAddr, name: &str) -> Option<(u64, String)> {
        self.forget_old(now);
        let name = Self::key(name);
        let until = |l: Option<&Vec<u64>>, limit: usize| {
            l.filter(|l| l.len() >= limit)
                .map(|l| l[l.len() - limit] + LOGIN_WINDOW_MS - now)
        };
        if let Some(w) = until(self.pair.get(&(client, name.clone())), LOGIN_FAILURES) {
            return Some((
                w,
                format!("too many failed sign-ins to this account from {client}"),
            ));
        }
        if let Some(w) = until(self.client.get(&client), LOGIN_FAILURES_PER_CLIENT) {
            return Some((w, format!("too many failed sign-ins from {client}")));
        }
        if let Some(w) = until(self.account.get(&name), LOGIN_FAILURES_PER_ACCOUNT) {
            return Some((w, "too many failed sign-ins to this account".to_string()));
        }
        None
    }

    fn failed(&mut self, now: u64, client: IpAddr, name: &str) {
        let name = Self::key(name);
        self.pair
            .entry((client, name.clone()))
            .or_default()
            .push(now);
        self.account.entry(name).or_default().push(now);
        self.client.entry(client).or_default().push(now);
    }

    fn succeeded(&mut self, client: IpAddr, name: &str) {
        let name = Self::key(name);
        self.pair.remove(&(client, name.clone()));
        self.account.remove(&name);
    }
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::wrap(ErrorKind::Internal, "account database", e)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("the OS has a random source");
    hex::encode(buf)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares without stopping at the first difference (CSRF tokens).
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// Opens `path` (created if missing). Argon2id with the OWASP parameters (19 MiB, 2
    /// passes), unless `fast_hash` (tests only).
    pub fn open(path: &Path, clock: Arc<dyn Clock>, fast_hash: bool) -> Result<Auth, Error> {
        let conn = Connection::open(path).map_err(|e| {
            Error::wrap(
                ErrorKind::Unavailable,
                format!("cannot open the account database {}", path.display()),
                e,
            )
        })?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL,
               phc TEXT NOT NULL, created TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS sessions (token_sha256 TEXT PRIMARY KEY,
               user TEXT NOT NULL, csrf TEXT NOT NULL, created_ms INTEGER NOT NULL,
               last_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS scrape_tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL,
               token_sha256 TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL,
               created_by TEXT NOT NULL, last_used_ms INTEGER);",
        )
        .map_err(db_err)?;
        let params = if fast_hash {
            Params::new(256, 1, 1, None)
        } else {
            Params::new(19 * 1024, 2, 1, None)
        }
        .expect("valid Argon2 parameters");
        Ok(Auth {
            db: Mutex::new(conn),
            clock,
            hasher: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            failures: Mutex::new(LoginFailures::default()),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.clock.wall_millis()
    }

    fn now_rfc3339(&self) -> String {
        jiff::Timestamp::from_millisecond(self.now_ms() as i64)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    fn hash(&self, password: &str) -> String {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).expect("the OS has a random source");
        let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
        self.hasher
            .hash_password(password.as_bytes(), &salt)
            .expect("Argon2id hashes any password")
            .to_string()
    }

    /// Whether the setup wizard is still open (no account exists).
    pub fn setup_open(&self) -> Result<bool, Error> {
        let n: i64 = self
            .db()
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
            .map_err(db_err)?;
        Ok(n == 0)
    }

    /// Makes a scrape token named `name` by `by`; returns it and its secret (shown once).
    pub fn create_scrape_token(
        &self,
        name: &str,
        by: &str,
    ) -> Result<(ScrapeToken, String), Error> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c))
        {
            return Err(Error::invalid_input(
                "name: 1–64 letters, digits, spaces, '-', '_' or '.', e.g. prometheus-dc1",
            ));
        }
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let count: i64 = db
            .query_row("SELECT COUNT(*) FROM scrape_tokens", [], |r| r.get(0))
            .map_err(db_err)?;
        if count >= 20 {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                "20 scrape tokens exist already: revoke one first",
            ));
        }
        let token = ScrapeToken {
            id: random_hex(8),
            name: name.to_string(),
            created_ms: self.clock.wall_millis(),
            created_by: by.to_string(),
            last_used_ms: None,
        };
        let secret = format!("{SCRAPE_TOKEN_PREFIX}{}", random_hex(32));
        db.execute(
            "INSERT INTO scrape_tokens (id, name, token_sha256, created_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token.id, token.name, sha256_hex(&secret), token.created_ms as i64, by],
        )
        .map_err(db_err)?;
        Ok((token, secret))
    }

    pub fn scrape_tokens(&self) -> Result<Vec<ScrapeToken>, Error> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = db
            .prepare("SELECT id, name, created_ms, created_by, last_used_ms FROM scrape_tokens ORDER BY created_ms, id")
            .map_err(db_err)?;
        stmt.query_map([], |r| {
            Ok(ScrapeToken {
                id: r.get(0)?,
                name: r.get(1)?,
                created_ms: r.get::<_, i64>(2)? as u64,
                created_by: r.get(3)?,
                last_used_ms: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(db_err)
    }

    /// Revokes a scrape token at once: the next scrape with it is refused.
    pub fn revoke_scrape_token(&self, id: &str) -> Result<ScrapeToken, Error> {
        let token = self
            .scrape_tokens()?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| Error::not_found(format!("no scrape token '{id}'")))?;
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        db.execute("DELETE FROM scrape_tokens WHERE id = ?1", [id])
            .map_err(db_err)?;
        Ok(token)
    }

    /// Whether `secret` is a scrape token in force (noting when it was used).
    pub fn scrape_token_valid(&self, secret: &str) -> Result<bool, Error> {
        if !secret.starts_with(SCRAPE_TOKEN_PREFIX) || secret.len() > 200 {
            return Ok(false);
        }
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let n = db
            .execute(
                "UPDATE scrape_tokens SET last_used_ms = ?2 WHERE token_sha256 = ?1",
                params![sha256_hex(secret), self.clock.wall_millis() as i64],
            )
            .map_err(db_err)?;
        Ok(n == 1)
    }

    pub fn site(&self) -> Result<Option<SiteSettings>, Error> {
        let v: Option<String> = self
            .db()
            .query_row("SELECT value FROM settings WHERE key = 'site'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)?;
        Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Creates the first admin and records the site settings in one transaction; refused once
    /// any account exists.
    pub fn setup(&self, site: &SiteSettings, admin: &str, password: &str) -> Result<User, Error> {
        let phc = self.hash(password);
        let created = self.now_rfc3339();
        let mut db = self.db();
        let tx = db.transaction().map_err(db_err)?;
        let n: i64 = tx
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
            .map_err(db_err)?;
        if n > 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                "setup is already done; sign in (a lost admin password needs a factory reset)",
            ));
        }
        tx.execute(
            "INSERT INTO users (name, role, phc, created) VALUES (?1, 'admin', ?2, ?3)",
            params![admin, phc, created],
        )
        .map_err(db_err)?;
        tx.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES ('site', ?1)",
            [serde_json::to_string(site).expect("settings serialize")],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(User {
            name: admin.into(),
            role: Role::Admin,
            created,
            disabled: false,
        })
    }

    pub fn users(&self) -> Result<Vec<User>, Error> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT name, role, created, disabled FROM users ORDER BY name")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, role, created, disabled)| {
                Some(User {
                    name,
                    role: Role::parse(&role)?,
                    created,
                    disabled,
                })
            })
            .collect())
    }

    pub fn user(&self, name: &str) -> Result<Option<User>, Error> {
        Ok(self.users()?.into_iter().find(|u| u.name == name))
    }

    pub fn create_user(&self, name: &str, role: Role, password: &str) -> Result<User, Error> {
        if self.user(name)?.is_some() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a user named '{name}' exists already"),
            ));
        }
        let created = self.now_rfc3339();
        self.db()
            .execute(
                "INSERT INTO users (name, role, phc, created) VALUES (?1, ?2, ?3, ?4)",
                params![name, role.name(), self.hash(password), created],
            )
            .map_err(db_err)?;
        Ok(User {
            name: name.into(),
            role,
            created,
            disabled: false,
        })
    }

    /// Changes role, disabled flag and/or password. The last enabled admin cannot be demoted
    /// or disabled (the device would have no one to manage it). Any change ends the user's
    /// sessions, so a demoted or disabled user keeps no rights.
    pub fn update_user(
        &self,
        name: &str,
        role: Option<Role>,
        disabled: Option<bool>,
        password: Option<&str>,
    ) -> Result<(User, User), Error> {
        let before = self
            .user(name)?
            .ok_or_else(|| Error::not_found(format!("no user named '{name}'")))?;
        let mut after = before.clone();
        after.role = role.unwrap_or(before.role);
        after.disabled = disabled.unwrap_or(before.disabled);
        let loses_admin = before.role == Role::Admin
            && !before.disabled
            && (after.role != Role::Admin || after.disabled);
        if loses_admin && self.enabled_admins()? <= 1 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("'{name}' is the last enabled admin: make another admin first"),
            ));
        }
        let db = self.db();
        db.execute(
            "UPDATE users SET role = ?2, disabled = ?3 WHERE name = ?1",
            params![name, after.role.name(), after.disabled],
        )
        .map_err(db_err)?;
        if let Some(p) = password {
            db.execute(
                "UPDATE users SET phc = ?2 WHERE name = ?1",
                params![name, self.hash(p)],
            )
            .map_err(db_err)?;
        }
        if before != after || password.is_some() {
            db.execute("DELETE FROM sessions WHERE user = ?1", [name])
                .map_err(db_err)?;
        }
        Ok((before, after))
    }

    pub fn delete_user(&self, name: &str) -> Result<User, Error> {
        let user = self
            .user(name)?
            .ok_or_else(|| Error::not_found(format!("no user named '{name}'")))?;
        if user.role == Role::Admin && !user.disabled && self.enabled_admins()? <= 1 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("'{name}' is the last enabled admin: make another admin first"),
            ));
        }
        let db = self.db();
        db.execute("DELETE FROM sessions WHERE user = ?1", [name])
            .map_err(db_err)?;
        db.execute("DELETE FROM users WHERE name = ?1", [name])
            .map_err(db_err)?;
        Ok(user)
    }

    fn enabled_admins(&self) -> Result<usize, Error> {
        Ok(self
            .users()?
            .iter()
            .filter(|u| u.role == Role::Admin && !u.disabled)
            .count())
    }

    fn login_failures(&self) -> std::sync::MutexGuard<'_, LoginFailures> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a sign-in to `name` from `client` must wait before it may try again, if it
    /// must.
    pub fn login_wait_ms(&self, client: IpAddr, name: &str) -> Option<u64> {
        self.login_failures()
            .wait(self.now_ms(), client, name)
            .map(|(w, _)| w)
    }

    /// Checks a password; on success opens a session and returns its token. Failures count
    /// against the address, the account, and the two together; the answer does not say
    /// whether the user exists.
    pub fn login(
        &self,
        client: IpAddr,
        name: &str,
        password: &str,
    ) -> Result<(String, Caller), Error> {
        let wait = self.login_failures().wait(self.now_ms(), client, name);
        if let Some((wait, why)) = wait {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!("{why}: wait {} s", wait.div_ceil(1000)),
            ));
        }
        let row: Option<(String, String, bool)> = self
            .db()
            .query_row(
                "SELECT role, phc, disabled FROM users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db_err)?;
        // Unknown users cost a hash too, so timing does not tell who exists.
        let dummy;
        let phc = match &row {
            Some((_, phc, _)) => phc.as_str(),
            None => {
                dummy = self.hash("not a password");
                dummy.as_str()
            }
        };
        let ok = PasswordHash::new(phc)
            .map(|h| self.hasher.verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        let role = match row {
            Some((role, _, false)) if ok => Role::parse(&role),
            _ => None,
        };
        let Some(role) = role else {
            self.login_failures().failed(self.now_ms(), client, name);
            return Err(Error::new(
                ErrorKind::Unauthenticated,
                "wrong user name or password (or the account is disabled)",
            ));
        };
        self.login_failures().succeeded(client, name);
        let token = random_hex(32);
        let csrf = random_hex(32);
        let now = self.now_ms();
        self.db()
            .execute(
                "INSERT INTO sessions (token_sha256, user, csrf, created_ms, last_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![sha256_hex(&token), name, csrf, now as i64],
            )
            .map_err(db_err)?;
        Ok((
            token,
            Caller {
                user: name.into(),
                role,
                csrf,
                expires_ms: now + SESSION_IDLE_MS,
            },
        ))
    }

    /// The caller behind a session token, refreshing its idle timer; `Unauthenticated` with
    /// "expired" when it ran out.
    pub fn session(&self, token: &str) -> Result<Caller, Error> {
        let now = self.now_ms();
        let key = sha256_hex(token);
        let db = self.db();
        let row: Option<(String, String, i64, i64, String, bool)> = db
            .query_row(
                "SELECT s.user, s.csrf, s.created_ms, s.last_ms, u.role, u.disabled
                 FROM sessions s JOIN users u ON u.name = s.user WHERE s.token_sha256 = ?1",
                [&key],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()
            .map_err(db_err)?;
        let Some((user, csrf, created, last, role, disabled)) = row else {
            return Err(Error::new(ErrorKind::Unauthenticated, "sign in first"));
        };
        let (created, last) = (created as u64, last as u64);
        let expired = now.saturating_sub(last) >= SESSION_IDLE_MS
            || now.saturating_sub(created) >= SESSION_MAX_MS;
        let role = Role::parse(&role).filter(|_| !disabled);
        match role {
            Some(role) if !expired => {
                db.execute(
                    "UPDATE sessions SET last_ms = ?2 WHERE token_sha256 = ?1",
                    params![key, now as i64],
                )
                .map_err(db_err)?;
                Ok(Caller {
                    user,
                    role,
                    csrf,
                    expires_ms: (now + SESSION_IDLE_MS).min(created + SESSION_MAX_MS),
                })
            }
            _ => {
                db.execute("DELETE FROM sessions WHERE token_sha256 = ?1", [&key])
                    .map_err(db_err)?;
                Err(Error::new(
                    ErrorKind::Unauthenticated,
                    "your session expired: sign in again",
                ))
            }
        }
    }

    pub fn logout(&self, token: &str) -> Result<(), Error> {
        self.db()
            .execute(
                "DELETE FROM sessions WHERE token_sha256 = ?1",
                [sha256_hex(token)],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Checks `name`'s current password (for changing one's own).
    pub fn check(&self, name: &str, password: &str) -> Result<bool, Error> {
        let phc: Option<String> = self
            .db()
            .query_row("SELECT phc FROM users WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)?;
        Ok(phc.is_some_and(|phc| {
            PasswordHash::new(&phc)
                .map(|h| self.hasher.verify_password(password.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use veil_core::clock::SimulatedClock;

    fn auth() -> (tempfile::TempDir, Arc<SimulatedClock>, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SimulatedClock::new(
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let auth = Auth::open(&dir.path().join("web.sqlite3"), clock.clone(), true).unwrap();
        (dir, clock, auth)
    }

    const PW: &str = "Gatehouse-42";
    fn site() -> SiteSettings {
        SiteSettings {
            device_name: "Gate".into(),
            time_zone: "UTC".into(),
        }
    }

    #[test]
    fn setup_runs_once_and_hashes_with_argon2id() {
        let (dir, _, auth) = auth();
        assert!(auth.setup_open().unwrap());
        auth.setup(&site(), "admin", PW).unwrap();
        assert!(!auth.setup_open().unwrap());
        let e = auth.setup(&site(), "other", PW).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let phc: String = Connection::open(dir.path().join("web.sqlite3"))
            .unwrap()
            .query_row("SELECT phc FROM users", [], |r| r.get(0))
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains(PW));
    }

    #[test]
    fn sessions_expire_when_idle_and_after_the_maximum() {
        let (_d, clock, auth) = auth();
        auth.setup(&site(), "admin", PW).unwrap();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let (token, caller) = auth.login(ip, "admin", PW).unwrap();
        assert_eq!(caller.role, Role::Admin);
        assert_eq!(auth.session(&token).unwrap().csrf, caller.csrf);
        clock.advance(Duration::from_millis(SESSION_IDLE_MS - 1000));
        auth.session(&token).unwrap();
        clock.advance(Duration::from_millis(SESSION_IDLE_MS));
        let e = auth.session(&token).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(
            auth.session(&token)
                .unwrap_err()
                .to_string()
                .contains("sign in first")
        );

        let (token, _) = auth.login(ip, "admin", PW).unwrap();
        for _ in 0..(SESSION_MAX_MS / SESSION_IDLE_MS * 2) {
            clock.advance(Duration::from_millis(SESSION_IDLE_MS / 2));
            if auth.session(&token).is_err() {
                break;
            }
        }
        assert!(
            auth.session(&token).is_err(),
            "a session outlived its maximum age"
        );
        assert!(auth.session("made-up").is_err());
    }

    #[test]
    fn failed_logins_are_rate_limited_per_client() {
        let (_d, clock, auth) = auth();
        auth.setup(&site(), "admin", PW).unwrap();
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.0.3".parse().unwrap();
        for _ in 0..LOGIN_FAILURES {
            assert_eq!(
                auth.login(a, "admin", "nope").unwrap_err().kind(),
                ErrorKind::Unauthenticated
            );
        }
        let e = auth.login(a, "admin", PW).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert!(e.to_string().contains("wait 300 s"), "{e}");
        auth.login(b, "admin", PW).unwrap();
        clock.advance(Duration::from_millis(LOGIN_WINDOW_MS));
        auth.login(a, "admin", PW).unwrap();
    }

    #[test]
    fn signing_in_to_one_account_never_clears_the_failures_against_another() {
        let (_d, _, auth) = auth();
        auth.setup(&site(), "admin", PW).unwrap();
        auth.create_user("vera", Role::Viewer, PW).unwrap();
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        // The attack: four guesses at the admin, one good viewer sign-in, and again.
        let mut guesses = 0;
        let blocked = loop {
            let e = auth.login(a, "admin", "guess").unwrap_err();
            if e.kind() == ErrorKind::ResourceExhausted {
                break e;
            }
            guesses += 1;
            if guesses % 4 == 0 {
                auth.login(a, "vera", PW).unwrap();
            }
            assert!(
                guesses <= LOGIN_FAILURES,
                "{guesses} guesses and still not limited"
            );
        };
        assert_eq!(guesses, LOGIN_FAILURES);
        assert!(
            blocked
                .to_string()
                .contains("to this account from 10.0.0.2"),
            "{blocked}"
        );
        // The viewer is not locked out by the admin's failures.
        auth.login(a, "vera", PW).unwrap();
    }

    #[test]
    fn guessing_from_many_addresses_or_at_many_accounts_is_limited_too() {
        let (_d, clock, auth) = auth();
        auth.setup(&site(), "admin", PW).unwrap();
        let from = |i: usize| -> IpAddr { format!("10.0.1.{i}").parse().unwrap() };
        for i in 0..LOGIN_FAILURES_PER_ACCOUNT {
            let e = auth.login(from(i), "admin", "guess").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unauthenticated, "attempt {i}: {e}");
        }
        let e = auth.login(from(200), "admin", PW).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert!(e.to_string().contains("to this account: wait"), "{e}");
        clock.advance(Duration::from_millis(LOGIN_WINDOW_MS));
        auth.login(from(200), "admin", PW).unwrap();

        // One address spraying guesses over many names.
        let b: IpAddr = "10.0.2.1".parse().unwrap();
        for i in 0..LOGIN_FAILURES_PER_CLIENT {
            let e = auth.login(b, &format!("user{i}"), "guess").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unauthenticated, "attempt {i}: {e}");
        }
        let e = auth.login(b, "admin", PW).unwrap_err();
        assert!(e.to_string().contains("from 10.0.2.1: wait"), "{e}");
        assert_eq!(auth.login_wait_ms(b, "admin"), Some(LOGIN_WINDOW_MS));
    }

    #[test]
    fn the_last_admin_stays_and_changes_end_sessions() {
        let (_d, _, auth) = auth();
        auth.setup(&site(), "admin", PW).unwrap();
        let e = auth
            .update_user("admin", Some(Role::Viewer), None, None)
            .unwrap_err();
        assert!(e.to_string().contains("last enabled admin"), "{e}");
        assert!(auth.delete_user("admin").is_err());
        auth.create_user("olga", Role::Operator, PW).unwrap();
        assert_eq!(
            auth.create_user("olga", Role::Viewer, PW)
                .unwrap_err()
                .kind(),
            ErrorKind::Conflict
        );
        let ip: IpAddr = "::1".parse().unwrap();
        let (token, _) = auth.login(ip, "olga", PW).unwrap();
        auth.update_user("olga", None, Some(true), None).unwrap();
        assert!(auth.session(&token).is_err());
        assert!(auth.login(ip, "olga", PW).is_err());
        auth.delete_user("olga").unwrap();
        assert!(auth.user("olga").unwrap().is_none());
    }

    #[test]
    fn weak_passwords_and_bad_names_are_refused_with_the_rule() {
        for (pw, want) in [
            ("short1A!", "too weak"),
            ("lowercaseonly", "too weak"),
            ("Password123!", "common"),
            ("xadminx-Secure9", "user name"),
            ("aaaaaaaaaaaaaaaaaaaa", "too weak"),
        ] {
            let e = check_password(pw, "admin").unwrap_err();
            assert!(e.contains(want), "{pw}: {e}");
        }
        for pw in [PW, "correct horse battery staple", "Zw8#qLm2vR"] {
            check_password(pw, "admin").unwrap();
        }
        for bad in ["A", "1abc", "a b", "ädmin", "x"] {
            assert!(check_user_name(bad).is_err(), "{bad}");
        }
        check_user_name("op.smith-2").unwrap();
    }

    /// docs/privacy.md's table is the matrix: one row per area, one cell per role.
    #[test]
    fn the_documented_permission_table_is_the_matrix() {
        let doc = include_str!("../../../docs/privacy.md");
        for area in Area::ALL {
            let key = format!("| `{}`", area.name());
            let row = doc
                .lines()
                .find(|l| l.starts_with(&key))
                .unwrap_or_else(|| panic!("docs/privacy.md has no row for `{}`", area.name()));
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let documented = &cells[cells.len() - 3..];
            let actual: Vec<String> = Role::ALL
                .iter()
                .map(|r| {
                    serde_json::to_value(r.access(area))
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(
                documented,
                actual,
                "docs/privacy.md row for `{}`",
                area.name()
            );
        }
    }

    #[test]
    fn roles_are_ordered_and_admin_manages_all() {
        for area in Area::ALL {
            assert_eq!(Role::Admin.access(area), Access::Manage);
            assert!(Role::Viewer.access(area) <= Access::View);
            assert!(Role::Operator.access(area) >= Role::Viewer.access(area));
        }
        assert_eq!(Role::Operator.access(Area::Users), Access::None);
    }
}
