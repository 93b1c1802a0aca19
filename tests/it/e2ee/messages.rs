//! Store and forward on one node (SQLite): queued while offline, drained on connect, live
//! while online, deleted only on acknowledgement; device sets checked; tickets single use.

use serde_json::json;

use super::*;

#[tokio::test]
async fn e2ee_messages_wait_for_their_device_and_go_only_when_acknowledged() {
    let node = spawn_node(e2ee_config());
    let (alice, bob) = (Phone::new(), Phone::new());
    let a = register(&node, &alice, 1..2).await;
    let b = register(&node, &bob, 1..2).await;
    let ids = send_to(&node, &a, &bob.hash, &["one", "two", "three"]).await;
    let mut ws = DeviceWs::connect(&node, &b).await;
    let queued = ws.until_queue_empty().await;
    let texts: Vec<String> = queued.iter().map(content).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    let got: Vec<i64> = queued.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(got, ids);
    assert_eq!(
        queued[0]["from"],
        json!({"user_id": a.user_id, "device_id": 1})
    );
    assert!(queued[0]["sent_at"].as_i64().unwrap() > 1_700_000_000);
    // Online: at once. Then two acknowledged (one twice, and one unknown id).
    send_to(&node, &a, &bob.hash, &["four"]).await;
    let live = ws.recv().await;
    assert_eq!(
        (live["type"].as_str(), content(&live)),
        (Some("message"), "four".into())
    );
    ws.ack(&[ids[0], ids[1], ids[1], 987_654]).await;
    drop(ws);
    // Reconnected: what was not acknowledged comes again, in order.
    let mut ws = DeviceWs::connect(&node, &b).await;
    let again: Vec<String> = ws.until_queue_empty().await.iter().map(content).collect();
    assert_eq!(again, ["three", "four"]);
}

#[tokio::test]
async fn e2ee_sends_must_name_exactly_the_recipients_devices() {
    let node = spawn_node(e2ee_config());
    let (alice, bob) = (Phone::new(), Phone::new());
    let a1 = register(&node, &alice, 1..2).await;
    let b = register(&node, &bob, 1..2).await;
    let mut body = alice.device(2..3);
    body["registration_id"] = 77.into();
    let (_, reply) = call(
        &node,
        "POST",
        "/api/v1/devices",
        Some(&a1.token),
        Some(&body),
    )
    .await;
    let a2 = creds(&reply);
    let to_alice = format!("/api/v1/messages/{}", alice.hash);
    let c = b64(b"x");
    let one = json!({"messages": [{"device_id": 1, "content": c}, {"device_id": 5, "content": c}]});
    let (status, reply) = call(&node, "PUT", &to_alice, Some(&b.token), Some(&one)).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["code"], "mismatched_devices");
    assert_eq!(
        (
            reply["missing_devices"].clone(),
            reply["extra_devices"].clone()
        ),
        (json!([2]), json!([5]))
    );
    let stale = json!({"messages": [{"device_id": 1, "content": c},
        {"device_id": 2, "content": c, "registration_id": 76}]});
    let (status, reply) = call(&node, "PUT", &to_alice, Some(&b.token), Some(&stale)).await;
    assert_eq!((status, reply["stale_devices"].clone()), (410, json!([2])));
    // To its own account, a device writes to its other devices only.
    let own = json!({"messages": [{"device_id": 1, "content": c}]});
    let (status, _) = call(&node, "PUT", &to_alice, Some(&a2.token), Some(&own)).await;
    assert_eq!(status, 200);
    let both = json!({"messages": [{"device_id": 1, "content": c},
        {"device_id": 2, "content": c, "registration_id": 77}]});
    let (status, reply) = call(&node, "PUT", &to_alice, Some(&b.token), Some(&both)).await;
    assert_eq!(
        (status, reply["ids"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    let mut ws = DeviceWs::connect(&node, &a1).await;
    assert_eq!(
        ws.until_queue_empty().await.len(),
        2,
        "one from a2, one from bob"
    );
}

#[tokio::test]
async fn e2ee_ephemeral_messages_reach_online_devices_and_are_never_stored() {
    let node = spawn_node(e2ee_config());
    let (alice, bob) = (Phone::new(), Phone::new());
    let a = register(&node, &alice, 1..2).await;
    let b = register(&node, &bob, 1..2).await;
    let path = format!("/api/v1/messages/{}", bob.hash);
    let offer = json!({"ephemeral": true, "messages": [{"device_id": 1, "content": b64(b"sdp")}]});
    let (status, reply) = call(&node, "PUT", &path, Some(&a.token), Some(&offer)).await;
    assert_eq!((status, reply), (200, json!({"ids": []})));
    let mut ws = DeviceWs::connect(&node, &b).await;
    assert!(
        ws.until_queue_empty().await.is_empty(),
        "nothing was stored while offline"
    );
    let (status, _) = call(&node, "PUT", &path, Some(&a.token), Some(&offer)).await;
    assert_eq!(status, 200);
    let live = ws.recv().await;
    assert_eq!(
        (live["ephemeral"].as_bool(), live["id"].is_null()),
        (Some(true), true)
    );
    assert_eq!(content(&live), "sdp");
}

#[tokio::test]
async fn e2ee_tickets_work_once_and_bad_ones_close_with_1008() {
    let node = spawn_node(e2ee_config());
    let bob = Phone::new();
    let b = register(&node, &bob, 1..2).await;
    let ticket = ticket(&node, &b).await;
    let mut ws = DeviceWs::with_ticket(&node, &ticket).await;
    assert!(ws.until_queue_empty().await.is_empty());
    for bad in [ticket.as_str(), "forged", ""] {
        let mut refused = DeviceWs::with_ticket(&node, bad).await;
        let error = refused.recv().await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some("unauthorized"))
        );
        assert_eq!(refused.expect_close().await, 1008, "{bad:?}");
    }
    // A newer connection of the device replaces the older one.
    let mut newer = DeviceWs::connect(&node, &b).await;
    assert!(newer.until_queue_empty().await.is_empty());
    assert_eq!(ws.expect_close().await, 4001);
}
