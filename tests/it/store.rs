//! A node and its database: the health report shows it, a node waits for it at start, and
//! signaling goes on while Postgres is down (against real Postgres servers this module starts
//! with `scripts/postgres`, each in its own directory).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::config::Secret;

use crate::cluster::{free_port, redis_config, spawn_cluster};
use crate::support::*;

/// A Postgres server of this test, stopped and removed when dropped.
pub struct Postgres {
    dir: PathBuf,
    pub url: String,
}

impl Postgres {
    pub fn start(port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("sb-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Command::new("chmod").arg("755").arg(&dir).status().unwrap();
        let out = Self::script(&["start", dir.to_str().unwrap(), &port.to_string()]);
        let url = out
            .trim()
            .strip_prefix("export SWITCHBOARD_TEST_DATABASE_URL=")
            .expect("scripts/postgres prints the URL")
            .to_owned();
        Self { dir, url }
    }

    fn script(args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres");
        let out = Command::new(script)
            .args(args)
            .output()
            .expect("scripts/postgres");
        assert!(
            out.status.success(),
            "scripts/postgres {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn pause(&self) {
        Self::script(&["pause", self.dir.to_str().unwrap()]);
    }

    pub fn resume(&self) {
        Self::script(&["resume", self.dir.to_str().unwrap()]);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres"))
            .args(["stop", self.dir.to_str().unwrap()])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn get(url: String) -> (u16, Value) {
    let response = http_get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `url` until its status is `status`; returns the body.
async fn until_status(url: &str, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, body) = get(url.to_owned()).await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{url} still {got}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_reports_the_database() {
    let node = spawn_node(test_config());
    let (status, health) = get(node.http("/health")).await;
    assert_eq!(status, 200);
    let database = json!({"status": "ok", "backend": "sqlite"});
    assert_eq!(health["services"]["database"], database);
    assert_eq!(health["database"], database, "`jq .database` reads it");
}

#[tokio::test]
#[ignore = "needs Postgres: run scripts/test"]
async fn a_node_signals_before_its_database_is_up_and_migrates_it_once_it_is() {
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let mut node = NodeProcess::start(&[
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_DATABASE_URL", &url),
    ]);
    let addr = node.address();
    node.wait_for("database not migrated yet; retrying", WAIT);
    let http = |path: &str| format!("http://{addr}{path}");
    // Signaling does not wait for the database.
    let ws = format!("ws://{addr}/ws/room?token={}", token("alice"));
    let mut client = connect(&ws).await.expect("upgrade accepted");
    client.recv_type("auth_success").await;
    client.recv_type("users_in_room").await;
    let (status, ready) = get(http("/readyz")).await;
    assert_eq!(
        (status, ready["code"].as_str()),
        (503, Some("dependency_down"))
    );
    assert!(
        ready["detail"].as_str().unwrap().contains("database"),
        "{ready}"
    );
    let (status, health) = get(http("/health/")).await;
    assert_eq!(
        (status, health["database"]["status"].as_str()),
        (503, Some("down"))
    );
    let register = json!({"username": "dora", "password": "password-1"});
    let response = http_client()
        .post(http("/auth/register"))
        .json(&register)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        503,
        "what needs the database says unavailable"
    );

    let _postgres = Postgres::start(port);
    node.wait_for("database migrated", Duration::from_secs(20));
    until_status(&http("/readyz"), 200).await;
    let (_, health) = get(http("/health")).await;
    assert_eq!(
        health["database"],
        json!({"status": "ok", "backend": "postgres"})
    );
    let response = http_client()
        .post(http("/auth/register"))
        .json(&register)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    client.expect_quiet().await;
    drop(client);
    let code = tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
#[ignore = "needs Redis and Postgres: run scripts/test"]
async fn signaling_goes_on_while_postgres_is_down_and_readiness_names_it() {
    let postgres = Postgres::start(free_port());
    let mut config = redis_config(&crate::cluster::Redis::Standalone.url());
    config.database.url = Secret::new(postgres.url.clone());
    let nodes = spawn_cluster(2, &config);
    let (mut a, _) = Client::join(&nodes[0], "call", "alice", "a1").await;
    let (mut b, _) = Client::join(&nodes[1], "call", "bob", "b1").await;
    a.recv_type("user_joined").await;

    postgres.pause();
    for node in &nodes {
        let body = until_status(&node.http("/readyz"), 503).await;
        assert_eq!(body["code"], "dependency_down");
        assert!(
            body["detail"].as_str().unwrap().contains("database"),
            "{body}"
        );
        let (status, health) = get(node.http("/health")).await;
        assert_eq!(
            (status, health["database"]["status"].as_str()),
            (503, Some("down"))
        );
        assert_eq!(health["services"]["bus"]["status"], "ok");
    }
    // Token holders keep connecting and relaying across nodes.
    a.send(json!({"type":"offer","to":"b1","offer":{"sdp":"v=0"}}))
        .await;
    assert_eq!(b.recv_type("offer").await["from"], "a1");
    let (mut c, users) = Client::join(&nodes[1], "call", "carol", "c1").await;
    assert_eq!(users["users"].as_array().unwrap().len(), 2);
    c.send(json!({"type":"answer","to":"a1","answer":{"sdp":"v=0"}}))
        .await;
    a.recv_type("user_joined").await;
    assert_eq!(a.recv_type("answer").await["from"], "c1");

    postgres.resume();
    for node in &nodes {
        until_status(&node.http("/readyz"), 200).await;
    }
    let (_, health) = get(nodes[0].http("/health")).await;
    assert_eq!(health["status"], "healthy");
}
