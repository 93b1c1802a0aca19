//! Whom user-addressed signals may reach (`user_signals`: `any`, `shared_room`, `grant` with a
//! token's `peers` claim) and how fast a user may send them (`user_signal_rate`). A refused
//! target is answered `forbidden` whether it is online or not.

use serde_json::{Value, json};
use switchboard::config::{Config, UserSignals};

use crate::support::*;

/// A client of `user` with a token made by `edit`.
async fn user_with(
    node: &TestNode,
    user: &str,
    edit: impl FnOnce(&mut switchboard::auth::Claims),
) -> Client {
    let url = node.ws(&format!("/ws?token={}", token_with(user, edit)));
    let mut client = connect(&url).await.expect("upgrade");
    client.recv_type("auth_success").await;
    client
}

/// Sends an offer to `target`; the error it gets, if any (a `pong` marks the end).
async fn offer(from: &mut Client, target: &str) -> Option<Value> {
    from.send(json!({"type": "webrtc_offer", "target_user_id": target, "data": {"sdp": "v=0"}}))
        .await;
    from.send(json!({"type": "ping"})).await;
    let reply = from.recv().await;
    if reply["type"] == "pong" {
        return None;
    }
    from.recv_type("pong").await;
    Some(reply)
}

fn forbidden(reply: Option<Value>, target: &str) {
    let reply = reply.expect("refused");
    assert_eq!(reply["code"], "forbidden", "{reply}");
    assert_eq!(reply["target_user_id"], target, "{reply}");
}

#[tokio::test]
async fn grant_lets_a_token_signal_its_peers_only_and_says_nothing_of_the_others() {
    let node = spawn_node(Config {
        user_signals: UserSignals::Grant,
        ..test_config()
    });
    let mut bob = Client::user(&node, "bob", "bob-1").await;
    let mut team = Client::user(&node, "team-7", "team-1").await;
    let _carol = Client::user(&node, "carol", "carol-1").await;
    let mut alice = user_with(&node, "alice", |c| {
        c.peers = Some(vec!["bob".into(), "team-*".into()]);
    })
    .await;
    assert_eq!(offer(&mut alice, "bob").await, None);
    bob.recv_type("webrtc_offer").await;
    assert_eq!(offer(&mut alice, "team-7").await, None);
    team.recv_type("webrtc_offer").await;
    // Online or not, a user outside the grant gets the same answer.
    forbidden(offer(&mut alice, "carol").await, "carol");
    forbidden(offer(&mut alice, "nobody").await, "nobody");
    // Without a `peers` claim, nobody but the user's own devices; an admin reaches anyone.
    let mut plain = user_with(&node, "plain", |_| {}).await;
    forbidden(offer(&mut plain, "bob").await, "bob");
    // Its own other devices are always reachable (it has none here).
    let own = offer(&mut plain, "plain").await.expect("no other device");
    assert_eq!(own["code"], "user_offline");
    let mut root = user_with(&node, "root", |c| c.role = Some("admin".into())).await;
    assert_eq!(offer(&mut root, "carol").await, None);
}

#[tokio::test]
async fn shared_room_lets_members_of_a_common_room_signal_each_other_across_nodes() {
    let config = Config {
        user_signals: UserSignals::SharedRoom,
        ..test_config()
    };
    let nodes = spawn_memory_cluster(2, &config);
    let (mut alice, _) = Client::join(&nodes[0], "r", "alice", "a1").await;
    let (mut bob, _) = Client::join(&nodes[1], "r", "bob", "b1").await;
    alice.recv_type("user_joined").await;
    let mut carol = Client::user(&nodes[1], "carol", "c1").await;
    assert_eq!(offer(&mut alice, "bob").await, None);
    bob.recv_type("webrtc_offer").await;
    forbidden(offer(&mut alice, "carol").await, "carol");
    forbidden(offer(&mut alice, "nobody").await, "nobody");
    // Once carol is in the room, she can be reached.
    carol.send(json!({"type": "join", "room": "r"})).await;
    carol.recv_type("users_in_room").await;
    alice.recv_type("user_joined").await;
    assert_eq!(offer(&mut alice, "carol").await, None);
    carol.recv_type("webrtc_offer").await;
}

#[tokio::test]
async fn any_reaches_everyone_and_a_user_signal_rate_holds() {
    let node = spawn_node(Config {
        user_signal_rate: 1,
        user_signal_burst: 3,
        ..test_config()
    });
    let mut bob = Client::user(&node, "bob", "b1").await;
    let mut alice = user_with(&node, "alice", |c| c.rooms = Some(vec!["acme-*".into()])).await;
    for _ in 0..3 {
        assert_eq!(offer(&mut alice, "bob").await, None);
        bob.recv_type("webrtc_offer").await;
    }
    let refused = offer(&mut alice, "bob").await.expect("over the rate");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(refused["retry_after_ms"].as_u64().unwrap() > 0);
    // Room signals are not user signals: they do not count.
    let (mut a, _) = Client::join(&node, "acme-1", "alice", "a2").await;
    a.send(json!({"type": "ping"})).await;
    a.recv_type("pong").await;
}
