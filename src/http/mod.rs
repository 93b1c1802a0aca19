//! The REST surface: health, metrics and the cluster queries, and the bearer token extractor.
//! Routes live in [`health`] and [`rooms`]; [`crate::app`] merges them with the WebSocket
//! endpoints into the node's router.

mod auth;
mod health;
mod rooms;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::routing::{get, post};

use crate::auth::{AuthError, Identity, bearer_token};
use crate::error::ApiError;
use crate::state::{AppState, Startup};

/// The identity behind an `Authorization: Bearer` header.
pub struct Bearer(pub Identity);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        let identity = state.credentials.verify(token).await.map_err(|e| {
            let status = match e {
                AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            ApiError::new(status, e.code().as_str(), e.to_string())
        })?;
        Ok(Self(identity))
    }
}

/// The REST routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(health::root))
        .route("/health", get(health::health))
        .route("/health/", get(health::health))
        .route("/healthz", get(health::liveness))
        .route("/readyz", get(health::readiness))
        .route("/metrics", get(metrics))
        .route("/api/rooms", get(rooms::list))
        .route("/api/rooms/{room}", get(rooms::show))
        .route("/api/rooms/{room}/info", post(rooms::show))
        .route("/api/users/{user_id}/presence", get(rooms::presence))
        .route("/auth/login", post(auth::login))
        .route("/auth/token", post(auth::token))
        .route("/auth/register", post(auth::register))
        .route("/auth/me", get(auth::me))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
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

async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}
