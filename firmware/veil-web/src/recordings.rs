//! Recordings: a timeline per camera with its gaps, exports of a range with their progress,
//! and the export's files (MP4s to play or download, the signed manifest).

use std::path::PathBuf;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt;
use utoipa::{IntoParams, ToSchema};
use veil_core::ErrorKind;

use crate::admin::blocking;
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::{ApiError, App};

/// What is recorded of a camera in a window, and where footage is missing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Timeline {
    pub camera: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Stretches with footage (segments closer than 2 s merged), oldest first.
    pub spans: Vec<Span>,
    /// Stretches of the window without footage.
    pub gaps: Vec<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Span {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The longest window one timeline covers.
pub const MAX_WINDOW_MS: i64 = 7 * 86_400_000;

fn time(field: &str, text: &str) -> Result<i64, ApiError> {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            ApiError::field(
                field,
                format!("'{text}' is not an RFC 3339 time such as 2026-11-23T08:00:00Z"),
            )
        })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// Camera id.
    camera: String,
    /// RFC 3339 start of the window (default: an hour before `to`).
    from: Option<String>,
    /// RFC 3339 end of the window (default: now). At most 7 days after `from`.
    to: Option<String>,
}

#[utoipa::path(get, path = "/api/recordings", tag = "recordings", params(TimelineQuery),
    responses(
        (status = 200, description = "Footage and gaps in the window", body = Timeline),
        (status = 400, body = ApiError), (status = 404, description = "No such camera or no footage of it", body = ApiError),
    ))]
pub async fn timeline(
    State(app): State<App>,
    query: Result<Query<TimelineQuery>, QueryRejection>,
) -> Result<axum::Json<Timeline>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.body_text()))?;
    veil_core::CameraId::new(q.camera.as_str()).map_err(|e| ApiError::field("camera", e))?;
    let to = match &q.to {
        Some(t) => time("to", t)?,
        None => jiff::Timestamp::now().as_millisecond(),
    };
    let from = match &q.from {
        Some(f) => time("from", f)?,
        None => to - 3_600_000,
    };
    if from >= to || to - from > MAX_WINDOW_MS {
        return Err(ApiError::field(
            "from",
            "the window must start before it ends and span at most 7 days",
        ));
    }
    let view = app.view.clone();
    let t = blocking(move || view.timeline(&q.camera, from, to)).await?;
    Ok(axum::Json(t))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportForm {
    /// Camera ids.
    pub cameras: Vec<String>,
    /// RFC 3339.
    pub from: String,
    /// RFC 3339; less than a day after `from`.
    pub to: String,
    /// The filter the footage is anonymized with on the way out (default: each camera's).
    pub filter: Option<String>,
}

/// Exports a range: a job that makes the signed MP4s (≤ 60 minutes each) on the device.
#[utoipa::path(post, path = "/api/exports", tag = "recordings", request_body = ExportForm,
    responses(
        (status = 201, description = "The job, QUEUED", body = Object),
        (status = 400, body = ApiError), (status = 404, description = "No footage of a camera in the range", body = ApiError),
    ))]
pub async fn create(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    JsonBody(form): JsonBody<ExportForm>,
) -> Result<Response, ApiError> {
    let from = time("from", &form.from)?;
    let to = time("to", &form.to)?;
    if form.cameras.is_empty() || form.cameras.len() > 16 {
        return Err(ApiError::field("cameras", "name 1 to 16 cameras"));
    }
    for (i, c) in form.cameras.iter().enumerate() {
        veil_core::CameraId::new(c.as_str())
            .map_err(|e| ApiError::field(&format!("cameras[{i}]"), e))?;
    }
    if from >= to {
        return Err(ApiError::field("to", "must be after from"));
    }
    let view = app.view.clone();
    let by = caller.user.clone();
    let job =
        blocking(move || view.create_export(&form.cameras, from, to, form.filter.as_deref(), &by))
            .await?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(job)).into_response())
}

#[utoipa::path(get, path = "/api/exports", tag = "recordings",
    responses((status = 200, description = "Export jobs, newest first, with state and progress", body = Vec<Object>)))]
pub async fn list(State(app): State<App>) -> Result<axum::Json<Value>, ApiError> {
    let view = app.view.clone();
    let jobs = blocking(move || view.requests()).await?;
    Ok(axum::Json(jobs.get("jobs").cloned().unwrap_or(json!([]))))
}

/// A job id or file name: letters, digits, `.`, `_`, `-`; no path, nothing hidden.
fn plain_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!(
                "'{}' is not a file of an export (letters, digits, '.', '_', '-' only)",
                name.escape_default()
            ),
        ))
    }
}

/// One file of a finished export: an MP4 (plays in the page; byte ranges supported), an
/// age-encrypted MP4, or the signed `manifest.json`.
#[utoipa::path(get, path = "/api/exports/{job}/files/{name}", tag = "recordings",
    params(("job" = String, Path, description = "Job id"), ("name" = String, Path, description = "File name from the manifest")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "A byte range of it", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, description = "The job has not finished", body = ApiError),
    ))]
pub async fn file(
    State(app): State<App>,
    Path((job, name)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    plain_name("job", &job)?;
    plain_name("name", &name)?;
    let view = app.view.clone();
    let path: PathBuf = blocking(move || view.export_file(&job, &name)).await?;
    let mime = match path.extension().and_then(|e| e.to_str()) {
        Some("mp4") => "video/mp4",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let res =
        tower_http::services::ServeFile::new_with_mime(&path, &mime.parse().expect("valid mime"))
            .oneshot(req)
            .await
            .map_err(|e| {
                ApiError::new(ErrorKind::Unavailable, format!("cannot read the file: {e}"))
            })?;
    Ok(res.into_response())
}
