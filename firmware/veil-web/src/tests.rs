//! Router tests: the real router, account database and audit log over a fixed device (the
//! daemon supplies the real one; `veild/tests/web.rs` tests it over HTTPS).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use veil_core::ErrorKind;
use veil_core::config::{CameraConfig, MaskConfig};
use veil_store::audit::AuditLog;

use crate::*;

/// A device with one camera (`gate`), one dark camera and one pending request (`r-1`).
struct FixedDevice {
    stopping: AtomicBool,
    decisions: Mutex<Vec<(String, bool, String)>>,
    masks: Mutex<Vec<MaskConfig>>,
    cameras: Mutex<Vec<CameraConfig>>,
    export: Mutex<Option<tempfile::TempDir>>,
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
                https_fingerprint: None,
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
    fn open_preview(
        &self,
        camera: &str,
        filter: &str,
    ) -> Result<Arc<dyn PreviewFeed>, veil_core::Error> {
        match (camera, filter) {
            ("gate", "silhouette") => Ok(Arc::new(FixedPreview::open(filter))),
            ("gate", "strict") => Err(veil_core::Error::new(
                ErrorKind::ResourceExhausted,
                "all 1 live encodes of this device are in use",
            )),
            ("gate", _) => Err(veil_core::Error::invalid_input(format!(
                "unknown filter '{filter}'"
            ))),
            _ => Err(veil_core::Error::not_found(format!("no camera '{camera}'"))),
        }
    }
    fn timeline(
        &self,
        camera: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Timeline, veil_core::Error> {
        if camera != "gate" {
            return Err(veil_core::Error::not_found(format!(
                "camera '{camera}' has no footage"
            )));
        }
        let mid = from_ms + (to_ms - from_ms) / 2;
        Ok(Timeline {
            camera: camera.into(),
            from_ms,
            to_ms,
            spans: vec![Span {
                from_ms,
                to_ms: mid,
            }],
            gaps: vec![Span {
                from_ms: mid,
                to_ms,
            }],
        })
    }
    fn create_export(
        &self,
        cameras: &[String],
        from_ms: i64,
        to_ms: i64,
        _filter: Option<&str>,
        by: &str,
    ) -> Result<Value, veil_core::Error> {
        Ok(
            json!({"job": {"id": "j-1", "status": "QUEUED", "cameras": cameras, "from_ms": from_ms, "to_ms": to_ms, "by": by}}),
        )
    }
    fn export_incident(
        &self,
        project: &veil_incident::Project,
        _filter: Option<&str>,
        case: Value,
        _recipients: &[String],
        by: &str,
    ) -> Result<Value, veil_core::Error> {
        Ok(
            json!({"job": {"id": format!("incident-{}-1", project.summary.id), "status": "QUEUED", "case": case, "by": by}}),
        )
    }
    fn export_file(&self, job: &str, name: &str) -> Result<std::path::PathBuf, veil_core::Error> {
        match (job, name, &*self.export.lock().unwrap()) {
            ("j-1", "gate-001.mp4", Some(dir)) => Ok(dir.path().join(name)),
            _ => Err(veil_core::Error::not_found(format!(
                "export '{job}' has no file '{name}'"
            ))),
        }
    }
    fn cameras(&self) -> Result<Vec<CameraConfig>, veil_core::Error> {
        Ok(self.cameras.lock().unwrap().clone())
    }
    fn add_camera(&self, camera: CameraConfig) -> Result<CameraConfig, veil_core::Error> {
        let mut list = self.cameras.lock().unwrap();
        if list.iter().any(|c| c.id == camera.id) {
            return Err(veil_core::Error::new(ErrorKind::Conflict, "exists"));
        }
        let config = veil_core::config::Config {
            cameras: vec![camera.clone()],
            ..Default::default()
        };
        if let Some(issue) = config.validate().first() {
            let key = issue
                .key
                .clone()
                .unwrap_or_default()
                .replace("cameras[0].", "");
            return Err(veil_core::Error::invalid_input(format!(
                "{key}: {}",
                issue.message
            )));
        }
        list.push(camera.clone());
        Ok(camera)
    }
    fn replace_camera(
        &self,
        id: &str,
        camera: CameraConfig,
    ) -> Result<(CameraConfig, CameraConfig), veil_core::Error> {
        let mut list = self.cameras.lock().unwrap();
        let slot = list
            .iter_mut()
            .find(|c| c.id.as_str() == id)
            .ok_or_else(|| veil_core::Error::not_found(format!("no camera '{id}'")))?;
        Ok((std::mem::replace(slot, camera.clone()), camera))
    }
    fn remove_camera(&self, id: &str) -> Result<CameraConfig, veil_core::Error> {
        let mut list = self.cameras.lock().unwrap();
        let i = list
            .iter()
            .position(|c| c.id.as_str() == id)
            .ok_or_else(|| veil_core::Error::not_found(format!("no camera '{id}'")))?;
        Ok(list.remove(i))
    }
    fn test_source(
        &self,
        source: veil_core::config::SourceConfig,
    ) -> Result<Value, veil_core::Error> {
        match source {
            veil_core::config::SourceConfig::Synthetic { .. } => {
                Ok(json!({"ok": true, "width": 640, "height": 360, "fps": 10}))
            }
            _ => Err(veil_core::Error::new(
                ErrorKind::Unavailable,
                "the source did not deliver a frame: no such device",
            )),
        }
    }
    fn install_certificate(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<String, veil_core::Error> {
        Ok(crate::tls::identity(cert_pem, key_pem)?.fingerprint)
    }
    fn fleet(&self) -> Result<Value, veil_core::Error> {
        Ok(json!({"mqtt": null, "upload": null}))
    }
    fn set_fleet(&self, form: crate::FleetForm) -> Result<(Value, Value), veil_core::Error> {
        if let Some(m) = &form.mqtt
            && !m.broker.starts_with("mqtts://")
        {
            return Err(veil_core::Error::invalid_input(
                "mqtt.broker: must be mqtts://host[:port]",
            ));
        }
        Ok((
            json!({"mqtt": null}),
            json!({"mqtt": form.mqtt.map(|m| m.broker)}),
        ))
    }
    fn test_fleet(&self, _form: crate::FleetForm) -> Result<Value, veil_core::Error> {
        Ok(json!({"mqtt": "not configured", "upload": "not configured"}))
    }
    fn logs(&self) -> String {
        "line one\nline two\n".into()
    }
    fn reboot(&self, _by: &str) -> Result<(), veil_core::Error> {
        Err(veil_core::Error::new(
            ErrorKind::Conflict,
            "not in development mode",
        ))
    }
    fn firmware_update(&self) -> Value {
        Value::Null
    }
    fn bundle_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir()
    }
    /// As the daemon's: RAUC's check refuses what is not a signed bundle, and it is deleted.
    fn install_bundle(&self, file_name: &str, _reboot: &str) -> Result<Value, veil_core::Error> {
        let path = self.bundle_dir().join(file_name);
        let bytes = std::fs::read(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        Err(veil_core::Error::invalid_input(format!(
            "the bundle was refused before anything was written: {} bytes, not a signed bundle",
            bytes.len()
        )))
    }
    fn history(&self) -> HealthHistory {
        HealthHistory {
            interval_s: 30,
            samples: vec![],
        }
    }
    fn masks(&self, camera: &str) -> Result<Vec<MaskConfig>, veil_core::Error> {
        match camera {
            "gate" => Ok(self.masks.lock().unwrap().clone()),
            _ => Err(veil_core::Error::not_found(format!("no camera '{camera}'"))),
        }
    }
    fn set_masks(
        &self,
        camera: &str,
        masks: Vec<MaskConfig>,
    ) -> Result<Vec<MaskConfig>, veil_core::Error> {
        let before = self.masks(camera)?;
        if let Some(issue) = veil_core::config::check_masks(camera, &masks).first() {
            return Err(veil_core::Error::invalid_input(format!(
                "{}: {}",
                issue.key.clone().unwrap_or_default(),
                issue.message
            )));
        }
        *self.masks.lock().unwrap() = masks;
        Ok(before)
    }
    fn original_snapshot(&self, camera: &str, max_width: u32) -> Result<Vec<u8>, veil_core::Error> {
        match camera {
            "gate" => Ok(format!("original {max_width}").into_bytes()),
            _ => Err(veil_core::Error::new(
                ErrorKind::Conflict,
                format!("camera '{camera}' keeps no originals"),
            )),
        }
    }
    fn requests(&self) -> Result<Value, veil_core::Error> {
        Ok(json!({"requests": [{"id": "r-1", "status": "pending"}], "jobs": []}))
    }
    fn decide_request(
        &self,
        id: &str,
        approve: bool,
        _reason: Option<&str>,
        by: &str,
    ) -> Result<Value, veil_core::Error> {
        if id != "r-1" {
            return Err(veil_core::Error::not_found(format!("no request '{id}'")));
        }
        self.decisions
            .lock()
            .unwrap()
            .push((id.into(), approve, by.into()));
        Ok(json!({"id": id, "status": if approve { "approved" } else { "declined" }}))
    }
    fn live_sessions(&self) -> Result<Value, veil_core::Error> {
        Ok(json!({"capacity": 2, "encodes_in_use": 0, "sessions": [], "recent": []}))
    }
    fn decide_live(
        &self,
        id: &str,
        accept: bool,
        _reason: Option<&str>,
        by: &str,
    ) -> Result<Value, veil_core::Error> {
        if id != "l-1" {
            return Err(veil_core::Error::not_found(format!(
                "no live session '{id}' is open"
            )));
        }
        self.decisions
            .lock()
            .unwrap()
            .push((id.into(), accept, by.into()));
        Ok(json!({"session_id": id, "accepted": accept}))
    }
    fn stop_live(
        &self,
        id: &str,
        _reason: Option<&str>,
        _by: &str,
    ) -> Result<Value, veil_core::Error> {
        if id != "l-1" {
            return Err(veil_core::Error::not_found(format!(
                "no live session '{id}' is open"
            )));
        }
        Ok(json!({"session_id": id, "state": "ended"}))
    }
}

/// Previews of the fixed device now open (each one holds an encode on a real device).
static PREVIEWS_OPEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct FixedPreview(String);

impl FixedPreview {
    fn open(filter: &str) -> FixedPreview {
        PREVIEWS_OPEN.fetch_add(1, Ordering::SeqCst);
        FixedPreview(filter.into())
    }
}

impl PreviewFeed for FixedPreview {
    fn jpeg(&self, max_width: u32) -> Result<Vec<u8>, veil_core::Error> {
        Ok(format!("{} {max_width}", self.0).into_bytes())
    }
}

impl Drop for FixedPreview {
    fn drop(&mut self) {
        PREVIEWS_OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    dev: Arc<FixedDevice>,
    app: App,
    router: axum::Router,
}

const PW: &str = "Gatehouse-42";

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let dev = Arc::new(FixedDevice {
            stopping: AtomicBool::new(false),
            decisions: Mutex::new(vec![]),
            masks: Mutex::new(vec![]),
            cameras: Mutex::new(vec![]),
            export: Mutex::new(None),
        });
        let clock = Arc::new(veil_core::SystemClock::new());
        let app = Arc::new(AppState {
            view: dev.clone(),
            auth: Arc::new(Auth::open(&dir.path().join("web.sqlite3"), clock, true).unwrap()),
            audit: Arc::new(AuditLog::open(&dir.path().join("audit.jsonl")).unwrap()),
            incidents: Arc::new(
                veil_incident::Incidents::open(
                    &dir.path().join("incidents.sqlite3"),
                    veil_store::Store::open(&dir.path().join("footage"), "gate-7")
                        .unwrap()
                        .0,
                )
                .unwrap(),
            ),
        });
        let router = router(app.clone());
        Harness {
            _dir: dir,
            dev,
            app,
            router,
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let streaming = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.to_str().unwrap().starts_with("multipart/x-mixed-replace"));
        let body = if streaming {
            // A live stream never ends: its first part is enough.
            let mut body = res.into_body();
            body.frame().await.unwrap().unwrap().into_data().unwrap()
        } else {
            res.into_body().collect().await.unwrap().to_bytes()
        };
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        who: Option<&Session>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(s) = who {
            req = req
                .header(header::COOKIE, format!("{SESSION_COOKIE}={}", s.token))
                .header("x-csrf-token", &s.csrf);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    async fn get(&self, path: &str, who: Option<&Session>) -> Reply {
        self.call(Method::GET, path, who, None).await
    }

    /// Runs setup (admin `admin`) and returns the admin's session.
    async fn setup(&self) -> Session {
        let r = self
            .call(
                Method::POST,
                "/api/setup",
                None,
                Some(json!({"device_name": "Gate", "time_zone": "Europe/Berlin", "username": "admin", "password": PW})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.session()
    }

    async fn user(&self, admin: &Session, name: &str, role: Role) -> Session {
        let r = self
            .call(
                Method::POST,
                "/api/users",
                Some(admin),
                Some(json!({"name": name, "role": role, "password": PW})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        self.login(name, PW).await.session()
    }

    async fn login(&self, name: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/api/login",
            None,
            Some(json!({"username": name, "password": password})),
        )
        .await
    }
}

#[derive(Clone)]
struct Session {
    token: String,
    csrf: String,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn session(&self) -> Session {
        let cookie = self.headers[header::SET_COOKIE].to_str().unwrap();
        let token = cookie
            .strip_prefix(&format!("{SESSION_COOKIE}="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        Session {
            token,
            csrf: self.json()["csrf_token"].as_str().unwrap().to_string(),
        }
    }
    /// A 400 that names `field`, for a form to show the message next to it.
    #[track_caller]
    fn assert_refused(&self, field: &str) {
        assert_eq!(
            (self.status, self.json()["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{}",
            self.body
        );
    }

    /// An error body: JSON with a code and a message, never a bare text or a trace.
    fn error(&self) -> (String, String) {
        let v = self.json();
        (
            v["code"].as_str().unwrap_or_default().to_string(),
            v["message"].as_str().unwrap_or_default().to_string(),
        )
    }
}

/// The concrete path of a route for calling it (`{id}` → an existing or plausible id).
fn concrete(path: &str) -> String {
    path.replace("cameras/{id}", "cameras/gate")
        .replace("{id}/snapshot", "gate/snapshot")
        .replace("{id}/preview", "gate/preview")
        .replace("{id}/masks", "gate/masks")
        .replace("{id}", "r-1")
        .replace("{name}", "nobody")
        .replace("{job}", "j-1")
        .replace("{comment}", "1")
        .replace("{sequence}", "1")
}

/// A body a handler would accept in shape, so the answer shows the guard, not the parser.
fn body_for(spec: &RouteSpec) -> Option<Value> {
    match (spec.method.clone(), spec.path) {
        (Method::GET | Method::DELETE, _) => None,
        (_, "/api/setup") => {
            Some(json!({"device_name": "x", "time_zone": "UTC", "username": "zed", "password": PW}))
        }
        (_, "/api/login") => Some(json!({"username": "zed", "password": "x"})),
        (_, "/api/session/password") => {
            Some(json!({"current_password": "wrong", "new_password": "Another-Pass-77"}))
        }
        (_, "/api/requests/{id}/decision") => Some(json!({"approve": false, "reason": "no"})),
        (_, "/api/users") => Some(json!({"name": "newbie", "role": "viewer", "password": PW})),
        (_, "/api/users/{name}") => Some(json!({"disabled": false})),
        (_, "/api/cameras/{id}/masks") => Some(json!({"masks": []})),
        (_, "/api/system/certificate") => Some(json!({"cert_pem": "x", "key_pem": "y"})),
        (_, "/api/cameras") => Some(json!({"id": "lab", "source": {"kind": "synthetic"}})),
        (_, "/api/cameras/{id}") => Some(json!({"id": "gate", "source": {"kind": "synthetic"}})),
        (_, "/api/sources/test") => Some(json!({"source": {"kind": "synthetic"}})),
        (_, "/api/fleet") | (_, "/api/fleet/test") => Some(json!({})),
        (_, "/api/incident-properties") => Some(json!({"version": 1})),
        (_, "/api/system/scrape-tokens") => Some(json!({"name": "prometheus"})),
        (_, "/api/incidents/{id}/comments" | "/api/incidents/{id}/comments/{comment}") => {
            Some(json!({"text": "x"}))
        }
        (_, "/api/incidents/{id}/sequences") => Some(json!({"sequences": []})),
        (_, "/api/incidents/{id}/export") => Some(json!({})),
        (_, "/api/exports") => Some(
            json!({"cameras": ["gate"], "from": "2026-11-23T10:00:00Z", "to": "2026-11-23T10:05:00Z"}),
        ),
        _ => Some(json!({})),
    }
}

#[tokio::test]
async fn every_route_refuses_anonymous_callers_except_setup_login_and_health() {
    let h = Harness::new();
    let public: Vec<&str> = vec!["/healthz", "/api/setup", "/api/login"];
    for (spec, _) in routes() {
        let r = h
            .call(
                spec.method.clone(),
                &concrete(spec.path),
                None,
                body_for(&spec),
            )
            .await;
        if public.contains(&spec.path) {
            assert_eq!(spec.guard, Guard::Public, "{} {}", spec.method, spec.path);
            // A public route may refuse the credentials, never ask for a session.
            assert!(
                r.status != StatusCode::UNAUTHORIZED || r.error().1 != "sign in first",
                "{} {}",
                spec.method,
                spec.path
            );
        } else {
            assert_ne!(
                spec.guard,
                Guard::Public,
                "{} {} is public",
                spec.method,
                spec.path
            );
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{} {}: {}",
                spec.method,
                spec.path,
                r.body
            );
            assert_eq!(r.error().0, "unauthenticated");
        }
    }
}

#[tokio::test]
async fn each_role_gets_exactly_its_permissions_on_every_route() {
    let h = Harness::new();
    let admin = h.setup().await;
    let mut sessions = HashMap::new();
    sessions.insert(Role::Admin, admin.clone());
    sessions.insert(Role::Operator, h.user(&admin, "olga", Role::Operator).await);
    sessions.insert(Role::Viewer, h.user(&admin, "vic", Role::Viewer).await);
    for (spec, _) in routes() {
        if spec.guard == Guard::Public
            || spec.path == "/api/logout"
            || spec.path == "/api/session/password"
        {
            continue; // these act on the caller's own session: tested below
        }
        for role in Role::ALL {
            let who = &sessions[&role];
            let r = h
                .call(
                    spec.method.clone(),
                    &concrete(spec.path),
                    Some(who),
                    body_for(&spec),
                )
                .await;
            let allowed = match spec.guard {
                Guard::Needs(area, access) => role.access(area) >= access,
                Guard::Scrape => role.access(Area::System) >= Access::View,
                _ => true,
            };
            let path = concrete(spec.path);
            let path = if path == "/api/recordings" {
                "/api/recordings?camera=gate".to_string()
            } else {
                path
            };
            let r = if spec.path == "/api/recordings" {
                h.call(spec.method.clone(), &path, Some(who), None).await
            } else {
                r
            };
            if allowed {
                assert!(
                    r.status != StatusCode::FORBIDDEN && r.status != StatusCode::UNAUTHORIZED,
                    "{role:?} refused {} {}: {}",
                    spec.method,
                    spec.path,
                    r.body
                );
                assert!(
                    !r.status.is_server_error(),
                    "{} {}: {}",
                    spec.method,
                    spec.path,
                    r.body
                );
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{role:?} {} {}: {}",
                    spec.method,
                    spec.path,
                    r.body
                );
                let (code, message) = r.error();
                assert_eq!(code, "permission_denied");
                assert!(message.contains(role.name()), "{message}");
            }
        }
    }
}

#[tokio::test]
async fn changes_need_the_csrf_token_and_a_same_site_origin() {
    let h = Harness::new();
    let admin = h.setup().await;
    let new_user = json!({"name": "csrfvictim", "role": "viewer", "password": PW});
    for csrf in ["", "0000", &"a".repeat(64)] {
        let forged = Session {
            token: admin.token.clone(),
            csrf: csrf.into(),
        };
        let r = h
            .call(
                Method::POST,
                "/api/users",
                Some(&forged),
                Some(new_user.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert_eq!(r.error().0, "csrf");
    }
    let req = Request::post("/api/login")
        .header(header::HOST, "veil.local")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"username": "admin", "password": PW}).to_string(),
        ))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.error().1.contains("evil.example"));
    // HTTP/2 names the host in the URI, not a Host header: the page's own origin passes.
    let req = Request::post("https://veil.local/api/login")
        .header(header::ORIGIN, "https://veil.local")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"username": "admin", "password": PW}).to_string(),
        ))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
    // Reading needs no token; the user list shows nobody was created.
    let users = h
        .get(
            "/api/users",
            Some(&Session {
                token: admin.token.clone(),
                csrf: String::new(),
            }),
        )
        .await;
    assert_eq!(users.json().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn setup_validates_each_field_then_closes_for_good() {
    let h = Harness::new();
    assert_eq!(h.get("/api/setup", None).await.json()["setup_open"], true);
    // Before setup nothing else opens.
    assert_eq!(h.login("admin", PW).await.status, StatusCode::UNAUTHORIZED);
    let good = json!({"device_name": "Gate", "time_zone": "Europe/Berlin", "username": "admin", "password": PW});
    for (field, value, want) in [
        ("device_name", json!(""), "device_name"),
        ("time_zone", json!("Mars/Olympus"), "time_zone"),
        ("time_zone", json!("../../etc/passwd"), "time_zone"),
        ("username", json!("Admin Root"), "username"),
        ("password", json!("hunter2"), "password"),
        ("password", json!(42), "password"),
    ] {
        let mut form = good.clone();
        form[field] = value;
        let r = h.call(Method::POST, "/api/setup", None, Some(form)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{field}: {}", r.body);
        assert_eq!(r.json()["field"], want, "{}", r.body);
    }
    let admin = h.setup().await;
    let cookie = h.login("admin", PW).await.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let r = h.call(Method::POST, "/api/setup", None, Some(good)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let state = h.get("/api/setup", None).await.json();
    assert_eq!(
        (&state["setup_open"], &state["signed_in"]),
        (&json!(false), &json!(false))
    );
    let state = h.get("/api/setup", Some(&admin)).await.json();
    assert_eq!(state["signed_in"], true, "{state}");
    let me = h.get("/api/session", Some(&admin)).await.json();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["site"]["time_zone"], "Europe/Berlin");
    assert_eq!(me["permissions"]["users"], "manage");
}

#[tokio::test]
async fn bad_bodies_get_clear_json_errors_never_a_500() {
    let h = Harness::new();
    let admin = h.setup().await;
    let with = |ctype: &str, body: Vec<u8>| {
        Request::post("/api/users")
            .header(header::COOKIE, format!("{SESSION_COOKIE}={}", admin.token))
            .header("x-csrf-token", &admin.csrf)
            .header(header::CONTENT_TYPE, ctype)
            .body(Body::from(body))
            .unwrap()
    };
    let cases = [
        (
            with("text/plain", b"{}".to_vec()),
            415,
            "unsupported_media_type",
            "",
        ),
        (
            with("application/json", b"{\"name\": ".to_vec()),
            400,
            "invalid_input",
            "malformed JSON",
        ),
        (
            with("application/json", b"[1,2]".to_vec()),
            400,
            "invalid_input",
            "",
        ),
        (
            with(
                "application/json",
                br#"{"name":"x1","role":"root","password":"p"}"#.to_vec(),
            ),
            400,
            "invalid_input",
            "role",
        ),
        (
            with(
                "application/json",
                br#"{"name":"x1","role":"viewer","password":"Gatehouse-42","admin":true}"#.to_vec(),
            ),
            400,
            "invalid_input",
            "admin",
        ),
        (
            with("application/json", vec![b' '; BODY_LIMIT + 10]),
            413,
            "payload_too_large",
            "64 KiB",
        ),
        (
            with(
                "application/json",
                br#"{"name":"../etc","role":"viewer","password":"Gatehouse-42"}"#.to_vec(),
            ),
            400,
            "invalid_input",
            "user name",
        ),
    ];
    for (req, status, code, text) in cases {
        let r = h.send(req).await;
        assert_eq!(r.status.as_u16(), status, "{}", r.body);
        let (c, m) = r.error();
        assert_eq!(c, code, "{}", r.body);
        assert!(m.contains(text), "{m}");
    }
    // Trailing data after the object: refused whole, and nothing of it applied.
    h.user(&admin, "olga", Role::Operator).await;
    for body in [
        &br#"{"disabled":true} this is not JSON"#[..],
        br#"{"disabled":true}{"role":"admin"}"#,
        br#"{"disabled":true},"#,
    ] {
        let r = h
            .send(
                Request::patch("/api/users/olga")
                    .header(header::COOKIE, format!("{SESSION_COOKIE}={}", admin.token))
                    .header("x-csrf-token", &admin.csrf)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.to_vec()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(
            r.error().1.contains("more than one JSON value"),
            "{}",
            r.body
        );
    }
    let olga = h.get("/api/users", Some(&admin)).await.json();
    let olga = olga
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == "olga"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (olga["disabled"].as_bool(), olga["role"].as_str()),
        (Some(false), Some("operator")),
        "{olga}"
    );
    for path in ["/api/users/..%2F..%2Fetc", "/api/users/%00"] {
        let r = h.call(Method::DELETE, path, Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
    }
    let r = h.get("/api/audit?since=yesterday", Some(&admin)).await;
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("since"))
    );
    let r = h.get("/api/audit?limit=0", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn logins_are_rate_limited_and_audited() {
    let h = Harness::new();
    h.setup().await;
    for _ in 0..auth::LOGIN_FAILURES {
        assert_eq!(
            h.login("admin", "wrong").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = h.login("admin", PW).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let failed = h
        .app
        .audit
        .query(&veil_store::audit::AuditFilter {
            action: Some("session.login_failed".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(failed.len(), auth::LOGIN_FAILURES);
    assert_eq!(failed[0].after["username"], "admin");
}

#[tokio::test]
async fn user_changes_and_decisions_are_audited_with_before_and_after() {
    let h = Harness::new();
    let admin = h.setup().await;
    let olga = h.user(&admin, "olga", Role::Operator).await;
    let r = h
        .call(
            Method::PATCH,
            "/api/users/olga",
            Some(&admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.json()["role"], "viewer", "{}", r.body);
    // Olga's session ended with the change.
    assert_eq!(
        h.get("/api/session", Some(&olga)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = h
        .call(
            Method::POST,
            "/api/requests/r-1/decision",
            Some(&admin),
            Some(json!({"approve": false})),
        )
        .await;
    assert_eq!(r.json()["field"], "reason");
    let r = h
        .call(
            Method::POST,
            "/api/requests/r-1/decision",
            Some(&admin),
            Some(json!({"approve": true})),
        )
        .await;
    assert_eq!(r.json()["status"], "approved");
    assert_eq!(
        h.dev.decisions.lock().unwrap()[0],
        ("r-1".into(), true, "admin".into())
    );
    // Live sessions: the operator's answer by name; bad ids and reasons refused by field.
    let r = h
        .call(
            Method::POST,
            "/api/live/l-1/decision",
            Some(&admin),
            Some(json!({"accept": false, "reason": "busy\u{7}"})),
        )
        .await;
    assert_eq!(r.json()["field"], "reason", "{:?}", r.json());
    let r = h
        .call(
            Method::POST,
            "/api/live/l-9/decision",
            Some(&admin),
            Some(json!({"accept": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .call(
            Method::POST,
            "/api/live/l-1/decision",
            Some(&admin),
            Some(json!({"accept": false, "reason": "all operators busy"})),
        )
        .await;
    assert_eq!(r.json()["accepted"], false);
    assert_eq!(
        h.dev.decisions.lock().unwrap()[1],
        ("l-1".into(), false, "admin".into())
    );
    let r = h
        .call(
            Method::POST,
            "/api/live/l-1/stop",
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.json()["state"], "ended");
    assert_eq!(h.get("/api/live", Some(&admin)).await.json()["capacity"], 2);
    let entries = h
        .get("/api/audit?actor=admin&action=user.", Some(&admin))
        .await
        .json();
    let update = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "user.update")
        .unwrap();
    assert_eq!(update["before"]["role"], "operator");
    assert_eq!(update["after"]["role"], "viewer");
    let csv = h.get("/api/audit.csv", Some(&admin)).await;
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        csv.body
            .starts_with("seq,time,actor,action,subject,before,after,hash\r\n")
    );
    assert!(csv.body.contains("device.setup"));
    let head = veil_store::audit::verify(h.app.audit.path()).unwrap();
    assert!(head.entries >= 5, "{head:?}");
    // Signing out ends the session on the server, not only in the browser.
    let r = h
        .call(Method::POST, "/api/logout", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        h.get("/api/session", Some(&admin)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn health_status_and_snapshots_keep_working_behind_sign_in() {
    let h = Harness::new();
    let admin = h.setup().await;
    let r = h.get("/healthz", None).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, r#"{"status":"ok"}"#)
    );
    h.dev.stopping.store(true, Ordering::SeqCst);
    assert_eq!(
        h.get("/healthz", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let r = h.get("/api/status", Some(&admin)).await;
    assert_eq!(r.json()["features"]["mqtt"]["state"], "not_configured");
    let r = h.get("/metrics", Some(&admin)).await;
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let r = h
        .get("/api/cameras/gate/snapshot.jpg?width=320", Some(&admin))
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "jpeg 320"));
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
        ("/api/nope", StatusCode::NOT_FOUND),
    ] {
        let r = h.get(path, Some(&admin)).await;
        assert_eq!(r.status, want, "{path}: {}", r.body);
        assert!(!r.error().1.is_empty(), "{path}");
    }
    let doc = h.get("/api/openapi.json", Some(&admin)).await.json();
    for (spec, _) in routes() {
        let method = spec.method.as_str().to_lowercase();
        assert!(
            doc["paths"][spec.path][&method].is_object(),
            "{} {} missing from OpenAPI",
            spec.method,
            spec.path
        );
    }
    // Pages fall back to the app; security headers on everything.
    let r = h.get("/cameras", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["strict-transport-security"], "max-age=31536000");
    assert!(
        r.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert_eq!(
        h.get("/assets/missing.js", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_ne!(
        h.get("/../../etc/passwd", None).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn masks_are_validated_per_field_and_audited() {
    let h = Harness::new();
    let admin = h.setup().await;
    let square =
        json!({"name": "window", "points": [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.1, 0.4]]});
    let r = h
        .call(
            Method::PUT,
            "/api/cameras/gate/masks",
            Some(&admin),
            Some(json!({"masks": [square]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let bow = json!({"name": "bow", "points": [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]});
    let out = json!({"name": "out", "points": [[0.1, 0.1], [1.5, 0.1], [0.4, 0.4]]});
    for (mask, field) in [(bow, "masks[1].points"), (out, "masks[1].points")] {
        let r = h
            .call(
                Method::PUT,
                "/api/cameras/gate/masks",
                Some(&admin),
                Some(json!({"masks": [square, mask]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.json()["field"], field, "{}", r.body);
    }
    let r = h
        .call(
            Method::PUT,
            "/api/cameras/gate/masks",
            Some(&admin),
            Some(json!({"masks": [{"name": "x", "points": "none"}]})),
        )
        .await;
    assert_eq!(r.json()["field"], "masks[0].points", "{}", r.body);
    let r = h
        .call(
            Method::PUT,
            "/api/cameras/nope/masks",
            Some(&admin),
            Some(json!({"masks": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let got = h.get("/api/cameras/gate/masks", Some(&admin)).await.json();
    assert_eq!(got["masks"][0]["name"], "window");
    let entry = &h
        .get("/api/audit?action=camera.masks", Some(&admin))
        .await
        .json()[0];
    assert_eq!(entry["subject"], "gate");
    assert_eq!(entry["before"]["masks"], json!([]));
    assert_eq!(entry["after"]["masks"][0]["name"], "window");
}

#[tokio::test]
async fn the_live_preview_streams_jpeg_parts() {
    let h = Harness::new();
    let admin = h.setup().await;
    let r = h
        .get("/api/cameras/gate/preview.mjpg?width=320", Some(&admin))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "multipart/x-mixed-replace; boundary=frame"
    );
    assert!(
        r.body.starts_with(
            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\n\r\njpeg 320\r\n"
        ),
        "{}",
        r.body
    );
    let r = h.get("/api/cameras/dark/preview.mjpg", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Through a consumer's filter: held open while the stream is read, released after.
    let r = h
        .get(
            "/api/cameras/gate/preview.mjpg?width=320&filter=silhouette",
            Some(&admin),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.ends_with("\r\n\r\nsilhouette 320\r\n"), "{}", r.body);
    assert_eq!(
        PREVIEWS_OPEN.load(Ordering::SeqCst),
        0,
        "the preview was not released"
    );
    let r = h
        .get("/api/cameras/gate/preview.mjpg?filter=strict", Some(&admin))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.body.contains("live encodes"), "{}", r.body);
    let r = h
        .get("/api/cameras/gate/preview.mjpg?filter=sepia", Some(&admin))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .get("/api/cameras/gate/preview.mjpg?colour=1", Some(&admin))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("colour"), "{}", r.body);
}

#[tokio::test]
async fn a_certificate_is_checked_installed_and_audited() {
    let h = Harness::new();
    let admin = h.setup().await;
    let dir = tempfile::tempdir().unwrap();
    let a = crate::tls::load_or_create(dir.path(), "a", &["veil.local".into()]).unwrap();
    let other = tempfile::tempdir().unwrap();
    let b = crate::tls::load_or_create(other.path(), "b", &["veil.local".into()]).unwrap();
    let put = |cert: &str, key: &str| json!({"cert_pem": cert, "key_pem": key});
    let r = h
        .call(
            Method::PUT,
            "/api/system/certificate",
            Some(&admin),
            Some(put(&a.cert_pem, &b.key_pem)),
        )
        .await;
    r.assert_refused("key_pem");
    let r = h
        .call(
            Method::PUT,
            "/api/system/certificate",
            Some(&admin),
            Some(put("nope", &a.key_pem)),
        )
        .await;
    assert_eq!(r.json()["field"], "cert_pem", "{}", r.body);
    let r = h
        .call(
            Method::PUT,
            "/api/system/certificate",
            Some(&admin),
            Some(put(&a.cert_pem, &a.key_pem)),
        )
        .await;
    assert_eq!(
        r.json()["fingerprint"],
        a.fingerprint.as_str(),
        "{}",
        r.body
    );
    let entry = &h
        .get("/api/audit?action=system.certificate", Some(&admin))
        .await
        .json()[0];
    assert_eq!(entry["after"]["fingerprint"], a.fingerprint.as_str());
}

#[tokio::test]
async fn cameras_are_added_checked_per_key_changed_and_removed_with_an_audit_trail() {
    let h = Harness::new();
    let admin = h.setup().await;
    let lab = json!({"id": "lab", "name": "Lab bench", "source": {"kind": "synthetic", "width": 320, "height": 240, "fps": 5}, "mount": "vehicle"});
    let r = h
        .call(
            Method::POST,
            "/api/cameras",
            Some(&admin),
            Some(lab.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for (body, field) in [
        (
            json!({"id": "x1", "source": {"kind": "synthetic", "fps": 500}}),
            "source.fps",
        ),
        (
            json!({"id": "x1", "source": {"kind": "webcam"}}),
            "source.kind",
        ),
        (
            json!({"id": "Bad Id", "source": {"kind": "synthetic"}}),
            "id",
        ),
        (
            json!({"id": "x1", "source": {"kind": "synthetic"}, "position": {"lat": 95.0, "lon": 0.0}}),
            "position.lat",
        ),
    ] {
        let r = h
            .call(Method::POST, "/api/cameras", Some(&admin), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(
            r.json()["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{field}: {}",
            r.body
        );
    }
    let r = h
        .call(
            Method::POST,
            "/api/cameras",
            Some(&admin),
            Some(lab.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let mut renamed = lab.clone();
    renamed["id"] = json!("other");
    let r = h
        .call(Method::PUT, "/api/cameras/lab", Some(&admin), Some(renamed))
        .await;
    assert_eq!(r.json()["field"], "id", "{}", r.body);
    let mut changed = lab.clone();
    changed["name"] = json!("Lab door");
    let r = h
        .call(Method::PUT, "/api/cameras/lab", Some(&admin), Some(changed))
        .await;
    assert_eq!(r.json()["name"], "Lab door", "{}", r.body);
    let r = h
        .call(
            Method::POST,
            "/api/sources/test",
            Some(&admin),
            Some(json!({"source": {"kind": "v4l2", "device": "/dev/video9"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.error().1.contains("no such device"));
    let r = h
        .call(Method::DELETE, "/api/cameras/lab", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(h.get("/api/cameras", Some(&admin)).await.json(), json!([]));
    let trail: Vec<String> = h
        .get("/api/audit?action=camera.", Some(&admin))
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(trail, ["camera.remove", "camera.update", "camera.add"]);
}

#[tokio::test]
async fn timelines_exports_and_export_files_check_their_input() {
    let h = Harness::new();
    let admin = h.setup().await;
    let t = h
        .get(
            "/api/recordings?camera=gate&from=2026-11-23T10:00:00Z&to=2026-11-23T11:00:00Z",
            Some(&admin),
        )
        .await
        .json();
    assert_eq!(t["spans"][0]["to_ms"], t["gaps"][0]["from_ms"]);
    for (q, field) in [
        ("camera=gate&from=yesterday", "from"),
        (
            "camera=gate&from=2026-11-01T00:00:00Z&to=2026-11-23T00:00:00Z",
            "from",
        ),
        ("camera=Bad%20Id", "camera"),
    ] {
        let r = h.get(&format!("/api/recordings?{q}"), Some(&admin)).await;
        assert_eq!(
            (r.status, r.json()["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{q}: {}",
            r.body
        );
    }
    assert_eq!(
        h.get("/api/recordings?camera=nope", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = h.call(Method::POST, "/api/exports", Some(&admin), Some(json!({"cameras": [], "from": "2026-11-23T10:00:00Z", "to": "2026-11-23T10:05:00Z"}))).await;
    assert_eq!(r.json()["field"], "cameras");
    let r = h.call(Method::POST, "/api/exports", Some(&admin), Some(json!({"cameras": ["gate"], "from": "2026-11-23T10:05:00Z", "to": "2026-11-23T10:00:00Z"}))).await;
    assert_eq!(r.json()["field"], "to");
    let r = h.call(Method::POST, "/api/exports", Some(&admin), Some(json!({"cameras": ["gate"], "from": "2026-11-23T10:00:00Z", "to": "2026-11-23T10:05:00Z"}))).await;
    assert_eq!(
        (r.status, r.json()["job"]["by"].as_str()),
        (StatusCode::CREATED, Some("admin"))
    );

    // Files: byte ranges for the video element; nothing outside the export.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gate-001.mp4"), b"0123456789").unwrap();
    *h.dev.export.lock().unwrap() = Some(dir);
    let r = h
        .get("/api/exports/j-1/files/gate-001.mp4", Some(&admin))
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "0123456789"));
    assert_eq!(r.headers[header::CONTENT_TYPE], "video/mp4");
    let req = Request::get("/api/exports/j-1/files/gate-001.mp4")
        .header(header::COOKIE, format!("{SESSION_COOKIE}={}", admin.token))
        .header(header::RANGE, "bytes=2-4")
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "234")
    );
    for path in [
        "/api/exports/j-1/files/..%2F..%2Fetc%2Fpasswd",
        "/api/exports/j-1/files/.hidden",
        "/api/exports/..%2Fstate/files/web.sqlite3",
        "/api/exports/j-1/files/a%00b",
    ] {
        let r = h.get(path, Some(&admin)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
        assert!(r.error().1.contains("not a file of an export"), "{path}");
    }
    assert_eq!(
        h.get("/api/exports/j-1/files/other.mp4", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn fleet_settings_name_the_bad_key_and_are_audited() {
    let h = Harness::new();
    let admin = h.setup().await;
    let r = h
        .call(
            Method::PUT,
            "/api/fleet",
            Some(&admin),
            Some(json!({"mqtt": {"broker": "http://x"}})),
        )
        .await;
    r.assert_refused("mqtt.broker");
    let r = h
        .call(
            Method::PUT,
            "/api/fleet",
            Some(&admin),
            Some(json!({"mqtt": {"broker": 5}})),
        )
        .await;
    assert_eq!(r.json()["field"], "mqtt.broker", "{}", r.body);
    let r = h
        .call(
            Method::PUT,
            "/api/fleet",
            Some(&admin),
            Some(json!({"mqtt": {"broker": "mqtts://b:8883"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let entry = &h
        .get("/api/audit?action=system.fleet", Some(&admin))
        .await
        .json()[0];
    assert_eq!(entry["after"]["mqtt"], "mqtts://b:8883");
    assert_eq!(
        h.get("/api/fleet", Some(&admin)).await.json()["state"]["mqtt"]["state"],
        "not_configured"
    );
}

#[tokio::test]
async fn originals_are_for_admins_only_and_every_view_is_audited() {
    let h = Harness::new();
    let admin = h.setup().await;
    let olga = h.user(&admin, "olga", Role::Operator).await;
    assert_eq!(
        h.get("/api/cameras/gate/original.jpg", Some(&olga))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = h
        .get("/api/cameras/gate/original.jpg?width=320", Some(&admin))
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "original 320")
    );
    assert_eq!(
        h.get("/api/cameras/dark/original.jpg", Some(&admin))
            .await
            .status,
        StatusCode::CONFLICT
    );
    let views = h
        .get("/api/audit?action=camera.view_original", Some(&admin))
        .await
        .json();
    assert_eq!(views.as_array().unwrap().len(), 1, "{views}");
    assert_eq!(
        (views[0]["actor"].as_str(), views[0]["subject"].as_str()),
        (Some("admin"), Some("gate"))
    );
}

/// The incident workflow through the API: an admin defines the properties, an operator keeps
/// a project, a viewer reads it and can change nothing; bad values get a 4xx naming the field.
#[tokio::test]
async fn incident_projects_from_properties_to_report() {
    let h = Harness::new();
    let admin = h.setup().await;
    let olga = h.user(&admin, "olga", Role::Operator).await;
    let vic = h.user(&admin, "vic", Role::Viewer).await;
    let props = h.get("/api/incident-properties", Some(&olga)).await.json();
    assert_eq!(props["statuses"].as_array().unwrap().len(), 4);
    let mut form = props.clone();
    form["types"] =
        json!([{"name": "Workplace injury - employee"}, {"name": "Workplace injury - visitor"}]);
    form["categories"] = json!([
        {"name": "Reason", "values": [{"name": "Tripped or fallen"}, {"name": "Other"}]},
        {"name": "Location", "values": [{"name": "Laboratory"}, {"name": "Parking lot"}]}
    ]);
    form["fields"] = json!([
        {"kind": "integer", "name": "People involved", "description": "Count everyone hurt"},
        {"kind": "checkbox", "name": "First aid given"},
        {"kind": "checkbox", "name": "Police called"},
        {"kind": "decimal", "name": "Damage (EUR)"}
    ]);
    let r = h
        .call(
            Method::PUT,
            "/api/incident-properties",
            Some(&olga),
            Some(form.clone()),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "operators read the properties only"
    );
    let saved = h
        .call(
            Method::PUT,
            "/api/incident-properties",
            Some(&admin),
            Some(form.clone()),
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let p = saved.json();
    // A second admin saving the list they loaded before is told to refresh.
    let r = h
        .call(
            Method::PUT,
            "/api/incident-properties",
            Some(&admin),
            Some(form.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.error().1.contains("refresh the list"), "{}", r.body);
    // Limits name the field.
    for (mutate, field) in [
        (
            json!({"categories": (0..6).map(|i| json!({"name": format!("C{i}")})).collect::<Vec<_>>()}),
            "categories",
        ),
        (
            json!({"fields": (0..4).map(|i| json!({"kind": "integer", "name": format!("I{i}")})).collect::<Vec<_>>()}),
            "fields[3].kind",
        ),
        (json!({"retention_days": 365_001}), "retention_days"),
    ] {
        let mut bad = p.clone();
        for (k, v) in mutate.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let r = h
            .call(
                Method::PUT,
                "/api/incident-properties",
                Some(&admin),
                Some(bad),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.json()["field"], field, "{}", r.body);
    }

    let reason = &p["categories"][0];
    let location = &p["categories"][1];
    let int = p["fields"][0]["id"].as_str().unwrap();
    let check = p["fields"][1]["id"].as_str().unwrap();
    let created = h
        .call(
            Method::POST,
            "/api/incidents",
            Some(&olga),
            Some(json!({
                "name": "Fall at the loading bay",
                "type_id": p["types"][0]["id"],
                "sequences": [{"camera": "gate", "from": "2026-12-01T08:00:00Z", "to": "2026-12-01T08:05:00Z"}]
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let project = created.json();
    let id = project["id"].as_i64().unwrap();
    let path = format!("/api/incidents/{id}");
    for (body, field) in [
        (json!({"type_id": "t999"}), "type_id"),
        (json!({"status_id": "nope"}), "status_id"),
        (json!({"fields": {int: "three"}}), &*format!("fields.{int}")),
        (json!({"fields": {check: 1}}), &*format!("fields.{check}")),
        (json!({"fields": {"f999": 1}}), "fields.f999"),
        (
            json!({"categories": {reason["id"].as_str().unwrap(): location["values"][0]["id"]}}),
            &*format!("categories.{}", reason["id"].as_str().unwrap()),
        ),
        (json!({"start": "yesterday"}), "start"),
    ] {
        let r = h
            .call(Method::PATCH, &path, Some(&olga), Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert_eq!(r.json()["field"], field, "{body}: {}", r.body);
    }
    let r = h
        .call(
            Method::PATCH,
            &path,
            Some(&olga),
            Some(json!({
                "version": project["version"],
                "status_id": p["statuses"][1]["id"],
                "categories": {reason["id"].as_str().unwrap(): reason["values"][0]["id"]},
                "fields": {int: 2, check: true}
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let stale = h
        .call(
            Method::PATCH,
            &path,
            Some(&olga),
            Some(json!({"version": project["version"], "name": "x"})),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    let r = h
        .call(
            Method::POST,
            &format!("{path}/comments"),
            Some(&olga),
            Some(json!({"text": "Ambulance at 08:20"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let comment = r.json()["id"].as_i64().unwrap();
    let r = h
        .call(Method::POST, &format!("{path}/calls"), Some(&olga),
            Some(json!({"caller": "Olga", "callee": "Emergency services", "at": "2026-12-01T08:04:00Z", "phone": "112"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // The viewer reads everything and changes nothing.
    let seen = h.get(&path, Some(&vic)).await;
    assert_eq!(seen.status, StatusCode::OK);
    let seen = seen.json();
    assert_eq!(seen["status_name"], "In progress");
    assert_eq!(seen["comments"][0]["text"], "Ambulance at 08:20");
    assert_eq!(seen["calls"][0]["callee"], "Emergency services");
    assert_eq!(seen["sequences"][0]["camera"], "gate");
    for (method, url, body) in [
        (Method::PATCH, path.clone(), json!({"name": "mine now"})),
        (Method::DELETE, path.clone(), json!(null)),
        (
            Method::POST,
            format!("{path}/comments"),
            json!({"text": "hi"}),
        ),
        (
            Method::PATCH,
            format!("{path}/comments/{comment}"),
            json!({"text": "hi"}),
        ),
        (
            Method::POST,
            format!("{path}/calls"),
            json!({"caller": "a", "callee": "b", "at": "2026-12-01T08:04:00Z"}),
        ),
        (
            Method::POST,
            format!("{path}/sequences"),
            json!({"sequences": []}),
        ),
        (Method::POST, "/api/incidents".into(), json!({})),
    ] {
        let body = (!body.is_null()).then_some(body);
        let r = h.call(method.clone(), &url, Some(&vic), body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {url}: {}",
            r.body
        );
    }
    let report = h.get(&format!("{path}/report.pdf"), Some(&vic)).await;
    assert_eq!(report.status, StatusCode::OK);
    assert_eq!(report.headers[header::CONTENT_TYPE], "application/pdf");
    let html = h.get(&format!("{path}/report.html"), Some(&vic)).await;
    assert!(html.body.contains("Fall at the loading bay") && html.body.contains("People involved"));

    // A used property cannot be deleted; the message counts the projects.
    let mut without = h.get("/api/incident-properties", Some(&admin)).await.json();
    without["types"].as_array_mut().unwrap().remove(0);
    let r = h
        .call(
            Method::PUT,
            "/api/incident-properties",
            Some(&admin),
            Some(without),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.error().1.contains("is used by 1 project"), "{}", r.body);

    // The list finds it by comment text; creation, report and properties are audited.
    let list = h.get("/api/incidents?q=ambulance", Some(&vic)).await.json();
    assert_eq!(list["total"], 1);
    let bad = h.get("/api/incidents?limit=0", Some(&vic)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let audit = h.get("/api/audit", Some(&admin)).await.json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in ["incident.properties", "incident.create", "incident.report"] {
        assert!(actions.contains(&want), "{want} not in {actions:?}");
    }
    let activity = h.get(&path, Some(&admin)).await.json()["activity"].clone();
    let acts: Vec<&str> = activity
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(
        acts.starts_with(&["created", "sequence_added", "changed"]),
        "{acts:?}"
    );
    assert!(acts.contains(&"report"));
    let r = h.call(Method::DELETE, &path, Some(&olga), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        h.get(&path, Some(&olga)).await.status,
        StatusCode::NOT_FOUND
    );
}

/// A metrics scraper's token: accepted as a bearer credential on /metrics only, stored as a
/// hash, refused once revoked; making and revoking them is for admins and audited.
#[tokio::test]
async fn scrapers_read_metrics_with_a_revocable_token() {
    let h = Harness::new();
    let admin = h.setup().await;
    let olga = h.user(&admin, "olga", Role::Operator).await;
    let scrape = |token: &str| {
        Request::get("/metrics")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let r = h
        .call(
            Method::POST,
            "/api/system/scrape-tokens",
            Some(&olga),
            Some(json!({"name": "prometheus"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "operators see the system, not change it"
    );
    let r = h
        .call(
            Method::POST,
            "/api/system/scrape-tokens",
            Some(&admin),
            Some(json!({"name": "bad/name"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["field"], "name");
    let r = h
        .call(
            Method::POST,
            "/api/system/scrape-tokens",
            Some(&admin),
            Some(json!({"name": "prometheus-dc1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let made = r.json();
    let secret = made["secret"].as_str().unwrap().to_string();
    let id = made["token"]["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("veil_scrape_"));

    let ok = h.send(scrape(&secret)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.contains("# EOF"), "{}", ok.body);
    for wrong in [
        format!("{secret}x"),
        "veil_scrape_00".into(),
        "Basic abc".into(),
        String::new(),
    ] {
        let r = h.send(scrape(&wrong)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{wrong}: {}", r.body);
    }
    // Only /metrics takes it.
    let r = h
        .send(
            Request::get("/api/status")
                .header(header::AUTHORIZATION, format!("Bearer {secret}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Listed without the secret, with when it was used; only its hash is stored.
    let list = h.get("/api/system/scrape-tokens", Some(&olga)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.body.contains(&secret));
    assert!(list.json()[0]["last_used_ms"].is_u64(), "{}", list.body);
    let db = rusqlite::Connection::open(h._dir.path().join("web.sqlite3")).unwrap();
    let stored: String = db
        .query_row("SELECT token_sha256 FROM scrape_tokens", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, secret);
    assert!(!stored.contains(&secret[12..]));

    let r = h
        .call(
            Method::DELETE,
            &format!("/api/system/scrape-tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        h.send(scrape(&secret)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let audit = h
        .get("/api/audit?action=scrape_token.", Some(&admin))
        .await
        .json();
    assert_eq!(audit.as_array().unwrap().len(), 2, "{audit}");
}

#[tokio::test]
async fn a_bundle_upload_is_for_admins_streams_past_the_body_limit_and_a_refusal_says_why() {
    let h = Harness::new();
    let admin = h.setup().await;
    let operator = h.user(&admin, "olga", Role::Operator).await;
    let upload = |who: &Session, bytes: Vec<u8>, query: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(format!("/api/system/update{query}"))
            .header(header::COOKIE, format!("{SESSION_COOKIE}={}", who.token))
            .header("x-csrf-token", &who.csrf)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Body::from(bytes))
            .unwrap()
    };
    let r = h.get("/api/system/update", Some(&operator)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["job"], Value::Null);
    assert_eq!(r.json()["firmware_version"], "0.1.0");

    // Operators may look, not install.
    let r = h.send(upload(&operator, vec![1; 10], "")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // Empty, or a bad reboot window: said clearly.
    let r = h.send(upload(&admin, vec![], "")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("empty"), "{}", r.body);
    let r = h.send(upload(&admin, vec![1; 10], "?later=1")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // A 3 MiB body passes the 64 KiB limit of every other route, reaches the device's check,
    // and its refusal comes back; nothing is left behind.
    let before = std::fs::read_dir(std::env::temp_dir()).unwrap().count();
    let r = h
        .send(upload(&admin, vec![7; 3 << 20], "?reboot=manual"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body.contains("3145728 bytes, not a signed bundle"),
        "{}",
        r.body
    );
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("upload-"))
        .count();
    assert_eq!(leftovers, 0, "{before} entries before");
    let entry = &h
        .get("/api/audit?action=firmware.refused", Some(&admin))
        .await
        .json()[0];
    assert_eq!(entry["actor"], "admin");
    assert_eq!(entry["after"]["bytes"], 3 << 20);
    // Other routes still refuse large bodies.
    let mut big = upload(&admin, vec![b' '; 100 << 10], "");
    *big.uri_mut() = "/api/system/reboot".parse().unwrap();
    assert_eq!(h.send(big).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}
