//! What every HTTP request leaves behind: an `x-request-id` (the client's when it is a sensible
//! id, else a fresh one) on the request and its answer, a span that names it, its route and
//! the client's address, and its count and duration under its route template.
//!
//! [`requests`] wraps the whole listener; [`matched`] runs inside the router, once the route is
//! known, and tells [`requests`] which it was. Nothing logged carries the query string (tokens
//! travel there) or a header's value other than the request id.

use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics as m;
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";
/// The longest request id taken from a client.
const MAX_ID_LEN: usize = 64;

/// The route template a request matched, handed from [`matched`] to [`requests`].
#[derive(Clone)]
struct Matched(String);

/// The outermost layer: request id, span, count and duration.
pub async fn requests(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sensible_id(id))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let header = HeaderValue::from_str(&id).expect("request ids are visible ASCII");
    request.headers_mut().insert(REQUEST_ID, header.clone());
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method,
        route = tracing::field::Empty,
        ip = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let route = response
        .extensions_mut()
        .remove::<Matched>()
        .map_or_else(|| UNMATCHED.to_owned(), |m| m.0);
    let status = response.status();
    let code = status.as_str().to_owned();
    metrics::counter!(m::HTTP_REQUESTS, "method" => method, "route" => route.clone(),
        "status" => code.clone())
    .increment(1);
    metrics::histogram!(m::HTTP_DURATION, "method" => method, "route" => route, "status" => code)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "answered"
        );
    });
    response.headers_mut().insert(REQUEST_ID, header);
    response
}

/// Inside the router: records the matched route template and the client's address (behind
/// trusted proxies, the one they name) in the request's span, and hands the route to
/// [`requests`].
pub async fn matched(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let span = tracing::Span::current();
    if let Some(route) = &route {
        span.record("route", tracing::field::display(route));
    }
    if parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .is_some()
    {
        span.record(
            "ip",
            tracing::field::display(super::client_ip(&parts, &state)),
        );
    }
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Matched(route));
    }
    response
}

/// [`matched`] for the routes of a node that is still starting (no state, no address).
pub async fn matched_starting(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    if let Some(route) = &route {
        tracing::Span::current().record("route", tracing::field::display(route));
    }
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Matched(route));
    }
    response
}

/// 1–64 characters of `[A-Za-z0-9._:-]`: what a proxy or a client generates (UUIDs, trace ids).
/// Anything else is replaced, so that a log line cannot be forged through it.
fn is_sensible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A bounded method label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sensible_request_ids_are_taken() {
        for id in ["a", "0f1e2d3c-4b5a", "trace:span.1_x", &"x".repeat(64)] {
            assert!(is_sensible_id(id), "{id}");
        }
        let long = "x".repeat(65);
        for id in [
            "",
            "a b",
            "a\nlevel=error",
            "ü",
            "a\"b",
            "a=b",
            long.as_str(),
        ] {
            assert!(!is_sensible_id(id), "{id:?}");
        }
    }

    #[test]
    fn methods_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
