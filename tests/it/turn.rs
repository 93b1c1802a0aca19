//! TURN credentials and ICE servers: the predecessors' shapes, their refusals, `ice_servers` in
//! `auth_success`, and credentials proven against a real coturn (`turnserver` with the sample
//! `deploy/coturn/turnserver.conf`, which `scripts/test` installs): allocations succeed with
//! Switchboard's credentials, also ones signed by the previous secret during a rotation, and fail
//! when expired, signed with a wrong secret or with a tampered username.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard::config::{Config, Secret};

use crate::support::*;

const NEW: &str = "new-turn-secret-0123456789";
const OLD: &str = "old-turn-secret-0123456789";

fn turn_config(secrets: &[&str], turn_port: u16) -> Config {
    let mut config = test_config();
    config.turn.secret = secrets.iter().map(|s| Secret::new(*s)).collect();
    config.turn.uris = vec![
        format!("turn:127.0.0.1:{turn_port}?transport=udp"),
        format!("turn:127.0.0.1:{turn_port}?transport=tcp"),
    ];
    config.stun_uris = vec![format!("stun:127.0.0.1:{turn_port}")];
    config.turn.ttl = Duration::from_secs(600);
    config
}

/// `GET path` with `user`'s token: the status, the `Cache-Control` header and the body.
async fn get(node: &TestNode, path: &str, user: Option<&str>) -> (u16, String, Value) {
    let mut request = http_client().get(node.http(path));
    if let Some(user) = user {
        request = request.bearer_auth(token(user));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, cache, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_three_routes_answer_in_the_predecessors_shapes() {
    let node = spawn_node(turn_config(&[NEW, OLD], 3478));
    let now = switchboard::auth::unix_now();

    let (status, cache, body) = get(&node, "/auth/turn-credentials", Some("alice")).await;
    assert_eq!((status, cache.as_str()), (200, "no-store"), "{body}");
    let username = body["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    assert!((now + 599..=now + 601).contains(&expiry), "{username}");
    assert_eq!(user, "alice");
    assert_eq!(
        body["credential"],
        switchboard::turn::sign(NEW.as_bytes(), username)
    );
    assert_eq!(body["ttl"], 600);
    assert_eq!(body["urls"].as_array().unwrap().len(), 2);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["credential", "ttl", "urls", "username"]);

    let (status, _, body) = get(&node, "/api/webrtc/turn-credentials", Some("bob")).await;
    assert_eq!(status, 200);
    assert_eq!(body["password"], body["credential"]);
    assert!(body["username"].as_str().unwrap().ends_with(":bob"));
    assert_eq!(body["uris"][0], "turn:127.0.0.1:3478?transport=udp");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["credential", "password", "ttl", "uris", "username"]);

    let (status, _, body) = get(&node, "/api/webrtc/ice-servers", Some("carol")).await;
    assert_eq!(status, 200);
    let servers = body["iceServers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{body}");
    assert_eq!(
        servers[0],
        serde_json::json!({"urls": ["stun:127.0.0.1:3478"]})
    );
    assert!(servers[1]["username"].as_str().unwrap().ends_with(":carol"));
    assert!(servers[1]["credential"].is_string());

    for path in [
        "/auth/turn-credentials",
        "/api/webrtc/turn-credentials",
        "/api/webrtc/ice-servers",
    ] {
        let (status, _, body) = get(&node, path, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
    }

    // auth_success carries the same ICE servers.
    let mut client = connect(&node.ws(&format!("/ws?token={}", token("dave"))))
        .await
        .unwrap();
    let ok = client.recv_type("auth_success").await;
    let servers = ok["ice_servers"]
        .as_array()
        .expect("ice_servers in auth_success");
    assert_eq!(servers.len(), 2);
    assert!(servers[1]["username"].as_str().unwrap().ends_with(":dave"));
}

#[tokio::test]
async fn without_a_secret_credentials_are_503_and_ice_servers_stun_only() {
    let mut config = test_config();
    config.stun_uris = vec!["stun:stun.example.com:3478".into()];
    let node = spawn_node(config);
    for path in ["/auth/turn-credentials", "/api/webrtc/turn-credentials"] {
        let (status, _, body) = get(&node, path, Some("alice")).await;
        assert_eq!(status, 503, "{path}");
        assert_eq!(body["code"], "turn_not_configured");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("SWITCHBOARD_TURN_SECRET")
        );
    }
    let (status, _, body) = get(&node, "/api/webrtc/ice-servers", Some("alice")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"iceServers": [{"urls": ["stun:stun.example.com:3478"]}]})
    );
    let mut client = Client::user(&node, "alice", "c1").await;
    client.expect_quiet().await;

    // Neither STUN nor TURN: no `ice_servers` in auth_success at all.
    let bare = spawn_node(test_config());
    let mut client = connect(&bare.ws(&format!("/ws?token={}", token("bob"))))
        .await
        .unwrap();
    let ok = client.recv_type("auth_success").await;
    assert!(ok.get("ice_servers").is_none(), "{ok}");
    let (_, _, body) = get(&bare, "/api/webrtc/ice-servers", Some("bob")).await;
    assert_eq!(body, serde_json::json!({"iceServers": []}));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `turnserver` on loopback with the sample configuration and `secrets`, and an echo peer.
struct Coturn {
    server: Child,
    peer: Child,
    port: u16,
    peer_port: u16,
    dir: PathBuf,
}

impl Coturn {
    fn start(secrets: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("sb-turn-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (port, peer_port) = (free_port(), free_port());
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/coturn/turnserver.conf");
        let mut command = Command::new("turnserver");
        command.args(["-c", sample, "--no-cli", "--no-tls", "--no-dtls"]);
        command.args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"]);
        command.arg(format!("--listening-port={port}"));
        command.args(["--min-port=49160", "--max-port=49360"]);
        // The sample refuses loopback peers, as production must; the test's peer is on loopback.
        command.arg("--allow-loopback-peers");
        for secret in secrets {
            command.arg(format!("--static-auth-secret={secret}"));
        }
        command.arg(format!("--db={}", dir.join("turndb").display()));
        command.arg(format!("--pidfile={}", dir.join("turn.pid").display()));
        command.arg(format!("--log-file={}", dir.join("turn.log").display()));
        let server = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver (Debian coturn): run scripts/test");
        let peer = echo_peer(peer_port);
        let deadline = Instant::now() + WAIT * 2;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "turnserver did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            server,
            peer,
            port,
            peer_port,
            dir,
        }
    }

    /// Whether `turnutils_uclient` allocates a relay with `username` and `password` and sends
    /// through it.
    fn allocates(&self, username: &str, password: &str) -> bool {
        allocates(self.port, self.peer_port, username, password)
    }
}

/// `turnutils_peer` on 127.0.0.1:`port`: a UDP peer that echoes what a relay sends it.
pub fn echo_peer(port: u16) -> Child {
    Command::new("turnutils_peer")
        .args(["-p", &port.to_string(), "-L", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer")
}

/// Whether `turnutils_uclient` allocates a relay on the coturn at 127.0.0.1:`port` with
/// `username` and `password`, and sends through it to the echo peer on `peer_port`.
pub fn allocates(port: u16, peer_port: u16, username: &str, password: &str) -> bool {
    let mut client = Command::new("turnutils_uclient")
        .args(["-u", username, "-w", password])
        .args(["-p", &port.to_string(), "-n", "3", "-m", "1"])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(["-X", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_uclient");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = client.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            panic!("turnutils_uclient did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.peer.kill();
        let _ = self.server.wait();
        let _ = self.peer.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `(username, credential)` of a node's `/auth/turn-credentials` for `user`.
async fn credentials_from(node: &TestNode, user: &str) -> (String, String) {
    let (status, _, body) = get(node, "/auth/turn-credentials", Some(user)).await;
    assert_eq!(status, 200, "{body}");
    let field = |name: &str| body[name].as_str().unwrap().to_owned();
    (field("username"), field("credential"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs coturn: run scripts/test"]
async fn coturn_allocates_with_switchboards_credentials_and_refuses_bad_ones() {
    // coturn lists the new secret and, during the rotation, the old one.
    let coturn = Coturn::start(&[NEW, OLD]);
    let node = spawn_node(turn_config(&[NEW, OLD], coturn.port));
    let allocates = |(username, password): (String, String)| {
        let coturn = &coturn;
        async move { tokio::task::block_in_place(|| coturn.allocates(&username, &password)) }
    };

    let good = credentials_from(&node, "alice").await;
    assert!(
        allocates(good.clone()).await,
        "credentials from /auth/turn-credentials"
    );
    let (_, _, ice) = get(&node, "/api/webrtc/ice-servers", Some("bob")).await;
    let turn = &ice["iceServers"][1];
    let from_ice = (
        turn["username"].as_str().unwrap().to_owned(),
        turn["credential"].as_str().unwrap().to_owned(),
    );
    assert!(
        allocates(from_ice).await,
        "credentials from /api/webrtc/ice-servers"
    );

    // A node still on the old secret: accepted while coturn lists both.
    let old_node = spawn_node(turn_config(&[OLD], coturn.port));
    assert!(
        allocates(credentials_from(&old_node, "carol").await).await,
        "old secret"
    );

    // Expired: signed with the right secret, but the expiry has passed.
    let past = format!("{}:alice", switchboard::auth::unix_now() - 10);
    let expired = (past.clone(), switchboard::turn::sign(NEW.as_bytes(), &past));
    assert!(!allocates(expired).await, "expired credentials allocated");
    // Signed with a secret coturn does not know.
    let wrong_node = spawn_node(turn_config(&["a-secret-coturn-does-not-know"], coturn.port));
    assert!(
        !allocates(credentials_from(&wrong_node, "dave").await).await,
        "wrong secret"
    );
    // Another user's name on alice's credential.
    let (username, credential) = good;
    let tampered = username.replace(":alice", ":mallory");
    assert!(
        !allocates((tampered, credential.clone())).await,
        "tampered username"
    );
    // Another expiry on alice's credential.
    let (expiry, user) = username.split_once(':').unwrap();
    let later = format!("{}:{user}", expiry.parse::<u64>().unwrap() + 3600);
    assert!(!allocates((later, credential)).await, "tampered expiry");
}
