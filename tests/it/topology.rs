//! The deployment's topology on this machine, driven as clients reach it: `scripts/cluster up`
//! starts Redis, Postgres, three production nodes of this build, HAProxy (deploy/haproxy's
//! config), coturn and Prometheus, and every client connects through HAProxy's one port, each
//! from its own loopback address (as distinct clients behind the load balancer; the nodes count
//! per-address limits by HAProxy's `X-Forwarded-For`, so more than five such clients at once
//! only get in when that header is believed). Which node a client landed on is read from the
//! nodes' `switchboard_connections` gauges. A TURN credential the cluster hands out is tried on
//! the cluster's coturn.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::auth::{self, Tokens};
use switchboard::protocol::UserId;

use crate::support::*;

/// How long a cluster-wide event may take (a health check, a scrape, a drain).
const EVENT: Duration = Duration::from_secs(20);
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster");
const NODES: [usize; 3] = [1, 2, 3];

/// A cluster started by `scripts/cluster up`, stopped by `scripts/cluster down` when dropped
/// (also when the test fails: then its logs are kept in `DIR/logs`).
struct Cluster {
    dir: PathBuf,
    env: HashMap<String, String>,
    secret: String,
}

impl Cluster {
    async fn up() -> Self {
        let dir =
            std::env::temp_dir().join(format!("sb-topology-{}", uuid::Uuid::new_v4().simple()));
        let out = script(&["up", dir.to_str().unwrap()]).await;
        let env: HashMap<String, String> = out
            .lines()
            .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        let settings = std::fs::read_to_string(&env["SB_CLUSTER_ENV_FILE"]).unwrap();
        let secret = settings
            .lines()
            .find_map(|line| line.strip_prefix("SWITCHBOARD_JWT_SECRET="))
            .expect("the nodes' secret")
            .to_owned();
        Self { dir, env, secret }
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} not printed by up"))
    }

    /// `scripts/cluster COMMAND [ARG] DIR`.
    async fn run(&self, args: &[&str]) {
        let dir = self.dir.to_str().unwrap();
        script(&[args, &[dir]].concat()).await;
    }

    fn metrics(&self, node: usize) -> SocketAddr {
        self.var(&format!("SB_CLUSTER_NODE{node}_METRICS"))
            .parse()
            .unwrap()
    }

    fn token(&self, user: &str) -> String {
        let claims = auth::claims(
            &UserId::parse(user).unwrap(),
            user,
            Duration::from_secs(600),
        );
        Tokens::new(self.secret.as_bytes()).mint(&claims)
    }

    /// `user` connects through HAProxy from `source`, to `room` or (`None`) to `/ws`; returns
    /// the client once authenticated (and joined).
    async fn connect(&self, source: IpAddr, user: &str, room: Option<&str>) -> Client {
        let path = room.map_or("/ws".to_owned(), |room| format!("/ws/{room}"));
        let url = format!(
            "{}{path}?token={}&client_id={user}-c",
            self.var("SB_CLUSTER_WS_URL"),
            self.token(user)
        );
        let mut client = connect_from(&url, source)
            .await
            .unwrap_or_else(|refused| panic!("{user} refused through HAProxy: {refused:?}"));
        let ok = client.recv_type("auth_success").await;
        client.client_id = ok["client_id"].as_str().unwrap().to_owned();
        if room.is_some() {
            client.recv_type("users_in_room").await;
        }
        client
    }

    /// Each running node's `switchboard_connections` (a stopped one's is 0).
    async fn connections(&self, running: &[usize]) -> [f64; 3] {
        let mut gauges = [0.0; 3];
        for &node in running {
            let text = scrape(self.metrics(node)).await;
            gauges[node - 1] = sample(&text, "switchboard_connections").unwrap_or(0.0);
        }
        gauges
    }

    /// Waits until the running nodes hold `total` connections together; returns the gauges.
    async fn settled(&self, running: &[usize], total: f64) -> [f64; 3] {
        eventually(
            &format!("{total} connections on nodes {running:?}"),
            async || {
                let gauges = self.connections(running).await;
                (gauges.iter().sum::<f64>() == total).then_some(gauges)
            },
        )
        .await
    }

    /// Prometheus' `up` of each node, by node number.
    async fn prometheus_up(&self) -> HashMap<usize, String> {
        let url = format!(
            "{}/api/v1/query?query=up",
            self.var("SB_CLUSTER_PROMETHEUS_URL")
        );
        let body: Value = http_get(&url).await.unwrap().json().await.unwrap();
        let mut up = HashMap::new();
        for series in body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let instance = series["metric"]["instance"].as_str().unwrap().to_owned();
            let node = NODES
                .into_iter()
                .find(|&n| self.metrics(n).to_string() == instance)
                .unwrap_or_else(|| panic!("a target that is no node: {instance}"));
            up.insert(node, series["value"][1].as_str().unwrap().to_owned());
        }
        up
    }

    /// Waits until Prometheus reports `up` 1 for `running` and 0 for `stopped`.
    async fn prometheus_sees(&self, running: &[usize], stopped: &[usize]) {
        let want: HashMap<usize, String> = (running.iter().map(|&n| (n, "1")))
            .chain(stopped.iter().map(|&n| (n, "0")))
            .map(|(n, v)| (n, v.to_owned()))
            .collect();
        eventually(
            &format!("Prometheus: up {running:?}, down {stopped:?}"),
            async || (self.prometheus_up().await == want).then_some(()),
        )
        .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let dir = self.dir.to_str().unwrap();
        if std::thread::panicking() {
            let logs = self.dir.join("logs");
            let _ = std::fs::create_dir_all(&logs);
            let keep =
                r#"for f in */*.log */*.cfg */*.yml; do cp "$f" "$0/${f//\//-}"; done 2>/dev/null"#;
            let _ = std::process::Command::new("bash")
                .args(["-c", keep, logs.to_str().unwrap()])
                .current_dir(&self.dir)
                .status();
            eprintln!("the cluster's logs are in {}", logs.display());
        }
        let _ = cluster_command().args(["down", dir]).status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `scripts/cluster` with this build's binary and none of the caller's cluster settings.
fn cluster_command() -> std::process::Command {
    let mut command = std::process::Command::new(SCRIPT);
    for (key, _) in std::env::vars() {
        if key.starts_with("SB_CLUSTER_") {
            command.env_remove(key);
        }
    }
    command.env("SWITCHBOARD_BIN", env!("CARGO_BIN_EXE_switchboard"));
    command
}

/// Runs `scripts/cluster ARGS`; returns its stdout, or fails with its stderr.
async fn script(args: &[&str]) -> String {
    let mut command = tokio::process::Command::from(cluster_command());
    command.args(args).stdin(Stdio::null());
    let out = command.output().await.expect("scripts/cluster runs");
    assert!(
        out.status.success(),
        "scripts/cluster {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `probe` until it answers, for at most [`EVENT`].
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + EVENT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {EVENT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The loopback address 127.0.0.`n`.
fn source(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// The node (1-3) whose gauge grew from `before` to `after`, which must be the only change.
fn landed(before: [f64; 3], after: [f64; 3]) -> usize {
    let grown: Vec<usize> = NODES
        .into_iter()
        .filter(|&n| after[n - 1] > before[n - 1])
        .collect();
    assert_eq!(
        grown.len(),
        1,
        "one node gained the client: {before:?} -> {after:?}"
    );
    grown[0]
}

/// Frames until one of `kind` (what comes before it, such as presence, is skipped).
async fn until_type(client: &mut Client, kind: &str) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// `from` sends `message` (with `to`), `to` receives it from `from`.
async fn relay(from: &mut Client, to: &mut Client, mut message: Value) -> Value {
    message["to"] = json!(to.client_id);
    from.send(message.clone()).await;
    let got = until_type(to, message["type"].as_str().unwrap()).await;
    assert_eq!(got["from"], from.client_id, "{got}");
    got
}

/// A TURN echo peer, stopped when dropped.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TURN credential from the cluster's REST endpoint (through HAProxy) allocates a relay on
/// the cluster's coturn, and the same with a wrong password does not.
async fn turn_credentials_work(cluster: &Cluster) {
    let url = format!("{}/auth/turn-credentials", cluster.var("SB_CLUSTER_URL"));
    let response = http_client()
        .get(url)
        .bearer_auth(cluster.token("carol"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let turn_port: u16 = cluster.var("SB_CLUSTER_TURN_PORT").parse().unwrap();
    assert_eq!(
        body["urls"][0],
        format!("turn:127.0.0.1:{turn_port}?transport=udp")
    );
    let (username, password) = (
        body["username"].as_str().unwrap(),
        body["credential"].as_str().unwrap(),
    );
    let peer_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _peer = Peer(crate::turn::echo_peer(peer_port));
    let allocated = tokio::task::block_in_place(|| {
        crate::turn::allocates(turn_port, peer_port, username, password)
    });
    assert!(
        allocated,
        "the cluster's coturn refused the cluster's credential"
    );
    let wrong = format!("{password}x");
    let refused = tokio::task::block_in_place(|| {
        crate::turn::allocates(turn_port, peer_port, username, &wrong)
    });
    assert!(!refused, "coturn accepted a wrong password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy, prometheus, coturn, Redis and Postgres: run scripts/test"]
async fn through_haproxy_clients_spread_over_nodes_talk_across_them_and_a_stopped_node_is_left_out()
{
    let cluster = Cluster::up().await;
    cluster.prometheus_sees(&NODES, &[]).await;
    let none = cluster.settled(&NODES, 0.0).await;

    // Two clients through the one port: on two nodes, an offer, an answer and ICE candidates
    // relayed between them.
    let mut alice = cluster.connect(source(2), "alice", Some("topology")).await;
    let with_alice = cluster.settled(&NODES, 1.0).await;
    let alice_node = landed(none, with_alice);
    let mut bob = cluster.connect(source(3), "bob", Some("topology")).await;
    let bob_node = landed(with_alice, cluster.settled(&NODES, 2.0).await);
    assert_ne!(alice_node, bob_node, "HAProxy put both clients on one node");
    until_type(&mut alice, "user_joined").await;
    let offer = relay(
        &mut alice,
        &mut bob,
        json!({"type": "offer", "offer": {"type": "offer", "sdp": "v=0 alice"}}),
    )
    .await;
    assert_eq!(offer["offer"]["sdp"], "v=0 alice");
    let answer = relay(
        &mut bob,
        &mut alice,
        json!({"type": "answer", "answer": {"type": "answer", "sdp": "v=0 bob"}}),
    )
    .await;
    assert_eq!(answer["answer"]["sdp"], "v=0 bob");
    let candidate = json!({
        "candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host",
        "sdpMid": "0",
    });
    let ice = relay(
        &mut alice,
        &mut bob,
        json!({"type": "ice_candidate", "candidate": candidate}),
    )
    .await;
    assert_eq!(ice["candidate"], candidate);
    let ice = relay(
        &mut bob,
        &mut alice,
        json!({"type": "ice_candidate", "candidate": candidate}),
    )
    .await;
    assert_eq!(ice["candidate"], candidate);

    turn_credentials_work(&cluster).await;

    // Alice's node stops: it drains (her client is told to reconnect, then closed with 1012),
    // exits, and HAProxy takes it out.
    cluster.run(&["stop-node", &alice_node.to_string()]).await;
    let (frames, code) = alice.drain_until_close().await;
    assert_eq!(code, 1012, "{frames:?}");
    assert!(
        frames.contains(&json!({"type": "reconnect", "reason": "shutdown"})),
        "{frames:?}"
    );
    let running: Vec<usize> = NODES.into_iter().filter(|&n| n != alice_node).collect();
    let gauges = cluster.settled(&running, 1.0).await;

    // She reconnects through the same port, lands on a surviving node, and talks to bob again.
    let mut alice = cluster.connect(source(2), "alice", Some("topology")).await;
    let gauges_after = cluster.settled(&running, 2.0).await;
    landed(gauges, gauges_after);
    let joined = until_type(&mut bob, "user_joined").await;
    assert_eq!(joined["client_id"], alice.client_id);
    relay(
        &mut alice,
        &mut bob,
        json!({"type": "offer", "offer": {"type": "offer", "sdp": "v=0 again"}}),
    )
    .await;

    // New clients all get in, on the two surviving nodes only, spread over both.
    let mut fresh = Vec::new();
    for i in 0..6u8 {
        fresh.push(
            cluster
                .connect(source(10 + i), &format!("fresh{i}"), None)
                .await,
        );
    }
    let spread = cluster.settled(&running, 8.0).await;
    let stopped = cluster.var(&format!("SB_CLUSTER_NODE{alice_node}_URL"));
    assert!(
        http_get(stopped).await.is_err(),
        "the stopped node still answers"
    );
    for &node in &running {
        assert!(
            spread[node - 1] > gauges_after[node - 1],
            "node {node} got none of the new clients: {gauges_after:?} -> {spread:?}"
        );
    }

    // Prometheus saw every node up before, and sees the stopped one down now.
    cluster.prometheus_sees(&running, &[alice_node]).await;
    for client in fresh {
        client.close().await;
    }
}
