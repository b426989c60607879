//! The web port: the device as the local page and API see it (`veil_web::DeviceView`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use veil_core::config::{CameraConfig, SourceConfig};
use veil_core::{Error, ErrorKind};
use veil_web::{DeviceInfo, DeviceView, FeatureState, Features, StatusResponse};

use super::device::*;
use super::jobs::uploader_for;
use super::media::*;
use crate::camera::Camera;

pub(super) fn shown_fleet(fleet: &crate::fleet_settings::Fleet) -> serde_json::Value {
    let mut value = serde_json::to_value(fleet).expect("fleet settings serialize");
    crate::fleet::redact(&mut value);
    value
}

/// A camera sent back from the page carries `***` where its secrets were shown: keep the
/// stored ones there.
pub(super) fn keep_secrets(new: &mut CameraConfig, old: &CameraConfig) {
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
                firmware_version: s.firmware_version.clone(),
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
        crate::systemd::reboot_soon(&self.settings.data_dir)?;
        tracing::warn!(by, "reboot requested");
        Ok(())
    }

    fn firmware_update(&self) -> serde_json::Value {
        self.ota.status()
    }

    fn bundle_dir(&self) -> std::path::PathBuf {
        self.ota.upload_dir().to_path_buf()
    }

    fn install_bundle(&self, file_name: &str, reboot: &str) -> Result<serde_json::Value, Error> {
        self.ota.install_uploaded(file_name, reboot)
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
