//! Startup and shutdown: a node is a function of (config, listener, backends, shutdown signal).
//! `main` and the integration tests call the same functions.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower_http::trace::TraceLayer;

use crate::bus::memory::MemoryHub;
use crate::bus::{Bus, Inbound};
use crate::config::Config;
use crate::hub::Hub;
use crate::presence::Presence;
use crate::presence::memory::MemoryPresence;
use crate::protocol::{CloseCode, NodeId, ServerMessage};
use crate::state::AppState;

/// The cluster backends a node runs on.
pub struct Backends {
    pub bus: Arc<dyn Bus>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub presence: Arc<dyn Presence>,
}

impl Backends {
    /// In-process backends for a standalone node.
    pub fn standalone(node: &NodeId) -> Self {
        Self::in_process(&MemoryHub::new(), &MemoryPresence::new(), node)
    }

    /// In-process backends shared by several nodes of one process.
    pub fn in_process(hub: &MemoryHub, presence: &MemoryPresence, node: &NodeId) -> Self {
        let (bus, inbound) = hub.attach(node.clone());
        Self {
            bus: Arc::new(bus),
            inbound,
            presence: Arc::new(presence.clone()),
        }
    }

    /// Redis when `redis_url` is set, otherwise in-process.
    pub async fn from_config(config: &Config, node: &NodeId) -> anyhow::Result<Self> {
        match &config.redis_url {
            None => Ok(Self::standalone(node)),
            Some(url) => {
                crate::cluster::connect(url.expose(), &config.redis_prefix, node, config.lease_ttl)
                    .await
            }
        }
    }
}

/// Pending connections the kernel queues before the node accepts them (capped by the system's
/// `somaxconn`). Reconnect storms after a node dies arrive all at once.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the node's listener with a backlog sized for connection storms.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The node id from the config, or a fresh one.
pub fn node_id(config: &Config) -> NodeId {
    config
        .node_id
        .as_deref()
        .and_then(|id| NodeId::parse(id).ok())
        .unwrap_or_else(NodeId::generate)
}

/// Connects the backends the config names and serves until `shutdown` resolves, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let node = node_id(&config);
    let backends = Backends::from_config(&config, &node).await?;
    serve(config, listener, node, backends, shutdown).await
}

/// Serves on `listener` with the given backends until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    node: NodeId,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_state(build(config, node, backends), listener, shutdown).await
}

/// Serves a built node on `listener` until `shutdown` resolves, then drains.
pub async fn serve_state(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = crate::http::router(state.clone()).layer(
        // Spans carry the path only: query strings may hold tokens.
        TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
        }),
    );
    let drained = state.clone();
    // Signals are small frames that must leave at once: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        drain(&drained).await;
    })
    .await?;
    Ok(())
}

/// Builds the state and starts the node's background tasks.
pub fn build(config: Config, node: NodeId, backends: Backends) -> AppState {
    let hub = Arc::new(Hub::new(
        node,
        backends.bus,
        backends.presence,
        config.subscription_linger,
    ));
    tokio::spawn(Arc::clone(&hub).run_inbound(backends.inbound));
    tokio::spawn(Arc::clone(&hub).run_reaper(config.lease_ttl / 2));
    AppState::new(config, hub, crate::metrics::install())
}

/// Turns readiness off, tells every client to reconnect elsewhere, closes them with 1012, and
/// waits for their cleanup until the shutdown deadline.
pub async fn drain(state: &AppState) {
    state.start_draining();
    let registry = &state.hub.registry;
    tracing::info!(connections = registry.connections(), "draining");
    let notice = ServerMessage::Reconnect { reason: "shutdown" };
    registry.broadcast_all(&Utf8Bytes::from(notice.to_json()));
    registry.close_all(CloseCode::ServiceRestart);
    let deadline = Instant::now() + state.config.shutdown_timeout;
    while registry.connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(left = registry.connections(), "drained");
}
