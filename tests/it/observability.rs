//! What operators see: the metrics listener apart from the public port, counters and histograms
//! that move with a scripted session (read from a node process of its own, so that no other
//! test's traffic is counted), request ids, logs that name every refusal and carry no secret,
//! and readiness that follows Redis and Postgres.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::RedisProcess;
use crate::store::Postgres;
use crate::support::*;

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_and_the_whole_health_report_live_on_their_own_listener() {
    let node = spawn_node(test_config());
    // The public port no longer serves them.
    let response = http_get(node.http("/metrics")).await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    let metrics = node.metrics_addr.unwrap();
    assert_ne!(metrics.port(), node.addr.port());
    let text = scrape(metrics).await;
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "switchboard_build_info{{version=\"{version}\",commit=\""
        )) && l.ends_with("\"} 1")),
        "{text}"
    );
    assert_eq!(value(&text, "switchboard_ready"), 1.0);
    assert!(
        text.contains("# HELP switchboard_slow_consumers_total "),
        "{text}"
    );
    assert!(
        text.contains("# TYPE switchboard_relay_latency_seconds histogram")
            || !text.contains("switchboard_relay_latency_seconds"),
        "{text}"
    );

    let health: Value = http_get(node.metrics("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["node_id"], node.node_id().as_str());
    let ready = http_get(node.metrics("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let document: Value = http_get(node.metrics("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&str> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(paths, ["/health", "/metrics", "/openapi.json", "/readyz"]);
    let public: Value = http_get(node.http("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(public["paths"].get("/metrics").is_none());
    // Nothing else is served there: not the API, not the WebSockets.
    for path in ["/auth/me", "/ws", "/api/rooms", "/"] {
        let response = http_get(node.metrics(path)).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    node.shutdown();
}

#[tokio::test]
async fn every_request_gets_a_request_id_and_a_sensible_one_is_kept() {
    let node = spawn_node(test_config());
    let client = http_client();
    let generated = client.get(node.http("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32, "{id}");
    let other = client.get(node.http("/nowhere")).send().await.unwrap();
    assert_eq!(other.status(), 404);
    assert_ne!(other.headers()["x-request-id"].to_str().unwrap(), id);

    let kept = client
        .get(node.http("/healthz"))
        .header("x-request-id", "lb-7f3a:42")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "lb-7f3a:42");
    // A forged log line, an overlong id: replaced.
    for hostile in ["a b level=error", &"x".repeat(65), "ü"] {
        let response = client
            .get(node.http("/healthz"))
            .header("x-request-id", hostile)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, hostile);
        assert_eq!(id.len(), 32);
    }
    node.shutdown();
}

/// What a scripted session used: every secret that must never reach the log.
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn check(&self, log: &str) {
        for (what, secret) in &self.0 {
            assert!(
                !log.contains(secret.as_str()),
                "the log holds the {what}:\n{log}"
            );
        }
        assert!(
            !log.contains("token="),
            "a URL with its token in the log:\n{log}"
        );
    }
}

const SDP_MARKER: &str = "o=- 4611731400430051336 2 IN IP4 198.51.100.7";
const ICE_MARKER: &str = "candidate:842163049 1 udp 1677729535 203.0.113.9 46154";
const TURN_SECRET: &str = "turn-secret-3f9c1a7be24d";

/// A node process with TURN configured and tight `/auth` budgets, logging in `format` at
/// `level`.
fn session_node(format: &str, level: &str) -> NodeProcess {
    NodeProcess::start(&[
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_LOG_LEVEL", level),
        ("SWITCHBOARD_LOG_FORMAT", format),
        ("SWITCHBOARD_TURN_SECRET", TURN_SECRET),
        ("SWITCHBOARD_TURN_URIS", "turn:127.0.0.1:3478?transport=udp"),
        ("SWITCHBOARD_AUTH_RATE", "1"),
        ("SWITCHBOARD_AUTH_BURST", "4"),
        ("SWITCHBOARD_RESUME_WINDOW", "30s"),
    ])
}

/// Logs in, joins a room, negotiates, asks for TURN credentials, is refused in each way, and
/// logs out; returns the secrets it used.
async fn scripted_session(addr: std::net::SocketAddr) -> Secrets {
    let http = |path: &str| format!("http://{addr}{path}");
    let client = http_client();
    let mut secrets = vec![("jwt secret", switchboard::config::DEV_JWT_SECRET.to_owned())];
    secrets.push(("TURN secret", TURN_SECRET.to_owned()));
    let mut tokens = HashMap::new();
    for (user, password) in [("erin", "correct horse 81"), ("frank", "battery staple 92")] {
        let body = json!({"username": user, "password": password});
        let response = client
            .post(http("/auth/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{user}");
        let response = client
            .post(http("/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let login: Value = response.json().await.unwrap();
        let access = login["access_token"].as_str().unwrap().to_owned();
        let refresh = login["refresh_token"].as_str().unwrap().to_owned();
        secrets.push(("password", password.to_owned()));
        // The signature alone is secret enough: a log that kept only it would still leak.
        secrets.push((
            "access token",
            access.rsplit('.').next().unwrap().to_owned(),
        ));
        secrets.push(("refresh token", refresh.clone()));
        tokens.insert(user, (access, refresh));
    }
    let wrong = json!({"username": "erin", "password": "not her password"});
    let response = client
        .post(http("/auth/login"))
        .json(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    secrets.push(("wrong password", "not her password".to_owned()));

    let ws = |path: &str, token: &str| format!("ws://{addr}{path}?token={token}");
    let mut alice = connect(&ws("/ws/call", &tokens["erin"].0)).await.unwrap();
    let ok = alice.recv_type("auth_success").await;
    let credential = ok["ice_servers"][0]["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(("TURN credential of auth_success", credential));
    alice.recv_type("users_in_room").await;
    let url = format!("{}&client_id=b1", ws("/ws/call", &tokens["frank"].0));
    let mut bob = connect(&url).await.unwrap();
    bob.recv_type("auth_success").await;
    bob.recv_type("users_in_room").await;
    alice.recv_type("user_joined").await;
    let offer = json!({"type":"offer","to":"b1","offer":{"type":"offer","sdp":SDP_MARKER}});
    alice.send(offer).await;
    let offer = bob.recv_type("offer").await;
    let from = offer["from"].as_str().unwrap().to_owned();
    bob.send(json!({"type":"answer","to":from,"answer":{"type":"answer","sdp":SDP_MARKER}}))
        .await;
    alice.recv_type("answer").await;
    bob.send(json!({"type":"ice_candidate","to":from,"candidate":{"candidate":ICE_MARKER}}))
        .await;
    alice.recv_type("ice_candidate").await;

    // Bob's connection drops; a resume with a forged token is refused, his own resumes it.
    let grant = bob.resume.clone().expect("a session to resume");
    secrets.push(("resume token", grant.1.clone()));
    let last_seq = bob.last_seq;
    drop(bob);
    let mut bob = connect(&format!("ws://{addr}/ws/call")).await.unwrap();
    bob.recv_type("auth_required").await;
    let forged = "f".repeat(43);
    bob.send(json!({"type":"resume","session":grant.0,"resume_token":forged,"last_seq":last_seq}))
        .await;
    assert_eq!(
        bob.recv_type("resume_failed").await["reason"],
        "invalid_token"
    );
    bob.send(json!({"type":"resume","session":grant.0,"resume_token":grant.1,"last_seq":last_seq}))
        .await;
    bob.recv_type("resumed").await;
    bob.last_seq = last_seq;
    alice
        .send(json!({"type":"ice_candidate","to":"b1","candidate":{"candidate":ICE_MARKER}}))
        .await;
    bob.recv_type("ice_candidate").await;
    secrets.push(("SDP body", SDP_MARKER.to_owned()));
    secrets.push(("ICE candidate", ICE_MARKER.to_owned()));

    let turn: Value = client
        .get(http("/auth/turn-credentials"))
        .bearer_auth(&tokens["erin"].0)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push((
        "TURN credential",
        turn["credential"].as_str().unwrap().to_owned(),
    ));

    // Refusals: a bad token, an expired one, a room the token does not grant, a limit.
    let mut refused = connect(&ws("/ws/call", "not.a.token")).await.unwrap();
    refused.expect_error("unauthorized").await;
    let expired = token_with("carol", |c| c.exp = c.iat.saturating_sub(3600));
    let mut refused = connect(&ws("/ws/call", &expired)).await.unwrap();
    refused.expect_error("token_expired").await;
    let narrow = token_with("dave", |c| c.rooms = Some(vec!["lobby".into()]));
    secrets.push((
        "expired token",
        expired.rsplit('.').next().unwrap().to_owned(),
    ));
    secrets.push((
        "narrow token",
        narrow.rsplit('.').next().unwrap().to_owned(),
    ));
    let mut refused = connect(&ws("/ws/call", &narrow)).await.unwrap();
    refused.expect_error("forbidden").await;
    for n in 0..5 {
        let body = json!({"refresh_token": "made-up"});
        let response = client
            .post(http("/auth/refresh"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let expected = if n < 4 { 401 } else { 429 };
        assert_eq!(response.status(), expected, "refresh {n}");
    }

    let (access, refresh) = &tokens["frank"];
    let response = client
        .post(http("/auth/logout"))
        .bearer_auth(access)
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    alice.close().await;
    bob.close().await;
    Secrets(secrets)
}

#[tokio::test]
async fn a_scripted_session_moves_the_counters_by_what_it_did() {
    let mut node = session_node("text", "info");
    let addr = node.address();
    let metrics = node.metrics_address();
    // A development node creates its demo accounts first.
    node.wait_for("demo accounts", WAIT);
    let before = scrape(metrics).await;
    // Every signal type is there from the start, at 0.
    assert_eq!(
        sample(
            &before,
            "switchboard_messages_received_total{type=\"offer\"}"
        ),
        Some(0.0)
    );
    scripted_session(addr).await;
    let text = scrape(metrics).await;

    for (kind, n) in [("offer", 1.0), ("answer", 1.0), ("ice_candidate", 2.0)] {
        let received = format!("switchboard_messages_received_total{{type=\"{kind}\"}}");
        assert_eq!(value(&text, &received), n, "{kind}");
        let delivered =
            format!("switchboard_messages_delivered_total{{type=\"{kind}\",scope=\"local\"}}");
        assert_eq!(value(&text, &delivered), n, "{kind}");
    }
    let resumes = |result: &str| {
        let series = format!("switchboard_resumes_total{{result=\"{result}\"}}");
        sample(&text, &series).unwrap_or(0.0)
    };
    assert_eq!(resumes("resumed"), 1.0);
    assert_eq!(resumes("invalid_token"), 1.0);
    let latency = "switchboard_relay_latency_seconds";
    assert_eq!(
        value(&text, &format!("{latency}_count{{scope=\"local\"}}")),
        4.0
    );
    let sum = value(&text, &format!("{latency}_sum{{scope=\"local\"}}"));
    assert!((0.0..1.0).contains(&sum), "{sum}");
    assert_eq!(
        value(
            &text,
            &format!("{latency}_bucket{{scope=\"local\",le=\"+Inf\"}}")
        ),
        4.0
    );
    let requests = |route: &str, method: &str, status: u16| {
        let series = format!(
            "switchboard_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
        );
        sample(&text, &series).unwrap_or(0.0)
    };
    assert_eq!(requests("/auth/register", "POST", 201), 2.0);
    assert_eq!(requests("/auth/login", "POST", 200), 2.0);
    assert_eq!(requests("/auth/login", "POST", 401), 1.0);
    assert_eq!(requests("/auth/refresh", "POST", 401), 4.0);
    assert_eq!(requests("/auth/refresh", "POST", 429), 1.0);
    assert_eq!(requests("/auth/turn-credentials", "GET", 200), 1.0);
    assert_eq!(requests("/ws/{room}", "GET", 101), 6.0);
    let duration =
        "switchboard_http_request_duration_seconds_count{method=\"POST\",route=\"/auth/login\"";
    assert_eq!(value(&text, &format!("{duration},status=\"200\"}}")), 2.0);
    assert_eq!(value(&text, &format!("{duration},status=\"401\"}}")), 1.0);
    let auth = |reason: &str| {
        sample(
            &text,
            &format!("switchboard_auth_failures_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(auth("login"), 1.0);
    assert_eq!(auth("invalid"), 1.0);
    assert_eq!(auth("expired"), 1.0);
    assert_eq!(auth("forbidden"), 1.0);
    assert_eq!(auth("resume_token"), 1.0);
    assert_eq!(
        value(&text, "switchboard_rate_limited_total{limit=\"auth_rate\"}"),
        1.0
    );
    assert_eq!(value(&text, "switchboard_connections_opened_total"), 6.0);
    assert_eq!(value(&text, "switchboard_turn_credentials_total"), 3.0);
    assert_eq!(value(&text, "switchboard_room_joins_total"), 2.0);
    assert!(value(&text, "switchboard_outbox_high_water") >= 1.0);
    // The store: two accounts created, each login looked its user up.
    let created = "switchboard_store_query_seconds_count{operation=\"create_user\"}";
    assert_eq!(value(&text, created) - value(&before, created), 2.0);
    assert!(
        value(
            &text,
            "switchboard_store_query_seconds_count{operation=\"reserve_login\"}"
        ) >= 3.0
    );
    assert_eq!(
        sample(
            &text,
            "switchboard_store_errors_total{operation=\"create_user\"}"
        ),
        None
    );
    // The high-water mark starts over at each scrape.
    let again = scrape(metrics).await;
    assert_eq!(value(&again, "switchboard_outbox_high_water"), 0.0);
    promtool_accepts(&text);
    assert_eq!(node.terminate(), Some(0));
}

/// `promtool check metrics` on a scrape, where promtool is installed (scripts/test installs it
/// and sets `SWITCHBOARD_TEST_PROMTOOL=1`, which makes it required).
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let required = std::env::var_os("SWITCHBOARD_TEST_PROMTOOL").is_some();
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(_) if !required => {
            eprintln!("promtool not installed: the scrape's lint is checked by scripts/test");
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_log_of_a_whole_session_names_each_refusal_once_and_holds_no_secret() {
    // Every line of every crate, up to `trace`.
    for (format, level) in [("text", "debug"), ("json", "debug"), ("text", "trace")] {
        let mut node = session_node(format, level);
        let addr = node.address();
        // Serving, with its database migrated (a starting node answers 503 `starting`).
        node.wait_for("demo accounts", WAIT);
        let secrets = scripted_session(addr).await;
        let log = node.terminate_and_collect();
        secrets.check(&log);
        assert!(
            !log.contains('\u{1b}'),
            "colour codes in a log that is not a terminal"
        );

        let lines: Vec<&str> = log.lines().collect();
        let with = |needles: &[&str]| -> Vec<&str> {
            lines
                .iter()
                .copied()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .collect()
        };
        let field = |name: &str, value: &str| match format {
            "json" => format!("\"{name}\":\"{value}\""),
            _ => format!("{name}={value}"),
        };
        let quoted = |name: &str, value: &str| match format {
            "json" => format!("\"{name}\":\"{value}\""),
            _ => format!("{name}=\"{value}\""),
        };
        let ip = field("ip", "127.0.0.1");
        let ws_route = field("route", "/ws/{room}");
        for reason in ["invalid", "expired", "forbidden", "resume_token"] {
            let refusal = with(&[&quoted("event", "auth_failure"), &quoted("reason", reason)]);
            assert_eq!(refusal.len(), 1, "{format} {reason}: {refusal:#?}\n{log}");
            assert!(refusal[0].contains("WARN") || refusal[0].contains("\"WARN\""));
            assert!(refusal[0].contains(&ip), "{}", refusal[0]);
            assert!(refusal[0].contains(&ws_route), "{}", refusal[0]);
        }
        let limited = with(&[
            &quoted("event", "rate_limited"),
            &quoted("limit", "auth_rate"),
        ]);
        assert_eq!(limited.len(), 1, "{format}: {limited:#?}");
        assert!(limited[0].contains(&ip) && limited[0].contains(&field("route", "/auth/refresh")));
        let failed = with(&[&field("event", "login_failed")]);
        assert_eq!(failed.len(), 1, "{format}: {failed:#?}");
        assert!(failed[0].contains(&ip) && failed[0].contains(&field("route", "/auth/login")));
        assert!(
            !failed[0].contains("alice"),
            "usernames stay out of the log"
        );
        // The connections' spans name the node and, once known, the client.
        assert!(
            lines.iter().any(|l| l.contains("b1") && l.contains("ws")),
            "{format}: no line of bob's connection span"
        );
        let id = lines
            .iter()
            .find(|l| l.contains("request_id"))
            .expect("request spans in the log");
        assert!(id.contains("request_id"), "{id}");
    }
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn signals_across_nodes_count_as_remote_with_their_latency_and_the_bus_batches() {
    let redis = std::env::var("SWITCHBOARD_TEST_REDIS_URL").expect("run scripts/test");
    let prefix = format!("obs{}", uuid::Uuid::new_v4().simple());
    let start = || {
        NodeProcess::start(&[
            ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
            ("SWITCHBOARD_REDIS_URL", &redis),
            ("SWITCHBOARD_REDIS_PREFIX", &prefix),
        ])
    };
    let (mut a, mut b) = (start(), start());
    let (addr_a, addr_b) = (a.address(), b.address());
    let (metrics_a, metrics_b) = (a.metrics_address(), b.metrics_address());
    until_ready_is(metrics_a, 200).await;
    until_ready_is(metrics_b, 200).await;
    let join = |addr: std::net::SocketAddr, user: &str, id: &str| {
        format!("ws://{addr}/ws/x?token={}&client_id={id}", token(user))
    };
    let mut alice = connect(&join(addr_a, "alice", "a1")).await.unwrap();
    alice.recv_type("auth_success").await;
    alice.recv_type("users_in_room").await;
    let mut bob = connect(&join(addr_b, "bob", "b1")).await.unwrap();
    bob.recv_type("auth_success").await;
    bob.recv_type("users_in_room").await;
    alice.recv_type("user_joined").await;
    alice
        .send(json!({"type":"offer","to":"b1","offer":{}}))
        .await;
    bob.recv_type("offer").await;
    bob.send(json!({"type":"answer","to":"a1","answer":{}}))
        .await;
    alice.recv_type("answer").await;

    let text_b = scrape(metrics_b).await;
    let remote = "switchboard_messages_delivered_total{type=\"offer\",scope=\"remote\"}";
    assert_eq!(value(&text_b, remote), 1.0);
    assert_eq!(
        value(
            &text_b,
            "switchboard_relay_latency_seconds_count{scope=\"remote\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text_b,
            "switchboard_messages_received_total{type=\"answer\"}"
        ),
        1.0
    );
    let text_a = scrape(metrics_a).await;
    assert_eq!(
        value(
            &text_a,
            "switchboard_messages_delivered_total{type=\"answer\",scope=\"remote\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text_a, remote), Some(0.0), "a delivered no offer");
    for text in [&text_a, &text_b] {
        let batches = value(text, "switchboard_bus_publish_seconds_count");
        assert!(batches >= 1.0, "{text}");
        assert_eq!(
            value(text, "switchboard_bus_batch_envelopes_count"),
            batches
        );
        assert_eq!(value(text, "switchboard_redis_reconnects_total"), 0.0);
    }
    promtool_accepts(&text_a);
    alice.close().await;
    bob.close().await;
    a.terminate();
    b.terminate();
}

/// `/readyz` of the metrics listener at `addr`: its status and body.
async fn readiness(addr: std::net::SocketAddr) -> (u16, Value) {
    let response = http_get(format!("http://{addr}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until readiness answers `status`; returns its body.
async fn until_ready_is(addr: std::net::SocketAddr, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        let (now, body) = readiness(addr).await;
        if now == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness stayed {now}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs redis-server and Postgres: run scripts/test"]
async fn readiness_flips_when_redis_or_postgres_stops_and_comes_back() {
    let mut redis = RedisProcess::start();
    // A Postgres of the test's own, so that pausing it pauses no other test.
    let postgres = Postgres::start(crate::cluster::free_port());
    let mut node = NodeProcess::start(&[
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_REDIS_URL", &redis.url()),
        ("SWITCHBOARD_DATABASE_URL", &postgres.url),
    ]);
    node.address();
    let metrics = node.metrics_address();
    until_ready_is(metrics, 200).await;
    assert_eq!(value(&scrape(metrics).await, "switchboard_ready"), 1.0);

    redis.stop();
    let body = until_ready_is(metrics, 503).await;
    assert_eq!(body["code"], "dependency_down", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        // The error itself, not the public port's "redis: unavailable".
        detail.contains("redis: ") && !detail.contains("redis: unavailable"),
        "{detail}"
    );
    let text = scrape(metrics).await;
    assert_eq!(value(&text, "switchboard_ready"), 0.0);
    redis.restart();
    until_ready_is(metrics, 200).await;
    let text = scrape(metrics).await;
    assert_eq!(value(&text, "switchboard_ready"), 1.0);
    assert!(
        value(&text, "switchboard_redis_reconnects_total") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "switchboard_redis_errors_total") >= 1.0,
        "{text}"
    );

    postgres.pause();
    let body = until_ready_is(metrics, 503).await;
    assert!(
        body["detail"].as_str().unwrap().contains("database"),
        "{body}"
    );
    assert_eq!(value(&scrape(metrics).await, "switchboard_ready"), 0.0);
    // The revocation watcher polls the store every few seconds: its queries fail meanwhile.
    let failed = "switchboard_store_errors_total{operation=\"revocations_after\"}";
    let deadline = tokio::time::Instant::now() + WAIT;
    while sample(&scrape(metrics).await, failed).unwrap_or(0.0) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed store query counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    postgres.resume();
    until_ready_is(metrics, 200).await;
    let text = scrape(metrics).await;
    assert_eq!(value(&text, "switchboard_ready"), 1.0);
    assert!(value(&text, failed) >= 1.0, "{text}");
    assert_eq!(node.terminate(), Some(0));
}
