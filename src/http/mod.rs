//! The REST surface: health, the cluster queries, the `/auth` API and TURN credentials, the
//! bearer token extractor, the OpenAPI document ([`openapi`]) and the demo pages ([`demo`]). Routes live in [`health`],
//! [`rooms`], [`auth`] and [`turn`], each registered with its OpenAPI operation; [`crate::app`]
//! merges them with the WebSocket endpoints into the node's router. The metrics listener's
//! routes are in [`operator`]; what every request leaves behind (request id, span, metrics) in
//! [`observe`].

mod auth;
mod call_sessions;
mod calls;
mod demo;
mod devices;
mod e2ee;
mod health;
mod keys;
mod messages;
pub mod observe;
pub mod openapi;
pub mod operator;
mod rooms;
mod turn;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{StatusCode, header, request::Parts};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AuthError, Identity, bearer_token};
use crate::error::ApiError;
use crate::state::{AppState, Startup};

/// The identity behind an `Authorization: Bearer` header.
pub struct Bearer(pub Identity);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            crate::metrics::auth_failure("missing");
            ApiError::unauthorized("missing Authorization: Bearer token")
        })?;
        let token = header.to_str().ok().and_then(bearer_token).ok_or_else(|| {
            crate::metrics::auth_failure("malformed");
            ApiError::unauthorized("Authorization must be `Bearer <token>`")
        })?;
        let identity = state.credentials.verify(token).await.map_err(|e| {
            crate::metrics::auth_failure(e.reason());
            let status = match e {
                AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            ApiError::new(status, e.code().as_str(), e.to_string())
        })?;
        Ok(Self(identity))
    }
}

/// Whether the request carries an admin's bearer token (what may see dependency errors).
pub struct Admin(pub bool);

impl FromRequestParts<AppState> for Admin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, std::convert::Infallible> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer_token);
        let admin = match token {
            Some(token) => state
                .credentials
                .verify(token)
                .await
                .is_ok_and(|identity| identity.admin),
            None => false,
        };
        Ok(Self(admin))
    }
}

/// The client's address (behind trusted proxies, what they say), for a request that passed
/// the request rate of that address on that endpoint (`auth_rate`, every route under `/auth`
/// and every public POST): 429 `rate_limited` with `retry_after` otherwise. Each endpoint has
/// its own budget, so that refreshing tokens does not spend the logins'.
pub struct Limited(pub IpAddr);

impl FromRequestParts<AppState> for Limited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = client_ip(parts, state);
        let endpoint = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        let key = format!("{endpoint}|{}", crate::client_ip::budget_key(ip));
        if let Err(wait) = state.throttle.hit(state.auth_rate(), &key).await {
            return Err(rate_limited("auth_rate", wait));
        }
        Ok(Self(ip))
    }
}

/// The address a request comes from: the peer's, or behind a trusted proxy the one its
/// forwarding headers name.
pub fn client_ip(parts: &Parts, state: &AppState) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
    let values = |name: header::HeaderName| {
        parts
            .headers
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    };
    state.client_ip(
        peer,
        values(header::HeaderName::from_static("x-forwarded-for")),
        values(header::FORWARDED),
    )
}

/// 429 `rate_limited` for limit `name`, counted.
fn rate_limited(name: &'static str, wait: std::time::Duration) -> ApiError {
    crate::metrics::limit_hit(name);
    ApiError::rate_limited(name, wait)
}

/// The REST routes and the document's own routes, each with its OpenAPI operation: `routes!`
/// registers a handler at the method and path of its `#[utoipa::path]`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::root))
        .routes(routes!(health::health))
        .routes(routes!(health::health_slash))
        .routes(routes!(health::liveness))
        .routes(routes!(health::readiness))
        .routes(routes!(rooms::list))
        .routes(routes!(rooms::show))
        .routes(routes!(rooms::info))
        .routes(routes!(rooms::presence))
        .routes(routes!(auth::login))
        .routes(routes!(auth::token))
        .routes(routes!(auth::register))
        .routes(routes!(auth::me))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(calls::register))
        .routes(routes!(calls::login))
        .routes(routes!(calls::generate))
        .routes(routes!(calls::list))
        .routes(routes!(calls::revoke))
        .routes(routes!(calls::qr))
        .routes(routes!(call_sessions::validate))
        .routes(routes!(call_sessions::initiate))
        .routes(routes!(call_sessions::accept))
        .routes(routes!(call_sessions::reject))
        .routes(routes!(turn::auth_credentials))
        .routes(routes!(turn::webrtc_credentials))
        .routes(routes!(turn::ice_servers))
        .routes(routes!(e2ee::register))
        .routes(routes!(e2ee::add_device))
        .routes(routes!(devices::push_token))
        .routes(routes!(devices::remove))
        .routes(routes!(e2ee::ws_token))
        .routes(routes!(keys::upload))
        .routes(routes!(keys::count))
        .routes(routes!(keys::bundle_of))
        .routes(routes!(messages::send))
        .routes(routes!(demo::root))
        .routes(routes!(demo::index))
        .routes(routes!(demo::file))
        .routes(routes!(openapi::document))
        .routes(routes!(openapi::page))
        .routes(routes!(openapi::asset))
}

/// What a node answers while it is still connecting to its dependencies: liveness, readiness
/// and health report that it is starting; every other route is 503 `starting`.
pub fn starting_routes() -> Router<Arc<Startup>> {
    Router::new()
        .route("/healthz", get(health::liveness))
        .route("/readyz", get(health::readiness_starting))
        .route("/health", get(health::health_starting))
        .route("/health/", get(health::health_starting))
        .fallback(|| async {
            ApiError::unavailable("starting", "this node is starting; try another node")
        })
}
