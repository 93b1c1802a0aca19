//! The README's cluster recipe, run as written: the block after `<!-- recipe: cluster` runs in
//! bash with only the binary's path, the Redis URL and the ports put in, and the clients it
//! promises then talk across two of its nodes.

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::free_port;
use crate::support::*;

/// The first fenced block after `marker`.
fn block_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let from = text.find(marker).expect("the recipe's marker in README.md");
    let rest = &text[from..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = rest[start..].find("```").expect("the block's end");
    &rest[start..start + end]
}

/// Replaces `from` (which must be there) with `to`.
fn put(script: String, from: &str, to: &str) -> String {
    assert!(script.contains(from), "the recipe no longer has {from:?}");
    script.replace(from, to)
}

/// The recipe's shell, leading its process group; the group is stopped when dropped.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs Redis: run scripts/test"]
async fn the_cluster_recipe_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let recipe = block_after(&readme, "<!-- recipe: cluster").to_owned();
    let redis = std::env::var("SWITCHBOARD_TEST_REDIS_URL").expect("run scripts/test");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let script = put(
        recipe,
        "./target/release/switchboard",
        env!("CARGO_BIN_EXE_switchboard"),
    );
    let script = put(script, "redis://127.0.0.1:6379", &redis);
    let script = put(script, "8081 8082 8083", &list.join(" "));

    let dir = std::env::temp_dir().join(format!("sb-recipe-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("nodes.log")).unwrap();
    let mut bash = Command::new("bash");
    bash.args(["-euc", &script])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0);
    for (key, _) in std::env::vars() {
        if key.starts_with("SWITCHBOARD_") || key == "CARGO" || key == "RUST_LOG" {
            bash.env_remove(key);
        }
    }
    let mut group = Group(bash.spawn().expect("bash"));
    let stdout = group.0.stdout.take().unwrap();
    let tokens = tokio::task::spawn_blocking(move || {
        let lines = std::io::BufReader::new(stdout).lines();
        lines.map_while(Result::ok).take(2).collect::<Vec<String>>()
    });
    let tokens = tokio::time::timeout(WAIT, tokens).await.unwrap().unwrap();
    assert_eq!(tokens.len(), 2, "two tokens minted");
    assert!(
        std::fs::read_to_string(dir.join("switchboard.secret"))
            .unwrap()
            .trim()
            .len()
            >= 64
    );

    for port in &ports {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http_get(format!("http://127.0.0.1:{port}/readyz")).await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            let log = std::fs::read_to_string(dir.join("nodes.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "node on {port} not ready:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ws = |port: u16, token: &str| format!("ws://127.0.0.1:{port}/ws/demo?token={token}");
    let mut alice = connect(&ws(ports[0], &tokens[0])).await.expect("alice");
    let me = alice.recv_type("auth_success").await;
    assert_eq!(me["user_id"], "alice");
    alice.recv_type("users_in_room").await;
    let mut bob = connect(&ws(ports[1], &tokens[1])).await.expect("bob");
    bob.recv_type("auth_success").await;
    let users = bob.recv_type("users_in_room").await;
    assert_eq!(users["users"][0]["user_id"], "alice");
    let joined = alice.recv_type("user_joined").await;
    bob.send(json!({"type":"offer","to":me["client_id"],"offer":{"sdp":"v=0"}}))
        .await;
    let offer = alice.recv_type("offer").await;
    assert_eq!(
        (offer["from"].clone(), offer["user_id"].as_str()),
        (joined["client_id"].clone(), Some("bob"))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
