//! JSON request bodies with errors a form can show: the content type, the size limit and
//! every field error answered as an [`ApiError`] naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON body of type `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::custom(
                415,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::custom(
                    413,
                    "payload_too_large",
                    format!("the body is larger than {} KiB", crate::BODY_LIMIT / 1024),
                )
            } else {
                ApiError::custom(400, "invalid_input", format!("cannot read the body: {e}"))
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// One JSON value of type `T` and nothing after it but white space: a body with trailing data
/// (`{"disabled":true} junk`, or a second object) is refused whole, never half applied.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::custom(400, "invalid_input", format!("malformed JSON: {inner}"))
        } else if path == "." || path.is_empty() {
            ApiError::custom(400, "invalid_input", inner.to_string())
        } else {
            ApiError::field(&path, inner)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::custom(
            400,
            "invalid_input",
            format!("malformed JSON: the body holds more than one JSON value ({e}); send exactly one object"),
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::parse;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Change {
        disabled: Option<bool>,
        role: Option<String>,
    }

    fn body(disabled: bool, role: &str) -> String {
        serde_json::json!({"disabled": disabled, "role": role}).to_string()
    }

    proptest! {
        /// One object followed only by white space is taken as it is.
        #[test]
        fn white_space_after_the_value_is_fine(
            disabled: bool,
            role in "[a-z]{0,8}",
            ws in "[ \t\r\n]{0,8}",
        ) {
            let parsed: Change = parse(format!("{}{ws}", body(disabled, &role)).as_bytes())
                .map_err(|e| TestCaseError::fail(e.message))?;
            prop_assert_eq!(parsed, Change { disabled: Some(disabled), role: Some(role) });
        }

        /// Anything else after the value (text, a second object, a comma, a NUL) is refused
        /// with a 400 that says so: a body is never half applied.
        #[test]
        fn anything_after_the_value_is_refused(
            disabled: bool,
            ws in "[ \t\r\n]{0,3}",
            suffix in prop_oneof![
                any::<Vec<u8>>(),
                "\\PC{1,20}".prop_map(String::into_bytes),
                Just(br#"{"role":"admin"}"#.to_vec()),
            ].prop_filter("not only white space", |s| {
                s.iter().any(|b| !b" \t\r\n".contains(b))
            }),
        ) {
            let mut bytes = body(disabled, "viewer").into_bytes();
            bytes.extend_from_slice(ws.as_bytes());
            bytes.extend_from_slice(&suffix);
            let e = parse::<Change>(&bytes).expect_err("trailing data was accepted");
            prop_assert_eq!(e.status(), 400);
            prop_assert!(e.message.contains("malformed JSON"), "{}", e.message);
        }

        /// Arbitrary bytes never panic the reader; they parse or get a 400.
        #[test]
        fn arbitrary_bodies_get_an_answer(bytes: Vec<u8>) {
            if let Err(e) = parse::<Change>(&bytes) {
                prop_assert_eq!(e.status(), 400);
            }
        }
    }
}
