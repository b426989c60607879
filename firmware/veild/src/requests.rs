//! The request desk: video requests from investigators and export jobs, kept in
//! `state/requests.sqlite3` so a reboot loses none. A request holds its footage from the
//! moment it arrives; the owner approves or declines it (or the device policy approves it at
//! once); an approved request becomes an export job. Jobs run one at a time on the `jobs`
//! thread with AWS IoT Jobs-style states (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELED,
//! REJECTED). Every step is an event on MQTT and a line in the audit log
//! (`state/audit.jsonl`, hash-chained: `veil_store::audit`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use veil_core::{Error, ErrorKind};
use veil_store::Store;
use veil_store::audit::AuditLog;
use veil_store::retention::Hold;
use veil_uplink::command::{ExportJob, VideoRequest};
use veil_uplink::session::EventSink;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    #[serde(flatten)]
    pub request: VideoRequest,
    /// `pending`, `approved`, `declined` or `canceled`.
    pub status: String,
    pub received: String,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub job_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub request_id: Option<String>,
    pub job: ExportJob,
    /// QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELED or REJECTED.
    pub status: String,
    pub progress: f64,
    pub reason: Option<String>,
    pub export_dir: Option<String>,
    pub result: Option<Value>,
    pub updated: String,
}

impl JobRecord {
    fn terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "SUCCEEDED" | "FAILED" | "CANCELED" | "REJECTED"
        )
    }
}

/// Runs one export job into a directory (and uploads it, where configured), reporting
/// progress from 0 to 1 and stopping between two frames once the flag is set (a job canceled
/// while it runs); the daemon provides it (store, keys, engines, upload target).
pub type ExportRunner = dyn Fn(&ExportJob, &Path, &(dyn Fn(f64) + Sync), &AtomicBool) -> Result<Value, Error>
    + Send
    + Sync;

pub struct Desk {
    db: Mutex<Connection>,
    store: Arc<Store>,
    exports_dir: PathBuf,
    audit: Arc<AuditLog>,
    cameras: Mutex<Vec<String>>,
    auto_approve: bool,
    events: Mutex<Option<EventSink>>,
    queue: Mutex<Option<std::sync::mpsc::Sender<String>>>,
    canceled: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

pub(crate) use veil_uplink::command::rfc3339;

fn db_err(e: rusqlite::Error) -> Error {
    Error::wrap(ErrorKind::Internal, "request desk", e)
}

impl Desk {
    /// Opens the desk under `state_dir`, and starts the job thread with `runner`. Jobs a
    /// restart interrupted are queued again.
    pub fn open(
        state_dir: &Path,
        exports_dir: PathBuf,
        store: Arc<Store>,
        audit: Arc<AuditLog>,
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
        let desk = Arc::new(Desk {
            db: Mutex::new(conn),
            store,
            exports_dir,
            audit,
            cameras: Mutex::new(cameras),
            auto_approve,
            events: Mutex::new(None),
            queue: Mutex::new(None),
            canceled: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        *desk.queue.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
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
        for job in desk.jobs()? {
            if !job.terminal() {
                desk.enqueue(&job.id);
            }
        }
        Ok(desk)
    }

    /// The cameras requests may name (changed when cameras are added or removed on the page).
    pub fn set_cameras(&self, cameras: Vec<String>) {
        *self.cameras.lock().unwrap_or_else(|e| e.into_inner()) = cameras;
    }

    /// Where a finished job's export is, if it has one.
    pub fn export_dir(&self, id: &str) -> Result<PathBuf, Error> {
        let job: JobRecord = self
            .load("jobs", id)?
            .ok_or_else(|| Error::not_found(format!("no export job '{id}'")))?;
        match (job.status.as_str(), job.export_dir) {
            ("SUCCEEDED", Some(dir)) => Ok(PathBuf::from(dir)),
            (status, _) => Err(Error::new(
                ErrorKind::Conflict,
                format!("export job '{id}' is {status}: its files are not ready"),
            )),
        }
    }

    /// Where events go once the fleet session runs.
    pub fn set_events(&self, sink: EventSink) {
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn event(&self, mut event: Value) {
        event["time"] = json!(now());
        if let Some(sink) = &*self.events.lock().unwrap_or_else(|e| e.into_inner()) {
            sink.send(&event);
        }
    }

    /// Appends an entry to the audit log (who, what, before, after). A log that cannot be
    /// written is reported, not fatal: the workflow's own state is in SQLite.
    fn audit(&self, actor: &str, action: &str, subject: &str, before: Value, after: Value) {
        if let Err(e) = self.audit.append(actor, action, subject, before, after) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    fn load<T: for<'de> Deserialize<'de>>(
        &self,
        table: &str,
        id: &str,
    ) -> Result<Option<T>, Error> {
        let body: Option<String> = self
            .db()
            .query_row(
                &format!("SELECT body FROM {table} WHERE id = ?1"),
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        body.map(|b| {
            serde_json::from_str(&b).map_err(|e| {
                Error::internal(format!("request desk: damaged {table} row {id}: {e}"))
            })
        })
        .transpose()
    }

    fn save<T: Serialize>(&self, table: &str, id: &str, value: &T) -> Result<(), Error> {
        let body = serde_json::to_string(value).expect("records serialize");
        self.db()
            .execute(
                &format!("INSERT OR REPLACE INTO {table} (id, body) VALUES (?1, ?2)"),
                params![id, body],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn all<T: for<'de> Deserialize<'de>>(&self, table: &str) -> Result<Vec<T>, Error> {
        let db = self.db();
        let mut st = db
            .prepare(&format!("SELECT body FROM {table} ORDER BY rowid DESC"))
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

    pub fn jobs(&self) -> Result<Vec<JobRecord>, Error> {
        self.all("jobs")
    }

    /// Why the newest finished job failed, if it did (shown as the upload state in status).
    pub fn last_failure(&self) -> Option<String> {
        let jobs = self.jobs().ok()?;
        let newest = jobs.iter().find(|j| j.terminal())?;
        (newest.status == "FAILED").then(|| newest.reason.clone().unwrap_or_default())
    }

    pub fn list(&self) -> Result<Value, Error> {
        let requests: Vec<RequestRecord> = self.all("requests")?;
        Ok(json!({ "requests": requests, "jobs": self.jobs()? }))
    }

    /// Holds `cameras` over the range under `owner`'s name, so retention keeps the footage.
    fn hold(
        &self,
        owner: &str,
        cameras: &[String],
        from_ms: i64,
        to_ms: i64,
        reason: &str,
    ) -> Result<(), Error> {
        for camera in cameras {
            self.store.hold(&Hold {
                id: format!("{owner}-{camera}"),
                camera: camera.clone(),
                from_ms,
                to_ms,
                reason: reason.to_string(),
            })?;
        }
        Ok(())
    }

    fn release(&self, owner: &str, cameras: &[String]) {
        for camera in cameras {
            if let Err(e) = self.store.release(&format!("{owner}-{camera}")) {
                tracing::warn!(error = %e, "cannot release a hold");
            }
        }
    }

    /// Checks that every camera exists here and has footage in the range.
    pub fn check_footage(&self, cameras: &[String], from_ms: i64, to_ms: i64) -> Result<(), Error> {
        for camera in cameras {
            if !self
                .cameras
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(camera)
            {
                return Err(Error::not_found(format!(
                    "no camera '{camera}' on this device"
                )));
            }
            let covered = self
                .store
                .coverage(camera, from_ms, to_ms)
                .map(|c| !c.segments.is_empty())
                .unwrap_or(false);
            if !covered {
                return Err(Error::not_found(format!(
                    "no footage of camera '{camera}' between {} and {}",
                    rfc3339(from_ms),
                    rfc3339(to_ms)
                )));
            }
        }
        Ok(())
    }

    /// A new video request (the same id again returns the first, unchanged).
    pub fn create_request(&self, request: &VideoRequest) -> Result<Value, Error> {
        if let Some(existing) = self.load::<RequestRecord>("requests", &request.id)? {
            if existing.request != *request {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("request '{}' exists with other contents", request.id),
                ));
            }
            return Ok(json!({ "duplicate": true, "request": existing }));
        }
        self.check_footage(&request.cameras, request.from_ms, request.to_ms)?;
        let owner = format!("request-{}", request.id);
        let reason = format!("video request {} ({})", request.id, request.reason);
        self.hold(
            &owner,
            &request.cameras,
            request.from_ms,
            request.to_ms,
            &reason,
        )?;
        let record = RequestRecord {
            request: request.clone(),
            status: "pending".into(),
            received: now(),
            decided_by: None,
            decision_reason: None,
            job_id: None,
        };
        self.save("requests", &request.id, &record)?;
        self.audit(
            &request.requester.name,
            "request.create",
            &request.id,
            Value::Null,
            json!(record),
        );
        self.event(json!({ "type": "request.received", "request": record }));
        if self.auto_approve {
            return self.decide(&request.id, true, None, Some("policy: auto_approve"));
        }
        Ok(json!({ "duplicate": false, "request": record }))
    }

    /// The owner's decision; an approval queues the export job.
    pub fn decide(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        by: Option<&str>,
    ) -> Result<Value, Error> {
        let mut record: RequestRecord = self
            .load("requests", id)?
            .ok_or_else(|| Error::not_found(format!("no video request '{id}'")))?;
        if record.status != "pending" {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("video request '{id}' is already {}", record.status),
            ));
        }
        let before = json!(record);
        let by = by.unwrap_or("owner").to_string();
        record.decided_by = Some(by.clone());
        record.decision_reason = reason.map(str::to_string);
        let r = &record.request;
        if approve {
            record.status = "approved".into();
            let job_id = format!("job-{id}");
            record.job_id = Some(job_id.clone());
            let job = JobRecord {
                id: job_id.clone(),
                request_id: Some(id.to_string()),
                job: ExportJob {
                    job_id: job_id.clone(),
                    cameras: r.cameras.clone(),
                    from_ms: r.from_ms,
                    to_ms: r.to_ms,
                    name: Some(format!("video request {id}")),
                    description: Some(r.reason.clone()),
                    filter: None,
                    upload_urls: None,
                    incident: None,
                },
                status: "QUEUED".into(),
                progress: 0.0,
                reason: None,
                export_dir: None,
                result: None,
                updated: now(),
            };
            self.save("jobs", &job_id, &job)?;
            self.save("requests", id, &record)?;
            self.audit(&by, "request.approve", id, before, json!(record));
            self.event(json!({ "type": "request.approved", "request": record }));
            self.job_event(&job);
            self.enqueue(&job_id);
        } else {
            record.status = "declined".into();
            self.save("requests", id, &record)?;
            self.release(&format!("request-{id}"), &r.cameras);
            self.audit(&by, "request.decline", id, before, json!(record));
            self.event(json!({ "type": "request.declined", "request": record }));
        }
        Ok(json!({ "request": record }))
    }

    /// Withdraws a request: a pending one is closed, an approved one's job canceled.
    pub fn cancel_request(&self, id: &str, reason: Option<&str>) -> Result<Value, Error> {
        let mut record: RequestRecord = self
            .load("requests", id)?
            .ok_or_else(|| Error::not_found(format!("no video request '{id}'")))?;
        let before = json!(record);
        match record.status.as_str() {
            "pending" => {
                self.release(&format!("request-{id}"), &record.request.cameras);
            }
            "approved" => {
                if let Some(job) = &record.job_id {
                    self.cancel_job(job)?;
                }
            }
            other => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("video request '{id}' is already {other}"),
                ));
            }
        }
        record.status = "canceled".into();
        record.decision_reason = reason.map(str::to_string);
        self.save("requests", id, &record)?;
        self.audit("fleet", "request.cancel", id, before, json!(record));
        self.event(json!({ "type": "request.canceled", "request": record }));
        Ok(json!({ "request": record }))
    }

    /// An export job ordered directly (not from a request).
    pub fn create_job(&self, job: &ExportJob) -> Result<Value, Error> {
        self.create_job_by(job, "fleet")
    }

    /// An export job ordered by `actor` (the fleet, or a user on the page).
    pub fn create_job_by(&self, job: &ExportJob, actor: &str) -> Result<Value, Error> {
        if let Some(mut existing) = self.load::<JobRecord>("jobs", &job.job_id)? {
            // A failed job ordered again runs again (its footage is still held, and a
            // finished export or acknowledged upload parts are reused).
            if existing.status == "FAILED" {
                existing.reason = None;
                if job.upload_urls.is_some() {
                    existing.job.upload_urls = job.upload_urls.clone();
                }
                self.update(&mut existing, "QUEUED", 0.0);
                self.audit(
                    actor,
                    "export.retry",
                    &existing.id,
                    Value::Null,
                    json!(existing),
                );
                self.enqueue(&existing.id);
                return Ok(json!({ "duplicate": false, "retry": true, "job": existing }));
            }
            return Ok(json!({ "duplicate": true, "job": existing }));
        }
        if let Some(f) = &job.filter {
            veil_evidence::export::parse_filter(f)?;
        }
        // An incident's sequences hold their own footage while the project exists; the
        // export holds each while it runs.
        if job.incident.is_none() {
            self.check_footage(&job.cameras, job.from_ms, job.to_ms)?;
            self.hold(
                &job.job_id,
                &job.cameras,
                job.from_ms,
                job.to_ms,
                &format!("export job {}", job.job_id),
            )?;
        }
        let record = JobRecord {
            id: job.job_id.clone(),
            request_id: None,
            job: job.clone(),
            status: "QUEUED".into(),
            progress: 0.0,
            reason: None,
            export_dir: None,
            result: None,
            updated: now(),
        };
        self.save("jobs", &record.id, &record)?;
        self.audit(
            actor,
            "export.create",
            &record.id,
            Value::Null,
            json!(record),
        );
        self.job_event(&record);
        self.enqueue(&record.id);
        Ok(json!({ "duplicate": false, "job": record }))
    }

    pub fn cancel_job(&self, id: &str) -> Result<Value, Error> {
        let mut job: JobRecord = self
            .load("jobs", id)?
            .ok_or_else(|| Error::not_found(format!("no export job '{id}'")))?;
        if job.terminal() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("export job '{id}' is already {}", job.status),
            ));
        }
        self.canceled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .store(true, Ordering::SeqCst);
        if job.status == "QUEUED" {
            job.status = "CANCELED".into();
            job.updated = now();
            self.save("jobs", id, &job)?;
            self.release_job_holds(&job);
            self.job_event(&job);
        }
        Ok(json!({ "job": job }))
    }

    fn enqueue(&self, id: &str) {
        if let Some(tx) = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(id.to_string());
        }
    }

    fn job_event(&self, job: &JobRecord) {
        self.event(json!({
            "type": "job.status",
            "job_id": job.id,
            "request_id": job.request_id,
            "status": job.status,
            "progress": job.progress,
            "reason": job.reason,
            "result": job.result,
        }));
    }

    fn release_job_holds(&self, job: &JobRecord) {
        let owner = match &job.request_id {
            Some(r) => format!("request-{r}"),
            None => job.id.clone(),
        };
        self.release(&owner, &job.job.cameras);
    }

    fn update(&self, job: &mut JobRecord, status: &str, progress: f64) {
        job.status = status.into();
        job.progress = progress;
        job.updated = now();
        if let Err(e) = self.save("jobs", &job.id.clone(), job) {
            tracing::error!(error = %e, job = %job.id, "cannot save a job");
        }
        self.job_event(job);
    }

    fn run_job(&self, id: &str, runner: &ExportRunner) {
        let Ok(Some(mut job)) = self.load::<JobRecord>("jobs", id) else {
            return;
        };
        if job.terminal() {
            return;
        }
        let flag = self
            .canceled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone();
        let out = self.exports_dir.join(id);
        job.export_dir = Some(out.display().to_string());
        self.update(&mut job, "IN_PROGRESS", 0.0);
        let started = std::time::Instant::now();
        tracing::info!(job = %job.id, cameras = ?job.job.cameras, "export job started");
        // Progress events at most every 10 %.
        let reported = Mutex::new(0.0f64);
        let progress = |p: f64| {
            let mut last = reported.lock().unwrap_or_else(|e| e.into_inner());
            if p - *last >= 0.1 && p < 1.0 {
                *last = p;
                let mut update = job.clone();
                update.progress = (p * 100.0).round() / 100.0;
                update.updated = now();
                let _ = self.save("jobs", id, &update);
                self.job_event(&update);
            }
        };
        let outcome = runner(&job.job, &out, &progress, &flag);
        if flag.load(Ordering::SeqCst) {
            let _ = std::fs::remove_dir_all(&out);
            job.reason = Some("canceled".into());
            // Where it stopped: the last step reported.
            let progress = *reported.lock().unwrap_or_else(|e| e.into_inner());
            self.update(&mut job, "CANCELED", (progress * 100.0).round() / 100.0);
            tracing::info!(job = %job.id, "export job canceled");
            self.release_job_holds(&job);
            return;
        }
        match outcome {
            Ok(result) => {
                job.result = Some(result);
                self.update(&mut job, "SUCCEEDED", 1.0);
                tracing::info!(job = %job.id, seconds = started.elapsed().as_secs_f64(), "export job succeeded");
                self.release_job_holds(&job);
                self.audit("device", "job.succeeded", id, Value::Null, json!(job));
            }
            Err(e) => {
                // The footage stays held and the export (if finished) stays: ordering the job
                // again resumes where it stopped.
                job.reason = Some(e.to_string());
                let progress = job.progress;
                self.update(&mut job, "FAILED", progress);
                tracing::warn!(job = %job.id, reason = %e, "export job failed");
                self.audit("device", "job.failed", id, Value::Null, json!(job));
            }
        }
    }
}
