//! The E2EE relay on three nodes sharing a real Redis and a real Postgres: concurrent claims
//! on every node hand out each one-time prekey once, messages reach a device on another
//! node, and a node killed mid-delivery loses nothing.

use std::collections::HashSet;

use serde_json::json;
use switchboard::config::Secret;
use switchboard::store::{PoolSize, Store};

use super::*;
use crate::cluster::{redis_config, spawn_cluster};

/// A config on the test Redis (fresh prefix) and a fresh, migrated Postgres database.
pub async fn postgres_redis_config() -> Config {
    let redis = std::env::var("SWITCHBOARD_TEST_REDIS_URL").expect("run scripts/test");
    let url = fresh_postgres("e2ee").await;
    let store = Store::connect(&url, PoolSize { min: 0, max: 2 })
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    let mut config = redis_config(&redis);
    config.database.url = Secret::new(url);
    config.database.pool_max = 20;
    config.e2ee.register_rate = 0;
    config.e2ee.claim_rate = 0;
    config.e2ee.ticket_rate = 0;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Postgres and Redis: run scripts/test"]
async fn e2ee_a_thousand_claimers_on_three_nodes_get_each_of_100_keys_once() {
    let nodes = spawn_cluster(3, &postgres_redis_config().await);
    let nodes: Vec<&TestNode> = nodes.iter().collect();
    claim_rounds(&nodes).await;
}

/// 1,000 concurrent bundle fetches of one device with 100 keys, spread over `nodes`, twice
/// (refilled in between): exactly 100 distinct keys and 900 fallbacks each time.
pub async fn claim_rounds(nodes: &[&TestNode]) {
    let alice = Phone::new();
    let a = register(nodes[0], &alice, 0..100).await;
    let mut claimers = Vec::new();
    for i in 0..10 {
        claimers.push(register(nodes[i % nodes.len()], &Phone::new(), 0..0).await);
    }
    let path = format!("/api/v1/keys/{}", alice.hash);
    let urls: Vec<String> = nodes.iter().map(|n| n.http(&path)).collect();
    let client = http_client();
    for round in 0..2u32 {
        if round > 0 {
            // Refilled with fresh ids, as a client does after the fallback notice.
            let body = json!({"one_time_prekeys": prekeys(1000..1100)});
            let last = nodes[nodes.len() - 1];
            let (status, _) = call(last, "PUT", "/api/v1/keys", Some(&a.token), Some(&body)).await;
            assert_eq!(status, 200);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let request = client
                .get(&urls[i % urls.len()])
                .bearer_auth(&claimers[i % 10].token);
            tasks.spawn(async move {
                let response = request.send().await.expect("HTTP request");
                assert_eq!(response.status(), 200);
                let bundle: serde_json::Value = response.json().await.unwrap();
                bundle["devices"][0]["one_time_prekey"]["key_id"].as_i64()
            });
        }
        let (mut keys, mut fallbacks) = (Vec::new(), 0);
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Some(key) => keys.push(key),
                None => fallbacks += 1,
            }
        }
        let distinct: HashSet<i64> = keys.iter().copied().collect();
        let got = (keys.len(), distinct.len(), fallbacks);
        assert_eq!(got, (100, 100, 900), "round {round}");
        let (_, count) = call(nodes[0], "GET", "/api/v1/keys/count", Some(&a.token), None).await;
        assert_eq!(count["one_time_prekeys"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Postgres and Redis: run scripts/test"]
async fn e2ee_messages_reach_a_device_on_another_node_and_survive_its_node_dying() {
    let mut nodes = spawn_cluster(3, &postgres_redis_config().await);
    let (alice, bob) = (Phone::new(), Phone::new());
    let a = register(&nodes[0], &alice, 1..2).await;
    let b = register(&nodes[1], &bob, 1..2).await;
    // Bob online on node 2: Alice's message through node 0 arrives live.
    let mut ws = DeviceWs::connect(&nodes[2], &b).await;
    assert!(ws.until_queue_empty().await.is_empty());
    let first = send_to(&nodes[0], &a, &bob.hash, &["live"]).await;
    let live = ws.recv().await;
    assert_eq!(
        (content(&live), live["id"].as_i64()),
        ("live".into(), Some(first[0]))
    );
    ws.ack(&first).await;
    // 50 more while Bob reads; he acknowledges the first 20, then his node dies (kill -9).
    let texts: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = send_to(&nodes[0], &a, &bob.hash, &refs).await;
    let mut seen = Vec::new();
    while seen.len() < 30 {
        seen.push(ws.recv().await["id"].as_i64().unwrap());
    }
    ws.ack(&seen[..20]).await;
    // The acknowledgement is stored once the queue shows it (polled, not slept).
    let device = switchboard::store::DeviceRef {
        account_id: b.user_id.clone(),
        device_id: 1,
    };
    let store = nodes[0].state.store.clone();
    let deadline = std::time::Instant::now() + WAIT;
    while store.e2ee_pending(&device, 0, 100).await.unwrap().len() != 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "the ack was not stored"
        );
        tokio::task::yield_now().await;
    }
    nodes.remove(2).crash();
    // Reconnected elsewhere: every unacknowledged message, in order, nothing acknowledged.
    let mut ws = DeviceWs::connect(&nodes[1], &b).await;
    let again: Vec<i64> = ws
        .until_queue_empty()
        .await
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        again,
        ids[20..].to_vec(),
        "redelivered only what was not acknowledged"
    );
    assert!(first.iter().chain(&ids[..20]).all(|id| !again.contains(id)));
}
