//! The running device: its data directory, its parts (cameras, store, desks, sessions) and
//! what changes them while it runs. The ports (web, fleet, live) are views of it.
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veil_core::config::CameraConfig;
use veil_core::{Clock, Error, ErrorKind};

use super::media::*;
use crate::camera::Camera;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// A camera thread silent for longer than this stops the systemd watchdog pings.
pub(super) const STALL_LIMIT: Duration = Duration::from_secs(10);

/// The running device as the web layer sees it.
pub(super) struct Device {
    pub(super) settings: Settings,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) cameras: Mutex<Vec<Camera>>,
    pub(super) stopping: AtomicBool,
    /// The fleet session's state, once `[mqtt]` is configured; or why it could not start.
    pub(super) uplink: Mutex<Option<Result<Arc<veil_uplink::SessionStatus>, String>>>,
    /// The running fleet session (replaced when the page changes the broker).
    pub(super) session: tokio::sync::Mutex<Option<veil_uplink::Session>>,
    /// `[mqtt]` and `[upload]` as in effect (the config file's, or the page's).
    pub(super) fleet_book: Arc<crate::fleet_settings::FleetBook>,
    /// The upload target export jobs use, shared with the job runner.
    pub(super) upload: Arc<Mutex<Option<veil_core::config::UploadConfig>>>,
    /// This device, for restarting its fleet session from a `&self` method.
    pub(super) me: std::sync::OnceLock<std::sync::Weak<Device>>,
    pub(super) system: Mutex<crate::fleet::SystemProbe>,
    /// Video requests and export jobs (absent when nothing is recorded).
    pub(super) desk: Option<Arc<crate::requests::Desk>>,
    pub(super) audit: Arc<veil_store::audit::AuditLog>,
    pub(super) incidents: Arc<veil_incident::Incidents>,
    pub(super) masks: Arc<crate::masks::MaskBook>,
    /// Camera configurations as in effect (the config file's, or the page's list).
    pub(super) camera_book: Arc<crate::cameras::CameraBook>,
    pub(super) recording: Option<Arc<Recording>>,
    pub(super) https_fingerprint: Mutex<Option<String>>,
    /// The live TLS configuration (absent on plain-HTTP loopback), replaced on upload.
    pub(super) tls: Option<axum_server::tls_rustls::RustlsConfig>,
    /// Accounts and the site settings of the setup wizard.
    pub(super) auth: Arc<veil_web::Auth>,
    /// Each camera's registry picture, refreshed every [`THUMBNAIL_EVERY`].
    pub(super) thumbnails: Mutex<std::collections::HashMap<String, crate::fleet::Thumbnail>>,
    pub(super) thumbnail_times: Mutex<std::collections::HashMap<String, Duration>>,
    /// Publishes the registry again while the fleet session runs.
    pub(super) registry_sink: Mutex<Option<veil_uplink::session::RegistrySink>>,
    /// The dashboard's graphs: one sample per [`HISTORY_INTERVAL`], the last hour.
    pub(super) history: Mutex<std::collections::VecDeque<veil_web::HealthSample>>,
    /// Live view sessions to WHIP endpoints.
    pub(super) live: Arc<crate::live::LiveService>,
    /// Firmware updates ordered by the fleet.
    pub(super) ota: Arc<crate::ota::OtaService>,
}

pub(super) const HISTORY_INTERVAL: Duration = Duration::from_secs(30);
/// How old a registry thumbnail may get before it is taken again.
pub(super) const THUMBNAIL_EVERY: Duration = Duration::from_secs(600);
pub(super) const HISTORY_LEN: usize = 120;

impl Device {
    pub(super) fn desk(&self) -> Result<&crate::requests::Desk, Error> {
        self.desk.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                "this device records no footage (storage.record = false, or the store failed to \
                 open): there is nothing to request",
            )
        })
    }
}

/// Cameras changed on the page: started and stopped while everything else runs.
impl Device {
    pub(super) fn start_one(&self, config: &CameraConfig) -> Result<(), Error> {
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
    pub(super) fn stop_one(&self, id: &str) {
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
    pub(super) fn refresh_thumbnails(&self) {
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

    pub(super) fn publish_registry(&self) {
        let sink = self
            .registry_sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(sink) = sink {
            sink.send(&veil_uplink::Device::registry(self));
        }
    }

    pub(super) fn cameras_changed(&self) {
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
    pub(super) fn shown(&self, mut camera: CameraConfig) -> CameraConfig {
        if let Ok(masks) = self.masks.get(camera.id.as_str()) {
            camera.masks = masks;
        }
        let mut value = serde_json::to_value(&camera).expect("cameras serialize");
        crate::fleet::redact(&mut value);
        serde_json::from_value(value).unwrap_or(camera)
    }
}

/// Top-level keys `config.patch` applies while the device runs.
pub(super) const LIVE_KEYS: &[&str] = &["cameras", "mqtt", "upload"];

impl Device {
    /// The configuration in effect: the config file's, with the page's cameras, masks and
    /// fleet settings.
    pub(super) fn effective_config(&self) -> veil_core::config::Config {
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
    pub(super) fn patch_config(
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
    pub(super) fn fleet_from_form(
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

/// What the live desk knows of each running camera.
pub(super) fn live_cameras(
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

/// Starts the fleet session with `[mqtt]` as in effect (stopping a running one first). A
/// session that cannot start (a bad CA file, say) is reported in status, not retried.
pub(super) async fn start_uplink(device: &Arc<Device>) {
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
            device.ota.set_events(started.event_sink());
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
