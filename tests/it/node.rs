//! The room protocol and user-addressed signals on one node.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn join_lists_others_and_announces_the_joiner() {
    let node = spawn_node(test_config());
    let (mut a, users) = Client::join(&node, "lobby", "alice", "a1").await;
    assert_eq!(
        users,
        json!({"type":"users_in_room","room":"lobby","users":[]})
    );

    let (b, users) = Client::join(&node, "lobby", "bob", "b1").await;
    assert_eq!(
        users["users"],
        json!([{"client_id":"a1","username":"name-alice","user_id":"alice"}])
    );
    assert_eq!(
        a.recv().await,
        json!({"type":"user_joined","room":"lobby","client_id":"b1","username":"name-bob","user_id":"bob"})
    );

    b.close().await;
    assert_eq!(
        a.recv().await,
        json!({"type":"user_left","room":"lobby","client_id":"b1","username":"name-bob","user_id":"bob"})
    );
}

#[tokio::test]
async fn targeted_signal_reaches_only_its_target_with_sender_fields() {
    let node = spawn_node(test_config());
    let (mut a, _) = Client::join(&node, "call", "alice", "a1").await;
    let (mut b, _) = Client::join(&node, "call", "bob", "b1").await;
    let (mut c, _) = Client::join(&node, "call", "carol", "c1").await;
    a.recv_type("user_joined").await;
    a.recv_type("user_joined").await;
    b.recv_type("user_joined").await;

    let offer = json!({"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"});
    a.send(json!({"type":"offer","offer":offer,"to":"b1","from":"forged","username":"x"}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type":"offer","offer":offer,"from":"a1","username":"name-alice","user_id":"alice","room":"call"})
    );
    c.expect_quiet().await;
    a.expect_quiet().await;
}

#[tokio::test]
async fn broadcast_reaches_every_other_member_and_never_the_sender() {
    let node = spawn_node(test_config());
    let (mut a, _) = Client::join(&node, "mesh", "alice", "a1").await;
    let (mut b, _) = Client::join(&node, "mesh", "bob", "b1").await;
    let (mut c, _) = Client::join(&node, "mesh", "carol", "c1").await;
    a.recv_type("user_joined").await;
    a.recv_type("user_joined").await;
    b.recv_type("user_joined").await;

    for kind in ["ice_candidate", "signal", "answer"] {
        a.send(json!({"type":kind,"candidate":{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host"},"data":{"x":1}})).await;
        for peer in [&mut b, &mut c] {
            let got = peer.recv().await;
            assert_eq!(got["type"], kind);
            assert_eq!(got["from"], "a1");
            assert_eq!(got["room"], "mesh");
            assert_eq!(got["data"], json!({"x":1}));
            assert!(got.get("to").is_none());
        }
    }
    a.expect_quiet().await;
}

#[tokio::test]
async fn signal_errors_name_the_problem() {
    let node = spawn_node(test_config());
    let (mut a, _) = Client::join(&node, "r1", "alice", "a1").await;
    a.send(json!({"type":"offer","offer":{},"to":"ghost"}))
        .await;
    let e = a.expect_error("peer_not_found").await;
    assert_eq!(e["to"], "ghost");
    a.send(json!({"type":"offer","offer":{},"room":"elsewhere"}))
        .await;
    a.expect_error("not_in_room").await;
    a.send(json!({"type":"join","room":"r2"})).await;
    a.recv_type("users_in_room").await;
    a.send(json!({"type":"answer","answer":{}})).await;
    a.expect_error("missing_field").await;
    a.send(json!({"type":"leave","room":"r1"})).await;
    a.send(json!({"type":"leave","room":"r1"})).await;
    a.expect_error("not_in_room").await;
    a.expect_quiet().await;
}

#[tokio::test]
async fn join_and_leave_messages_move_a_connection_between_rooms() {
    let node = spawn_node(test_config());
    let mut a = Client::user(&node, "alice", "a1").await;
    let (mut b, _) = Client::join(&node, "room-b", "bob", "b1").await;
    a.send(json!({"type":"join","room":"room-b"})).await;
    let users = a.recv_type("users_in_room").await;
    assert_eq!(users["room"], "room-b");
    assert_eq!(users["users"][0]["client_id"], "b1");
    assert_eq!(b.recv_type("user_joined").await["client_id"], "a1");

    // Joining again is idempotent: the list again, no announcement.
    a.send(json!({"type":"join","room":"room-b"})).await;
    a.recv_type("users_in_room").await;
    b.expect_quiet().await;

    a.send(json!({"type":"leave","room":"room-b"})).await;
    assert_eq!(b.recv_type("user_left").await["client_id"], "a1");
    b.send(json!({"type":"offer","offer":{},"to":"a1"})).await;
    b.expect_error("peer_not_found").await;
}

#[tokio::test]
async fn rooms_per_connection_are_capped() {
    let mut config = test_config();
    config.max_rooms_per_connection = 2;
    let node = spawn_node(config);
    let mut a = Client::user(&node, "alice", "a1").await;
    for room in ["x1", "x2"] {
        a.send(json!({"type":"join","room":room})).await;
        a.recv_type("users_in_room").await;
    }
    a.send(json!({"type":"join","room":"x3"})).await;
    let e = a.expect_error("too_many_rooms").await;
    assert_eq!(e["max"], 2);
}

#[tokio::test]
async fn a_full_room_refuses_the_next_member() {
    let mut config = test_config();
    config.max_members_per_room = 2;
    let node = spawn_node(config);
    let (_a, _) = Client::join(&node, "small", "alice", "a1").await;
    let (_b, _) = Client::join(&node, "small", "bob", "b1").await;

    let mut c = connect(&node.ws(&format!("/ws/small?token={}", token("carol"))))
        .await
        .unwrap();
    c.recv_type("auth_success").await;
    c.expect_error("room_full").await;
    assert_eq!(c.expect_close().await, 1013);

    let mut d = Client::user(&node, "dave", "d1").await;
    d.send(json!({"type":"join","room":"small"})).await;
    d.expect_error("room_full").await;
    d.expect_quiet().await;
}

#[tokio::test]
async fn user_addressed_signals_reach_every_device_of_the_user() {
    let node = spawn_node(test_config());
    let mut phone = Client::user(&node, "bob", "bob-phone").await;
    let (mut laptop, _) = Client::join(&node, "somewhere", "bob", "bob-laptop").await;
    let mut alice = Client::user(&node, "alice", "a1").await;

    alice
        .send(json!({"type":"webrtc_offer","target_user_id":"bob","data":{"sdp":"v=0","type":"offer"}}))
        .await;
    for device in [&mut phone, &mut laptop] {
        assert_eq!(
            device.recv().await,
            json!({"type":"webrtc_offer","target_user_id":"bob","data":{"sdp":"v=0","type":"offer"},
                   "sender_user_id":"alice","from_user_id":"alice","from":"a1","username":"name-alice"})
        );
    }
    alice.expect_quiet().await;

    // A user signalling themself reaches their other devices, never the sending one.
    phone
        .send(json!({"type":"webrtc_ice_candidate","target_user_id":"bob","data":{}}))
        .await;
    assert_eq!(
        laptop.recv_type("webrtc_ice_candidate").await["from"],
        "bob-phone"
    );
    phone.expect_quiet().await;

    alice
        .send(json!({"type":"webrtc_answer","target_user_id":"nobody","data":{}}))
        .await;
    let e = alice.expect_error("user_offline").await;
    assert_eq!(e["target_user_id"], "nobody");
}

#[tokio::test]
async fn ping_gets_pong() {
    let node = spawn_node(test_config());
    let mut a = Client::user(&node, "alice", "a1").await;
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.recv().await, json!({"type":"pong"}));
}

#[tokio::test]
async fn an_in_process_cluster_relays_across_nodes() {
    let nodes = spawn_memory_cluster(2, &test_config());
    let (mut a, _) = Client::join(&nodes[0], "x", "alice", "a1").await;
    let (mut b, users) = Client::join(&nodes[1], "x", "bob", "b1").await;
    assert_eq!(users["users"][0]["client_id"], "a1");
    assert_eq!(a.recv_type("user_joined").await["client_id"], "b1");

    a.send(json!({"type":"offer","offer":{"sdp":"v=0"},"to":"b1"}))
        .await;
    assert_eq!(b.recv_type("offer").await["from"], "a1");
    b.send(json!({"type":"signal","data":"hi"})).await;
    assert_eq!(a.recv_type("signal").await["from"], "b1");
    a.send(json!({"type":"webrtc_offer","target_user_id":"bob","data":{}}))
        .await;
    assert_eq!(b.recv_type("webrtc_offer").await["from_user_id"], "alice");
    a.expect_quiet().await;
    b.expect_quiet().await;

    b.close().await;
    assert_eq!(a.recv_type("user_left").await["client_id"], "b1");
}
