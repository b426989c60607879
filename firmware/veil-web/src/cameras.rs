//! Cameras added, changed and removed on the page, and the source test a technician runs
//! before saving. The body is a camera as in the config file's `[[cameras]]` (JSON keys are
//! the TOML keys; see docs/configuration.md).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use veil_core::ErrorKind;
use veil_core::config::{CameraConfig, SourceConfig};

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::{ApiError, App};

use crate::admin::blocking as device;

fn camera_id(id: &str) -> Result<(), ApiError> {
    veil_core::CameraId::new(id)
        .map(|_| ())
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e))
}

/// Every camera's configuration (RTSP passwords shown as `***`).
#[utoipa::path(get, path = "/api/cameras", tag = "cameras",
    responses((status = 200, description = "Cameras as in the config file's [[cameras]] (see docs/configuration.md)", body = Vec<Object>)))]
pub async fn list(State(app): State<App>) -> Result<axum::Json<Value>, ApiError> {
    let view = app.view.clone();
    Ok(axum::Json(json!(device(move || view.cameras()).await?)))
}

/// Adds a camera and starts it.
#[utoipa::path(post, path = "/api/cameras", tag = "cameras",
    request_body(content = Object, description = "A camera as in the config file's [[cameras]], e.g. {\"id\": \"gate\", \"source\": {\"kind\": \"rtsp\", \"url\": \"rtsp://…\"}}"),
    responses(
        (status = 201, description = "Added and started", body = Object),
        (status = 400, description = "A key is invalid; `field` names it (e.g. `source.fps`)", body = ApiError),
    ))]
pub async fn add(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    JsonBody(camera): JsonBody<CameraConfig>,
) -> Result<Response, ApiError> {
    let view = app.view.clone();
    let added = device(move || view.add_camera(camera)).await?;
    crate::admin::audit(
        &app,
        &caller.user,
        "camera.add",
        added.id.as_str(),
        Value::Null,
        json!(added),
    );
    Ok((StatusCode::CREATED, axum::Json(added)).into_response())
}

/// Replaces a camera's configuration and restarts it.
#[utoipa::path(put, path = "/api/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    request_body(content = Object, description = "The camera as in the config file's [[cameras]]; its id must stay the same. An RTSP password shown as *** is kept."),
    responses(
        (status = 200, description = "Changed and restarted", body = Object),
        (status = 400, description = "A key is invalid; `field` names it", body = ApiError),
        (status = 404, body = ApiError),
    ))]
pub async fn replace(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(camera): JsonBody<CameraConfig>,
) -> Result<axum::Json<CameraConfig>, ApiError> {
    camera_id(&id)?;
    if camera.id.as_str() != id {
        return Err(ApiError::field(
            "id",
            format!("must stay '{id}' (remove the camera and add a new one to rename it)"),
        ));
    }
    let view = app.view.clone();
    let subject = id.clone();
    let (before, after) = device(move || view.replace_camera(&id, camera)).await?;
    crate::admin::audit(
        &app,
        &caller.user,
        "camera.update",
        &subject,
        json!(before),
        json!(after),
    );
    Ok(axum::Json(after))
}

/// Stops and removes a camera; its footage stays until retention removes it.
#[utoipa::path(delete, path = "/api/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses((status = 204, description = "Removed"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn remove(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    camera_id(&id)?;
    let view = app.view.clone();
    let subject = id.clone();
    let removed = device(move || view.remove_camera(&id)).await?;
    crate::admin::audit(
        &app,
        &caller.user,
        "camera.remove",
        &subject,
        json!(removed),
        Value::Null,
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceTest {
    /// A source as in `cameras[].source`, e.g. {"kind": "v4l2", "device": "/dev/video0"}.
    #[schema(value_type = Object)]
    pub source: SourceConfig,
}

/// Opens a source and reads one frame: the "test connection" button.
#[utoipa::path(post, path = "/api/sources/test", tag = "cameras", request_body = SourceTest,
    responses(
        (status = 200, description = "A frame arrived: its size and the source's frame rate", body = Object),
        (status = 400, description = "The source is invalid; `field` names the key", body = ApiError),
        (status = 503, description = "The source did not deliver a frame; the message says why", body = ApiError),
        (status = 504, description = "No frame within 10 s", body = ApiError),
    ))]
pub async fn test_source(
    State(app): State<App>,
    JsonBody(test): JsonBody<SourceTest>,
) -> Result<axum::Json<Value>, ApiError> {
    let view = app.view.clone();
    Ok(axum::Json(
        device(move || view.test_source(test.source)).await?,
    ))
}
