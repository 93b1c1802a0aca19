//! Measures the E2EE relay against running nodes: bundle claims per second and their latency,
//! queue inserts per second, and how fast a connecting device drains its queue, per node.
//! The nodes need `SWITCHBOARD_E2EE_REGISTER_RATE=0`, `SWITCHBOARD_E2EE_CLAIM_RATE=0` and
//! `SWITCHBOARD_AUTH_RATE=0`. BENCHMARKS.md has the figures and the command.
//!
//! ```text
//! cargo run --release --example e2ee_bench -- http://127.0.0.1:8080,http://127.0.0.1:8081 \
//!     [targets=40] [concurrency=64] [messages=20000]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

struct Bench {
    http: reqwest::Client,
    nodes: Vec<String>,
}

struct Account {
    phone: String,
    token: String,
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn prekeys(ids: std::ops::Range<u32>) -> Vec<Value> {
    ids.map(|id| json!({"key_id": id, "public_key": b64(&rand::random::<[u8; 32]>())}))
        .collect()
}

impl Bench {
    async fn call(
        &self,
        node: usize,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.nodes[node % self.nodes.len()]);
        let mut request = self.http.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the node answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, node: usize, keys: u32) -> Account {
        let signer = SigningKey::from_bytes(&rand::random());
        let signed = || {
            let key: [u8; 32] = rand::random();
            (b64(&key), b64(&signer.sign(&key).to_bytes()))
        };
        let ((spk, spk_sig), (fb, fb_sig)) = (signed(), signed());
        let phone: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let body = json!({
            "phone_hash": phone, "identity_key": b64(signer.verifying_key().as_bytes()),
            "signed_prekey": spk, "signed_prekey_id": 1, "prekey_signature": spk_sig,
            "one_time_prekeys": prekeys(0..keys.min(100)),
            "fallback_key": {"key_id": 99_999, "public_key": fb, "signature": fb_sig},
        });
        let (status, reply) = self
            .call(
                node,
                reqwest::Method::POST,
                "/api/v1/register",
                None,
                Some(&body),
            )
            .await;
        assert_eq!(status, 201, "register: {reply}");
        let token = reply["device_token"].as_str().unwrap().to_owned();
        for start in (100..keys).step_by(100) {
            let body = json!({"one_time_prekeys": prekeys(start..(start + 100).min(keys))});
            let (status, reply) = self
                .call(
                    node,
                    reqwest::Method::PUT,
                    "/api/v1/keys",
                    Some(&token),
                    Some(&body),
                )
                .await;
            assert_eq!(status, 200, "upload: {reply}");
        }
        Account { phone, token }
    }
}

/// p50 and p99 of `latencies`, in milliseconds.
fn percentiles(latencies: &mut [Duration]) -> (f64, f64) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50).as_secs_f64() * 1e3, at(0.99).as_secs_f64() * 1e3)
}

/// Runs `total` jobs on `concurrency` workers; returns the elapsed time and every latency.
async fn run<F, Fut>(total: usize, concurrency: usize, job: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (job, next) = (Arc::clone(&job), Arc::clone(&next));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return latencies;
                }
                let t = Instant::now();
                job(worker, i).await;
                latencies.push(t.elapsed());
            }
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(latencies) = workers.join_next().await {
        all.extend(latencies.unwrap());
    }
    (started.elapsed(), all)
}

/// Connects `account` to node `node` and reads its queue to `queue_empty`, acknowledging
/// each page; returns the messages read and the time taken.
async fn drain(bench: &Bench, node: usize, account: &Account) -> (usize, Duration) {
    let (_, reply) = bench
        .call(
            node,
            reqwest::Method::POST,
            "/api/v1/ws-token",
            Some(&account.token),
            None,
        )
        .await;
    let ticket = reply["token"].as_str().unwrap();
    let base = bench.nodes[node % bench.nodes.len()].replacen("http", "ws", 1);
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{base}/api/v1/ws?token={ticket}"))
        .await
        .unwrap();
    let (mut read, mut ids) = (0, Vec::new());
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "queue_empty" {
            break;
        }
        read += 1;
        ids.push(frame["id"].as_i64().unwrap());
        if ids.len() == 100 {
            let ack = json!({"type": "ack", "ids": std::mem::take(&mut ids)});
            ws.send(Message::text(ack.to_string())).await.unwrap();
        }
    }
    let elapsed = started.elapsed();
    let ack = json!({"type": "ack", "ids": ids});
    ws.send(Message::text(ack.to_string())).await.unwrap();
    let _ = ws.close(None).await;
    (read, elapsed)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nodes: Vec<String> = args[0].split(',').map(str::to_owned).collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (targets, concurrency, messages) = (arg(1, 40), arg(2, 64), arg(3, 20_000));
    // reqwest is built without a TLS provider of its own; the node's (ring) serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let bench = Arc::new(Bench { http, nodes });
    let n = bench.nodes.len();
    println!(
        "nodes {n}, targets {targets} x 500 keys, concurrency {concurrency}, messages {messages}"
    );
    let mut owners = Vec::new();
    for t in 0..targets {
        owners.push(bench.register(t, 500).await);
    }
    let mut requesters = Vec::new();
    for r in 0..concurrency {
        requesters.push(bench.register(r, 0).await);
    }
    let (owners, requesters) = (Arc::new(owners), Arc::new(requesters));
    let fallbacks = Arc::new(AtomicUsize::new(0));
    let claims = targets * 500;
    let (b, o, r, f) = (
        Arc::clone(&bench),
        Arc::clone(&owners),
        Arc::clone(&requesters),
        Arc::clone(&fallbacks),
    );
    let (elapsed, mut latencies) = run(claims, concurrency, move |worker, i| {
        let (b, o, r, f) = (
            Arc::clone(&b),
            Arc::clone(&o),
            Arc::clone(&r),
            Arc::clone(&f),
        );
        async move {
            let path = format!("/api/v1/keys/{}", o[i % o.len()].phone);
            let (status, bundle) = b
                .call(i, reqwest::Method::GET, &path, Some(&r[worker].token), None)
                .await;
            assert_eq!(status, 200, "{bundle}");
            if bundle["devices"][0]["one_time_prekey"].is_null() {
                f.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
    let (p50, p99) = percentiles(&mut latencies);
    println!(
        "claims: {claims} in {:.2} s = {:.0}/s, p50 {p50:.2} ms, p99 {p99:.2} ms, fallbacks {}",
        elapsed.as_secs_f64(),
        claims as f64 / elapsed.as_secs_f64(),
        fallbacks.load(Ordering::Relaxed)
    );
    // One recipient per node, offline while the queue fills.
    let mut recipients = Vec::new();
    for node in 0..n {
        recipients.push(bench.register(node, 0).await);
    }
    let recipients = Arc::new(recipients);
    let content = b64(&[7u8; 192]);
    let (b, to, s) = (
        Arc::clone(&bench),
        Arc::clone(&recipients),
        Arc::clone(&requesters),
    );
    let (elapsed, mut latencies) = run(messages, concurrency, move |worker, i| {
        let (b, to, s, content) = (
            Arc::clone(&b),
            Arc::clone(&to),
            Arc::clone(&s),
            content.clone(),
        );
        async move {
            let path = format!("/api/v1/messages/{}", to[i % to.len()].phone);
            let body = json!({"messages": [{"device_id": 1, "content": content}]});
            let (status, reply) = b
                .call(
                    i,
                    reqwest::Method::PUT,
                    &path,
                    Some(&s[worker].token),
                    Some(&body),
                )
                .await;
            assert_eq!(status, 200, "{reply}");
        }
    })
    .await;
    let (p50, p99) = percentiles(&mut latencies);
    println!(
        "queue inserts: {messages} in {:.2} s = {:.0}/s, p50 {p50:.2} ms, p99 {p99:.2} ms",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64()
    );
    let mut drains = tokio::task::JoinSet::new();
    for node in 0..n {
        let (b, to) = (Arc::clone(&bench), Arc::clone(&recipients));
        drains.spawn(async move { (node, drain(&b, node, &to[node]).await) });
    }
    while let Some(result) = drains.join_next().await {
        let (node, (read, elapsed)) = result.unwrap();
        println!(
            "drain on node {node}: {read} messages in {:.2} s = {:.0}/s",
            elapsed.as_secs_f64(),
            read as f64 / elapsed.as_secs_f64()
        );
    }
}
