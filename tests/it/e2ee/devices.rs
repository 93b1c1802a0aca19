//! Devices after registration: push tokens sealed at rest and removed with their device; and
//! the retention of the E2EE tables, run once by five node processes starting at once.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::store::{DeviceRef, NewDevice, OneTimeKey, Outgoing, PoolSize, SignedKey, Store};

use super::*;

#[tokio::test]
async fn e2ee_push_tokens_are_sealed_at_rest_and_go_with_their_device() {
    let node = spawn_node(e2ee_config());
    let (alice, bob) = (Phone::new(), Phone::new());
    let a1 = register(&node, &alice, 1..3).await;
    let b = register(&node, &bob, 1..2).await;
    let (_, reply) = call(
        &node,
        "POST",
        "/api/v1/devices",
        Some(&a1.token),
        Some(&alice.device(1..3)),
    )
    .await;
    let a2 = creds(&reply);
    let push = json!({"push_token": "fcm:secret-device-token"});
    let path = "/api/v1/devices/push-token";
    let (status, reply) = call(&node, "PUT", path, Some(&a2.token), Some(&push)).await;
    assert_eq!((status, reply), (200, json!({"push_token": "stored"})));
    let device = DeviceRef {
        account_id: a2.user_id.clone(),
        device_id: 2,
    };
    let store = &node.state.store;
    let sealed = store.e2ee_push_token(&device).await.unwrap().unwrap();
    assert!(!sealed.contains("secret-device-token"), "{sealed}");
    let opened = node.state.data_keys.open(&sealed, &device.key()).unwrap();
    assert_eq!(opened, "fcm:secret-device-token");
    let too_long = json!({"push_token": "x".repeat(5000)});
    assert_eq!(
        call(&node, "PUT", path, Some(&a2.token), Some(&too_long))
            .await
            .0,
        422
    );
    // A message waits for device 2; then device 1 removes it.
    let to_alice = format!("/api/v1/messages/{}", alice.hash);
    let both = json!({"messages": [{"device_id": 1, "content": b64(b"1")},
        {"device_id": 2, "content": b64(b"2")}]});
    assert_eq!(
        call(&node, "PUT", &to_alice, Some(&b.token), Some(&both))
            .await
            .0,
        200
    );
    let mut ws = DeviceWs::connect(&node, &a2).await;
    assert_eq!(ws.until_queue_empty().await.len(), 1);
    let (status, _) = call(&node, "DELETE", "/api/v1/devices/2", Some(&a1.token), None).await;
    assert_eq!(status, 204);
    assert_eq!(ws.expect_close().await, 4004, "its connection is closed");
    assert_eq!(store.e2ee_push_token(&device).await.unwrap(), None);
    assert!(store.e2ee_pending(&device, 0, 10).await.unwrap().is_empty());
    let (status, _) = call(&node, "GET", "/api/v1/keys/count", Some(&a2.token), None).await;
    assert_eq!(status, 401, "its token no longer works");
    let (status, _) = call(&node, "DELETE", "/api/v1/devices/2", Some(&a1.token), None).await;
    assert_eq!(status, 404);
    // Senders now address device 1 only.
    let (status, reply) = call(&node, "PUT", &to_alice, Some(&b.token), Some(&both)).await;
    assert_eq!((status, reply["extra_devices"].clone()), (409, json!([2])));
}

fn signed(key_id: i64) -> SignedKey {
    SignedKey {
        key_id,
        public_key: "k".into(),
        signature: "s".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Postgres: run scripts/test"]
async fn e2ee_retention_runs_once_across_five_nodes_and_keeps_what_is_recent() {
    let url = fresh_postgres("e2ee_retention").await;
    let store = Store::connect(&url, PoolSize { min: 1, max: 4 })
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let now = switchboard::auth::unix_seconds();
    let device = NewDevice {
        token_hash: "h".into(),
        registration_id: 0,
        signed_prekey: signed(1),
        fallback_key: signed(2),
        one_time_keys: (0..30)
            .map(|id| OneTimeKey {
                key_id: id,
                public_key: "k".into(),
            })
            .collect(),
    };
    let account = store.e2ee_register("ab", "id", &device, now).await.unwrap();
    let me = DeviceRef {
        account_id: account,
        device_id: 1,
    };
    let message = |n: usize| Outgoing {
        device_id: 1,
        content: format!("c{n}"),
    };
    let old: Vec<Outgoing> = (0..1500).map(message).collect();
    store
        .e2ee_enqueue(&me.account_id, &me, &old, now - 31 * 86_400)
        .await
        .unwrap();
    store
        .e2ee_enqueue(&me.account_id, &me, &[message(0)], now - 29 * 86_400)
        .await
        .unwrap();
    for n in 0..30 {
        let at = if n < 20 {
            now - 8 * 86_400
        } else {
            now - 6 * 86_400
        };
        store.e2ee_claim(&me, at).await.unwrap().unwrap();
    }
    let mut nodes: Vec<NodeProcess> = (0..5)
        .map(|_| {
            NodeProcess::start(&[
                ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
                ("SWITCHBOARD_DATABASE_URL", &url),
                ("SWITCHBOARD_RETENTION_INTERVAL", "1h"),
            ])
        })
        .collect();
    let mut listeners = Vec::new();
    for node in &mut nodes {
        listeners.push(node.metrics_address());
        node.wait_for("connected; serving", WAIT);
    }
    let sum = |series: &'static str| {
        let listeners = listeners.clone();
        async move {
            let mut total = 0.0;
            for addr in listeners {
                total += sample(&scrape(addr).await, series).unwrap_or(0.0);
            }
            total
        }
    };
    let deadline = Instant::now() + WAIT * 2;
    while sum(r#"switchboard_retention_runs_total{result="ran"}"#).await
        + sum(r#"switchboard_retention_runs_total{result="skipped"}"#).await
        < 5.0
    {
        assert!(Instant::now() < deadline, "not every node ticked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sum(r#"switchboard_retention_runs_total{result="ran"}"#).await,
        1.0
    );
    let messages = r#"switchboard_retention_rows_removed_total{table="e2ee_messages"}"#;
    let claimed = r#"switchboard_retention_rows_removed_total{table="e2ee_claimed_prekeys"}"#;
    assert_eq!(sum(messages).await, 1500.0, "in batches, once");
    assert_eq!(sum(claimed).await, 20.0);
    assert_eq!(
        store.e2ee_pending(&me, 0, 10).await.unwrap().len(),
        1,
        "29 days old stays"
    );
    for node in nodes {
        assert_eq!(node.terminate(), Some(0));
    }
    store.close().await;
}
