//! Both ways to authenticate, bad tokens of every kind, room grants, client ids and takeover.

use std::time::Duration;

use serde_json::json;
use switchboard::auth::{Claims, Tokens};
use switchboard::config::DEV_JWT_SECRET;

use crate::support::*;

fn forged_tokens() -> Vec<(&'static str, String)> {
    let good = token("mallory");
    let parts: Vec<&str> = good.split('.').collect();
    let other_secret = Tokens::new(b"some-other-deployment-secret-0123456789");
    let claims: Claims = serde_json::from_slice(&base64_decode(parts[1])).unwrap();
    let mut admin = claims.clone();
    admin.role = Some("admin".into());
    let tampered_payload = base64_encode(&serde_json::to_vec(&admin).unwrap());
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(DEV_JWT_SECRET.as_bytes()),
    )
    .unwrap();
    vec![
        ("garbage", "not-a-jwt".to_owned()),
        ("empty", String::new()),
        ("other secret", other_secret.mint(&claims)),
        (
            "alg none",
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]),
        ),
        // RS/HS confusion: a token that claims RS256 is refused whatever its signature.
        (
            "alg RS256",
            format!(
                "{}.{}.{}",
                base64_encode(br#"{"alg":"RS256","typ":"JWT"}"#),
                parts[1],
                parts[2]
            ),
        ),
        (
            "tampered payload",
            format!("{}.{tampered_payload}.{}", parts[0], parts[2]),
        ),
        ("hs512", hs512),
        ("expired", token_with("mallory", |c| c.exp = c.iat - 3600)),
        ("huge", "a".repeat(20_000)),
    ]
}

/// The error code a forged token of kind `what` is refused with.
fn code_for(what: &str) -> &'static str {
    if what == "expired" {
        "token_expired"
    } else {
        "unauthorized"
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[tokio::test]
async fn message_auth_flow() {
    let node = spawn_node(test_config());
    let mut c = connect(&node.ws("/ws/lobby")).await.unwrap();
    assert_eq!(c.recv().await, json!({"type":"auth_required"}));
    c.send(json!({"type":"offer","offer":{}})).await;
    c.expect_error("unauthorized").await;
    c.send_text("garbage{").await;
    c.expect_error("invalid_json").await;
    c.send(json!({"type":"auth_token","token":token("alice"),"clientId":"my-client"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type":"auth_success","user":"name-alice","user_id":"alice","client_id":"my-client"})
    );
    assert_eq!(
        c.recv().await,
        json!({"type":"users_in_room","room":"lobby","users":[]})
    );
    c.send(json!({"type":"auth_token","token":token("alice")}))
        .await;
    c.expect_error("already_authenticated").await;
}

#[tokio::test]
async fn invalid_client_ids_are_replaced_by_a_generated_one() {
    let node = spawn_node(test_config());
    let mut c = connect(&node.ws("/ws")).await.unwrap();
    c.recv_type("auth_required").await;
    c.send(json!({"type":"auth_token","token":token("alice"),"clientId":"bad id with spaces!"}))
        .await;
    let ok = c.recv_type("auth_success").await;
    let id = ok["client_id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_ne!(id, "bad id with spaces!");
}

/// A WebSocket client of `url` sending `headers` with the upgrade.
async fn connect_with(url: &str, headers: &[(&'static str, &str)]) -> Client {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    connect_request(request).await.expect("upgrade accepted")
}

#[tokio::test]
async fn bad_tokens_in_the_query_get_an_error_frame_then_1008() {
    let node = spawn_node(test_config());
    for (what, bad) in forged_tokens() {
        // A browser cannot read a refused upgrade's status: the refusal comes as a frame.
        let mut c = connect(&node.ws(&format!("/ws/lobby?token={bad}")))
            .await
            .unwrap_or_else(|r| panic!("{what}: upgrade refused with {}", r.status));
        let error = c.expect_error(code_for(what)).await;
        assert!(error["message"].is_string(), "{what}");
        assert_eq!(c.expect_close().await, 1008, "{what}");
    }
    // A plain HTTP request with a bad token still gets 401 JSON.
    let response = http_get(node.http("/ws/lobby?token=not-a-jwt"))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
}

#[tokio::test]
async fn an_expired_token_is_named_as_such_on_every_path() {
    let node = spawn_node(test_config());
    let expired = token_with("alice", |c| {
        c.iat -= 3600;
        c.exp = c.iat + 60;
    });
    let mut c = connect(&node.ws(&format!("/ws/lobby?token={expired}")))
        .await
        .unwrap();
    c.expect_error("token_expired").await;
    assert_eq!(c.expect_close().await, 1008);

    let mut c = connect(&node.ws("/ws/lobby")).await.unwrap();
    c.recv_type("auth_required").await;
    c.send(json!({"type":"auth_token","token":expired})).await;
    c.expect_error("token_expired").await;
    assert_eq!(c.expect_close().await, 1008);

    let response = http_get(node.http(&format!("/ws/lobby?token={expired}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "token_expired");
}

#[tokio::test]
async fn a_bearer_header_authenticates_an_upgrade_in_any_case() {
    let node = spawn_node(test_config());
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let header = format!("{scheme}   {}  ", token("alice"));
        let mut c = connect_with(
            &node.ws("/ws/lobby?client_id=a1"),
            &[("authorization", &header)],
        )
        .await;
        c.recv_type("auth_success").await;
        c.recv_type("users_in_room").await;
        c.close().await;
    }
    let mut c = connect_with(&node.ws("/ws/lobby"), &[("authorization", "bearer junk")]).await;
    c.expect_error("unauthorized").await;
    assert_eq!(c.expect_close().await, 1008);
}

#[tokio::test]
async fn bad_tokens_in_the_first_message_get_an_error_then_1008() {
    let node = spawn_node(test_config());
    for (what, bad) in forged_tokens() {
        let mut c = connect(&node.ws("/ws/lobby")).await.unwrap();
        c.recv_type("auth_required").await;
        c.send(json!({"type":"auth_token","token":bad})).await;
        c.expect_error(code_for(what)).await;
        assert_eq!(c.expect_close().await, 1008, "{what}");
    }
}

#[tokio::test]
async fn auth_times_out_with_1008() {
    let mut config = test_config();
    config.auth_timeout = Duration::from_millis(200);
    let node = spawn_node(config);
    let mut c = connect(&node.ws("/ws/lobby")).await.unwrap();
    c.recv_type("auth_required").await;
    assert_eq!(c.expect_close().await, 1008);
}

#[tokio::test]
async fn room_grants_are_enforced() {
    let node = spawn_node(test_config());
    let limited = token_with("alice", |c| {
        c.rooms = Some(vec!["team-*".into(), "lobby".into()])
    });

    // Refused in the auth step, the same on both ways in: no auth_success, no users_in_room.
    let mut c = connect(&node.ws(&format!("/ws/secret?token={limited}")))
        .await
        .unwrap();
    let error = c.expect_error("forbidden").await;
    assert_eq!(error["room"], "secret");
    assert_eq!(c.expect_close().await, 1008);

    let mut c = connect(&node.ws("/ws/secret")).await.unwrap();
    c.recv_type("auth_required").await;
    c.send(json!({"type":"auth_token","token":limited})).await;
    c.expect_error("forbidden").await;
    assert_eq!(c.expect_close().await, 1008);

    let response = http_get(node.http(&format!("/ws/secret?token={limited}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let mut c = connect(&node.ws(&format!("/ws/team-blue?token={limited}")))
        .await
        .unwrap();
    c.recv_type("auth_success").await;
    c.recv_type("users_in_room").await;
    c.send(json!({"type":"join","room":"private"})).await;
    c.expect_error("forbidden").await;
    c.send(json!({"type":"join","room":"lobby"})).await;
    c.recv_type("users_in_room").await;
}

#[tokio::test]
async fn same_user_same_client_id_takes_over() {
    let node = spawn_node(test_config());
    let (mut old, _) = Client::join(&node, "call", "alice", "alice-tab").await;
    let (mut peer, _) = Client::join(&node, "call", "bob", "b1").await;
    old.recv_type("user_joined").await;

    let (mut new, users) = Client::join(&node, "call", "alice", "alice-tab").await;
    assert_eq!(
        users["users"],
        json!([{"client_id":"b1","username":"name-bob","user_id":"bob"}])
    );
    assert_eq!(old.expect_close().await, 4001);
    assert_eq!(peer.recv_type("user_left").await["client_id"], "alice-tab");
    assert_eq!(
        peer.recv_type("user_joined").await["client_id"],
        "alice-tab"
    );

    // Signals to the client id now reach the new connection.
    peer.send(json!({"type":"offer","offer":{},"to":"alice-tab"}))
        .await;
    assert_eq!(new.recv_type("offer").await["from"], "b1");
    // The old connection's late cleanup removed nothing of its successor.
    peer.expect_quiet().await;
    new.send(json!({"type":"answer","answer":{},"to":"b1"}))
        .await;
    assert_eq!(peer.recv_type("answer").await["from"], "alice-tab");
}

#[tokio::test]
async fn another_users_client_id_is_refused() {
    let node = spawn_node(test_config());
    let (_alice, _) = Client::join(&node, "call", "alice", "shared-id").await;
    let mut c = connect(&node.ws(&format!(
        "/ws/call?token={}&client_id=shared-id",
        token("mallory")
    )))
    .await
    .unwrap();
    c.expect_error("client_id_taken").await;
    assert_eq!(c.expect_close().await, 1008);
}

#[tokio::test]
async fn invalid_room_names_get_400_before_the_upgrade() {
    let node = spawn_node(test_config());
    let long = "r".repeat(129);
    for room in [
        "has%20space",
        "caf%C3%A9",
        "%F0%9F%98%80",
        long.as_str(),
        "a%2Fb",
        "%FF%FE",
    ] {
        let refused = connect(&node.ws(&format!("/ws/{room}?token={}", token("alice"))))
            .await
            .err();
        let refused = refused.unwrap_or_else(|| panic!("{room}: accepted"));
        assert_eq!(refused.status, 400, "{room}");
        assert_eq!(refused.body["code"], "invalid_room", "{room}");
    }
}

#[tokio::test]
async fn hostile_query_strings_get_400_json() {
    let node = spawn_node(test_config());
    let t = token("alice");
    let refused = connect(&node.ws(&format!("/ws/r?token={t}&token={t}")))
        .await
        .err()
        .unwrap();
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (400, Some("invalid_query"))
    );
    // Unknown parameters are ignored.
    let mut ok = connect(&node.ws(&format!("/ws/r?token={t}&_=123")))
        .await
        .unwrap();
    ok.recv_type("auth_success").await;
}
