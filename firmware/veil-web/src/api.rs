use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use veil_core::ErrorKind;

use crate::admin;
use crate::{ApiError, App};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Veil local API",
        description = "The HTTP API of a Veil gateway, served by `veild` on the local network."
    ),
    paths(healthz, metrics, status, history, openapi, snapshot, original, preview,
        admin::setup_state, admin::setup, admin::login, admin::logout, admin::session,
        admin::change_password, admin::users, admin::create_user, admin::update_user,
        admin::delete_user, crate::recordings::timeline, crate::recordings::create, crate::recordings::list, crate::recordings::file, crate::cameras::list, crate::cameras::add, crate::cameras::replace, crate::cameras::remove, crate::cameras::test_source, admin::masks, admin::set_masks, admin::install_certificate, admin::logs, admin::reboot, admin::firmware_update, admin::upload_bundle, crate::fleet::get, crate::fleet::put, crate::fleet::test, admin::audit_log, admin::audit_csv, admin::requests, admin::decide, admin::live_sessions, admin::decide_live, admin::stop_live, admin::scrape_tokens, admin::create_scrape_token, admin::revoke_scrape_token,
        crate::incidents::properties, crate::incidents::save_properties, crate::incidents::list, crate::incidents::create, crate::incidents::get, crate::incidents::update, crate::incidents::delete, crate::incidents::add_comment, crate::incidents::edit_comment, crate::incidents::add_call, crate::incidents::add_sequences, crate::incidents::remove_sequence, crate::incidents::report_html, crate::incidents::report_pdf, crate::incidents::export),
    components(schemas(ApiError, Health, StatusResponse)),
    modifiers(&SessionCookie),
    security(("session" = []))
)]
pub struct ApiDoc;

/// Sign-in is a cookie; changes also need the `X-CSRF-Token` header from `/api/session`.
struct SessionCookie;

impl utoipa::Modify for SessionCookie {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::SESSION_COOKIE,
                "Set by POST /api/login or /api/setup.",
            ))),
        );
        // The answers the guard and the body reader give on every route they apply to, so
        // each operation documents every status it can return.
        use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
        let error = |what: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(what)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ApiError")))
                            .build(),
                    )
                    .build(),
            )
        };
        let public = ["/healthz", "/api/setup", "/api/login"];
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.patch, true),
                (&mut item.delete, false),
            ];
            for (op, with_body) in ops {
                let Some(op) = op.as_mut() else { continue };
                let responses = &mut op.responses.responses;
                let mut add = |code: &str, what: &str| {
                    responses.entry(code.into()).or_insert_with(|| error(what));
                };
                if !public.contains(&path.as_str()) {
                    add("401", "Not signed in, or the session expired");
                    add(
                        "403",
                        "The role may not do this, or (on changes) the CSRF token or origin is wrong",
                    );
                } else if with_body {
                    add("403", "Sent from another site's page");
                }
                if with_body && op.request_body.is_some() {
                    add(
                        "400",
                        "Malformed JSON or an invalid field (`field` names it)",
                    );
                    add("413", "The body is larger than 64 KiB");
                    add("415", "The body is not application/json");
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    add("400", "An invalid parameter");
                }
            }
        }
    }
}

/// Device health over the last hour, sampled by the device (oldest first).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HealthHistory {
    /// Seconds between samples.
    pub interval_s: u32,
    pub samples: Vec<HealthSample>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthSample {
    /// ms since the Unix epoch.
    pub t: u64,
    /// CPU use of the whole device, percent.
    pub cpu: f64,
    /// Hottest sensor, °C; null where the board reports none.
    pub temp_c: Option<f64>,
    /// Used share of the disk holding the data directory, percent.
    pub disk_used_pct: f64,
    /// Frames per second captured, by camera id.
    pub fps: std::collections::BTreeMap<String, f64>,
}

/// Liveness of the daemon.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` with a reason.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the device is and how each part is doing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    pub device: DeviceInfo,
    pub cameras: Vec<CameraStatus>,
    pub features: Features,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceInfo {
    pub id: String,
    pub name: String,
    /// Board profile in use.
    pub board: String,
    pub firmware_version: String,
    pub uptime_seconds: u64,
    /// Wall clock of the device, ms since the Unix epoch (to spot a wrong clock on site).
    pub time_ms: u64,
    /// SHA-256 fingerprint of the HTTPS certificate (`AA:BB:…`), to compare with the one
    /// printed on the console before trusting the page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    #[default]
    Starting,
    Running,
    /// Failed and waiting to retry; see `last_error`.
    Retrying,
    Disabled,
    Stopped,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CameraStatus {
    pub id: String,
    pub name: String,
    /// Source kind: `synthetic`, `file`, `rtsp` or `v4l2`.
    pub source: String,
    /// Privacy filter: `motion` or `masks-only`.
    pub filter: String,
    /// Number of static privacy masks.
    pub masks: u32,
    pub width: u32,
    pub height: u32,
    pub state: CameraState,
    /// Frames per second captured, over the last second.
    pub fps: f64,
    /// Frames captured since start.
    pub frames_total: u64,
    /// Frames lost anywhere before the encoder (source behind its rate, a busy stage).
    pub frames_dropped: u64,
    /// Frames encoded since start.
    pub frames_encoded: u64,
    /// Frames per second encoded.
    pub fps_encoded: f64,
    /// Encoded bitrate, kbit/s.
    pub bitrate_kbps: f64,
    /// Encoder in use: `openh264` (software) or `v4l2m2m` (hardware); empty until the first frame.
    pub encoder: String,
    /// Encode time of the last frame, ms.
    pub encode_ms: f64,
    /// Capture to encoded, last frame, ms.
    pub latency_ms: f64,
    /// Frames waiting in the privacy and encoder queues.
    pub queue_depth: u64,
    /// Frames the privacy engine blanked whole since start, because no detection could
    /// vouch for them (detector too slow, failed or not yet answered). Should stay near 0.
    pub frames_blanked: u64,
    /// Frames let out with every moving region hidden, because the detection was too old to
    /// vouch for what moved (the still background visible): the detector is falling behind.
    pub frames_regional: u64,
    /// Why the last blanked frame was blanked, e.g. `faces: detection too old`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blank_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Services that need configuration; unconfigured ones are reported, not retried in a loop.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Features {
    pub mqtt: FeatureState,
    pub upload: FeatureState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FeatureState {
    NotConfigured,
    Connected,
    Disconnected { reason: String },
}

#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses(
        (status = 200, description = "The daemon runs", body = Health),
        (status = 503, description = "The daemon is stopping or a vital part failed", body = Health),
    ))]
pub async fn healthz(State(app): State<App>) -> Response {
    match app.view.health() {
        Ok(()) => Json(Health {
            status: "ok".into(),
            reason: None,
        })
        .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
}

/// Signed in (system: view), or a scraper with `Authorization: Bearer <scrape token>`.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.view.metrics(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/status", tag = "system",
    responses((status = 200, description = "Device, cameras and services", body = StatusResponse)))]
pub async fn status(State(app): State<App>) -> Json<StatusResponse> {
    Json(app.view.status())
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "system",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// Largest width of the picture in pixels, 16 to 1920 (default 640). The frame is shrunk by
    /// a whole factor, so the result may be narrower.
    width: Option<u32>,
}

/// A JPEG of the camera's output as it leaves the privacy stage: what any viewer would see.
#[utoipa::path(get, path = "/api/cameras/{id}/snapshot.jpg", tag = "cameras",
    params(("id" = String, Path, description = "Camera id"), SnapshotQuery),
    responses(
        (status = 200, description = "The picture", content_type = "image/jpeg", body = Vec<u8>),
        (status = 400, description = "Bad camera id or width", body = ApiError),
        (status = 404, description = "No such camera", body = ApiError),
        (status = 503, description = "The camera delivers no frames now", body = ApiError),
    ))]
pub async fn snapshot(
    State(app): State<App>,
    Path(id): Path<String>,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let width = picture_request(&id, query)?;
    let jpeg = crate::admin::blocking(move || app.view.snapshot(&id, width)).await?;
    Ok(jpeg_response(jpeg))
}

/// The width asked for (16–1920, default 640), once the camera id is a valid one.
fn picture_request(
    id: &str,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Result<u32, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.body_text()))?;
    let width = query.width.unwrap_or(640);
    if !(16..=1920).contains(&width) {
        return Err(ApiError::new(
            ErrorKind::InvalidInput,
            format!("width must be 16 to 1920, found {width}"),
        ));
    }
    veil_core::CameraId::new(id).map_err(|e| ApiError::new(ErrorKind::InvalidInput, e))?;
    Ok(width)
}

fn jpeg_response(jpeg: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/status/history", tag = "system",
    responses((status = 200, description = "CPU, temperature, disk and frame rates over the last hour", body = HealthHistory)))]
pub async fn history(State(app): State<App>) -> Json<HealthHistory> {
    Json(app.view.history())
}

/// Live MJPEG streams open at once; each costs a JPEG encode per frame on the device.
const MAX_PREVIEWS: usize = 4;
static PREVIEWS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct PreviewSlot;

impl Drop for PreviewSlot {
    fn drop(&mut self) {
        PREVIEWS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// Largest width of the picture in pixels, 16 to 1920 (default 640).
    width: Option<u32>,
    /// See the camera through this filter, as a live session with it would (default: the
    /// camera's own). Another filter than the camera's takes one of the board's live encodes
    /// while the preview is open, or is refused with 429 when none is free.
    filter: Option<String>,
}

/// The camera's anonymized output as a live MJPEG stream (5 pictures a second), for the
/// page's preview: exactly what leaves the privacy stage, through the camera's filter or the
/// one a consumer's session uses. Ends when the camera stops delivering or the viewer goes.
#[utoipa::path(get, path = "/api/cameras/{id}/preview.mjpg", tag = "cameras",
    params(("id" = String, Path, description = "Camera id"), PreviewQuery),
    responses(
        (status = 200, description = "multipart/x-mixed-replace stream of JPEGs", content_type = "multipart/x-mixed-replace", body = Vec<u8>),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 429, description = "The filter needs a live encode and none is free", body = ApiError),
        (status = 503, description = "No frames now, or too many previews open", body = ApiError),
    ))]
pub async fn preview(
    State(app): State<App>,
    Path(id): Path<String>,
    query: Result<Query<PreviewQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.body_text()))?;
    let width = picture_request(&id, Ok(Query(SnapshotQuery { width: query.width })))?;
    if PREVIEWS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_PREVIEWS {
        PREVIEWS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            format!("{MAX_PREVIEWS} live previews are open already; close one"),
        ));
    }
    let slot = PreviewSlot;
    let feed: Arc<dyn crate::PreviewFeed> = match query.filter {
        Some(filter) => {
            let (view, id) = (app.view.clone(), id.clone());
            crate::admin::blocking(move || view.open_preview(&id, &filter)).await?
        }
        None => Arc::new(OwnStream {
            view: app.view.clone(),
            camera: id.clone(),
        }),
    };
    // The first picture decides the status code; later failures end the stream.
    let first = {
        let feed = feed.clone();
        crate::admin::blocking(move || feed.jpeg(width)).await?
    };
    let part = |jpeg: &[u8]| {
        let mut out = format!(
            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )
        .into_bytes();
        out.extend_from_slice(jpeg);
        out.extend_from_slice(b"\r\n");
        axum::body::Bytes::from(out)
    };
    let first = part(&first);
    // The feed (and with it the preview's hold on an encode) lives as long as the stream.
    let stream = futures::stream::unfold(
        (Some(first), feed, slot),
        move |(first, feed, slot)| async move {
            if let Some(bytes) = first {
                return Some((Ok::<_, std::io::Error>(bytes), (None, feed, slot)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let next = feed.clone();
            let jpeg = tokio::task::spawn_blocking(move || next.jpeg(width))
                .await
                .ok()?
                .ok()?;
            Some((Ok(part(&jpeg)), (None, feed, slot)))
        },
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "multipart/x-mixed-replace; boundary=frame",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// The camera's own anonymized output, as a preview feed.
struct OwnStream {
    view: crate::SharedView,
    camera: String,
}

impl crate::PreviewFeed for OwnStream {
    fn jpeg(&self, max_width: u32) -> Result<Vec<u8>, veil_core::Error> {
        self.view.snapshot(&self.camera, max_width)
    }
}

/// The picture as captured, before the privacy stage: only for admins, only for a camera whose
/// policy keeps originals, and every view is an audit entry.
#[utoipa::path(get, path = "/api/cameras/{id}/original.jpg", tag = "cameras",
    params(("id" = String, Path, description = "Camera id"), SnapshotQuery),
    responses(
        (status = 200, description = "The picture as captured", content_type = "image/jpeg", body = Vec<u8>),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, description = "The camera keeps no originals", body = ApiError),
        (status = 503, description = "The camera delivers no frames now", body = ApiError),
    ))]
pub async fn original(
    State(app): State<App>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    Path(id): Path<String>,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let width = picture_request(&id, query)?;
    let (view, camera) = (app.view.clone(), id.clone());
    let jpeg = crate::admin::blocking(move || view.original_snapshot(&camera, width)).await?;
    crate::admin::audit(
        &app,
        &caller.user,
        "camera.view_original",
        &id,
        serde_json::Value::Null,
        serde_json::json!({ "width": width }),
    );
    Ok(jpeg_response(jpeg))
}

pub async fn no_such_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!(
            "no API route {method} {}; see /api/openapi.json",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod openapi_file {
    use utoipa::OpenApi;

    /// docs/openapi.json is the generated document, committed so it can be read and diffed
    /// without a device. `VEIL_BLESS=1 cargo test -p veil-web` rewrites it.
    /// A parameter documented `in: path` must be in the path; query strings are `in: query`
    /// (generated clients break otherwise).
    #[test]
    fn every_parameter_is_where_the_route_reads_it() {
        let doc = serde_json::to_value(super::ApiDoc::openapi()).unwrap();
        let mut wrong = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default();
                    let in_path = path.contains(&format!("{{{name}}}"));
                    if in_path != (p["in"] == "path") {
                        wrong.push(format!("{method} {path}: {name} in {}", p["in"]));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn committed_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = super::ApiDoc::openapi().to_pretty_json().unwrap() + "\n";
        if std::env::var_os("VEIL_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is out of date: run `VEIL_BLESS=1 cargo test -p veil-web`"
        );
    }
}
