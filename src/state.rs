//! The application state every handler shares: configuration, keys, the hub, and the node's
//! lifecycle: draining, and the supervisor of its essential tasks. Cheap to clone; built once
//! per node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Tokens;
use crate::config::Config;
use crate::hub::Hub;
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
