//! The E2EE tables' part of the store contract, on every engine: claims oldest first and
//! once, tombstones that refuse re-uploads, idempotent uploads, the queue and its
//! acknowledgements, single-use tickets, batched purges and removal with the device.

use super::*;

const NOW: i64 = 1_800_000_000;

fn key(key_id: i64) -> OneTimeKey {
    OneTimeKey {
        key_id,
        public_key: format!("key-{key_id}"),
    }
}

fn signed(key_id: i64) -> SignedKey {
    SignedKey {
        key_id,
        public_key: format!("spk-{key_id}"),
        signature: format!("sig-{key_id}"),
    }
}

fn device(token: &str, keys: std::ops::Range<i64>) -> NewDevice {
    NewDevice {
        token_hash: format!("hash-{token}"),
        registration_id: 7,
        signed_prekey: signed(1),
        fallback_key: signed(9),
        one_time_keys: keys.map(key).collect(),
    }
}

pub async fn e2ee(store: &Store) {
    let alice = store
        .e2ee_register("aa", "identity", &device("a1", 1..4), NOW)
        .await
        .unwrap();
    let other = device("x", 0..0);
    let taken = store.e2ee_register("aa", "other", &other, NOW).await;
    assert!(matches!(taken, Err(StoreError::Duplicate(_))));
    assert_eq!(
        store
            .e2ee_add_device(&alice, &device("a2", 0..0), NOW)
            .await
            .unwrap(),
        2
    );
    let a1 = store
        .e2ee_device_by_token("hash-a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a1.account_id.as_str(), a1.device_id), (alice.as_str(), 1));
    assert_eq!(
        store.e2ee_account("aa").await.unwrap().unwrap().1,
        "identity"
    );
    assert_eq!(store.e2ee_devices(&alice).await.unwrap().len(), 2);
    // Claims: oldest first, each once, then none; the ids are remembered.
    for want in 1..4 {
        let claimed = store.e2ee_claim(&a1, NOW + want).await.unwrap();
        assert_eq!(claimed, Some(key(want)));
    }
    assert_eq!(store.e2ee_claim(&a1, NOW).await.unwrap(), None);
    let again = store
        .e2ee_upload(&a1, &[key(2), key(10)], None, 500, NOW)
        .await;
    assert_eq!(again.unwrap(), Upload::Conflict(vec![2]));
    assert_eq!(
        store.e2ee_prekey_count(&a1).await.unwrap(),
        0,
        "nothing stored"
    );
    let fresh = [key(10), key(11)];
    assert_eq!(
        store
            .e2ee_upload(&a1, &fresh, None, 500, NOW)
            .await
            .unwrap(),
        Upload::Stored(2)
    );
    assert_eq!(
        store
            .e2ee_upload(&a1, &fresh, None, 500, NOW)
            .await
            .unwrap(),
        Upload::Stored(2)
    );
    let over = store
        .e2ee_upload(&a1, &[key(12)], Some(&signed(2)), 2, NOW)
        .await;
    assert_eq!(over.unwrap(), Upload::TooMany { held: 2 });
    store
        .e2ee_upload(&a1, &[], Some(&signed(3)), 2, NOW)
        .await
        .unwrap();
    assert_eq!(
        store.e2ee_devices(&alice).await.unwrap()[0].signed_prekey_id,
        3
    );
    // Tombstones go in batches once old.
    assert_eq!(store.e2ee_purge_claimed(NOW + 3, 1).await.unwrap(), 1);
    assert_eq!(store.e2ee_purge_claimed(NOW + 3, 10).await.unwrap(), 1);
    assert_eq!(store.e2ee_purge_claimed(NOW + 3, 10).await.unwrap(), 0);
    // The queue.
    let outgoing = |n: i64| Outgoing {
        device_id: 1,
        content: format!("c{n}"),
    };
    let ids = store
        .e2ee_enqueue(&alice, &a1, &[outgoing(1), outgoing(2), outgoing(3)], NOW)
        .await
        .unwrap();
    let page = store.e2ee_pending(&a1, 0, 2).await.unwrap();
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(page[0].content, "c1");
    let rest = store.e2ee_pending(&a1, ids[1], 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    let a2 = store
        .e2ee_device_by_token("hash-a2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.e2ee_ack(&a2, &ids).await.unwrap(),
        0,
        "not its messages"
    );
    assert_eq!(
        store.e2ee_ack(&a1, &[ids[0], ids[0], 999]).await.unwrap(),
        1
    );
    assert_eq!(
        store.e2ee_ack(&a1, &[ids[0]]).await.unwrap(),
        0,
        "idempotent"
    );
    assert_eq!(store.e2ee_purge_messages(NOW + 1, 1).await.unwrap(), 1);
    assert_eq!(store.e2ee_pending(&a1, 0, 10).await.unwrap().len(), 1);
    // Tickets: once, before they expire.
    store.e2ee_add_ticket("t1", &a1, NOW + 300).await.unwrap();
    store.e2ee_add_ticket("t2", &a1, NOW + 300).await.unwrap();
    assert_eq!(
        store.e2ee_take_ticket("t1", NOW).await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(store.e2ee_take_ticket("t1", NOW).await.unwrap(), None);
    assert_eq!(store.e2ee_take_ticket("t2", NOW + 300).await.unwrap(), None);
    store.e2ee_add_ticket("t3", &a1, NOW).await.unwrap();
    assert_eq!(store.e2ee_purge_tickets(NOW + 1, 10).await.unwrap(), 1);
    // Push tokens, sealed by the caller; removing a device removes what is its.
    assert!(
        store
            .e2ee_set_push_token(&a1, Some("sealed"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.e2ee_push_token(&a1).await.unwrap().as_deref(),
        Some("sealed")
    );
    assert!(store.e2ee_remove_device(&a1).await.unwrap());
    assert_eq!(store.e2ee_device_by_token("hash-a1").await.unwrap(), None);
    assert_eq!(store.e2ee_pending(&a1, 0, 10).await.unwrap().len(), 0);
    assert_eq!(store.e2ee_prekey_count(&a1).await.unwrap(), 0);
}
