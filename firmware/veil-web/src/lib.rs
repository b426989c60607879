//! The local HTTP API and the embedded admin page.
//!
//! The router knows nothing of cameras or threads: it asks a [`DeviceView`] for what to show,
//! so it is tested without a daemon (`tower::ServiceExt::oneshot`) and served by `veild`.

mod api;
mod assets;
mod error;

pub use api::{
    ApiDoc, CameraState, CameraStatus, DeviceInfo, FeatureState, Features, Health, StatusResponse,
};
pub use error::ApiError;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

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
}

pub type SharedView = Arc<dyn DeviceView>;

/// Every route of the local HTTP server.
pub fn router(view: SharedView) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/status", get(api::status))
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/cameras/{id}/snapshot.jpg", get(api::snapshot))
        .route("/api/{*rest}", axum::routing::any(api::no_such_route))
        .fallback(get(assets::serve))
        .with_state(view)
}
