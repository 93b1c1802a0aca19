//! Limits: a connection's message rate (a browser's negotiation passes, a flood is told once,
//! then dropped, then closed, and others' traffic goes on), a user's message rate and
//! connections, an address's connections, upgrades and requests, and the node's connection
//! cap; across nodes (in process and on Redis) where they are cluster-wide, and released when a
//! crashed node is reaped.

use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

#[tokio::test]
async fn a_negotiation_passes_and_a_flood_is_told_dropped_and_closed() {
    let config = switchboard::config::Config {
        msg_rate: 1,
        msg_burst: 60,
        ..test_config()
    };
    let node = spawn_node(config);
    let (mut alice, _) = Client::join(&node, "call", "alice", "a").await;
    let (mut bob, _) = Client::join(&node, "call", "bob", "b").await;
    alice.recv_type("user_joined").await;

    // A negotiation: an offer, an answer and 50 ICE candidates each way, at once.
    alice
        .send(json!({"type": "offer", "room": "call", "to": "b", "sdp": "v=0"}))
        .await;
    assert_eq!(bob.recv_type("offer").await["from"], "a");
    bob.send(json!({"type": "answer", "room": "call", "to": "a", "sdp": "v=0"}))
        .await;
    assert_eq!(alice.recv_type("answer").await["from"], "b");
    for n in 0..50 {
        let candidate = json!({"type": "ice_candidate", "room": "call", "to": "b", "candidate": n});
        alice.send(candidate).await;
    }
    for n in 0..50 {
        assert_eq!(bob.recv_type("ice_candidate").await["candidate"], n);
    }

    // A flood from a third client: the first message over the rate is answered, ...
    let (mut mallory, _) = Client::join(&node, "other", "mallory", "m").await;
    for _ in 0..60 {
        mallory.send(json!({"type": "ping"})).await;
    }
    for _ in 0..60 {
        mallory.recv_type("pong").await;
    }
    mallory.send(json!({"type": "ping"})).await;
    let refused = mallory.expect_error("rate_limited").await;
    let wait = refused["retry_after_ms"].as_u64().unwrap();
    assert!((1..=1000).contains(&wait), "{refused}");
    // ... while alice and bob go on undisturbed ...
    alice
        .send(json!({"type": "ice_candidate", "room": "call", "to": "b", "candidate": "late"}))
        .await;
    assert_eq!(bob.recv_type("ice_candidate").await["candidate"], "late");
    // ... and a flood that goes on is dropped without answers, then closed with 1008.
    for _ in 0..80 {
        mallory.send(json!({"type": "ping"})).await;
    }
    let (frames, code) = mallory.drain_until_close().await;
    assert_eq!(code, 1008, "{frames:?}");
    assert!(frames.iter().all(|f| f["type"] != "pong"), "{frames:?}");
    bob.expect_quiet().await;
}

#[tokio::test]
async fn a_full_node_refuses_upgrades_with_503_and_is_not_ready() {
    let config = switchboard::config::Config {
        max_connections: 2,
        ..test_config()
    };
    let node = spawn_node(config);
    let first = Client::user(&node, "alice", "a").await;
    let _second = Client::user(&node, "bob", "b").await;
    let url = node.ws(&format!("/ws?token={}", token("carol")));
    let refused = connect(&url)
        .await
        .err()
        .expect("a third upgrade is refused");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.body["code"], "node_full");
    let ready = http_get(node.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["code"], "node_full");

    first.close().await;
    // The slot comes back once the closed connection has ended.
    let deadline = tokio::time::Instant::now() + WAIT;
    let _third = loop {
        match connect(&url).await {
            Ok(mut client) => {
                client.recv_type("auth_success").await;
                break client;
            }
            Err(refused) => assert_eq!(refused.status, 503),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(http_get(node.http("/readyz")).await.unwrap().status(), 503);
}

/// POSTs a login for `name` from this machine, with an `X-Forwarded-For` when given.
async fn login(node: &TestNode, name: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = http_client()
        .post(node.http("/auth/login"))
        .json(&json!({"username": name, "password": "wrong-password"}));
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.unwrap()
}

/// Asserts a 429 `rate_limited` answer; returns its `retry_after` seconds.
async fn expect_429(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 429);
    let header: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert_eq!(body["retry_after"], header);
    assert!(header >= 1);
    header
}

fn limited_config() -> switchboard::config::Config {
    switchboard::config::Config {
        auth_rate: 6,
        auth_burst: 3,
        ip_upgrade_rate: 6,
        ip_upgrade_burst: 2,
        lockout_threshold: 0,
        ..test_config()
    }
}

#[tokio::test]
async fn auth_requests_are_limited_per_address_and_forwarding_headers_only_count_from_proxies() {
    let node = spawn_node(limited_config());
    for _ in 0..3 {
        assert_eq!(login(&node, "alice", None).await.status(), 401);
    }
    let wait = expect_429(login(&node, "alice", None).await).await;
    assert!(wait <= 10, "{wait}");
    // Every POST under /auth counts; another name from the same address does not help.
    expect_429(login(&node, "bob", None).await).await;
    // A direct client naming another address is not believed.
    expect_429(login(&node, "alice", Some("198.51.100.7")).await).await;

    // Behind a trusted proxy (this machine), each forwarded address has its own budget.
    let proxied = spawn_node(switchboard::config::Config {
        trusted_proxies: vec!["127.0.0.0/8".into()],
        ..limited_config()
    });
    for client in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..3 {
            let response = login(&proxied, "alice", Some(client)).await;
            assert_eq!(response.status(), 401, "{client}");
        }
        expect_429(login(&proxied, "alice", Some(client)).await).await;
    }
    // A client cannot pick a budget by putting an address in front: the proxy's own entry
    // (the nearest untrusted hop) counts.
    let spoofed = login(&proxied, "alice", Some("203.0.113.5, 198.51.100.1")).await;
    expect_429(spoofed).await;
}

#[tokio::test]
async fn upgrades_are_limited_per_address_and_the_budget_comes_back() {
    let node = spawn_node(switchboard::config::Config {
        ip_upgrade_rate: 600,
        ip_upgrade_burst: 2,
        ..test_config()
    });
    let _a = Client::user(&node, "alice", "a").await;
    let _b = Client::user(&node, "bob", "b").await;
    let url = node.ws(&format!("/ws?token={}", token("carol")));
    let refused = connect(&url)
        .await
        .err()
        .expect("the third upgrade is refused");
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (429, Some("rate_limited"))
    );
    // 600 a minute: one every 100 ms comes back.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match connect(&url).await {
            Ok(mut client) => {
                client.recv_type("auth_success").await;
                break;
            }
            Err(refused) => assert_eq!(refused.status, 429),
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn address_limits_hold_across_nodes() {
    use crate::cluster::{Redis, redis_config};
    for redis in [Redis::Standalone, Redis::Cluster] {
        let config = switchboard::config::Config {
            auth_rate: 6,
            auth_burst: 3,
            ip_upgrade_rate: 6,
            ip_upgrade_burst: 2,
            lockout_threshold: 0,
            ..redis_config(&redis.url())
        };
        let nodes: Vec<TestNode> = (0..2)
            .map(|_| spawn_node_on(config.clone(), Backing::FromConfig))
            .collect();
        let (a, b) = (&nodes[0], &nodes[1]);
        // The burst of 3 spread over two nodes, then both refuse.
        assert_eq!(login(a, "alice", None).await.status(), 401, "{redis:?}");
        assert_eq!(login(b, "alice", None).await.status(), 401);
        assert_eq!(login(a, "alice", None).await.status(), 401);
        expect_429(login(b, "alice", None).await).await;
        expect_429(login(a, "alice", None).await).await;
        // Upgrades: one on each node, then the third is refused wherever it goes.
        let _x = Client::user(a, "x", "x").await;
        let _y = Client::user(b, "y", "y").await;
        for node in [a, b] {
            let url = node.ws(&format!("/ws?token={}", token("z")));
            let refused = connect(&url).await.err().expect("refused");
            assert_eq!(refused.status, 429, "{redis:?}");
        }
    }
}

#[tokio::test]
async fn upgrades_from_pages_of_other_origins_are_refused() {
    let node = spawn_node(switchboard::config::Config {
        allowed_origins: vec!["https://app.example".into()],
        ..test_config()
    });
    let upgrade = |origin: Option<&'static str>| {
        let url = node.ws(&format!("/ws?token={}", token("alice")));
        async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = url.into_client_request().unwrap();
            if let Some(origin) = origin {
                request
                    .headers_mut()
                    .insert("origin", origin.parse().unwrap());
            }
            connect_request(request).await
        }
    };
    let refused = upgrade(Some("https://evil.example"))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    for origin in [
        Some("https://app.example"),
        Some("https://APP.example"),
        None,
    ] {
        let mut client = upgrade(origin).await.expect("allowed");
        client.recv_type("auth_success").await;
    }
}

#[tokio::test]
async fn frames_before_authentication_and_binary_frames_count_too() {
    let node = spawn_node(switchboard::config::Config {
        msg_rate: 1,
        msg_burst: 10,
        ..test_config()
    });
    let mut client = connect(&node.ws("/ws")).await.unwrap();
    client.recv_type("auth_required").await;
    for _ in 0..40 {
        client
            .send_raw(tokio_tungstenite::tungstenite::Message::Binary(
                vec![0u8; 4].into(),
            ))
            .await;
    }
    let (frames, code) = client.drain_until_close().await;
    assert_eq!(code, 1008, "{frames:?}");
    let codes: Vec<&str> = frames.iter().filter_map(|f| f["code"].as_str()).collect();
    // The burst is answered, then one rate_limited, then nothing until the close.
    assert_eq!(codes.len(), 11, "{codes:?}");
    assert_eq!(codes[10], "rate_limited");
}

#[tokio::test]
async fn failed_logins_lock_an_address_but_a_name_cannot_lock_one() {
    let add_alice = |node: &TestNode| {
        let store = node.state.store.clone();
        async move {
            switchboard::accounts::add_user(&store, "alice", "password-1", None, "user", 1)
                .await
                .unwrap();
        }
    };
    let alice_logs_in = |node: &TestNode| {
        let request = http_client()
            .post(node.http("/auth/login"))
            .json(&json!({"username": "alice", "password": "password-1"}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Logins as names shaped like an address's key are not counted as names: they cannot lock
    // the address (here 127.0.0.1) out.
    let node = spawn_node(switchboard::config::Config {
        lockout_threshold: 2,
        lockout_address_threshold: 100,
        ..test_config()
    });
    add_alice(&node).await;
    for name in [
        "ip:127.0.0.1",
        "IP:127.0.0.1",
        "ip:127.0.0.1",
        "ip:127.0.0.1",
    ] {
        assert_eq!(login(&node, name, None).await.status(), 401, "{name}");
    }
    assert_eq!(alice_logs_in(&node).await, 200);

    // Failures on several names from one address lock the address out of all of them.
    let node = spawn_node(switchboard::config::Config {
        lockout_address_threshold: 3,
        ..test_config()
    });
    add_alice(&node).await;
    for name in ["bob", "carol"] {
        assert_eq!(login(&node, name, None).await.status(), 401);
    }
    let response = login(&node, "dave", None).await;
    assert_eq!(response.status(), 429);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "address_locked");
    assert_eq!(alice_logs_in(&node).await, 429);
}

/// Connects `user` to `node` with a fresh client id; `Err(code, close)` when refused.
async fn user_connects(node: &TestNode, user: &str) -> Result<Client, (String, u16)> {
    let mut client = connect(&node.ws(&format!("/ws?token={}", token(user))))
        .await
        .expect("upgrade accepted");
    let first = client.recv().await;
    if first["type"] == "auth_success" {
        return Ok(client);
    }
    let code = client.expect_close().await;
    Err((first["code"].as_str().unwrap_or_default().to_owned(), code))
}

#[tokio::test]
async fn a_user_holds_at_most_user_connections_across_nodes() {
    let config = switchboard::config::Config {
        user_connections: 2,
        ..test_config()
    };
    let nodes = spawn_memory_cluster(2, &config);
    let first = user_connects(&nodes[0], "alice").await.unwrap();
    let _second = user_connects(&nodes[1], "alice").await.unwrap();
    for node in &nodes {
        let refused = user_connects(node, "alice")
            .await
            .err()
            .expect("a third is refused");
        assert_eq!(refused, ("rate_limited".to_owned(), 1013));
    }
    // Other users are not affected, and a closed connection frees its place.
    let _bob = user_connects(&nodes[0], "bob").await.unwrap();
    first.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let _third = loop {
        match user_connects(&nodes[0], "alice").await {
            Ok(client) => break client,
            Err(refused) => assert_eq!(refused.0, "rate_limited"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back"
        );
    };
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_crashed_nodes_connections_stop_counting_when_it_is_reaped() {
    use crate::cluster::{Redis, redis_config};
    let mut config = switchboard::config::Config {
        user_connections: 2,
        ..redis_config(&Redis::Standalone.url())
    };
    config.lease_ttl = std::time::Duration::from_secs(1);
    // Connections that cannot resume: a resumable session is taken over by the survivor and
    // counts, as a parked one does, until it is resumed or its window ends.
    config.resume_window = std::time::Duration::ZERO;
    let mut nodes: Vec<TestNode> = (0..2)
        .map(|_| spawn_node_on(config.clone(), Backing::FromConfig))
        .collect();
    let _one = user_connects(&nodes[1], "alice").await.unwrap();
    let _two = user_connects(&nodes[1], "alice").await.unwrap();
    assert!(user_connects(&nodes[0], "alice").await.is_err());
    nodes.remove(1).crash();
    // Within two lease TTLs the survivor reaps the dead node, and alice's places come back.
    let deadline = tokio::time::Instant::now() + 4 * config.lease_ttl + WAIT;
    loop {
        if user_connects(&nodes[0], "alice").await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead node's connections still count"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_oauth2_token_endpoint_answers_limits_in_oauth2s_shape() {
    let node = spawn_node(switchboard::config::Config {
        auth_rate: 6,
        auth_burst: 1,
        ..test_config()
    });
    let grant = || {
        http_client()
            .post(node.http("/auth/token"))
            .form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "x"),
            ])
            .send()
    };
    assert_eq!(grant().await.unwrap().status(), 400, "invalid_grant first");
    let response = grant().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert_eq!(body["code"], "rate_limited");
    assert!(body["retry_after"].as_u64().unwrap() >= 1);
}

/// What `node`'s metrics count as refused by `limit`.
async fn refusals(node: &TestNode, limit: &str) -> f64 {
    metric(
        node,
        &format!("switchboard_rate_limited_total{{limit=\"{limit}\"}}"),
    )
    .await
}

/// Opens a WebSocket to `node` without a token, from `forwarded_for` (behind a trusted proxy);
/// waits for `auth_required`.
async fn open_from(node: &TestNode, forwarded_for: &str) -> Result<Client, Refused> {
    let mut request = node.ws("/ws").into_client_request().unwrap();
    let header = forwarded_for.parse().unwrap();
    request.headers_mut().insert("x-forwarded-for", header);
    let mut client = connect_request(request).await?;
    client.recv_type("auth_required").await;
    Ok(client)
}

/// Asserts that `forwarded_for` is refused on every node: 429 `rate_limited`.
async fn refused_everywhere(nodes: &[TestNode], forwarded_for: &str) {
    for node in nodes {
        let refused = open_from(node, forwarded_for)
            .await
            .err()
            .expect("the address is at its cap");
        assert_eq!(refused.status, 429, "{:?}", refused.body);
        assert_eq!(refused.body["code"], "rate_limited");
        assert!(refused.body["retry_after"].as_u64() >= Some(1));
        assert!(
            refused.body["detail"]
                .as_str()
                .unwrap()
                .contains("3 connections"),
            "{}",
            refused.body
        );
    }
}

/// Opens from `forwarded_for` on `node` until it is admitted (a place came back).
async fn admitted_again(
    node: &TestNode,
    forwarded_for: &str,
    within: std::time::Duration,
) -> Client {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match open_from(node, forwarded_for).await {
            Ok(client) => return client,
            Err(refused) => assert_eq!(refused.status, 429),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn address_capped(config: switchboard::config::Config) -> switchboard::config::Config {
    switchboard::config::Config {
        ip_connections: 3,
        trusted_proxies: vec!["127.0.0.0/8".into()],
        ..config
    }
}

/// With `ip_connections` 3 on every node of `nodes`: connections from one address count
/// wherever they are, authenticated or not; other addresses are not affected; a closed one
/// frees its place on every node.
async fn address_connections_hold_across(nodes: &[TestNode]) {
    const ADDRESS: &str = "198.51.100.20";
    let (a, b) = (&nodes[0], &nodes[1]);
    let first = open_from(a, ADDRESS).await.unwrap();
    let _second = open_from(a, ADDRESS).await.unwrap();
    let mut third = open_from(b, ADDRESS).await.unwrap();
    third
        .send(json!({"type": "auth_token", "token": token("alice")}))
        .await;
    third.recv_type("auth_success").await;
    refused_everywhere(nodes, ADDRESS).await;
    let presence = &a.state.hub.presence;
    assert_eq!(presence.address_connections(ADDRESS).await.unwrap(), 3);
    // Another address has its own cap, also behind the same proxy.
    let _other = open_from(b, "198.51.100.21").await.unwrap();
    first.close().await;
    let _back = admitted_again(b, ADDRESS, WAIT).await;
    refused_everywhere(nodes, ADDRESS).await;
    assert_eq!(presence.address_connections(ADDRESS).await.unwrap(), 3);
}

#[tokio::test]
async fn an_address_holds_at_most_ip_connections_across_nodes() {
    let nodes = spawn_memory_cluster(2, &address_capped(test_config()));
    address_connections_hold_across(&nodes).await;
    assert!(refusals(&nodes[0], "ip_connections").await >= 2.0);
    // Without a trusted proxy, a client naming another address is not believed: this
    // machine's own connections count.
    let direct = spawn_node(switchboard::config::Config {
        ip_connections: 1,
        ..test_config()
    });
    let _one = open_from(&direct, "198.51.100.30").await.unwrap();
    let spoofed = open_from(&direct, "198.51.100.31")
        .await
        .err()
        .expect("refused");
    assert_eq!(spoofed.status, 429);
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn address_connections_hold_across_redis_nodes_and_a_crashed_nodes_are_released() {
    use crate::cluster::{Redis, redis_config};
    const ADDRESS: &str = "2001:db8:7:7::1";
    for redis in [Redis::Standalone, Redis::Cluster] {
        let mut config = address_capped(redis_config(&redis.url()));
        config.lease_ttl = std::time::Duration::from_secs(1);
        let mut nodes: Vec<TestNode> = (0..3)
            .map(|_| spawn_node_on(config.clone(), Backing::FromConfig))
            .collect();
        address_connections_hold_across(&nodes[..2]).await;
        // Three from one /64 on the node that crashes: refused elsewhere until it is reaped.
        let mut held = Vec::new();
        for host in 1..=3 {
            let address = format!("2001:db8:7:7::{host}");
            held.push(open_from(&nodes[2], &address).await.unwrap());
        }
        refused_everywhere(&nodes[..2], ADDRESS).await;
        nodes.remove(2).crash();
        let within = 4 * config.lease_ttl + WAIT;
        let _back = admitted_again(&nodes[0], ADDRESS, within).await;
        let presence = &nodes[0].state.hub.presence;
        let counted = presence.address_connections("2001:db8:7:7::/64").await;
        assert_eq!(
            counted.unwrap(),
            1,
            "{redis:?}: the dead node's counts are gone"
        );
        drop(held);
    }
}

/// Sends pings on `client` one at a time until one is refused; returns how many passed and
/// the refusal.
async fn pings_until_refused(
    client: &mut Client,
    at_most: usize,
) -> (usize, Option<serde_json::Value>) {
    for passed in 0..at_most {
        client.send(json!({"type": "ping"})).await;
        let reply = client.recv().await;
        if reply["type"] != "pong" {
            return (passed, Some(reply));
        }
    }
    (at_most, None)
}

fn user_rate_config(config: switchboard::config::Config) -> switchboard::config::Config {
    switchboard::config::Config {
        user_msg_rate: 1,
        user_msg_burst: 20,
        ..config
    }
}

/// With a user rate of 1 a second and a burst of 20: two connections of one user (on `a` and
/// `b`) share the burst; another user has its own.
async fn user_rate_holds_across(a: &TestNode, b: &TestNode) {
    let mut first = Client::user(a, "alice", "alice-1").await;
    let mut second = Client::user(b, "alice", "alice-2").await;
    let mut bob = Client::user(b, "bob", "bob-1").await;
    assert_eq!(pings_until_refused(&mut first, 15).await, (15, None));
    let (passed, refusal) = pings_until_refused(&mut second, 15).await;
    // 20 at once, and one more a second: the test runs well within two.
    assert!((5..=6).contains(&passed), "{passed} passed");
    let refusal = refusal.expect("refused");
    assert_eq!(refusal["code"], "rate_limited", "{refusal}");
    let wait = refusal["retry_after_ms"].as_u64().unwrap();
    assert!((1..=1000).contains(&wait), "{refusal}");
    assert_eq!(pings_until_refused(&mut bob, 10).await, (10, None));
    // The bucket refills at its rate: after the wait it was told, the user passes again.
    tokio::time::sleep(std::time::Duration::from_millis(wait + 1)).await;
    assert_eq!(pings_until_refused(&mut second, 1).await, (1, None));
    // The refused user's other connection is refused too.
    let (passed, refusal) = pings_until_refused(&mut first, 3).await;
    assert!(passed <= 1, "{passed} passed");
    assert_eq!(refusal.expect("refused")["code"], "rate_limited");
}

#[tokio::test]
async fn a_users_connections_share_its_message_rate() {
    let node = spawn_node(user_rate_config(test_config()));
    user_rate_holds_across(&node, &node).await;
    assert!(refusals(&node, "user_msg_rate").await >= 2.0);
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_users_message_rate_holds_across_redis_nodes() {
    use crate::cluster::{Redis, redis_config};
    for redis in [Redis::Standalone, Redis::Cluster] {
        let config = user_rate_config(redis_config(&redis.url()));
        let nodes = crate::cluster::spawn_cluster(2, &config);
        user_rate_holds_across(&nodes[0], &nodes[1]).await;
    }
}

#[tokio::test]
async fn every_route_under_auth_and_every_post_is_limited_per_endpoint() {
    let node = spawn_node(switchboard::config::Config {
        auth_rate: 1,
        auth_burst: 1,
        ..test_config()
    });
    let document: serde_json::Value = http_get(node.http("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut limited = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if method != "post" && !path.starts_with("/auth/") {
                continue;
            }
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let request = || {
                http_client()
                    .request(method.clone(), node.http(path))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
            };
            // Each endpoint has its own budget of one: the first passes the limit (whatever
            // it answers then), the second is refused.
            let first = request().await.unwrap();
            assert_ne!(first.status(), 429, "{method} {path}");
            let second = request().await.unwrap();
            assert_eq!(second.status(), 429, "{method} {path}");
            assert!(
                second.headers().contains_key("retry-after"),
                "{method} {path}"
            );
            let body: serde_json::Value = second.json().await.unwrap();
            assert_eq!(body["code"], "rate_limited", "{method} {path}: {body}");
            limited.push(format!("{method} {path}"));
        }
    }
    assert!(limited.len() >= 7, "{limited:?}");
    assert!(refusals(&node, "auth_rate").await >= limited.len() as f64);
}

#[tokio::test]
async fn sockets_waiting_to_authenticate_are_capped_per_node_and_per_address() {
    let node = spawn_node(switchboard::config::Config {
        max_unauthenticated: 3,
        ip_unauthenticated: 2,
        trusted_proxies: vec!["127.0.0.0/8".into()],
        ..test_config()
    });
    let (x, y, z) = ("198.51.100.1", "198.51.100.2", "198.51.100.3");
    let mut first = open_from(&node, x).await.unwrap();
    let _second = open_from(&node, x).await.unwrap();
    let refused = open_from(&node, x)
        .await
        .err()
        .expect("the address is at its cap");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["code"], "rate_limited");
    let _third = open_from(&node, y).await.unwrap();
    let refused = open_from(&node, z)
        .await
        .err()
        .expect("the node is at its cap");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.body["code"], "node_full");
    assert!(refusals(&node, "max_unauthenticated").await >= 1.0);
    assert!(refusals(&node, "ip_unauthenticated").await >= 1.0);
    // A token with the upgrade does not wait: it is not capped here.
    let mut request = node
        .ws(&format!("/ws?token={}", token("zed")))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", z.parse().unwrap());
    let mut with_token = connect_request(request).await.unwrap();
    with_token.recv_type("auth_success").await;
    // Once one authenticates, its place comes back.
    first
        .send(json!({"type": "auth_token", "token": token("alice")}))
        .await;
    first.recv_type("auth_success").await;
    let _again = admitted_again(&node, x, WAIT).await;
}
