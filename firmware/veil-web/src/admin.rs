//! Setup, sign-in, users, the audit log and video-request decisions.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use veil_core::{Error, ErrorKind};
use veil_store::audit::{AuditFilter, to_csv};

use crate::auth::{
    Access, Area, Caller, Role, SESSION_MAX_MS, ScrapeToken, SiteSettings, User, check_password,
    check_user_name,
};
use crate::body::JsonBody;
use crate::{ApiError, App, ClientIp, SESSION_COOKIE, session_token};

/// Runs blocking work (SQLite, Argon2id, the device's threads) off the async threads. An
/// error whose message starts with a key (`source.fps: …`) comes back naming that field.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("task failed: {e}")))?
        .map_err(keyed)
}

/// An invalid-input error whose message starts with a key path becomes a field error.
pub(crate) fn keyed(e: Error) -> ApiError {
    let text = e.to_string();
    match (e.kind(), text.split_once(": ")) {
        (ErrorKind::InvalidInput, Some((key, message)))
            if !key.is_empty()
                && key.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || "._[]".contains(c)
                }) =>
        {
            ApiError::field(key, message)
        }
        _ => ApiError::from(e),
    }
}

/// Records a state change; a log that cannot be written is logged (the change itself stands).
pub(crate) fn audit(
    app: &App,
    actor: &str,
    action: &str,
    subject: &str,
    before: Value,
    after: Value,
) {
    if let Err(e) = app.audit.append(actor, action, subject, before, after) {
        tracing::error!(error = %e, action, "cannot write the audit log");
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetupState {
    /// True until the first admin exists; false for good afterwards.
    pub setup_open: bool,
    /// Whether the request carries a live session: the page asks for `/api/session` only
    /// then (a sign-in page that asked anyway would log a 401 on every visit).
    pub signed_in: bool,
}

#[utoipa::path(get, path = "/api/setup", tag = "session", security(()),
    responses((status = 200, description = "Whether the setup wizard is open", body = SetupState)))]
pub async fn setup_state(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<SetupState>, ApiError> {
    let auth = app.auth.clone();
    let token = crate::session_token(&headers);
    let (open, signed_in) = blocking(move || {
        let signed_in = token.is_some_and(|t| auth.session(&t).is_ok());
        Ok((auth.setup_open()?, signed_in))
    })
    .await?;
    Ok(axum::Json(SetupState {
        setup_open: open,
        signed_in,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupForm {
    /// Shown on the page and in the fleet registry, 1–64 characters.
    pub device_name: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// The first admin's user name.
    pub username: String,
    pub password: String,
}

/// What a signed-in user may do, and the token to send with every change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub user: String,
    pub role: Role,
    /// Send as the `X-CSRF-Token` header on every POST, PATCH, PUT and DELETE.
    pub csrf_token: String,
    /// When the session ends if unused (ms since the epoch).
    pub expires_ms: u64,
    /// Access per area (`none`, `view`, `manage`).
    pub permissions: BTreeMap<String, Access>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteSettings>,
}

fn session_info(caller: &Caller, site: Option<SiteSettings>) -> SessionInfo {
    SessionInfo {
        user: caller.user.clone(),
        role: caller.role,
        csrf_token: caller.csrf.clone(),
        expires_ms: caller.expires_ms,
        permissions: Area::ALL
            .iter()
            .map(|a| (a.name().to_string(), caller.role.access(*a)))
            .collect(),
        site,
    }
}

fn cookie(token: &str, max_age_s: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_s}"
    )
}

fn signed_in(token: &str, info: SessionInfo, status: StatusCode) -> Response {
    (
        status,
        [
            (header::SET_COOKIE, cookie(token, SESSION_MAX_MS / 1000)),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
        axum::Json(info),
    )
        .into_response()
}

fn check_site(form: &SetupForm) -> Result<(), ApiError> {
    let name = form.device_name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::field(
            "device_name",
            "give the device a name of 1 to 64 printable characters",
        ));
    }
    if jiff::tz::TimeZone::get(&form.time_zone).is_err() || form.time_zone.contains("..") {
        return Err(ApiError::field(
            "time_zone",
            format!(
                "'{}' is not a known IANA time zone (e.g. Europe/Berlin, UTC)",
                form.time_zone
            ),
        ));
    }
    check_user_name(&form.username).map_err(|m| ApiError::field("username", m))?;
    check_password(&form.password, &form.username)
        .map_err(|m| ApiError::field("password", format!("the password {m}")))?;
    Ok(())
}

/// Creates the first admin account and signs it in. Closed once any account exists.
#[utoipa::path(post, path = "/api/setup", tag = "session", request_body = SetupForm, security(()),
    responses(
        (status = 201, description = "The admin exists and is signed in", body = SessionInfo),
        (status = 400, description = "A field is invalid; `field` names it", body = ApiError),
        (status = 409, description = "Setup was done already", body = ApiError),
        (status = 413, body = ApiError), (status = 415, body = ApiError),
    ))]
pub async fn setup(
    State(app): State<App>,
    ClientIp(client): ClientIp,
    JsonBody(form): JsonBody<SetupForm>,
) -> Result<Response, ApiError> {
    // Refuse a finished setup before judging the form: the answer must not depend on it.
    let auth = app.auth.clone();
    if !blocking(move || auth.setup_open()).await? {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            "setup is already done; sign in (a lost admin password needs a factory reset)",
        ));
    }
    check_site(&form)?;
    let site = SiteSettings {
        device_name: form.device_name.trim().to_string(),
        time_zone: form.time_zone.clone(),
    };
    let auth = app.auth.clone();
    let (user, token, caller) = blocking(move || {
        let user = auth.setup(&site, &form.username, &form.password)?;
        let (token, caller) = auth.login(client, &form.username, &form.password)?;
        Ok((user, token, caller))
    })
    .await?;
    let site = app.auth.site().ok().flatten();
    audit(&app, "setup", "device.setup", "", Value::Null, json!(site));
    audit(
        &app,
        "setup",
        "user.create",
        &user.name,
        Value::Null,
        json!(user),
    );
    Ok(signed_in(
        &token,
        session_info(&caller, site),
        StatusCode::CREATED,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginForm {
    pub username: String,
    pub password: String,
}

/// Signs in: sets the session cookie (HttpOnly, Secure, SameSite=Strict).
#[utoipa::path(post, path = "/api/login", tag = "session", request_body = LoginForm, security(()),
    responses(
        (status = 200, description = "Signed in", body = SessionInfo),
        (status = 401, description = "Wrong user name or password", body = ApiError),
        (status = 429, description = "Too many failures from this address; see Retry-After", body = ApiError),
    ))]
pub async fn login(
    State(app): State<App>,
    ClientIp(client): ClientIp,
    JsonBody(form): JsonBody<LoginForm>,
) -> Result<Response, ApiError> {
    let auth = app.auth.clone();
    let name = form.username.clone();
    let result = blocking(move || auth.login(client, &form.username, &form.password)).await;
    match result {
        Ok((token, caller)) => {
            audit(
                &app,
                &caller.user,
                "session.login",
                &client.to_string(),
                Value::Null,
                Value::Null,
            );
            let site = app.auth.site().ok().flatten();
            Ok(signed_in(
                &token,
                session_info(&caller, site),
                StatusCode::OK,
            ))
        }
        Err(e) => {
            if e.status() == 401 {
                // The name tried is kept (cut short): it tells guessing from a typo.
                let tried: String = name.chars().take(32).collect();
                audit(
                    &app,
                    "anonymous",
                    "session.login_failed",
                    &client.to_string(),
                    Value::Null,
                    json!({ "username": tried }),
                );
            }
            Err(e)
        }
    }
}

#[utoipa::path(post, path = "/api/logout", tag = "session",
    responses((status = 204, description = "Signed out; the cookie is cleared")))]
pub async fn logout(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = session_token(&headers) {
        let auth = app.auth.clone();
        blocking(move || auth.logout(&token)).await?;
    }
    audit(
        &app,
        &caller.user,
        "session.logout",
        "",
        Value::Null,
        Value::Null,
    );
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie("", 0))],
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/session", tag = "session",
    responses(
        (status = 200, description = "The signed-in user", body = SessionInfo),
        (status = 401, description = "Not signed in, or the session expired", body = ApiError),
    ))]
pub async fn session(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::Json<SessionInfo>, ApiError> {
    let auth = app.auth.clone();
    let site = blocking(move || auth.site()).await?;
    Ok(axum::Json(session_info(&caller, site)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordForm {
    pub current_password: String,
    pub new_password: String,
}

/// Changes the signed-in user's password; every session of the user ends.
#[utoipa::path(post, path = "/api/session/password", tag = "session", request_body = PasswordForm,
    responses(
        (status = 204, description = "Changed; sign in again"),
        (status = 400, description = "Wrong current password or a weak new one", body = ApiError),
    ))]
pub async fn change_password(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    JsonBody(form): JsonBody<PasswordForm>,
) -> Result<Response, ApiError> {
    check_password(&form.new_password, &caller.user)
        .map_err(|m| ApiError::field("new_password", format!("the password {m}")))?;
    let auth = app.auth.clone();
    let user = caller.user.clone();
    let ok = blocking(move || {
        if !auth.check(&user, &form.current_password)? {
            return Ok(false);
        }
        auth.update_user(&user, None, None, Some(&form.new_password))?;
        Ok(true)
    })
    .await?;
    if !ok {
        return Err(ApiError::field(
            "current_password",
            "is not your current password",
        ));
    }
    audit(
        &app,
        &caller.user,
        "user.password",
        &caller.user,
        Value::Null,
        Value::Null,
    );
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie("", 0))],
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/users", tag = "users",
    responses((status = 200, description = "Every account", body = Vec<User>)))]
pub async fn users(State(app): State<App>) -> Result<axum::Json<Vec<User>>, ApiError> {
    let auth = app.auth.clone();
    Ok(axum::Json(blocking(move || auth.users()).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub password: String,
}

#[utoipa::path(post, path = "/api/users", tag = "users", request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 400, description = "A field is invalid; `field` names it", body = ApiError),
        (status = 409, description = "The name is taken", body = ApiError),
    ))]
pub async fn create_user(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    JsonBody(form): JsonBody<NewUser>,
) -> Result<Response, ApiError> {
    check_user_name(&form.name).map_err(|m| ApiError::field("name", m))?;
    check_password(&form.password, &form.name)
        .map_err(|m| ApiError::field("password", format!("the password {m}")))?;
    let auth = app.auth.clone();
    let user = blocking(move || auth.create_user(&form.name, form.role, &form.password)).await?;
    audit(
        &app,
        &caller.user,
        "user.create",
        &user.name,
        Value::Null,
        json!(user),
    );
    Ok((StatusCode::CREATED, axum::Json(user)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    /// A new password (the user's sessions end).
    pub password: Option<String>,
}

fn user_name(name: &str) -> Result<(), ApiError> {
    check_user_name(name).map_err(|m| ApiError::new(ErrorKind::InvalidInput, m))
}

#[utoipa::path(patch, path = "/api/users/{name}", tag = "users", request_body = UserChange,
    params(("name" = String, Path, description = "User name")),
    responses(
        (status = 200, description = "Changed; the user's sessions ended", body = User),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, description = "Would leave no enabled admin", body = ApiError),
    ))]
pub async fn update_user(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    JsonBody(change): JsonBody<UserChange>,
) -> Result<axum::Json<User>, ApiError> {
    user_name(&name)?;
    if let Some(p) = &change.password {
        check_password(p, &name)
            .map_err(|m| ApiError::field("password", format!("the password {m}")))?;
    }
    let auth = app.auth.clone();
    let subject = name.clone();
    let (before, after) = blocking(move || {
        auth.update_user(
            &name,
            change.role,
            change.disabled,
            change.password.as_deref(),
        )
    })
    .await?;
    audit(
        &app,
        &caller.user,
        "user.update",
        &subject,
        json!(before),
        json!(after),
    );
    Ok(axum::Json(after))
}

#[utoipa::path(delete, path = "/api/users/{name}", tag = "users",
    params(("name" = String, Path, description = "User name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, description = "Would leave no enabled admin", body = ApiError),
    ))]
pub async fn delete_user(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    user_name(&name)?;
    let auth = app.auth.clone();
    let user = blocking(move || auth.delete_user(&name)).await?;
    audit(
        &app,
        &caller.user,
        "user.delete",
        &user.name,
        json!(user),
        Value::Null,
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Exact actor (user name, `fleet`, `device`).
    actor: Option<String>,
    /// Action, or a prefix ending in `.` (`request.`).
    action: Option<String>,
    /// Part of the subject.
    subject: Option<String>,
    /// RFC 3339, inclusive.
    since: Option<String>,
    /// RFC 3339, inclusive.
    until: Option<String>,
    /// Newest first, 1 to 10000 (default 200).
    limit: Option<usize>,
}

fn audit_filter(q: Result<Query<AuditQuery>, QueryRejection>) -> Result<AuditFilter, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.body_text()))?;
    for (field, value) in [("since", &q.since), ("until", &q.until)] {
        if let Some(v) = value
            && v.parse::<jiff::Timestamp>().is_err()
        {
            return Err(ApiError::field(
                field,
                format!("'{v}' is not an RFC 3339 time such as 2026-11-23T08:00:00Z"),
            ));
        }
    }
    let limit = q.limit.unwrap_or(200);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 10000"));
    }
    Ok(AuditFilter {
        actor: q.actor,
        action: q.action,
        subject: q.subject,
        since: q.since,
        until: q.until,
        limit,
    })
}

/// Audit entries, newest first: who changed what, when, before and after, hash-chained.
#[utoipa::path(get, path = "/api/audit", tag = "system", params(AuditQuery),
    responses(
        (status = 200, description = "Entries (seq, time, actor, action, subject, before, after, prev, hash)", body = Vec<Object>),
        (status = 400, body = ApiError),
    ))]
pub async fn audit_log(
    State(app): State<App>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let filter = audit_filter(query)?;
    let log = app.audit.clone();
    let entries = blocking(move || log.query(&filter)).await?;
    Ok(axum::Json(json!(entries)))
}

/// The same entries as CSV (RFC 4180), for a spreadsheet.
#[utoipa::path(get, path = "/api/audit.csv", tag = "system", params(AuditQuery),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
        (status = 400, body = ApiError),
    ))]
pub async fn audit_csv(
    State(app): State<App>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let filter = audit_filter(query)?;
    let log = app.audit.clone();
    let entries = blocking(move || log.query(&filter)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.csv\"",
            ),
        ],
        to_csv(&entries),
    )
        .into_response())
}

/// Video requests (pending first) and export jobs.
#[utoipa::path(get, path = "/api/requests", tag = "requests",
    responses(
        (status = 200, description = "`requests` and `jobs`", body = Object),
        (status = 503, description = "This device records nothing", body = ApiError),
    ))]
pub async fn requests(State(app): State<App>) -> Result<axum::Json<Value>, ApiError> {
    let view = app.view.clone();
    Ok(axum::Json(blocking(move || view.requests()).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub approve: bool,
    /// Required to decline; shown to the requester.
    pub reason: Option<String>,
}

/// The owner's answer to a pending video request.
#[utoipa::path(post, path = "/api/requests/{id}/decision", tag = "requests", request_body = Decision,
    params(("id" = String, Path, description = "Request id")),
    responses(
        (status = 200, description = "The request after the decision", body = Object),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, description = "Decided already", body = ApiError),
    ))]
pub async fn decide(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(d): JsonBody<Decision>,
) -> Result<axum::Json<Value>, ApiError> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::new(ErrorKind::InvalidInput, "not a request id"));
    }
    if !d.approve && d.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(ApiError::field(
            "reason",
            "give a reason to decline; the requester sees it",
        ));
    }
    if d.reason.as_deref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::field("reason", "at most 500 characters"));
    }
    let view = app.view.clone();
    let by = caller.user.clone();
    Ok(axum::Json(
        blocking(move || view.decide_request(&id, d.approve, d.reason.as_deref(), &by)).await?,
    ))
}

/// Live view sessions: open (waiting for an operator, starting, active) and recently ended.
#[utoipa::path(get, path = "/api/live", tag = "live",
    responses((status = 200, description = "`capacity`, `encodes_in_use`, `sessions`, `recent`", body = Object)))]
pub async fn live_sessions(State(app): State<App>) -> Result<axum::Json<Value>, ApiError> {
    let view = app.view.clone();
    Ok(axum::Json(blocking(move || view.live_sessions()).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveDecision {
    pub accept: bool,
    /// Shown to the consumer when refusing (default "all operators busy").
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveStop {
    /// Shown to the consumer.
    pub reason: Option<String>,
}

fn check_live(id: &str, reason: Option<&str>) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::new(ErrorKind::InvalidInput, "not a session id"));
    }
    if reason.is_some_and(|r| r.chars().count() > 500 || r.chars().any(char::is_control)) {
        return Err(ApiError::field(
            "reason",
            "at most 500 printable characters",
        ));
    }
    Ok(())
}

/// An operator accepts or refuses a live session waiting for one.
#[utoipa::path(post, path = "/api/live/{id}/decision", tag = "live", request_body = LiveDecision,
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "The decision taken", body = Object),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, description = "Not waiting for an operator", body = ApiError),
        (status = 429, description = "No live encode free", body = ApiError),
    ))]
pub async fn decide_live(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(d): JsonBody<LiveDecision>,
) -> Result<axum::Json<Value>, ApiError> {
    check_live(&id, d.reason.as_deref())?;
    let view = app.view.clone();
    let by = caller.user.clone();
    Ok(axum::Json(
        blocking(move || view.decide_live(&id, d.accept, d.reason.as_deref(), &by)).await?,
    ))
}

/// The owner's operator ends a live session.
#[utoipa::path(post, path = "/api/live/{id}/stop", tag = "live", request_body = LiveStop,
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "Ended", body = Object),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
    ))]
pub async fn stop_live(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(d): JsonBody<LiveStop>,
) -> Result<axum::Json<Value>, ApiError> {
    check_live(&id, d.reason.as_deref())?;
    let view = app.view.clone();
    let by = caller.user.clone();
    Ok(axum::Json(
        blocking(move || view.stop_live(&id, d.reason.as_deref(), &by)).await?,
    ))
}

/// A privacy mask: a simple polygon in coordinates relative to the frame (0..1, origin top
/// left), always blanked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    /// 1–64 printable characters, e.g. "neighbour's window".
    pub name: String,
    /// 3 to 64 points `[x, y]`, each 0 to 1; edges must not cross.
    pub points: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Masks {
    /// At most 32.
    pub masks: Vec<Mask>,
}

fn to_web(masks: Vec<veil_core::config::MaskConfig>) -> Masks {
    Masks {
        masks: masks
            .into_iter()
            .map(|m| Mask {
                name: m.name,
                points: m.points,
            })
            .collect(),
    }
}

fn camera_id(id: &str) -> Result<(), ApiError> {
    veil_core::CameraId::new(id)
        .map(|_| ())
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e))
}

#[utoipa::path(get, path = "/api/cameras/{id}/masks", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses(
        (status = 200, description = "The masks in effect", body = Masks),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
    ))]
pub async fn masks(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<axum::Json<Masks>, ApiError> {
    camera_id(&id)?;
    let view = app.view.clone();
    Ok(axum::Json(to_web(blocking(move || view.masks(&id)).await?)))
}

/// Replaces a camera's masks; they hide from the next frame on, in the live view, the
/// recording and exports, and stay across restarts.
#[utoipa::path(put, path = "/api/cameras/{id}/masks", tag = "cameras", request_body = Masks,
    params(("id" = String, Path, description = "Camera id")),
    responses(
        (status = 200, description = "The masks now in effect", body = Masks),
        (status = 400, description = "A mask is invalid; `field` names it (`masks[1].points`)", body = ApiError),
        (status = 404, body = ApiError),
    ))]
pub async fn set_masks(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Masks>,
) -> Result<axum::Json<Masks>, ApiError> {
    camera_id(&id)?;
    let masks: Vec<veil_core::config::MaskConfig> = body
        .masks
        .into_iter()
        .map(|m| veil_core::config::MaskConfig {
            name: m.name,
            points: m.points,
        })
        .collect();
    let view = app.view.clone();
    let (camera, after) = (id.clone(), masks.clone());
    let before = blocking(move || view.set_masks(&camera, masks)).await?;
    audit(
        &app,
        &caller.user,
        "camera.masks",
        &id,
        json!(to_web(before)),
        json!(to_web(after.clone())),
    );
    Ok(axum::Json(to_web(after)))
}

/// A certificate for the page, e.g. from the site's own CA.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateForm {
    /// PEM: the certificate, then any intermediates.
    pub cert_pem: String,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateInfo {
    /// SHA-256 of the installed certificate, `AA:BB:…`.
    pub fingerprint: String,
}

/// Replaces the page's HTTPS certificate; new connections use it at once.
#[utoipa::path(put, path = "/api/system/certificate", tag = "system", request_body = CertificateForm,
    responses(
        (status = 200, description = "Installed", body = CertificateInfo),
        (status = 400, description = "Not PEM, or the key does not fit the certificate", body = ApiError),
        (status = 409, description = "The page is served without TLS (loopback)", body = ApiError),
    ))]
pub async fn install_certificate(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    JsonBody(form): JsonBody<CertificateForm>,
) -> Result<axum::Json<CertificateInfo>, ApiError> {
    let before = app.view.status().device.https_fingerprint;
    let view = app.view.clone();
    let fingerprint = blocking(move || view.install_certificate(&form.cert_pem, &form.key_pem))
        .await
        .map_err(|mut err| {
            if err.status() == 400 {
                // Which box to fix: the key's messages name the key, the rest the certificate.
                let key =
                    err.message.contains("private key") || err.message.contains("key does not fit");
                err.field = Some(if key { "key_pem" } else { "cert_pem" }.into());
            }
            err
        })?;

    audit(
        &app,
        &caller.user,
        "system.certificate",
        "https",
        json!({ "fingerprint": before }),
        json!({ "fingerprint": fingerprint }),
    );
    Ok(axum::Json(CertificateInfo { fingerprint }))
}

/// The newest lines of the device's log, as a text file.
#[utoipa::path(get, path = "/api/system/logs", tag = "system",
    responses((status = 200, description = "Log lines, oldest first", content_type = "text/plain", body = String)))]
pub async fn logs(State(app): State<App>) -> Response {
    let name = format!(
        "attachment; filename=\"veil-{}-{}.log\"",
        app.view.status().device.id,
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
    );
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::CONTENT_DISPOSITION, name),
        ],
        app.view.logs(),
    )
        .into_response()
}

/// Restarts the device.
#[utoipa::path(post, path = "/api/system/reboot", tag = "system",
    responses(
        (status = 202, description = "Restarting in a few seconds"),
        (status = 409, description = "Not available here (veild runs outside the device's service)", body = ApiError),
    ))]
pub async fn reboot(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Result<StatusCode, ApiError> {
    let view = app.view.clone();
    let by = caller.user.clone();
    blocking(move || view.reboot(&by)).await?;
    audit(
        &app,
        &caller.user,
        "system.reboot",
        "",
        Value::Null,
        Value::Null,
    );
    Ok(StatusCode::ACCEPTED)
}

/// The running firmware and the update job running or last ended.
#[utoipa::path(get, path = "/api/system/update", tag = "system",
    responses((status = 200, description = "`firmware_version`, and `job`: the update job as `ota.status` shows it (docs/mqtt-api.md), or null", body = Object)))]
pub async fn firmware_update(State(app): State<App>) -> Result<axum::Json<Value>, ApiError> {
    let view = app.view.clone();
    let job = blocking(move || Ok(view.firmware_update())).await?;
    Ok(axum::Json(json!({
        "firmware_version": app.view.status().device.firmware_version,
        "job": job,
    })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UpdateQuery {
    /// When to restart into the new slot: `now` (default), `manual`, or a UTC window
    /// `HH:MM-HH:MM`.
    pub reboot: Option<String>,
}

/// Uploads a RAUC bundle and installs it into the other slot: the signature is checked before
/// anything is written, the job then runs as one ordered over the fleet (see `GET`).
#[utoipa::path(post, path = "/api/system/update", tag = "system", params(UpdateQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The bundle (.raucb), at most 2 GiB"),
    responses(
        (status = 202, description = "Accepted: the update job, QUEUED", body = Object),
        (status = 400, description = "Empty, not a bundle, signed by another key, or made for another board", body = ApiError),
        (status = 409, description = "That version already runs, or another update is under way", body = ApiError),
        (status = 413, description = "Larger than 2 GiB", body = ApiError),
    ))]
pub async fn upload_bundle(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<UpdateQuery>, QueryRejection>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    use futures::StreamExt;
    use std::io::Write;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.body_text()))?;
    let reboot = q.reboot.unwrap_or_else(|| "now".into());
    let dir = app.view.bundle_dir();
    let name = format!("upload-{}.raucb", uuid::Uuid::now_v7().simple());
    let path = dir.join(&name);
    let io = |e: std::io::Error| {
        ApiError::new(
            ErrorKind::Unavailable,
            format!("cannot keep the bundle on the data partition: {e}"),
        )
    };
    let mut file = std::fs::File::create(&path).map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut bytes: u64 = 0;
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    ErrorKind::InvalidInput,
                    format!("the upload broke off: {e}"),
                )
            })?;
            bytes += chunk.len() as u64;
            if bytes > crate::BUNDLE_LIMIT {
                return Err(ApiError::custom(
                    413,
                    "payload_too_large",
                    "the bundle is larger than 2 GiB".to_string(),
                ));
            }
            // Chunks are small (HTTP frames): written as they come, the runtime barely waits.
            file.write_all(&chunk).map_err(io)?;
        }
        if bytes == 0 {
            return Err(ApiError::new(
                ErrorKind::InvalidInput,
                "the body is empty: send the bundle file (.raucb) as the body",
            ));
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    let view = app.view.clone();
    // The sync (seconds on an SD card) and RAUC's check run off the async threads.
    let install = move || {
        file.sync_all().map_err(|e| {
            let _ = std::fs::remove_file(&path);
            Error::wrap(
                ErrorKind::Unavailable,
                "cannot keep the bundle on the data partition",
                e,
            )
        })?;
        drop(file);
        view.install_bundle(&name, &reboot)
    };
    let job = match blocking(install).await {
        Ok(job) => job,
        Err(e) => {
            // A refused bundle is worth a line too: someone tried to change the firmware.
            audit(
                &app,
                &caller.user,
                "firmware.refused",
                "",
                Value::Null,
                json!({ "bytes": bytes, "reason": e.message }),
            );
            return Err(e);
        }
    };
    audit(
        &app,
        &caller.user,
        "firmware.upload",
        job["job_id"].as_str().unwrap_or(""),
        Value::Null,
        json!({ "bytes": bytes, "version": job["version"], "reboot": job["reboot_at"] }),
    );
    Ok((StatusCode::ACCEPTED, axum::Json(job)).into_response())
}

/// Read-only credentials for metrics scrapers.
#[utoipa::path(get, path = "/api/system/scrape-tokens", tag = "system",
    responses((status = 200, description = "Scrape tokens (never their secrets)", body = [ScrapeToken])))]
pub async fn scrape_tokens(
    State(app): State<App>,
) -> Result<axum::Json<Vec<ScrapeToken>>, ApiError> {
    let auth = app.auth.clone();
    Ok(axum::Json(blocking(move || auth.scrape_tokens()).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScrapeTokenForm {
    /// What the token is for, e.g. `prometheus-dc1`.
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewScrapeToken {
    pub token: ScrapeToken,
    /// Shown this once: give it to the scraper as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// Makes a scrape token for `GET /metrics`; its secret is in this answer only.
#[utoipa::path(post, path = "/api/system/scrape-tokens", tag = "system", request_body = ScrapeTokenForm,
    responses((status = 201, body = NewScrapeToken), (status = 400, body = ApiError), (status = 429, description = "20 tokens exist already", body = ApiError)))]
pub async fn create_scrape_token(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    JsonBody(form): JsonBody<ScrapeTokenForm>,
) -> Result<Response, ApiError> {
    let auth = app.auth.clone();
    let by = caller.user.clone();
    let (token, secret) = blocking(move || auth.create_scrape_token(&form.name, &by)).await?;
    audit(
        &app,
        &caller.user,
        "scrape_token.create",
        &token.id,
        Value::Null,
        json!(token),
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(NewScrapeToken { token, secret }),
    )
        .into_response())
}

/// Revokes a scrape token: the next scrape with it is refused.
#[utoipa::path(delete, path = "/api/system/scrape-tokens/{id}", tag = "system",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = ScrapeToken), (status = 404, body = ApiError)))]
pub async fn revoke_scrape_token(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<ScrapeToken>, ApiError> {
    let auth = app.auth.clone();
    let token = blocking(move || auth.revoke_scrape_token(&id)).await?;
    audit(
        &app,
        &caller.user,
        "scrape_token.revoke",
        &token.id,
        json!(token),
        Value::Null,
    );
    Ok(axum::Json(token))
}
