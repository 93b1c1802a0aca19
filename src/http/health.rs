//! Liveness, readiness and the health report.
//!
//! `GET /health` (and `/health/`) reports `status` — `healthy`, `degraded` (draining: still
//! serving its clients, taking no new ones) or `unhealthy` (503: a dependency is down, an
//! essential task ended, or the node is still connecting) — with the node's id, version, uptime
//! and counts, one entry per service under `services`, one top-level entry per external
//! dependency (`database`, and `redis` when configured), and the `errors` as a list.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::Admin;
use super::openapi::HealthReport;
use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, Startup};

/// The external dependencies, reported at the top level too (`jq .database`).
const DEPENDENCIES: [&str; 2] = ["database", "redis"];
/// How long a health check waits for the database.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the node answers.
#[utoipa::path(
    get,
    path = "/",
    tag = "health",
    responses((status = 200, description = "The node answers", body = Object,
        example = json!({"status": "ok"})))
)]
pub async fn root() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Liveness.
///
/// Answered while the node is starting too.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is alive", body = Object,
        example = json!({"status": "ok"})))
)]
pub async fn liveness() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The state of each service, and the errors found.
struct Report {
    services: Map<String, Value>,
    errors: Vec<String>,
}

/// What an error says to a caller that is not an admin: that the service is down, not how (a
/// dependency's error names hosts, users and internals). The log has the whole error.
const UNAVAILABLE: &str = "unavailable";

impl Report {
    /// The report for `admin` as it is; for anyone else with each error reduced to
    /// [`UNAVAILABLE`].
    fn for_caller(mut self, admin: bool) -> Self {
        if admin {
            return self;
        }
        for entry in self.services.values_mut() {
            if let Some(error) = entry.get_mut("error") {
                *error = json!(UNAVAILABLE);
            }
        }
        for error in &mut self.errors {
            if let Some((service, _)) = error.split_once(": ") {
                *error = format!("{service}: {UNAVAILABLE}");
            }
        }
        self
    }
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
            tracing::debug!(service, error = %error, "health check: a service is down");
            entry.insert("error".into(), json!(error));
            self.errors.push(format!("{service}: {error}"));
        }
        self.services.insert(service.into(), Value::Object(entry));
    }
}

async fn report(state: &AppState) -> Report {
    let hub = &state.hub;
    let database = tokio::time::timeout(CHECK_TIMEOUT, state.store.check());
    let (bus, presence, database) = tokio::join!(hub.bus.check(), hub.presence.check(), database);
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
    let database = match database {
        Ok(checked) => checked.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    report.add("database", Some(state.store.engine()), database);
    report
}

/// The health report.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    description = "`status` (`healthy`; `degraded` while draining: still serving its clients, \
        taking no new ones; `unhealthy`), the node's id, version, uptime, local connections and \
        rooms, one entry per service under `services` (bus, presence, essential tasks, database, \
        Redis when configured), `database` and `redis` at the top level too, and the `errors`.",
    responses(
        (status = 200, response = HealthReport),
        (status = 503, response = HealthReport),
    )
)]
pub async fn health(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> (StatusCode, Json<Value>) {
    let Report { services, errors } = report(&state).await.for_caller(admin);
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
    for dependency in DEPENDENCIES {
        if let Some(entry) = services.get(dependency) {
            body[dependency] = entry.clone();
        }
    }
    body["services"] = Value::Object(services);
    (code(status), Json(body))
}

/// The health report, at `/health/`.
#[utoipa::path(
    get,
    path = "/health/",
    tag = "health",
    description = "The same report as `GET /health`.",
    responses(
        (status = 200, response = HealthReport),
        (status = 503, response = HealthReport),
    )
)]
pub async fn health_slash(state: State<AppState>, admin: Admin) -> (StatusCode, Json<Value>) {
    health(state, admin).await
}

fn code(status: &str) -> StatusCode {
    if status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// Readiness.
///
/// While the node is starting, 503 `starting` names what it waits for.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready: every dependency answers", body = Object,
            example = json!({"status": "ready", "services": {"tasks": {"status": "ok"}}})),
        (status = 503, description = "Not ready: `starting` (still connecting; names what it \
            waits for), `draining`, `dependency_down` or `task_failed`", body = ErrorBody),
    )
)]
pub async fn readiness(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<Value>, ApiError> {
    let services = check(&state, admin).await?;
    Ok(Json(json!({"status": "ready", "services": services})))
}

/// Whether the node is ready (what `/readyz` answers 200 for).
pub async fn check_ready(state: &AppState) -> Result<(), ApiError> {
    check(state, true).await.map(drop)
}

/// Readiness: the services' entries, or why the node is not ready.
async fn check(state: &AppState, admin: bool) -> Result<Map<String, Value>, ApiError> {
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
    if state.slots.full() {
        return Err(ApiError::unavailable(
            "node_full",
            format!(
                "this node holds max_connections ({}) WebSockets",
                state.slots.max()
            ),
        ));
    }
    let Report { services, errors } = report(state).await.for_caller(admin);
    if !errors.is_empty() {
        return Err(ApiError::unavailable(
            "dependency_down",
            format!("a dependency is down: {}", errors.join("; ")),
        ));
    }
    Ok(services)
}

/// `/health` while the node is still connecting to its dependencies.
pub async fn health_starting(
    State(startup): State<std::sync::Arc<Startup>>,
) -> (StatusCode, Json<Value>) {
    let mut services = Map::new();
    let mut errors = Vec::new();
    for dep in startup.dependencies() {
        let mut entry = json!({"status": if dep.connected { "ok" } else { "connecting" }});
        if let Some(error) = &dep.error {
            entry["error"] = json!(error);
            errors.push(format!("{}: {error}", dep.name));
        } else if !dep.connected {
            errors.push(format!("{}: connecting", dep.name));
        }
        services.insert(dep.name.into(), entry);
    }
    let mut body = json!({
        "status": "unhealthy",
        "node_id": startup.node,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": startup.started.elapsed().as_secs(),
        "connections": 0,
        "rooms": 0,
        "errors": errors,
    });
    for (name, entry) in &services {
        body[name] = entry.clone();
    }
    body["services"] = Value::Object(services);
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

/// `/readyz` while the node is still connecting: 503 naming what it waits for.
pub async fn readiness_starting(State(startup): State<std::sync::Arc<Startup>>) -> ApiError {
    ApiError::unavailable("starting", startup.waiting())
}
