//! The admin page, built by Vite into `web-ui/dist` and embedded in the binary.

use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../../web-ui/dist"]
#[allow_missing = true]
struct Assets;

/// Shown when the binary was built before the page was.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
<title>Veil</title><h1>Veil</h1><p>The web page is not part of this build. \
Build it with <code>scripts/dev</code>; the API is at <a href=\"/api/status\">/api/status</a>.</p></html>";

pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if let Some(file) = (!path.is_empty()).then(|| Assets::get(path)).flatten() {
        let mime = file.metadata.mimetype().to_string();
        // Vite names assets by content hash: they never change under the same name.
        let cache = if path.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, cache.to_string()),
            ],
            file.data,
        )
            .into_response();
    }
    let looks_like_file = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'));
    if looks_like_file {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    // Any other path is a page of the single-page app.
    match Assets::get("index.html") {
        Some(index) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            index.data,
        )
            .into_response(),
        None => Html(NOT_BUILT).into_response(),
    }
}
