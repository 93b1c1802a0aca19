//! The `/auth` API on a real node with its store: logins (JSON and the OAuth2 password grant),
//! `/auth/me`, refresh-token rotation and reuse, logout, and hostile bodies.

use serde_json::{Value, json};
use switchboard::accounts;

use crate::support::*;

async fn node_with_alice() -> TestNode {
    let node = spawn_node(test_config());
    let store = &node.state.store;
    accounts::add_user(
        store,
        "Alice",
        "password-1",
        Some("a@example.org"),
        "user",
        1,
    )
    .await
    .unwrap();
    node
}

async fn post(node: &TestNode, path: &str, body: Value) -> (u16, Value) {
    let response = http_client()
        .post(node.http(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn login(node: &TestNode, username: &str, password: &str) -> (u16, Value) {
    post(
        node,
        "/auth/login",
        json!({"username": username, "password": password}),
    )
    .await
}

#[tokio::test]
async fn a_login_gives_tokens_that_open_the_websocket_and_auth_me() {
    let node = node_with_alice().await;
    let response = http_client()
        .post(node.http("/auth/login"))
        .json(&json!({"username": "alice", "password": "password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let (status, body) = (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["token_type"].as_str(), body["expires_in"].as_u64()),
        (Some("bearer"), Some(3600))
    );
    assert_eq!(body["user"]["username"], "Alice");
    assert!(body["user"].get("password_hash").is_none());
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);
    let access = body["access_token"].as_str().unwrap();

    let me = http_client()
        .get(node.http("/auth/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(
        (me["username"].as_str(), me["email"].as_str()),
        (Some("Alice"), Some("a@example.org"))
    );
    assert!(me["last_login_at"].is_i64());

    let mut ws = connect(&node.ws(&format!("/ws/room?token={access}")))
        .await
        .unwrap();
    let ok = ws.recv_type("auth_success").await;
    assert_eq!(
        (ok["user"].as_str(), ok["user_id"].clone()),
        (Some("Alice"), me["id"].clone())
    );
}

#[tokio::test]
async fn wrong_passwords_unknown_and_disabled_users_get_one_answer() {
    let node = node_with_alice().await;
    let (_, expected) = login(&node, "alice", "wrong-password").await;
    assert_eq!(expected["code"], "invalid_credentials");
    let (status, unknown) = login(&node, "nobody", "password-1").await;
    assert_eq!((status, &unknown), (401, &expected));
    let alice = node
        .state
        .store
        .user_by_name("alice")
        .await
        .unwrap()
        .unwrap();
    node.state.store.set_active(&alice.id, false).await.unwrap();
    let (status, disabled) = login(&node, "alice", "password-1").await;
    assert_eq!((status, &disabled), (401, &expected));
    let events = node.state.store.events(10).await.unwrap();
    let failed = events.iter().filter(|e| e.kind == "login_failed").count();
    assert_eq!(failed, 3);
    assert!(events.iter().all(|e| e.ip.as_deref() == Some("127.0.0.1")));
    assert!(
        events
            .iter()
            .all(|e| !format!("{e:?}").contains("password-1"))
    );
}

#[tokio::test]
async fn the_oauth2_password_grant_answers_in_oauth2_shapes() {
    let node = node_with_alice().await;
    let form = |fields: &[(&str, &str)]| {
        let client = http_client();
        let request = client.post(node.http("/auth/token")).form(fields);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let grant = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "password-1"),
    ];
    let (status, ok) = form(&grant).await;
    assert_eq!((status, ok["token_type"].as_str()), (200, Some("bearer")));
    let (status, bad) = form(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "x"),
    ])
    .await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, bad) = form(&[("grant_type", "client_credentials")]).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, bad) = post(&node, "/auth/token", json!({"grant_type": "password"})).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, bad) = form(&[("grant_type", "password"), ("username", "alice")]).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_its_family() {
    let node = node_with_alice().await;
    let (_, first) = login(&node, "alice", "password-1").await;
    let old = first["refresh_token"].as_str().unwrap();
    let (status, second) = post(&node, "/auth/refresh", json!({"refresh_token": old})).await;
    assert_eq!(status, 200, "{second}");
    let new = second["refresh_token"].as_str().unwrap();
    assert_ne!(new, old);
    // The spent token again: refused, and the family (with the new token) revoked.
    let (status, body) = post(&node, "/auth/refresh", json!({"refresh_token": old})).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = post(&node, "/auth/refresh", json!({"refresh_token": new})).await;
    assert_eq!(status, 401);
    let (status, _) = post(&node, "/auth/refresh", json!({"refresh_token": "made-up"})).await;
    assert_eq!(status, 401);
    let events = node.state.store.events(20).await.unwrap();
    let reused = events.iter().filter(|e| e.kind == "refresh_reused").count();
    assert_eq!(reused, 2, "the spent token, then its revoked successor");
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let node = node_with_alice().await;
    let (_, tokens) = login(&node, "alice", "password-1").await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let response = http_client()
        .post(node.http("/auth/logout"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = post(&node, "/auth/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(status, 401);
    let events = node.state.store.events(20).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "logged_out"), "{events:?}");

    // Another user's refresh token cannot be logged out.
    let (_, alices) = login(&node, "alice", "password-1").await;
    let (_, bobs) = post(
        &node,
        "/auth/register",
        json!({"username": "bob", "password": "password-1"}),
    )
    .await;
    let response = http_client()
        .post(node.http("/auth/logout"))
        .bearer_auth(bobs["access_token"].as_str().unwrap())
        .json(&json!({"refresh_token": alices["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let (status, _) = post(
        &node,
        "/auth/refresh",
        json!({"refresh_token": alices["refresh_token"]}),
    )
    .await;
    assert_eq!(status, 200, "alice's session survives");
}

#[tokio::test]
async fn hostile_bodies_get_json_errors_and_the_node_keeps_serving() {
    let node = node_with_alice().await;
    let client = http_client();
    let send = |body: Vec<u8>, content_type: &'static str| {
        let request = client
            .post(node.http("/auth/login"))
            .header("content-type", content_type)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for (body, content_type, status) in [
        (
            br#"{"username":"alice","password":"password-1"}"#.to_vec(),
            "text/plain",
            415,
        ),
        (b"{not json".to_vec(), "application/json", 400),
        (br#"{"username":"alice"}"#.to_vec(), "application/json", 422),
        (
            br#"{"username":1,"password":[]}"#.to_vec(),
            "application/json",
            422,
        ),
        (vec![b' '; 1 << 20], "application/json", 413),
    ] {
        let (got, answer) = send(body, content_type).await;
        assert_eq!(got, status, "{answer}");
        assert!(
            answer["code"].is_string() && answer["detail"].is_string(),
            "{answer}"
        );
    }
    let (status, _) = login(&node, "alice", "password-1").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn registration_creates_and_logs_in_when_open_and_is_refused_when_closed() {
    let node = spawn_node(test_config());
    let new = json!({"username": "carol", "password": "password-1", "email": "c@example.org"});
    let (status, body) = post(&node, "/auth/register", new.clone()).await;
    assert_eq!(
        (status, body["user"]["username"].as_str()),
        (201, Some("carol"))
    );
    assert!(body["access_token"].is_string());
    let (status, body) = post(
        &node,
        "/auth/register",
        json!({"username": "CAROL", "password": "password-2"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("username_taken"))
    );
    for (body, code) in [
        (
            json!({"username": "c", "password": "password-1"}),
            "invalid_username",
        ),
        (
            json!({"username": "dave", "password": "short"}),
            "invalid_password",
        ),
    ] {
        let (status, answer) = post(&node, "/auth/register", body).await;
        assert_eq!((status, answer["code"].as_str()), (400, Some(code)));
    }
    assert_eq!(login(&node, "carol", "password-1").await.0, 200);

    let mut closed = test_config();
    closed.registration = "closed".into();
    let node = spawn_node(closed);
    let (status, body) = post(&node, "/auth/register", new).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("registration_closed"))
    );
}

/// A node whose store is a fresh database on the test Postgres.
async fn postgres_node() -> TestNode {
    let admin = std::env::var("SWITCHBOARD_TEST_DATABASE_URL").expect("run scripts/test");
    let name = format!("auth_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    let mut config = test_config();
    config.database.url = switchboard::config::Secret::new(format!("{base}/{name}"));
    let node = spawn_node_on(config, Backing::FromConfig);
    node.state.store.migrate().await.unwrap();
    node
}

#[tokio::test]
#[ignore = "needs Postgres: run scripts/test"]
async fn the_auth_api_on_postgres() {
    let node = postgres_node().await;
    let store = &node.state.store;
    assert_eq!(store.engine(), "postgres");
    accounts::add_user(store, "Alice", "password-1", None, "admin", 1)
        .await
        .unwrap();
    let (status, tokens) = login(&node, "ALICE", "password-1").await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["user"]["role"], "admin");
    let (status, wrong) = login(&node, "alice", "password-2").await;
    assert_eq!(
        (status, wrong["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (status, taken) = post(
        &node,
        "/auth/register",
        json!({"username": "aLiCe", "password": "password-1"}),
    )
    .await;
    assert_eq!(
        (status, taken["code"].as_str()),
        (409, Some("username_taken"))
    );

    let first = tokens["refresh_token"].clone();
    let (status, rotated) = post(&node, "/auth/refresh", json!({"refresh_token": first})).await;
    assert_eq!(status, 200, "{rotated}");
    let (status, _) = post(&node, "/auth/refresh", json!({"refresh_token": first})).await;
    assert_eq!(status, 401, "reuse");
    let second = rotated["refresh_token"].clone();
    let (status, _) = post(&node, "/auth/refresh", json!({"refresh_token": second})).await;
    assert_eq!(status, 401, "the family went with the reuse");
    let events = store.events(10).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "refresh_reused"));
    assert!(events.iter().any(|e| e.kind == "login_failed"));
}

#[tokio::test]
async fn a_node_deletes_expired_refresh_tokens() {
    let dir = std::env::temp_dir().join(format!("sb-purge-{}", uuid::Uuid::new_v4().simple()));
    let mut config = test_config();
    config.database.url =
        switchboard::config::Secret::new(format!("sqlite://{}/switchboard.db", dir.display()));
    let store = switchboard::backends::open_store(&config).await.unwrap();
    let user = accounts::add_user(&store, "alice", "password-1", None, "user", 1)
        .await
        .unwrap();
    let expired = switchboard::store::RefreshToken {
        id: "expired".into(),
        user_id: user.id,
        family_id: "f".into(),
        token_hash: "hash-of-expired".into(),
        created_at: 1,
        expires_at: 2,
        revoked: false,
        replaced_by: None,
    };
    store.add_refresh_token(&expired).await.unwrap();
    store.close().await;

    let node = spawn_node_on(config, Backing::FromConfig);
    let deadline = std::time::Instant::now() + WAIT;
    while node
        .state
        .store
        .refresh_token("hash-of-expired")
        .await
        .unwrap()
        .is_some()
    {
        assert!(std::time::Instant::now() < deadline, "not purged");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Off this runtime: the node's drain waits for its pool's connections to come back, and
    // the one this test used returns through this runtime.
    tokio::task::spawn_blocking(move || node.shutdown())
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
