//! The protocol rules with the clients on different nodes.

use serde_json::{Value, json};

use super::{Redis, redis_config, spawn_cluster};
use crate::support::*;

on_both_redis!(
    rooms_span_nodes,
    targeted_and_broadcast_signals_cross_nodes,
    user_signals_reach_every_device_on_every_node,
    peer_not_found_and_user_offline_across_nodes,
    room_full_across_nodes,
    signals_keep_their_order_across_nodes,
    round_trips_alternate_between_nodes,
);

fn peer(client: &str, user: &str) -> Value {
    json!({"client_id": client, "username": format!("name-{user}"), "user_id": user})
}

fn event(kind: &str, room: &str, client: &str, user: &str) -> Value {
    json!({"type": kind, "room": room, "client_id": client, "username": format!("name-{user}"), "user_id": user})
}

async fn rooms_span_nodes(redis: Redis) {
    let nodes = spawn_cluster(3, &redis_config(&redis.url()));
    let (mut a, users) = Client::join(&nodes[0], "span", "alice", "a1").await;
    assert_eq!(
        users,
        json!({"type":"users_in_room","room":"span","users":[]})
    );
    let (mut b, users) = Client::join(&nodes[1], "span", "bob", "b1").await;
    assert_eq!(users["users"], json!([peer("a1", "alice")]));
    assert_eq!(a.recv().await, event("user_joined", "span", "b1", "bob"));
    let (mut c, users) = Client::join(&nodes[2], "span", "carol", "c1").await;
    assert_eq!(
        users["users"],
        json!([peer("a1", "alice"), peer("b1", "bob")])
    );
    assert_eq!(a.recv().await, event("user_joined", "span", "c1", "carol"));
    assert_eq!(b.recv().await, event("user_joined", "span", "c1", "carol"));

    b.send(json!({"type":"leave","room":"span"})).await;
    assert_eq!(a.recv().await, event("user_left", "span", "b1", "bob"));
    assert_eq!(c.recv().await, event("user_left", "span", "b1", "bob"));
    c.close().await;
    assert_eq!(a.recv().await, event("user_left", "span", "c1", "carol"));
    b.expect_quiet().await;
}

async fn targeted_and_broadcast_signals_cross_nodes(redis: Redis) {
    let nodes = spawn_cluster(3, &redis_config(&redis.url()));
    let (mut a, _) = Client::join(&nodes[0], "call", "alice", "a1").await;
    let (mut b, _) = Client::join(&nodes[1], "call", "bob", "b1").await;
    let (mut c, _) = Client::join(&nodes[2], "call", "carol", "c1").await;
    a.recv_type("user_joined").await;
    a.recv_type("user_joined").await;
    b.recv_type("user_joined").await;

    let offer = json!({"type":"offer","sdp":"v=0\r\n"});
    a.send(json!({"type":"offer","offer":offer,"to":"b1","from":"forged","user_id":"x"}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type":"offer","offer":offer,"from":"a1","username":"name-alice","user_id":"alice","room":"call"})
    );

    // A broadcast reaches every other member once, on every node, never the sender.
    a.send(json!({"type":"signal","data":{"n":1}})).await;
    for (receiver, name) in [(&mut b, "b"), (&mut c, "c")] {
        let got = receiver.recv().await;
        assert_eq!(got["type"], "signal", "{name} got {got}");
        assert_eq!(
            (got["data"]["n"].as_i64(), got["from"].as_str()),
            (Some(1), Some("a1"))
        );
    }
    // The next broadcast comes next: nothing arrived twice, and carol never saw the offer.
    a.send(json!({"type":"signal","data":{"n":2}})).await;
    assert_eq!(b.recv_type("signal").await["data"]["n"], 2);
    assert_eq!(c.recv_type("signal").await["data"]["n"], 2);
    for client in [&mut a, &mut b, &mut c] {
        client.expect_quiet().await;
    }
}

async fn user_signals_reach_every_device_on_every_node(redis: Redis) {
    let nodes = spawn_cluster(3, &redis_config(&redis.url()));
    let mut phone = Client::user(&nodes[1], "bob", "bob-phone").await;
    let (mut laptop, _) = Client::join(&nodes[2], "desk", "bob", "bob-laptop").await;
    let mut alice = Client::user(&nodes[0], "alice", "a1").await;

    let data = json!({"sdp":"v=0","type":"offer"});
    alice
        .send(json!({"type":"webrtc_offer","target_user_id":"bob","data":data}))
        .await;
    for device in [&mut phone, &mut laptop] {
        assert_eq!(
            device.recv().await,
            json!({"type":"webrtc_offer","target_user_id":"bob","data":data,
                   "sender_user_id":"alice","from_user_id":"alice","from":"a1","username":"name-alice"})
        );
    }
    // A user signalling themself reaches their other devices, never the sending one.
    phone
        .send(json!({"type":"webrtc_ice_candidate","target_user_id":"bob","data":{"n":1}}))
        .await;
    assert_eq!(
        laptop.recv_type("webrtc_ice_candidate").await["from"],
        "bob-phone"
    );
    alice
        .send(json!({"type":"webrtc_answer","target_user_id":"bob","data":{}}))
        .await;
    assert_eq!(phone.recv_type("webrtc_answer").await["from"], "a1");
    assert_eq!(laptop.recv_type("webrtc_answer").await["from"], "a1");
    for client in [&mut alice, &mut phone, &mut laptop] {
        client.expect_quiet().await;
    }
}

async fn peer_not_found_and_user_offline_across_nodes(redis: Redis) {
    let nodes = spawn_cluster(2, &redis_config(&redis.url()));
    let (mut a, _) = Client::join(&nodes[0], "r", "alice", "a1").await;
    let (mut b, _) = Client::join(&nodes[1], "r", "bob", "b1").await;
    a.recv_type("user_joined").await;

    a.send(json!({"type":"offer","offer":{},"to":"ghost"}))
        .await;
    assert_eq!(a.expect_error("peer_not_found").await["to"], "ghost");
    // Bob is online on the other node, so a user signal is delivered and no error comes.
    a.send(json!({"type":"webrtc_offer","target_user_id":"bob","data":{}}))
        .await;
    b.recv_type("webrtc_offer").await;
    a.expect_quiet().await;

    b.send(json!({"type":"leave","room":"r"})).await;
    a.recv_type("user_left").await;
    a.send(json!({"type":"answer","answer":{},"to":"b1"})).await;
    assert_eq!(a.expect_error("peer_not_found").await["to"], "b1");

    b.close().await;
    // No event says when bob's node has cleaned up after the close: poll with signals, each
    // round paced by its pong.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        a.send(json!({"type":"webrtc_offer","target_user_id":"bob","data":{}}))
            .await;
        a.send(json!({"type":"ping"})).await;
        match a.recv().await {
            e if e["type"] == "error" => {
                assert_eq!(
                    (e["code"].as_str(), e["target_user_id"].as_str()),
                    (Some("user_offline"), Some("bob"))
                );
                break;
            }
            pong => assert_eq!(pong["type"], "pong"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob never became offline"
        );
    }
}

async fn room_full_across_nodes(redis: Redis) {
    let mut config = redis_config(&redis.url());
    config.max_members_per_room = 2;
    let nodes = spawn_cluster(3, &config);
    let (_a, _) = Client::join(&nodes[0], "small", "alice", "a1").await;
    let (_b, _) = Client::join(&nodes[1], "small", "bob", "b1").await;

    let mut c = connect(&nodes[2].ws(&format!("/ws/small?token={}", token("carol"))))
        .await
        .unwrap();
    c.recv_type("auth_success").await;
    assert_eq!(c.expect_error("room_full").await["max"], 2);
    assert_eq!(c.expect_close().await, 1013);

    let mut d = Client::user(&nodes[2], "dave", "d1").await;
    d.send(json!({"type":"join","room":"small"})).await;
    d.expect_error("room_full").await;
    d.expect_quiet().await;
}

async fn signals_keep_their_order_across_nodes(redis: Redis) {
    const N: i64 = 500;
    let mut config = redis_config(&redis.url());
    config.outbox_frames = 1024;
    let nodes = spawn_cluster(2, &config);
    let (mut a, _) = Client::join(&nodes[0], "ordered", "alice", "a1").await;
    let (mut b, _) = Client::join(&nodes[1], "ordered", "bob", "b1").await;
    a.recv_type("user_joined").await;

    let started = std::time::Instant::now();
    for n in 0..N {
        a.send(json!({"type":"signal","to":"b1","data":{"n":n}}))
            .await;
    }
    a.send(json!({"type":"signal","to":"b1","data":{"n":"end"}}))
        .await;
    for n in 0..N {
        let got = b.recv_type("signal").await;
        assert_eq!(got["data"]["n"], n, "signal {n} out of order or twice");
    }
    assert_eq!(b.recv_type("signal").await["data"]["n"], "end");
    eprintln!(
        "{redis:?}: {N} cross-node signals delivered in order in {:?}",
        started.elapsed()
    );
    b.expect_quiet().await;
}

async fn round_trips_alternate_between_nodes(redis: Redis) {
    let nodes = spawn_cluster(2, &redis_config(&redis.url()));
    let (mut a, _) = Client::join(&nodes[0], "rtt", "alice", "a1").await;
    let (mut b, _) = Client::join(&nodes[1], "rtt", "bob", "b1").await;
    a.recv_type("user_joined").await;

    for n in 0..200 {
        a.send(json!({"type":"signal","to":"b1","data":{"n":n}}))
            .await;
        assert_eq!(b.recv_type("signal").await["data"]["n"], n);
        b.send(json!({"type":"signal","to":"a1","data":{"n":n}}))
            .await;
        assert_eq!(a.recv_type("signal").await["data"]["n"], n);
    }
    a.expect_quiet().await;
    b.expect_quiet().await;
}
