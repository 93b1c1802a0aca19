//! Registration, devices and the key directory on one node (SQLite).

use std::collections::HashSet;

use serde_json::json;

use super::*;

#[tokio::test]
async fn e2ee_bundles_claim_each_one_time_prekey_once_then_serve_the_fallback() {
    let node = spawn_node(e2ee_config());
    let (alice, bob) = (Phone::new(), Phone::new());
    let a = register(&node, &alice, 1..4).await;
    assert_eq!(a.device_id, 1);
    let b = register(&node, &bob, 1..2).await;
    let mut a_ws = DeviceWs::connect(&node, &a).await;
    assert!(a_ws.until_queue_empty().await.is_empty());
    let path = format!("/api/v1/keys/{}", alice.hash);
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let (status, bundle) = call(&node, "GET", &path, Some(&b.token), None).await;
        assert_eq!(status, 200, "{bundle}");
        assert_eq!(bundle["identity_key"], alice.identity());
        let device = &bundle["devices"][0];
        assert_eq!(device["device_id"], 1);
        assert!(device["fallback_key"].is_null(), "{device}");
        claimed.push(device["one_time_prekey"]["key_id"].as_i64().unwrap());
    }
    assert_eq!(claimed, [1, 2, 3], "oldest first, each once");
    let (_, count) = call(&node, "GET", "/api/v1/keys/count", Some(&a.token), None).await;
    assert_eq!(count, json!({"one_time_prekeys": 0}), "an explicit zero");
    let (status, bundle) = call(&node, "GET", &path, Some(&b.token), None).await;
    assert_eq!(status, 200);
    let device = &bundle["devices"][0];
    assert!(device["one_time_prekey"].is_null(), "{device}");
    assert_eq!(device["fallback_key"]["key_id"], 9999);
    assert!(device["fallback_key"]["signature"].is_string());
    let notice = a_ws.recv().await;
    assert_eq!(
        notice,
        json!({"type": "prekeys_low", "one_time_prekeys": 0})
    );
    // Strangers and unknown accounts.
    let (status, _) = call(&node, "GET", &path, None, None).await;
    assert_eq!(status, 401);
    let (status, _) = call(&node, "GET", &path, Some("not-a-token"), None).await;
    assert_eq!(status, 401);
    let unknown = format!("/api/v1/keys/{}", "0".repeat(64));
    let (status, body) = call(&node, "GET", &unknown, Some(&b.token), None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn e2ee_uploads_are_idempotent_refuse_claimed_ids_and_cap_at_500() {
    let node = spawn_node(e2ee_config());
    let (alice, bob) = (Phone::new(), Phone::new());
    let a = register(&node, &alice, 1..3).await;
    let b = register(&node, &bob, 0..0).await;
    let upload = json!({"one_time_prekeys": prekeys(10..20)});
    let (status, body) = call(&node, "PUT", "/api/v1/keys", Some(&a.token), Some(&upload)).await;
    assert_eq!((status, body), (200, json!({"one_time_prekeys": 12})));
    // The response was lost: the client sends the same upload again.
    let (status, body) = call(&node, "PUT", "/api/v1/keys", Some(&a.token), Some(&upload)).await;
    assert_eq!(
        (status, body),
        (200, json!({"one_time_prekeys": 12})),
        "stored once"
    );
    // Key 1 is claimed; uploading id 1 again is refused and stores nothing.
    let path = format!("/api/v1/keys/{}", alice.hash);
    let (_, bundle) = call(&node, "GET", &path, Some(&b.token), None).await;
    assert_eq!(bundle["devices"][0]["one_time_prekey"]["key_id"], 1);
    let again = json!({"one_time_prekeys": prekeys(1..2).into_iter().chain(prekeys(30..31)).collect::<Vec<_>>()});
    let (status, body) = call(&node, "PUT", "/api/v1/keys", Some(&a.token), Some(&again)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("prekey_reused")),
        "{body}"
    );
    assert_eq!(body["key_ids"], json!([1]));
    // Key 10 held with another public key.
    let other = json!({"one_time_prekeys": prekeys(10..11)});
    let (status, body) = call(&node, "PUT", "/api/v1/keys", Some(&a.token), Some(&other)).await;
    assert_eq!((status, body["key_ids"].clone()), (409, json!([10])));
    let (_, count) = call(&node, "GET", "/api/v1/keys/count", Some(&a.token), None).await;
    assert_eq!(count["one_time_prekeys"], 11);
    // Up to 500 held; the upload that would pass it stores nothing.
    for start in (100..500).step_by(100) {
        let batch = json!({"one_time_prekeys": prekeys(start..start + 100)});
        let (status, _) = call(&node, "PUT", "/api/v1/keys", Some(&a.token), Some(&batch)).await;
        assert_eq!(status, 200);
    }
    let batch = json!({"one_time_prekeys": prekeys(1000..1090)});
    let (status, body) = call(&node, "PUT", "/api/v1/keys", Some(&a.token), Some(&batch)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("too_many_prekeys")),
        "{body}"
    );
    let (_, count) = call(&node, "GET", "/api/v1/keys/count", Some(&a.token), None).await;
    assert_eq!(count["one_time_prekeys"], 411);
    // A new signed prekey is checked against the identity key, then served.
    let (spk, sig) = alice.signed_key();
    let rotate = json!({"signed_prekey": {"key_id": 2, "public_key": spk, "signature": sig}});
    let (status, _) = call(&node, "PUT", "/api/v1/keys", Some(&a.token), Some(&rotate)).await;
    assert_eq!(status, 200);
    let (_, bundle) = call(&node, "GET", &path, Some(&b.token), None).await;
    assert_eq!(bundle["devices"][0]["signed_prekey_id"], 2);
    assert_eq!(bundle["devices"][0]["signed_prekey"], spk);
    let forged =
        json!({"signed_prekey": {"key_id": 3, "public_key": spk, "signature": bob.signed_key().1}});
    let (status, body) = call(&node, "PUT", "/api/v1/keys", Some(&a.token), Some(&forged)).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("signed_prekey.signature"))
    );
}

#[tokio::test]
async fn e2ee_a_second_device_registers_through_the_first_and_gets_its_own_keys() {
    let node = spawn_node(e2ee_config());
    let (alice, bob) = (Phone::new(), Phone::new());
    let a1 = register(&node, &alice, 1..3).await;
    let b = register(&node, &bob, 1..2).await;
    let body = alice.device(1..3);
    let (status, reply) = call(
        &node,
        "POST",
        "/api/v1/devices",
        Some(&a1.token),
        Some(&body),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let a2 = creds(&reply);
    assert_eq!(
        (a2.user_id.as_str(), a2.device_id),
        (a1.user_id.as_str(), 2)
    );
    // Keys signed by another identity are refused.
    let stranger = Phone::new().device(1..2);
    let (status, reply) = call(
        &node,
        "POST",
        "/api/v1/devices",
        Some(&a1.token),
        Some(&stranger),
    )
    .await;
    assert_eq!(
        (status, reply["field"].as_str()),
        (422, Some("identity_key"))
    );
    let mut no_identity = Phone::new().device(1..2);
    no_identity.as_object_mut().unwrap().remove("identity_key");
    let (status, reply) = call(
        &node,
        "POST",
        "/api/v1/devices",
        Some(&a1.token),
        Some(&no_identity),
    )
    .await;
    assert_eq!(
        (status, reply["field"].as_str()),
        (422, Some("prekey_signature"))
    );
    let path = format!("/api/v1/keys/{}", alice.hash);
    let (_, bundle) = call(&node, "GET", &path, Some(&b.token), None).await;
    let devices = bundle["devices"].as_array().unwrap();
    let ids: HashSet<i64> = devices
        .iter()
        .map(|d| d["device_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, HashSet::from([1, 2]));
    assert!(devices.iter().all(|d| d["one_time_prekey"]["key_id"] == 1));
    let (_, count) = call(&node, "GET", "/api/v1/keys/count", Some(&a2.token), None).await;
    assert_eq!(count["one_time_prekeys"], 1, "counts are per device");
    // The phone hash is taken.
    let (status, reply) = call(
        &node,
        "POST",
        "/api/v1/register",
        None,
        Some(&alice.registration(1..2)),
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (409, Some("already_registered"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2ee_a_thousand_claimers_on_one_sqlite_node_get_each_of_100_keys_once() {
    let dir = std::env::temp_dir().join(format!("sb-e2ee-{}", uuid::Uuid::new_v4().simple()));
    let mut config = e2ee_config();
    config.database.url =
        switchboard::config::Secret::new(format!("sqlite://{}/e2ee.db", dir.display()));
    let node = spawn_node(config);
    super::cluster::claim_rounds(&[&node]).await;
    node.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
