//! Startup, supervision and shutdown: a node is a function of (config, listener, backends,
//! shutdown signal). `main` and the integration tests call the same functions. The router is
//! built here, the one place that sees both edges ([`crate::http`] and [`crate::ws`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;

use crate::backends::Backends;
use crate::config::{Config, Environment};
use crate::error::ApiError;
use crate::hub::Hub;
use crate::protocol::{CloseCode, Frame, NodeId, ServerMessage};
use crate::retention::Retention;
use crate::state::{AppState, Startup};
use crate::tasks::Supervisor;
use crate::tls::Tls;

/// Pending connections the kernel queues before the node accepts them (capped by the system's
/// `somaxconn`). Reconnect storms after a node dies arrive all at once.
pub const LISTEN_BACKLOG: u32 = 4096;

/// REST bodies larger than this are refused with 413.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The node's listeners: the public one (HTTP and WebSockets, over TLS with `tls`), and the
/// metrics listener unless `metrics_listen` is `off`.
pub struct Listeners {
    pub public: TcpListener,
    pub metrics: Option<TcpListener>,
    /// The certificate the public listener serves, when the node terminates TLS itself.
    pub tls: Option<Tls>,
}

impl Listeners {
    /// Binds `listen` and `metrics_listen`.
    pub fn bind(config: &Config) -> std::io::Result<Self> {
        let public = bind(config.listen)?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(bind(addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("metrics_listen {addr}: {e}"))
            })?),
            None => None,
        };
        Ok(Self {
            public,
            metrics,
            tls: None,
        })
    }

    /// The public listener serves TLS with `tls`.
    pub fn with_tls(self, tls: Option<Tls>) -> Self {
        Self { tls, ..self }
    }

    /// The public listener alone: no metrics listener.
    pub fn public_only(public: TcpListener) -> Self {
        Self {
            public,
            metrics: None,
            tls: None,
        }
    }
}

/// Binds a listener with a backlog sized for connection storms.
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
///
/// A node serves from the start: while Redis is not reachable yet (in compose or Kubernetes it
/// may start after the nodes) it retries with backoff, answers liveness, and reports not-ready
/// naming it; once connected it serves everything. The database is never waited for: an SQLite
/// file opens at once, and a Postgres that is down only makes what needs it (`/auth`) answer
/// `unavailable` and readiness name it.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let node = node_id(&config);
    // Signaling never waits on the database: it is opened without waiting for it.
    let store = crate::backends::node_store(&config).await?;
    let mut dependencies = Vec::new();
    if let Some(url) = &config.redis.url {
        let redis = crate::redis::url::redact(url.expose());
        dependencies.push(("redis", format!("Redis at {redis}")));
    }
    let startup = Arc::new(Startup::new(node.clone(), dependencies));
    let cors = cors(&config.cors_origins());
    let header_read_timeout = config.header_read_timeout;
    let phases = Arc::new(Phases {
        starting: Some(Routers {
            public: crate::http::starting_routes()
                .route_layer(axum::middleware::from_fn(
                    crate::http::observe::matched_starting,
                ))
                .with_state(Arc::clone(&startup)),
            operator: crate::http::operator::starting_routes().with_state(Arc::clone(&startup)),
        }),
        ready: OnceLock::new(),
    });
    let ready = async move {
        let backends = connect_until_up(&config, &node, &startup, store).await;
        let mut state = build(config, node, backends);
        state.started = startup.started;
        if state.config.env == Environment::Development {
            // In the background: the node does not wait for its database.
            tokio::spawn(demo_users(state.store.clone()));
        }
        state
    };
    serve_phases(
        listeners,
        phases,
        cors,
        ready,
        shutdown,
        header_read_timeout,
    )
    .await
}

/// Creates the demo accounts on a development node's empty database and shows their passwords
/// once, on the terminal (never in the log).
async fn demo_users(store: crate::store::Store) {
    match crate::accounts::create_demo_users(&store, crate::auth::unix_seconds()).await {
        Ok(created) if !created.is_empty() => {
            eprintln!("demo accounts on this empty development database (shown once):");
            for (name, password) in created {
                eprintln!("  {name} / {password}    (POST /auth/login)");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "demo accounts not created"),
    }
}

/// The first delay between attempts to reach a dependency, doubled after each failure.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest delay between attempts.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How long connections may stay open after the drain before the node stops regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Connects Redis when configured, retried with backoff until it is up.
async fn connect_until_up(
    config: &Config,
    node: &NodeId,
    startup: &Startup,
    store: crate::store::Store,
) -> Backends {
    let Some(url) = &config.redis.url else {
        return Backends::standalone(node, store);
    };
    let (prefix, ttl) = (&config.redis.prefix, config.lease_ttl);
    let connect = || crate::backends::connect(url.expose(), prefix, node, ttl, store.clone());
    until_up(startup, "redis", connect).await
}

/// Runs `attempt` until it succeeds. Each failure is logged once and recorded (its root cause)
/// for readiness; the delay doubles from [`RETRY_FIRST`] to [`RETRY_MAX`].
async fn until_up<T, F: Future<Output = anyhow::Result<T>>>(
    startup: &Startup,
    dependency: &'static str,
    attempt: impl Fn() -> F,
) -> T {
    let mut delay = RETRY_FIRST;
    for tries in 1u32.. {
        match attempt().await {
            Ok(value) => {
                startup.connected(dependency);
                return value;
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(dependency, attempt = tries, retry_in = ?delay, %error, "{dependency} not reachable; retrying");
                startup.failed(dependency, e.root_cause().to_string());
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
    unreachable!("the attempts never run out")
}

/// Serves on `listener` with the given backends until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    node: NodeId,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_state(build(config, node, backends), listeners, shutdown).await
}

/// The node's router: the REST routes and the WebSocket endpoints, their OpenAPI document at
/// `/openapi.json`, the body limit, and JSON errors for unknown routes and methods and for
/// oversized bodies. Each matched route names itself and the client's address to the
/// request's span and metrics.
pub fn router(state: AppState) -> Router {
    let observe =
        axum::middleware::from_fn_with_state(state.clone(), crate::http::observe::matched);
    crate::http::openapi::serve(crate::http::routes().merge(crate::ws::routes()))
        .route_layer(observe)
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Answers the body limit's plain-text 413 as JSON, like every other error.
async fn json_errors(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let detail = format!("request bodies are limited to {MAX_BODY_BYTES} bytes");
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", detail).into_response()
}

fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    if origins.iter().any(|o| o == "*") {
        return layer.allow_origin(Any);
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    layer.allow_origin(AllowOrigin::list(list))
}

/// Serves a built node on `listener` until `shutdown` resolves or an essential task ends, then
/// drains. An ended essential task is an error: the node cannot route any more, and its
/// process should exit non-zero so that an orchestrator replaces it.
pub async fn serve_state(
    state: AppState,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cors = cors(&state.config.cors_origins());
    let phases = Arc::new(Phases {
        starting: None,
        ready: OnceLock::from((state.clone(), Routers::ready(&state))),
    });
    let header_read_timeout = state.config.header_read_timeout;
    serve_phases(
        listeners,
        phases,
        cors,
        std::future::ready(state),
        shutdown,
        header_read_timeout,
    )
    .await
}

/// What the listeners serve: the starting routes until the node is ready, then its routers.
struct Phases {
    starting: Option<Routers>,
    ready: OnceLock<(AppState, Routers)>,
}

/// The routers of the public listener and of the metrics listener.
#[derive(Clone)]
struct Routers {
    public: Router,
    operator: Router,
}

impl Routers {
    fn ready(state: &AppState) -> Self {
        Self {
            public: router(state.clone()),
            operator: crate::http::operator::routes().with_state(state.clone()),
        }
    }
}

impl Phases {
    fn current(&self) -> Routers {
        match (self.ready.get(), &self.starting) {
            (Some((_, routers)), _) => routers.clone(),
            (None, Some(starting)) => starting.clone(),
            (None, None) => {
                let starting = Router::new().fallback(|| async {
                    ApiError::unavailable("starting", "this node is starting")
                });
                Routers {
                    public: starting.clone(),
                    operator: starting,
                }
            }
        }
    }
}

/// Serves the listeners: on the public one the phases' current router, with CORS, request ids,
/// spans and metrics; on the metrics listener its routes; until the node is ready (`ready`,
/// unless it already is), then until `shutdown` or the end of an essential task, and a drain.
/// The node stops at most [`CLOSE_GRACE`] after the drain; the metrics listener with it.
async fn serve_phases(
    listeners: Listeners,
    phases: Arc<Phases>,
    cors: CorsLayer,
    ready: impl Future<Output = AppState> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_read_timeout: Duration,
) -> anyhow::Result<()> {
    let current = Arc::clone(&phases);
    let app = Router::new()
        .fallback_service(tower::service_fn(move |request: Request| {
            current.current().public.oneshot(request)
        }))
        .layer(cors)
        .layer(axum::middleware::from_fn(crate::http::observe::requests));
    let operator = listeners.metrics.map(|listener| {
        let current = Arc::clone(&phases);
        let app = Router::new().fallback_service(tower::service_fn(move |request: Request| {
            current.current().operator.oneshot(request)
        }));
        (listener, app)
    });
    let (operator_stop, operator_stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(async move {
        if let Some((listener, app)) = operator {
            let stop = async {
                let _ = operator_stopped.await;
            };
            crate::server::serve(listener, app, header_read_timeout, None, stop).await;
        }
    });
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = {
        let phases = Arc::clone(&phases);
        async move {
            lifecycle(&phases, ready, shutdown).await;
            let _ = drained_tx.send(());
        }
    };
    let acceptor = listeners.tls.as_ref().map(|tls| tls.acceptor().clone());
    let reloader = listeners.tls.as_ref().map(Tls::spawn_reloader);
    let server = crate::server::serve(listeners.public, app, header_read_timeout, acceptor, stop);
    tokio::select! {
        () = server => {},
        () = async { let _ = drained_rx.await; tokio::time::sleep(CLOSE_GRACE).await } => {
            tracing::warn!(grace = ?CLOSE_GRACE, "connections still open after the drain; stopping");
        }
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    let _ = operator_stop.send(());
    let _ = tokio::time::timeout(CLOSE_GRACE, operator).await;
    if let Some((state, _)) = phases.ready.get() {
        // Connections still checked out (a request cut short) must not hold the stop up.
        let _ = tokio::time::timeout(CLOSE_GRACE, state.store.close()).await;
    }
    match phases
        .ready
        .get()
        .and_then(|(state, _)| state.supervisor.ended())
    {
        Some(ended) => Err(anyhow::anyhow!("{ended}")),
        None => Ok(()),
    }
}

/// Waits for the node to be ready and switches the router to it, then waits for `shutdown` or
/// the end of an essential task, and drains. Resolving stops the listener.
async fn lifecycle(
    phases: &Phases,
    ready: impl Future<Output = AppState>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let state = tokio::select! {
        state = ready => state,
        () = &mut shutdown => return,
    };
    if phases.ready.get().is_none() {
        tracing::info!("connected; serving");
        let _ = phases.ready.set((state.clone(), Routers::ready(&state)));
    }
    tokio::select! {
        () = shutdown => {}
        ended = state.supervisor.watch() => {
            tracing::error!(task = ended.task, how = ended.how, "essential task ended; the node is not ready and drains");
        }
    }
    drain(&state).await;
}

/// Builds the state and starts the node's background tasks.
pub fn build(config: Config, node: NodeId, backends: Backends) -> AppState {
    let Backends {
        bus,
        inbound,
        presence,
        throttle,
        store,
        mut tasks,
    } = backends;
    let node_name = node.to_string();
    let hub = Arc::new(Hub::new(node, bus, presence, config.subscription_linger));
    tasks.spawn("hub-inbound", Arc::clone(&hub).run_inbound(inbound));
    // Where sessions outlive their node (a cluster), signals for a dead node's are held.
    if hub.presence.outlives_nodes() {
        tasks.spawn("hub-returns", Arc::clone(&hub).run_returns());
    }
    tasks.spawn(
        "presence-reaper",
        Arc::clone(&hub).run_reaper(config.lease_ttl / 2),
    );
    tokio::spawn(crate::credentials::watch_revocations(
        store.clone(),
        Arc::clone(&hub),
    ));
    let supervisor = Supervisor::new(tasks);
    let metrics = crate::metrics::install();
    // Not essential: a node whose retention job stopped still serves everything. Started once
    // the metrics are installed, so that its first run is counted.
    tokio::spawn(
        Retention {
            store: store.clone(),
            node: node_name,
            keep: Duration::from_secs(u64::from(config.retention_days) * 86_400),
            every: config.retention_interval,
        }
        .run(),
    );
    let state = AppState::new(config, hub, store, throttle, supervisor, metrics);
    // Sessions resumed on another node are handed over through the hub's inbound stream.
    let (handoffs, inbound) = tokio::sync::mpsc::unbounded_channel();
    state.hub.take_handoffs(handoffs);
    tokio::spawn(Arc::clone(&state.handoffs).run(
        Arc::clone(&state.hub),
        Arc::clone(&state.resumes),
        inbound,
    ));
    // Resumable sessions of dead nodes that this node takes over are parked here.
    if state.resumes.enabled() {
        let (adoptions, adopted) = tokio::sync::mpsc::unbounded_channel();
        state.hub.take_adoptions(adoptions);
        tokio::spawn(Arc::clone(&state.resumes).adopt_all(
            Arc::clone(&state.hub),
            adopted,
            state.config.outbox_frames,
        ));
    }
    if state.credentials.jwks_source().is_some() {
        let refresh = state.config.jwks.refresh;
        tokio::spawn(Arc::clone(&state.credentials).refresh_jwks(refresh));
    }
    state
}

/// How long a draining node in a cluster goes on handing its parked sessions over after its
/// connections ended.
const HANDOVER_LINGER: Duration = Duration::from_secs(3);

/// Turns readiness off, tells every client to reconnect elsewhere, closes them with 1012, and
/// waits for their cleanup until the shutdown deadline. In a cluster with resuming on, the
/// sessions the drain closes park, and this node hands them over to the nodes their clients
/// resume on until the deadline; those nobody resumed end then.
pub async fn drain(state: &AppState) {
    state.start_draining();
    let registry = &state.hub.registry;
    tracing::info!(connections = registry.connections(), "draining");
    let hands_over = state.resumes.enabled() && state.hub.bus.kind() != "memory";
    if !hands_over {
        // Sessions parked here end now: no other node can take them up.
        state.resumes.end_all(&state.hub).await;
    }
    registry.broadcast_each(|handle| {
        let notice = ServerMessage::Reconnect {
            reason: "shutdown",
            resume: handle.resume.as_deref().cloned(),
        };
        Frame::from(notice.to_json())
    });
    registry.close_all(CloseCode::ServiceRestart);
    let deadline = Instant::now() + state.config.shutdown_timeout;
    // Until every connection has ended (parked sessions keep their place in the registry).
    while registry.connections() > state.resumes.parked() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if hands_over {
        // Clients resume elsewhere as soon as they read the notice; their sessions leave the
        // registry once handed over.
        let deadline = deadline.min(Instant::now() + HANDOVER_LINGER);
        while registry.connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        state.resumes.end_all(&state.hub).await;
    }
    tracing::info!(left = registry.connections(), "drained");
}
