//! Export jobs as the daemon runs them: the request desk with a runner that exports into
//! `exports/` (signed with the device key, anonymized per the job's filter) and uploads to the
//! `[upload]` target; an incident export's parts.

use std::sync::{Arc, Mutex};

use veil_core::{Error, ErrorKind};

use super::data_dir::DataDir;
use super::media::*;
use crate::settings::Settings;

/// What an incident export carries: the project's sequences as stretches of footage, and its
/// report and data as attachments (made when the job runs, so they are current).
pub(super) type IncidentParts = dyn Fn(
        &veil_uplink::command::IncidentExport,
    ) -> Result<
        (
            Vec<veil_evidence::export::Stretch>,
            Vec<veil_evidence::export::Attachment>,
        ),
        Error,
    > + Send
    + Sync;

pub(super) fn incident_parts(
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

/// The request desk, with a runner that exports jobs into `exports/` of the data directory
/// (signed with the device key, anonymized per the job's filter).
/// What export jobs read when they run: the cameras, masks and upload target in effect then,
/// and an incident's sequences, report and data.
pub(super) struct JobInputs {
    pub(super) masks: Arc<crate::masks::MaskBook>,
    pub(super) cameras: Arc<crate::cameras::CameraBook>,
    pub(super) upload: Arc<Mutex<Option<veil_core::config::UploadConfig>>>,
    pub(super) incident_parts: Arc<IncidentParts>,
}

pub(super) fn open_desk(
    settings: &Settings,
    data: &DataDir,
    store: Arc<veil_store::Store>,
    audit: Arc<veil_store::audit::AuditLog>,
    clock: Arc<dyn veil_core::Clock>,
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
    let firmware = settings.firmware_version.clone();
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
                    firmware: &firmware,
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
        clock,
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
pub(super) fn uploader_for(
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
pub(super) fn upload_export(
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
