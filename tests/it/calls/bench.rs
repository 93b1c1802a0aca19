//! Figures for BENCHMARKS.md (ignored by default; run in release, see BENCHMARKS.md): codes
//! generated and validated per second, initiate → ringing latency across nodes, and the whole
//! call setup (initiate, ring, answer, both sockets, offer and answer relayed), on three nodes
//! over Redis and Postgres when the test services are there, else one node on SQLite. Runs
//! only with `SWITCHBOARD_BENCH=1`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::json;

use super::*;

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let at = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[at]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn nodes() -> (Vec<TestNode>, &'static str) {
    if std::env::var("SWITCHBOARD_TEST_DATABASE_URL").is_ok() {
        let config = super::cluster::cluster_config().await;
        (
            crate::cluster::spawn_cluster(3, &config),
            "3 nodes, Redis + Postgres",
        )
    } else {
        let mut config = test_config();
        config.calls.ip_rate = 0;
        config.calls.code_rate = 0;
        (vec![spawn_node(config)], "1 node, SQLite")
    }
}

/// `n` requests with `concurrency` in flight; requests per second and p50/p99 latency.
async fn rate<F, Fut>(n: usize, concurrency: usize, f: F) -> (f64, Duration, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut samples = Vec::with_capacity(n);
    let mut flight = FuturesUnordered::new();
    let mut next = 0;
    while next < n || !flight.is_empty() {
        while next < n && flight.len() < concurrency {
            let fut = f(next);
            flight.push(async move {
                let t = Instant::now();
                fut.await;
                t.elapsed()
            });
            next += 1;
        }
        if let Some(took) = flight.next().await {
            samples.push(took);
        }
    }
    let per_second = n as f64 / started.elapsed().as_secs_f64();
    (
        per_second,
        quantile(&mut samples, 0.5),
        quantile(&mut samples, 0.99),
    )
}

#[tokio::test]
#[ignore = "a benchmark: see BENCHMARKS.md"]
async fn call_figures() {
    // `scripts/test` runs ignored tests too: the figures only when asked for.
    if std::env::var("SWITCHBOARD_BENCH").is_err() {
        return;
    }
    let (nodes, setup) = nodes().await;
    let node = |i: usize| &nodes[i % nodes.len()];
    let owner = register(node(0)).await;
    let client = http_client();
    let (generated, g50, g99) = rate(2000, 16, |i| {
        let request = client
            .post(node(i).http("/api/v1/tokens/generate"))
            .bearer_auth(&owner.token)
            .json(&json!({"userId": owner.user_id}))
            .send();
        async move { assert_eq!(request.await.unwrap().status(), 200) }
    })
    .await;
    let code = generate(node(0), &owner).await;
    let (validated, v50, v99) = rate(5000, 16, |i| {
        let request = client
            .post(node(i).http("/api/v1/tokens/validate"))
            .json(&json!({"token": code}))
            .send();
        async move { assert_eq!(request.await.unwrap().status(), 200) }
    })
    .await;
    println!("setup: {setup}");
    println!(
        "generate: {generated:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        ms(g50),
        ms(g99)
    );
    println!(
        "validate: {validated:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        ms(v50),
        ms(v99)
    );

    let mut phone = device(node(0), &owner, "phone").await;
    let mut ringing = Vec::new();
    let mut setups = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let (status, call) = initiate(node(2), &code).await;
        assert_eq!(status, 200, "{call}");
        phone.recv_type("incoming_call").await;
        ringing.push(started.elapsed());
        let session = call["sessionId"].as_str().unwrap();
        let (mut a, _) =
            Leg::join(node(2), session, call["signalingToken"].as_str().unwrap()).await;
        let (_, answered) = accept(node(1), &owner, session).await;
        phone.recv_type("call_answered").await;
        let (mut b, _) = Leg::join(
            node(1),
            session,
            answered["signalingToken"].as_str().unwrap(),
        )
        .await;
        a.send(offer("sha-256 AA")).await;
        b.recv_type("offer").await;
        b.send(answer("sha-256 BB")).await;
        a.recv_type("answer").await;
        setups.push(started.elapsed());
        a.send(json!({"type": "hang-up"})).await;
        b.closed().await;
    }
    let (r50, r99) = (quantile(&mut ringing, 0.5), quantile(&mut ringing, 0.99));
    let (s50, s99) = (quantile(&mut setups, 0.5), quantile(&mut setups, 0.99));
    println!(
        "initiate -> ringing (caller on node 3, device on node 1): p50 {:.2} ms, p99 {:.2} ms",
        ms(r50),
        ms(r99)
    );
    println!(
        "call setup (initiate .. answer relayed): p50 {:.2} ms, p99 {:.2} ms",
        ms(s50),
        ms(s99)
    );
}
