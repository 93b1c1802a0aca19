//! The demo pages and the browser client library, embedded in the binary and served under
//! `/demo` (`demo = false` turns them off): `web/demo/*` at `/demo/{file}`, `web/switchboard.js`
//! and its declarations at `/demo/switchboard.js` and `/demo/switchboard.d.ts`. Pages load
//! scripts only from this node and connect only to it (a strict Content-Security-Policy); each
//! answer carries an `ETag`, and a matching `If-None-Match` is answered 304.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

#[derive(rust_embed::Embed)]
#[folder = "web/"]
#[include = "switchboard.js"]
#[include = "switchboard.d.ts"]
#[include = "demo/*"]
#[exclude = "demo/.*"]
struct Assets;

/// What the pages may load and connect to: this node only. Camera and microphone are the
/// page's own to ask for.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The embedded file a `/demo/{file}` path names: the library from `web/`, pages and their
/// assets from `web/demo/`. Only plain file names are served.
fn embedded(file: &str) -> Option<rust_embed::EmbeddedFile> {
    let plain = !file.is_empty()
        && file.len() <= 64
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !plain {
        return None;
    }
    match file {
        "switchboard.js" | "switchboard.d.ts" => Assets::get(file),
        _ => Assets::get(&format!("demo/{file}")),
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such demo file")
}

fn serve(file: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let asset = embedded(file).ok_or_else(not_found)?;
    let hash = asset.metadata.sha256_hash();
    let etag = format!("\"{}\"", hex_prefix(&hash));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = match file.rsplit_once('.').map(|(_, ext)| ext) {
            // Declarations are text for a browser; `mime_guess` calls them video.
            Some("ts") => "text/plain; charset=utf-8".to_owned(),
            _ => asset.metadata.mimetype().to_owned(),
        };
        let mut response = asset.data.into_owned().into_response();
        if let Ok(mime) = HeaderValue::from_str(&mime) {
            response.headers_mut().insert(header::CONTENT_TYPE, mime);
        }
        response
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

fn hex_prefix(hash: &[u8]) -> String {
    hash.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.config.demo {
        Ok(())
    } else {
        Err(not_found())
    }
}

/// The demo: its index page.
#[utoipa::path(
    get,
    path = "/demo/",
    tag = "demo",
    responses(
        (status = 200, description = "The demo's index page", content_type = "text/html"),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 404, description = "`not_found`: the demo is off (`demo = false`)", body = ErrorBody),
    )
)]
pub(super) async fn index(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    serve("index.html", &headers)
}

/// The demo, redirected to `/demo/` so that its pages' relative links resolve.
#[utoipa::path(
    get,
    path = "/demo",
    tag = "demo",
    responses(
        (status = 308, description = "To `/demo/`"),
        (status = 404, description = "`not_found`: the demo is off (`demo = false`)", body = ErrorBody),
    )
)]
pub(super) async fn root(State(state): State<AppState>) -> Result<Redirect, ApiError> {
    enabled(&state)?;
    Ok(Redirect::permanent("/demo/"))
}

/// A demo page, one of its assets, or the client library (`switchboard.js`, with its
/// TypeScript declarations `switchboard.d.ts`).
#[utoipa::path(
    get,
    path = "/demo/{file}",
    tag = "demo",
    params(("file" = String, Path, description = "A file of the demo", example = "switchboard.js")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 404, description = "`not_found`: no such file, or the demo is off", body = ErrorBody),
    )
)]
pub(super) async fn file(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    serve(&file, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_of_embedded_files_are_served() {
        assert!(embedded("index.html").is_some());
        for hostile in [
            "",
            "../Cargo.toml",
            "..%2fCargo.toml",
            ".hidden",
            "demo/index.html",
            "index.html/",
            "a\\b",
            "%00",
            &"a".repeat(65),
        ] {
            assert!(embedded(hostile).is_none(), "{hostile:?}");
        }
    }
}
