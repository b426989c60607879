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
    paths(healthz, metrics, status, openapi, snapshot,
        admin::setup_state, admin::setup, admin::login, admin::logout, admin::session,
        admin::change_password, admin::users, admin::create_user, admin::update_user,
        admin::delete_user, admin::masks, admin::set_masks, admin::audit_log, admin::audit_csv, admin::requests, admin::decide),
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
    }
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
    let Query(query) = query.map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.body_text()))?;
    let width = query.width.unwrap_or(640);
    if !(16..=1920).contains(&width) {
        return Err(ApiError::new(
            ErrorKind::InvalidInput,
            format!("width must be 16 to 1920, found {width}"),
        ));
    }
    veil_core::CameraId::new(id.as_str()).map_err(|e| ApiError::new(ErrorKind::InvalidInput, e))?;
    let jpeg = tokio::task::spawn_blocking(move || app.view.snapshot(&id, width))
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("snapshot task failed: {e}")))??;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response())
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
