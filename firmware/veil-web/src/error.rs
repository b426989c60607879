use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use veil_core::{Error, ErrorKind};

/// The body of every error the API returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `invalid_input`, `not_found`, `csrf`.
    pub code: &'static str,
    /// One line a person can act on.
    pub message: String,
    /// The input field the message is about, for forms to show it next to that field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    status: u16,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            code: kind.code(),
            message: message.into(),
            field: None,
            status: kind.http_status(),
        }
    }

    /// An error with a status and code outside [`ErrorKind`] (413, 415, CSRF).
    pub fn custom(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            status,
        }
    }

    /// Bad input in one field: `field` is named in the message too.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        let mut e = ApiError::new(ErrorKind::InvalidInput, format!("{field}: {message}"));
        e.field = Some(field.into());
        e
    }

    pub fn status(&self) -> u16 {
        self.status
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::new(e.kind(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
            // "wait N s" in rate-limit messages is also the Retry-After header.
            self.message
                .split("wait ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .unwrap_or("60")
                .to_string()
        });
        let mut res = (status, Json(self)).into_response();
        if let Some(secs) = retry.and_then(|s| s.parse().ok()) {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs);
        }
        res
    }
}
