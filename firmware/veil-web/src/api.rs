use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use veil_core::ErrorKind;

use crate::{ApiError, SharedView};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Veil local API",
        description = "The HTTP API of a Veil gateway, served by `veild` on the local network."
    ),
    paths(healthz, metrics, status, openapi, snapshot),
    components(schemas(ApiError, Health, StatusResponse))
)]
pub struct ApiDoc;

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

#[utoipa::path(get, path = "/healthz", tag = "system",
    responses(
        (status = 200, description = "The daemon runs", body = Health),
        (status = 503, description = "The daemon is stopping or a vital part failed", body = Health),
    ))]
pub async fn healthz(State(view): State<SharedView>) -> Response {
    match view.health() {
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
pub async fn metrics(State(view): State<SharedView>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        view.metrics(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/status", tag = "system",
    responses((status = 200, description = "Device, cameras and services", body = StatusResponse)))]
pub async fn status(State(view): State<SharedView>) -> Json<StatusResponse> {
    Json(view.status())
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
    State(view): State<SharedView>,
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
    let jpeg = tokio::task::spawn_blocking(move || view.snapshot(&id, width))
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
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::{DeviceView, router};

    /// A fixed device for router tests (the daemon supplies the real one).
    struct FixedDevice {
        stopping: AtomicBool,
    }

    impl DeviceView for FixedDevice {
        fn health(&self) -> Result<(), String> {
            if self.stopping.load(Ordering::SeqCst) {
                Err("stopping".into())
            } else {
                Ok(())
            }
        }
        fn status(&self) -> StatusResponse {
            StatusResponse {
                device: DeviceInfo {
                    id: "dev-1".into(),
                    name: "Lab".into(),
                    board: "x86_64-dev".into(),
                    firmware_version: "0.1.0".into(),
                    uptime_seconds: 3,
                    time_ms: 1,
                },
                cameras: vec![],
                features: Features {
                    mqtt: FeatureState::NotConfigured,
                    upload: FeatureState::NotConfigured,
                },
            }
        }
        fn metrics(&self) -> String {
            "# EOF\n".into()
        }
        fn snapshot(&self, camera: &str, max_width: u32) -> Result<Vec<u8>, veil_core::Error> {
            match camera {
                "gate" => Ok(format!("jpeg {max_width}").into_bytes()),
                "dark" => Err(veil_core::Error::new(
                    ErrorKind::Unavailable,
                    "camera dark delivers no frames",
                )),
                _ => Err(veil_core::Error::not_found(format!("no camera '{camera}'"))),
            }
        }
    }

    fn app() -> (Arc<FixedDevice>, axum::Router) {
        let dev = Arc::new(FixedDevice {
            stopping: AtomicBool::new(false),
        });
        (dev.clone(), router(dev))
    }

    async fn get(app: &axum::Router, path: &str) -> (StatusCode, String, String) {
        let res = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let ctype = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn healthz_follows_the_daemon() {
        let (dev, app) = app();
        let (status, _, body) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"status":"ok"}"#);
        dev.stopping.store(true, Ordering::SeqCst);
        let (status, _, body) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("stopping"));
    }

    #[tokio::test]
    async fn status_reports_unconfigured_services() {
        let (_, app) = app();
        let (status, ctype, body) = get(&app, "/api/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["features"]["mqtt"]["state"], "not_configured");
        assert_eq!(v["device"]["board"], "x86_64-dev");
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let (_, app) = app();
        let (status, ctype, _) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("application/openmetrics-text"));
    }

    #[tokio::test]
    async fn unknown_api_routes_answer_json_404() {
        let (_, app) = app();
        let (status, ctype, body) = get(&app, "/api/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ctype, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "not_found");
        assert!(v["message"].as_str().unwrap().contains("GET /api/nope"));
    }

    #[tokio::test]
    async fn openapi_documents_every_route() {
        let (_, app) = app();
        let (status, _, body) = get(&app, "/api/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for path in ["/healthz", "/metrics", "/api/status", "/api/openapi.json"] {
            assert!(
                v["paths"][path]["get"].is_object(),
                "{path} missing from OpenAPI"
            );
        }
    }

    #[tokio::test]
    async fn snapshots_validate_their_input_and_map_errors() {
        let (_, app) = app();
        let (status, ctype, body) = get(&app, "/api/cameras/gate/snapshot.jpg?width=320").await;
        assert_eq!(
            (status, ctype.as_str(), body.as_str()),
            (StatusCode::OK, "image/jpeg", "jpeg 320")
        );
        let (_, _, body) = get(&app, "/api/cameras/gate/snapshot.jpg").await;
        assert_eq!(body, "jpeg 640");
        for (path, want) in [
            (
                "/api/cameras/gate/snapshot.jpg?width=5000",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/cameras/gate/snapshot.jpg?width=wide",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/cameras/Bad%20Id/snapshot.jpg",
                StatusCode::BAD_REQUEST,
            ),
            ("/api/cameras/nope/snapshot.jpg", StatusCode::NOT_FOUND),
            (
                "/api/cameras/dark/snapshot.jpg",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ] {
            let (status, ctype, body) = get(&app, path).await;
            assert_eq!(status, want, "{path}: {body}");
            assert_eq!(ctype, "application/json", "{path}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{path}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn pages_fall_back_to_the_app_and_missing_files_are_404() {
        let (_, app) = app();
        let (status, ctype, _) = get(&app, "/cameras").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ctype.starts_with("text/html"));
        let (status, _, _) = get(&app, "/assets/missing.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = get(&app, "/../../etc/passwd").await;
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
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
