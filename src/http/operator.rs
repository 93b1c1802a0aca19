//! The metrics listener (`metrics_listen`, default `127.0.0.1:9090`): what operators and their
//! Prometheus read, kept off the public port. `GET /metrics` (the Prometheus text format),
//! `GET /health` (the whole health report, dependency errors included: whoever reaches this
//! listener is an operator), `GET /readyz`, and its own OpenAPI document at
//! `GET /openapi.json`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, health, openapi};
use crate::error::ApiError;
use crate::state::{AppState, Startup};

/// The listener's document: its routes only.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard metrics listener",
        description = "What a node serves on its metrics listener (`SWITCHBOARD_METRICS_LISTEN`, \
            default `127.0.0.1:9090`), apart from its public port: Prometheus metrics (each \
            described in docs/metrics.md), the whole health report and readiness. The public \
            port answers 404 for `/metrics`."
    ),
    tags(
        (name = "metrics", description = "Prometheus metrics"),
        (name = "health", description = "Health and readiness, with dependency errors"),
        (name = "docs", description = "This document"),
    )
)]
struct OperatorDoc;

/// The listener's routes, with their document at `/openapi.json`.
pub fn routes() -> Router<AppState> {
    let api = OpenApiRouter::with_openapi(OperatorDoc::openapi())
        .routes(routes!(metrics))
        .routes(routes!(health_report))
        .routes(routes!(readiness))
        .routes(routes!(openapi::document));
    openapi::serve(api).fallback(|| async { ApiError::not_found() })
}

/// The listener while the node is still connecting: metrics (not ready), and health and
/// readiness saying what it waits for.
pub fn starting_routes() -> Router<Arc<Startup>> {
    Router::new()
        .route("/metrics", get(metrics_starting))
        .route("/health", get(health::health_starting))
        .route("/readyz", get(health::readiness_starting))
        .fallback(|| async { ApiError::not_found() })
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses((
        status = 200,
        description = "The node's metrics in the Prometheus text format (version 0.0.4)",
        content_type = "text/plain"
    ))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let ready = health::check_ready(&state).await.is_ok();
    text(crate::metrics::render(&state.metrics, ready))
}

async fn metrics_starting() -> impl IntoResponse {
    text(crate::metrics::render(&crate::metrics::install(), false))
}

fn text(body: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// The health report, with every dependency's error.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    description = "The report of the public `GET /health`, with each dependency's error as it \
        is (the public port shows it to admins only).",
    responses(
        (status = 200, response = openapi::HealthReport),
        (status = 503, response = openapi::HealthReport),
    )
)]
async fn health_report(state: State<AppState>) -> (StatusCode, axum::Json<Value>) {
    health::health(state, Admin(true)).await
}

/// Readiness, with every dependency's error.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready: every dependency answers", body = Object),
        (status = 503, description = "Not ready: `draining`, `node_full`, `dependency_down` or \
            `task_failed`", body = crate::error::ErrorBody),
    )
)]
async fn readiness(state: State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    health::readiness(state, Admin(true)).await
}
