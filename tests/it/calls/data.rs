//! QR calls' data at rest: the owners' profile fields sealed under the data key (and re-sealed
//! by a key rotation), and the retention job deleting expired codes and old calls, run once
//! however many nodes tick at once.

use std::time::Duration;

use switchboard::datakey::DataKeys;
use switchboard::retention::Retention;
use switchboard::store::{CallCode, SEALED_COLUMNS};

use super::*;

#[tokio::test]
async fn profile_fields_are_sealed_under_the_data_key_and_a_rotation_reseals_them() {
    let node = spawn_node(keyed_config());
    let owner = register(&node).await;
    let store = &node.state.store;
    let sealed = store.profile(&owner.user_id).await.unwrap().unwrap();
    let contact = sealed.emergency_contact.unwrap();
    let vehicle = sealed.vehicle_number.unwrap();
    assert!(!contact.contains(CONTACT) && !vehicle.contains(VEHICLE));
    let old = DataKeys::new(&OLD_KEY, &[]);
    assert_eq!(old.open(&contact, &owner.user_id).unwrap(), CONTACT);
    assert_eq!(old.open(&vehicle, &owner.user_id).unwrap(), VEHICLE);
    assert!(
        old.open(&contact, "someone-else").is_err(),
        "bound to its row"
    );

    let rotating = DataKeys::new(&NEW_KEY, &[OLD_KEY]);
    let mut resealed = 0;
    for column in SEALED_COLUMNS.iter().filter(|c| c.table == "user_profiles") {
        resealed += store
            .rotate_column(column, &rotating, 10)
            .await
            .unwrap()
            .resealed;
    }
    assert!(resealed >= 2, "{resealed}");
    let sealed = store.profile(&owner.user_id).await.unwrap().unwrap();
    let contact = sealed.emergency_contact.unwrap();
    let new = DataKeys::new(&NEW_KEY, &[]);
    assert_eq!(new.open(&contact, &owner.user_id).unwrap(), CONTACT);
    assert!(old.open(&contact, &owner.user_id).is_err());
}

const NEW_KEY: [u8; 32] = [7; 32];

/// The key of the test nodes' data (their config's `data_key`).
const OLD_KEY: [u8; 32] = [9; 32];

fn keyed_config() -> switchboard::config::Config {
    use base64::Engine;
    let mut config = test_config();
    let key = base64::engine::general_purpose::STANDARD.encode(OLD_KEY);
    config.data_key = Some(switchboard::config::Secret::new(key));
    config
}

#[tokio::test]
async fn retention_deletes_expired_codes_and_old_calls_once_across_many_nodes() {
    retention_runs_once(&spawn_node(keyed_config())).await;
}

#[tokio::test]
#[ignore = "needs Redis and Postgres: run scripts/test"]
async fn retention_of_calls_runs_once_on_postgres_under_three_nodes() {
    let nodes = crate::cluster::spawn_cluster(3, &super::cluster::cluster_config().await);
    assert_eq!(nodes[1].state.store.engine(), "postgres");
    retention_runs_once(&nodes[1]).await;
}

/// Ten ticks of the retention job at once on `node`'s store: one runs, deleting expired codes
/// and, past the retention period, ended calls.
async fn retention_runs_once(node: &TestNode) {
    let nodes = std::slice::from_ref(node);
    let store = node.state.store.clone();
    let owner = register(&nodes[0]).await;
    let code = generate(&nodes[0], &owner).await;
    for i in 0..2500 {
        let (_, hash) = switchboard::calls::code::new_token();
        let row = CallCode {
            id: format!("old{i}"),
            user_id: owner.user_id.clone(),
            created_at: 1,
            expires_at: 2,
            is_revoked: false,
        };
        store.add_call_code(&hash, &row).await.unwrap();
    }
    let (_, ended) = initiate(&nodes[0], &code).await; // no device online: missed now
    let session = ended["sessionId"].as_str().unwrap().to_owned();
    let now = switchboard::auth::unix_seconds();
    let retention = |node: &str| Retention {
        store: store.clone(),
        node: node.to_owned(),
        keep: Duration::from_secs(30 * 86_400),
        every: Duration::from_secs(3600),
    };
    // Ten nodes tick at once, an interval after the node's own run: one runs.
    let at = now + 2 * 3600;
    let runs = futures_util::future::join_all((0..10).map(|i| {
        let job = retention(&format!("n{i}"));
        async move { job.tick(at).await.unwrap() }
    }))
    .await;
    let ran: Vec<u64> = runs.iter().flatten().copied().collect();
    assert_eq!(ran.len(), 1, "{runs:?}");
    assert!(ran[0] >= 2500, "{ran:?}");
    assert_eq!(
        store.call_codes(&owner.user_id).await.unwrap().len(),
        1,
        "the live code stays"
    );
    assert!(
        store.call(&session).await.unwrap().is_some(),
        "a recent call stays"
    );
    // A call left ringing by a node that died is ended by the next run after its deadline.
    let _phone = device(node, &owner, "phone").await;
    let (_, ringing) = initiate(node, &code).await;
    let ringing = ringing["sessionId"].as_str().unwrap();
    retention("n0").run_once(now + 120).await.unwrap();
    let row = store.call(ringing).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.ended_at),
        ("missed", Some(now + 120))
    );
    // Past the retention period the ended calls go too.
    let later = now + 31 * 86_400;
    let removed = retention("n0").run_once(later).await.unwrap();
    assert!(removed >= 1);
    assert!(store.call(&session).await.unwrap().is_none());
}
