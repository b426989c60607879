//! The request desk as the daemon runs it: the rules are `veil_evidence::requests::RequestDesk`
//! (pure); this adapter keeps its records in `state/requests.sqlite3` so a reboot loses none,
//! carries out what it asks (footage holds in the store, the audit log, MQTT events) and runs
//! export jobs one at a time on the `jobs` thread.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use veil_core::{Clock, Error, ErrorKind};
use veil_evidence::requests::{DeskOutput, JobOutcome, RequestDesk};
use veil_store::Store;
use veil_store::audit::AuditLog;
use veil_store::retention::Hold;
use veil_uplink::command::{ExportJob, VideoRequest};
use veil_uplink::session::EventSink;

/// Runs one export job into a directory (and uploads it, where configured), reporting
/// progress from 0 to 1 and stopping between two frames once the flag is set (a job canceled
/// while it runs); the daemon provides it (store, keys, engines, upload target).
pub type ExportRunner = dyn Fn(&ExportJob, &Path, &(dyn Fn(f64) + Sync), &AtomicBool) -> Result<Value, Error>
    + Send
    + Sync;

pub struct Desk {
    desk: Mutex<RequestDesk>,
    db: Mutex<Connection>,
    store: Arc<Store>,
    exports_dir: PathBuf,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    events: Mutex<Option<EventSink>>,
    queue: Mutex<Option<std::sync::mpsc::Sender<String>>>,
    canceled: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::wrap(ErrorKind::Internal, "request desk", e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every record of `table`, oldest saved first.
fn all<T: DeserializeOwned>(db: &Connection, table: &str) -> Result<Vec<T>, Error> {
    let mut st = db
        .prepare(&format!("SELECT body FROM {table} ORDER BY rowid"))
        .map_err(db_err)?;
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    Ok(rows
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect())
}

fn save<T: Serialize>(db: &Connection, table: &str, id: &str, value: &T) -> Result<(), Error> {
    let body = serde_json::to_string(value).expect("records serialize");
    db.execute(
        &format!("INSERT OR REPLACE INTO {table} (id, body) VALUES (?1, ?2)"),
        params![id, body],
    )
    .map_err(db_err)?;
    Ok(())
}

impl Desk {
    /// Opens the desk under `state_dir`, and starts the job thread with `runner`. Jobs a
    /// restart interrupted are queued again.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        state_dir: &Path,
        exports_dir: PathBuf,
        store: Arc<Store>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
        cameras: Vec<String>,
        auto_approve: bool,
        runner: Box<ExportRunner>,
    ) -> Result<Arc<Desk>, Error> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot create the state dir", e))?;
        let conn = Connection::open(state_dir.join("requests.sqlite3")).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, body TEXT NOT NULL);",
        )
        .map_err(db_err)?;
        let restored = RequestDesk::restore(
            all(&conn, "requests")?,
            all(&conn, "jobs")?,
            cameras,
            auto_approve,
        );
        let desk = Arc::new(Desk {
            desk: Mutex::new(restored),
            db: Mutex::new(conn),
            store,
            exports_dir,
            audit,
            clock,
            events: Mutex::new(None),
            queue: Mutex::new(None),
            canceled: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        *lock(&desk.queue) = Some(tx);
        let worker = Arc::downgrade(&desk);
        std::thread::Builder::new()
            .name("jobs".into())
            .spawn(move || {
                while let Ok(id) = rx.recv() {
                    let Some(desk) = worker.upgrade() else { return };
                    desk.run_job(&id, &*runner);
                }
            })
            .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start the jobs thread", e))?;
        desk.carry_out(&mut lock(&desk.desk))?;
        Ok(desk)
    }

    fn now_ms(&self) -> i64 {
        self.clock.wall_millis() as i64
    }

    /// The cameras requests may name (changed when cameras are added or removed on the page).
    pub fn set_cameras(&self, cameras: Vec<String>) {
        lock(&self.desk).set_cameras(cameras);
    }

    /// Where a finished job's export is, if it has one.
    pub fn export_dir(&self, id: &str) -> Result<PathBuf, Error> {
        lock(&self.desk).export_dir(id).map(PathBuf::from)
    }

    /// Where events go once the fleet session runs.
    pub fn set_events(&self, sink: EventSink) {
        *lock(&self.events) = Some(sink);
    }

    /// Why the newest finished job failed, if it did (shown as the upload state in status).
    pub fn last_failure(&self) -> Option<String> {
        lock(&self.desk).last_failure()
    }

    pub fn list(&self) -> Result<Value, Error> {
        Ok(lock(&self.desk).list())
    }

    /// The cameras of `cameras` the store has footage of in the range.
    fn covered(&self, cameras: &[String], from_ms: i64, to_ms: i64) -> BTreeSet<String> {
        cameras
            .iter()
            .filter(|c| {
                self.store
                    .coverage(c, from_ms, to_ms)
                    .is_ok_and(|cov| !cov.segments.is_empty())
            })
            .cloned()
            .collect()
    }

    /// Checks that every camera exists here and has footage in the range.
    pub fn check_footage(&self, cameras: &[String], from_ms: i64, to_ms: i64) -> Result<(), Error> {
        let covered = self.covered(cameras, from_ms, to_ms);
        lock(&self.desk).check_footage(cameras, from_ms, to_ms, &covered)
    }

    /// A new video request (the same id again returns the first, unchanged).
    pub fn create_request(&self, request: &VideoRequest) -> Result<Value, Error> {
        let covered = self.covered(&request.cameras, request.from_ms, request.to_ms);
        let now = self.now_ms();
        self.with_desk(|d| d.create_request(request, &covered, now))
    }

    /// The owner's decision; an approval queues the export job.
    pub fn decide(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        by: Option<&str>,
    ) -> Result<Value, Error> {
        let now = self.now_ms();
        self.with_desk(|d| d.decide(id, approve, reason, by, now))
    }

    /// Withdraws a request: a pending one is closed, an approved one's job canceled.
    pub fn cancel_request(&self, id: &str, reason: Option<&str>) -> Result<Value, Error> {
        let now = self.now_ms();
        self.with_desk(|d| d.cancel_request(id, reason, now))
    }

    /// An export job ordered directly (not from a request).
    pub fn create_job(&self, job: &ExportJob) -> Result<Value, Error> {
        self.create_job_by(job, "fleet")
    }

    /// An export job ordered by `actor` (the fleet, or a user on the page).
    pub fn create_job_by(&self, job: &ExportJob, actor: &str) -> Result<Value, Error> {
        let covered = self.covered(&job.cameras, job.from_ms, job.to_ms);
        let now = self.now_ms();
        self.with_desk(|d| d.create_job(job, actor, &covered, now))
    }

    pub fn cancel_job(&self, id: &str) -> Result<Value, Error> {
        let now = self.now_ms();
        self.with_desk(|d| d.cancel_job(id, now))
    }

    /// One input to the desk, then what it asks carried out. If that fails part way, the desk
    /// is rebuilt from what was kept, so it never believes more than the database holds.
    fn with_desk(
        &self,
        input: impl FnOnce(&mut RequestDesk) -> Result<Value, Error>,
    ) -> Result<Value, Error> {
        let mut desk = lock(&self.desk);
        let answer = input(&mut desk);
        self.carry_out(&mut desk)?;
        answer
    }

    fn carry_out(&self, desk: &mut RequestDesk) -> Result<(), Error> {
        while let Some(output) = desk.poll() {
            if let Err(e) = self.apply(output) {
                let db = lock(&self.db);
                desk.reload(all(&db, "requests")?, all(&db, "jobs")?);
                return Err(e);
            }
        }
        Ok(())
    }

    fn apply(&self, output: DeskOutput) -> Result<(), Error> {
        match output {
            DeskOutput::Hold {
                owner,
                cameras,
                from_ms,
                to_ms,
                reason,
            } => {
                for camera in cameras {
                    self.store.hold(&Hold {
                        id: format!("{owner}-{camera}"),
                        camera,
                        from_ms,
                        to_ms,
                        reason: reason.clone(),
                    })?;
                }
            }
            DeskOutput::Release { owner, cameras } => {
                for camera in cameras {
                    if let Err(e) = self.store.release(&format!("{owner}-{camera}")) {
                        tracing::warn!(error = %e, "cannot release a hold");
                    }
                }
            }
            DeskOutput::SaveRequest(r) => save(&lock(&self.db), "requests", &r.request.id, &r)?,
            DeskOutput::SaveJob(j) => save(&lock(&self.db), "jobs", &j.id, &j)?,
            // A log that cannot be written is reported, not fatal: the workflow's own state
            // is in SQLite.
            DeskOutput::Audit {
                actor,
                action,
                subject,
                before,
                after,
            } => {
                if let Err(e) = self.audit.append(&actor, action, &subject, before, after) {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
            }
            DeskOutput::Event(event) => {
                if let Some(sink) = &*lock(&self.events) {
                    sink.send(&event);
                }
            }
            DeskOutput::Run(id) => {
                if let Some(tx) = lock(&self.queue).as_ref() {
                    let _ = tx.send(id);
                }
            }
            DeskOutput::Stop(id) => {
                lock(&self.canceled)
                    .entry(id)
                    .or_default()
                    .store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// A desk step the job thread takes; a failure to keep it is logged (the job goes on).
    fn step(&self, input: impl FnOnce(&mut RequestDesk)) {
        let mut desk = lock(&self.desk);
        input(&mut desk);
        if let Err(e) = self.carry_out(&mut desk) {
            tracing::error!(error = %e, "cannot save an export job's state");
        }
    }

    fn run_job(&self, id: &str, runner: &ExportRunner) {
        let out = self.exports_dir.join(id);
        let dir = out.display().to_string();
        let mut started = None;
        let now = self.now_ms();
        self.step(|d| started = d.job_started(id, &dir, now));
        let Some(job) = started else {
            return;
        };
        let flag = lock(&self.canceled)
            .entry(id.to_string())
            .or_default()
            .clone();
        let clock = std::time::Instant::now();
        tracing::info!(job = %job.id, cameras = ?job.job.cameras, "export job started");
        // The exporter reports every frame; the desk hears of each hundredth at most.
        let hundredths = std::sync::atomic::AtomicU64::new(0);
        let progress = |p: f64| {
            let step = (p.clamp(0.0, 1.0) * 100.0) as u64;
            if hundredths.fetch_max(step, Ordering::Relaxed) < step {
                let now = self.now_ms();
                self.step(|d| d.job_progress(id, p, now));
            }
        };
        let outcome = runner(&job.job, &out, &progress, &flag);
        let outcome = if flag.load(Ordering::SeqCst) {
            let _ = std::fs::remove_dir_all(&out);
            tracing::info!(job = %job.id, "export job canceled");
            JobOutcome::Canceled
        } else {
            match outcome {
                Ok(result) => {
                    tracing::info!(job = %job.id, seconds = clock.elapsed().as_secs_f64(), "export job succeeded");
                    JobOutcome::Succeeded(result)
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, reason = %e, "export job failed");
                    JobOutcome::Failed(e.to_string())
                }
            }
        };
        let now = self.now_ms();
        self.step(|d| d.job_ended(id, outcome, now));
    }
}
