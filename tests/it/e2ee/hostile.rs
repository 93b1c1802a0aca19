//! Hostile input and the E2EE limits: every bad bundle is refused naming its field, oversized
//! bodies stop at the body limit, junk WebSocket frames get error frames with a stable code,
//! and the node keeps serving throughout.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// Registers `body` on `node`; the status and the refused field, if any.
async fn try_register(node: &TestNode, body: &Value) -> (u16, Option<String>) {
    let (status, reply) = call(node, "POST", "/api/v1/register", None, Some(body)).await;
    (status, reply["field"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn e2ee_hostile_bundles_are_refused_naming_the_field() {
    let node = spawn_node(e2ee_config());
    let phone = Phone::new();
    let good = phone.registration(1..3);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut body = good.clone();
        f(&mut body);
        body
    };
    let short = b64(&[1; 31]);
    let cases: Vec<(Value, &str)> = vec![
        (edit(&|b| b["phone_hash"] = "abc".into()), "phone_hash"),
        (
            edit(&|b| b["phone_hash"] = "z".repeat(64).into()),
            "phone_hash",
        ),
        (
            edit(&|b| b["identity_key"] = "not base64!".into()),
            "identity_key",
        ),
        (
            edit(&|b| b["identity_key"] = short.clone().into()),
            "identity_key",
        ),
        (
            edit(&|b| b["signed_prekey"] = short.clone().into()),
            "signed_prekey",
        ),
        (
            edit(&|b| b["prekey_signature"] = b64(&[0; 64]).into()),
            "prekey_signature",
        ),
        (
            edit(&|b| b["prekey_signature"] = b64(&[0; 63]).into()),
            "prekey_signature",
        ),
        (
            edit(&|b| b["fallback_key"]["signature"] = b64(&[0; 64]).into()),
            "fallback_key.signature",
        ),
        (
            edit(&|b| b["one_time_prekeys"][1]["public_key"] = "%%%".into()),
            "one_time_prekeys[1].public_key",
        ),
        (
            edit(&|b| b["one_time_prekeys"] = prekeys(0..101).into()),
            "one_time_prekeys",
        ),
        (
            edit(&|b| b["one_time_prekeys"][1]["key_id"] = 1.into()),
            "one_time_prekeys[1].key_id",
        ),
        (
            edit(&|b| b["identity_key"] = "A".repeat(5000).into()),
            "identity_key",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(
            try_register(&node, &body).await,
            (422, Some(field.to_owned())),
            "{field}"
        );
    }
    // Wrong types and unknown fields: 422 from the JSON reader, naming the path.
    let bad_type = edit(&|b| b["signed_prekey_id"] = "one".into());
    let (status, reply) = call(&node, "POST", "/api/v1/register", None, Some(&bad_type)).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (422, Some("invalid_body"))
    );
    assert!(
        reply["detail"]
            .as_str()
            .unwrap()
            .contains("signed_prekey_id"),
        "{reply}"
    );
    // 10,000 keys, and a 10 MB body: refused at the body limit, unread.
    let many = edit(&|b| b["one_time_prekeys"] = prekeys(0..10_000).into());
    assert_eq!(try_register(&node, &many).await.0, 413);
    // The node may answer 413 and close before the client has written all 10 MB.
    let huge = edit(&|b| b["identity_key"] = "A".repeat(10 * 1024 * 1024).into());
    let sent = http_client()
        .post(node.http("/api/v1/register"))
        .json(&huge)
        .send()
        .await;
    if let Ok(response) = sent {
        assert_eq!(response.status(), 413);
    }
    // Nothing was stored, and the node still serves.
    register(&node, &phone, 1..3).await;
}

#[tokio::test]
async fn e2ee_junk_websocket_frames_get_error_frames_and_the_connection_goes_on() {
    let node = spawn_node(e2ee_config());
    let (alice, bob) = (Phone::new(), Phone::new());
    let a = register(&node, &alice, 1..2).await;
    let b = register(&node, &bob, 1..2).await;
    let mut ws = DeviceWs::connect(&node, &b).await;
    assert!(ws.until_queue_empty().await.is_empty());
    let junk: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "invalid_json"),
        (
            Message::text("{\"type\":\"ack\",\"ids\":\"x\"}"),
            "invalid_field",
        ),
        (Message::text("{\"type\":\"dance\"}"), "invalid_field"),
        (
            Message::text(json!({"type": "ack", "ids": vec![1; 1001]}).to_string()),
            "invalid_field",
        ),
        (Message::binary(vec![0u8; 100]), "binary_not_supported"),
    ];
    for (message, code) in junk {
        ws.send_raw(message).await;
        let error = ws.recv().await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some(code))
        );
    }
    send_to(&node, &a, &bob.hash, &["still here"]).await;
    assert_eq!(content(&ws.recv().await), "still here");
}

#[tokio::test]
async fn e2ee_registrations_claims_and_tickets_are_rate_limited() {
    let mut config = test_config();
    config.e2ee.register_rate = 3;
    let node = spawn_node(config);
    let phones: Vec<Phone> = (0..4).map(|_| Phone::new()).collect();
    let a = register(&node, &phones[0], 1..20).await;
    let b = register(&node, &phones[1], 1..2).await;
    register(&node, &phones[2], 1..2).await;
    let (status, reply) = call(
        &node,
        "POST",
        "/api/v1/register",
        None,
        Some(&phones[3].registration(1..2)),
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(
        reply["retry_after"].as_u64().unwrap() > 60,
        "an hourly rate: {reply}"
    );
    // Bundle fetches: 5 a minute per (requester, target).
    let path = format!("/api/v1/keys/{}", phones[0].hash);
    for _ in 0..5 {
        assert_eq!(call(&node, "GET", &path, Some(&b.token), None).await.0, 200);
    }
    let (status, reply) = call(&node, "GET", &path, Some(&b.token), None).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(reply["retry_after"].as_u64().unwrap() >= 1);
    let other = format!("/api/v1/keys/{}", phones[1].hash);
    assert_eq!(
        call(&node, "GET", &other, Some(&b.token), None).await.0,
        200,
        "another pair"
    );
    // Tickets: 10 a minute per device.
    for _ in 0..10 {
        ticket(&node, &a).await;
    }
    let (status, reply) = call(&node, "POST", "/api/v1/ws-token", Some(&a.token), None).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(
        call(&node, "POST", "/api/v1/ws-token", Some(&b.token), None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn e2ee_no_token_reaches_a_device_over_the_user_websocket() {
    let node = spawn_node(e2ee_config());
    let (alice, bob) = (Phone::new(), Phone::new());
    let a = register(&node, &alice, 1..2).await;
    let b = register(&node, &bob, 1..2).await;
    let mut ws = DeviceWs::connect(&node, &b).await;
    assert!(ws.until_queue_empty().await.is_empty());
    let device_user = format!("e2ee:{}:1", b.user_id);
    // A signal addressed to the device's hub user from an account's /ws: forbidden.
    let admin = token_with("mallory", |c| c.role = Some("admin".into()));
    let mut mallory = connect(&node.ws(&format!("/ws?token={admin}&client_id=m1")))
        .await
        .unwrap();
    mallory.recv_type("auth_success").await;
    let signal =
        json!({"type": "webrtc_offer", "target_user_id": device_user, "data": {"sdp": "x"}});
    mallory.send(signal).await;
    mallory.expect_error("forbidden").await;
    // A token whose subject is a device's hub user is refused.
    let url = node.ws(&format!("/ws?token={}", token(&device_user)));
    let mut fake = connect(&url).await.unwrap();
    fake.expect_error("forbidden").await;
    // The device got nothing of either: the next frame is a real message.
    send_to(&node, &a, &bob.hash, &["only this"]).await;
    assert_eq!(content(&ws.recv().await), "only this");
}
