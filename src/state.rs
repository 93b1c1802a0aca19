//! The application state every handler shares: configuration, keys, the hub, and the node's
//! lifecycle: draining, and the supervisor of its essential tasks. Cheap to clone; built once
//! per node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Tokens;
use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::datakey::DataKeys;
use crate::hub::Hub;
use crate::limits::{NodeSlots, Pending, Rate, Throttle, UserBudgets};
use crate::protocol::NodeId;
use crate::resume::{Handoffs, Resumes};
use crate::store::Store;
use crate::tasks::Supervisor;
use crate::turn::Turn;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Signs the node's own tokens.
    pub tokens: Arc<Tokens>,
    /// Verifies tokens from every source.
    pub credentials: Arc<Credentials>,
    pub hub: Arc<Hub>,
    /// The WebSockets this node holds, against `max_connections`.
    pub slots: NodeSlots,
    /// The WebSockets waiting to authenticate, against `max_unauthenticated` and
    /// `ip_unauthenticated`.
    pub pending: Pending,
    /// Request rates per address and message rates per user, the same on every node.
    pub throttle: Arc<dyn Throttle>,
    /// The message budgets of the users connected here.
    pub user_budgets: Arc<UserBudgets>,
    /// Whose forwarding headers name the client.
    pub proxies: Arc<TrustedProxies>,
    /// STUN and TURN servers, and the secret that signs TURN credentials.
    pub turn: Arc<Turn>,
    pub store: Store,
    /// The keys sensitive columns are sealed with at rest.
    pub data_keys: Arc<DataKeys>,
    pub metrics: PrometheusHandle,
    pub supervisor: Arc<Supervisor>,
    /// Sessions whose connection was lost, waiting to be resumed.
    pub resumes: Arc<Resumes>,
    /// Sessions moving between this node and others.
    pub handoffs: Arc<Handoffs>,
    pub started: Instant,
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(
        config: Config,
        hub: Arc<Hub>,
        store: Store,
        throttle: Arc<dyn Throttle>,
        supervisor: Supervisor,
        metrics: PrometheusHandle,
    ) -> Self {
        let config_resume_window = config.resume_window;
        let proxies = TrustedProxies::parse(&config.trusted_proxies)
            .expect("the config validated trusted_proxies");
        let credentials = Arc::new(crate::credentials::from_config(
            &config,
            Arc::clone(&hub.revoked),
            store.clone(),
        ));
        Self {
            tokens: Arc::clone(credentials.tokens()),
            credentials,
            turn: Arc::new(Turn::from_config(&config)),
            slots: NodeSlots::new(config.max_connections),
            pending: Pending::new(config.max_unauthenticated, config.ip_unauthenticated),
            throttle,
            user_budgets: Arc::default(),
            proxies: Arc::new(proxies),
            data_keys: Arc::new(config.data_keys()),
            config: Arc::new(config),
            hub,
            store,
            metrics,
            supervisor: Arc::new(supervisor),
            resumes: Arc::new(Resumes::new(config_resume_window)),
            handoffs: Arc::default(),
            started: Instant::now(),
            draining: Arc::default(),
        }
    }

    /// The rate of WebSocket upgrades per address.
    pub fn upgrade_rate(&self) -> Rate {
        let c = &self.config;
        Rate::per_minute("ip_upgrade_rate", c.ip_upgrade_rate, c.ip_upgrade_burst)
    }

    /// The rate of messages per user, over all its connections.
    pub fn user_msg_rate(&self) -> Rate {
        let c = &self.config;
        Rate::per_second("user_msg_rate", c.user_msg_rate, c.user_msg_burst)
    }

    /// The rate of user-addressed signals per sending user.
    pub fn user_signal_rate(&self) -> Rate {
        let c = &self.config;
        Rate::per_second("user_signal_rate", c.user_signal_rate, c.user_signal_burst)
    }

    /// The rate of requests per address to each route under `/auth` and each public `POST`.
    pub fn auth_rate(&self) -> Rate {
        let c = &self.config;
        Rate::per_minute("auth_rate", c.auth_rate, c.auth_burst)
    }

    /// The client's address of a request from `peer` with these forwarding header values.
    pub fn client_ip<'a>(
        &self,
        peer: std::net::IpAddr,
        x_forwarded_for: impl Iterator<Item = &'a str>,
        forwarded: impl Iterator<Item = &'a str>,
    ) -> std::net::IpAddr {
        self.proxies.client_ip(peer, x_forwarded_for, forwarded)
    }

    /// Whether the node is draining: readiness fails and new upgrades are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// A node that is still connecting to its dependencies: each one's state and last error.
#[derive(Debug)]
pub struct Startup {
    pub node: NodeId,
    pub started: Instant,
    dependencies: Mutex<Vec<Dependency>>,
}

/// One dependency a starting node connects to.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// `database` or `redis`: its entry in the health report.
    pub name: &'static str,
    /// What it is, for people: `Redis at redis://redis:6379`.
    pub label: String,
    pub connected: bool,
    pub error: Option<String>,
}

impl Startup {
    /// A node that will connect to each of `dependencies` (name, label), in order.
    pub fn new(node: NodeId, dependencies: Vec<(&'static str, String)>) -> Self {
        let dependencies = dependencies
            .into_iter()
            .map(|(name, label)| Dependency {
                name,
                label,
                connected: false,
                error: None,
            })
            .collect();
        Self {
            node,
            started: Instant::now(),
            dependencies: Mutex::new(dependencies),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Dependency>) -> T) -> T {
        f(&mut self.dependencies.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records a failed attempt to reach dependency `name`.
    pub fn failed(&self, name: &str, error: String) {
        self.with(|deps| {
            if let Some(dep) = deps.iter_mut().find(|d| d.name == name) {
                dep.error = Some(error);
            }
        });
    }

    /// Records that dependency `name` is connected.
    pub fn connected(&self, name: &str) {
        self.with(|deps| {
            if let Some(dep) = deps.iter_mut().find(|d| d.name == name) {
                dep.connected = true;
                dep.error = None;
            }
        });
    }

    /// Every dependency's state.
    pub fn dependencies(&self) -> Vec<Dependency> {
        self.with(|deps| deps.clone())
    }

    /// `waiting for Redis at ...: <last error>`, for the first dependency not yet connected.
    pub fn waiting(&self) -> String {
        self.with(|deps| match deps.iter().find(|d| !d.connected) {
            Some(Dependency {
                label,
                error: Some(error),
                ..
            }) => format!("waiting for {label}: {error}"),
            Some(dep) => format!("waiting for {}", dep.label),
            None => "starting".to_owned(),
        })
    }
}
