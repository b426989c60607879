//! Incident projects kept in SQLite (`state/incidents.sqlite3`: WAL, synchronous FULL, so a
//! committed change survives power loss), and the holds their sequences place on footage.
//!
//! The database is the truth for sequences; a sequence's hold (`incident-<project>-<seq>`) is
//! placed after its row commits and released after its row is deleted. A crash between the
//! two is mended by [`Incidents::sync_holds`], which the daemon runs at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, ToSql, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use veil_core::{Error, ErrorKind};

use crate::model::{
    Activity, ProjectFields, ProjectForm, Properties, SequenceForm, Usage, apply_form,
    check_sequence, check_text, edit_properties, expires_at_ms, parse_time, rfc3339,
};

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    properties TEXT NOT NULL,
    next_id INTEGER NOT NULL
);
CREATE TABLE projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    name TEXT NOT NULL,
    type_id TEXT,
    status_id TEXT NOT NULL,
    start_ms INTEGER,
    end_ms INTEGER,
    fields TEXT NOT NULL
);
CREATE INDEX projects_created ON projects (created_at_ms);
CREATE INDEX projects_status ON projects (status_id, created_at_ms);
CREATE INDEX projects_type ON projects (type_id, created_at_ms);
CREATE INDEX projects_creator ON projects (created_by, created_at_ms);
CREATE TABLE project_categories (
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    category_id TEXT NOT NULL,
    value_id TEXT NOT NULL,
    PRIMARY KEY (project_id, category_id)
);
CREATE INDEX project_categories_value ON project_categories (value_id);
CREATE TABLE comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    author TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    text TEXT NOT NULL,
    edited_at_ms INTEGER,
    history TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX comments_project ON comments (project_id);
CREATE TABLE calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    caller TEXT NOT NULL,
    callee TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    phone TEXT NOT NULL,
    notes TEXT NOT NULL,
    added_by TEXT NOT NULL
);
CREATE INDEX calls_project ON calls (project_id);
CREATE TABLE sequences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    camera TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER NOT NULL,
    added_by TEXT NOT NULL,
    added_at_ms INTEGER NOT NULL
);
CREATE INDEX sequences_project ON sequences (project_id);
CREATE TABLE activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    at_ms INTEGER NOT NULL,
    by TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX activity_project ON activity (project_id);
-- The activity log is append-only: rows go only with their project.
CREATE TRIGGER activity_is_immutable BEFORE UPDATE ON activity
BEGIN SELECT RAISE(ABORT, 'the activity log is append-only'); END;
"#];

/// Where footage holds go: the footage store on the device, anything in tests.
pub trait Footage: Send + Sync {
    /// Places (or replaces) a hold: footage it covers is never evicted.
    fn hold(&self, id: &str, camera: &str, from_ms: i64, to_ms: i64) -> Result<(), Error>;
    fn release(&self, id: &str) -> Result<(), Error>;
    /// The ids of holds starting with `prefix`.
    fn holds(&self, prefix: &str) -> Result<Vec<String>, Error>;
}

impl Footage for veil_store::Store {
    fn hold(&self, id: &str, camera: &str, from_ms: i64, to_ms: i64) -> Result<(), Error> {
        veil_store::Store::hold(
            self,
            &veil_store::retention::Hold {
                id: id.into(),
                camera: camera.into(),
                from_ms,
                to_ms,
                reason: "incident project".into(),
            },
        )
    }

    fn release(&self, id: &str) -> Result<(), Error> {
        veil_store::Store::release(self, id).map(|_| ())
    }

    fn holds(&self, prefix: &str) -> Result<Vec<String>, Error> {
        Ok(veil_store::Store::holds(self)?
            .into_iter()
            .map(|h| h.id)
            .filter(|id| id.starts_with(prefix))
            .collect())
    }
}

/// A device without a footage store (it failed to open): projects work, sequences cannot
/// be added, since nothing could keep their footage.
pub struct NoFootage;

impl Footage for NoFootage {
    fn hold(&self, _: &str, _: &str, _: i64, _: i64) -> Result<(), Error> {
        Err(Error::new(
            ErrorKind::Unavailable,
            "the footage store is not running (see the device log): sequences cannot be held",
        ))
    }

    fn release(&self, _: &str) -> Result<(), Error> {
        Ok(())
    }

    fn holds(&self, _: &str) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
}

const HOLD_PREFIX: &str = "incident-";

fn hold_id(project: i64, sequence: i64) -> String {
    format!("{HOLD_PREFIX}{project}-{sequence}")
}

/// Something to tell the fleet: `incident.created`, `incident.status_changed`,
/// `incident.deleted`, `incident.exported` (an MQTT event payload).
pub type Listener = Box<dyn Fn(Value) + Send + Sync>;

/// A project as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectSummary {
    pub id: i64,
    pub version: u64,
    pub name: String,
    pub type_id: Option<String>,
    /// The type's name as it is now.
    pub type_name: Option<String>,
    pub status_id: String,
    pub status_name: String,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub start: Option<String>,
    pub end: Option<String>,
    /// When retention deletes it, under the retention in effect now.
    pub expires_at: String,
    pub comment_count: u64,
    pub sequence_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommentVersion {
    pub text: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Comment {
    pub id: i64,
    pub author: String,
    pub at: String,
    pub text: String,
    pub edited_at: Option<String>,
    /// Earlier texts, oldest first.
    pub history: Vec<CommentVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Call {
    pub id: i64,
    /// Who called.
    pub caller: String,
    /// Whom.
    pub callee: String,
    pub at: String,
    pub phone: String,
    pub notes: String,
    pub added_by: String,
}

/// An uninterrupted recording period of one camera, held while it is in a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sequence {
    pub id: i64,
    pub camera: String,
    pub from: String,
    pub to: String,
    #[serde(skip)]
    pub from_ms: i64,
    #[serde(skip)]
    pub to_ms: i64,
    pub added_by: String,
    pub added_at: String,
}

/// A project with everything in it. A part that cannot be read is left empty and named in
/// `unreadable`, so the page and the report show the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    #[serde(flatten)]
    pub summary: ProjectSummary,
    /// Category id → value id.
    pub categories: BTreeMap<String, String>,
    /// Data field id → value.
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, Value>,
    pub comments: Vec<Comment>,
    pub calls: Vec<Call>,
    pub sequences: Vec<Sequence>,
    /// Newest last.
    pub activity: Vec<Activity>,
    /// Parts that could not be read, each with the reason.
    pub unreadable: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallForm {
    pub caller: String,
    pub callee: String,
    /// RFC 3339.
    pub at: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub notes: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    #[default]
    CreatedAt,
    UpdatedAt,
    Start,
    Id,
}

/// Filters, order and page of the project list.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Status id.
    pub status: Option<String>,
    /// Type id.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub type_id: Option<String>,
    /// A category value id.
    pub category_value: Option<String>,
    /// RFC 3339: projects whose incident (or, without times, creation) reaches past this.
    pub from: Option<String>,
    /// RFC 3339: projects whose incident (or creation) starts before this.
    pub to: Option<String>,
    /// User name of the creator.
    pub created_by: Option<String>,
    /// Words to find in the project's name or comments (case-insensitive).
    pub q: Option<String>,
    pub sort: Option<SortKey>,
    /// `desc` (default) or `asc`.
    pub order: Option<String>,
    /// 1–500, default 50.
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectPage {
    /// Projects matching the filters, all pages.
    pub total: u64,
    pub offset: u32,
    pub limit: u32,
    pub projects: Vec<ProjectSummary>,
}

/// The incident projects of a device.
pub struct Incidents {
    db: Mutex<Connection>,
    footage: Arc<dyn Footage>,
    listener: Mutex<Option<Listener>>,
}

fn db_err(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| {
        let kind = if matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull)) {
            ErrorKind::ResourceExhausted
        } else {
            ErrorKind::Internal
        };
        Error::wrap(kind, format!("incident projects: {what}"), e)
    }
}

fn not_found(id: i64) -> Error {
    Error::not_found(format!(
        "no incident project {id} (deleted, expired, or never made)"
    ))
}

impl Incidents {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path, footage: Arc<dyn Footage>) -> Result<Incidents, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::wrap(
                    ErrorKind::Internal,
                    format!("cannot create {}", dir.display()),
                    e,
                )
            })?;
        }
        let conn = Connection::open(path).map_err(db_err("open"))?;
        let not_sqlite = |e: rusqlite::Error| {
            Error::wrap(
                ErrorKind::InvalidInput,
                format!(
                    "{} is not a usable incident database (move it away to start empty)",
                    path.display()
                ),
                e,
            )
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err("set busy timeout"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(not_sqlite)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(not_sqlite)?;
        if version as usize > MIGRATIONS.len() {
            return Err(Error::invalid_input(format!(
                "{} has schema {version}, newer than this firmware's {}: downgrade refused",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(&format!(
                "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(db_err("migration"))?;
        }
        let (initial, next_id) = Properties::initial();
        conn.execute(
            "INSERT OR IGNORE INTO settings (id, properties, next_id) VALUES (1, ?1, ?2)",
            params![to_json(&initial), next_id as i64],
        )
        .map_err(db_err("write the initial properties"))?;
        Ok(Incidents {
            db: Mutex::new(conn),
            footage,
            listener: Mutex::new(None),
        })
    }

    /// Where `incident.*` events go (the MQTT uplink once it runs).
    pub fn set_listener(&self, listener: Listener) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    fn tell(&self, event: Value) {
        if let Some(l) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            l(event);
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn properties(&self) -> Result<Properties, Error> {
        read_properties(&self.conn()).map(|(p, _)| p)
    }

    /// How many projects use each property id.
    pub fn usage(&self) -> Result<Usage, Error> {
        usage(&self.conn())
    }

    /// Saves an admin's edit of the properties; returns (before, after).
    pub fn save_properties(&self, form: Properties) -> Result<(Properties, Properties), Error> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err("begin"))?;
        let (before, mut next_id) = read_properties(&tx)?;
        let usage = usage(&tx)?;
        let after = edit_properties(&before, form, &usage, &mut next_id)?;
        tx.execute(
            "UPDATE settings SET properties = ?1, next_id = ?2 WHERE id = 1",
            params![to_json(&after), next_id as i64],
        )
        .map_err(db_err("save the properties"))?;
        tx.commit().map_err(db_err("commit"))?;
        Ok((before, after))
    }

    /// Makes a project (with its first sequences, each held) as `by`.
    pub fn create(&self, mut form: ProjectForm, by: &str, now_ms: i64) -> Result<Project, Error> {
        let sequences = check_sequences(&std::mem::take(&mut form.sequences))?;
        let id = {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(db_err("begin"))?;
            let (props, _) = read_properties(&tx)?;
            let start = ProjectFields {
                status_id: props.statuses[0].id.clone(),
                ..Default::default()
            };
            let (fields, _) = apply_form(&props, &start, form)?;
            tx.execute(
                "INSERT INTO projects (version, created_by, created_at_ms, updated_at_ms, name, \
                 type_id, status_id, start_ms, end_ms, fields) VALUES (1, ?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    by,
                    now_ms,
                    fields.name,
                    fields.type_id,
                    fields.status_id,
                    fields.start_ms,
                    fields.end_ms,
                    to_json(&fields.fields)
                ],
            )
            .map_err(db_err("create a project"))?;
            let id = tx.last_insert_rowid();
            write_categories(&tx, id, &fields.categories)?;
            log(&tx, id, now_ms, by, "created", "project created")?;
            for (camera, from_ms, to_ms) in &sequences {
                insert_sequence(&tx, id, camera, *from_ms, *to_ms, by, now_ms)?;
            }
            tx.commit().map_err(db_err("commit"))?;
            id
        };
        self.place_holds(id)?;
        let project = self.get(id)?;
        self.tell(json!({"type": "incident.created", "time": rfc3339(now_ms), "incident": project.summary}));
        Ok(project)
    }

    /// Applies an operator's change; returns the project after.
    pub fn update(
        &self,
        id: i64,
        form: ProjectForm,
        by: &str,
        now_ms: i64,
    ) -> Result<Project, Error> {
        let status_change = {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(db_err("begin"))?;
            let (props, _) = read_properties(&tx)?;
            let (version, before) = read_fields(&tx, id)?;
            if !form.sequences.is_empty() {
                return Err(Error::invalid_input(
                    "sequences: add sequences to an existing project with its sequences list",
                ));
            }
            if let Some(v) = form.version
                && v != version
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "project {id} was changed by someone else since you loaded it (version \
                         {v} is now {version}): reload it and make your change again"
                    ),
                ));
            }
            let (after, changes) = apply_form(&props, &before, form)?;
            if changes.is_empty() {
                None
            } else {
                tx.execute(
                    "UPDATE projects SET version = version + 1, updated_at_ms = ?2, name = ?3, \
                     type_id = ?4, status_id = ?5, start_ms = ?6, end_ms = ?7, fields = ?8 WHERE id = ?1",
                    params![
                        id,
                        now_ms,
                        after.name,
                        after.type_id,
                        after.status_id,
                        after.start_ms,
                        after.end_ms,
                        to_json(&after.fields)
                    ],
                )
                .map_err(db_err("update a project"))?;
                write_categories(&tx, id, &after.categories)?;
                for change in &changes {
                    log(&tx, id, now_ms, by, "changed", change)?;
                }
                tx.commit().map_err(db_err("commit"))?;
                (after.status_id != before.status_id).then(|| {
                    props
                        .status(&before.status_id)
                        .map_or(before.status_id.clone(), |s| s.name.clone())
                })
            }
        };
        let project = self.get(id)?;
        if let Some(previous) = status_change {
            self.tell(json!({
                "type": "incident.status_changed", "time": rfc3339(now_ms),
                "incident": project.summary, "previous_status": previous, "by": by
            }));
        }
        Ok(project)
    }

    /// Deletes a project and everything in it, releasing its holds.
    pub fn delete(&self, id: i64, by: &str, now_ms: i64) -> Result<ProjectSummary, Error> {
        let summary = self.get(id)?.summary;
        self.delete_rows(&[id])?;
        self.tell(json!({
            "type": "incident.deleted", "time": rfc3339(now_ms), "incident": summary, "by": by
        }));
        Ok(summary)
    }

    fn delete_rows(&self, ids: &[i64]) -> Result<(), Error> {
        let mut holds = Vec::new();
        {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(db_err("begin"))?;
            for id in ids {
                let mut stmt = tx
                    .prepare("SELECT id FROM sequences WHERE project_id = ?1")
                    .map_err(db_err("list sequences"))?;
                let seqs = stmt
                    .query_map([id], |r| r.get::<_, i64>(0))
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(db_err("list sequences"))?;
                holds.extend(seqs.into_iter().map(|s| hold_id(*id, s)));
                drop(stmt);
                tx.execute("DELETE FROM projects WHERE id = ?1", [id])
                    .map_err(db_err("delete a project"))?;
            }
            tx.commit().map_err(db_err("commit"))?;
        }
        for h in holds {
            if let Err(e) = self.footage.release(&h) {
                tracing::warn!(hold = %h, error = %e, "cannot release an incident hold; the next start retries");
            }
        }
        Ok(())
    }

    /// Deletes every project older than the retention in effect; returns their ids.
    pub fn expire(&self, now_ms: i64) -> Result<Vec<i64>, Error> {
        let (props, expired) = {
            let conn = self.conn();
            let (props, _) = read_properties(&conn)?;
            let cutoff = now_ms.saturating_sub(i64::from(props.retention_days) * 86_400_000);
            let mut stmt = conn
                .prepare("SELECT id FROM projects WHERE created_at_ms <= ?1 ORDER BY id")
                .map_err(db_err("find expired projects"))?;
            let ids = stmt
                .query_map([cutoff], |r| r.get::<_, i64>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db_err("find expired projects"))?;
            (props, ids)
        };
        if expired.is_empty() {
            return Ok(expired);
        }
        let summaries: Vec<ProjectSummary> = expired
            .iter()
            .filter_map(|id| self.get(*id).ok().map(|p| p.summary))
            .collect();
        self.delete_rows(&expired)?;
        for s in summaries {
            self.tell(json!({
                "type": "incident.deleted", "time": rfc3339(now_ms), "incident": s, "by": "device",
                "reason": format!("retention of {} days reached", props.retention_days)
            }));
        }
        Ok(expired)
    }

    /// Places every sequence's hold and releases incident holds no sequence explains (after
    /// a crash between the database and the footage store).
    pub fn sync_holds(&self) -> Result<(usize, usize), Error> {
        let wanted = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("SELECT project_id, id, camera, from_ms, to_ms FROM sequences")
                .map_err(db_err("list sequences"))?;
            stmt.query_map([], |r| {
                Ok((
                    hold_id(r.get(0)?, r.get(1)?),
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db_err("list sequences"))?
        };
        let held = self.footage.holds(HOLD_PREFIX)?;
        let mut placed = 0;
        for (id, camera, from, to) in &wanted {
            if !held.contains(id) {
                self.footage.hold(id, camera, *from, *to)?;
                placed += 1;
            }
        }
        let mut released = 0;
        for h in held {
            if !wanted.iter().any(|(id, ..)| *id == h) {
                self.footage.release(&h)?;
                released += 1;
            }
        }
        Ok((placed, released))
    }

    fn place_holds(&self, project: i64) -> Result<(), Error> {
        for s in self.sequences(project)? {
            self.footage
                .hold(&hold_id(project, s.id), &s.camera, s.from_ms, s.to_ms)?;
        }
        Ok(())
    }

    fn sequences(&self, project: i64) -> Result<Vec<Sequence>, Error> {
        read_sequences(&self.conn(), project)
    }

    /// One project with everything in it.
    pub fn get(&self, id: i64) -> Result<Project, Error> {
        let conn = self.conn();
        let (props, _) = read_properties(&conn)?;
        let summary = summaries(&conn, &props, "WHERE p.id = ?1", &[&id as &dyn ToSql], "")?
            .pop()
            .ok_or_else(|| not_found(id))?;
        let (_, fields) = read_fields(&conn, id)?;
        let mut unreadable = Vec::new();
        let comments = readable(&mut unreadable, "comments", read_comments(&conn, id));
        let calls = readable(&mut unreadable, "calls", read_calls(&conn, id));
        let sequences = readable(&mut unreadable, "sequence list", read_sequences(&conn, id));
        let activity = readable(&mut unreadable, "activity log", read_activity(&conn, id));
        Ok(Project {
            summary,
            categories: fields.categories,
            fields: fields.fields,
            comments,
            calls,
            sequences,
            activity,
            unreadable,
        })
    }

    /// A page of projects matching the query.
    pub fn list(&self, q: &ListQuery) -> Result<ProjectPage, Error> {
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<Box<dyn ToSql>> = Vec::new();
        let mut arg = |v: Box<dyn ToSql>| {
            args.push(v);
            format!("?{}", args.len())
        };
        if let Some(s) = &q.status {
            clauses.push(format!("p.status_id = {}", arg(Box::new(s.clone()))));
        }
        if let Some(t) = &q.type_id {
            clauses.push(format!("p.type_id = {}", arg(Box::new(t.clone()))));
        }
        if let Some(v) = &q.category_value {
            // IN, not a correlated EXISTS: one look-up in the value index, not one per project.
            clauses.push(format!(
                "p.id IN (SELECT c.project_id FROM project_categories c WHERE c.value_id = {})",
                arg(Box::new(v.clone()))
            ));
        }
        if let Some(f) = &q.from {
            let ms = parse_time("from", f)?;
            clauses.push(format!(
                "COALESCE(p.end_ms, p.start_ms, p.created_at_ms) >= {}",
                arg(Box::new(ms))
            ));
        }
        if let Some(t) = &q.to {
            let ms = parse_time("to", t)?;
            clauses.push(format!(
                "COALESCE(p.start_ms, p.created_at_ms) < {}",
                arg(Box::new(ms))
            ));
        }
        if let Some(c) = &q.created_by {
            clauses.push(format!("p.created_by = {}", arg(Box::new(c.clone()))));
        }
        if let Some(words) = &q.q {
            let words = words.trim();
            if words.chars().count() > 200 {
                return Err(Error::invalid_input("q: at most 200 characters"));
            }
            if !words.is_empty() {
                let pattern = format!(
                    "%{}%",
                    words
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                );
                let n = arg(Box::new(pattern));
                clauses.push(format!(
                    "(p.name LIKE {n} ESCAPE '\\' OR EXISTS (SELECT 1 FROM comments m \
                     WHERE m.project_id = p.id AND m.text LIKE {n} ESCAPE '\\'))"
                ));
            }
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let order = match q.order.as_deref() {
            None | Some("desc") => "DESC",
            Some("asc") => "ASC",
            Some(other) => {
                return Err(Error::invalid_input(format!(
                    "order: '{other}' is neither 'asc' nor 'desc'"
                )));
            }
        };
        let column = match q.sort.unwrap_or_default() {
            SortKey::CreatedAt => "p.created_at_ms",
            SortKey::UpdatedAt => "p.updated_at_ms",
            SortKey::Start => "COALESCE(p.start_ms, p.created_at_ms)",
            SortKey::Id => "p.id",
        };
        let limit = q.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(Error::invalid_input(format!(
                "limit: {limit} is outside 1–500"
            )));
        }
        let offset = q.offset.unwrap_or(0);
        let conn = self.conn();
        let (props, _) = read_properties(&conn)?;
        let refs: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
        let total: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM projects p {filter}"),
                refs.as_slice(),
                |r| r.get(0),
            )
            .map_err(db_err("count projects"))?;
        let projects = summaries(
            &conn,
            &props,
            &filter,
            &refs,
            &format!("ORDER BY {column} {order}, p.id {order} LIMIT {limit} OFFSET {offset}"),
        )?;
        Ok(ProjectPage {
            total: total as u64,
            offset,
            limit,
            projects,
        })
    }

    /// Changes a project in one transaction: the project must exist, `change` does the work
    /// (and writes its activity lines), the project's last-change time moves on.
    fn change<T>(
        &self,
        id: i64,
        now_ms: i64,
        change: impl FnOnce(&rusqlite::Transaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_err("begin"))?;
        read_fields(&tx, id)?;
        let done = change(&tx)?;
        touch(&tx, id, now_ms)?;
        tx.commit().map_err(db_err("commit"))?;
        Ok(done)
    }

    pub fn add_comment(
        &self,
        id: i64,
        text: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Comment, Error> {
        let text = check_text("text", text, true)?;
        let comment = self.change(id, now_ms, |tx| {
            tx.execute(
                "INSERT INTO comments (project_id, author, at_ms, text) VALUES (?1, ?2, ?3, ?4)",
                params![id, by, now_ms, text],
            )
            .map_err(db_err("add a comment"))?;
            let comment = tx.last_insert_rowid();
            log(
                tx,
                id,
                now_ms,
                by,
                "comment_added",
                &format!("comment {comment}"),
            )?;
            Ok(comment)
        })?;
        self.comment(id, comment)
    }

    /// Replaces a comment's text, keeping the old one in its history; only its author may.
    pub fn edit_comment(
        &self,
        id: i64,
        comment: i64,
        text: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Comment, Error> {
        let text = check_text("text", text, true)?;
        let current = self.comment(id, comment)?;
        if current.author != by {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "only its author ({}) can edit comment {comment}; add a comment of your own instead",
                    current.author
                ),
            ));
        }
        if current.text == text {
            return Ok(current);
        }
        let mut history = current.history;
        history.push(crate::store::CommentVersion {
            text: current.text,
            at: current.edited_at.unwrap_or(current.at),
        });
        self.change(id, now_ms, |tx| {
            tx.execute(
                "UPDATE comments SET text = ?3, edited_at_ms = ?4, history = ?5 WHERE project_id = ?1 AND id = ?2",
                params![id, comment, text, now_ms, to_json(&history)],
            )
            .map_err(db_err("edit a comment"))?;
            log(tx, id, now_ms, by, "comment_edited", &format!("comment {comment}"))
        })?;
        self.comment(id, comment)
    }

    fn comment(&self, id: i64, comment: i64) -> Result<Comment, Error> {
        read_comments(&self.conn(), id)?
            .into_iter()
            .find(|c| c.id == comment)
            .ok_or_else(|| Error::not_found(format!("project {id} has no comment {comment}")))
    }

    pub fn add_call(&self, id: i64, form: CallForm, by: &str, now_ms: i64) -> Result<Call, Error> {
        let caller = check_text("caller", &form.caller, true)?;
        let callee = check_text("callee", &form.callee, true)?;
        let at_ms = parse_time("at", &form.at)?;
        let phone = form.phone.trim().to_string();
        if phone.len() > 40
            || !phone
                .chars()
                .all(|c| c.is_ascii_digit() || " +-()/.".contains(c))
        {
            return Err(Error::invalid_input(
                "phone: up to 40 digits, spaces and + - ( ) / . such as +49 30 1234567",
            ));
        }
        let notes = check_text("notes", &form.notes, false)?;
        let call = self.change(id, now_ms, |tx| {
            tx.execute(
                "INSERT INTO calls (project_id, caller, callee, at_ms, phone, notes, added_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, caller, callee, at_ms, phone, notes, by],
            )
            .map_err(db_err("add a call"))?;
            let call = tx.last_insert_rowid();
            let detail = format!("call {call}: {caller} → {callee}");
            log(tx, id, now_ms, by, "call_added", &detail)?;
            Ok(call)
        })?;
        read_calls(&self.conn(), id)?
            .into_iter()
            .find(|c| c.id == call)
            .ok_or_else(|| Error::internal("a call just added is missing"))
    }

    /// Adds sequences to a project and holds their footage.
    pub fn add_sequences(
        &self,
        id: i64,
        forms: &[SequenceForm],
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<Sequence>, Error> {
        if forms.is_empty() {
            return Err(Error::invalid_input("sequences: add at least one"));
        }
        let checked = check_sequences(forms)?;
        let added = self.change(id, now_ms, |tx| {
            checked
                .iter()
                .map(|(camera, from, to)| insert_sequence(tx, id, camera, *from, *to, by, now_ms))
                .collect::<Result<Vec<_>, _>>()
        })?;
        self.place_holds(id)?;
        let all = self.sequences(id)?;
        Ok(all.into_iter().filter(|s| added.contains(&s.id)).collect())
    }

    /// Removes a sequence and releases its footage.
    pub fn remove_sequence(
        &self,
        id: i64,
        seq: i64,
        by: &str,
        now_ms: i64,
    ) -> Result<Sequence, Error> {
        let sequence = self
            .sequences(id)?
            .into_iter()
            .find(|s| s.id == seq)
            .ok_or_else(|| Error::not_found(format!("project {id} has no sequence {seq}")))?;
        self.change(id, now_ms, |tx| {
            tx.execute(
                "DELETE FROM sequences WHERE project_id = ?1 AND id = ?2",
                [id, seq],
            )
            .map_err(db_err("remove a sequence"))?;
            let detail = format!("{} {} – {}", sequence.camera, sequence.from, sequence.to);
            log(tx, id, now_ms, by, "sequence_removed", &detail)
        })?;
        self.footage.release(&hold_id(id, seq))?;
        Ok(sequence)
    }

    /// Writes a line to a project's activity log (reports, exports).
    pub fn note(
        &self,
        id: i64,
        action: &str,
        detail: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        let conn = self.conn();
        read_fields(&conn, id)?;
        log(&conn, id, now_ms, by, action, detail)
    }

    /// Tells the fleet an export of a project was made.
    pub fn exported(&self, id: i64, job_id: &str, by: &str, now_ms: i64) -> Result<(), Error> {
        self.note(id, "exported", &format!("export job {job_id}"), by, now_ms)?;
        let summary = self.get(id)?.summary;
        self.tell(json!({
            "type": "incident.exported", "time": rfc3339(now_ms), "incident": summary,
            "job_id": job_id, "by": by
        }));
        Ok(())
    }
}

/// A part of a project, or nothing and its name and reason in `unreadable`.
fn readable<T>(unreadable: &mut Vec<String>, part: &str, r: Result<Vec<T>, Error>) -> Vec<T> {
    r.unwrap_or_else(|e| {
        unreadable.push(format!("{part}: {e}"));
        Vec::new()
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("incident values serialize")
}

fn read_properties(conn: &Connection) -> Result<(Properties, u64), Error> {
    let (text, next): (String, i64) = conn
        .query_row(
            "SELECT properties, next_id FROM settings WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db_err("read the properties"))?;
    let props = serde_json::from_str(&text).map_err(|e| {
        Error::wrap(
            ErrorKind::Internal,
            "incident properties: stored value unreadable",
            e,
        )
    })?;
    Ok((props, next as u64))
}

fn usage(conn: &Connection) -> Result<Usage, Error> {
    let mut usage = Usage::new();
    for sql in [
        "SELECT status_id, COUNT(*) FROM projects GROUP BY status_id",
        "SELECT type_id, COUNT(*) FROM projects WHERE type_id IS NOT NULL GROUP BY type_id",
        "SELECT category_id, COUNT(*) FROM project_categories GROUP BY category_id",
        "SELECT value_id, COUNT(*) FROM project_categories GROUP BY value_id",
        "SELECT j.key, COUNT(*) FROM projects p, json_each(p.fields) j GROUP BY j.key",
    ] {
        let mut stmt = conn.prepare(sql).map_err(db_err("count usage"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db_err("count usage"))?;
        for (id, n) in rows {
            *usage.entry(id).or_default() += n as u64;
        }
    }
    Ok(usage)
}

fn read_fields(conn: &Connection, id: i64) -> Result<(u64, ProjectFields), Error> {
    let row = conn
        .query_row(
            "SELECT version, name, type_id, status_id, start_ms, end_ms, fields FROM projects WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, String>(6)?,
                ))
            },
        )
        .optional()
        .map_err(db_err("read a project"))?
        .ok_or_else(|| not_found(id))?;
    let fields = serde_json::from_str(&row.6).unwrap_or_else(|e| {
        tracing::warn!(project = id, error = %e, "unreadable data field values");
        BTreeMap::new()
    });
    let mut stmt = conn
        .prepare("SELECT category_id, value_id FROM project_categories WHERE project_id = ?1")
        .map_err(db_err("read categories"))?;
    let categories = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<Result<BTreeMap<String, String>, _>>())
        .map_err(db_err("read categories"))?;
    Ok((
        row.0 as u64,
        ProjectFields {
            name: row.1,
            type_id: row.2,
            status_id: row.3,
            start_ms: row.4,
            end_ms: row.5,
            categories,
            fields,
        },
    ))
}

fn write_categories(
    conn: &Connection,
    id: i64,
    categories: &BTreeMap<String, String>,
) -> Result<(), Error> {
    conn.execute("DELETE FROM project_categories WHERE project_id = ?1", [id])
        .map_err(db_err("write categories"))?;
    for (c, v) in categories {
        conn.execute(
            "INSERT INTO project_categories (project_id, category_id, value_id) VALUES (?1, ?2, ?3)",
            params![id, c, v],
        )
        .map_err(db_err("write categories"))?;
    }
    Ok(())
}

fn log(
    conn: &Connection,
    id: i64,
    at_ms: i64,
    by: &str,
    action: &str,
    detail: &str,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO activity (project_id, at_ms, by, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, at_ms, by, action, detail],
    )
    .map_err(db_err("write the activity log"))?;
    Ok(())
}

fn touch(conn: &Connection, id: i64, now_ms: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE projects SET updated_at_ms = ?2 WHERE id = ?1",
        params![id, now_ms],
    )
    .map_err(db_err("update a project"))?;
    Ok(())
}

fn check_sequences(forms: &[SequenceForm]) -> Result<Vec<(String, i64, i64)>, Error> {
    if forms.len() > 100 {
        return Err(Error::invalid_input("sequences: at most 100 at once"));
    }
    forms
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let key = |k: &str| format!("sequences[{i}].{k}");
            let from = parse_time(&key("from"), &s.from)?;
            let to = parse_time(&key("to"), &s.to)?;
            check_sequence(&s.camera, from, to)
                .map_err(|e| Error::invalid_input(format!("sequences[{i}].{}", e.message())))?;
            Ok((s.camera.clone(), from, to))
        })
        .collect()
}

fn insert_sequence(
    conn: &Connection,
    id: i64,
    camera: &str,
    from_ms: i64,
    to_ms: i64,
    by: &str,
    now_ms: i64,
) -> Result<i64, Error> {
    conn.execute(
        "INSERT INTO sequences (project_id, camera, from_ms, to_ms, added_by, added_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, camera, from_ms, to_ms, by, now_ms],
    )
    .map_err(db_err("add a sequence"))?;
    let seq = conn.last_insert_rowid();
    log(
        conn,
        id,
        now_ms,
        by,
        "sequence_added",
        &format!("{camera} {} – {}", rfc3339(from_ms), rfc3339(to_ms)),
    )?;
    Ok(seq)
}

fn summaries(
    conn: &Connection,
    props: &Properties,
    filter: &str,
    args: &[&dyn ToSql],
    tail: &str,
) -> Result<Vec<ProjectSummary>, Error> {
    let sql = format!(
        "SELECT p.id, p.version, p.name, p.type_id, p.status_id, p.created_by, p.created_at_ms, \
         p.updated_at_ms, p.start_ms, p.end_ms, \
         (SELECT COUNT(*) FROM comments m WHERE m.project_id = p.id), \
         (SELECT COUNT(*) FROM sequences s WHERE s.project_id = p.id) \
         FROM projects p {filter} {tail}"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err("list projects"))?;
    let rows = stmt
        .query_map(args, |r| {
            let type_id: Option<String> = r.get(3)?;
            let status_id: String = r.get(4)?;
            let created_at_ms: i64 = r.get(6)?;
            Ok(ProjectSummary {
                id: r.get(0)?,
                version: r.get::<_, i64>(1)? as u64,
                name: r.get(2)?,
                type_name: type_id
                    .as_deref()
                    .and_then(|t| props.type_(t))
                    .map(|t| t.name.clone()),
                type_id,
                status_name: props
                    .status(&status_id)
                    .map_or(status_id.clone(), |s| s.name.clone()),
                status_id,
                created_by: r.get(5)?,
                created_at: rfc3339(created_at_ms),
                updated_at: rfc3339(r.get(7)?),
                start: r.get::<_, Option<i64>>(8)?.map(rfc3339),
                end: r.get::<_, Option<i64>>(9)?.map(rfc3339),
                expires_at: rfc3339(expires_at_ms(created_at_ms, props.retention_days)),
                comment_count: r.get::<_, i64>(10)? as u64,
                sequence_count: r.get::<_, i64>(11)? as u64,
            })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(db_err("list projects"))?;
    Ok(rows)
}

fn read_comments(conn: &Connection, id: i64) -> Result<Vec<Comment>, Error> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, author, at_ms, text, edited_at_ms, history FROM comments \
             WHERE project_id = ?1 ORDER BY id",
        )
        .map_err(db_err("read comments"))?;
    let rows = stmt
        .query_map([id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(db_err("read comments"))?;
    rows.into_iter()
        .map(|(cid, author, at, text, edited, history)| {
            let history = serde_json::from_str(&history).map_err(|e| {
                Error::wrap(
                    ErrorKind::Internal,
                    format!("the history of comment {cid} is unreadable"),
                    e,
                )
            })?;
            Ok(Comment {
                id: cid,
                author,
                at: rfc3339(at),
                text,
                edited_at: edited.map(rfc3339),
                history,
            })
        })
        .collect()
}

fn read_calls(conn: &Connection, id: i64) -> Result<Vec<Call>, Error> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, caller, callee, at_ms, phone, notes, added_by FROM calls \
             WHERE project_id = ?1 ORDER BY at_ms, id",
        )
        .map_err(db_err("read calls"))?;
    stmt.query_map([id], |r| {
        Ok(Call {
            id: r.get(0)?,
            caller: r.get(1)?,
            callee: r.get(2)?,
            at: rfc3339(r.get(3)?),
            phone: r.get(4)?,
            notes: r.get(5)?,
            added_by: r.get(6)?,
        })
    })
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .map_err(db_err("read calls"))
}

fn read_sequences(conn: &Connection, id: i64) -> Result<Vec<Sequence>, Error> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, camera, from_ms, to_ms, added_by, added_at_ms FROM sequences \
             WHERE project_id = ?1 ORDER BY from_ms, id",
        )
        .map_err(db_err("read sequences"))?;
    stmt.query_map([id], |r| {
        let from_ms: i64 = r.get(2)?;
        let to_ms: i64 = r.get(3)?;
        Ok(Sequence {
            id: r.get(0)?,
            camera: r.get(1)?,
            from: rfc3339(from_ms),
            to: rfc3339(to_ms),
            from_ms,
            to_ms,
            added_by: r.get(4)?,
            added_at: rfc3339(r.get(5)?),
        })
    })
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .map_err(db_err("read sequences"))
}

fn read_activity(conn: &Connection, id: i64) -> Result<Vec<Activity>, Error> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at_ms, by, action, detail FROM activity WHERE project_id = ?1 ORDER BY id",
        )
        .map_err(db_err("read the activity log"))?;
    stmt.query_map([id], |r| {
        Ok(Activity {
            at: rfc3339(r.get(0)?),
            by: r.get(1)?,
            action: r.get(2)?,
            detail: r.get(3)?,
        })
    })
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .map_err(db_err("read the activity log"))
}
