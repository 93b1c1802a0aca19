//! Limits on one node: a connection's message rate (a browser's negotiation passes, a flood is
//! told once, then dropped, then closed, and others' traffic goes on) and the node's
//! connection cap.

use serde_json::json;

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
