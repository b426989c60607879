//! The audit log: every state change by a person, the fleet or the device itself, in an
//! append-only JSON Lines file where each entry carries the SHA-256 of the one before.
//!
//! Editing, removing or reordering an entry breaks the chain at that entry; cutting entries
//! off the end is caught against `audit.head` (sequence and hash of the newest entry, written
//! after every append) and against the head the device publishes in its telemetry, which an
//! attacker on the device cannot rewrite. `veild verify-audit` runs [`verify`].

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use veil_core::{Error, ErrorKind};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// Who: a user name, `fleet`, `device`, or `setup`.
    pub actor: String,
    /// What, as `area.verb`: `user.create`, `request.approve`, `login.failed`, …
    pub action: String,
    /// Which thing: a user name, request id, camera id (may be empty).
    pub subject: String,
    pub before: Value,
    pub after: Value,
    /// The `hash` of the previous entry ([`GENESIS`] for the first).
    pub prev: String,
    /// SHA-256 (hex) of `prev` and this entry's other fields.
    pub hash: String,
}

/// The fields that are hashed, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time: &'a str,
    actor: &'a str,
    action: &'a str,
    subject: &'a str,
    before: &'a Value,
    after: &'a Value,
}

fn entry_hash(prev: &str, e: &Hashed<'_>) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(serde_json::to_vec(e).expect("audit fields serialize"));
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::wrap(ErrorKind::Unavailable, what, e)
}

impl AuditEntry {
    fn expected_hash(&self) -> String {
        entry_hash(
            &self.prev,
            &Hashed {
                seq: self.seq,
                time: &self.time,
                actor: &self.actor,
                action: &self.action,
                subject: &self.subject,
                before: &self.before,
                after: &self.after,
            },
        )
    }
}

/// Which entries to return from [`AuditLog::query`]; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact actor.
    pub actor: Option<String>,
    /// Action, or its prefix when it ends in `.` (`request.` matches every request action).
    pub action: Option<String>,
    /// Substring of the subject.
    pub subject: Option<String>,
    /// RFC 3339 bounds, inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Newest first, at most this many.
    pub limit: usize,
}

impl AuditFilter {
    fn matches(&self, e: &AuditEntry) -> bool {
        let action_ok = match &self.action {
            None => true,
            Some(a) if a.ends_with('.') => e.action.starts_with(a.as_str()),
            Some(a) => &e.action == a,
        };
        // RFC 3339 UTC strings of the same shape compare as times.
        let at = |s: &str| s.parse::<jiff::Timestamp>().ok();
        let time = at(&e.time);
        action_ok
            && self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self
                .subject
                .as_ref()
                .is_none_or(|s| e.subject.contains(s.as_str()))
            && self
                .since
                .as_deref()
                .and_then(at)
                .is_none_or(|s| time.is_some_and(|t| t >= s))
            && self
                .until
                .as_deref()
                .and_then(at)
                .is_none_or(|u| time.is_some_and(|t| t <= u))
    }
}

struct Tail {
    file: File,
    seq: u64,
    hash: String,
}

/// The open log; appends are serialized and synced before they return.
pub struct AuditLog {
    path: PathBuf,
    head_path: PathBuf,
    tail: Mutex<Tail>,
}

/// What [`verify`] found in an intact log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditHead {
    pub entries: u64,
    /// Hash of the newest entry ([`GENESIS`] when empty).
    pub hash: String,
}

impl AuditLog {
    /// Opens (or creates) the log at `path`. A last line cut short by a power loss is dropped
    /// (it was never acknowledged); lines from before the log was chained are moved to
    /// `<name>.unchained` and the first chained entry records that file's SHA-256.
    pub fn open(path: &Path) -> Result<AuditLog, Error> {
        let head_path = path.with_extension("head");
        let mut lines = read_lines(path)?;
        let mut archived = None;
        if lines
            .iter()
            .any(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("hash").is_none()))
        {
            let legacy = path.with_extension("jsonl.unchained");
            std::fs::rename(path, &legacy).map_err(io(format!(
                "cannot move the unchained audit log to {}",
                legacy.display()
            )))?;
            let bytes =
                std::fs::read(&legacy).map_err(io(format!("cannot read {}", legacy.display())))?;
            archived = Some((legacy, hex(&Sha256::digest(&bytes))));
            lines.clear();
        }
        // Drop a torn final line; anything else that does not parse is tampering for verify
        // to report, and the chain continues from the last entry that parses.
        let last_good = lines
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str::<AuditEntry>(l).ok());
        if let Some(last) = lines.last()
            && serde_json::from_str::<AuditEntry>(last).is_err()
            && !last.ends_with('}')
        {
            let keep: String = lines[..lines.len() - 1]
                .iter()
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(path, keep).map_err(io(format!("cannot repair {}", path.display())))?;
            tracing::warn!(path = %path.display(), "dropped a torn last line of the audit log");
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(format!("cannot open the audit log {}", path.display())))?;
        let (seq, hash) = last_good
            .map(|e| (e.seq, e.hash))
            .unwrap_or((0, GENESIS.to_string()));
        let log = AuditLog {
            path: path.to_path_buf(),
            head_path,
            tail: Mutex::new(Tail { file, seq, hash }),
        };
        if let Some((legacy, sha)) = archived {
            log.append(
                "device",
                "audit.chained",
                &legacy.display().to_string(),
                Value::Null,
                serde_json::json!({ "unchained_sha256": sha }),
            )?;
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and syncs it to disk before returning it.
    pub fn append(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        before: Value,
        after: Value,
    ) -> Result<AuditEntry, Error> {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let time = jiff::Timestamp::now()
            .round(jiff::Unit::Millisecond)
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .to_string();
        let seq = tail.seq + 1;
        let hash = entry_hash(
            &tail.hash,
            &Hashed {
                seq,
                time: &time,
                actor,
                action,
                subject,
                before: &before,
                after: &after,
            },
        );
        let entry = AuditEntry {
            seq,
            time,
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            before,
            after,
            prev: tail.hash.clone(),
            hash,
        };
        let mut line = serde_json::to_vec(&entry).expect("audit entries serialize");
        line.push(b'\n');
        let what = format!("cannot write the audit log {}", self.path.display());
        tail.file.write_all(&line).map_err(io(what.clone()))?;
        tail.file.sync_data().map_err(io(what))?;
        tail.seq = seq;
        tail.hash = entry.hash.clone();
        let head = serde_json::to_vec(&AuditHead {
            entries: seq,
            hash: entry.hash.clone(),
        })
        .expect("head serializes");
        let tmp = self.head_path.with_extension("head.tmp");
        std::fs::write(&tmp, head)
            .and_then(|_| std::fs::rename(&tmp, &self.head_path))
            .map_err(io(format!("cannot write {}", self.head_path.display())))?;
        Ok(entry)
    }

    /// Sequence number and hash of the newest entry.
    pub fn head(&self) -> AuditHead {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        AuditHead {
            entries: tail.seq,
            hash: tail.hash.clone(),
        }
    }

    /// Entries matching `filter`, newest first.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, Error> {
        let _guard = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<AuditEntry> = read_lines(&self.path)?
            .iter()
            .filter_map(|l| serde_json::from_str::<AuditEntry>(l).ok())
            .filter(|e| filter.matches(e))
            .collect();
        out.reverse();
        out.truncate(filter.limit.max(1));
        Ok(out)
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>, Error> {
    match File::open(path) {
        Ok(f) => BufReader::new(f)
            .lines()
            .filter(|l| !matches!(l, Ok(s) if s.is_empty()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io(format!("cannot read {}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
    }
}

/// Checks the whole chain of the log at `path` and, when `audit.head` is beside it, that
/// nothing was cut off the end. The error names the first line that does not fit.
pub fn verify(path: &Path) -> Result<AuditHead, Error> {
    let bad = |line: usize, why: String| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{} line {line}: {why}", path.display()),
        )
    };
    // A log that is not there proves nothing: say so rather than report an empty chain.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} is not a file: nothing was checked", path.display()),
            ));
        }
        Err(e) => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no audit log at {} ({e}): nothing was checked; name the log with --file, or \
                     the device's configuration with --config (--dev for a development directory)",
                    path.display()
                ),
            ));
        }
    }
    let mut prev = GENESIS.to_string();
    let mut seq = 0u64;
    for (i, line) in read_lines(path)?.iter().enumerate() {
        let n = i + 1;
        let e: AuditEntry = serde_json::from_str(line)
            .map_err(|err| bad(n, format!("not an audit entry ({err})")))?;
        if e.seq != seq + 1 {
            return Err(bad(
                n,
                format!(
                    "sequence {} follows {seq}: entries were removed or reordered",
                    e.seq
                ),
            ));
        }
        if e.prev != prev {
            return Err(bad(
                n,
                "does not chain to the entry before it: an entry was removed or replaced".into(),
            ));
        }
        if e.expected_hash() != e.hash {
            return Err(bad(
                n,
                format!(
                    "entry {} was altered after it was written (hash mismatch)",
                    e.seq
                ),
            ));
        }
        prev = e.hash;
        seq = e.seq;
    }
    let head_path = path.with_extension("head");
    if let Ok(bytes) = std::fs::read(&head_path) {
        let head: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{} is damaged: {e}", head_path.display()),
            )
        })?;
        let entries = head["entries"].as_u64().unwrap_or(0);
        if entries > seq {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{}: the log ends at entry {seq} but {} recorded {entries}: entries were cut off the end",
                    path.display(),
                    head_path.display()
                ),
            ));
        }
    }
    Ok(AuditHead {
        entries: seq,
        hash: prev,
    })
}

/// RFC 4180 CSV of `entries` (before/after as JSON text), with a header row.
pub fn to_csv(entries: &[AuditEntry]) -> String {
    fn field(s: &str) -> String {
        // A leading = + - @ would run as a formula in a spreadsheet: quote it as text.
        let s = if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    }
    let mut out = String::from("seq,time,actor,action,subject,before,after,hash\r\n");
    for e in entries {
        let row = [
            e.seq.to_string(),
            e.time.clone(),
            e.actor.clone(),
            e.action.clone(),
            e.subject.clone(),
            e.before.to_string(),
            e.after.to_string(),
            e.hash.clone(),
        ];
        let row: Vec<String> = row.iter().map(|f| field(f)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append(
            "setup",
            "user.create",
            "admin",
            Value::Null,
            json!({"role": "admin"}),
        )
        .unwrap();
        log.append(
            "admin",
            "request.approve",
            "r-1",
            json!({"status": "pending"}),
            json!({"status": "approved"}),
        )
        .unwrap();
        log.append(
            "fleet",
            "request.create",
            "r-2",
            Value::Null,
            json!({"x": 1.5}),
        )
        .unwrap();
        path
    }

    #[test]
    fn an_intact_chain_verifies_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let head = verify(&path).unwrap();
        assert_eq!(head.entries, 3);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.head(), head);
        log.append("admin", "user.delete", "bob", json!({}), Value::Null)
            .unwrap();
        assert_eq!(verify(&path).unwrap().entries, 4);
    }

    #[test]
    fn altering_removing_or_cutting_entries_is_caught_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();

        let altered = original.replace("\"approved\"", "\"declined\"");
        std::fs::write(&path, altered).unwrap();
        let e = verify(&path).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("altered"), "{e}");

        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        let e = verify(&path).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("removed"), "{e}");

        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
        let e = verify(&path).unwrap_err().to_string();
        assert!(e.contains("cut off the end"), "{e}");

        // A rewritten chain (every hash recomputed) still breaks against the head file only
        // when shorter; equal length rewrites need the published head — documented.
        std::fs::write(&path, "not json\n").unwrap();
        assert!(verify(&path).unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn a_missing_log_or_a_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("state").join("audit.jsonl");
        let e = verify(&missing).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let text = e.to_string();
        assert!(
            text.contains(&missing.display().to_string()) && text.contains("nothing was checked"),
            "{text}"
        );
        // The head file alone (the log deleted) is no intact chain either.
        let path = sample(dir.path());
        std::fs::remove_file(&path).unwrap();
        assert!(path.with_extension("head").exists());
        assert_eq!(verify(&path).unwrap_err().kind(), ErrorKind::NotFound);
        let e = verify(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a file"), "{e}");
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"seq\":4,\"time\":\"20").unwrap();
        drop(f);
        let log = AuditLog::open(&path).unwrap();
        log.append("admin", "user.create", "eve", Value::Null, Value::Null)
            .unwrap();
        assert_eq!(verify(&path).unwrap().entries, 4);
    }

    #[test]
    fn unchained_lines_are_archived_and_anchored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(
            &path,
            "{\"time\":\"t\",\"actor\":\"fleet\",\"action\":\"request.create\"}\n",
        )
        .unwrap();
        let log = AuditLog::open(&path).unwrap();
        let first = &log
            .query(&AuditFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap()[0];
        assert_eq!(first.action, "audit.chained");
        assert_eq!(first.after["unchained_sha256"].as_str().unwrap().len(), 64);
        assert!(dir.path().join("audit.jsonl.unchained").exists());
        assert_eq!(verify(&path).unwrap().entries, 1);
    }

    #[test]
    fn queries_filter_and_csv_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&sample(dir.path())).unwrap();
        let all = log
            .query(&AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2, 1]);
        let reqs = log
            .query(&AuditFilter {
                action: Some("request.".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(reqs.len(), 2);
        let admin = log
            .query(&AuditFilter {
                actor: Some("admin".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(admin[0].subject, "r-1");
        let future = log
            .query(&AuditFilter {
                since: Some("2999-01-01T00:00:00Z".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert!(future.is_empty());
        log.append("=cmd", "x", "a,b", Value::Null, json!({"q": "\"hi\""}))
            .unwrap();
        let csv = to_csv(
            &log.query(&AuditFilter {
                limit: 1,
                ..Default::default()
            })
            .unwrap(),
        );
        let row = csv.lines().nth(1).unwrap();
        assert!(row.starts_with("4,"), "{row}");
        assert!(row.contains(",'=cmd,x,\"a,b\",null,\"{\"\"q\"\":"), "{row}");
    }
}
