//! The application state every handler shares: configuration, keys, the hub, and the node's
//! lifecycle: draining, and the supervisor of its essential tasks. Cheap to clone; built once
//! per node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Tokens;
use crate::config::Config;
use crate::hub::Hub;
use crate::protocol::NodeId;
use crate::tasks::Supervisor;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub tokens: Arc<Tokens>,
    pub hub: Arc<Hub>,
    pub metrics: PrometheusHandle,
    pub supervisor: Arc<Supervisor>,
    pub started: Instant,
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(
        config: Config,
        hub: Arc<Hub>,
        supervisor: Supervisor,
        metrics: PrometheusHandle,
    ) -> Self {
        Self {
            tokens: Arc::new(Tokens::new(config.jwt_secret.expose().as_bytes())),
            config: Arc::new(config),
            hub,
            metrics,
            supervisor: Arc::new(supervisor),
            started: Instant::now(),
            draining: Arc::default(),
        }
    }

    /// Whether the node is draining: readiness fails and new upgrades are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// A node that is still connecting to its dependencies: what it waits for, and the last error.
#[derive(Debug)]
pub struct Startup {
    pub node: NodeId,
    pub started: Instant,
    /// What the node waits for, e.g. `Redis at redis://redis:6379`.
    pub dependency: String,
    last_error: Mutex<Option<String>>,
}

impl Startup {
    pub fn new(node: NodeId, dependency: String) -> Self {
        Self {
            node,
            started: Instant::now(),
            dependency,
            last_error: Mutex::default(),
        }
    }

    /// Records the last failed attempt.
    pub fn failed(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// `waiting for Redis at ...` and the last error, if any.
    pub fn waiting(&self) -> String {
        let error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match error.as_deref() {
            Some(error) => format!("waiting for {}: {error}", self.dependency),
            None => format!("waiting for {}", self.dependency),
        }
    }
}
