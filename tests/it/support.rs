//! Test support: real nodes on port 0, each in its own runtime thread (so that a test can crash
//! one: its runtime is dropped and nothing of it runs again, like `kill -9`), and a WebSocket
//! client that waits on events with a timeout instead of sleeping.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::app;
use switchboard::auth::{self, Tokens};
use switchboard::backends::Backends;
use switchboard::bus::memory::MemoryHub;
use switchboard::config::{Config, DEV_JWT_SECRET, Secret};
use switchboard::presence::memory::MemoryPresence;
use switchboard::protocol::{NodeId, UserId};
use switchboard::state::AppState;
use switchboard::store::Store;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// An HTTP client for the tests. The node's JWKS client speaks TLS through rustls with the ring
/// provider, which must be the process's default before any client is built.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// `GET url`.
pub async fn http_get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http_client().get(url).send().await
}

/// A scrape of the metrics listener at `addr` (Prometheus text format 0.0.4).
pub async fn scrape(addr: SocketAddr) -> String {
    let response = http_get(format!("http://{addr}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.text().await.unwrap()
}

/// The value of the series `series` (`name{labels}` exactly as rendered) in a scrape.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

/// The value of `series` on `node`'s metrics listener; 0 when it is not there yet.
pub async fn metric(node: &TestNode, series: &str) -> f64 {
    let addr = node.metrics_addr.expect("the node has a metrics listener");
    sample(&scrape(addr).await, series).unwrap_or(0.0)
}

/// Where a test node's cluster state lives.
#[derive(Clone)]
pub enum Backing {
    /// Its own in-process bus and presence.
    Standalone,
    /// In-process, shared with the other nodes holding the same hub and presence.
    Shared(MemoryHub, MemoryPresence),
    /// Whatever the config names (Redis when `redis_url` is set).
    FromConfig,
}

pub fn test_config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    config.database.url = Secret::new("sqlite::memory:");
    // Most tests send and connect faster than a browser, all from one address; the limits' own
    // tests turn them on.
    config.msg_rate = 0;
    config.ip_upgrade_rate = 0;
    config.auth_rate = 0;
    config.user_connections = 0;
    config.user_msg_rate = 0;
    config.ip_connections = 0;
    config.ip_unauthenticated = 0;
    config.user_signal_rate = 0;
    // Sessions resume (the default, set here all the same): every test's client checks the
    // frames' numbers.
    config.resume_window = Duration::from_secs(30);
    config
}

pub struct TestNode {
    pub addr: SocketAddr,
    /// The metrics listener's address, unless `metrics_listen` is off.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    /// How the node's serve call ended (`None` for a crash).
    stopped: std::sync::mpsc::Receiver<Option<Result<(), String>>>,
    shutdown: Option<oneshot::Sender<()>>,
    crash: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts a standalone node with `config`.
pub fn spawn_node(config: Config) -> TestNode {
    spawn_node_on(config, Backing::Standalone)
}

/// Starts a node on its own runtime thread.
pub fn spawn_node_on(config: Config, backing: Backing) -> TestNode {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (crash_tx, crash_rx) = oneshot::channel::<()>();
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let node = app::node_id(&config);
            let backends = match backing {
                Backing::Standalone => Backends::standalone(&node, store(&config).await),
                Backing::Shared(hub, presence) => {
                    Backends::in_process(&hub, &presence, &node, store(&config).await)
                }
                Backing::FromConfig => Backends::from_config(&config, &node).await.unwrap(),
            };
            let listeners = app::Listeners::bind(&config).unwrap();
            let addr = listeners.public.local_addr().unwrap();
            let metrics_addr = listeners.metrics.as_ref().map(|l| l.local_addr().unwrap());
            let state = app::build(config, node, backends);
            ready_tx.send((addr, metrics_addr, state.clone())).unwrap();
            let serve = app::serve_state(state, listeners, async {
                let _ = shutdown_rx.await;
            });
            let result = tokio::select! {
                result = serve => Some(result.map_err(|e| e.to_string())),
                _ = crash_rx => None,
            };
            let _ = stopped_tx.send(result);
        });
        // Dropping the runtime here drops every task of the node without running its cleanup.
    });
    let (addr, metrics_addr, state) = ready_rx.recv_timeout(WAIT).expect("node started");
    TestNode {
        addr,
        metrics_addr,
        state,
        stopped,
        shutdown: Some(shutdown_tx),
        crash: Some(crash_tx),
        thread: Some(thread),
    }
}

/// The store `config` names, migrated.
async fn store(config: &Config) -> Store {
    switchboard::backends::open_store(config).await.unwrap()
}

/// `n` nodes sharing one in-process bus and presence.
pub fn spawn_memory_cluster(n: usize, config: &Config) -> Vec<TestNode> {
    let (hub, presence) = (MemoryHub::new(), MemoryPresence::new());
    (0..n)
        .map(|_| {
            spawn_node_on(
                config.clone(),
                Backing::Shared(hub.clone(), presence.clone()),
            )
        })
        .collect()
}

impl TestNode {
    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL of the metrics listener.
    pub fn metrics(&self, path: &str) -> String {
        let addr = self.metrics_addr.expect("the node has a metrics listener");
        format!("http://{addr}{path}")
    }

    pub fn node_id(&self) -> NodeId {
        self.state.hub.node.clone()
    }

    /// Waits for the node to stop by itself; returns how its serve call ended.
    pub fn wait_stopped(mut self) -> Result<(), String> {
        let result = self.stopped.recv_timeout(WAIT).expect("the node stopped");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        result.expect("a serve result, not a crash")
    }

    /// Drains the node gracefully and waits for it to stop.
    pub fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops the node at once, without any cleanup (no `user_left`, no lease release).
    pub fn crash(mut self) {
        if let Some(tx) = self.crash.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(tx) = self.crash.take() {
            let _ = tx.send(());
        }
    }
}

/// A token for `user` signed with the development secret.
pub fn token(user: &str) -> String {
    token_with(user, |_| {})
}

pub fn token_with(user: &str, edit: impl FnOnce(&mut auth::Claims)) -> String {
    let mut claims = auth::claims(
        &UserId::parse(user).unwrap(),
        &format!("name-{user}"),
        Duration::from_secs(600),
    );
    edit(&mut claims);
    Tokens::new(DEV_JWT_SECRET.as_bytes()).mint(&claims)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test WebSocket client. What it receives passes [`Client::accept`]: each `seq` must follow
/// the previous one, and is taken out (as are the session and resume token, kept here), so
/// that tests compare frames as the relay makes them.
pub struct Client {
    ws: Ws,
    pub client_id: String,
    /// The last `seq` received in this session.
    pub last_seq: u64,
    /// The session id and resume token of `auth_success` (or the last `reconnect` notice).
    pub resume: Option<(String, String)>,
    /// The payload of the last WebSocket ping read (the socket answers each with a pong).
    pub last_ping: Option<Vec<u8>>,
}

/// What a refused upgrade answered.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

pub async fn connect(url: &str) -> Result<Client, Refused> {
    connect_request(url.into_client_request().unwrap()).await
}

pub async fn connect_request(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> Result<Client, Refused> {
    let url = request.uri().to_string();
    upgraded(&url, tokio_tungstenite::connect_async(request).await)
}

/// [`connect`] from the local address `source` (any address in 127.0.0.0/8 for a loopback
/// `url`): behind a proxy that forwards client addresses, each source is another client.
pub async fn connect_from(url: &str, source: std::net::IpAddr) -> Result<Client, Refused> {
    let request = url.into_client_request().unwrap();
    let (host, port) = (request.uri().host().unwrap(), request.uri().port_u16());
    let addr = tokio::net::lookup_host((host, port.unwrap_or(80)))
        .await
        .unwrap()
        .find(|addr| addr.is_ipv4() == source.is_ipv4())
        .expect("an address of the source's family");
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let result = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await;
    upgraded(url, result)
}

/// A client, or what refused the upgrade.
fn upgraded(
    url: &str,
    result: Result<
        (
            Ws,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        tokio_tungstenite::tungstenite::Error,
    >,
) -> Result<Client, Refused> {
    match result {
        Ok((ws, _)) => Ok(Client {
            ws,
            client_id: String::new(),
            last_seq: 0,
            resume: None,
            last_ping: None,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err(Refused { status, body })
        }
        Err(e) => panic!("connect {url}: {e}"),
    }
}

impl Client {
    /// Connects to `room` with a query token and client id; waits for `users_in_room`.
    pub async fn join(node: &TestNode, room: &str, user: &str, client_id: &str) -> (Client, Value) {
        let url = node.ws(&format!(
            "/ws/{room}?token={}&client_id={client_id}",
            token(user)
        ));
        let mut client = connect(&url).await.expect("upgrade accepted");
        let ok = client.recv_type("auth_success").await;
        client.client_id = ok["client_id"].as_str().unwrap().to_owned();
        let users = client.recv_type("users_in_room").await;
        (client, users)
    }

    /// Connects to `/ws` with a query token; waits for `auth_success`.
    pub async fn user(node: &TestNode, user: &str, client_id: &str) -> Client {
        let url = node.ws(&format!("/ws?token={}&client_id={client_id}", token(user)));
        let mut client = connect(&url).await.expect("upgrade accepted");
        let ok = client.recv_type("auth_success").await;
        client.client_id = ok["client_id"].as_str().unwrap().to_owned();
        client
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// A received frame: its `seq` checked against the previous one and taken out, and the
    /// session and resume token of `auth_success` and `reconnect` kept and taken out.
    pub fn accept(&mut self, text: &str) -> Value {
        let mut value: Value = serde_json::from_str(text).expect("JSON frame");
        let Some(object) = value.as_object_mut() else {
            return value;
        };
        if object.get("type").and_then(Value::as_str) == Some("auth_success") {
            self.last_seq = 0;
        }
        if let Some(seq) = object.remove("seq") {
            let seq = seq.as_u64().expect("seq is a number");
            assert_eq!(seq, self.last_seq + 1, "seq out of order in {text}");
            self.last_seq = seq;
        }
        if let (Some(session), Some(token)) = (object.get("session"), object.get("resume_token")) {
            let grant = (
                session.as_str().unwrap().to_owned(),
                token.as_str().unwrap().to_owned(),
            );
            object.remove("session");
            object.remove("resume_token");
            self.resume = Some(grant);
        }
        value
    }

    /// The next JSON frame (WebSocket pings are skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("socket open")
                .expect("frame read");
            match message {
                Message::Text(text) => return self.accept(&text),
                Message::Ping(payload) => self.last_ping = Some(payload.to_vec()),
                Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next JSON frame if one arrives within `wait` (for polling until cluster state
    /// recovers; pings are skipped).
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(wait, self.ws.next())
                .await
                .ok()?
                .expect("socket open")
                .expect("frame read");
            match message {
                Message::Text(text) => return Some(self.accept(&text)),
                Message::Ping(payload) => self.last_ping = Some(payload.to_vec()),
                Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be of `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let value = self.recv().await;
        assert_eq!(value["type"], kind, "unexpected frame: {value}");
        value
    }

    /// The next frame, which must be an error with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let value = self.recv_type("error").await;
        assert_eq!(value["code"], code, "unexpected error: {value}");
        value
    }

    /// Asserts that nothing is queued for this client: a ping's pong comes next.
    pub async fn expect_quiet(&mut self) {
        self.send(json!({"type": "ping"})).await;
        let next = self.recv().await;
        assert_eq!(
            next["type"], "pong",
            "expected nothing before the pong, got {next}"
        );
    }

    /// Waits for the server's close frame; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close within the wait");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before a close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// Reads frames until the close frame; returns them and the close code.
    pub async fn drain_until_close(&mut self) -> (Vec<Value>, u16) {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close within the wait");
            match next {
                Some(Ok(Message::Text(t))) => {
                    let frame = self.accept(&t);
                    frames.push(frame);
                }
                Some(Ok(Message::Close(Some(frame)))) => return (frames, frame.code.into()),
                Some(Ok(_)) => continue,
                other => panic!("socket ended without a close frame: {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A `switchboard serve` process of the built binary, with its stderr lines arriving on a
/// channel. Killed when dropped.
pub struct NodeProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
}

impl NodeProcess {
    /// Starts `switchboard serve` with only `env` among the `SWITCHBOARD_*` variables (and
    /// without `CARGO` unless `env` sets it).
    pub fn start(env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command.arg("serve");
        for (key, _) in std::env::vars() {
            if key.starts_with("SWITCHBOARD_") || key == "CARGO" || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        // A private database unless the test names one (the default file would land in the
        // working directory).
        command.env("SWITCHBOARD_DATABASE_URL", "sqlite::memory:");
        // Any free port for the metrics listener, unless the test names one (several nodes run
        // at once).
        command.env("SWITCHBOARD_METRICS_LISTEN", "127.0.0.1:0");
        command.envs(env.iter().copied());
        command.stderr(std::process::Stdio::piped());
        command.stdout(std::process::Stdio::null());
        let mut child = command.spawn().expect("start switchboard");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `text`; returns it.
    pub fn wait_for(&mut self, text: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} within {limit:?}; stderr so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The address of the development banner's `listening on http://ADDR` line.
    pub fn address(&mut self) -> SocketAddr {
        let line = self.wait_for("listening on http://", WAIT);
        let rest = line.split("http://").nth(1).unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// The metrics listener's address, from the development banner's `metrics:` line.
    pub fn metrics_address(&mut self) -> SocketAddr {
        let line = self.wait_for("  metrics: http://", WAIT);
        let rest = line.split("http://").nth(1).unwrap();
        rest.trim_end_matches("/metrics").parse().unwrap()
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = std::time::Instant::now() + WAIT * 3;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl NodeProcess {
    /// Sends the signal named `name` (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// The exit code once the process has exited (`Some(None)`: by a signal).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().unwrap().map(|status| status.code())
    }

    /// Sends SIGTERM, waits for the exit, and returns the whole of stderr.
    pub fn terminate_and_collect(&mut self) -> String {
        if self.child.try_wait().unwrap().is_none() {
            self.signal("TERM");
        }
        // The reader thread ends at the end of stderr, when the process exits.
        while let Ok(line) = self.lines.recv_timeout(WAIT * 3) {
            self.log.push(line);
        }
        let _ = self.child.wait();
        self.log.join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The URL of a new, empty database on the test Postgres (`SWITCHBOARD_TEST_DATABASE_URL`,
/// started by `scripts/test`), named `{prefix}_{random}`.
pub async fn fresh_postgres(prefix: &str) -> String {
    let admin = std::env::var("SWITCHBOARD_TEST_DATABASE_URL").expect("run scripts/test");
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}
