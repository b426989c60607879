//! The request desk's rules, without I/O: video requests from investigators and export jobs.
//!
//! A request holds its footage from the moment it arrives; the owner approves or declines it
//! (or the device policy approves it at once); an approved request becomes an export job. Jobs
//! have AWS IoT Jobs-style states (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELED, REJECTED).
//! Every step is an event and an audit entry.
//!
//! In the style of `veil_core::live::LiveDesk`: inputs come with the time, what must happen
//! outside (save a record, hold or release footage, audit, publish, run or stop a job) is
//! polled as [`DeskOutput`]s, in the order it must happen. What the store knows (which cameras
//! have footage in a range) comes in as an argument. The adapter that keeps the records in
//! SQLite rebuilds the desk from them when applying its outputs fails.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use veil_core::{Error, ErrorKind};
use veil_uplink::command::{ExportJob, VideoRequest, rfc3339};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub fn terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "SUCCEEDED" | "FAILED" | "CANCELED" | "REJECTED"
        )
    }

    /// Whose hold keeps the job's footage: its request's, or its own.
    fn hold_owner(&self) -> String {
        match &self.request_id {
            Some(r) => format!("request-{r}"),
            None => self.id.clone(),
        }
    }
}

/// What the desk needs done, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum DeskOutput {
    /// Hold `cameras` over the range under `owner`'s name, so retention keeps the footage.
    Hold {
        owner: String,
        cameras: Vec<String>,
        from_ms: i64,
        to_ms: i64,
        reason: String,
    },
    /// The holds of `owner` on `cameras` are no longer needed.
    Release {
        owner: String,
        cameras: Vec<String>,
    },
    /// Keep this record (insert, or replace the one with its id).
    SaveRequest(RequestRecord),
    SaveJob(JobRecord),
    Audit {
        actor: String,
        action: &'static str,
        subject: String,
        before: Value,
        after: Value,
    },
    /// An event for the fleet (its `time` set).
    Event(Value),
    /// Queue this job on the job runner.
    Run(String),
    /// Stop this job between two frames (it was canceled while it runs).
    Stop(String),
}

/// How a job the runner ran ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Succeeded(Value),
    Failed(String),
    /// Stopped after a cancel; the export directory is gone.
    Canceled,
}

pub struct RequestDesk {
    requests: BTreeMap<String, (u64, RequestRecord)>,
    jobs: BTreeMap<String, (u64, JobRecord)>,
    /// Bumped on every save: lists show the most recently saved first.
    saves: u64,
    cameras: Vec<String>,
    auto_approve: bool,
    /// Progress last reported per running job (events at most every 10 %).
    reported: BTreeMap<String, f64>,
    outputs: VecDeque<DeskOutput>,
}

impl RequestDesk {
    /// The desk over the kept records (oldest saved first); jobs a restart interrupted are
    /// queued again.
    pub fn restore(
        requests: Vec<RequestRecord>,
        jobs: Vec<JobRecord>,
        cameras: Vec<String>,
        auto_approve: bool,
    ) -> RequestDesk {
        let mut desk = RequestDesk {
            requests: BTreeMap::new(),
            jobs: BTreeMap::new(),
            saves: 0,
            cameras,
            auto_approve,
            reported: BTreeMap::new(),
            outputs: VecDeque::new(),
        };
        let interrupted: Vec<DeskOutput> = jobs
            .iter()
            .filter(|j| !j.terminal())
            .map(|j| DeskOutput::Run(j.id.clone()))
            .collect();
        desk.reload(requests, jobs);
        desk.outputs.extend(interrupted);
        desk
    }

    /// Replaces the records with the kept ones (oldest saved first), dropping what was not
    /// yet carried out: for the adapter, when carrying out an output failed. The cameras, the
    /// policy and running jobs' progress stay; nothing is queued again.
    pub fn reload(&mut self, requests: Vec<RequestRecord>, jobs: Vec<JobRecord>) {
        self.outputs.clear();
        self.requests.clear();
        self.jobs.clear();
        for r in requests {
            self.saves += 1;
            self.requests.insert(r.request.id.clone(), (self.saves, r));
        }
        for j in jobs {
            self.saves += 1;
            self.jobs.insert(j.id.clone(), (self.saves, j));
        }
    }

    /// The next thing to do outside, in order.
    pub fn poll(&mut self) -> Option<DeskOutput> {
        self.outputs.pop_front()
    }

    /// The cameras requests may name (changed when cameras are added or removed).
    pub fn set_cameras(&mut self, cameras: Vec<String>) {
        self.cameras = cameras;
    }

    pub fn job(&self, id: &str) -> Option<&JobRecord> {
        self.jobs.get(id).map(|(_, j)| j)
    }

    /// Every job, the most recently changed first.
    pub fn jobs(&self) -> Vec<JobRecord> {
        newest_first(&self.jobs)
    }

    /// Why the newest finished job failed, if it did.
    pub fn last_failure(&self) -> Option<String> {
        let jobs = self.jobs();
        let newest = jobs.iter().find(|j| j.terminal())?;
        (newest.status == "FAILED").then(|| newest.reason.clone().unwrap_or_default())
    }

    pub fn list(&self) -> Value {
        json!({ "requests": newest_first(&self.requests), "jobs": self.jobs() })
    }

    /// Where a finished job's export is.
    pub fn export_dir(&self, id: &str) -> Result<String, Error> {
        let job = self
            .job(id)
            .ok_or_else(|| Error::not_found(format!("no export job '{id}'")))?;
        match (job.status.as_str(), &job.export_dir) {
            ("SUCCEEDED", Some(dir)) => Ok(dir.clone()),
            (status, _) => Err(Error::new(
                ErrorKind::Conflict,
                format!("export job '{id}' is {status}: its files are not ready"),
            )),
        }
    }

    /// Checks that every camera exists here and has footage in the range (`covered`: the
    /// cameras the store has footage of there).
    pub fn check_footage(
        &self,
        cameras: &[String],
        from_ms: i64,
        to_ms: i64,
        covered: &BTreeSet<String>,
    ) -> Result<(), Error> {
        for camera in cameras {
            if !self.cameras.contains(camera) {
                return Err(Error::not_found(format!(
                    "no camera '{camera}' on this device"
                )));
            }
            if !covered.contains(camera) {
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
    pub fn create_request(
        &mut self,
        request: &VideoRequest,
        covered: &BTreeSet<String>,
        now_ms: i64,
    ) -> Result<Value, Error> {
        if let Some((_, existing)) = self.requests.get(&request.id) {
            if existing.request != *request {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("request '{}' exists with other contents", request.id),
                ));
            }
            return Ok(json!({ "duplicate": true, "request": existing }));
        }
        self.check_footage(&request.cameras, request.from_ms, request.to_ms, covered)?;
        self.out(DeskOutput::Hold {
            owner: format!("request-{}", request.id),
            cameras: request.cameras.clone(),
            from_ms: request.from_ms,
            to_ms: request.to_ms,
            reason: format!("video request {} ({})", request.id, request.reason),
        });
        let record = RequestRecord {
            request: request.clone(),
            status: "pending".into(),
            received: rfc3339(now_ms),
            decided_by: None,
            decision_reason: None,
            job_id: None,
        };
        self.save_request(&record);
        self.audit(
            &request.requester.name,
            "request.create",
            &request.id,
            Value::Null,
            json!(record),
        );
        self.event(
            json!({ "type": "request.received", "request": record }),
            now_ms,
        );
        if self.auto_approve {
            return self.decide(
                &request.id,
                true,
                None,
                Some("policy: auto_approve"),
                now_ms,
            );
        }
        Ok(json!({ "duplicate": false, "request": record }))
    }

    /// The owner's decision; an approval queues the export job.
    pub fn decide(
        &mut self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        by: Option<&str>,
        now_ms: i64,
    ) -> Result<Value, Error> {
        let mut record = self.request(id)?;
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
        let r = record.request.clone();
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
                updated: rfc3339(now_ms),
            };
            self.save_job(&job);
            self.save_request(&record);
            self.audit(&by, "request.approve", id, before, json!(record));
            self.event(
                json!({ "type": "request.approved", "request": record }),
                now_ms,
            );
            self.job_event(&job, now_ms);
            self.out(DeskOutput::Run(job_id));
        } else {
            record.status = "declined".into();
            self.save_request(&record);
            self.out(DeskOutput::Release {
                owner: format!("request-{id}"),
                cameras: r.cameras.clone(),
            });
            self.audit(&by, "request.decline", id, before, json!(record));
            self.event(
                json!({ "type": "request.declined", "request": record }),
                now_ms,
            );
        }
        Ok(json!({ "request": record }))
    }

    /// Withdraws a request: a pending one is closed, an approved one's job canceled.
    pub fn cancel_request(
        &mut self,
        id: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Value, Error> {
        let mut record = self.request(id)?;
        let before = json!(record);
        match record.status.as_str() {
            "pending" => self.out(DeskOutput::Release {
                owner: format!("request-{id}"),
                cameras: record.request.cameras.clone(),
            }),
            "approved" => {
                if let Some(job) = &record.job_id {
                    self.cancel_job(job, now_ms)?;
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
        self.save_request(&record);
        self.audit("fleet", "request.cancel", id, before, json!(record));
        self.event(
            json!({ "type": "request.canceled", "request": record }),
            now_ms,
        );
        Ok(json!({ "request": record }))
    }

    /// An export job ordered by `actor` (the fleet, or a user on the page); its filter, if it
    /// names one, must be a preset.
    pub fn create_job(
        &mut self,
        job: &ExportJob,
        actor: &str,
        covered: &BTreeSet<String>,
        now_ms: i64,
    ) -> Result<Value, Error> {
        if let Some((_, existing)) = self.jobs.get(&job.job_id) {
            let mut existing = existing.clone();
            // A failed job ordered again runs again (its footage is still held, and a
            // finished export or acknowledged upload parts are reused).
            if existing.status == "FAILED" {
                existing.reason = None;
                if job.upload_urls.is_some() {
                    existing.job.upload_urls = job.upload_urls.clone();
                }
                self.update(&mut existing, "QUEUED", 0.0, now_ms);
                self.audit(
                    actor,
                    "export.retry",
                    &existing.id,
                    Value::Null,
                    json!(existing),
                );
                self.out(DeskOutput::Run(existing.id.clone()));
                return Ok(json!({ "duplicate": false, "retry": true, "job": existing }));
            }
            return Ok(json!({ "duplicate": true, "job": existing }));
        }
        if let Some(f) = &job.filter {
            crate::export::parse_filter(f)?;
        }
        // An incident's sequences hold their own footage while the project exists; the
        // export holds each while it runs.
        if job.incident.is_none() {
            self.check_footage(&job.cameras, job.from_ms, job.to_ms, covered)?;
            self.out(DeskOutput::Hold {
                owner: job.job_id.clone(),
                cameras: job.cameras.clone(),
                from_ms: job.from_ms,
                to_ms: job.to_ms,
                reason: format!("export job {}", job.job_id),
            });
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
            updated: rfc3339(now_ms),
        };
        self.save_job(&record);
        self.audit(
            actor,
            "export.create",
            &record.id,
            Value::Null,
            json!(record),
        );
        self.job_event(&record, now_ms);
        self.out(DeskOutput::Run(record.id.clone()));
        Ok(json!({ "duplicate": false, "job": record }))
    }

    /// Cancels a job: a queued one at once, a running one once it stops (see [`job_ended`]).
    ///
    /// [`job_ended`]: RequestDesk::job_ended
    pub fn cancel_job(&mut self, id: &str, now_ms: i64) -> Result<Value, Error> {
        let mut job = self
            .job(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no export job '{id}'")))?;
        if job.terminal() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("export job '{id}' is already {}", job.status),
            ));
        }
        self.out(DeskOutput::Stop(id.to_string()));
        if job.status == "QUEUED" {
            job.status = "CANCELED".into();
            job.updated = rfc3339(now_ms);
            self.save_job(&job);
            self.release_holds(&job);
            self.job_event(&job, now_ms);
        }
        Ok(json!({ "job": job }))
    }

    /// The runner takes up a queued job, exporting into `export_dir`; `None` when there is
    /// nothing to run (unknown, or it ended meanwhile).
    pub fn job_started(&mut self, id: &str, export_dir: &str, now_ms: i64) -> Option<JobRecord> {
        let mut job = self.job(id).filter(|j| !j.terminal())?.clone();
        job.export_dir = Some(export_dir.to_string());
        self.reported.insert(id.to_string(), 0.0);
        self.update(&mut job, "IN_PROGRESS", 0.0, now_ms);
        Some(job)
    }

    /// How far a running job is (0 to 1): reported at most every 10 %.
    pub fn job_progress(&mut self, id: &str, progress: f64, now_ms: i64) {
        let Some(last) = self.reported.get_mut(id) else {
            return;
        };
        if progress - *last < 0.1 || progress >= 1.0 {
            return;
        }
        *last = progress;
        let Some(mut job) = self.job(id).cloned() else {
            return;
        };
        job.progress = (progress * 100.0).round() / 100.0;
        job.updated = rfc3339(now_ms);
        self.save_job(&job);
        self.job_event(&job, now_ms);
    }

    /// A running job ended. A failed one keeps its footage held and its export: ordering it
    /// again resumes where it stopped.
    pub fn job_ended(&mut self, id: &str, outcome: JobOutcome, now_ms: i64) {
        let reported = self.reported.remove(id).unwrap_or(0.0);
        let Some(mut job) = self.job(id).cloned() else {
            return;
        };
        match outcome {
            JobOutcome::Canceled => {
                job.reason = Some("canceled".into());
                // Where it stopped: the last step reported.
                self.update(
                    &mut job,
                    "CANCELED",
                    (reported * 100.0).round() / 100.0,
                    now_ms,
                );
                self.release_holds(&job);
            }
            JobOutcome::Succeeded(result) => {
                job.result = Some(result);
                self.update(&mut job, "SUCCEEDED", 1.0, now_ms);
                self.release_holds(&job);
                self.audit("device", "job.succeeded", id, Value::Null, json!(job));
            }
            JobOutcome::Failed(reason) => {
                job.reason = Some(reason);
                let progress = job.progress;
                self.update(&mut job, "FAILED", progress, now_ms);
                self.audit("device", "job.failed", id, Value::Null, json!(job));
            }
        }
    }

    fn request(&self, id: &str) -> Result<RequestRecord, Error> {
        self.requests
            .get(id)
            .map(|(_, r)| r.clone())
            .ok_or_else(|| Error::not_found(format!("no video request '{id}'")))
    }

    fn out(&mut self, output: DeskOutput) {
        self.outputs.push_back(output);
    }

    fn save_request(&mut self, record: &RequestRecord) {
        self.saves += 1;
        self.requests
            .insert(record.request.id.clone(), (self.saves, record.clone()));
        self.out(DeskOutput::SaveRequest(record.clone()));
    }

    fn save_job(&mut self, job: &JobRecord) {
        self.saves += 1;
        self.jobs.insert(job.id.clone(), (self.saves, job.clone()));
        self.out(DeskOutput::SaveJob(job.clone()));
    }

    fn update(&mut self, job: &mut JobRecord, status: &str, progress: f64, now_ms: i64) {
        job.status = status.into();
        job.progress = progress;
        job.updated = rfc3339(now_ms);
        self.save_job(job);
        self.job_event(job, now_ms);
    }

    fn release_holds(&mut self, job: &JobRecord) {
        self.out(DeskOutput::Release {
            owner: job.hold_owner(),
            cameras: job.job.cameras.clone(),
        });
    }

    fn audit(
        &mut self,
        actor: &str,
        action: &'static str,
        subject: &str,
        before: Value,
        after: Value,
    ) {
        self.out(DeskOutput::Audit {
            actor: actor.to_string(),
            action,
            subject: subject.to_string(),
            before,
            after,
        });
    }

    fn event(&mut self, mut event: Value, now_ms: i64) {
        event["time"] = json!(rfc3339(now_ms));
        self.out(DeskOutput::Event(event));
    }

    fn job_event(&mut self, job: &JobRecord, now_ms: i64) {
        self.event(
            json!({
                "type": "job.status",
                "job_id": job.id,
                "request_id": job.request_id,
                "status": job.status,
                "progress": job.progress,
                "reason": job.reason,
                "result": job.result,
            }),
            now_ms,
        );
    }
}

fn newest_first<T: Clone>(records: &BTreeMap<String, (u64, T)>) -> Vec<T> {
    let mut all: Vec<&(u64, T)> = records.values().collect();
    all.sort_by_key(|r| std::cmp::Reverse(r.0));
    all.into_iter().map(|(_, r)| r.clone()).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use veil_uplink::command::{CaseRef, Requester};

    use super::*;

    const T0: i64 = 1_760_000_000_000;

    fn request(id: &str, cameras: &[&str]) -> VideoRequest {
        VideoRequest {
            id: id.into(),
            requester: Requester {
                name: "Officer Dibble".into(),
                organisation: None,
            },
            case: CaseRef {
                kind: "none".into(),
                reference: None,
            },
            cameras: cameras.iter().map(|c| c.to_string()).collect(),
            from_ms: T0 - 600_000,
            to_ms: T0 - 60_000,
            reason: "theft".into(),
        }
    }

    fn job(id: &str) -> ExportJob {
        ExportJob {
            job_id: id.into(),
            cameras: vec!["gate".into()],
            from_ms: T0 - 600_000,
            to_ms: T0 - 60_000,
            name: None,
            description: None,
            filter: None,
            upload_urls: None,
            incident: None,
        }
    }

    fn desk(auto_approve: bool) -> RequestDesk {
        RequestDesk::restore(
            Vec::new(),
            Vec::new(),
            vec!["gate".into(), "yard".into()],
            auto_approve,
        )
    }

    fn covered(cameras: &[&str]) -> BTreeSet<String> {
        cameras.iter().map(|c| c.to_string()).collect()
    }

    fn drain(d: &mut RequestDesk) -> Vec<DeskOutput> {
        std::iter::from_fn(|| d.poll()).collect()
    }

    fn kinds(outputs: &[DeskOutput]) -> Vec<String> {
        outputs
            .iter()
            .map(|o| match o {
                DeskOutput::Hold { owner, .. } => format!("hold {owner}"),
                DeskOutput::Release { owner, .. } => format!("release {owner}"),
                DeskOutput::SaveRequest(r) => format!("save request {}", r.status),
                DeskOutput::SaveJob(j) => format!("save job {}", j.status),
                DeskOutput::Audit { action, .. } => format!("audit {action}"),
                DeskOutput::Event(e) => format!("event {}", e["type"].as_str().unwrap()),
                DeskOutput::Run(id) => format!("run {id}"),
                DeskOutput::Stop(id) => format!("stop {id}"),
            })
            .collect()
    }

    #[test]
    fn a_request_holds_its_footage_until_its_export_succeeds() {
        let mut d = desk(false);
        d.create_request(&request("r1", &["gate"]), &covered(&["gate"]), T0)
            .unwrap();
        assert_eq!(
            kinds(&drain(&mut d)),
            [
                "hold request-r1",
                "save request pending",
                "audit request.create",
                "event request.received"
            ]
        );
        d.decide("r1", true, None, Some("owner"), T0 + 1000)
            .unwrap();
        assert_eq!(
            kinds(&drain(&mut d)),
            [
                "save job QUEUED",
                "save request approved",
                "audit request.approve",
                "event request.approved",
                "event job.status",
                "run job-r1"
            ]
        );
        let started = d
            .job_started("job-r1", "/data/exports/job-r1", T0 + 2000)
            .unwrap();
        assert_eq!(started.status, "IN_PROGRESS");
        assert_eq!(
            kinds(&drain(&mut d)),
            ["save job IN_PROGRESS", "event job.status"]
        );
        // Progress goes out at most every 10 %.
        d.job_progress("job-r1", 0.05, T0 + 3000);
        assert!(drain(&mut d).is_empty());
        d.job_progress("job-r1", 0.15, T0 + 4000);
        assert_eq!(
            kinds(&drain(&mut d)),
            ["save job IN_PROGRESS", "event job.status"]
        );
        d.job_ended(
            "job-r1",
            JobOutcome::Succeeded(json!({"files": 1})),
            T0 + 5000,
        );
        assert_eq!(
            kinds(&drain(&mut d)),
            [
                "save job SUCCEEDED",
                "event job.status",
                "release request-r1",
                "audit job.succeeded"
            ]
        );
        assert_eq!(d.export_dir("job-r1").unwrap(), "/data/exports/job-r1");
        // Times are the inputs' own.
        assert_eq!(d.job("job-r1").unwrap().updated, rfc3339(T0 + 5000));
        assert_eq!(d.last_failure(), None);
    }

    #[test]
    fn unknown_cameras_and_missing_footage_are_refused_with_their_names() {
        let mut d = desk(false);
        let e = d
            .create_request(&request("r1", &["roof"]), &covered(&["roof"]), T0)
            .unwrap_err();
        assert_eq!(e.to_string(), "no camera 'roof' on this device");
        let e = d
            .create_request(&request("r1", &["gate", "yard"]), &covered(&["gate"]), T0)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no footage of camera 'yard' between "),
            "{e}"
        );
        assert!(
            drain(&mut d).is_empty(),
            "a refused request changes nothing"
        );
    }

    #[test]
    fn the_same_request_twice_is_one_and_a_changed_one_a_conflict() {
        let mut d = desk(false);
        let r = request("r1", &["gate"]);
        d.create_request(&r, &covered(&["gate"]), T0).unwrap();
        drain(&mut d);
        let again = d.create_request(&r, &covered(&["gate"]), T0 + 1).unwrap();
        assert_eq!(again["duplicate"], true);
        let mut changed = r.clone();
        changed.reason = "another".into();
        let e = d
            .create_request(&changed, &covered(&["gate"]), T0 + 2)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(drain(&mut d).is_empty());
    }

    #[test]
    fn the_device_policy_approves_at_once() {
        let mut d = desk(true);
        let answer = d
            .create_request(&request("r1", &["gate"]), &covered(&["gate"]), T0)
            .unwrap();
        assert_eq!(answer["request"]["status"], "approved");
        assert_eq!(answer["request"]["decided_by"], "policy: auto_approve");
        assert!(kinds(&drain(&mut d)).contains(&"run job-r1".to_string()));
    }

    #[test]
    fn a_queued_job_canceled_ends_at_once_and_a_failed_one_runs_again() {
        let mut d = desk(false);
        d.create_job(&job("j1"), "fleet", &covered(&["gate"]), T0)
            .unwrap();
        drain(&mut d);
        d.cancel_job("j1", T0 + 1).unwrap();
        assert_eq!(
            kinds(&drain(&mut d)),
            [
                "stop j1",
                "save job CANCELED",
                "release j1",
                "event job.status"
            ]
        );
        assert_eq!(
            d.cancel_job("j1", T0 + 2).unwrap_err().kind(),
            ErrorKind::Conflict
        );
        assert!(
            d.job_started("j1", "/x", T0 + 3).is_none(),
            "a canceled job never runs"
        );

        d.create_job(&job("j2"), "fleet", &covered(&["gate"]), T0)
            .unwrap();
        d.job_started("j2", "/x/j2", T0 + 4).unwrap();
        d.job_ended("j2", JobOutcome::Failed("upload refused".into()), T0 + 5);
        drain(&mut d);
        assert_eq!(d.last_failure().as_deref(), Some("upload refused"));
        let retry = d
            .create_job(&job("j2"), "fleet", &covered(&[]), T0 + 6)
            .unwrap();
        assert_eq!(retry["retry"], true);
        assert_eq!(
            kinds(&drain(&mut d)),
            [
                "save job QUEUED",
                "event job.status",
                "audit export.retry",
                "run j2"
            ],
            "the footage is still held: no new hold"
        );
    }

    #[test]
    fn a_restart_queues_the_jobs_it_interrupted() {
        let mut d = desk(false);
        d.create_job(&job("j1"), "fleet", &covered(&["gate"]), T0)
            .unwrap();
        d.create_job(&job("j2"), "fleet", &covered(&["gate"]), T0)
            .unwrap();
        d.job_started("j1", "/x/j1", T0).unwrap();
        d.job_ended("j1", JobOutcome::Succeeded(json!({})), T0);
        d.job_started("j2", "/x/j2", T0).unwrap();
        let kept: Vec<JobRecord> = d.jobs().into_iter().rev().collect();
        let mut again = RequestDesk::restore(Vec::new(), kept, vec!["gate".into()], false);
        assert_eq!(kinds(&drain(&mut again)), ["run j2"]);
        assert_eq!(again.jobs()[0].id, "j2", "the most recently saved first");
    }

    #[test]
    fn a_desk_reloaded_after_a_failure_believes_only_what_was_kept() {
        let mut d = desk(false);
        d.create_request(&request("r1", &["gate"]), &covered(&["gate"]), T0)
            .unwrap();
        drain(&mut d);
        let kept: Vec<RequestRecord> =
            serde_json::from_value(d.list()["requests"].clone()).unwrap();
        // r2's hold fails outside: its outputs are dropped and the desk reloaded.
        d.create_request(&request("r2", &["yard"]), &covered(&["yard"]), T0 + 1)
            .unwrap();
        d.reload(kept, Vec::new());
        assert!(d.poll().is_none(), "nothing of r2 is carried out");
        assert_eq!(d.list()["requests"].as_array().unwrap().len(), 1);
        assert_eq!(
            d.decide("r2", true, None, None, T0 + 2).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // The cameras stay: r2 can be sent again.
        d.create_request(&request("r2", &["yard"]), &covered(&["yard"]), T0 + 3)
            .unwrap();
    }

    #[derive(Debug, Clone)]
    enum Step {
        Request(u8),
        Decide(u8, bool),
        CancelRequest(u8),
        Job(u8),
        CancelJob(u8),
        Run(u8, u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..4u8).prop_map(Step::Request),
            (0..4u8, any::<bool>()).prop_map(|(i, a)| Step::Decide(i, a)),
            (0..4u8).prop_map(Step::CancelRequest),
            (0..4u8).prop_map(Step::Job),
            (0..8u8).prop_map(Step::CancelJob),
            (0..8u8, 0..3u8).prop_map(|(i, o)| Step::Run(i, o)),
        ]
    }

    fn job_id(i: u8) -> String {
        if i < 4 {
            format!("job-r{i}")
        } else {
            format!("j{}", i - 4)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: veil_faults::proptest_cases(256),
            ..ProptestConfig::default()
        })]

        /// Whatever the order of requests, decisions, cancels and job runs: footage is held
        /// exactly while something still needs it (a pending request, or a job not yet
        /// succeeded or canceled; a failed job keeps it for its retry), a job runs only when
        /// queued, and terminal states never change but by a retry of a failed job.
        #[test]
        fn footage_is_held_exactly_while_it_is_needed(steps in proptest::collection::vec(step(), 1..40)) {
            let mut d = desk(false);
            let mut held: BTreeMap<String, i32> = BTreeMap::new();
            let mut queued: BTreeSet<String> = BTreeSet::new();
            let mut now = T0;
            for s in steps {
                now += 1000;
                match s {
                    Step::Request(i) => {
                        let _ = d.create_request(&request(&format!("r{i}"), &["gate"]), &covered(&["gate"]), now);
                    }
                    Step::Decide(i, approve) => {
                        let _ = d.decide(&format!("r{i}"), approve, None, None, now);
                    }
                    Step::CancelRequest(i) => {
                        let _ = d.cancel_request(&format!("r{i}"), None, now);
                    }
                    Step::Job(i) => {
                        let _ = d.create_job(&job(&format!("j{i}")), "fleet", &covered(&["gate"]), now);
                    }
                    Step::CancelJob(i) => {
                        let _ = d.cancel_job(&job_id(i), now);
                    }
                    Step::Run(i, outcome) => {
                        let id = job_id(i);
                        let status = d.job(&id).map(|j| j.status.clone());
                        let started = d.job_started(&id, "/x", now);
                        prop_assert_eq!(started.is_some(), matches!(status.as_deref(), Some("QUEUED" | "IN_PROGRESS")));
                        if started.is_some() {
                            let outcome = match outcome {
                                0 => JobOutcome::Succeeded(json!({})),
                                1 => JobOutcome::Failed("no".into()),
                                _ => JobOutcome::Canceled,
                            };
                            d.job_ended(&id, outcome, now);
                        }
                    }
                }
                for o in drain(&mut d) {
                    match o {
                        DeskOutput::Hold { owner, .. } => *held.entry(owner).or_default() += 1,
                        DeskOutput::Release { owner, .. } => *held.entry(owner).or_default() -= 1,
                        DeskOutput::Run(id) => { queued.insert(id); }
                        _ => {}
                    }
                }
                for (owner, n) in &held {
                    prop_assert!((0..=1).contains(n), "{} held {} times", owner, n);
                }
            }
            // What is held now is exactly what still needs its footage.
            let mut needed = BTreeSet::new();
            for r in d.list()["requests"].as_array().unwrap() {
                let id = r["id"].as_str().unwrap();
                let needs = match r["status"].as_str().unwrap() {
                    "pending" => true,
                    "approved" => {
                        let job = d.job(r["job_id"].as_str().unwrap()).unwrap();
                        !matches!(job.status.as_str(), "SUCCEEDED" | "CANCELED")
                    }
                    _ => false,
                };
                if needs {
                    needed.insert(format!("request-{id}"));
                }
            }
            for j in d.jobs().iter().filter(|j| j.request_id.is_none()) {
                if !matches!(j.status.as_str(), "SUCCEEDED" | "CANCELED") {
                    needed.insert(j.id.clone());
                }
            }
            let holding: BTreeSet<String> = held.into_iter().filter(|(_, n)| *n == 1).map(|(o, _)| o).collect();
            prop_assert_eq!(holding, needed);
        }
    }
}
