//! Tokens from every source and their revocation: logout stopping an access token on every
//! node (through the bus, and through the store for what the bus missed), API keys created and
//! revoked with the `switchboard` binary, tokens of an external issuer verified with its JWKS
//! (from a file and over HTTP, with rotation), and account lockout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard::accounts;
use switchboard::auth::Revocation;
use switchboard::config::{Config, Secret};

use crate::support::*;

async fn add_alice(node: &TestNode) {
    accounts::add_user(&node.state.store, "alice", "password-1", None, "user", 1)
        .await
        .unwrap();
}

/// Logs in; returns the answer's access and refresh tokens.
async fn login(node: &TestNode, username: &str, password: &str) -> (String, String) {
    let (status, body) = post(
        node,
        "/auth/login",
        None,
        json!({"username": username, "password": password}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let field = |name: &str| body[name].as_str().unwrap().to_owned();
    (field("access_token"), field("refresh_token"))
}

async fn post(node: &TestNode, path: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http_client().post(node.http(path)).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn me(node: &TestNode, token: &str) -> (u16, Value) {
    let response = http_client()
        .get(node.http("/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A WebSocket authenticated with `token`, past `auth_success`.
async fn open(node: &TestNode, token: &str) -> Client {
    let mut client = connect(&node.ws(&format!("/ws?token={token}")))
        .await
        .expect("upgrade accepted");
    client.recv_type("auth_success").await;
    client
}

/// The error code a WebSocket opened with `token` is refused with (then closed with 1008).
async fn refused(node: &TestNode, token: &str) -> String {
    let mut client = connect(&node.ws(&format!("/ws?token={token}")))
        .await
        .expect("upgrade accepted");
    let error = client.recv_type("error").await;
    assert_eq!(client.expect_close().await, 1008);
    error["code"].as_str().unwrap().to_owned()
}

/// Asserts that `client` is told its token was revoked and closed with 4004.
async fn expect_revoked(client: &mut Client) {
    let (frames, code) = client.drain_until_close().await;
    assert_eq!(code, 4004, "{frames:?}");
    let last = frames.last().expect("an error frame before the close");
    assert_eq!(last["code"], "token_revoked", "{frames:?}");
}

#[tokio::test]
async fn logout_stops_the_access_token_on_every_node_and_closes_its_connections() {
    // Two nodes on one bus, each with its own database: only the bus can tell node B.
    let nodes = spawn_memory_cluster(2, &test_config());
    let (a, b) = (&nodes[0], &nodes[1]);
    add_alice(a).await;
    let (access, refresh) = login(a, "alice", "password-1").await;
    let (other, _) = login(a, "alice", "password-1").await;
    let mut on_a = open(a, &access).await;
    let mut on_b = open(b, &access).await;
    let mut other_session = open(b, &other).await;

    let (status, body) = post(
        a,
        "/auth/logout",
        Some(&access),
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("logged_out")));
    expect_revoked(&mut on_a).await;
    expect_revoked(&mut on_b).await;
    // The same user's other login is untouched.
    other_session.expect_quiet().await;

    for node in [a, b] {
        assert_eq!(refused(node, &access).await, "token_revoked");
        let (status, body) = me(node, &access).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("token_revoked"))
        );
    }
    let (status, _) = post(a, "/auth/refresh", None, json!({"refresh_token": refresh})).await;
    assert_eq!(status, 401, "the refresh token went with the logout");
    let (status, _) = me(a, &other).await;
    assert_eq!(status, 200);
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn logout_on_one_node_closes_a_websocket_on_another_through_redis() {
    use crate::cluster::{Redis, redis_config, spawn_cluster};
    for redis in [Redis::Standalone, Redis::Cluster] {
        // Each node has its own database: the revocation can only travel through Redis.
        let nodes = spawn_cluster(2, &redis_config(&redis.url()));
        let (a, b) = (&nodes[0], &nodes[1]);
        add_alice(a).await;
        let (access, refresh) = login(a, "alice", "password-1").await;
        let mut on_b = open(b, &access).await;
        let (status, _) = post(
            a,
            "/auth/logout",
            Some(&access),
            json!({"refresh_token": refresh}),
        )
        .await;
        assert_eq!(status, 200, "{redis:?}");
        expect_revoked(&mut on_b).await;
        assert_eq!(refused(b, &access).await, "token_revoked", "{redis:?}");
    }
}

#[tokio::test]
async fn logout_without_a_body_stops_the_access_token() {
    let node = spawn_node(test_config());
    add_alice(&node).await;
    let (access, _) = login(&node, "alice", "password-1").await;
    let response = http_client()
        .post(node.http("/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(me(&node, &access).await.0, 401);
    // A body that is not JSON is refused, and nothing is revoked.
    let (fresh, _) = login(&node, "alice", "password-1").await;
    let response = http_client()
        .post(node.http("/auth/logout"))
        .bearer_auth(&fresh)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_body");
    assert_eq!(me(&node, &fresh).await.0, 200);
}

/// A config whose store is a fresh SQLite file, so that nodes and the binary share it.
fn shared_file_config(tag: &str) -> (Config, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sb-{tag}-{}", uuid::Uuid::new_v4().simple()));
    let mut config = test_config();
    let url = format!("sqlite://{}/db.sqlite", dir.display());
    config.database.url = Secret::new(url);
    (config, dir)
}

#[tokio::test]
async fn a_revocation_the_bus_missed_arrives_through_the_store() {
    let (config, dir) = shared_file_config("revoke-store");
    let node = spawn_node(config);
    let token = token("bob");
    let mut client = open(&node, &token).await;
    // Written to the store only, as `switchboard user disable` does.
    let now = switchboard::auth::unix_now();
    let revocation = Revocation::User {
        user: "bob".into(),
        before: now + 1,
        expires_at: now + 3600,
    };
    node.state
        .store
        .add_revocation(&revocation, now as i64)
        .await
        .unwrap();
    expect_revoked(&mut client).await;
    assert_eq!(refused(&node, &token).await, "token_revoked");
    node.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

fn switchboard(args: &[&str], database: &str) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SWITCHBOARD_")) {
        command.env_remove(key);
    }
    command.env("SWITCHBOARD_DATABASE_URL", database);
    command.args(args).output().expect("run switchboard")
}

/// Signs HS256 `claims` with an API key's secret, its id in `kid`.
fn api_key_token(kid: &str, secret: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str, ttl: u64) -> Value {
    let now = switchboard::auth::unix_now();
    json!({"sub": sub, "name": sub, "iat": now, "exp": now + ttl, "jti": uuid::Uuid::new_v4().to_string()})
}

#[tokio::test]
async fn api_keys_sign_tokens_until_revoked_with_the_binary() {
    let (config, dir) = shared_file_config("apikey");
    let database = config.database.url.expose().to_owned();
    let node = spawn_node(config);
    let created = switchboard(&["apikey", "create", "backend"], &database);
    assert!(created.status.success(), "{created:?}");
    let out = String::from_utf8(created.stdout).unwrap();
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (kid, secret) = (field("key id:"), field("secret:"));
    assert!(kid.starts_with("ak_") && secret.len() >= 43, "{out}");
    // The store keeps the secret sealed, never in the clear.
    let keys = node.state.store.api_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(!keys[0].secret_sealed.contains(&secret));
    let again = switchboard(&["apikey", "create", "backend"], &database);
    assert!(!again.status.success(), "a second live key of one name");

    let token = api_key_token(&kid, &secret, claims("app-user", 600));
    let mut client = open(&node, &token).await;
    assert_eq!(me(&node, &token).await.0, 200);
    // The wrong secret, an unknown key id, and a key id with another algorithm: refused.
    let forged = api_key_token(&kid, "not-the-secret", claims("app-user", 600));
    assert_eq!(refused(&node, &forged).await, "unauthorized");
    let unknown = api_key_token("ak_000000000000000000000000", &secret, claims("x", 600));
    assert_eq!(refused(&node, &unknown).await, "unauthorized");
    let mut hs512 = Header::new(Algorithm::HS512);
    hs512.kid = Some(kid.clone());
    let hs512 = jsonwebtoken::encode(
        &hs512,
        &claims("x", 600),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(refused(&node, &hs512).await, "unauthorized");

    let listed = switchboard(&["apikey", "list"], &database);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains(&kid) && listed.contains("backend") && !listed.contains(&secret));

    let revoked = switchboard(&["apikey", "revoke", "backend"], &database);
    assert!(revoked.status.success(), "{revoked:?}");
    expect_revoked(&mut client).await;
    assert_eq!(refused(&node, &token).await, "token_revoked");
    let fresh = api_key_token(&kid, &secret, claims("another", 600));
    assert_eq!(refused(&node, &fresh).await, "token_revoked");
    // A second revoke repeats the revocation (a retry after a failure); an unknown key fails.
    let again = switchboard(&["apikey", "revoke", "backend"], &database);
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("(again)"));
    let missing = switchboard(&["apikey", "revoke", "no-such-key"], &database);
    assert!(!missing.status.success());
    let events = node.state.store.events(10).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"api_key_created") && kinds.contains(&"api_key_revoked"));
    assert!(events.iter().all(|e| !format!("{e:?}").contains(&secret)));
    node.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

/// The test issuer: its three keys, and the JWKS it publishes.
struct Issuer {
    keys: Vec<(String, Algorithm, EncodingKey)>,
}

impl Issuer {
    fn new() -> Self {
        let pem = |name: &str| {
            let path = format!(
                "{}/tests/fixtures/issuer/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read(path).unwrap()
        };
        Self {
            keys: vec![
                (
                    "rsa-1".into(),
                    Algorithm::RS256,
                    EncodingKey::from_rsa_pem(&pem("rsa.pem")).unwrap(),
                ),
                (
                    "ec-1".into(),
                    Algorithm::ES256,
                    EncodingKey::from_ec_pem(&pem("ec.pem")).unwrap(),
                ),
                (
                    "ed-1".into(),
                    Algorithm::EdDSA,
                    EncodingKey::from_ed_pem(&pem("ed.pem")).unwrap(),
                ),
            ],
        }
    }

    /// The JWKS of the keys named in `kids`.
    fn jwks(&self, kids: &[&str]) -> String {
        let keys = self
            .keys
            .iter()
            .filter(|(kid, _, _)| kids.contains(&kid.as_str()))
            .map(|(kid, alg, key)| {
                let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
                jwk.common.key_id = Some(kid.clone());
                jwk
            })
            .collect();
        switchboard::auth::jwks::document(keys)
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        self.sign_as(kid, kid, claims)
    }

    /// Signs with key `kid` but names `named` in the header.
    fn sign_as(&self, kid: &str, named: &str, claims: &Value) -> String {
        let (_, alg, key) = self.keys.iter().find(|(k, _, _)| k == kid).unwrap();
        let mut header = Header::new(*alg);
        header.kid = Some(named.to_owned());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }
}

fn issued(sub: &str) -> Value {
    let mut claims = claims(sub, 600);
    claims["iss"] = json!("https://idp.test");
    claims["aud"] = json!("switchboard");
    claims
}

#[tokio::test]
async fn external_issuer_tokens_verify_with_its_jwks_file() {
    let issuer = Issuer::new();
    let dir = std::env::temp_dir().join(format!("sb-jwks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, issuer.jwks(&["rsa-1", "ec-1", "ed-1"])).unwrap();
    let mut config = test_config();
    config.jwks.url = file.display().to_string();
    config.jwks.issuer = "https://idp.test".into();
    config.jwks.audience = "switchboard".into();
    let node = spawn_node(config);
    wait_for_keys(&node, 3).await;

    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let token = issuer.sign(kid, &issued(&format!("user-{kid}")));
        let mut client = open(&node, &token).await;
        client.expect_quiet().await;
        assert_eq!(me(&node, &token).await.0, 200, "{kid}");
    }
    // Wrong issuer, wrong audience, none at all: refused.
    let mut wrong_iss = issued("u");
    wrong_iss["iss"] = json!("https://evil.test");
    let mut wrong_aud = issued("u");
    wrong_aud["aud"] = json!("another-service");
    let mut no_aud = issued("u");
    no_aud.as_object_mut().unwrap().remove("aud");
    for claims in [wrong_iss, wrong_aud, no_aud] {
        let token = issuer.sign("ec-1", &claims);
        assert_eq!(refused(&node, &token).await, "unauthorized", "{claims}");
    }
    // The RSA key's public half used as an HMAC secret (algorithm confusion): refused.
    let public = issuer.jwks(&["rsa-1"]);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &issued("u"),
        &EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    assert_eq!(refused(&node, &confused).await, "unauthorized");
    // A key the JWKS lacks.
    let foreign = issuer.sign_as("ec-1", "zz-9", &issued("u"));
    assert_eq!(refused(&node, &foreign).await, "unauthorized");
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits until the node holds `count` issuer keys.
async fn wait_for_keys(node: &TestNode, count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.state.tokens.issuer_key_count() != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not load {count} issuer keys"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Serves `document` at `/jwks.json`, counting the fetches.
async fn serve_jwks(document: Arc<Mutex<String>>, fetches: Arc<Mutex<usize>>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let document = Arc::clone(&document);
            let fetches = Arc::clone(&fetches);
            async move {
                *fetches.lock().unwrap() += 1;
                let body = document.lock().unwrap().clone();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn a_jwks_url_is_fetched_again_when_a_token_names_a_new_key() {
    let issuer = Issuer::new();
    let document = Arc::new(Mutex::new(issuer.jwks(&["rsa-1"])));
    let fetches = Arc::new(Mutex::new(0));
    let addr = serve_jwks(Arc::clone(&document), Arc::clone(&fetches)).await;
    let mut config = test_config();
    config.jwks.url = format!("http://{addr}/jwks.json");
    config.jwks.refresh = Duration::from_secs(30);
    let node = spawn_node(config);
    wait_for_keys(&node, 1).await;
    let token = issuer.sign("rsa-1", &claims("u-rsa", 600));
    open(&node, &token).await.expect_quiet().await;

    // The issuer rotates to its EC key: the first token that names it triggers a fetch.
    *document.lock().unwrap() = issuer.jwks(&["rsa-1", "ec-1"]);
    // Within the cooldown (a second) after the last fetch it may still be refused; then the
    // node fetches and accepts it.
    let rotated = issuer.sign("ec-1", &claims("u-ec", 600));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut client = connect(&node.ws(&format!("/ws?token={rotated}")))
            .await
            .unwrap();
        if client.recv().await["type"] == "auth_success" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated key was never fetched"
        );
    }
    assert_eq!(node.state.tokens.issuer_key_count(), 2);
    // Unknown key ids do not make the node fetch on every token.
    let before = *fetches.lock().unwrap();
    for n in 0..20 {
        let made_up = issuer.sign_as("ec-1", &format!("x{n}"), &claims("u", 600));
        assert_eq!(refused(&node, &made_up).await, "unauthorized");
    }
    assert!(
        *fetches.lock().unwrap() - before <= 2,
        "fetches were not bounded"
    );
    // A JWKS that goes bad keeps the keys the node holds.
    *document.lock().unwrap() = "<html>oops</html>".into();
    let result = node.state.credentials.load_jwks().await;
    assert!(result.is_err());
    open(&node, &rotated).await.expect_quiet().await;
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account() {
    let mut config = test_config();
    config.lockout_threshold = 3;
    let node = spawn_node(config);
    add_alice(&node).await;
    let attempt = |password: &'static str| {
        post(
            &node,
            "/auth/login",
            None,
            json!({"username": "alice", "password": password}),
        )
    };
    for _ in 0..2 {
        assert_eq!(attempt("wrong-password").await.0, 401);
    }
    let response = http_client()
        .post(node.http("/auth/login"))
        .json(&json!({"username": "alice", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "account_locked");
    // Locked: the right password is refused too.
    let (status, body) = attempt("password-1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("account_locked"))
    );
    let events = node.state.store.events(10).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"locked_out") && kinds.contains(&"login_locked"),
        "{kinds:?}"
    );
    // Unknown names are counted and locked the same way: a lockout does not tell them apart.
    for expected in [401, 401, 429, 429] {
        let (status, _) = post(
            &node,
            "/auth/login",
            None,
            json!({"username": "nobody", "password": "wrong-password"}),
        )
        .await;
        assert_eq!(status, expected);
    }
}

#[tokio::test]
async fn concurrent_wrong_passwords_cannot_pass_a_lockout_together() {
    let mut config = test_config();
    config.lockout_threshold = 3;
    let node = spawn_node(config);
    add_alice(&node).await;
    let attempts = (0..8).map(|_| {
        post(
            &node,
            "/auth/login",
            None,
            json!({"username": "alice", "password": "wrong-password"}),
        )
    });
    let mut statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    statuses.sort_unstable();
    // Each attempt is counted before its hash: two wrong passwords, then the third locks.
    assert_eq!(statuses, [401, 401, 429, 429, 429, 429, 429, 429]);
}

#[tokio::test]
async fn logout_stops_a_token_without_a_jti() {
    let node = spawn_node(test_config());
    let sealer = switchboard::credentials::sealer(&node.state.config);
    let (key, secret) = accounts::create_api_key(&node.state.store, &sealer, "app", 1)
        .await
        .unwrap();
    let mut bare = claims("app-user", 600);
    bare.as_object_mut().unwrap().remove("jti");
    let token = api_key_token(&key.id, &secret, bare.clone());
    let mut client = open(&node, &token).await;
    // Another token of the same user, without a jti either, lives on.
    bare["name"] = json!("other");
    let other = api_key_token(&key.id, &secret, bare);
    let mut other_client = open(&node, &other).await;
    let response = http_client()
        .post(node.http("/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    expect_revoked(&mut client).await;
    assert_eq!(refused(&node, &token).await, "token_revoked");
    other_client.expect_quiet().await;
}

#[tokio::test]
async fn disabling_a_user_with_the_binary_closes_its_connections() {
    let (config, dir) = shared_file_config("disable");
    let database = config.database.url.expose().to_owned();
    let node = spawn_node(config);
    add_alice(&node).await;
    let (access, _) = login(&node, "alice", "password-1").await;
    let mut client = open(&node, &access).await;
    // Tokens issued in the same second as the revocation live on; wait for the next second.
    let issued = switchboard::auth::unix_now();
    while switchboard::auth::unix_now() == issued {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = switchboard(&["user", "disable", "alice"], &database);
    assert!(out.status.success(), "{out:?}");
    expect_revoked(&mut client).await;
    assert_eq!(refused(&node, &access).await, "token_revoked");
    node.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
