//! What must not work, and calls that end without an answer: bad codes (expired, revoked,
//! tampered, mistyped) all look alike, devices racing to answer, an owner offline, a call
//! nobody answers, a third party holding a session id, guessed codes, and junk input.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::calls::code;
use switchboard::store::CallCode;
use tokio_tungstenite::tungstenite::Message;

use super::*;

const INVALID: fn() -> Value = || json!({"valid": false, "canInitiateCall": false});

async fn validate(node: &TestNode, token: &str) -> (u16, Value) {
    post(
        node,
        "/api/v1/tokens/validate",
        None,
        json!({"token": token}),
    )
    .await
}

#[tokio::test]
async fn expired_revoked_tampered_and_mistyped_codes_are_refused_alike() {
    let node = spawn_node(test_config());
    let owner = register(&node).await;
    let good = generate(&node, &owner).await;
    let token = code::parse(&good).unwrap().to_owned();
    // Expired: a code whose time is up.
    let (expired, hash) = code::new_token();
    let row = CallCode {
        id: "expired1".into(),
        user_id: owner.user_id.clone(),
        created_at: 1,
        expires_at: 2,
        is_revoked: false,
    };
    node.state.store.add_call_code(&hash, &row).await.unwrap();
    // Revoked: by its owner.
    let body = json!({"userId": owner.user_id});
    let (_, made) = post(&node, "/api/v1/tokens/generate", Some(&owner.token), body).await;
    let revoked = made["qrCodeData"].as_str().unwrap().to_owned();
    let id = made["tokenId"].as_str().unwrap().to_owned();
    let response = http_client()
        .delete(node.http(&format!("/api/v1/tokens/{id}")))
        .bearer_auth(&owner.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, list) = get_json(&node, "/api/v1/tokens", &owner.token).await;
    let listed = list["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{list}");
    assert!(
        listed
            .iter()
            .any(|c| c["id"] == id.as_str() && c["revoked"] == true)
    );
    assert!(
        !list.to_string().contains(&token),
        "a listing never shows a token"
    );
    // Tampered: another token with a correct checksum.
    let mut other = token.clone().into_bytes();
    other[5] = if other[5] == b'A' { b'B' } else { b'A' };
    let tampered = code::qr_data(&String::from_utf8(other).unwrap());
    // Mistyped: the checksum no longer matches.
    let mistyped = good.replacen(&token[..3], "zzz", 1);
    for bad in [code::qr_data(&expired), revoked, tampered.clone()] {
        assert_eq!(validate(&node, &bad).await, (200, INVALID()), "{bad}");
        let (status, body) = initiate(&node, &bad).await;
        assert_eq!(
            (status, &body["code"]),
            (404, &json!("invalid_code")),
            "{bad}"
        );
        assert_eq!(body["detail"], "this code is not valid");
    }
    for bad in [mistyped.as_str(), "pqc:1:x:y", "", "hello"] {
        assert_eq!(validate(&node, bad).await, (200, INVALID()), "{bad}");
        let (status, body) = initiate(&node, bad).await;
        assert_eq!(
            (status, &body["code"]),
            (400, &json!("malformed_code")),
            "{bad}"
        );
    }
    // The owner draws the good code as an SVG QR image; a damaged one is refused.
    let qr = |data: &str| {
        http_client()
            .post(node.http("/api/v1/tokens/qr"))
            .bearer_auth(&owner.token)
            .json(&json!({"qrCodeData": data}))
            .send()
    };
    let image = qr(&good).await.unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/svg+xml");
    assert!(image.text().await.unwrap().contains("<svg"));
    assert_eq!(qr(&mistyped).await.unwrap().status(), 400);
    // The good code still works, bare or framed.
    assert_eq!(validate(&node, &token).await.1["valid"], true);
    assert_eq!(validate(&node, &good).await.1["valid"], true);
}

async fn get_json(node: &TestNode, path: &str, bearer: &str) -> (u16, Value) {
    let response = http_client()
        .get(node.http(path))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A node without the code-check limits (for tests that start many calls).
fn unlimited() -> switchboard::config::Config {
    let mut config = test_config();
    config.calls.ip_rate = 0;
    config.calls.code_rate = 0;
    config
}

#[tokio::test]
async fn of_two_devices_answering_at_once_exactly_one_wins_every_time() {
    let node = spawn_node(unlimited());
    let owner = register(&node).await;
    let code = generate(&node, &owner).await;
    let mut phone = device(&node, &owner, "phone").await;
    for round in 0..30 {
        let (_, call) = initiate(&node, &code).await;
        let session = call["sessionId"].as_str().unwrap();
        phone.recv_type("incoming_call").await;
        let (one, two) = tokio::join!(
            accept(&node, &owner, session),
            accept(&node, &owner, session)
        );
        let mut statuses = [one.0, two.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {one:?} {two:?}");
        phone.recv_type("call_answered").await;
    }
}

#[tokio::test]
async fn a_call_to_an_owner_with_no_device_online_is_missed() {
    let node = spawn_node(test_config());
    let owner = register(&node).await;
    let code = generate(&node, &owner).await;
    let (status, call) = initiate(&node, &code).await;
    assert_eq!((status, call["status"].as_str()), (200, Some("missed")));
    let session = call["sessionId"].as_str().unwrap();
    let row = node.state.store.call(session).await.unwrap().unwrap();
    assert_eq!(row.status, "missed");
    let (status, body) = accept(&node, &owner, session).await;
    assert_eq!((status, body["code"].as_str()), (410, Some("call_over")));
}

#[tokio::test]
async fn a_call_nobody_answers_is_missed_at_the_ring_timeout_and_a_refusal_ends_it() {
    let mut config = test_config();
    config.calls.ring_timeout = Duration::from_secs(1);
    let node = spawn_node(config);
    let owner = register(&node).await;
    let code = generate(&node, &owner).await;
    let mut phone = device(&node, &owner, "phone").await;
    let (_, call) = initiate(&node, &code).await;
    let session = call["sessionId"].as_str().unwrap();
    let (mut caller, _) = Leg::join(&node, session, call["signalingToken"].as_str().unwrap()).await;
    phone.recv_type("incoming_call").await;
    let ended = phone.recv_type("call_ended").await;
    assert_eq!(
        (ended["sessionId"].as_str(), ended["reason"].as_str()),
        (Some(session), Some("missed"))
    );
    assert_eq!(caller.recv_type("call-ended").await["reason"], "missed");
    assert_eq!(caller.closed().await, Some(1000));
    assert_eq!(
        node.state
            .store
            .call(session)
            .await
            .unwrap()
            .unwrap()
            .status,
        "missed"
    );

    let (_, call) = initiate(&node, &code).await;
    let session = call["sessionId"].as_str().unwrap();
    phone.recv_type("incoming_call").await;
    let path = format!("/api/v1/calls/{session}/reject");
    let (status, _) = post(&node, &path, Some(&owner.token), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(phone.recv_type("call_ended").await["reason"], "rejected");
    assert_eq!(
        node.state
            .store
            .call(session)
            .await
            .unwrap()
            .unwrap()
            .status,
        "rejected"
    );
}

#[tokio::test]
async fn a_session_id_alone_never_joins_a_call() {
    let node = spawn_node(test_config());
    let owner = register(&node).await;
    let code = generate(&node, &owner).await;
    let _phone = device(&node, &owner, "phone").await;
    let (_, call) = initiate(&node, &code).await;
    let (_, other) = initiate(&node, &code).await;
    let session = call["sessionId"].as_str().unwrap();
    let wrong = other["signalingToken"].as_str().unwrap();
    for secret in ["", "nope", wrong] {
        let (status, body) = Leg::open(&node, session, secret).await.err().unwrap();
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{secret}"
        );
    }
    let url = node.ws(&format!("/api/v1/calls/signaling/{session}"));
    let refused = tokio_tungstenite::connect_async(url).await.err().unwrap();
    assert!(refused.to_string().contains("401"), "{refused}");
    for bad in ["x", "session_zz", "%2e%2e", &format!("{session}0")] {
        let (status, body) = Leg::open(&node, bad, "t").await.err().unwrap();
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("no_such_call")),
            "{bad}"
        );
    }
    // Someone else's account cannot answer it either.
    let stranger = register(&node).await;
    let (status, body) = accept(&node, &stranger, session).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("no_such_call")));
    let (status, _) = post(
        &node,
        &format!("/api/v1/calls/{session}/accept"),
        None,
        json!({}),
    )
    .await;
    assert_eq!(status, 401);
    // Nor generate codes for the owner.
    let body = json!({"userId": owner.user_id});
    let (status, _) = post(
        &node,
        "/api/v1/tokens/generate",
        Some(&stranger.token),
        body,
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn guessing_thousands_of_codes_is_stopped_by_the_limits() {
    let node = spawn_node(test_config());
    let owner = register(&node).await;
    let good = generate(&node, &owner).await;
    let client = http_client();
    let url = node.http("/api/v1/tokens/validate");
    let mut answered = 0;
    let mut limited = 0;
    for _ in 0..2000 {
        let (guess, _) = code::new_token();
        let body = json!({"token": code::qr_data(&guess)});
        let response = client.post(&url).json(&body).send().await.unwrap();
        match response.status().as_u16() {
            200 => answered += 1,
            429 => {
                limited += 1;
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["code"], "rate_limited");
            }
            other => panic!("{other}"),
        }
    }
    // calls.ip_burst (20), and the one or two that the sustained rate adds meanwhile.
    assert!(answered <= 25, "{answered} guesses answered");
    assert_eq!(answered + limited, 2000);
    // One code hammered (the address limit off) runs into the per-code limit.
    let mut config = test_config();
    config.calls.ip_rate = 0;
    let node = spawn_node(config);
    let owner = register(&node).await;
    let good_two = generate(&node, &owner).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(validate(&node, &good_two).await.0);
    }
    assert!(statuses[..10].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 15,
        "{statuses:?}"
    );
    drop(good);
}

#[tokio::test]
async fn junk_bodies_and_frames_get_stable_error_codes_and_the_call_goes_on() {
    let node = spawn_node(test_config());
    for (path, body) in [
        ("/api/v1/tokens/validate", "not json"),
        ("/api/v1/calls/initiate", "{\"scannedToken\": 5}"),
        ("/api/v1/auth/login", "[]"),
    ] {
        let response = http_client()
            .post(node.http(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert!((400..500).contains(&status), "{path}: {status}");
        assert_eq!(answer["code"], "invalid_body", "{path}");
        assert!(answer["detail"].is_string());
    }
    let huge = json!({"token": "a".repeat(200_000)});
    let (status, answer) = post(&node, "/api/v1/tokens/validate", None, huge).await;
    assert_eq!((status, answer["code"].as_str()), (413, Some("too_large")));
    let body = json!({"scannedToken": "x", "callerAnonymousId": "anon_<script>"});
    let (status, answer) = post(&node, "/api/v1/calls/initiate", None, body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_anonymous_id"))
    );

    let owner = register(&node).await;
    let code = generate(&node, &owner).await;
    let _phone = device(&node, &owner, "phone").await;
    let (_, call) = initiate(&node, &code).await;
    let session = call["sessionId"].as_str().unwrap();
    let (mut leg, _) = Leg::join(&node, session, call["signalingToken"].as_str().unwrap()).await;
    for (junk, want) in [
        ("garbage", "invalid_message"),
        ("{\"type\":\"join\"}", "unknown_type"),
        ("{\"type\":\"offer\",\"payload\":7}", "invalid_payload"),
        ("{\"type\":\"offer\",\"payload\":{}}", "peer_not_connected"),
    ] {
        leg.send_text(junk).await;
        let error = leg.recv_type("error").await;
        assert_eq!(error["code"], want, "{junk}");
    }
    leg.send_raw(Message::binary(vec![0u8, 1, 2])).await;
    assert_eq!(leg.recv_type("error").await["code"], "invalid_message");
    // Still serving: the call can be answered and signals flow.
    let (status, answered) = accept(&node, &owner, session).await;
    assert_eq!(status, 200);
    leg.recv_type("accepted").await;
    let (mut b, _) = Leg::join(&node, session, answered["signalingToken"].as_str().unwrap()).await;
    leg.send(offer("sha-256 01:02")).await;
    assert_eq!(b.recv_type("offer").await["from"], call["anonymousId"]);
    // The owner's device opens a second socket: it takes over (4001), and the caller is not told
    // the owner left. When the owner's socket goes without a hang-up, the caller is.
    let secret = answered["signalingToken"].as_str().unwrap();
    let (b2, _) = Leg::join(&node, session, secret).await;
    assert_eq!(b.closed().await, Some(4001));
    drop(b2);
    let mut before = Vec::new();
    let left = loop {
        let frame = leg.recv().await;
        if frame["type"] == "peer-left" {
            break frame;
        }
        before.push(frame["type"].as_str().unwrap().to_owned());
    };
    assert_eq!(left["peer"], answered["anonymousId"]);
    assert_eq!(
        before,
        ["peer-joined", "peer-joined"],
        "one per socket, no peer-left between"
    );
}

#[tokio::test]
async fn a_participant_flooding_its_signaling_socket_is_refused_then_closed() {
    let mut config = test_config();
    config.msg_rate = 5;
    config.msg_burst = 5;
    let node = spawn_node(config);
    let owner = register(&node).await;
    let code = generate(&node, &owner).await;
    let _phone = device(&node, &owner, "phone").await;
    let (_, call) = initiate(&node, &code).await;
    let session = call["sessionId"].as_str().unwrap();
    let (mut leg, _) = Leg::join(&node, session, call["signalingToken"].as_str().unwrap()).await;
    // The node may close the socket before all of them are written.
    for _ in 0..200 {
        if !leg.try_send_text("{\"type\":\"hang-up?\"}").await {
            break;
        }
    }
    let mut codes = Vec::new();
    let closed = loop {
        match leg.next().await {
            Ok(frame) => codes.push(frame["code"].as_str().unwrap_or_default().to_owned()),
            Err(code) => break code,
        }
    };
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
    assert_eq!(closed, Some(1008), "{codes:?}");
}

#[tokio::test]
async fn an_answered_call_ends_as_expired_at_the_session_timeout() {
    let mut config = test_config();
    config.calls.session_timeout = Duration::from_secs(10);
    config.calls.ring_timeout = Duration::from_secs(5);
    let node = spawn_node(config);
    let owner = register(&node).await;
    let code = generate(&node, &owner).await;
    let _phone = device(&node, &owner, "phone").await;
    let (_, call) = initiate(&node, &code).await;
    let session = call["sessionId"].as_str().unwrap();
    let (mut a, _) = Leg::join(&node, session, call["signalingToken"].as_str().unwrap()).await;
    let (_, answered) = accept(&node, &owner, session).await;
    let (mut b, _) = Leg::join(&node, session, answered["signalingToken"].as_str().unwrap()).await;
    for leg in [&mut a, &mut b] {
        let ended = tokio::time::timeout(Duration::from_secs(15), leg.recv_type("call-ended"));
        assert_eq!(
            ended.await.expect("within the timeout")["reason"],
            "expired"
        );
    }
    let row = node.state.store.call(session).await.unwrap().unwrap();
    assert_eq!(row.status, "expired");
    let lasted = row.ended_at.unwrap() - row.answered_at.unwrap();
    assert!((9..=12).contains(&lasted), "{lasted} s");
}

#[tokio::test]
async fn no_token_reaches_a_calls_side_over_the_user_websocket() {
    let node = spawn_node(test_config());
    let owner = register(&node).await;
    let code = generate(&node, &owner).await;
    let _phone = device(&node, &owner, "phone").await;
    let (_, call) = initiate(&node, &code).await;
    let session = call["sessionId"].as_str().unwrap();
    let (mut leg, _) = Leg::join(&node, session, call["signalingToken"].as_str().unwrap()).await;
    // A signal addressed to the caller's side from an account's /ws: forbidden, not delivered.
    let admin = token_with("mallory", |c| c.role = Some("admin".into()));
    let url = node.ws(&format!("/ws?token={admin}&client_id=m1"));
    let mut mallory = connect(&url).await.unwrap();
    mallory.recv_type("auth_success").await;
    let target = format!("call:{session}:a");
    let signal = json!({"type": "webrtc_offer", "target_user_id": target, "data": {"sdp": "x"}});
    mallory.send(signal).await;
    mallory.expect_error("forbidden").await;
    // A token whose subject is a call's side is refused.
    let url = node.ws(&format!("/ws?token={}", token(&target)));
    let mut fake = connect(&url).await.unwrap();
    fake.expect_error("forbidden").await;
    // The caller's socket got nothing of either.
    leg.send(json!({"type": "hang-up"})).await;
    let mut got = Vec::new();
    let closed = loop {
        match leg.next().await {
            Ok(frame) => got.push(frame["type"].as_str().unwrap_or_default().to_owned()),
            Err(code) => break code,
        }
    };
    assert_eq!(closed, Some(1000));
    assert!(!got.iter().any(|t| t.starts_with("webrtc")), "{got:?}");
}
