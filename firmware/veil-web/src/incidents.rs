//! Incident properties (admins) and incident projects (operators): the HTTP face of
//! `veil_incident`. Admin changes to properties, and the creation, deletion, report and export
//! of a project, go to the audit log too; everything done to a project goes to its own
//! activity log.

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use veil_core::{Error, ErrorKind};
use veil_incident::model::{ProjectForm, Properties, SequenceForm};
use veil_incident::report::{self, Clockface};
use veil_incident::store::{Call, CallForm, Comment, ListQuery, Project, ProjectPage, Sequence};

use crate::admin::{audit, blocking};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::{ApiError, App};

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A project number from the path.
fn project_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::new(
            ErrorKind::InvalidInput,
            format!(
                "'{}' is not a project number",
                text.chars().take(40).collect::<String>()
            ),
        )
    })
}

fn item_id(what: &str, text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::new(
            ErrorKind::InvalidInput,
            format!("'{text}' is not a {what} number"),
        )
    })
}

#[utoipa::path(get, path = "/api/incident-properties", tag = "incidents",
    responses((status = 200, description = "Types, statuses, categories, data fields, retention and report title", body = Properties)))]
pub async fn properties(State(app): State<App>) -> Result<axum::Json<Properties>, ApiError> {
    let incidents = app.incidents.clone();
    Ok(axum::Json(blocking(move || incidents.properties()).await?))
}

/// Saves the properties. Send the `version` you loaded: a save on top of another admin's is
/// refused (409) with "refresh the list".
#[utoipa::path(put, path = "/api/incident-properties", tag = "incidents", request_body = Properties,
    responses(
        (status = 200, description = "The properties saved (version + 1; new items have ids)", body = Properties),
        (status = 400, body = ApiError),
        (status = 409, description = "Changed by someone else, or a property in use removed", body = ApiError),
    ))]
pub async fn save_properties(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    JsonBody(form): JsonBody<Properties>,
) -> Result<axum::Json<Properties>, ApiError> {
    let incidents = app.incidents.clone();
    let (before, after) = blocking(move || incidents.save_properties(form)).await?;
    audit(
        &app,
        &caller.user,
        "incident.properties",
        "incident-properties",
        json!(before),
        json!(after),
    );
    Ok(axum::Json(after))
}

#[utoipa::path(get, path = "/api/incidents", tag = "incidents", params(ListQuery),
    responses((status = 200, description = "A page of projects", body = ProjectPage), (status = 400, body = ApiError)))]
pub async fn list(
    State(app): State<App>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<ProjectPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.body_text()))?;
    let incidents = app.incidents.clone();
    Ok(axum::Json(blocking(move || incidents.list(&q)).await?))
}

/// Makes a project; `sequences` (camera, from, to) hold their footage at once.
#[utoipa::path(post, path = "/api/incidents", tag = "incidents", request_body = ProjectForm,
    responses((status = 201, description = "The project", body = Project), (status = 400, body = ApiError)))]
pub async fn create(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    JsonBody(form): JsonBody<ProjectForm>,
) -> Result<Response, ApiError> {
    let incidents = app.incidents.clone();
    let by = caller.user.clone();
    let project = blocking(move || incidents.create(form, &by, now_ms())).await?;
    audit(
        &app,
        &caller.user,
        "incident.create",
        &format!("incident-{}", project.summary.id),
        Value::Null,
        json!(project.summary),
    );
    Ok((StatusCode::CREATED, axum::Json(project)).into_response())
}

#[utoipa::path(get, path = "/api/incidents/{id}", tag = "incidents",
    params(("id" = i64, Path, description = "Project number")),
    responses((status = 200, body = Project), (status = 404, body = ApiError)))]
pub async fn get(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<axum::Json<Project>, ApiError> {
    let id = project_id(&id)?;
    let incidents = app.incidents.clone();
    Ok(axum::Json(blocking(move || incidents.get(id)).await?))
}

/// Changes a project's values; absent keys stay, `null` clears. Send `version` to refuse a
/// save on top of someone else's.
#[utoipa::path(patch, path = "/api/incidents/{id}", tag = "incidents", request_body = ProjectForm,
    params(("id" = i64, Path, description = "Project number")),
    responses((status = 200, body = Project), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn update(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<ProjectForm>,
) -> Result<axum::Json<Project>, ApiError> {
    let id = project_id(&id)?;
    let incidents = app.incidents.clone();
    Ok(axum::Json(
        blocking(move || incidents.update(id, form, &caller.user, now_ms())).await?,
    ))
}

/// Deletes a project with its comments, calls, sequences and activity; its footage holds are
/// released (the footage keeps its own retention).
#[utoipa::path(delete, path = "/api/incidents/{id}", tag = "incidents",
    params(("id" = i64, Path, description = "Project number")),
    responses((status = 200, description = "The project as it was", body = Object), (status = 404, body = ApiError)))]
pub async fn delete(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = project_id(&id)?;
    let incidents = app.incidents.clone();
    let by = caller.user.clone();
    let gone = blocking(move || incidents.delete(id, &by, now_ms())).await?;
    audit(
        &app,
        &caller.user,
        "incident.delete",
        &format!("incident-{id}"),
        json!(gone),
        Value::Null,
    );
    Ok(axum::Json(json!({"deleted": gone})))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentForm {
    pub text: String,
}

#[utoipa::path(post, path = "/api/incidents/{id}/comments", tag = "incidents", request_body = CommentForm,
    params(("id" = i64, Path, description = "Project number")),
    responses((status = 201, body = Comment), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn add_comment(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<CommentForm>,
) -> Result<Response, ApiError> {
    let id = project_id(&id)?;
    let incidents = app.incidents.clone();
    let c = blocking(move || incidents.add_comment(id, &form.text, &caller.user, now_ms())).await?;
    Ok((StatusCode::CREATED, axum::Json(c)).into_response())
}

/// Replaces a comment's text (its author only); the old text stays in its history.
#[utoipa::path(patch, path = "/api/incidents/{id}/comments/{comment}", tag = "incidents", request_body = CommentForm,
    params(("id" = i64, Path, description = "Project number"), ("comment" = i64, Path, description = "Comment number")),
    responses((status = 200, body = Comment), (status = 403, description = "Not its author", body = ApiError), (status = 404, body = ApiError)))]
pub async fn edit_comment(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path((id, comment)): Path<(String, String)>,
    JsonBody(form): JsonBody<CommentForm>,
) -> Result<axum::Json<Comment>, ApiError> {
    let id = project_id(&id)?;
    let comment = item_id("comment", &comment)?;
    let incidents = app.incidents.clone();
    Ok(axum::Json(
        blocking(move || incidents.edit_comment(id, comment, &form.text, &caller.user, now_ms()))
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/incidents/{id}/calls", tag = "incidents", request_body = CallForm,
    params(("id" = i64, Path, description = "Project number")),
    responses((status = 201, body = Call), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn add_call(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<CallForm>,
) -> Result<Response, ApiError> {
    let id = project_id(&id)?;
    let incidents = app.incidents.clone();
    let c = blocking(move || incidents.add_call(id, form, &caller.user, now_ms())).await?;
    Ok((StatusCode::CREATED, axum::Json(c)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SequencesForm {
    /// 1–100 sequences (camera, from, to); each holds its footage.
    pub sequences: Vec<SequenceForm>,
}

#[utoipa::path(post, path = "/api/incidents/{id}/sequences", tag = "incidents", request_body = SequencesForm,
    params(("id" = i64, Path, description = "Project number")),
    responses((status = 201, description = "The sequences added", body = [Sequence]), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn add_sequences(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<SequencesForm>,
) -> Result<Response, ApiError> {
    let id = project_id(&id)?;
    let incidents = app.incidents.clone();
    let added =
        blocking(move || incidents.add_sequences(id, &form.sequences, &caller.user, now_ms()))
            .await?;
    Ok((StatusCode::CREATED, axum::Json(added)).into_response())
}

#[utoipa::path(delete, path = "/api/incidents/{id}/sequences/{sequence}", tag = "incidents",
    params(("id" = i64, Path, description = "Project number"), ("sequence" = i64, Path, description = "Sequence number")),
    responses((status = 200, description = "The sequence removed; its footage hold released", body = Sequence), (status = 404, body = ApiError)))]
pub async fn remove_sequence(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path((id, sequence)): Path<(String, String)>,
) -> Result<axum::Json<Sequence>, ApiError> {
    let id = project_id(&id)?;
    let sequence = item_id("sequence", &sequence)?;
    let incidents = app.incidents.clone();
    Ok(axum::Json(
        blocking(move || incidents.remove_sequence(id, sequence, &caller.user, now_ms())).await?,
    ))
}

/// Lays out a project's report (and notes it in the activity and audit logs).
pub(crate) async fn make_report(
    app: &App,
    caller: &Caller,
    id: i64,
    format: &str,
) -> Result<report::Report, ApiError> {
    let incidents = app.incidents.clone();
    let auth = app.auth.clone();
    let by = caller.user.clone();
    let kind = format.to_string();
    let r = blocking(move || {
        let props = incidents.properties()?;
        let project = incidents.get(id)?;
        let site = auth.site()?;
        let (device, zone) = site
            .map(|s| (s.device_name, s.time_zone))
            .unwrap_or_else(|| ("this device".into(), "UTC".into()));
        let tz = jiff::tz::TimeZone::get(&zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let now = jiff::Timestamp::now();
        let generated = format!(
            "Made by {by} on {device}, {}",
            now.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M %Z")
        );
        let r = report::build(&props, &project, &Clockface(tz), &generated);
        incidents.note(
            id,
            "report",
            &format!("{kind} report made"),
            &by,
            now.as_millisecond(),
        )?;
        Ok::<_, Error>(r)
    })
    .await?;
    audit(
        app,
        &caller.user,
        "incident.report",
        &format!("incident-{id}"),
        Value::Null,
        json!({"format": format}),
    );
    Ok(r)
}

/// The printable report as an HTML page.
#[utoipa::path(get, path = "/api/incidents/{id}/report.html", tag = "incidents",
    params(("id" = i64, Path, description = "Project number")),
    responses((status = 200, description = "The report", content_type = "text/html"), (status = 404, body = ApiError)))]
pub async fn report_html(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = project_id(&id)?;
    let r = make_report(&app, &caller, id, "html").await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The report is a document, not part of the page: no scripts at all.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        ],
        report::html(&r),
    )
        .into_response())
}

/// The report as a PDF made on the device.
#[utoipa::path(get, path = "/api/incidents/{id}/report.pdf", tag = "incidents",
    params(("id" = i64, Path, description = "Project number")),
    responses((status = 200, description = "The report", content_type = "application/pdf"), (status = 404, body = ApiError)))]
pub async fn report_pdf(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = project_id(&id)?;
    let r = make_report(&app, &caller, id, "pdf").await?;
    let bytes = tokio::task::spawn_blocking(move || report::pdf(&r))
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("task failed: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"incident-{id}.pdf\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseForm {
    /// `existing` (with `reference`), `new` or `none`.
    pub kind: String,
    pub reference: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportForm {
    /// The filter the recipient is entitled to (default: each camera's).
    pub filter: Option<String>,
    /// The case the evidence belongs to (default: none).
    pub case: Option<CaseForm>,
    /// age X25519 public keys (`age1…`, at most 16): every file is encrypted to them.
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// Exports a project as signed evidence: an MP4 per camera, sequence and ≤ 60-minute file,
/// the report PDF and `project.json`, all listed in the signed manifest; uploaded like a
/// video request's export when an upload target is set.
#[utoipa::path(post, path = "/api/incidents/{id}/export", tag = "incidents", request_body = ExportForm,
    params(("id" = i64, Path, description = "Project number")),
    responses((status = 201, description = "The export job, QUEUED", body = Object), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn export(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<ExportForm>,
) -> Result<Response, ApiError> {
    let id = project_id(&id)?;
    let case = match &form.case {
        None => json!({"kind": "none"}),
        Some(c) => match (c.kind.as_str(), c.reference.as_deref().map(str::trim)) {
            ("existing", Some(r))
                if !r.is_empty()
                    && r.chars().count() <= 128
                    && !r.chars().any(char::is_control) =>
            {
                json!({"kind": "existing", "reference": r})
            }
            ("existing", _) => {
                return Err(ApiError::field(
                    "case.reference",
                    "name the existing case (1–128 characters)",
                ));
            }
            ("new" | "none", None) => json!({"kind": c.kind}),
            ("new" | "none", Some(_)) => {
                return Err(ApiError::field(
                    "case.reference",
                    "only an existing case has a reference",
                ));
            }
            (other, _) => {
                return Err(ApiError::field(
                    "case.kind",
                    format!("'{other}' is not existing, new or none"),
                ));
            }
        },
    };
    if form.recipients.len() > 16 {
        return Err(ApiError::field("recipients", "at most 16 recipients"));
    }
    let incidents = app.incidents.clone();
    let view = app.view.clone();
    let by = caller.user.clone();
    let audit_case = case.clone();
    let job = blocking(move || {
        let project = incidents.get(id)?;
        let answer = view.export_incident(
            &project,
            form.filter.as_deref(),
            case,
            &form.recipients,
            &by,
        )?;
        let job = answer.get("job").cloned().unwrap_or(answer);
        if let Some(job_id) = job["id"].as_str() {
            incidents.exported(id, job_id, &by, now_ms())?;
        }
        Ok(job)
    })
    .await?;
    audit(
        &app,
        &caller.user,
        "incident.export",
        &format!("incident-{id}"),
        Value::Null,
        json!({"job": job["id"], "case": audit_case}),
    );
    Ok((StatusCode::CREATED, axum::Json(job)).into_response())
}
