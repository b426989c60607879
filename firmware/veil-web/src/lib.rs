//! The local HTTP API and the embedded admin page.
//!
//! The router knows nothing of cameras or threads: it asks a [`DeviceView`] for what to show,
//! so it is tested without a daemon (`tower::ServiceExt::oneshot`) and served by `veild`.
//! Every route is declared once in [`routes`] with the access it needs; the router is built
//! from that table, and a test walks it with every role.
//!
//! Owns: routes, sessions, roles and the route matrix, CSRF and Origin checks, request
//! validation, the OpenAPI document, the embedded page. Never: holds device state of its own
//! or reaches cameras, the store or the network except through [`DeviceView`].

mod admin;
mod api;
mod assets;
pub mod auth;
mod body;
mod cameras;
mod error;
mod fleet;
mod incidents;
mod recordings;
#[cfg(test)]
mod tests;
pub mod tls;

pub use api::{
    ApiDoc, CameraState, CameraStatus, DeviceInfo, FeatureState, Features, Health, HealthHistory,
    HealthSample, StatusResponse,
};
pub use auth::{Access, Area, Auth, Role};
pub use error::ApiError;
pub use fleet::FleetForm;
pub use recordings::{Span, Timeline};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use veil_core::ErrorKind;
use veil_core::config::{CameraConfig, MaskConfig, SourceConfig};
use veil_store::audit::AuditLog;

use crate::auth::Caller;

/// What the web layer needs from the daemon.
pub trait DeviceView: Send + Sync + 'static {
    /// `Err(reason)` once the daemon is stopping or a vital part has failed.
    fn health(&self) -> Result<(), String>;
    fn status(&self) -> StatusResponse;
    /// Prometheus / OpenMetrics text exposition.
    fn metrics(&self) -> String;
    /// A JPEG of the camera's anonymized output, at most `max_width` wide. Blocks up to a
    /// couple of seconds waiting for a frame.
    fn snapshot(&self, camera: &str, max_width: u32) -> Result<Vec<u8>, veil_core::Error>;
    /// Opens a preview of the camera through `filter`: the pictures a live session with that
    /// filter would get, from the same encode (shared, or one of the board's free ones).
    /// Open until the feed is dropped.
    fn open_preview(
        &self,
        camera: &str,
        filter: &str,
    ) -> Result<Arc<dyn PreviewFeed>, veil_core::Error>;
    /// Installs an HTTPS certificate chain and key (PEM), checked to belong together, for the
    /// connections that follow; returns its SHA-256 fingerprint.
    fn install_certificate(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<String, veil_core::Error>;
    /// `mqtt` and `upload` as in effect, secrets `***`.
    fn fleet(&self) -> Result<serde_json::Value, veil_core::Error>;
    /// Saves and applies fleet settings; returns (before, after), secrets `***`.
    fn set_fleet(
        &self,
        form: FleetForm,
    ) -> Result<(serde_json::Value, serde_json::Value), veil_core::Error>;
    /// Tries fleet settings without saving them: `{"mqtt": "ok" | reason, "upload": …}`.
    fn test_fleet(&self, form: FleetForm) -> Result<serde_json::Value, veil_core::Error>;
    /// The newest lines of the device's log (text).
    fn logs(&self) -> String;
    /// Restarts the device (in a few seconds, after the answer went out).
    fn reboot(&self, by: &str) -> Result<(), veil_core::Error>;
    /// The firmware update job running or last ended (`ota.status`'s job; null: none).
    fn firmware_update(&self) -> serde_json::Value;
    /// Where an uploaded bundle is written before [`DeviceView::install_bundle`].
    fn bundle_dir(&self) -> std::path::PathBuf;
    /// Installs the bundle `file_name` of [`DeviceView::bundle_dir`]: its signature is checked
    /// at once (a refused bundle is deleted and the error says why), then it goes its way as
    /// an update job, restarting per `reboot` (`now`, `manual`, `HH:MM-HH:MM` UTC).
    fn install_bundle(
        &self,
        file_name: &str,
        reboot: &str,
    ) -> Result<serde_json::Value, veil_core::Error>;
    /// CPU, temperature, disk and frame rates over the last hour.
    fn history(&self) -> HealthHistory;
    /// Every camera's configuration as in effect, secrets replaced by `***`.
    fn cameras(&self) -> Result<Vec<CameraConfig>, veil_core::Error>;
    /// Adds a camera (checked as the config file is; the error names the key, e.g.
    /// `source.fps: …`), starts it, and keeps it across restarts.
    fn add_camera(&self, camera: CameraConfig) -> Result<CameraConfig, veil_core::Error>;
    /// Replaces a camera's configuration and restarts it; returns (before, after).
    fn replace_camera(
        &self,
        id: &str,
        camera: CameraConfig,
    ) -> Result<(CameraConfig, CameraConfig), veil_core::Error>;
    /// Stops and removes a camera (its footage stays until retention removes it).
    fn remove_camera(&self, id: &str) -> Result<CameraConfig, veil_core::Error>;
    /// Opens a source and reads one frame (up to 10 s): what a technician checks before
    /// saving a camera. Returns what was found (size, frame rate).
    fn test_source(&self, source: SourceConfig) -> Result<serde_json::Value, veil_core::Error>;
    /// Recorded stretches and gaps of a camera in a window.
    fn timeline(
        &self,
        camera: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Timeline, veil_core::Error>;
    /// Orders an export job of a range by the signed-in user `by`.
    fn create_export(
        &self,
        cameras: &[String],
        from_ms: i64,
        to_ms: i64,
        filter: Option<&str>,
        by: &str,
    ) -> Result<serde_json::Value, veil_core::Error>;
    /// Orders the signed export of an incident project: its sequences, its report (PDF) and
    /// its data (`project.json`) listed in the manifest, with the case it belongs to; every
    /// file encrypted to the age `recipients` when there are any.
    fn export_incident(
        &self,
        project: &veil_incident::Project,
        filter: Option<&str>,
        case: serde_json::Value,
        recipients: &[String],
        by: &str,
    ) -> Result<serde_json::Value, veil_core::Error>;
    /// The path of a file a finished export lists (or its manifest); anything else is
    /// `NotFound`.
    fn export_file(&self, job: &str, name: &str) -> Result<std::path::PathBuf, veil_core::Error>;
    /// The privacy masks in effect on a camera.
    fn masks(&self, camera: &str) -> Result<Vec<MaskConfig>, veil_core::Error>;
    /// Replaces a camera's masks (validated as in the config file, applied from the next
    /// frame, kept across restarts); returns the masks before.
    fn set_masks(
        &self,
        camera: &str,
        masks: Vec<MaskConfig>,
    ) -> Result<Vec<MaskConfig>, veil_core::Error>;
    /// A JPEG of the camera's frame *as captured*, only for a camera that keeps originals
    /// (`Conflict` otherwise). Callers audit every use.
    fn original_snapshot(&self, camera: &str, max_width: u32) -> Result<Vec<u8>, veil_core::Error>;
    /// Video requests and export jobs (`{"requests": [...], "jobs": [...]}`).
    fn requests(&self) -> Result<serde_json::Value, veil_core::Error>;
    /// The owner's decision on a pending request, by the signed-in user `by`.
    fn decide_request(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        by: &str,
    ) -> Result<serde_json::Value, veil_core::Error>;
    /// Live view sessions open and recently ended, with the encodes in use.
    fn live_sessions(&self) -> Result<serde_json::Value, veil_core::Error>;
    /// An operator's answer to a live session waiting for one, by the signed-in user `by`.
    fn decide_live(
        &self,
        id: &str,
        accept: bool,
        reason: Option<&str>,
        by: &str,
    ) -> Result<serde_json::Value, veil_core::Error>;
    /// Ends a live session as the owner's operator `by`.
    fn stop_live(
        &self,
        id: &str,
        reason: Option<&str>,
        by: &str,
    ) -> Result<serde_json::Value, veil_core::Error>;
}

/// A preview held open on the device until dropped.
pub trait PreviewFeed: Send + Sync {
    /// A JPEG of the next picture, at most `max_width` wide; blocks up to a few seconds.
    fn jpeg(&self, max_width: u32) -> Result<Vec<u8>, veil_core::Error>;
}

pub type SharedView = Arc<dyn DeviceView>;

/// Everything a handler may use.
pub struct AppState {
    pub view: SharedView,
    pub auth: Arc<Auth>,
    pub audit: Arc<AuditLog>,
    pub incidents: Arc<veil_incident::Incidents>,
}

pub type App = Arc<AppState>;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone: health, setup, sign-in.
    Public,
    /// Any signed-in user.
    SignedIn,
    /// A signed-in user whose role has at least this access to the area.
    Needs(Area, Access),
    /// `/metrics`: a signed-in user who may see the system, or a scraper with a scrape token
    /// (`Authorization: Bearer veil_scrape_…`).
    Scrape,
}

/// One row of the route table.
pub struct RouteSpec {
    pub method: Method,
    /// Path as axum spells it (`{id}` for parameters).
    pub path: &'static str,
    pub guard: Guard,
}

/// Largest request body the API reads.
pub const BODY_LIMIT: usize = 64 * 1024;
/// The largest firmware bundle the page takes.
pub const BUNDLE_LIMIT: u64 = 2 * 1024 * 1024 * 1024;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "veil_session";

/// Every API route with the access it needs. The router is built from this table only.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<App>)> {
    use Access::{Manage, View};
    use Guard::*;
    let r = |method: Method, path, guard, handler: MethodRouter<App>| {
        (
            RouteSpec {
                method,
                path,
                guard,
            },
            handler,
        )
    };
    vec![
        r(Method::GET, "/healthz", Public, get(api::healthz)),
        r(Method::GET, "/api/setup", Public, get(admin::setup_state)),
        r(Method::POST, "/api/setup", Public, post(admin::setup)),
        r(Method::POST, "/api/login", Public, post(admin::login)),
        r(Method::POST, "/api/logout", SignedIn, post(admin::logout)),
        r(Method::GET, "/api/session", SignedIn, get(admin::session)),
        r(
            Method::POST,
            "/api/session/password",
            SignedIn,
            post(admin::change_password),
        ),
        r(Method::GET, "/api/status", SignedIn, get(api::status)),
        r(
            Method::GET,
            "/api/openapi.json",
            SignedIn,
            get(api::openapi),
        ),
        r(Method::GET, "/metrics", Scrape, get(api::metrics)),
        r(
            Method::GET,
            "/api/system/scrape-tokens",
            Needs(Area::System, View),
            get(admin::scrape_tokens),
        ),
        r(
            Method::POST,
            "/api/system/scrape-tokens",
            Needs(Area::System, Manage),
            post(admin::create_scrape_token),
        ),
        r(
            Method::DELETE,
            "/api/system/scrape-tokens/{id}",
            Needs(Area::System, Manage),
            delete(admin::revoke_scrape_token),
        ),
        r(
            Method::GET,
            "/api/audit",
            Needs(Area::System, View),
            get(admin::audit_log),
        ),
        r(
            Method::GET,
            "/api/audit.csv",
            Needs(Area::System, View),
            get(admin::audit_csv),
        ),
        r(
            Method::GET,
            "/api/cameras/{id}/snapshot.jpg",
            Needs(Area::Cameras, View),
            get(api::snapshot),
        ),
        r(
            Method::GET,
            "/api/status/history",
            SignedIn,
            get(api::history),
        ),
        r(
            Method::GET,
            "/api/cameras/{id}/original.jpg",
            Needs(Area::Cameras, Manage),
            get(api::original),
        ),
        r(
            Method::GET,
            "/api/cameras/{id}/preview.mjpg",
            Needs(Area::Cameras, View),
            get(api::preview),
        ),
        r(
            Method::GET,
            "/api/fleet",
            Needs(Area::System, View),
            get(fleet::get),
        ),
        r(
            Method::PUT,
            "/api/fleet",
            Needs(Area::System, Manage),
            put(fleet::put),
        ),
        r(
            Method::POST,
            "/api/fleet/test",
            Needs(Area::System, Manage),
            post(fleet::test),
        ),
        r(
            Method::GET,
            "/api/system/logs",
            Needs(Area::System, View),
            get(admin::logs),
        ),
        r(
            Method::POST,
            "/api/system/reboot",
            Needs(Area::System, Manage),
            post(admin::reboot),
        ),
        r(
            Method::GET,
            "/api/system/update",
            Needs(Area::System, View),
            get(admin::firmware_update),
        ),
        r(
            Method::POST,
            "/api/system/update",
            Needs(Area::System, Manage),
            post(admin::upload_bundle),
        ),
        r(
            Method::PUT,
            "/api/system/certificate",
            Needs(Area::System, Manage),
            put(admin::install_certificate),
        ),
        r(
            Method::GET,
            "/api/cameras",
            Needs(Area::Cameras, View),
            get(cameras::list),
        ),
        r(
            Method::POST,
            "/api/cameras",
            Needs(Area::Cameras, Manage),
            post(cameras::add),
        ),
        r(
            Method::PUT,
            "/api/cameras/{id}",
            Needs(Area::Cameras, Manage),
            put(cameras::replace),
        ),
        r(
            Method::DELETE,
            "/api/cameras/{id}",
            Needs(Area::Cameras, Manage),
            delete(cameras::remove),
        ),
        r(
            Method::POST,
            "/api/sources/test",
            Needs(Area::Cameras, Manage),
            post(cameras::test_source),
        ),
        r(
            Method::GET,
            "/api/cameras/{id}/masks",
            Needs(Area::Cameras, View),
            get(admin::masks),
        ),
        r(
            Method::PUT,
            "/api/cameras/{id}/masks",
            Needs(Area::Cameras, Manage),
            put(admin::set_masks),
        ),
        r(
            Method::GET,
            "/api/recordings",
            Needs(Area::Recordings, View),
            get(recordings::timeline),
        ),
        r(
            Method::GET,
            "/api/exports",
            Needs(Area::Recordings, View),
            get(recordings::list),
        ),
        r(
            Method::POST,
            "/api/exports",
            Needs(Area::Recordings, Manage),
            post(recordings::create),
        ),
        r(
            Method::GET,
            "/api/exports/{job}/files/{name}",
            Needs(Area::Recordings, View),
            get(recordings::file),
        ),
        r(
            Method::GET,
            "/api/requests",
            Needs(Area::Requests, View),
            get(admin::requests),
        ),
        r(
            Method::POST,
            "/api/requests/{id}/decision",
            Needs(Area::Requests, Manage),
            post(admin::decide),
        ),
        r(
            Method::GET,
            "/api/live",
            Needs(Area::Requests, View),
            get(admin::live_sessions),
        ),
        r(
            Method::POST,
            "/api/live/{id}/decision",
            Needs(Area::Requests, Manage),
            post(admin::decide_live),
        ),
        r(
            Method::POST,
            "/api/live/{id}/stop",
            Needs(Area::Requests, Manage),
            post(admin::stop_live),
        ),
        r(
            Method::GET,
            "/api/incident-properties",
            Needs(Area::IncidentProperties, View),
            get(incidents::properties),
        ),
        r(
            Method::PUT,
            "/api/incident-properties",
            Needs(Area::IncidentProperties, Manage),
            put(incidents::save_properties),
        ),
        r(
            Method::GET,
            "/api/incidents",
            Needs(Area::Incidents, View),
            get(incidents::list),
        ),
        r(
            Method::POST,
            "/api/incidents",
            Needs(Area::Incidents, Manage),
            post(incidents::create),
        ),
        r(
            Method::GET,
            "/api/incidents/{id}",
            Needs(Area::Incidents, View),
            get(incidents::get),
        ),
        r(
            Method::PATCH,
            "/api/incidents/{id}",
            Needs(Area::Incidents, Manage),
            patch(incidents::update),
        ),
        r(
            Method::DELETE,
            "/api/incidents/{id}",
            Needs(Area::Incidents, Manage),
            delete(incidents::delete),
        ),
        r(
            Method::POST,
            "/api/incidents/{id}/comments",
            Needs(Area::IncidentComments, Manage),
            post(incidents::add_comment),
        ),
        r(
            Method::PATCH,
            "/api/incidents/{id}/comments/{comment}",
            Needs(Area::IncidentComments, Manage),
            patch(incidents::edit_comment),
        ),
        r(
            Method::POST,
            "/api/incidents/{id}/calls",
            Needs(Area::IncidentCalls, Manage),
            post(incidents::add_call),
        ),
        r(
            Method::POST,
            "/api/incidents/{id}/sequences",
            Needs(Area::IncidentSequences, Manage),
            post(incidents::add_sequences),
        ),
        r(
            Method::DELETE,
            "/api/incidents/{id}/sequences/{sequence}",
            Needs(Area::IncidentSequences, Manage),
            delete(incidents::remove_sequence),
        ),
        r(
            Method::GET,
            "/api/incidents/{id}/report.html",
            Needs(Area::IncidentReports, View),
            get(incidents::report_html),
        ),
        r(
            Method::GET,
            "/api/incidents/{id}/report.pdf",
            Needs(Area::IncidentReports, View),
            get(incidents::report_pdf),
        ),
        r(
            Method::POST,
            "/api/incidents/{id}/export",
            Needs(Area::IncidentExport, Manage),
            post(incidents::export),
        ),
        r(
            Method::GET,
            "/api/users",
            Needs(Area::Users, View),
            get(admin::users),
        ),
        r(
            Method::POST,
            "/api/users",
            Needs(Area::Users, Manage),
            post(admin::create_user),
        ),
        r(
            Method::PATCH,
            "/api/users/{name}",
            Needs(Area::Users, Manage),
            patch(admin::update_user),
        ),
        r(
            Method::DELETE,
            "/api/users/{name}",
            Needs(Area::Users, Manage),
            delete(admin::delete_user),
        ),
    ]
}

/// Every route of the local HTTP server.
pub fn router(app: App) -> Router {
    let mut router: Router<App> = Router::new();
    for (spec, handler) in routes() {
        let guarded = handler.route_layer(middleware::from_fn_with_state(
            (app.clone(), spec.guard),
            check,
        ));
        router = router.route(spec.path, guarded);
    }
    router
        .route("/api/{*rest}", axum::routing::any(api::no_such_route))
        .fallback(get(assets::serve))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(same_origin))
        .layer(middleware::from_fn(oversized))
        .layer(middleware::map_response(security_headers))
        .with_state(app)
}

/// The session token in the request's cookie, if any.
pub(crate) fn session_token(req: &axum::http::HeaderMap) -> Option<String> {
    req.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The peer's address (set by the server; unspecified in router tests).
pub struct ClientIp(pub std::net::IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Enforces a route's guard: a session, the CSRF token on anything that changes state, and
/// the role's access to the area. Puts the [`Caller`] into the request.
async fn check(State((app, guard)): State<(App, Guard)>, mut req: Request, next: Next) -> Response {
    if guard == Guard::Public {
        return next.run(req).await;
    }
    if guard == Guard::Scrape
        && let Some(bearer) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    {
        let auth = app.auth.clone();
        let secret = bearer.trim().to_string();
        return match tokio::task::spawn_blocking(move || auth.scrape_token_valid(&secret)).await {
            Ok(Ok(true)) => next.run(req).await,
            Ok(Ok(false)) => ApiError::new(
                ErrorKind::Unauthenticated,
                "unknown or revoked scrape token: make one on the System page",
            )
            .into_response(),
            Ok(Err(e)) => ApiError::from(e).into_response(),
            Err(e) => ApiError::new(ErrorKind::Internal, format!("token check failed: {e}"))
                .into_response(),
        };
    }
    let guard = if guard == Guard::Scrape {
        Guard::Needs(Area::System, Access::View)
    } else {
        guard
    };
    let Some(token) = session_token(req.headers()) else {
        return ApiError::new(ErrorKind::Unauthenticated, "sign in first").into_response();
    };
    let auth = app.auth.clone();
    let caller = match tokio::task::spawn_blocking(move || auth.session(&token)).await {
        Ok(Ok(caller)) => caller,
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(e) => {
            return ApiError::new(ErrorKind::Internal, format!("session check failed: {e}"))
                .into_response();
        }
    };
    if changes_state(req.method()) {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth::same_secret(sent, &caller.csrf) {
            return ApiError::custom(
                403,
                "csrf",
                "missing or wrong X-CSRF-Token header: reload the page and try again",
            )
            .into_response();
        }
    }
    if let Guard::Needs(area, needed) = guard
        && caller.role.access(area) < needed
    {
        let verb = if needed == Access::Manage {
            "change"
        } else {
            "see"
        };
        return ApiError::new(
            ErrorKind::PermissionDenied,
            format!(
                "the {} role may not {verb} {}; ask an admin",
                caller.role.name(),
                area.name()
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert::<Caller>(caller);
    next.run(req).await
}

/// Refuses state-changing requests sent by another site's page (the `Origin` a browser
/// adds must be this device), on top of SameSite cookies and the CSRF token.
async fn same_origin(req: Request, next: Next) -> Response {
    if changes_state(req.method())
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        // HTTP/2 carries the host in the URI's authority, HTTP/1.1 in the Host header.
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("");
        let origin = origin.to_str().unwrap_or("");
        let host_of_origin = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or("");
        if host.is_empty() || host_of_origin != host {
            return ApiError::custom(
                403,
                "csrf",
                format!("cross-site request from {origin} refused"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// How much of an oversized body is read (and dropped) before the 413 goes out.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// A body declared larger than [`BODY_LIMIT`] is refused with 413 before any route sees it.
/// What the client sends is read and dropped first (up to [`DRAIN_LIMIT`]): an HTTP/1.1 client
/// still writing its body would otherwise meet a closed connection (a broken pipe) and never
/// read the answer.
async fn oversized(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A firmware bundle is the one large body; its handler streams it to the disk.
    let limit = if req.uri().path() == "/api/system/update" && req.method() == Method::POST {
        BUNDLE_LIMIT
    } else {
        BODY_LIMIT as u64
    };
    let Some(length) = declared.filter(|&n| n > limit) else {
        return next.run(req).await;
    };
    if length <= DRAIN_LIMIT {
        use futures::StreamExt;
        let mut body = req.into_body().into_data_stream();
        while let Some(Ok(_)) = body.next().await {}
    }
    ApiError::custom(
        413,
        "payload_too_large",
        format!("the body is larger than {} KiB", BODY_LIMIT / 1024),
    )
    .into_response()
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        // The page is only ever served over HTTPS: browsers must not try plain HTTP again.
        ("strict-transport-security", "max-age=31536000"),
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
             frame-ancestors 'none'",
        ),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    res
}
