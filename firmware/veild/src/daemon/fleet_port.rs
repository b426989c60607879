//! The fleet port: the device as the MQTT session sees it (`veil_uplink::Device`), and the
//! start of that session.

use veil_core::{Error, ErrorKind};
use veil_web::DeviceView;

use super::device::*;

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
            Command::OtaInstall(order) => self.ota.install(order.clone()),
            Command::OtaStatus => Ok(serde_json::json!({ "job": self.ota.status() })),
            Command::OtaCancel { job_id } => self.ota.cancel(job_id),
            Command::NotYetAvailable(name) => Err(crate::fleet::not_yet(name)),
        }
    }
}
