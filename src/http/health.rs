//! Liveness, readiness and the health report.
//!
//! `GET /health` (and `/health/`) reports `status` — `healthy`, `degraded` (draining: still
//! serving its clients, taking no new ones) or `unhealthy` (503: a dependency is down, an
//! essential task ended, or the node is still connecting) — with the node's id, version, uptime
//! and counts, one entry per service under `services`, one top-level entry per external
//! dependency (`redis` when configured), and the `errors` as a list.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::state::{AppState, Startup};

pub async fn root() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn liveness() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The state of each service, and the errors found.
struct Report {
    services: Map<String, Value>,
    errors: Vec<String>,
}

impl Report {
    fn add(&mut self, service: &str, backend: Option<&str>, result: Result<(), String>) {
        let mut entry = Map::new();
        entry.insert(
            "status".into(),
            json!(if result.is_ok() { "ok" } else { "down" }),
        );
        if let Some(backend) = backend {
            entry.insert("backend".into(), json!(backend));
        }
        if let Err(error) = result {
            entry.insert("error".into(), json!(error));
            self.errors.push(format!("{service}: {error}"));
        }
        self.services.insert(service.into(), Value::Object(entry));
    }
}

async fn report(state: &AppState) -> Report {
    let hub = &state.hub;
    let (bus, presence) = tokio::join!(hub.bus.check(), hub.presence.check());
    let mut report = Report {
        services: Map::new(),
        errors: Vec::new(),
    };
    let backend = hub.bus.kind();
    let bus = bus.map_err(|e| e.to_string());
    let presence = presence.map_err(|e| e.to_string());
    // Redis is the dependency behind both: down when either cannot reach it.
    let redis = match (&bus, &presence) {
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        _ => Ok(()),
    };
    report.add("bus", Some(backend), bus);
    report.add("presence", Some(backend), presence);
    let tasks = match state.supervisor.ended() {
        Some(ended) => Err(ended.to_string()),
        None => Ok(()),
    };
    report.add("tasks", None, tasks);
    if state.config.redis.url.is_some() {
        report.add("redis", None, redis);
    }
    report
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let Report { services, errors } = report(&state).await;
    let status = match (errors.is_empty(), state.is_draining()) {
        (false, _) => "unhealthy",
        (true, true) => "degraded",
        (true, false) => "healthy",
    };
    let mut body = json!({
        "status": status,
        "node_id": state.hub.node,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "connections": state.hub.registry.connections(),
        "rooms": state.hub.registry.rooms(),
        "errors": errors,
    });
    if let Some(redis) = services.get("redis") {
        body["redis"] = redis.clone();
    }
    body["services"] = Value::Object(services);
    (code(status), Json(body))
}

fn code(status: &str) -> StatusCode {
    if status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

pub async fn readiness(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if let Some(ended) = state.supervisor.ended() {
        return Err(ApiError::unavailable(
            "task_failed",
            format!("{ended}; the node is shutting down"),
        ));
    }
    if state.is_draining() {
        return Err(ApiError::unavailable(
            "draining",
            "this node is shutting down",
        ));
    }
    let Report { services, errors } = report(&state).await;
    if !errors.is_empty() {
        return Err(ApiError::unavailable(
            "dependency_down",
            format!("a dependency is down: {}", errors.join("; ")),
        ));
    }
    Ok(Json(json!({"status": "ready", "services": services})))
}

/// `/health` while the node is still connecting to its dependencies.
pub async fn health_starting(
    State(startup): State<std::sync::Arc<Startup>>,
) -> (StatusCode, Json<Value>) {
    let waiting = startup.waiting();
    let redis = json!({"status": "connecting", "error": waiting});
    let body = json!({
        "status": "unhealthy",
        "node_id": startup.node,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": startup.started.elapsed().as_secs(),
        "connections": 0,
        "rooms": 0,
        "errors": [format!("redis: {waiting}")],
        "redis": redis,
        "services": {"redis": redis},
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

/// `/readyz` while the node is still connecting: 503 naming what it waits for.
pub async fn readiness_starting(State(startup): State<std::sync::Arc<Startup>>) -> ApiError {
    ApiError::unavailable("starting", startup.waiting())
}
