//! Clusters of in-process nodes over a real Redis: the protocol with the clients on different
//! nodes, presence across nodes, races, crashes and Redis outages. Every test runs against a
//! standalone redis-server and against a 3-master Redis Cluster (started by `scripts/redis`,
//! named by `SWITCHBOARD_TEST_REDIS_URL` / `SWITCHBOARD_TEST_REDIS_CLUSTER_URL`), each cluster
//! of nodes under its own key prefix. The Redis restart test runs its own redis-server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard::config::{Config, Secret};

use crate::support::*;

/// Which Redis a test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Redis {
    Standalone,
    Cluster,
}

impl Redis {
    pub fn url(self) -> String {
        let var = match self {
            Redis::Standalone => "SWITCHBOARD_TEST_REDIS_URL",
            Redis::Cluster => "SWITCHBOARD_TEST_REDIS_CLUSTER_URL",
        };
        std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test"))
    }
}

/// A node config on `url` under a fresh key prefix.
pub fn redis_config(url: &str) -> Config {
    let mut config = test_config();
    config.redis.url = Some(Secret::new(url));
    config.redis.prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    config.subscription_linger = Duration::from_millis(300);
    config
}

/// `n` nodes sharing `config` (and so its Redis and prefix).
pub fn spawn_cluster(n: usize, config: &Config) -> Vec<TestNode> {
    (0..n)
        .map(|_| spawn_node_on(config.clone(), Backing::FromConfig))
        .collect()
}

/// A GET with a bearer token; returns the status and the JSON body.
pub async fn get(node: &TestNode, path: &str, user: &str) -> (u16, Value) {
    let response = http_client()
        .get(node.http(path))
        .bearer_auth(token(user))
        .send()
        .await
        .expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `GET path` as `user` until `done` holds (HTTP state has no event to wait on); panics
/// after `limit`.
/// The client ids of a `/api/rooms/{room}` answer, in join order.
pub fn member_ids(body: &Value) -> Vec<&str> {
    body["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|m| m["client_id"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

pub async fn poll(
    node: &TestNode,
    path: &str,
    user: &str,
    limit: Duration,
    done: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = get(node, path, user).await;
        if done(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} still {status} {body} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Generates `standalone` and `cluster` tests calling `fn name(Redis)`.
macro_rules! on_both_redis {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            #[ignore = "needs Redis: run scripts/test"]
            async fn standalone() {
                super::$name($crate::cluster::Redis::Standalone).await;
            }

            #[tokio::test]
            #[ignore = "needs Redis: run scripts/test"]
            async fn cluster() {
                super::$name($crate::cluster::Redis::Cluster).await;
            }
        }
    )*};
}

/// A redis-server child of the test, on a free loopback port, that can be stopped and started
/// again on the same port (with empty data, like a restart without persistence).
pub struct RedisProcess {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisProcess {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// A redis-server on `port`.
    pub fn start_on(port: u16) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sb-redis-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (no shutdown, no save).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill on PATH");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts the server on its port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port in 13000-19999 that nothing listens on.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let port = 13000 + (uuid::Uuid::new_v4().as_u128() % 7000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 13000-19999");
}

// After the macro, so that its textual scope covers them.
mod attack;
mod failure;
mod presence;
mod protocol;
mod routing;
