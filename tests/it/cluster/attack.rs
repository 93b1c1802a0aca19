//! A scripted attacker against two nodes on a Redis of their own, with production limits,
//! while two honest clients on different nodes keep a call going: junk before authentication
//! and a ping flood, both from sockets that never read; joins and leaves of random room names;
//! forged sender fields; a repeated `type`; user signals to users outside its reach. The honest
//! call gets every signal in order and nothing else, and Redis holds no more than before once
//! the room index is swept.

use std::time::Duration;

use fred::interfaces::{ClientLike, ServerInterface, SortedSetsInterface};
use futures_util::SinkExt;
use serde_json::json;
use switchboard::config::{Config, UserSignals};
use tokio_tungstenite::tungstenite::Message;

use super::{RedisProcess, redis_config, spawn_cluster};
use crate::support::*;

/// Redis's `used_memory` and key count.
async fn redis_usage(client: &fred::clients::Client) -> (u64, u64) {
    let info: String = client
        .info(Some(fred::types::InfoKind::Memory))
        .await
        .unwrap();
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    let keys: u64 = client.dbsize().await.unwrap();
    (used, keys)
}

/// Floods `frame` from a socket that never reads, until the node stops reading it.
async fn flood_without_reading(node: &TestNode, path: &str, frame: &str) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    let Ok((mut ws, _)) = tokio_tungstenite::client_async(node.ws(path), stream).await else {
        return;
    };
    for _ in 0..100_000 {
        let sent = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::text(frame)));
        if !matches!(sent.await, Ok(Ok(()))) {
            return;
        }
    }
}

/// Joins and leaves `n` rooms of random names, waiting when told to.
async fn random_rooms(node: &TestNode, user: String, n: usize) {
    let mut client = Client::user(node, &user, &format!("{user}-1")).await;
    for _ in 0..n {
        let room = format!("junk-{}", uuid::Uuid::new_v4().simple());
        for message in [
            json!({"type": "join", "room": room}),
            json!({"type": "leave", "room": room}),
        ] {
            client.send(message).await;
        }
        let reply = client.recv().await;
        if reply["code"] == "rate_limited" {
            let wait = reply["retry_after_ms"].as_u64().unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(wait + 1)).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn an_attacker_does_not_disturb_an_honest_call_and_redis_stays_bounded() {
    let redis = RedisProcess::start();
    // Production's limits, except that every client here comes from one address.
    let config = Config {
        ip_connections: 100,
        ip_unauthenticated: 50,
        user_signals: UserSignals::SharedRoom,
        user_signal_rate: Config::default().user_signal_rate,
        msg_rate: Config::default().msg_rate,
        user_msg_rate: Config::default().user_msg_rate,
        write_timeout: Duration::from_secs(1),
        // The connections the attacker drops, or stops reading, are parked for a resume and
        // keep their keys until the window ends: short here, so that the test sees them go.
        resume_window: Duration::from_secs(2),
        ..redis_config(&redis.url())
    };
    let nodes = spawn_cluster(2, &config);
    let target = switchboard::redis::url::parse(&redis.url()).unwrap();
    let inspector = switchboard::redis::client(&target).await.unwrap();

    let (mut alice, _) = Client::join(&nodes[0], "call", "alice", "alice-1").await;
    let (mut bob, _) = Client::join(&nodes[1], "call", "bob", "bob-1").await;
    alice.recv_type("user_joined").await;
    let before = redis_usage(&inspector).await;

    // The honest call: an offer and an answer every 50 ms, each checked on arrival.
    let call = tokio::spawn(async move {
        for n in 0..60 {
            alice
                .send(json!({"type": "offer", "to": "bob-1", "offer": {"sdp": format!("v=0 {n}")}}))
                .await;
            let offer = bob.recv_type("offer").await;
            assert_eq!(offer["offer"]["sdp"], format!("v=0 {n}"));
            assert_eq!(
                (offer["from"].as_str(), offer["user_id"].as_str()),
                (Some("alice-1"), Some("alice"))
            );
            bob.send(json!({"type": "answer", "to": "alice-1", "answer": {"n": n}}))
                .await;
            assert_eq!(alice.recv_type("answer").await["answer"]["n"], n);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        alice.expect_quiet().await;
        bob.expect_quiet().await;
    });

    let flooder = format!("/ws?token={}", token("flooder"));
    let attacker = async {
        let junk = flood_without_reading(&nodes[0], "/ws", "x");
        let pings = flood_without_reading(&nodes[1], &flooder, r#"{"type":"ping"}"#);
        let rooms = async {
            let tasks: Vec<_> = (0..4)
                .map(|i| random_rooms(&nodes[i % 2], format!("roomer-{i}"), 60))
                .collect();
            futures_util::future::join_all(tasks).await;
        };
        let forger = async {
            let (mut victor, _) = Client::join(&nodes[0], "side", "victor", "victor-1").await;
            let (mut mallory, _) = Client::join(&nodes[1], "side", "mallory", "mallory-1").await;
            victor.recv_type("user_joined").await;
            mallory
                .send_text(r#"{"type":"offer","to":"victor-1","offer":{},"from":"alice-1","user_id":"alice","sender_user_id":"alice"}"#)
                .await;
            let got = victor.recv_type("offer").await;
            assert_eq!(
                (got["from"].as_str(), got["user_id"].as_str()),
                (Some("mallory-1"), Some("mallory"))
            );
            assert!(got.get("sender_user_id").is_none(), "{got}");
            mallory
                .send_text(r#"{"type":"ping","type":"offer","to":"victor-1"}"#)
                .await;
            assert_eq!(mallory.expect_error("invalid_field").await["field"], "type");
            for target in ["alice", "nobody"] {
                mallory
                    .send(json!({"type": "webrtc_offer", "target_user_id": target, "data": {}}))
                    .await;
                mallory.expect_error("forbidden").await;
            }
            victor.expect_quiet().await;
        };
        tokio::join!(junk, pings, rooms, forger);
    };
    attacker.await;
    call.await.expect("the honest call went through untouched");

    // The random rooms are gone from Redis within a few lease periods of the grace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let index = format!("{{{}:rooms}}", config.redis.prefix);
    loop {
        let rooms: u64 = inspector.zcard(&index).await.unwrap();
        if rooms <= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rooms} rooms still indexed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the attacker's parked sessions are gone within their window.
    let after = loop {
        let after = redis_usage(&inspector).await;
        if after.1 <= before.1 + 8 {
            break after;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "keys grew from {} to {}",
            before.1,
            after.1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        after.0 < before.0 + 1024 * 1024,
        "Redis memory grew from {} to {} bytes",
        before.0,
        after.0
    );
    eprintln!(
        "Redis before the attack: {} bytes, {} keys; after: {} bytes, {} keys",
        before.0, before.1, after.0, after.1
    );
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn one_flooding_connection_cannot_take_the_publish_queue_from_everyone_else() {
    let redis = RedisProcess::start();
    let config = redis_config(&redis.url());
    let nodes = spawn_cluster(2, &config);
    let (mut flooder, _) = Client::join(&nodes[0], "flood", "mallory", "flooder").await;
    let (_sink, _) = Client::join(&nodes[1], "flood", "sink", "sink").await;
    flooder.recv_type("user_joined").await;
    let (mut honest, _) = Client::join(&nodes[0], "call", "alice", "honest").await;
    let (mut peer, _) = Client::join(&nodes[1], "call", "bob", "peer").await;
    honest.recv_type("user_joined").await;

    // Redis stops answering: nothing leaves the node's queue while the flood comes in.
    redis.pause();
    let flood = r#"{"type":"offer","to":"sink","offer":{"sdp":"v=0"}}"#;
    for _ in 0..20_000 {
        flooder.send_text(flood).await;
    }
    flooder.send(json!({"type": "ping"})).await;
    let mut refused = 0;
    loop {
        let reply = flooder.recv().await;
        match reply["type"].as_str() {
            Some("pong") => break,
            _ => {
                assert_eq!(reply["code"], "unavailable", "{reply}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the flooder was never refused");
    // Another connection's signal still gets a place in the queue, and arrives once Redis
    // answers again.
    honest
        .send(json!({"type": "offer", "to": "peer", "offer": {"sdp": "honest"}}))
        .await;
    redis.resume();
    let offer = peer.recv_type("offer").await;
    assert_eq!(offer["offer"]["sdp"], "honest");
    assert_eq!(offer["from"], "honest");
}
