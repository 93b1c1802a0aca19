//! Failures: a node that dies without cleaning up, a node that is reaped while it lives, and
//! Redis going away and coming back.

use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike, KeysInterface, SortedSetsInterface};
use fred::prelude::Builder;
use fred::types::SetOptions;
use fred::types::scan::Scanner;
use futures_util::TryStreamExt;
use serde_json::{Value, json};
use switchboard::config::Config;
use switchboard::protocol::NodeId;
use switchboard::redis::{Keys, url};

use super::{Redis, RedisProcess, get, member_ids, poll, redis_config, spawn_cluster};
use crate::support::*;

on_both_redis!(
    a_crashed_nodes_members_are_reaped_within_two_lease_ttls,
    a_node_reaped_while_cut_off_sends_its_clients_to_rejoin,
    a_node_whose_bus_task_ends_drains_and_fails,
);

async fn a_node_whose_bus_task_ends_drains_and_fails(redis: Redis) {
    let node = spawn_node_on(redis_config(&redis.url()), Backing::FromConfig);
    let mut names = node.state.supervisor.names();
    names.sort();
    assert_eq!(
        names,
        [
            "bus-inbound",
            "bus-publisher",
            "bus-resubscriber",
            "hub-inbound",
            "hub-returns",
            "presence-reaper"
        ]
    );
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
    assert!(node.state.supervisor.abort("bus-inbound"));
    let (frames, code) = a.drain_until_close().await;
    assert_eq!(
        (frames, code),
        (vec![json!({"type":"reconnect","reason":"shutdown"})], 1012)
    );
    let ended = tokio::task::spawn_blocking(move || node.wait_stopped())
        .await
        .unwrap();
    assert_eq!(
        ended,
        Err("essential task bus-inbound was cancelled".to_owned())
    );
}

async fn a_crashed_nodes_members_are_reaped_within_two_lease_ttls(redis: Redis) {
    let mut config = redis_config(&redis.url());
    config.lease_ttl = Duration::from_secs(1);
    // Sessions that cannot resume: resumable ones are taken over (`resume_crash.rs`).
    config.resume_window = Duration::ZERO;
    let mut nodes = spawn_cluster(3, &config);
    let (mut a, _) = Client::join(&nodes[0], "crash", "alice", "a1").await;
    let (_b, _) = Client::join(&nodes[1], "crash", "bob", "b1").await;
    let (mut c, _) = Client::join(&nodes[2], "crash", "carol", "c1").await;
    let _bob_phone = Client::user(&nodes[1], "bob", "b2").await;
    a.recv_type("user_joined").await;
    a.recv_type("user_joined").await;

    let reaps_before = reaps(&nodes[0]).await;
    let started = Instant::now();
    nodes.remove(1).crash();
    for client in [&mut a, &mut c] {
        assert_eq!(
            client.recv_type("user_left").await,
            json!({"type":"user_left","room":"crash",
            "client_id":"b1","username":"name-bob","user_id":"bob"})
        );
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{redis:?}: user_left for the crashed node's member after {elapsed:?} (lease_ttl 1 s)"
    );
    assert!(elapsed <= 2 * config.lease_ttl, "reaped after {elapsed:?}");
    // Counted by the node that reaped it (the test process's nodes share one recorder).
    assert!(reaps(&nodes[0]).await > reaps_before);

    // No ghost remains, and nothing is announced twice.
    let (_, body) = get(&nodes[0], "/api/rooms/crash", "alice").await;
    assert_eq!(member_ids(&body), ["a1", "c1"]);
    let (_, body) = get(&nodes[1], "/api/users/bob/presence", "bob").await;
    assert_eq!(body, json!({"user_id":"bob","online":false,"devices":0}));
    a.send(json!({"type":"webrtc_offer","target_user_id":"bob","data":{}}))
        .await;
    a.expect_error("user_offline").await;
    c.expect_quiet().await;
}

/// `switchboard_presence_reaps_total{result="ok"}` as `node`'s metrics listener shows it.
async fn reaps(node: &TestNode) -> f64 {
    metric(node, "switchboard_presence_reaps_total{result=\"ok\"}").await
}

/// Moves `node`'s lease into the past in Redis, as a cut-off from Redis (or a stall) longer
/// than the lease does to a node that stays up.
async fn expire_lease(config: &Config, node: &NodeId) {
    let target = url::parse(config.redis.url.as_ref().unwrap().expose()).unwrap();
    let client = Builder::from_config(target.config).build().unwrap();
    client.init().await.unwrap();
    let leases = Keys::new(&config.redis.prefix).leases();
    let all: Vec<String> = client
        .zrange(&leases, 0, -1, None, false, None, false)
        .await
        .unwrap();
    for incarnation in all.iter().filter(|i| i.starts_with(&format!("{node}/"))) {
        let _: i64 = client
            .zadd(
                &leases,
                Some(SetOptions::XX),
                None,
                false,
                false,
                (1.0, incarnation.clone()),
            )
            .await
            .unwrap();
    }
    client.quit().await.unwrap();
}

async fn a_node_reaped_while_cut_off_sends_its_clients_to_rejoin(redis: Redis) {
    // Alice's node renews every 2 s, bob's looks for dead nodes every 0.5 s.
    let mut config = redis_config(&redis.url());
    config.lease_ttl = Duration::from_secs(4);
    // Sessions that cannot resume: a resumable one is taken over by the reaper (see
    // `resume_crash.rs`), and replaced when its client connects afresh.
    config.resume_window = Duration::ZERO;
    let mut reaper = config.clone();
    reaper.lease_ttl = Duration::from_secs(1);
    let nodes = [
        spawn_node_on(config.clone(), Backing::FromConfig),
        spawn_node_on(reaper.clone(), Backing::FromConfig),
    ];
    let (mut a, _) = Client::join(&nodes[0], "cut", "alice", "a1").await;
    let (mut b, _) = Client::join(&nodes[1], "cut", "bob", "b1").await;
    a.recv_type("user_joined").await;

    // Alice's node misses its lease. When it renews before bob's node looks, it was only late
    // and nothing happens; try again until bob's node reaps it and bob hears alice left.
    let left = json!({"type":"user_left","room":"cut","client_id":"a1",
                      "username":"name-alice","user_id":"alice"});
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(tries <= 20, "alice's node was never reaped");
        expire_lease(&config, &nodes[0].node_id()).await;
        if let Some(got) = b.try_recv(3 * reaper.lease_ttl / 2).await {
            assert_eq!(got, left);
            break;
        }
    }

    // Her node learns it was reaped: she is told to reconnect, then closed with 1012.
    assert_eq!(
        a.recv().await,
        json!({"type":"reconnect","reason":"node_evicted"})
    );
    assert_eq!(a.expect_close().await, 1012);

    // Reconnected (to the same node), she is in the room again, and bob hears it.
    let (mut a, users) = Client::join(&nodes[0], "cut", "alice", "a1").await;
    assert_eq!(users["users"][0]["client_id"], "b1");
    assert_eq!(b.recv_type("user_joined").await["client_id"], "a1");
    b.send(json!({"type":"offer","offer":{"sdp":"x"},"to":"a1"}))
        .await;
    assert_eq!(a.recv_type("offer").await["from"], "b1");
    a.send(json!({"type":"answer","answer":{"sdp":"y"},"to":"b1"}))
        .await;
    assert_eq!(b.recv_type("answer").await["from"], "a1");
    let (_, body) = get(&nodes[1], "/api/rooms/cut", "bob").await;
    assert_eq!(member_ids(&body), ["b1", "a1"]);
    b.expect_quiet().await;
}

/// Deletes every key of `config`'s prefix on a standalone Redis, as a restart without
/// persistence does.
async fn forget_everything(config: &Config) {
    let target = url::parse(config.redis.url.as_ref().unwrap().expose()).unwrap();
    let client = Builder::from_config(target.config).build().unwrap();
    client.init().await.unwrap();
    let mut scan = client.scan(format!("{{{}:*", config.redis.prefix), Some(1000), None);
    while let Some(mut page) = scan.try_next().await.unwrap() {
        if let Some(keys) = page.take_results() {
            let _: i64 = client.del(keys).await.unwrap();
        }
    }
    client.quit().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_client_id_taken_while_redis_lost_it_closes_the_older_connection() {
    let mut config = redis_config(&Redis::Standalone.url());
    config.lease_ttl = Duration::from_secs(4);
    let nodes = spawn_cluster(2, &config);
    let (mut old, _) = Client::join(&nodes[0], "lost", "alice", "a1").await;
    let (mut bob, _) = Client::join(&nodes[1], "lost", "bob", "b1").await;
    old.recv_type("user_joined").await;

    // Redis loses everything, and alice's other device takes her client id on bob's node,
    // most likely before her old node writes its members back (if not, the takeover is an
    // ordinary one). Either way the old connection goes, as replaced.
    forget_everything(&config).await;
    let (mut new, _) = Client::join(&nodes[1], "lost", "alice", "a1").await;
    assert_eq!(old.expect_close().await, 4001);
    loop {
        let got = bob.recv().await;
        if got["type"] == "user_joined" {
            assert_eq!(got["client_id"], "a1");
            break;
        }
        assert_eq!(got["type"], "user_left", "{got}");
    }
    new.send(json!({"type":"signal","to":"b1","data":{}})).await;
    assert_eq!(bob.recv_type("signal").await["from"], "a1");
    // Presence agrees once both nodes wrote their members back.
    poll(&nodes[0], "/api/rooms/lost", "bob", WAIT, |_, body| {
        member_ids(body) == ["a1", "b1"] || member_ids(body) == ["b1", "a1"]
    })
    .await;
    let (_, body) = get(&nodes[0], "/api/users/alice/presence", "alice").await;
    assert_eq!(body["devices"], 1);
}

/// Sends broadcasts from `from` until `to` receives one (delivery recovered); each round waits
/// for `from`'s pong, so error frames of failed rounds are consumed.
async fn until_delivered(from: &mut Client, to: &mut Client) {
    let deadline = Instant::now() + 2 * WAIT;
    for n in 0.. {
        from.send(json!({"type":"signal","data":{"round":n}})).await;
        from.send(json!({"type":"ping"})).await;
        while from.recv().await["type"] != "pong" {}
        if let Some(got) = to.try_recv(Duration::from_millis(300)).await {
            assert_eq!(got["type"], "signal", "{got}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cross-node delivery did not recover"
        );
    }
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_redis_restart_keeps_local_delivery_and_recovers_without_reconnecting() {
    let mut redis = RedisProcess::start();
    let mut config = redis_config(&redis.url());
    config.lease_ttl = Duration::from_secs(1);
    let nodes = spawn_cluster(2, &config);
    let (mut a, _) = Client::join(&nodes[0], "keep", "alice", "a1").await;
    let (mut a2, _) = Client::join(&nodes[0], "keep", "anna", "a2").await;
    let (mut b, _) = Client::join(&nodes[1], "keep", "bob", "b1").await;
    a.recv_type("user_joined").await;
    a.recv_type("user_joined").await;
    a2.recv_type("user_joined").await;

    redis.stop();
    for node in &nodes {
        poll(node, "/readyz", "alice", WAIT, |status, _| status == 503).await;
        for path in ["/health", "/health/"] {
            let (status, health) = get(node, path, "alice").await;
            assert_eq!(
                (status, health["status"].as_str()),
                (503, Some("unhealthy"))
            );
            for service in ["bus", "presence", "redis"] {
                let entry = &health["services"][service];
                assert_eq!(entry["status"], "down", "{service}: {health}");
                // What went wrong is for admins: others learn that it is down.
                assert_eq!(entry["error"], "unavailable", "{service}: {health}");
            }
            let admin = token_with("root", |c| c.role = Some("admin".into()));
            let detailed: Value = http_client()
                .get(node.http(path))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let error = detailed["services"]["redis"]["error"].as_str().unwrap();
            assert_ne!(error, "unavailable", "{detailed}");
            assert_eq!(health["redis"], health["services"]["redis"]);
            assert_eq!(health["services"]["tasks"]["status"], "ok");
            let errors = health["errors"].as_array().unwrap();
            assert!(
                errors
                    .iter()
                    .any(|e| e.as_str().unwrap().starts_with("redis: ")),
                "{health}"
            );
        }
    }
    // Local delivery goes on; the cross-node half of a broadcast says `unavailable`.
    a.send(json!({"type":"signal","data":{"n":1}})).await;
    assert_eq!(a2.recv_type("signal").await["data"]["n"], 1);
    a.expect_error("unavailable").await;
    a.send(json!({"type":"signal","to":"a2","data":{"n":2}}))
        .await;
    assert_eq!(a2.recv_type("signal").await["data"]["n"], 2);
    a.expect_quiet().await;

    let restarted = Instant::now();
    redis.restart();
    for node in &nodes {
        poll(node, "/readyz", "alice", WAIT, |status, _| status == 200).await;
    }
    // Presence comes back from the nodes' mirrors: every member with a live socket.
    let body = poll(&nodes[1], "/api/rooms/keep", "bob", WAIT, |_, body| {
        body["count"] == 3
    })
    .await;
    assert_eq!(member_ids(&body), ["a1", "a2", "b1"]);
    poll(
        &nodes[0],
        "/api/users/bob/presence",
        "bob",
        WAIT,
        |_, body| body["devices"] == 1,
    )
    .await;
    until_delivered(&mut a, &mut b).await;
    eprintln!(
        "presence and delivery recovered {:?} after the restart",
        restarted.elapsed()
    );

    b.send(json!({"type":"signal","to":"a1","data":{"n":3}}))
        .await;
    assert_eq!(a.recv_type("signal").await["data"]["n"], 3);
    a.send(json!({"type":"webrtc_offer","target_user_id":"bob","data":{}}))
        .await;
    loop {
        let got = b.recv().await;
        if got["type"] == "webrtc_offer" {
            break;
        }
        assert_eq!(got["type"], "signal", "{got}");
    }
    a.expect_quiet().await;
    b.expect_quiet().await;
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_cluster_node_waits_for_redis_and_serves_once_it_is_up() {
    let port = super::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut node = NodeProcess::start(&[
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_REDIS_URL", &url),
        ("SWITCHBOARD_REDIS_PREFIX", "wait-for-redis"),
    ]);
    let addr = node.address();
    node.wait_for("not reachable; retrying", WAIT);
    let http = |path: &str| format!("http://{addr}{path}");
    let get = |path: String| async move {
        let response = http_get(path).await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(get(http("/healthz")).await.0, 200);
    let (status, ready) = get(http("/readyz")).await;
    assert_eq!((status, ready["code"].as_str()), (503, Some("starting")));
    let detail = ready["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("Redis at {url}")), "{detail}");
    for path in ["/health", "/health/"] {
        let (status, health) = get(http(path)).await;
        assert_eq!(status, 503, "{path}");
        assert_eq!(health["status"], "unhealthy");
        assert_eq!(health["redis"]["status"], "connecting");
        assert_eq!(health["services"]["redis"]["status"], "connecting");
        assert!(!health["errors"].as_array().unwrap().is_empty());
    }
    let (status, body) = get(http("/api/rooms")).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("starting")));
    assert!(
        !body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );
    // A browser can read the health of a starting node (CORS applies in every phase).
    let health = http_client()
        .get(http("/health"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(health.headers()["access-control-allow-origin"], "*");
    // One log line per failed attempt, further apart each time.
    node.wait_for("not reachable; retrying", WAIT);

    let _redis = super::RedisProcess::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(http("/readyz")).await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready after Redis came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let retries = node
        .log
        .iter()
        .filter(|l| l.contains("not reachable; retrying"))
        .count();
    assert!(retries >= 2, "{retries}");
    let (status, health) = get(http("/health")).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    assert_eq!(health["redis"], json!({"status": "ok"}));
    let url = format!("ws://{addr}/ws/room?token={}", token("alice"));
    let mut client = connect(&url).await.expect("upgrade accepted");
    client.recv_type("auth_success").await;
    client.recv_type("users_in_room").await;
    drop(client);
    assert_eq!(
        tokio::task::spawn_blocking(move || node.terminate())
            .await
            .unwrap(),
        Some(0)
    );
}
