//! The REST surface: health, readiness, rooms, presence, metrics, and JSON errors everywhere.

use serde_json::{Value, json};

use crate::support::*;

async fn get(url: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut request = http_client().get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn health_endpoints() {
    let node = spawn_node(test_config());
    assert_eq!(
        get(&node.http("/"), None).await,
        (200, json!({"status":"ok"}))
    );
    assert_eq!(get(&node.http("/healthz"), None).await.0, 200);
    let (status, ready) = get(&node.http("/readyz"), None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));

    let (_a, _) = Client::join(&node, "r", "alice", "a1").await;
    for path in ["/health", "/health/"] {
        let (status, health) = get(&node.http(path), None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(health["status"], "healthy");
        assert_eq!(health["node_id"], node.node_id().to_string());
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            (health["connections"].as_u64(), health["rooms"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(
            health["services"],
            json!({
                "bus": {"status": "ok", "backend": "memory"},
                "presence": {"status": "ok", "backend": "memory"},
                "tasks": {"status": "ok"},
                "database": {"status": "ok", "backend": "sqlite"},
            })
        );
        assert_eq!(health["errors"], json!([]));
        assert!(health.get("redis").is_none(), "no Redis configured");
        assert!(health["uptime_seconds"].is_u64());
    }
    node.state.start_draining();
    let (status, health) = get(&node.http("/health"), None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")));
}

#[tokio::test]
async fn the_bearer_scheme_is_read_in_any_case_with_any_spacing() {
    let node = spawn_node(test_config());
    let token = token("alice");
    let headers = [
        (format!("Bearer {token}"), 200),
        (format!("bearer {token}"), 200),
        (format!("BEARER   {token}  "), 200),
        (format!("  bEaReR\t{token}"), 200),
        (format!("Basic {token}"), 401),
        ("Bearer".into(), 401),
        (token.clone(), 401),
    ];
    for (header, status) in headers {
        let response = http_client()
            .get(node.http("/api/rooms"))
            .header("authorization", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{header:?}");
    }
    let expired = token_with("alice", |c| {
        c.iat -= 3600;
        c.exp = c.iat + 60;
    });
    let (status, body) = get(&node.http("/api/rooms"), Some(&expired)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_expired"))
    );
}

#[tokio::test]
async fn rooms_api_needs_a_token_and_membership() {
    let node = spawn_node(test_config());
    let (_a, _) = Client::join(&node, "team", "alice", "a1").await;
    let (_b, _) = Client::join(&node, "team", "bob", "b1").await;

    let (status, body) = get(&node.http("/api/rooms"), None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = get(&node.http("/api/rooms"), Some("garbage")).await;
    assert_eq!(status, 401);

    let (status, body) = get(&node.http("/api/rooms"), Some(&token("eve"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"rooms":[{"room":"team","members":2}]}));

    let (status, body) = get(&node.http("/api/rooms/team"), Some(&token("alice"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["members"][1],
        json!({"client_id":"b1","username":"name-bob","user_id":"bob"})
    );

    let (status, body) = get(&node.http("/api/rooms/team"), Some(&token("eve"))).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let admin = token_with("root", |c| c.role = Some("admin".into()));
    assert_eq!(
        get(&node.http("/api/rooms/team"), Some(&admin)).await.0,
        200
    );

    let info = http_client()
        .post(node.http("/api/rooms/team/info"))
        .bearer_auth(token("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    let huge = http_client()
        .post(node.http("/api/rooms/team/info"))
        .bearer_auth(token("bob"))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let body: Value = huge.json().await.expect("a JSON 413");
    assert_eq!(body["code"], "too_large");
    let (status, body) = get(&node.http("/api/rooms/bad%20room"), Some(&admin)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_room")));
}

#[tokio::test]
async fn user_presence() {
    let node = spawn_node(test_config());
    let _phone = Client::user(&node, "bob", "p").await;
    let _laptop = Client::user(&node, "bob", "l").await;
    let (status, body) = get(&node.http("/api/users/bob/presence"), Some(&token("bob"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"user_id":"bob","online":true,"devices":2}));
    // Another user may not ask; an admin may.
    let (status, body) = get(&node.http("/api/users/bob/presence"), Some(&token("alice"))).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let admin = token_with("root", |c| c.role = Some("admin".into()));
    let (status, body) = get(&node.http("/api/users/nobody/presence"), Some(&admin)).await;
    assert_eq!((status, body["online"].as_bool()), (200, Some(false)));
}

#[tokio::test]
async fn the_room_list_shows_what_a_token_may_see_a_page_at_a_time() {
    let node = spawn_node(test_config());
    let mut clients = Vec::new();
    for room in ["acme-1", "acme-2", "acme-3", "other"] {
        clients.push(
            Client::join(&node, room, "alice", &format!("c-{room}"))
                .await
                .0,
        );
    }
    let names = |body: &Value| -> Vec<String> {
        body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room"].as_str().unwrap().to_owned())
            .collect()
    };
    // A token granted `acme-*` sees those rooms only.
    let acme = token_with("eve", |c| c.rooms = Some(vec!["acme-*".into()]));
    let (status, body) = get(&node.http("/api/rooms"), Some(&acme)).await;
    assert_eq!(status, 200);
    assert_eq!(names(&body), ["acme-1", "acme-2", "acme-3"]);
    assert!(body.get("next").is_none());
    // Pages: `next` is the `after` of the following page.
    let admin = token_with("root", |c| c.role = Some("admin".into()));
    let (_, first) = get(&node.http("/api/rooms?limit=3"), Some(&admin)).await;
    assert_eq!(names(&first), ["acme-1", "acme-2", "acme-3"]);
    assert_eq!(first["next"], "acme-3");
    let (_, second) = get(&node.http("/api/rooms?limit=3&after=acme-3"), Some(&admin)).await;
    assert_eq!(names(&second), ["other"]);
    assert!(second.get("next").is_none());
    for bad in ["limit=0", "limit=1001", "limit=x", "after=bad%20room"] {
        let (status, body) = get(&node.http(&format!("/api/rooms?{bad}")), Some(&admin)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let node = spawn_node(test_config());
    let (status, body) = get(&node.http("/nope"), None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let response = http_client()
        .delete(node.http("/api/rooms"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    // A plain GET on the WebSocket endpoint is not an upgrade.
    let (status, body) = get(&node.http(&format!("/ws/r?token={}", token("a"))), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("not_websocket"))
    );
}

#[tokio::test]
async fn metrics_are_exported() {
    let node = spawn_node(test_config());
    let (mut a, _) = Client::join(&node, "r", "alice", "a1").await;
    a.send(json!({"type":"bogus"})).await;
    a.expect_error("unknown_type").await;
    let text = scrape(node.metrics_addr.unwrap()).await;
    assert!(
        text.contains("switchboard_connections_opened_total"),
        "{text}"
    );
    assert!(
        text.contains("switchboard_message_errors_total{code=\"unknown_type\"}"),
        "{text}"
    );
}

/// Browsers ask before a cross-origin PUT or DELETE (the E2EE relay's keys and messages, a QR
/// code's revocation): every method the API uses is allowed.
#[tokio::test]
async fn preflights_allow_every_method_the_api_uses() {
    let node = spawn_node(test_config());
    for (method, path) in [
        ("GET", "/api/rooms"),
        ("POST", "/auth/login"),
        ("PUT", "/api/v1/keys"),
        ("DELETE", "/api/v1/tokens/some-id"),
    ] {
        let response = http_client()
            .request(reqwest::Method::OPTIONS, node.http(path))
            .header("origin", "https://app.example")
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{method} {path}: {}",
            response.status()
        );
        let allowed = response.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(allowed.contains(method), "{method} {path}: {allowed}");
    }
}
