//! Fleet settings on the page: the MQTT broker, the upload target, their certificates, and a
//! "test connection" that tries them without disturbing the running session.

use axum::Extension;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use veil_core::config::{MqttConfig, UploadConfig};

use crate::admin::blocking as device;
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::{ApiError, App};

/// The broker and upload target as in the config file's `[mqtt]` and `[upload]` tables
/// (JSON keys are the TOML keys), and certificates pasted as PEM, which the device keeps in
/// its state directory and points `ca_file` / `client_cert` / `client_key` at.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetForm {
    /// `[mqtt]`, or null to leave the fleet. Passwords sent as `***` stay as they are.
    #[schema(value_type = Option<Object>)]
    pub mqtt: Option<MqttConfig>,
    /// `[upload]`, or null for no upload target. A secret key sent as `***` stays.
    #[schema(value_type = Option<Object>)]
    pub upload: Option<UploadConfig>,
    /// The CA that signed the broker's certificate (PEM).
    pub mqtt_ca_pem: Option<String>,
    /// The device's client certificate for the broker (PEM), with its key.
    pub mqtt_client_cert_pem: Option<String>,
    pub mqtt_client_key_pem: Option<String>,
    /// The CA of a private upload target (PEM).
    pub upload_ca_pem: Option<String>,
}

#[utoipa::path(get, path = "/api/fleet", tag = "system",
    responses((status = 200, description = "`mqtt` and `upload` as in effect (secrets `***`), and their state", body = Object)))]
pub async fn get(State(app): State<App>) -> Result<axum::Json<Value>, ApiError> {
    let view = app.view.clone();
    let settings = device(move || view.fleet()).await?;
    let features = app.view.status().features;
    Ok(axum::Json(
        json!({ "settings": settings, "state": features }),
    ))
}

/// Saves the fleet settings and applies them: the MQTT session reconnects with them, the next
/// export job uploads to the new target.
#[utoipa::path(put, path = "/api/fleet", tag = "system", request_body = FleetForm,
    responses(
        (status = 200, description = "Saved and applied (secrets `***`)", body = Object),
        (status = 400, description = "A key is invalid; `field` names it (e.g. `mqtt.broker`)", body = ApiError),
    ))]
pub async fn put(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    JsonBody(form): JsonBody<FleetForm>,
) -> Result<axum::Json<Value>, ApiError> {
    let view = app.view.clone();
    let (before, after) = device(move || view.set_fleet(form)).await?;
    crate::admin::audit(
        &app,
        &caller.user,
        "system.fleet",
        "",
        before,
        after.clone(),
    );
    Ok(axum::Json(after))
}

/// Tries the given settings (or, for a part left out, the current ones): connects to the
/// broker and lists the upload bucket. Nothing is saved.
#[utoipa::path(post, path = "/api/fleet/test", tag = "system", request_body = FleetForm,
    responses(
        (status = 200, description = "Per part: `ok`, or the reason it failed", body = Object),
        (status = 400, description = "A key is invalid; `field` names it", body = ApiError),
    ))]
pub async fn test(
    State(app): State<App>,
    JsonBody(form): JsonBody<FleetForm>,
) -> Result<axum::Json<Value>, ApiError> {
    let view = app.view.clone();
    Ok(axum::Json(device(move || view.test_fleet(form)).await?))
}
