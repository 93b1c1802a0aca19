//! The load-test tool end to end: its binary against a real Switchboard node (started in this
//! process on port 0) and against its own floor relay (a child process), with tiny sizes. The
//! figures are not checked here, only that every scenario runs, accounts for every message and
//! reports it; `scripts/bench` measures.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::app;
use switchboard::backends::Backends;
use switchboard::config::{Config, Secret};

const TOOL: &str = env!("CARGO_BIN_EXE_switchboard-loadtest");

/// A Switchboard node on its own runtime thread, for the life of the test process.
fn node(config: Config) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let id = app::node_id(&config);
            let backends = Backends::from_config(&config, &id).await.unwrap();
            let listener = app::bind(config.listen).unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let state = app::build(config, id, backends);
            app::serve_state(
                state,
                app::Listeners::public_only(listener),
                std::future::pending(),
            )
            .await
            .unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).expect("node up");
    format!("ws://{addr}")
}

fn config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.database.url = Secret::new("sqlite::memory:");
    // A load test is one address sending faster than a browser: limits as in scripts/bench.
    config.msg_rate = 1_000_000;
    config.msg_burst = 1_000_000;
    config.ip_upgrade_rate = 100_000_000;
    config.ip_upgrade_burst = 1_000_000;
    config.user_connections = 1_000_000;
    config.user_msg_rate = 1_000_000;
    config.user_msg_burst = 1_000_000;
    config.ip_connections = 1_000_000;
    config.ip_unauthenticated = 1_000_000;
    config.max_unauthenticated = 1_000_000;
    config
}

/// A node on its own runtime thread that can be drained like a node sent SIGTERM.
struct Drainable {
    addr: std::net::SocketAddr,
    state: switchboard::state::AppState,
    drain: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Drainable {
    fn start(config: Config) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (drain, drained) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let id = app::node_id(&config);
                let backends = Backends::from_config(&config, &id).await.unwrap();
                let listener = app::bind(config.listen).unwrap();
                let addr = listener.local_addr().unwrap();
                let state = app::build(config, id, backends);
                tx.send((addr, state.clone())).unwrap();
                let listeners = app::Listeners::public_only(listener);
                app::serve_state(state, listeners, async {
                    let _ = drained.await;
                })
                .await
                .unwrap();
            });
        });
        let (addr, state) = rx.recv_timeout(Duration::from_secs(10)).expect("node up");
        Self {
            addr,
            state,
            drain,
            thread,
        }
    }

    /// Drains the node (its clients are told to reconnect and closed with 1012) and waits
    /// until it has stopped listening.
    fn drain(self) {
        let _ = self.drain.send(());
        self.thread.join().expect("the node's thread");
    }
}

/// The tool's floor relay as a child process, stopped on drop.
struct Floor {
    child: Child,
    url: String,
}

impl Floor {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(TOOL)
            .args(["floor", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("floor starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "floor never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("ws://127.0.0.1:{port}"),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(command: &str) -> Output {
    Command::new(TOOL)
        .args(command.split_whitespace())
        .args(["--deadline", "120"])
        .output()
        .expect("the tool runs")
}

/// Runs a scenario (a command line, split at spaces) with `--format json`; returns its report.
fn report(command: &str) -> Value {
    let out = run(&format!("{command} --format json"));
    assert!(
        out.status.success(),
        "{command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// Every system's stats of every round.
fn systems(report: &Value) -> Vec<&Value> {
    report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .flat_map(|round| round.as_array().expect("systems of a round"))
        .collect()
}

/// Asserts that a timed run sent something and delivered all of it, once, in order.
fn all_delivered(stats: &Value, fanout: u64) {
    let c = &stats["counters"];
    let sent = c["sent"].as_u64().unwrap();
    assert!(sent > 0, "nothing sent: {stats}");
    assert_eq!(c["delivered"].as_u64(), Some(sent * fanout), "{stats}");
    assert_eq!(stats["lost"], 0, "{stats}");
    assert_eq!(c["duplicates"], 0, "{stats}");
    assert_eq!(c["reordered"], 0, "{stats}");
    assert_eq!(c["errors"], json!({}), "{stats}");
    assert!(stats["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn pairs_and_rooms_account_for_every_signal_on_a_node_and_the_floor() {
    let (target, floor) = (node(config()), Floor::start());
    let (me, url, fp) = (std::process::id(), &floor.url, floor.pid());
    let side = format!("--target {target} --server-pid {me} --floor {url} --floor-pid {fp}");
    let pairs = report(&format!("pairs {side} --pairs 5 --rate 500 --duration 1"));
    let stats = systems(&pairs);
    assert_eq!(stats.len(), 2, "switchboard and floor");
    assert_eq!(
        (&stats[0]["target"], &stats[1]["target"]),
        (&json!("switchboard"), &json!("floor"))
    );
    for s in &stats {
        all_delivered(s, 1);
        assert_eq!(s["joined"], 10);
        assert!(
            s["server_cpu"]["cpu_s"].as_f64().is_some(),
            "CPU read from /proc: {s}"
        );
    }
    let rooms = report(&format!(
        "rooms {side} --rooms 2 --room-size 4 --rate 200 --duration 1"
    ));
    for s in systems(&rooms) {
        all_delivered(s, 3);
    }
}

#[test]
fn ramp_storm_and_idle_run_to_the_end() {
    let (target, floor) = (node(config()), Floor::start());
    let me = std::process::id();
    let ramp = report(&format!(
        "ramp --target {target} --floor {} --shape pairs --pairs 5 --start-rate 200 --factor 2 \
         --max-rate 400 --max-steps 3 --bisect 0 --step-duration 1",
        floor.url
    ));
    for run in ramp["runs"].as_array().unwrap() {
        assert_eq!(run["best"], 400.0, "{run}");
        for step in run["steps"].as_array().unwrap() {
            all_delivered(&step["stats"], 1);
        }
    }
    let storm = report(&format!(
        "storm --target {target} --server-pid {me} --clients 40 --concurrency 8 --room-size 4"
    ));
    for s in systems(&storm) {
        assert_eq!(
            (s["joined"].as_u64(), s["join"]["count"].as_u64()),
            (Some(40), Some(40))
        );
        assert_eq!(s["failures"], json!({}), "{s}");
        assert!(s["conns_per_s"].as_f64().unwrap() > 0.0);
    }
    let idle = report(&format!(
        "idle --target {target} --server-pid {me} --clients 40 --settle 1 --hold 1"
    ));
    for s in systems(&idle) {
        assert_eq!(s["joined"], 40, "{s}");
        assert!(
            s["rss_held_kib"].as_u64().unwrap() > 0,
            "RSS read from /proc: {s}"
        );
        assert_eq!(s["held"]["closes"], json!({}), "{s}");
    }
}

#[test]
fn pairs_reconnect_and_rejoin_when_their_node_drains() {
    let first = Drainable::start(config());
    let addr = first.addr;
    let tool = Command::new(TOOL)
        .args(["pairs", "--target", &format!("ws://{addr}"), "--pairs", "5"])
        .args(["--rate", "200", "--duration", "3", "--reconnect"])
        .args(["--format", "json", "--deadline", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tool runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.state.hub.registry.connections() < 10 {
        assert!(Instant::now() < deadline, "the pairs never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.drain();
    // The same port again, as a restarted node: the clients' retries find it.
    let mut again = config();
    again.listen = addr;
    let second = Drainable::start(again);
    let out = tool.wait_with_output().expect("the tool ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let stats = systems(&report)[0];
    let c = &stats["counters"];
    // Every client was told to reconnect, and each came back once.
    assert_eq!(c["closes"], json!({"reconnect": 10}), "{stats}");
    assert_eq!(stats["rejoin"]["count"], 10, "{stats}");
    assert_eq!(stats["joined"], 10, "{stats}");
    assert!(
        c["delivered"].as_u64().unwrap() > 0,
        "signals flowed after the re-joins: {stats}"
    );
    assert_eq!(c["duplicates"], 0, "{stats}");
    let rows = &report["sections"][0]["rows"];
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["metric"] == "lost to re-joined p99 ms"),
        "{rows}"
    );
    second.drain();
}

#[test]
fn targets_off_loopback_and_sizes_past_the_caps_are_refused() {
    let refused = [
        ("pairs --target ws://10.1.2.3:8080", "non-loopback"),
        ("pairs --target ws://example.com:80", "non-loopback"),
        ("floor --listen 0.0.0.0:13999", "non-loopback"),
        ("pairs --target ws://127.0.0.1:1 --rate 2000000", "--rate"),
        (
            "storm --target ws://127.0.0.1:1 --clients 100000",
            "--clients",
        ),
    ];
    for (command, why) in refused {
        let out = run(command);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command} was accepted");
        assert!(said.contains(why), "{command}: {said}");
    }
}

#[test]
#[ignore = "needs Redis: run scripts/test"]
fn pairs_split_over_a_cluster_cross_nodes_and_arrive() {
    let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL")
        .expect("SWITCHBOARD_TEST_REDIS_URL is not set: run scripts/test");
    let mut cluster = config();
    cluster.redis.url = Some(Secret::new(url));
    cluster.redis.prefix = format!("lt-{}", std::process::id());
    let (a, b) = (node(cluster.clone()), node(cluster));
    let pairs = report(&format!(
        "pairs --target {a} --target {b} --pairs 5 --rate 500 --duration 1"
    ));
    let stats = systems(&pairs);
    all_delivered(stats[0], 1);
    assert_eq!(stats[0]["nodes"], 2);
}
