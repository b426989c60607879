//! `veild run`: composes the parts, serves until SIGTERM/SIGINT, then stops in order.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veil_core::board::{BoardProfile, EncoderProfile};
use veil_core::config::{CameraConfig, FilterName, RtspTransport, SourceConfig, StoragePolicy};
use veil_core::{Clock, Error, ErrorKind, SystemClock};
use veil_media::file::{FileOptions, FileSource};
use veil_media::rtsp::{RtspOptions, RtspSource};
use veil_media::source::Source;
use veil_media::v4l2::{V4l2Options, V4l2Source};
use veil_web::{DeviceInfo, DeviceView, FeatureState, Features, StatusResponse};

use crate::camera::{
    Camera, CameraParts, CameraSpec, RetryPolicy, SourceFactory, synthetic_factory,
};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::systemd;
use veil_media::pipeline::{PrivacyStage, openh264_factory, v4l2m2m_factory};
use veil_privacy::{DetectionSetup, Engine, EngineConfig, FailSafePolicy, Filter, Style};

/// How long open HTTP connections get to finish after a stop signal.
const HTTP_DRAIN: Duration = Duration::from_secs(5);
/// An RTSP camera that sends nothing for this long is reconnected.
const RTSP_STALL: Duration = Duration::from_secs(10);
/// A camera thread silent for longer than this stops the systemd watchdog pings.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// The data directory: one root, one folder per kind of data, and a lock so two daemons
/// never write the same footage.
pub struct DataDir {
    pub root: PathBuf,
    _lock: File,
}

/// Sub-folders of the data directory, created at start.
pub const DATA_SUBDIRS: &[&str] = &["state", "footage", "exports", "tmp"];

impl DataDir {
    pub fn open(root: &Path) -> Result<DataDir, Error> {
        for sub in DATA_SUBDIRS {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::wrap(
                    ErrorKind::Unavailable,
                    format!("cannot create {}", dir.display()),
                    e,
                )
            })?;
        }
        let lock_path = root.join("veil.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                Error::wrap(
                    ErrorKind::Unavailable,
                    format!("cannot open {}", lock_path.display()),
                    e,
                )
            })?;
        lock.try_lock().map_err(|_| {
            Error::new(
                ErrorKind::Conflict,
                format!(
                    "data directory {} is in use by another veild (lock file {})",
                    root.display(),
                    lock_path.display()
                ),
            )
        })?;
        // Leftovers of an interrupted write are never valid data.
        let tmp = root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(DataDir {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }
}

/// The running device as the web layer sees it.
struct Device {
    settings: Settings,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    cameras: Mutex<Vec<Camera>>,
    stopping: AtomicBool,
    /// The fleet session's state, once `[mqtt]` is configured; or why it could not start.
    uplink: Mutex<Option<Result<Arc<veil_uplink::SessionStatus>, String>>>,
    /// The running fleet session (replaced when the page changes the broker).
    session: tokio::sync::Mutex<Option<veil_uplink::Session>>,
    /// `[mqtt]` and `[upload]` as in effect (the config file's, or the page's).
    fleet_book: Arc<crate::fleet_settings::FleetBook>,
    /// The upload target export jobs use, shared with the job runner.
    upload: Arc<Mutex<Option<veil_core::config::UploadConfig>>>,
    /// This device, for restarting its fleet session from a `&self` method.
    me: std::sync::OnceLock<std::sync::Weak<Device>>,
    system: Mutex<crate::fleet::SystemProbe>,
    /// Video requests and export jobs (absent when nothing is recorded).
    desk: Option<Arc<crate::requests::Desk>>,
    audit: Arc<veil_store::audit::AuditLog>,
    incidents: Arc<veil_incident::Incidents>,
    masks: Arc<crate::masks::MaskBook>,
    /// Camera configurations as in effect (the config file's, or the page's list).
    camera_book: Arc<crate::cameras::CameraBook>,
    recording: Option<Arc<Recording>>,
    https_fingerprint: Mutex<Option<String>>,
    /// The live TLS configuration (absent on plain-HTTP loopback), replaced on upload.
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    /// Accounts and the site settings of the setup wizard.
    auth: Arc<veil_web::Auth>,
    /// Each camera's registry picture, refreshed every [`THUMBNAIL_EVERY`].
    thumbnails: Mutex<std::collections::HashMap<String, crate::fleet::Thumbnail>>,
    thumbnail_times: Mutex<std::collections::HashMap<String, Duration>>,
    /// Publishes the registry again while the fleet session runs.
    registry_sink: Mutex<Option<veil_uplink::session::RegistrySink>>,
    /// The dashboard's graphs: one sample per [`HISTORY_INTERVAL`], the last hour.
    history: Mutex<std::collections::VecDeque<veil_web::HealthSample>>,
    /// Live view sessions to WHIP endpoints.
    live: Arc<crate::live::LiveService>,
}

const HISTORY_INTERVAL: Duration = Duration::from_secs(30);
/// How old a registry thumbnail may get before it is taken again.
const THUMBNAIL_EVERY: Duration = Duration::from_secs(600);
const HISTORY_LEN: usize = 120;

/// Live sessions' time-outs and billing checkpoints each second; the usage records not yet
/// acknowledged go out again whenever the fleet session (re)connects.
async fn keep_live(device: Arc<Device>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut n, mut connections) = (0u64, 0u64);
    loop {
        tick.tick().await;
        n += 1;
        let now_connections = match &*device.uplink.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(status)) if status.connected() => status.connections(),
            _ => connections,
        };
        let reconnected = now_connections != connections;
        connections = now_connections;
        let d = device.clone();
        let _ = tokio::task::spawn_blocking(move || {
            d.live.tick(n % crate::live::CHECKPOINT_SECS == 0);
            if reconnected {
                d.live.republish_pending();
            }
        })
        .await;
    }
}

/// What an incident export carries: the project's sequences as stretches of footage, and its
/// report and data as attachments (made when the job runs, so they are current).
type IncidentParts = dyn Fn(
        &veil_uplink::command::IncidentExport,
    ) -> Result<
        (
            Vec<veil_evidence::export::Stretch>,
            Vec<veil_evidence::export::Attachment>,
        ),
        Error,
    > + Send
    + Sync;

fn incident_parts(
    incidents: &veil_incident::Incidents,
    auth: &veil_web::Auth,
    job: &veil_uplink::command::IncidentExport,
) -> Result<
    (
        Vec<veil_evidence::export::Stretch>,
        Vec<veil_evidence::export::Attachment>,
    ),
    Error,
> {
    let props = incidents.properties()?;
    let project = incidents.get(job.project).map_err(|e| {
        Error::new(
            e.kind(),
            format!("project {} cannot be exported: {e}", job.project),
        )
    })?;
    let (device, zone) = auth
        .site()?
        .map(|s| (s.device_name, s.time_zone))
        .unwrap_or_else(|| ("this device".into(), "UTC".into()));
    let tz = jiff::tz::TimeZone::get(&zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let made = format!(
        "Exported from {device}, {}",
        jiff::Timestamp::now()
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
    );
    let (pdf, data) = veil_incident::report::export_bundle(
        &props,
        &project,
        &veil_incident::report::Clockface(tz),
        &made,
        &job.case,
    );
    let stretches = project
        .sequences
        .iter()
        .map(|s| veil_evidence::export::Stretch {
            camera: s.camera.clone(),
            from_ms: s.from_ms,
            to_ms: s.to_ms,
            label: format!("{}-seq{}", s.camera, s.id),
        })
        .collect();
    let attachments = vec![
        veil_evidence::export::Attachment {
            name: "report.pdf".into(),
            content_type: "application/pdf".into(),
            bytes: pdf,
        },
        veil_evidence::export::Attachment {
            name: "project.json".into(),
            content_type: "application/json".into(),
            bytes: data,
        },
    ];
    Ok((stretches, attachments))
}

/// Deletes incident projects past their retention, at start and every ten minutes; each
/// goes to the audit log as deleted by the device.
async fn expire_incidents(device: Arc<Device>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let d = device.clone();
        let _ = tokio::task::spawn_blocking(move || {
            match d.incidents.expire(d.clock.wall_millis() as i64) {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = d.audit.append(
                            "device",
                            "incident.expire",
                            &format!("incident-{id}"),
                            serde_json::Value::Null,
                            serde_json::Value::Null,
                        ) {
                            tracing::error!(error = %e, "cannot write the audit log");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot delete expired incident projects"),
            }
        })
        .await;
    }
}

/// Samples device health for the dashboard's graphs.
async fn keep_history(device: Arc<Device>) {
    let mut tick = tokio::time::interval(HISTORY_INTERVAL);
    loop {
        tick.tick().await;
        let d = device.clone();
        let Ok(sample) = tokio::task::spawn_blocking(move || {
            let system = d
                .system
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sample(&d.settings.data_dir);
            crate::fleet::history_sample(&DeviceView::status(&*d), &system, d.clock.wall_millis())
        })
        .await
        else {
            return;
        };
        {
            let mut h = device.history.lock().unwrap_or_else(|e| e.into_inner());
            if h.len() == HISTORY_LEN {
                h.pop_front();
            }
            h.push_back(sample);
        }
        let d = device.clone();
        let _ = tokio::task::spawn_blocking(move || d.refresh_thumbnails()).await;
    }
}

impl Device {
    fn desk(&self) -> Result<&crate::requests::Desk, Error> {
        self.desk.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                "this device records no footage (storage.record = false, or the store failed to \
                 open): there is nothing to request",
            )
        })
    }
}

impl veil_uplink::Device for Device {
    fn state(&self, online: bool) -> serde_json::Value {
        crate::fleet::state(&DeviceView::status(self), online)
    }

    fn registry(&self) -> serde_json::Value {
        crate::fleet::registry(
            &DeviceView::status(self),
            &self.camera_book.list(),
            &self.thumbnails.lock().unwrap_or_else(|e| e.into_inner()),
        )
    }

    fn telemetry(&self) -> serde_json::Value {
        let system = self
            .system
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(&self.settings.data_dir);
        let mut t = crate::fleet::telemetry(&DeviceView::status(self), system);
        // The audit log's head, published where no one on the device can rewrite it.
        t["audit"] = serde_json::to_value(self.audit.head()).expect("head serializes");
        if let Some(Ok(status)) = &*self.uplink.lock().unwrap_or_else(|e| e.into_inner()) {
            t["mqtt_protocol"] = status.protocol().into();
        }
        t
    }

    fn handle(&self, command: &veil_uplink::Command) -> Result<serde_json::Value, Error> {
        use veil_uplink::Command;
        match command {
            Command::ConfigGet => {
                let mut config = serde_json::to_value(self.effective_config())
                    .map_err(|e| Error::internal(format!("cannot render the config: {e}")))?;
                crate::fleet::redact(&mut config);
                Ok(config)
            }
            Command::Snapshot { camera, width } => {
                let jpeg = DeviceView::snapshot(self, camera, *width)?;
                Ok(crate::fleet::snapshot_result(camera, &jpeg))
            }
            Command::RegistryGet => Ok(serde_json::json!({ "published": true })),
            Command::Thumbnail { camera } => {
                let thumbnails = self.thumbnails.lock().unwrap_or_else(|e| e.into_inner());
                match thumbnails.get(camera) {
                    Some(t) => Ok(crate::fleet::thumbnail_result(camera, t)),
                    None if self.camera_book.get(camera).is_some() => Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "camera '{camera}' has no thumbnail yet (taken when it delivers frames)"
                        ),
                    )),
                    None => Err(Error::not_found(format!(
                        "no camera '{camera}' on this device"
                    ))),
                }
            }
            Command::Reboot => {
                DeviceView::reboot(self, "fleet")?;
                if let Err(e) = self.audit.append(
                    "fleet",
                    "system.reboot",
                    self.settings.device_id.as_str(),
                    serde_json::Value::Null,
                    serde_json::json!({ "via": "mqtt" }),
                ) {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
                Ok(serde_json::json!({ "rebooting": true, "in_seconds": 2 }))
            }
            Command::RequestCreate(r) => self.desk()?.create_request(r),
            Command::RequestDecide {
                id,
                approve,
                reason,
                by,
            } => self
                .desk()?
                .decide(id, *approve, reason.as_deref(), by.as_deref()),
            Command::RequestCancel { id, reason } => {
                self.desk()?.cancel_request(id, reason.as_deref())
            }
            Command::RequestList => self.desk()?.list(),
            Command::ExportCreate(job) => self.desk()?.create_job(job),
            Command::ExportCancel { job_id } => self.desk()?.cancel_job(job_id),
            Command::ConfigPatch { patch } => self.patch_config(patch),
            Command::LiveStart(request) => self.live.start(request.clone()),
            Command::LiveStop {
                session_id,
                by_owner,
                reason,
            } => {
                let by = if *by_owner {
                    veil_core::live::EndedBy::Operator("fleet".into())
                } else {
                    veil_core::live::EndedBy::Consumer
                };
                self.live.stop(session_id, by, reason.as_deref())
            }
            Command::LiveList => Ok(self.live.list()),
            Command::IncidentList(q) => Ok(serde_json::json!(self.incidents.list(q)?)),
            Command::IncidentGet { id } => Ok(serde_json::json!(self.incidents.get(*id)?)),
            Command::LiveUsage { pending } => Ok(serde_json::json!({
                "records": self.live.usage_records(*pending)?,
            })),
            Command::LiveUsageAck { session_ids } => self.live.acknowledge(session_ids),
            Command::NotYetAvailable(name) => Err(crate::fleet::not_yet(name)),
        }
    }
}

/// Cameras changed on the page: started and stopped while everything else runs.
impl Device {
    fn start_one(&self, config: &CameraConfig) -> Result<(), Error> {
        let mut config = config.clone();
        self.masks.adopt(&mut config);
        let camera = start_camera(
            &config,
            &self.settings,
            &self.clock,
            &self.metrics,
            &self.masks,
        )?;
        if let (Some(recording), true) = (&self.recording, config.enabled) {
            recording.record(&camera, &config);
        }
        self.cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(camera);
        self.cameras_changed();
        Ok(())
    }

    /// Stops a camera and waits for its threads (its recorder then closes its segment).
    fn stop_one(&self, id: &str) {
        let camera = {
            let mut cameras = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
            cameras
                .iter()
                .position(|c| c.id() == id)
                .map(|i| cameras.remove(i))
        };
        if let Some(camera) = camera {
            camera.request_stop();
            drop(camera);
        }
        self.masks.forget(id);
        self.cameras_changed();
    }

    /// Takes registry thumbnails that are missing or older than [`THUMBNAIL_EVERY`]; a new
    /// one publishes the registry again.
    fn refresh_thumbnails(&self) {
        let now = self.clock.monotonic();
        let due: Vec<_> = {
            let cameras = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
            let mut taken = self
                .thumbnail_times
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            taken.retain(|id, _| cameras.iter().any(|c| c.id() == id));
            cameras
                .iter()
                .filter(|c| {
                    taken
                        .get(c.id())
                        .is_none_or(|t| now.saturating_sub(*t) >= THUMBNAIL_EVERY)
                })
                .map(|c| (c.id().to_string(), c.snapshotter()))
                .collect()
        };
        let mut changed = false;
        for (id, snapshotter) in due {
            if let Ok(jpeg) = snapshotter.jpeg(320) {
                self.thumbnail_times
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), now);
                self.thumbnails
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, crate::fleet::Thumbnail::new(jpeg));
                changed = true;
            }
        }
        if changed {
            self.publish_registry();
        }
    }

    fn publish_registry(&self) {
        let sink = self
            .registry_sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(sink) = sink {
            sink.send(&veil_uplink::Device::registry(self));
        }
    }

    fn cameras_changed(&self) {
        self.publish_registry();
        self.live
            .set_cameras(live_cameras(&self.camera_book.list()));
        if let Some(desk) = &self.desk {
            desk.set_cameras(
                self.camera_book
                    .list()
                    .iter()
                    .map(|c| c.id.to_string())
                    .collect(),
            );
        }
    }

    /// As shown to people: the masks in effect, secrets as `***`.
    fn shown(&self, mut camera: CameraConfig) -> CameraConfig {
        if let Ok(masks) = self.masks.get(camera.id.as_str()) {
            camera.masks = masks;
        }
        let mut value = serde_json::to_value(&camera).expect("cameras serialize");
        crate::fleet::redact(&mut value);
        serde_json::from_value(value).unwrap_or(camera)
    }
}

/// What the live desk knows of each running camera.
fn live_cameras(
    cameras: &[CameraConfig],
) -> std::collections::BTreeMap<String, veil_core::live::CameraLive> {
    cameras
        .iter()
        .filter(|c| c.enabled)
        .map(|c| {
            (
                c.id.to_string(),
                veil_core::live::CameraLive {
                    filter: c.filter,
                    approval: c.live.approval,
                },
            )
        })
        .collect()
}

impl crate::live::LiveCameras for Device {
    fn snapshot(&self, camera: &str, max_width: u32) -> Result<Vec<u8>, Error> {
        DeviceView::snapshot(self, camera, max_width)
    }

    fn own_stream(
        &self,
        camera: &str,
    ) -> Option<(
        tokio::sync::broadcast::Receiver<veil_media::h264::EncodedFrame>,
        veil_media::pipeline::KeyframeTrigger,
    )> {
        let cameras = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        let cam = cameras.iter().find(|c| c.id() == camera)?;
        Some((cam.subscribe()?, cam.keyframe_trigger()?))
    }

    /// An engine of the camera's (its masks, kept current) with `filter`, and an encoder.
    fn branch(
        &self,
        camera: &str,
        filter: veil_core::config::FilterName,
    ) -> Result<veil_media::pipeline::Branch, Error> {
        let mut config = self
            .camera_book
            .get(camera)
            .ok_or_else(|| Error::not_found(format!("no camera '{camera}' on this device")))?;
        config.masks = self.masks.get(camera)?;
        config.filter = filter;
        let (privacy, failed, _) = privacy_stage(&config, &self.settings.detection(), &self.masks);
        if let Some(why) = failed {
            tracing::error!(camera, %why, "live encode blanks every frame");
        }
        let cameras = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        let cam = cameras
            .iter()
            .find(|c| c.id() == camera)
            .ok_or_else(|| Error::not_found(format!("camera '{camera}' is not running")))?;
        cam.branch(
            filter.as_str(),
            privacy,
            encoder_factory(&self.settings),
            filter_of(filter).frame_rate(),
        )
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("camera '{camera}' is disabled"),
            )
        })?
        .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start a live encode", e))
    }
}

/// Top-level keys `config.patch` applies while the device runs.
const LIVE_KEYS: &[&str] = &["cameras", "mqtt", "upload"];

impl Device {
    /// The configuration in effect: the config file's, with the page's cameras, masks and
    /// fleet settings.
    fn effective_config(&self) -> veil_core::config::Config {
        let mut config = self.settings.config.clone();
        config.cameras = self.camera_book.list();
        let fleet = self.fleet_book.get();
        (config.mqtt, config.upload) = (fleet.mqtt, fleet.upload);
        config
    }

    /// `config.patch`: an RFC 7386 merge patch on the configuration, checked as the config
    /// file is (the error names the key), applied live (cameras restarted where they changed,
    /// the fleet session reconnected after this reply) and kept across restarts. Keys that
    /// only take effect at start are refused by name. A secret sent as `***` stays.
    fn patch_config(
        &self,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        if let Some(key) = patch.keys().find(|k| !LIVE_KEYS.contains(&k.as_str())) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "key '{key}' cannot change while the device runs (live: {}); change the \
                     config file and restart veild",
                    LIVE_KEYS.join(", ")
                ),
            ));
        }
        let before = self.effective_config();
        let mut merged = serde_json::to_value(&before)
            .map_err(|e| Error::internal(format!("cannot render the config: {e}")))?;
        crate::fleet::merge_patch(&mut merged, &serde_json::Value::Object(patch.clone()));
        let de: veil_core::config::Config = serde_path_to_error::deserialize(merged)
            .map_err(|e| Error::invalid_input(format!("key '{}': {}", e.path(), e.inner())))?;
        if let Some(issue) = de.validate().into_iter().next() {
            return Err(Error::invalid_input(issue.to_string()));
        }
        if patch.contains_key("cameras") {
            self.camera_book.change(|list| {
                list.clone_from(&de.cameras);
                Ok(())
            })?;
            // Restart what changed, stop what went, start what came.
            for old in &before.cameras {
                if de.cameras.iter().all(|c| c != old) {
                    self.stop_one(old.id.as_str());
                }
            }
            for new in &de.cameras {
                if before.cameras.iter().all(|c| c != new) {
                    self.start_one(new)?;
                }
            }
        }
        if patch.contains_key("mqtt") || patch.contains_key("upload") {
            let fleet = self.fleet_book.prepare(crate::fleet_settings::Fleet {
                mqtt: de.mqtt.clone(),
                upload: de.upload.clone(),
            })?;
            self.fleet_book.save(fleet.clone())?;
            *self.upload.lock().unwrap_or_else(|e| e.into_inner()) = fleet.upload;
            if patch.contains_key("mqtt")
                && let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade)
            {
                // After this reply went out on the current session.
                tokio::runtime::Handle::current().spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    start_uplink(&me).await;
                });
            }
        }
        let render = |c: &veil_core::config::Config| {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            crate::fleet::redact(&mut v);
            v
        };
        let after = self.effective_config();
        let keys: Vec<&String> = patch.keys().collect();
        if let Err(e) = self.audit.append(
            "fleet",
            "config.patch",
            &keys
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(","),
            render(&before),
            render(&after),
        ) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        Ok(serde_json::json!({ "applied": keys, "config": render(&after) }))
    }

    /// Fleet settings from the page's form: pasted PEMs written under `dir` (keys 0600) and
    /// the settings pointed at them, secrets `***` filled in, checked like the config file.
    fn fleet_from_form(
        &self,
        form: veil_web::FleetForm,
        dir: &std::path::Path,
    ) -> Result<crate::fleet_settings::Fleet, Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write = |field: &str, name: &str, pem: &str| -> Result<PathBuf, Error> {
            if !pem.contains("-----BEGIN ") {
                return Err(Error::invalid_input(format!(
                    "{field}: paste a PEM block (-----BEGIN …-----)"
                )));
            }
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::wrap(ErrorKind::Unavailable, "cannot create the fleet dir", e)
            })?;
            let path = dir.join(name);
            let tmp = path.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| {
                    f.write_all(pem.as_bytes())?;
                    f.sync_all()
                })
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| {
                    Error::wrap(
                        ErrorKind::Unavailable,
                        format!("cannot write {}", path.display()),
                        e,
                    )
                })?;
            Ok(path)
        };
        let given = |p: &Option<String>| {
            p.as_deref()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
        };
        let mut fleet = crate::fleet_settings::Fleet {
            mqtt: form.mqtt,
            upload: form.upload,
        };
        if let Some(m) = fleet.mqtt.as_mut() {
            if let Some(pem) = given(&form.mqtt_ca_pem) {
                m.ca_file = Some(write("mqtt_ca_pem", "mqtt-ca.pem", &pem)?);
            }
            if let Some(pem) = given(&form.mqtt_client_cert_pem) {
                m.client_cert = Some(write("mqtt_client_cert_pem", "mqtt-client.pem", &pem)?);
            }
            if let Some(pem) = given(&form.mqtt_client_key_pem) {
                m.client_key = Some(write("mqtt_client_key_pem", "mqtt-client.key", &pem)?);
            }
        }
        if let (Some(u), Some(pem)) = (fleet.upload.as_mut(), given(&form.upload_ca_pem)) {
            u.ca_file = Some(write("upload_ca_pem", "upload-ca.pem", &pem)?);
        }
        let fleet = self.fleet_book.prepare(fleet)?;
        if let Some(m) = &fleet.mqtt {
            // The certificates must load now, not at the next reconnect.
            veil_uplink::session::SessionSettings::from_config(m, self.settings.device_id.as_str())
                .map_err(|e| Error::invalid_input(format!("mqtt.ca_file: {e}")))?;
        }
        Ok(fleet)
    }
}

fn shown_fleet(fleet: &crate::fleet_settings::Fleet) -> serde_json::Value {
    let mut value = serde_json::to_value(fleet).expect("fleet settings serialize");
    crate::fleet::redact(&mut value);
    value
}

/// A camera sent back from the page carries `***` where its secrets were shown: keep the
/// stored ones there.
fn keep_secrets(new: &mut CameraConfig, old: &CameraConfig) {
    if let (
        SourceConfig::Rtsp { url, password, .. },
        SourceConfig::Rtsp {
            url: old_url,
            password: old_password,
            ..
        },
    ) = (&mut new.source, &old.source)
    {
        if password.as_deref() == Some("***") {
            password.clone_from(old_password);
        }
        let secret = |u: &str| {
            u.split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .and_then(|(info, _)| info.split_once(':'))
                .map(|(_, p)| p.to_string())
        };
        if secret(url).as_deref() == Some("***")
            && let Some(old_secret) = secret(old_url)
        {
            *url = url.replacen(":***@", &format!(":{old_secret}@"), 1);
        }
    }
}

impl Device {
    fn live_sessions(&self) -> Result<serde_json::Value, Error> {
        Ok(self.live.list())
    }
}

impl DeviceView for Device {
    fn health(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            Err("stopping".into())
        } else {
            Ok(())
        }
    }

    fn status(&self) -> StatusResponse {
        let s = &self.settings;
        StatusResponse {
            device: DeviceInfo {
                id: s.device_id.to_string(),
                // The name given in the setup wizard, else the config file's.
                name: self
                    .auth
                    .site()
                    .ok()
                    .flatten()
                    .map(|site| site.device_name)
                    .unwrap_or_else(|| s.config.device.name.clone()),
                board: s.board.name.clone(),
                firmware_version: env!("CARGO_PKG_VERSION").into(),
                uptime_seconds: self.clock.monotonic().as_secs(),
                time_ms: self.clock.wall_millis(),
                https_fingerprint: self
                    .https_fingerprint
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            },
            cameras: self
                .cameras
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(Camera::status)
                .collect(),
            features: Features {
                mqtt: match &*self.uplink.lock().unwrap_or_else(|e| e.into_inner()) {
                    None => FeatureState::NotConfigured,
                    Some(Err(reason)) => FeatureState::Disconnected {
                        reason: reason.clone(),
                    },
                    Some(Ok(s)) if s.connected() => FeatureState::Connected,
                    Some(Ok(s)) => FeatureState::Disconnected {
                        reason: s.last_error().unwrap_or_else(|| "connecting".into()),
                    },
                },
                // Configured: "connected" until a job fails, then that job's reason.
                upload: match (
                    &*self.upload.lock().unwrap_or_else(|e| e.into_inner()),
                    &self.desk,
                ) {
                    (None, _) => FeatureState::NotConfigured,
                    (Some(_), Some(desk)) => match desk.last_failure() {
                        Some(reason) => FeatureState::Disconnected { reason },
                        None => FeatureState::Connected,
                    },
                    (Some(_), None) => FeatureState::Disconnected {
                        reason: "no footage store: nothing to upload".into(),
                    },
                },
            },
        }
    }

    fn metrics(&self) -> String {
        self.metrics.render(self.clock.monotonic().as_secs_f64())
    }

    fn snapshot(&self, camera: &str, max_width: u32) -> Result<Vec<u8>, Error> {
        // Wait for the frame without holding the camera list (status must stay responsive).
        let snapshotter = self
            .cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|c| c.id() == camera)
            .map(Camera::snapshotter)
            .ok_or_else(|| Error::not_found(format!("no camera '{camera}' on this device")))?;
        snapshotter.jpeg(max_width)
    }

    fn open_preview(
        &self,
        camera: &str,
        filter: &str,
    ) -> Result<Arc<dyn veil_web::PreviewFeed>, Error> {
        let filter = veil_evidence::export::parse_filter(filter)?;
        Ok(Arc::new(self.live.open_preview(camera, filter)?))
    }

    fn original_snapshot(&self, camera: &str, max_width: u32) -> Result<Vec<u8>, Error> {
        let snapshotter = {
            let cameras = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
            let cam = cameras
                .iter()
                .find(|c| c.id() == camera)
                .ok_or_else(|| Error::not_found(format!("no camera '{camera}' on this device")))?;
            cam.original_snapshotter().ok_or_else(|| {
                Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "camera '{camera}' keeps no originals (storage = \"anonymized\"): \
                         there is no other picture than the anonymized one"
                    ),
                )
            })?
        };
        snapshotter.jpeg(max_width)
    }

    fn requests(&self) -> Result<serde_json::Value, Error> {
        self.desk()?.list()
    }

    fn timeline(
        &self,
        camera: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<veil_web::Timeline, Error> {
        let recording = self.recording.as_ref().ok_or_else(|| {
            Error::new(ErrorKind::NotConfigured, "this device records no footage")
        })?;
        let coverage = recording.store.coverage(camera, from_ms, to_ms)?;
        Ok(crate::fleet::timeline(camera, from_ms, to_ms, &coverage))
    }

    fn create_export(
        &self,
        cameras: &[String],
        from_ms: i64,
        to_ms: i64,
        filter: Option<&str>,
        by: &str,
    ) -> Result<serde_json::Value, Error> {
        let job = veil_uplink::command::ExportJob {
            job_id: format!("web-{}", uuid::Uuid::now_v7().simple()),
            cameras: cameras.to_vec(),
            from_ms,
            to_ms,
            name: None,
            description: Some(format!("exported on the device's page by {by}")),
            filter: filter.map(str::to_string),
            upload_urls: None,
            incident: None,
        };
        self.desk()?.create_job_by(&job, by)
    }

    fn export_incident(
        &self,
        project: &veil_incident::Project,
        filter: Option<&str>,
        case: serde_json::Value,
        recipients: &[String],
        by: &str,
    ) -> Result<serde_json::Value, Error> {
        let id = project.summary.id;
        for (i, r) in recipients.iter().enumerate() {
            r.parse::<age::x25519::Recipient>().map_err(|_| {
                Error::invalid_input(format!(
                    "recipients[{i}]: '{r}' is not an age X25519 public key (age1…)"
                ))
            })?;
        }
        if project.sequences.is_empty() {
            return Err(Error::invalid_input(format!(
                "project {id} has no sequences: mark recording periods and add them before \
                 exporting"
            )));
        }
        let desk = self.desk()?;
        for s in &project.sequences {
            desk.check_footage(std::slice::from_ref(&s.camera), s.from_ms, s.to_ms)?;
        }
        let mut cameras: Vec<String> = project.sequences.iter().map(|s| s.camera.clone()).collect();
        cameras.sort();
        cameras.dedup();
        let job = veil_uplink::command::ExportJob {
            job_id: format!("incident-{id}-{}", uuid::Uuid::now_v7().simple()),
            cameras,
            from_ms: project
                .sequences
                .iter()
                .map(|s| s.from_ms)
                .min()
                .unwrap_or(0),
            to_ms: project.sequences.iter().map(|s| s.to_ms).max().unwrap_or(0),
            name: Some(format!("incident project {id}")),
            description: Some(project.summary.name.clone()),
            filter: filter.map(str::to_string),
            upload_urls: None,
            incident: Some(veil_uplink::command::IncidentExport {
                project: id,
                case,
                recipients: recipients.to_vec(),
            }),
        };
        desk.create_job_by(&job, by)
    }

    fn export_file(&self, job: &str, name: &str) -> Result<std::path::PathBuf, Error> {
        let dir = self.desk()?.export_dir(job)?;
        // Only what the signed manifest lists, and the manifest itself.
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("manifest.json"))
                .map_err(|e| Error::wrap(ErrorKind::NotFound, "the export has no manifest", e))?,
        )
        .map_err(|e| Error::internal(format!("damaged manifest: {e}")))?;
        let listed = name == "manifest.json"
            || manifest["attachments"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["file"].as_str() == Some(name))
            || manifest["cameras"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["files"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|f| f["file"].as_str() == Some(name))
                });
        if !listed {
            return Err(Error::not_found(format!(
                "export '{job}' has no file '{name}'"
            )));
        }
        Ok(dir.join(name))
    }

    fn cameras(&self) -> Result<Vec<CameraConfig>, Error> {
        Ok(self
            .camera_book
            .list()
            .into_iter()
            .map(|c| self.shown(c))
            .collect())
    }

    fn add_camera(&self, camera: CameraConfig) -> Result<CameraConfig, Error> {
        self.camera_book.change(|list| {
            if list.iter().any(|c| c.id == camera.id) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("a camera '{}' exists already", camera.id),
                ));
            }
            list.push(camera.clone());
            Ok(())
        })?;
        self.start_one(&camera)?;
        Ok(self.shown(camera))
    }

    fn replace_camera(
        &self,
        id: &str,
        mut camera: CameraConfig,
    ) -> Result<(CameraConfig, CameraConfig), Error> {
        let before = self
            .camera_book
            .get(id)
            .ok_or_else(|| Error::not_found(format!("no camera '{id}' on this device")))?;
        keep_secrets(&mut camera, &before);
        // Masks are edited on their own page: a camera form without them keeps them.
        if camera.masks.is_empty() {
            camera.masks.clone_from(&before.masks);
        }
        self.camera_book.change(|list| {
            if let Some(slot) = list.iter_mut().find(|c| c.id.as_str() == id) {
                *slot = camera.clone();
            }
            Ok(())
        })?;
        let shown_before = self.shown(before);
        self.stop_one(id);
        self.start_one(&camera)?;
        Ok((shown_before, self.shown(camera)))
    }

    fn remove_camera(&self, id: &str) -> Result<CameraConfig, Error> {
        let before = self
            .camera_book
            .get(id)
            .ok_or_else(|| Error::not_found(format!("no camera '{id}' on this device")))?;
        let shown = self.shown(before);
        self.camera_book.change(|list| {
            list.retain(|c| c.id.as_str() != id);
            Ok(())
        })?;
        self.stop_one(id);
        Ok(shown)
    }

    fn test_source(&self, source: SourceConfig) -> Result<serde_json::Value, Error> {
        let camera: CameraConfig =
            serde_json::from_value(serde_json::json!({ "id": "source-test", "source": source }))
                .map_err(|e| Error::invalid_input(format!("source: {e}")))?;
        let mut candidate = self.settings.config.clone();
        candidate.cameras = vec![camera.clone()];
        if let Some(issue) = candidate.validate().into_iter().next() {
            let key = issue.key.unwrap_or_default().replace("cameras[0].", "");
            return Err(Error::invalid_input(format!("{key}: {}", issue.message)));
        }
        let (_, mut open) = camera_source(&camera, &self.settings.board, &self.clock);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("source-test".into())
            .spawn(move || {
                let first = open().and_then(|mut source| {
                    let fps = source.fps();
                    match source.next_frame()? {
                        Some(frame) => Ok((frame.width(), frame.height(), fps)),
                        None => Err(Error::new(
                            ErrorKind::Unavailable,
                            "the source ended before its first frame",
                        )),
                    }
                });
                let _ = tx.send(first);
            })
            .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start the source test", e))?;
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok((width, height, fps))) => Ok(serde_json::json!({
                "ok": true, "width": width, "height": height, "fps": fps,
            })),
            Ok(Err(e)) => Err(Error::new(
                if e.kind() == ErrorKind::InvalidInput {
                    ErrorKind::InvalidInput
                } else {
                    ErrorKind::Unavailable
                },
                format!("the source did not deliver a frame: {e}"),
            )),
            Err(_) => Err(Error::new(
                ErrorKind::DeadlineExceeded,
                "no frame within 10 s: check the address, the credentials and that the camera is on",
            )),
        }
    }

    fn install_certificate(&self, cert_pem: &str, key_pem: &str) -> Result<String, Error> {
        let Some(tls) = &self.tls else {
            return Err(Error::new(
                ErrorKind::Conflict,
                "this page is served without TLS (http.tls = false on a loopback address)",
            ));
        };
        let identity = veil_web::tls::identity(cert_pem, key_pem)?;
        veil_web::tls::install(&self.settings.data_dir.join("state"), &identity)?;
        tls.reload_from_config(identity.config.clone());
        tracing::info!(fingerprint = %identity.fingerprint, "HTTPS certificate replaced");
        *self
            .https_fingerprint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(identity.fingerprint.clone());
        Ok(identity.fingerprint)
    }

    fn fleet(&self) -> Result<serde_json::Value, Error> {
        Ok(shown_fleet(&self.fleet_book.get()))
    }

    fn set_fleet(
        &self,
        form: veil_web::FleetForm,
    ) -> Result<(serde_json::Value, serde_json::Value), Error> {
        let dir = self.settings.data_dir.join("state").join("fleet");
        let new = self.fleet_from_form(form, &dir)?;
        let before = self.fleet_book.save(new.clone())?;
        *self.upload.lock().unwrap_or_else(|e| e.into_inner()) = new.upload.clone();
        let me = self
            .me
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| Error::internal("the device is stopping"))?;
        // Called on a blocking thread: wait for the old session to say offline, then start.
        tokio::runtime::Handle::current().block_on(start_uplink(&me));
        Ok((shown_fleet(&before), shown_fleet(&new)))
    }

    fn test_fleet(&self, form: veil_web::FleetForm) -> Result<serde_json::Value, Error> {
        let dir = self
            .settings
            .data_dir
            .join("tmp")
            .join(format!("fleet-test-{}", uuid::Uuid::now_v7().simple()));
        let current = self.fleet_book.get();
        let (test_mqtt, test_upload) = (form.mqtt.is_some(), form.upload.is_some());
        // The pasted certificates live in tmp/ while the test runs, then go.
        struct Cleanup<'a>(&'a std::path::Path);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(self.0);
            }
        }
        let _cleanup = Cleanup(&dir);
        let candidate = self.fleet_from_form(form, &dir)?;
        let mqtt = if test_mqtt {
            candidate.mqtt
        } else {
            current.mqtt
        };
        let upload = if test_upload {
            candidate.upload
        } else {
            current.upload
        };
        let mqtt = match mqtt {
            None => "not configured".to_string(),
            Some(m) => match veil_uplink::session::SessionSettings::from_config(
                &m,
                self.settings.device_id.as_str(),
            ) {
                Err(e) => e.to_string(),
                Ok(s) => match tokio::runtime::Handle::current()
                    .block_on(veil_uplink::session::probe(&s))
                {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string(),
                },
            },
        };
        let upload = match upload {
            None => "not configured".to_string(),
            Some(u) => {
                let prefix = u
                    .prefix
                    .clone()
                    .unwrap_or_else(|| format!("{}/", self.settings.device_id));
                match uploader_for(&u, &prefix).and_then(|up| up.probe()) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string(),
                }
            }
        };
        Ok(serde_json::json!({ "mqtt": mqtt, "upload": upload }))
    }

    fn logs(&self) -> String {
        crate::logging::recent()
    }

    fn reboot(&self, by: &str) -> Result<(), Error> {
        // Only the device's service may restart the machine; a development run may not.
        if std::env::var_os("INVOCATION_ID").is_none() {
            return Err(Error::new(
                ErrorKind::Conflict,
                "reboot works on the device (veild under systemd); this veild runs outside it",
            ));
        }
        tracing::warn!(by, "reboot requested");
        std::thread::Builder::new()
            .name("reboot".into())
            .spawn(|| {
                // Let the answer and the audit entry go out first.
                std::thread::sleep(Duration::from_secs(2));
                match std::process::Command::new("systemctl")
                    .arg("reboot")
                    .status()
                {
                    Ok(s) if s.success() => {}
                    Ok(s) => tracing::error!(%s, "systemctl reboot failed"),
                    Err(e) => tracing::error!(error = %e, "cannot run systemctl reboot"),
                }
            })
            .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start the reboot", e))?;
        Ok(())
    }

    fn history(&self) -> veil_web::HealthHistory {
        veil_web::HealthHistory {
            interval_s: HISTORY_INTERVAL.as_secs() as u32,
            samples: self
                .history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }

    fn masks(&self, camera: &str) -> Result<Vec<veil_core::config::MaskConfig>, Error> {
        self.masks.get(camera)
    }

    fn set_masks(
        &self,
        camera: &str,
        masks: Vec<veil_core::config::MaskConfig>,
    ) -> Result<Vec<veil_core::config::MaskConfig>, Error> {
        self.masks.set(camera, masks)
    }

    fn decide_request(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        by: &str,
    ) -> Result<serde_json::Value, Error> {
        self.desk()?.decide(id, approve, reason, Some(by))
    }

    fn live_sessions(&self) -> Result<serde_json::Value, Error> {
        Device::live_sessions(self)
    }

    fn decide_live(
        &self,
        id: &str,
        accept: bool,
        reason: Option<&str>,
        by: &str,
    ) -> Result<serde_json::Value, Error> {
        self.live.decide(id, accept, by, reason)
    }

    fn stop_live(
        &self,
        id: &str,
        reason: Option<&str>,
        by: &str,
    ) -> Result<serde_json::Value, Error> {
        self.live.stop(
            id,
            veil_core::live::EndedBy::Operator(by.into()),
            reason.or(Some("ended by the owner's operator")),
        )
    }
}

/// What happens to every frame before anything else sees it: the camera's privacy engine
/// (masks always; detection per its filter), with its counts of frames let out and blanked.
/// If the engine cannot start, every frame is blanked: no camera runs unprotected.
fn privacy_stage(
    cam: &CameraConfig,
    detection: &DetectionSetup,
    masks: &crate::masks::MaskBook,
) -> (
    PrivacyStage,
    Option<String>,
    Arc<veil_privacy::PrivacyStats>,
) {
    let config = EngineConfig {
        filter: filter_of(cam.filter),
        masks: cam.masks.iter().map(|m| m.polygon()).collect(),
        style: Style::Pixelate,
        policy: FailSafePolicy::default(),
        detection: Some(detection.clone()),
    };
    match Engine::new(cam.id.as_str(), config) {
        Ok(mut engine) => {
            masks.attach(cam.id.as_str(), engine.mask_handle());
            let stats = engine.stats();
            (Box::new(move |frame| engine.process(frame)), None, stats)
        }
        Err(e) => {
            tracing::error!(camera = %cam.id, error = %e, "privacy engine did not start; blanking every frame");
            let stats = Arc::<veil_privacy::PrivacyStats>::default();
            let why = format!("did not start: {e}");
            let blank: PrivacyStage = Box::new({
                let stats = stats.clone();
                move |frame| {
                    let (w, h) = (frame.width() as i32, frame.height() as i32);
                    veil_privacy::redact::solid(frame, veil_privacy::Rect { x: 0, y: 0, w, h });
                    stats.count_blank("privacy engine", &why);
                }
            });
            let message = format!("privacy engine did not start, every frame is blanked: {e}");
            (blank, Some(message), stats)
        }
    }
}

/// The engine that anonymizes recorded footage of a camera again (on export) with `filter`:
/// the camera's masks (if it is still configured) and the device's models.
pub fn export_engine(
    camera: &str,
    masks: &[veil_core::config::MaskConfig],
    filter: FilterName,
    detection: &DetectionSetup,
) -> Result<Engine, Error> {
    let config = EngineConfig {
        filter: filter_of(filter),
        masks: masks.iter().map(|m| m.polygon()).collect(),
        style: Style::Pixelate,
        policy: FailSafePolicy::default(),
        detection: Some(detection.clone()),
    };
    Engine::new(camera, config)
}

pub fn filter_of(name: FilterName) -> Filter {
    match name {
        FilterName::MasksOnly => Filter::MasksOnly,
        FilterName::Motion => Filter::Motion,
        FilterName::Faces => Filter::Faces,
        FilterName::FacesPlates => Filter::FacesPlates,
        FilterName::Strict => Filter::Strict,
        FilterName::Silhouette => Filter::Silhouette,
    }
}

/// The camera's description and a factory that opens its source.
fn camera_source(
    cam: &CameraConfig,
    board: &BoardProfile,
    clock: &Arc<dyn Clock>,
) -> (CameraSpec, SourceFactory) {
    let defaults = &board.camera_defaults;
    let encoder_threads = match board.encoder {
        EncoderProfile::Openh264 { threads } => threads.clamp(1, 16) as u16,
        EncoderProfile::V4l2m2m { .. } => 1,
    };
    let mut spec = CameraSpec {
        id: cam.id.to_string(),
        name: cam.display_name().to_string(),
        kind: cam.source.kind(),
        filter: cam.filter.as_str(),
        masks: cam.masks.len() as u32,
        width: 0,
        height: 0,
        fps: 0,
        bitrate_kbps: cam.encoder.bitrate_kbps.unwrap_or(0),
        keyframe_secs: cam.encoder.keyframe_secs,
        encoder_threads,
        privacy_error: None,
        privacy: Default::default(),
        keep_originals: cam.storage == StoragePolicy::Originals,
    };
    match &cam.source {
        SourceConfig::Synthetic { width, height, fps } => {
            spec.width = width.unwrap_or(defaults.width);
            spec.height = height.unwrap_or(defaults.height);
            spec.fps = fps.unwrap_or(defaults.fps);
            let factory = synthetic_factory(spec.width, spec.height, spec.fps, clock.clone());
            (spec, factory)
        }
        SourceConfig::V4l2 {
            device,
            width,
            height,
            fps,
        } => {
            let options = V4l2Options {
                device: device.clone(),
                width: width.unwrap_or(defaults.width),
                height: height.unwrap_or(defaults.height),
                fps: fps.unwrap_or(defaults.fps),
            };
            (spec.width, spec.height, spec.fps) = (options.width, options.height, options.fps);
            let clock = clock.clone();
            let factory: SourceFactory = Box::new(move || {
                Ok(Box::new(V4l2Source::open(&options, clock.clone())?) as Box<dyn Source>)
            });
            (spec, factory)
        }
        SourceConfig::Rtsp {
            url,
            username,
            password,
            transport,
        } => {
            let options = RtspOptions {
                url: url.clone(),
                username: username.clone(),
                password: password.clone(),
                transport: match transport {
                    RtspTransport::Tcp => veil_media::rtsp::RtspTransport::Tcp,
                    RtspTransport::Udp => veil_media::rtsp::RtspTransport::Udp,
                },
                stall_timeout: RTSP_STALL,
                fps_hint: defaults.fps,
            };
            // Until the camera's SDP says otherwise (the capture thread passes its rate on to
            // the encoder), assume the board's default rate.
            spec.fps = defaults.fps;
            let clock = clock.clone();
            let factory: SourceFactory = Box::new(move || {
                Ok(Box::new(RtspSource::open(&options, clock.clone())?) as Box<dyn Source>)
            });
            (spec, factory)
        }
        SourceConfig::File { path, looped, fps } => {
            let options = FileOptions {
                looped: *looped,
                fps: *fps,
                realtime: true,
            };
            // Probe once for the rate the encoder needs; a file that does not open now is
            // reported by the supervisor, which keeps trying.
            spec.fps = FileSource::open(path, &options, clock.clone())
                .map(|f| f.fps())
                .unwrap_or(fps.unwrap_or(25));
            let (path, clock) = (path.clone(), clock.clone());
            let factory: SourceFactory = Box::new(move || {
                Ok(Box::new(FileSource::open(&path, &options, clock.clone())?) as Box<dyn Source>)
            });
            (spec, factory)
        }
    }
}

/// Starts one camera's capture, privacy stage and encoders (or registers it disabled).
fn start_camera(
    cam: &CameraConfig,
    settings: &Settings,
    clock: &Arc<dyn Clock>,
    metrics: &Metrics,
    masks: &crate::masks::MaskBook,
) -> Result<Camera, Error> {
    let (mut spec, source) = camera_source(cam, &settings.board, clock);
    if !cam.enabled {
        return Ok(Camera::disabled(spec));
    }
    let (privacy, privacy_error, privacy_stats) = privacy_stage(cam, &settings.detection(), masks);
    spec.privacy_error = privacy_error;
    spec.privacy = privacy_stats;
    let encoder = || encoder_factory(settings);
    let parts = CameraParts {
        source,
        privacy,
        encoder: encoder(),
        original_encoder: spec.keep_originals.then(encoder),
    };
    Camera::spawn(spec, parts, clock.clone(), metrics, RetryPolicy::default()).map_err(|e| {
        Error::wrap(
            ErrorKind::Internal,
            format!("cannot start a thread for camera {}", cam.id),
            e,
        )
    })
}

/// The board's H.264 encoder.
fn encoder_factory(settings: &Settings) -> veil_media::pipeline::EncoderFactory {
    match &settings.board.encoder {
        EncoderProfile::Openh264 { .. } => openh264_factory(),
        EncoderProfile::V4l2m2m { device } => v4l2m2m_factory(device.clone()),
    }
}

fn start_cameras(
    settings: &Settings,
    clock: &Arc<dyn Clock>,
    metrics: &Metrics,
    masks: &crate::masks::MaskBook,
) -> Result<Vec<Camera>, Error> {
    settings
        .config
        .cameras
        .iter()
        .map(|cam| start_camera(cam, settings, clock, metrics, masks))
        .collect()
}

/// The footage store and the recorders writing into it; cameras added later record too.
struct Recording {
    store: Arc<veil_store::Store>,
    config: veil_core::config::StorageConfig,
    seal_key: Option<veil_store::SealKey>,
    /// Every camera's retention limits (cameras removed keep theirs until restart: their
    /// footage still ages out).
    limits: Mutex<Vec<crate::recorder::CameraLimits>>,
    recorders: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Recording {
    fn limits_of(cam: &CameraConfig) -> crate::recorder::CameraLimits {
        crate::recorder::CameraLimits {
            id: cam.id.to_string(),
            retention_days: cam.retention_days,
            max_bytes: cam.max_bytes,
        }
    }

    /// Starts the recorder of a running camera (its originals, sealed, when it keeps them).
    fn record(&self, cam: &Camera, config: &CameraConfig) {
        {
            let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
            limits.retain(|l| l.id != config.id.as_str());
            limits.push(Self::limits_of(config));
        }
        let (frames, seal) = if cam.keeps_originals() {
            let Some(key) = &self.seal_key else {
                tracing::error!(
                    camera = cam.id(),
                    "no originals key: this camera does not record"
                );
                return;
            };
            (cam.subscribe_originals(), Some(key.clone()))
        } else {
            (cam.subscribe(), None)
        };
        let Some(frames) = frames else { return };
        let limits = self
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match crate::recorder::spawn(
            self.store.clone(),
            cam.id().to_string(),
            frames,
            self.config.clone(),
            limits,
            seal,
        ) {
            Ok(handle) => self
                .recorders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle),
            Err(e) => tracing::error!(camera = cam.id(), error = %e, "cannot start recorder"),
        }
    }
}

/// Opens the footage store and starts a recorder per running camera, and the retention pass
/// (every minute). A store that cannot be opened is logged and the device runs without
/// recording rather than not at all.
fn start_recording(
    settings: &Settings,
    data: &DataDir,
    cameras: &[Camera],
    clock: &Arc<dyn Clock>,
) -> Option<Arc<Recording>> {
    let config = &settings.config.storage;
    if !config.record {
        return None;
    }
    let root = data.root.join("footage");
    let store = match veil_store::Store::open(&root, settings.device_id.as_str()) {
        Ok((store, report)) => {
            if !report.is_clean() {
                tracing::warn!(?report, "footage store recovered");
            }
            store
        }
        Err(e) => {
            tracing::error!(error = %e, "footage store unavailable; not recording");
            return None;
        }
    };
    // Every configured camera keeps its limits, recording or not (a disabled camera's old
    // footage still ages out).
    let ids: Vec<crate::recorder::CameraLimits> = settings
        .config
        .cameras
        .iter()
        .map(Recording::limits_of)
        .collect();
    crate::recorder::enforce_retention(&store, config, &ids, clock.wall_millis() as i64);
    // The originals key exists once a camera keeps originals, and stays (old footage needs it).
    let state = data.root.join("state");
    let keeps_originals = cameras.iter().any(Camera::keeps_originals);
    let seal_key = if keeps_originals {
        veil_evidence::keystore::secret(
            &state,
            veil_evidence::keystore::ORIGINALS_KEY,
            veil_evidence::keystore::ORIGINALS_LOSS,
        )
        .map(Some)
    } else {
        veil_evidence::keystore::existing(
            &state,
            veil_evidence::keystore::ORIGINALS_KEY,
            veil_evidence::keystore::ORIGINALS_LOSS,
        )
    };
    let seal_key = match seal_key {
        Ok(k) => k.map(veil_store::SealKey::from_bytes),
        Err(e) => {
            // Without its key, kept originals must not be recorded in the clear: those
            // cameras do not record (their anonymized stream still runs).
            tracing::error!(error = %e, "originals key unavailable; cameras keeping originals do not record");
            None
        }
    };
    if let Some(k) = &seal_key {
        store.set_seal_key(k.clone());
    }
    let recording = Arc::new(Recording {
        store: store.clone(),
        config: config.clone(),
        seal_key,
        limits: Mutex::new(ids),
        recorders: Mutex::new(Vec::new()),
    });
    for (cam, cam_config) in cameras.iter().zip(&settings.config.cameras) {
        recording.record(cam, cam_config);
    }
    tokio::spawn({
        let (recording, clock) = (Arc::downgrade(&recording), clock.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(recording) = recording.upgrade() else {
                    return;
                };
                let (store, config) = (recording.store.clone(), recording.config.clone());
                let ids = recording
                    .limits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let now = clock.wall_millis() as i64;
                let _ = tokio::task::spawn_blocking(move || {
                    crate::recorder::enforce_retention(&store, &config, &ids, now)
                })
                .await;
            }
        }
    });
    Some(recording)
}

/// Runs the daemon until a stop signal. Returns an error for failures after configuration
/// (data directory, port in use).
pub fn run(settings: Settings) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("veild-io")
        .enable_all()
        .build()
        .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start the async runtime", e))?;
    runtime.block_on(serve(settings))
}

async fn serve(mut settings: Settings) -> Result<(), Error> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let data = DataDir::open(&settings.data_dir)?;
    let state_dir = data.root.join("state");
    // The page's camera list (if any) first, then the masks drawn on the page over it.
    let camera_book = Arc::new(crate::cameras::CameraBook::open(
        &state_dir,
        &mut settings.config,
    ));
    let masks = Arc::new(crate::masks::MaskBook::open(
        &state_dir,
        &mut settings.config.cameras,
    ));
    let fleet_book = Arc::new(crate::fleet_settings::FleetBook::open(
        &state_dir,
        &mut settings.config,
    ));
    let upload = Arc::new(Mutex::new(settings.config.upload.clone()));
    let http = settings.config.http.clone();
    let listener = bind(http.listen, "http.listen")?;
    let redirect = http
        .redirect_listen
        .map(|addr| bind(addr, "http.redirect_listen"))
        .transpose()?;
    let identity = if http.tls {
        let identity = veil_web::tls::load_or_create(
            &state_dir,
            &format!("Veil {}", settings.device_id),
            &certificate_names(&settings),
        )?;
        // On the console so a technician can compare it with the browser's warning.
        tracing::info!(fingerprint = %identity.fingerprint, "HTTPS certificate (SHA-256)");
        Some(identity)
    } else {
        None
    };
    let tls = identity
        .as_ref()
        .map(|i| axum_server::tls_rustls::RustlsConfig::from_config(i.config.clone()));
    let audit = Arc::new(veil_store::audit::AuditLog::open(
        &state_dir.join("audit.jsonl"),
    )?);
    let auth = Arc::new(veil_web::Auth::open(
        &state_dir.join("web.sqlite3"),
        clock.clone(),
        false,
    )?);
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        &settings.board.name,
        settings.device_id.as_str(),
        settings.board.thermal.sensor.clone(),
    ));
    let cameras = start_cameras(&settings, &clock, &metrics, &masks)?;
    let recording = start_recording(&settings, &data, &cameras, &clock);
    tracing::info!(
        device = %settings.device_id,
        board = %settings.board.name,
        config = %settings.source,
        data_dir = %data.root.display(),
        cameras = cameras.len(),
        "veild starting"
    );
    let footage: Arc<dyn veil_incident::Footage> = match &recording {
        Some(r) => r.store.clone(),
        None => Arc::new(veil_incident::store::NoFootage),
    };
    let incidents = Arc::new(veil_incident::Incidents::open(
        &state_dir.join("incidents.sqlite3"),
        footage,
    )?);
    match incidents.sync_holds() {
        Ok((0, 0)) => {}
        Ok((placed, released)) => {
            tracing::info!(
                placed,
                released,
                "incident holds mended after an interrupted change"
            )
        }
        Err(e) => tracing::warn!(error = %e, "cannot check the incident projects' footage holds"),
    }
    let parts: Arc<IncidentParts> = {
        let incidents = incidents.clone();
        let auth = auth.clone();
        Arc::new(move |job: &veil_uplink::command::IncidentExport| {
            incident_parts(&incidents, &auth, job)
        })
    };
    let desk = recording.as_ref().and_then(|r| {
        open_desk(
            &settings,
            &data,
            r.store.clone(),
            audit.clone(),
            JobInputs {
                masks: masks.clone(),
                cameras: camera_book.clone(),
                upload: upload.clone(),
                incident_parts: parts.clone(),
            },
        )
    });
    let live = crate::live::LiveService::open(
        &state_dir,
        settings.board.max_live_encodes,
        clock.clone(),
        audit.clone(),
    )?;
    let device = Arc::new(Device {
        live: live.clone(),
        desk: desk.clone(),
        settings,
        clock: clock.clone(),
        metrics,
        cameras: Mutex::new(cameras),
        stopping: AtomicBool::new(false),
        uplink: Mutex::new(None),
        session: tokio::sync::Mutex::new(None),
        fleet_book,
        upload: upload.clone(),
        me: std::sync::OnceLock::new(),
        system: Mutex::new(crate::fleet::SystemProbe::new()),
        audit: audit.clone(),
        incidents: incidents.clone(),
        masks,
        camera_book,
        recording: recording.clone(),
        history: Mutex::new(std::collections::VecDeque::new()),
        auth: auth.clone(),
        thumbnails: Mutex::new(std::collections::HashMap::new()),
        thumbnail_times: Mutex::new(std::collections::HashMap::new()),
        registry_sink: Mutex::new(None),
        https_fingerprint: Mutex::new(identity.as_ref().map(|i| i.fingerprint.clone())),
        tls: tls.clone(),
    });
    let _ = device.me.set(Arc::downgrade(&device));
    let cameras_for_live: std::sync::Weak<dyn crate::live::LiveCameras> =
        Arc::downgrade(&device) as _;
    live.attach(cameras_for_live);
    live.set_cameras(live_cameras(&device.camera_book.list()));
    start_uplink(&device).await;

    let stop = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(wait_for_signal(device.clone(), stop.clone()));
    tokio::spawn(keep_history(device.clone()));
    tokio::spawn(keep_live(device.clone()));
    tokio::spawn(expire_incidents(device.clone()));
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(watchdog(device.clone(), interval));
    }

    let app = veil_web::router(Arc::new(veil_web::AppState {
        view: device.clone(),
        auth,
        audit,
        incidents,
    }))
    .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let handle = axum_server::Handle::new();
    let listen = http.listen;
    let scheme = if identity.is_some() { "https" } else { "http" };
    let server = async {
        match tls {
            Some(config) => {
                axum_server::from_tcp_rustls(listener, config)
                    .handle(handle.clone())
                    .serve(app)
                    .await
            }
            None => {
                axum_server::from_tcp(listener)
                    .handle(handle.clone())
                    .serve(app)
                    .await
            }
        }
    };
    if let Some(listener) = redirect {
        tokio::spawn(serve_redirects(listener, listen.port(), handle.clone()));
    }
    tokio::spawn({
        let (stop, handle) = (stop.clone(), handle.clone());
        async move {
            stop.notified().await;
            handle.graceful_shutdown(Some(HTTP_DRAIN));
        }
    });
    tracing::info!(%listen, scheme, "serving the web page and API");
    systemd::ready(&format!("serving on {scheme}://{listen}"));
    server
        .await
        .map_err(|e| Error::wrap(ErrorKind::Internal, "HTTP server failed", e))?;

    let live = device.live.clone();
    let _ = tokio::task::spawn_blocking(move || live.shutdown()).await;
    // Let the relays say goodbye to their endpoints (DELETE) while the runtime still runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(session) = device.session.lock().await.take() {
        // The retained state says offline before the cameras stop.
        session.stop().await;
    }
    let cameras = std::mem::take(&mut *device.cameras.lock().unwrap_or_else(|e| e.into_inner()));
    tokio::task::spawn_blocking(move || {
        for cam in &cameras {
            cam.request_stop();
        }
        drop(cameras); // joins every thread
    })
    .await
    .map_err(|e| Error::wrap(ErrorKind::Internal, "stopping cameras failed", e))?;
    // The cameras' streams are closed: each recorder closes its last segment and ends.
    tokio::task::spawn_blocking(move || {
        if let Some(recording) = recording {
            let recorders = std::mem::take(
                &mut *recording
                    .recorders
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            for r in recorders {
                let _ = r.join();
            }
        }
    })
    .await
    .map_err(|e| Error::wrap(ErrorKind::Internal, "stopping recorders failed", e))?;
    drop(data);
    tracing::info!("veild stopped");
    Ok(())
}

fn bind(addr: std::net::SocketAddr, key: &str) -> Result<std::net::TcpListener, Error> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        Error::wrap(
            ErrorKind::Unavailable,
            format!("cannot listen on {addr} ({key})"),
            e,
        )
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::wrap(ErrorKind::Internal, "listener", e))?;
    Ok(listener)
}

/// The names a browser may reach the page by, for the self-signed certificate.
fn certificate_names(settings: &Settings) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        format!("{}.local", settings.device_id),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
            names.push(format!("{host}.local"));
        }
    }
    let ip = settings.config.http.listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names.dedup();
    names
}

/// Plain HTTP: every request is sent to the same path on the HTTPS page.
async fn serve_redirects(
    listener: std::net::TcpListener,
    https_port: u16,
    handle: axum_server::Handle,
) {
    use axum::http::{HeaderMap, StatusCode, Uri, header};
    let redirect = move |headers: HeaderMap, uri: Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        // Strip a port (IPv6 literals keep their brackets).
        let host = match host.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => h,
            _ => host,
        };
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, format!("https://{host}{port}{path}"))],
        )
    };
    let app = axum::Router::new().fallback(redirect);
    if let Err(e) = axum_server::from_tcp(listener)
        .handle(handle)
        .serve(app.into_make_service())
        .await
    {
        tracing::error!(error = %e, "the HTTP redirect listener failed");
    }
}

/// The request desk, with a runner that exports jobs into `exports/` of the data directory
/// (signed with the device key, anonymized per the job's filter).
/// What export jobs read when they run: the cameras, masks and upload target in effect then,
/// and an incident's sequences, report and data.
struct JobInputs {
    masks: Arc<crate::masks::MaskBook>,
    cameras: Arc<crate::cameras::CameraBook>,
    upload: Arc<Mutex<Option<veil_core::config::UploadConfig>>>,
    incident_parts: Arc<IncidentParts>,
}

fn open_desk(
    settings: &Settings,
    data: &DataDir,
    store: Arc<veil_store::Store>,
    audit: Arc<veil_store::audit::AuditLog>,
    inputs: JobInputs,
) -> Option<Arc<crate::requests::Desk>> {
    let JobInputs {
        masks,
        cameras,
        upload,
        incident_parts,
    } = inputs;
    let state = data.root.join("state");
    let detection = settings.detection();
    let device_id = settings.device_id.to_string();
    let runner_store = store.clone();
    let runner_state = state.clone();
    let runner = move |job: &veil_uplink::command::ExportJob,
                       out: &std::path::Path,
                       progress: &(dyn Fn(f64) + Sync),
                       cancel: &std::sync::atomic::AtomicBool| {
        // The target in effect when the job runs (the page may have changed it).
        let upload = upload.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let prefix = upload
            .as_ref()
            .and_then(|u| u.prefix.clone())
            .unwrap_or_else(|| format!("{device_id}/"));
        let uploads = upload.is_some() || job.upload_urls.is_some();
        // An export a restart left complete is uploaded as it is (its journal stays valid);
        // anything else is made again from the footage.
        let manifest = match veil_evidence::export::verify(out, None) {
            Ok(_) => serde_json::from_slice::<serde_json::Value>(
                &std::fs::read(out.join("manifest.json"))
                    .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot read the manifest", e))?,
            )
            .map_err(|e| Error::internal(format!("manifest: {e}")))?,
            Err(_) => {
                let _ = std::fs::remove_dir_all(out);
                let _ = std::fs::remove_file(
                    runner_state
                        .join("uploads")
                        .join(format!("{}.json", job.job_id)),
                );
                let key = veil_evidence::export::device_key(&runner_state)?;
                // The cameras and masks in effect now, including changes made on the page.
                let camera = |id: &str| cameras.get(id);
                let filters = |id: &str| camera(id).map(|c| c.filter);
                let engines =
                    |id: &str, filter| export_engine(id, &masks.for_export(id), filter, &detection);
                // With an upload to follow, making the export is the first half of the job.
                let share = if uploads { 0.5 } else { 1.0 };
                let export_progress = |p: f64| progress(p * share);
                let identity = veil_evidence::export::Identity {
                    device_id: &device_id,
                    firmware: env!("CARGO_PKG_VERSION"),
                    key: &key,
                    filters: &filters,
                    engines: &engines,
                    watch: veil_evidence::export::Watch {
                        progress: &export_progress,
                        cancel,
                    },
                };
                let (stretches, attachments) = match &job.incident {
                    Some(incident) => incident_parts(incident)?,
                    None => (Vec::new(), Vec::new()),
                };
                let recipients = job
                    .incident
                    .iter()
                    .flat_map(|i| &i.recipients)
                    .map(|r| {
                        r.parse::<age::x25519::Recipient>()
                            .map_err(|e| Error::invalid_input(format!("recipient '{r}': {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let request = veil_evidence::export::ExportRequest {
                    stretches,
                    attachments,
                    cameras: job.cameras.clone(),
                    from_ms: job.from_ms,
                    to_ms: job.to_ms,
                    name: job.name.clone(),
                    description: job.description.clone(),
                    recipients,
                    filter: job
                        .filter
                        .as_deref()
                        .map(veil_evidence::export::parse_filter)
                        .transpose()?,
                };
                veil_evidence::export::export(&runner_store, &request, out, &identity)?
            }
        };
        if uploads {
            // Half way: the export is made, the upload starts.
            progress(0.5);
        }
        let files: Vec<veil_uplink::upload::Upload> = manifest["cameras"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["files"].as_array().cloned().unwrap_or_default())
            .chain(
                manifest["attachments"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            )
            .filter_map(|f| {
                let name = f["file"].as_str()?.to_string();
                Some(veil_uplink::upload::Upload {
                    path: out.join(&name),
                    bytes: f["bytes"].as_u64()?,
                    name,
                })
            })
            .collect();
        let mut result = serde_json::json!({
            "export_dir": out.display().to_string(),
            "files": files.len(),
            "signature": manifest["signature"]["value"],
        });
        if uploads {
            let summary = upload_export(
                job,
                out,
                &files,
                upload.as_ref(),
                &prefix,
                &runner_state,
                progress,
            )?;
            result["upload"] = serde_json::to_value(&summary).expect("summary serializes");
        }
        Ok(result)
    };
    let cameras = settings
        .config
        .cameras
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    match crate::requests::Desk::open(
        &state,
        data.root.join("exports"),
        store,
        audit,
        cameras,
        settings.config.requests.auto_approve,
        Box::new(runner),
    ) {
        Ok(desk) => Some(desk),
        Err(e) => {
            tracing::error!(error = %e, "request desk unavailable; video requests are refused");
            None
        }
    }
}

/// An uploader to the `[upload]` target with the device's credentials, keys under `prefix`.
fn uploader_for(
    u: &veil_core::config::UploadConfig,
    prefix: &str,
) -> Result<veil_uplink::upload::Uploader, Error> {
    use veil_uplink::upload::{Settings as UploadSettings, Target, Uploader};
    let target = Target::sigv4(
        &u.endpoint,
        &u.region,
        &u.bucket,
        &u.access_key,
        &u.secret_key,
        prefix,
    )?;
    let settings = UploadSettings {
        parallel: u.parallel as usize,
        part_size: u.part_size_mib as u64 * 1024 * 1024,
        max_bytes_per_second: u.max_mbit_per_s.map(|m| m as u64 * 125_000),
        ..Default::default()
    };
    let uploader = Uploader::new(target, settings);
    match &u.ca_file {
        Some(ca) => uploader.with_ca_file(ca),
        None => Ok(uploader),
    }
}

/// Uploads an export: with the job's presigned URLs, else with the device's `[upload]`
/// credentials under `<prefix><job id>/`; the manifest last. Resumes from
/// `state/uploads/<job id>.json`.
fn upload_export(
    job: &veil_uplink::command::ExportJob,
    out: &std::path::Path,
    files: &[veil_uplink::upload::Upload],
    upload: Option<&veil_core::config::UploadConfig>,
    prefix: &str,
    state: &std::path::Path,
    progress: &(dyn Fn(f64) + Sync),
) -> Result<veil_uplink::upload::Summary, Error> {
    use veil_uplink::upload::{Settings as UploadSettings, Target, Upload, Uploader};
    let manifest = Upload {
        path: out.join("manifest.json"),
        name: "manifest.json".into(),
        bytes: std::fs::metadata(out.join("manifest.json"))
            .map(|m| m.len())
            .unwrap_or(0),
    };
    let uploader = match (&job.upload_urls, upload) {
        (Some(urls), _) => {
            let urls = urls
                .iter()
                .map(|(k, v)| {
                    v.parse::<url::Url>()
                        .map(|u| (k.clone(), u))
                        .map_err(|e| Error::invalid_input(format!("upload URL for {k}: {e}")))
                })
                .collect::<Result<_, _>>()?;
            Uploader::new(Target::Presigned(urls), UploadSettings::default())
        }
        (None, Some(u)) => uploader_for(u, &format!("{prefix}{}/", job.job_id))?,
        (None, None) => return Err(Error::new(ErrorKind::NotConfigured, "no upload target")),
    };
    let journal = state.join("uploads");
    std::fs::create_dir_all(&journal)
        .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot create state/uploads", e))?;
    uploader.upload(
        files,
        &manifest,
        &journal.join(format!("{}.json", job.job_id)),
        &|done, total| progress(0.5 + 0.5 * done as f64 / total.max(1) as f64),
    )
}

/// Starts the fleet session with `[mqtt]` as in effect (stopping a running one first). A
/// session that cannot start (a bad CA file, say) is reported in status, not retried.
async fn start_uplink(device: &Arc<Device>) {
    let mut session = device.session.lock().await;
    if let Some(old) = session.take() {
        old.stop().await;
    }
    let config = device.fleet_book.get().mqtt;
    let state = match config.as_ref().map(|c| {
        veil_uplink::session::SessionSettings::from_config(c, device.settings.device_id.as_str())
    }) {
        None => None,
        Some(Ok(settings)) => {
            let started = veil_uplink::Session::start(settings, device.clone());
            if let Some(desk) = &device.desk {
                desk.set_events(started.event_sink());
            }
            device.live.set_events(started.event_sink());
            let sink = started.event_sink();
            device
                .incidents
                .set_listener(Box::new(move |event| sink.send(&event)));
            *device
                .registry_sink
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(started.registry_sink());
            let status = started.status().clone();
            *session = Some(started);
            Some(Ok(status))
        }
        Some(Err(e)) => {
            tracing::error!(error = %e, "fleet connection not started");
            Some(Err(e.to_string()))
        }
    };
    *device.uplink.lock().unwrap_or_else(|e| e.into_inner()) = state;
}

async fn wait_for_signal(device: Arc<Device>, stop: Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!("{name} received; stopping");
    device.stopping.store(true, Ordering::SeqCst);
    systemd::stopping();
    // notify_waiters wakes the server; notify_one stores a permit for the drain timer.
    stop.notify_waiters();
    stop.notify_one();
}

/// Pings the systemd watchdog while every camera thread shows signs of life; a hung thread
/// stops the pings so systemd restarts the daemon.
async fn watchdog(device: Arc<Device>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let since = device
            .clock
            .monotonic()
            .saturating_sub(STALL_LIMIT)
            .as_millis() as u64;
        let stalled: Vec<String> = device
            .cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|c| !c.alive_since(since))
            .map(|c| c.id().to_string())
            .collect();
        if stalled.is_empty() {
            systemd::watchdog();
        } else {
            tracing::error!(
                ?stalled,
                "camera threads stalled; withholding the watchdog ping"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_is_laid_out_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp/partial.seg"), b"half").unwrap();
        let first = DataDir::open(&root).unwrap();
        for sub in DATA_SUBDIRS {
            assert!(root.join(sub).is_dir(), "{sub}");
        }
        assert!(!root.join("tmp/partial.seg").exists());
        let err = DataDir::open(&root).err().expect("second open must fail");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("in use by another veild"));
        drop(first);
        DataDir::open(&root).unwrap();
    }
}
