//! How targeted signals find a peer on another node: through the sending node's roster of the
//! room, corrected by presence when it lacks the peer and by a bounce when it names a node the
//! peer is not on; and what a sender sees when the bus cannot carry its signals.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard::bus::{Envelope, Inbound, Route};
use switchboard::hub::Seat;
use switchboard::protocol::{ClientId, ConnId, NodeId, RoomId, Stamp};

use super::{Redis, RedisProcess, redis_config, spawn_cluster};
use crate::support::*;

on_both_redis!(
    a_wrong_roster_is_corrected_by_presence_and_by_bounces,
    signals_to_a_vanished_node_come_back_as_peer_not_found,
    a_user_left_overtaken_by_a_newer_join_changes_nothing,
);

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

fn client(id: &str) -> ClientId {
    ClientId::parse(id).unwrap()
}

async fn a_wrong_roster_is_corrected_by_presence_and_by_bounces(redis: Redis) {
    let nodes = spawn_cluster(2, &redis_config(&redis.url()));
    let (mut a, _) = Client::join(&nodes[0], "r", "alice", "a1").await;
    let (mut b, _) = Client::join(&nodes[1], "r", "bob", "b1").await;
    a.recv_type("user_joined").await;
    let rosters = &nodes[0].state.hub.rosters;
    assert_eq!(
        rosters.locate(&room("r"), &client("b1")),
        Some(nodes[1].node_id())
    );

    // A roster that lost bob: presence finds him, and the roster knows him again.
    rosters.unseat_missing(&room("r"), &client("b1"), None);
    a.send(json!({"type":"offer","offer":{"n":1},"to":"b1"}))
        .await;
    assert_eq!(b.recv_type("offer").await["offer"]["n"], 1);
    assert_eq!(
        rosters.locate(&room("r"), &client("b1")),
        Some(nodes[1].node_id())
    );

    // A roster that names a client the other node does not hold: that node bounces the signal,
    // the sender gets `peer_not_found`, and the seat goes.
    let ghost = Seat {
        client: client("ghost"),
        conn: ConnId(7),
        node: nodes[1].node_id(),
    };
    rosters.seat(&room("r"), ghost);
    a.send(json!({"type":"answer","answer":{},"to":"ghost"}))
        .await;
    let error = a.expect_error("peer_not_found").await;
    assert_eq!(
        (error["to"].as_str(), error["room"].as_str()),
        (Some("ghost"), Some("r"))
    );
    assert_eq!(rosters.locate(&room("r"), &client("ghost")), None);
    a.send(json!({"type":"answer","answer":{},"to":"ghost"}))
        .await;
    a.expect_error("peer_not_found").await;
    b.expect_quiet().await;
    a.expect_quiet().await;
}

async fn signals_to_a_vanished_node_come_back_as_peer_not_found(redis: Redis) {
    let mut config = redis_config(&redis.url());
    // No reaping during the test: only the bus can tell that bob's node is gone.
    config.lease_ttl = Duration::from_secs(60);
    // A session that cannot resume: signals for a resumable one are held for the survivor
    // that takes it over (`resume_crash.rs`).
    config.resume_window = Duration::ZERO;
    let mut nodes = spawn_cluster(2, &config);
    let (mut a, _) = Client::join(&nodes[0], "gone", "alice", "a1").await;
    let (_b, _) = Client::join(&nodes[1], "gone", "bob", "b1").await;
    a.recv_type("user_joined").await;
    nodes.remove(1).crash();
    // Redis drops the node's subscription when it sees the connection close; until then a
    // signal may still be taken for the node. Each round ends with its pong.
    let deadline = Instant::now() + WAIT;
    loop {
        a.send(json!({"type":"ice_candidate","candidate":{},"to":"b1"}))
            .await;
        a.send(json!({"type":"ping"})).await;
        let mut error: Option<Value> = None;
        loop {
            let got = a.recv().await;
            match got["type"].as_str() {
                Some("pong") => break,
                Some("error") => error = Some(got),
                _ => panic!("unexpected {got}"),
            }
        }
        if let Some(error) = error.or(a.try_recv(Duration::from_millis(200)).await) {
            assert_eq!(
                (error["code"].as_str(), error["to"].as_str()),
                (Some("peer_not_found"), Some("b1"))
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no peer_not_found for a vanished node"
        );
    }
}

/// Reads `peer`'s frames up to alice's `user_joined`; anything before it must be her
/// `user_left`.
async fn until_rejoined(peer: &mut Client) {
    loop {
        let got = peer.recv().await;
        assert_eq!(got["client_id"], "a1", "{got}");
        match got["type"].as_str() {
            Some("user_joined") => return,
            Some("user_left") => {}
            _ => panic!("unexpected {got}"),
        }
    }
}

async fn a_user_left_overtaken_by_a_newer_join_changes_nothing(redis: Redis) {
    let nodes = spawn_cluster(2, &redis_config(&redis.url()));
    let (mut old, _) = Client::join(&nodes[0], "late", "alice", "a1").await;
    let (mut bob, _) = Client::join(&nodes[1], "late", "bob", "b1").await;
    let (mut carol, _) = Client::join(&nodes[0], "late", "carol", "c1").await;
    bob.recv_type("user_joined").await;
    let presence = &nodes[0].state.hub.presence;
    let old_conn = presence.member(&room("late"), &client("a1")).await;
    let old_conn = old_conn.unwrap().expect("alice is in the room").conn;

    // Alice's new connection, on bob's node, takes her client id over.
    let (mut new, _) = Client::join(&nodes[1], "late", "alice", "a1").await;
    assert_eq!(old.expect_close().await, 4001);
    until_rejoined(&mut bob).await;
    until_rejoined(&mut carol).await;

    // The old connection's `user_left` arrives only now, on both nodes (from a node that
    // published it late, or from a reaper): bob's node holds the newer connection, carol's
    // roster names it, so neither tells anyone.
    let left = json!({"type":"user_left","room":"late","client_id":"a1",
                      "username":"name-alice","user_id":"alice"});
    let stale = Envelope {
        origin: NodeId::generate(),
        route: Route::Left {
            room: room("late"),
            client: client("a1"),
            conn: old_conn,
        },
        payload: Bytes::from(left.to_string()),
        stamp: Stamp::NONE,
    };
    for node in &nodes {
        node.state.hub.route(Inbound::Envelope(stale.clone()));
    }
    bob.expect_quiet().await;
    carol.expect_quiet().await;
    carol
        .send(json!({"type":"signal","to":"a1","data":{"n":1}}))
        .await;
    assert_eq!(new.recv_type("signal").await["from"], "c1");

    // Her real departure reaches everyone.
    new.close().await;
    assert_eq!(bob.recv_type("user_left").await, left);
    assert_eq!(carol.recv_type("user_left").await, left);
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn a_frozen_redis_turns_signals_into_errors_not_a_queue() {
    const SIGNALS: usize = 24_000;
    let redis = RedisProcess::start();
    let mut config = redis_config(&redis.url());
    // Bob takes the backlog after the thaw; nobody's lease runs out while Redis is frozen.
    config.outbox_frames = 32_768;
    config.lease_ttl = Duration::from_secs(60);
    let nodes = spawn_cluster(2, &config);
    let (mut a, _) = Client::join(&nodes[0], "frozen", "alice", "a1").await;
    let (mut b, _) = Client::join(&nodes[1], "frozen", "bob", "b1").await;
    let (mut local, _) = Client::join(&nodes[0], "frozen", "anna", "a2").await;
    a.recv_type("user_joined").await;
    a.recv_type("user_joined").await;
    b.recv_type("user_joined").await;

    redis.pause();
    // More than the node may queue for Redis: the rest are refused at once.
    for n in 0..SIGNALS {
        a.send(json!({"type":"signal","to":"b1","data":{"n":n}}))
            .await;
    }
    a.send(json!({"type":"ping"})).await;
    let mut refused = 0;
    loop {
        let got = a.recv().await;
        match got["type"].as_str() {
            Some("pong") => break,
            Some("error") => {
                assert_eq!(got["code"], "unavailable", "{got}");
                refused += 1;
            }
            _ => panic!("unexpected {got}"),
        }
    }
    eprintln!("{refused} of {SIGNALS} signals refused while Redis was frozen");
    assert!(refused > 0, "every signal was queued");
    // The node serves its local clients meanwhile.
    a.send(json!({"type":"signal","to":"a2","data":{"n":"local"}}))
        .await;
    assert_eq!(local.recv_type("signal").await["data"]["n"], "local");

    redis.resume();
    // Whatever was queued is delivered or reported; then signals flow again, in order.
    let deadline = Instant::now() + 2 * WAIT;
    let mut last = -1;
    loop {
        a.send(json!({"type":"signal","to":"b1","data":{"n":"after"}}))
            .await;
        let mut done = false;
        while let Some(got) = b.try_recv(Duration::from_millis(300)).await {
            match &got["data"]["n"] {
                Value::Number(n) => {
                    let n = n.as_i64().unwrap();
                    assert!(n > last, "signal {n} after {last}");
                    last = n;
                }
                n => {
                    assert_eq!(n, "after");
                    done = true;
                }
            }
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "delivery did not recover");
    }
    while let Some(got) = a.try_recv(Duration::from_millis(100)).await {
        assert_eq!(got["code"], "unavailable", "{got}");
    }
    a.expect_quiet().await;
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn broadcasts_and_targeted_signals_keep_one_order_on_one_redis() {
    const N: i64 = 2000;
    let mut config = redis_config(&Redis::Standalone.url());
    config.outbox_frames = 4096;
    let nodes = spawn_cluster(2, &config);
    let (mut a, _) = Client::join(&nodes[0], "mixed", "alice", "a1").await;
    let (mut b, _) = Client::join(&nodes[1], "mixed", "bob", "b1").await;
    a.recv_type("user_joined").await;
    for n in 0..N {
        let mut signal = json!({"type":"signal","data":{"n":n}});
        if n % 3 != 0 {
            signal["to"] = json!("b1");
        }
        a.send(signal).await;
    }
    for n in 0..N {
        assert_eq!(b.recv_type("signal").await["data"]["n"], n);
    }
    b.expect_quiet().await;
}
