//! Presence across nodes: the REST views, the room cap under racing joins, client-id takeover.

use futures_util::future::join_all;
use serde_json::json;

use super::{Redis, get, member_ids, poll, redis_config, spawn_cluster};
use crate::support::*;

on_both_redis!(
    rest_views_are_cluster_wide,
    racing_joins_for_the_last_seat_admit_one,
    takeover_across_nodes_closes_the_old_connection,
);

async fn rest_views_are_cluster_wide(redis: Redis) {
    let nodes = spawn_cluster(3, &redis_config(&redis.url()));
    let (mut a, _) = Client::join(&nodes[0], "p1", "alice", "a1").await;
    let (b, _) = Client::join(&nodes[1], "p1", "bob", "b1").await;
    let (c, _) = Client::join(&nodes[2], "p2", "carol", "c1").await;
    let bob_phone = Client::user(&nodes[2], "bob", "b2").await;
    a.recv_type("user_joined").await;

    for node in &nodes {
        let (status, body) = get(node, "/api/rooms", "observer").await;
        assert_eq!(status, 200);
        assert_eq!(
            body["rooms"],
            json!([{"room":"p1","members":2},{"room":"p2","members":1}])
        );
        let (_, body) = get(node, "/api/users/bob/presence", "bob").await;
        assert_eq!(body, json!({"user_id":"bob","online":true,"devices":2}));
    }
    let (status, body) = get(&nodes[2], "/api/rooms/p1", "alice").await;
    assert_eq!(status, 200);
    assert_eq!(member_ids(&body), ["a1", "b1"]);

    b.close().await;
    bob_phone.close().await;
    c.close().await;
    a.recv_type("user_left").await;
    poll(
        &nodes[0],
        "/api/users/bob/presence",
        "bob",
        WAIT,
        |_, body| body["online"] == false,
    )
    .await;
    let body = poll(&nodes[1], "/api/rooms", "alice", WAIT, |_, body| {
        body["rooms"].as_array().is_some_and(|r| r.len() == 1)
    })
    .await;
    assert_eq!(body["rooms"], json!([{"room":"p1","members":1}]));
}

/// A contender for a seat: its connection when it got into the room (kept open, so that the
/// seat stays taken while the others try), `None` when it was refused.
async fn contend(node: &TestNode, room: &str, user: String) -> Option<Client> {
    let url = node.ws(&format!("/ws/{room}?token={}", token(&user)));
    let mut client = connect(&url).await.expect("upgrade accepted");
    client.recv_type("auth_success").await;
    let next = client.recv().await;
    if next["type"] == "users_in_room" {
        return Some(client);
    }
    assert_eq!(next["code"], "room_full", "unexpected frame {next}");
    assert_eq!(client.expect_close().await, 1013);
    None
}

async fn racing_joins_for_the_last_seat_admit_one(redis: Redis) {
    let mut config = redis_config(&redis.url());
    config.max_members_per_room = 2;
    let nodes = spawn_cluster(3, &config);
    for round in 0..8 {
        let room = format!("race-{round}");
        let (_seated, _) = Client::join(&nodes[0], &room, "seated", &format!("s{round}")).await;
        let contenders =
            (0..10).map(|i| contend(&nodes[1 + i % 2], &room, format!("u{round}-{i}")));
        let winners: Vec<Client> = join_all(contenders).await.into_iter().flatten().collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} joins won the last seat",
            winners.len()
        );
        let (_, body) = get(&nodes[0], &format!("/api/rooms/{room}"), "seated").await;
        assert_eq!(body["count"], 2, "{body}");
    }
}

async fn takeover_across_nodes_closes_the_old_connection(redis: Redis) {
    let nodes = spawn_cluster(3, &redis_config(&redis.url()));
    let (mut old, _) = Client::join(&nodes[0], "t", "alice", "dev-1").await;
    let (mut bob, _) = Client::join(&nodes[2], "t", "bob", "b1").await;
    old.recv_type("user_joined").await;

    let (mut new, users) = Client::join(&nodes[1], "t", "alice", "dev-1").await;
    assert_eq!(
        users["users"],
        json!([{"client_id":"b1","username":"name-bob","user_id":"bob"}])
    );
    assert_eq!(old.expect_close().await, 4001);
    assert_eq!(bob.recv_type("user_left").await["client_id"], "dev-1");
    assert_eq!(bob.recv_type("user_joined").await["client_id"], "dev-1");

    // The client id now addresses the new connection, wherever the sender is.
    bob.send(json!({"type":"signal","to":"dev-1","data":{"n":1}}))
        .await;
    assert_eq!(new.recv_type("signal").await["from"], "b1");
    let (_, body) = get(&nodes[2], "/api/users/alice/presence", "alice").await;
    assert_eq!(body["devices"], 1);

    // Another user cannot take it.
    let url = nodes[2].ws(&format!("/ws?token={}&client_id=dev-1", token("mallory")));
    let mut mallory = connect(&url).await.expect("upgrade accepted");
    mallory.expect_error("client_id_taken").await;
    assert_eq!(mallory.expect_close().await, 1008);
    new.expect_quiet().await;
}
