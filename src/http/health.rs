//! Liveness, readiness and the detailed health report.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn root() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn liveness() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Each dependency's state: `"ok"` or the error.
async fn checks(state: &AppState) -> (bool, Value) {
    let bus = state.hub.bus.check().await.map_err(|e| e.to_string());
    let presence = state.hub.presence.check().await.map_err(|e| e.to_string());
    let healthy = bus.is_ok() && presence.is_ok();
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    (
        healthy,
        json!({ state.hub.bus.kind(): show(bus), "presence": show(presence) }),
    )
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (healthy, checks) = checks(&state).await;
    let status = match (healthy, state.is_draining()) {
        (false, _) => "unhealthy",
        (true, true) => "draining",
        (true, false) => "ok",
    };
    let body = json!({
        "status": status,
        "node_id": state.hub.node,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "connections": state.hub.registry.connections(),
        "rooms": state.hub.registry.rooms(),
        "checks": checks,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
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
    let (healthy, checks) = checks(&state).await;
    if !healthy {
        return Err(ApiError::unavailable(
            "dependency_down",
            format!("a dependency is down: {checks}"),
        ));
    }
    Ok(Json(json!({"status": "ready", "checks": checks})))
}
