//! Firmware updates as the daemon carries them out: the update desk (`veil_core::ota`) with
//! a thread that downloads the bundle into `ota/` on the data partition, has RAUC check its
//! signature (`rauc info`, before anything is written) and install it into the other slot
//! (`rauc install`, through RAUC's D-Bus service), asks systemd for the restart, and after it
//! asks RAUC whether the new slot was confirmed. The job is kept in `state/ota.json`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use veil_core::ota::{Job, Order, OtaDesk, Output, Source, Status, Step};
use veil_core::{Clock, Error, ErrorKind};
use veil_uplink::session::EventSink;

/// How often a confirmation is asked for, and a due restart looked for.
const LOOK_EVERY: Duration = Duration::from_secs(5);

pub struct OtaService {
    desk: Mutex<OtaDesk>,
    wake: Condvar,
    dir: PathBuf,
    state_file: PathBuf,
    clock: Arc<dyn Clock>,
    audit: Arc<veil_store::audit::AuditLog>,
    upload: Arc<Mutex<Option<veil_core::config::UploadConfig>>>,
    /// Events wait here until the fleet session runs (the one after a reboot, say).
    events: Mutex<(Option<EventSink>, Vec<Value>)>,
    cancel: AtomicBool,
    /// Asks for the machine's restart (the daemon's, shared with the `reboot` command).
    reboot: Box<dyn Fn() -> Result<(), Error> + Send + Sync>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OtaService {
    /// Opens the kept job and starts the thread that carries it on.
    pub fn start(
        data_dir: &Path,
        running_version: &str,
        clock: Arc<dyn Clock>,
        audit: Arc<veil_store::audit::AuditLog>,
        upload: Arc<Mutex<Option<veil_core::config::UploadConfig>>>,
        reboot: Box<dyn Fn() -> Result<(), Error> + Send + Sync>,
    ) -> Result<Arc<OtaService>, Error> {
        let dir = data_dir.join("ota");
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::wrap(
                ErrorKind::Unavailable,
                format!("cannot create {}", dir.display()),
                e,
            )
        })?;
        let state_file = data_dir.join("state").join("ota.json");
        let kept: Option<Job> = match std::fs::read(&state_file) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(job) => Some(job),
                Err(e) => {
                    let aside = crate::statefile::set_aside(&state_file);
                    tracing::error!(error = %e, ?aside, "the update job's file is damaged; set aside");
                    None
                }
            },
            Err(_) => None,
        };
        let desk = OtaDesk::restore(
            kept,
            running_version,
            &boot_id(),
            clock.wall_millis() as i64,
        );
        let service = Arc::new(OtaService {
            desk: Mutex::new(desk),
            wake: Condvar::new(),
            dir,
            state_file,
            clock,
            audit,
            upload,
            events: Mutex::new((None, Vec::new())),
            cancel: AtomicBool::new(false),
            reboot,
        });
        std::thread::Builder::new()
            .name("ota".into())
            .spawn({
                let service = service.clone();
                move || service.run()
            })
            .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start the update thread", e))?;
        Ok(service)
    }

    fn now_ms(&self) -> i64 {
        self.clock.wall_millis() as i64
    }

    pub fn set_events(&self, sink: EventSink) {
        let mut events = lock(&self.events);
        for event in events.1.drain(..) {
            sink.send(&event);
        }
        events.0 = Some(sink);
    }

    pub fn install(&self, order: Order) -> Result<Value, Error> {
        let job = lock(&self.desk).order(order, self.now_ms());
        self.wake.notify_all();
        Ok(job_json(&job?))
    }

    /// Where the page puts an uploaded bundle before [`OtaService::install_uploaded`].
    pub fn upload_dir(&self) -> &Path {
        &self.dir
    }

    /// A bundle uploaded on the page (`file_name` in [`OtaService::upload_dir`]): its signature
    /// is checked at once (a refusal answers the upload), then it is installed like an order.
    pub fn install_uploaded(&self, file_name: &str, reboot: &str) -> Result<Value, Error> {
        let file = self.dir.join(file_name);
        let refused = |e: Error| {
            let _ = std::fs::remove_file(&file);
            e
        };
        let reboot = veil_core::ota::Reboot::parse(reboot).map_err(refused)?;
        let version = rauc_info(&file).map_err(refused)?;
        let now = self.now_ms();
        let order = Order {
            job_id: format!("upload-{}", now),
            version,
            source: Source::Local(file_name.to_string()),
            sha256: None,
            reboot,
        };
        let job = lock(&self.desk).order(order, now).map_err(refused);
        self.wake.notify_all();
        Ok(job_json(&job?))
    }

    pub fn cancel(&self, job_id: &str) -> Result<Value, Error> {
        let job = lock(&self.desk).cancel(job_id, self.now_ms());
        self.wake.notify_all();
        Ok(job_json(&job?))
    }

    /// The job running or last ended (null: none ever).
    pub fn status(&self) -> Value {
        lock(&self.desk).job().map(job_json).unwrap_or(Value::Null)
    }

    fn run(&self) {
        loop {
            let output = {
                let mut desk = lock(&self.desk);
                desk.tick(self.now_ms());
                match desk.poll() {
                    Some(o) => Some(o),
                    None => {
                        let confirming = desk.job().is_some_and(|j| {
                            !j.status.is_final() && j.step == Some(Step::Confirming)
                        });
                        drop(
                            self.wake
                                .wait_timeout(desk, LOOK_EVERY)
                                .unwrap_or_else(|e| e.into_inner()),
                        );
                        confirming.then_some(Output::CheckSlot)
                    }
                }
            };
            if let Some(output) = output {
                self.carry_out(output);
            }
        }
    }

    fn carry_out(&self, output: Output) {
        let now = || self.now_ms();
        match output {
            Output::Save(job) => {
                if let Err(e) = crate::statefile::save_json(&self.state_file, &job) {
                    tracing::error!(error = %e, "cannot keep the update job");
                }
            }
            Output::Report(job) => self.report(&job),
            Output::Download(order) => {
                self.cancel.store(false, Ordering::SeqCst);
                match self.download(&order) {
                    Ok(()) => lock(&self.desk).downloaded(now()),
                    Err(e) if e.message() == veil_uplink::download::CANCELED => {}
                    Err(e) => lock(&self.desk).failed(now(), &e.to_string()),
                }
            }
            Output::StopDownload => self.cancel.store(true, Ordering::SeqCst),
            Output::Verify => match rauc_info(&self.bundle()) {
                Ok(version) => lock(&self.desk).verified(now(), &version),
                Err(e) => lock(&self.desk).failed(now(), &e.to_string()),
            },
            Output::Install => {
                let result = rauc_install(&self.bundle(), &mut |fraction| {
                    lock(&self.desk).installing(now(), fraction)
                });
                match result {
                    Ok(()) => lock(&self.desk).installed(now(), &boot_id()),
                    Err(e) => lock(&self.desk).failed(now(), &e.to_string()),
                }
            }
            Output::Reboot => {
                tracing::warn!("restarting into the updated slot");
                if let Err(e) = (self.reboot)() {
                    lock(&self.desk).failed(now(), &format!("cannot restart the device: {e}"));
                }
            }
            Output::CheckSlot => match booted_slot_good() {
                Ok(good) => lock(&self.desk).slot_good(now(), good),
                Err(e) => tracing::warn!(error = %e, "cannot ask RAUC about the booted slot"),
            },
            Output::RemoveBundle => {
                let bundle = self.bundle();
                let _ = std::fs::remove_file(veil_uplink::download::part_path(&bundle));
                let _ = std::fs::remove_file(
                    veil_uplink::download::part_path(&bundle).with_extension("part.etag"),
                );
                let _ = std::fs::remove_file(bundle);
            }
        }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.join("update.raucb")
    }

    fn download(&self, order: &Order) -> Result<(), Error> {
        let bundle = self.bundle();
        if bundle.exists() {
            return Ok(()); // Downloaded (or uploaded) before a restart; verified again next.
        }
        let (origin, tls) = match &order.source {
            Source::Local(name) => {
                let local = self.dir.join(name);
                if local != bundle {
                    std::fs::rename(&local, &bundle).map_err(|e| {
                        Error::wrap(
                            ErrorKind::NotFound,
                            format!("the uploaded bundle {name}"),
                            e,
                        )
                    })?;
                }
                return Ok(());
            }
            Source::Url(url) => {
                let url = url
                    .parse()
                    .map_err(|e| Error::invalid_input(format!("bundle URL: {e}")))?;
                (veil_uplink::download::Origin::Url(url), None)
            }
            Source::S3Key(key) => {
                let Some(upload) = lock(&self.upload).clone() else {
                    return Err(Error::new(
                        ErrorKind::NotConfigured,
                        "the bundle is in the S3 bucket, but no [upload] target is configured \
                         (set it on the page's Fleet settings, or give a url)",
                    ));
                };
                veil_uplink::download::Origin::in_bucket(&upload, key)?
            }
        };
        veil_uplink::download::fetch(
            &origin,
            &bundle,
            order.sha256.as_deref(),
            veil_uplink::download::Settings::default(),
            tls,
            &mut |have, total| {
                lock(&self.desk).downloading(self.now_ms(), have, total);
                !self.cancel.load(Ordering::SeqCst)
            },
        )
        .map(|_| ())
    }

    fn report(&self, job: &Job) {
        let event = job_event(job, self.now_ms());
        if job.status.is_final() || job.step.is_none() || job.progress == 0.0 {
            let action = format!("ota.{}", job.status.as_str().to_ascii_lowercase());
            if let Err(e) = self.audit.append(
                "fleet",
                &action,
                &job.order.job_id,
                Value::Null,
                job_json(job),
            ) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
        match job.status {
            Status::Failed | Status::Rejected => {
                tracing::error!(job = %job.order.job_id, status = job.status.as_str(), reason = ?job.reason, "update job")
            }
            _ => {
                tracing::info!(job = %job.order.job_id, status = job.status.as_str(), step = ?job.step, progress = job.progress, "update job")
            }
        }
        let mut events = lock(&self.events);
        match &events.0 {
            Some(sink) => sink.send(&event),
            None => events.1.push(event),
        }
    }
}

/// The job as `ota.status` and the events show it.
pub fn job_json(job: &Job) -> Value {
    let (source, key) = match &job.order.source {
        Source::Url(u) => ("url", redact_query(u)),
        Source::S3Key(k) => ("s3_key", k.clone()),
        Source::Local(n) => ("uploaded", n.clone()),
    };
    json!({
        "job_id": job.order.job_id,
        "kind": "ota",
        "status": job.status.as_str(),
        "step": job.step.map(veil_core::ota::step_name),
        "progress": (job.progress * 100.0).round() / 100.0,
        "reason": job.reason,
        "version": job.order.version,
        "from_version": job.from_version,
        source: key,
        "reboot_at": job.reboot_at_ms.map(rfc3339),
        "created_at": rfc3339(job.created_ms),
        "updated_at": rfc3339(job.updated_ms),
    })
}

fn job_event(job: &Job, now_ms: i64) -> Value {
    let mut event = json!({
        "type": "job.status",
        "time": rfc3339(now_ms),
        "job_id": job.order.job_id,
        "request_id": null,
        "kind": "ota",
        "status": job.status.as_str(),
        "step": job.step.map(veil_core::ota::step_name),
        "progress": (job.progress * 100.0).round() / 100.0,
        "reason": job.reason,
        "result": null,
    });
    if job.status == Status::Succeeded {
        event["result"] = json!({ "version": job.order.version, "from_version": job.from_version });
    }
    event
}

/// A presigned URL's signature stays off the events and the audit log.
fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// This boot's id: a different one means the machine restarted.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn rauc(args: &[&str]) -> Result<String, Error> {
    let out = Command::new("rauc")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::wrap(
                ErrorKind::NotConfigured,
                "cannot run rauc (updates need RAUC, as in the firmware image)",
                e,
            )
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::invalid_input(rauc_error(&out.stderr, &out.stdout)))
    }
}

/// RAUC's own reason, without its log prefixes.
fn rauc_error(stderr: &[u8], stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let last = lines
        .iter()
        .rev()
        .find(|l| l.contains("rror") || l.contains("failed"))
        .or(lines.last())
        .copied()
        .unwrap_or("rauc failed without a message");
    format!("RAUC: {}", last.trim_start_matches("rauc-Message: "))
}

/// Checks the bundle's signature against the device's keyring; answers its version.
fn rauc_info(bundle: &Path) -> Result<String, Error> {
    let out = rauc(&[
        "info",
        "--output-format=json",
        &bundle.display().to_string(),
    ])
    .map_err(|e| {
        Error::invalid_input(format!(
            "the bundle was refused before anything was written: {}",
            e.message()
        ))
    })?;
    let info: Value = serde_json::from_str(out.trim())
        .map_err(|e| Error::internal(format!("rauc info answered no JSON: {e}")))?;
    info.get("version")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::invalid_input("the bundle's manifest names no version"))
}

/// Installs into the other slot, reporting RAUC's percentages as 0 to 1.
fn rauc_install(bundle: &Path, progress: &mut dyn FnMut(f64)) -> Result<(), Error> {
    let mut child = Command::new("rauc")
        .args(["install", &bundle.display().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::wrap(ErrorKind::NotConfigured, "cannot run rauc install", e))?;
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = std::io::Read::read_to_end(&mut e, &mut text);
            text
        })
    });
    let mut said = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(pct) = line
                .trim()
                .split('%')
                .next()
                .and_then(|p| p.trim().parse::<f64>().ok())
            {
                progress(pct / 100.0);
            }
            said.extend_from_slice(line.as_bytes());
            said.push(b'\n');
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::wrap(ErrorKind::Internal, "rauc install", e))?;
    let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "the install failed, the running slot is untouched: {}",
            rauc_error(&err, &said)
        )))
    }
}

/// Whether RAUC reports the booted slot as good.
fn booted_slot_good() -> Result<bool, Error> {
    let out = rauc(&["status", "--detailed", "--output-format=json"])?;
    let status: Value = serde_json::from_str(out.trim())
        .map_err(|e| Error::internal(format!("rauc status answered no JSON: {e}")))?;
    let booted = status.get("booted").and_then(Value::as_str).unwrap_or("");
    let good = status
        .get("slots")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|m| m.values())
        .any(|slot| {
            slot.get("bootname").and_then(Value::as_str) == Some(booted)
                && slot.get("boot_status").and_then(Value::as_str) == Some("good")
        });
    Ok(good)
}
