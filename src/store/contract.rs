//! The contract the store keeps, run on SQLite (a file and in memory) and on a real Postgres
//! (`SWITCHBOARD_TEST_DATABASE_URL`, started by `scripts/test`), each from an empty database.

use super::*;

const NOW: i64 = 1_800_000_000;

fn alice() -> NewUser<'static> {
    NewUser {
        username: "Alice",
        email: Some("alice@example.org"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        role: "user",
    }
}

fn token(id: &str, user: &str, family: &str, expires_at: i64) -> RefreshToken {
    RefreshToken {
        id: id.into(),
        user_id: user.into(),
        family_id: family.into(),
        token_hash: format!("hash-of-{id}"),
        created_at: NOW,
        expires_at,
        revoked: false,
        replaced_by: None,
    }
}

/// Of many nodes claiming a job's interval at once, one wins; the next interval is free again.
async fn jobs(store: &Store) {
    let claims = (0..8).map(|n| {
        let store = store.clone();
        async move {
            store
                .claim_job("retention", &format!("node-{n}"), NOW, 3600)
                .await
        }
    });
    let won: Vec<bool> = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(won.iter().filter(|&&w| w).count(), 1, "{won:?}");
    let winner = format!("node-{}", won.iter().position(|&w| w).unwrap());
    assert_eq!(
        store.last_job_run("retention").await.unwrap(),
        Some((winner, NOW))
    );
    assert!(
        !store
            .claim_job("retention", "late", NOW + 3599, 3600)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_job("retention", "late", NOW + 3600, 3600)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_job("other-job", "late", NOW, 3600)
            .await
            .unwrap()
    );
    assert_eq!(store.last_job_run("missing").await.unwrap(), None);
}

/// A key rotation re-seals what older keys sealed, in batches, and leaves alone what no key
/// opens.
async fn sealed_columns(store: &Store) {
    use crate::datakey::DataKeys;
    execute!(
        store,
        "CREATE TABLE sealed_test (id TEXT PRIMARY KEY, secret TEXT)"
    )
    .unwrap();
    let column = SealedColumn {
        table: "sealed_test",
        key_column: "id",
        column: "secret",
    };
    let (old, new) = (
        DataKeys::new(&[1; 32], &[]),
        DataKeys::new(&[2; 32], &[[1; 32]]),
    );
    for n in 0..25 {
        let id = format!("row-{n:02}");
        let keys = if n % 5 == 0 { &new } else { &old };
        let sealed = keys.seal(&format!("value {n}"), &id);
        execute!(
            store,
            "INSERT INTO sealed_test (id, secret) VALUES ($1, $2)",
            &id,
            &sealed
        )
        .unwrap();
    }
    execute!(
        store,
        "INSERT INTO sealed_test (id, secret) VALUES ('row-nul', NULL)"
    )
    .unwrap();
    let stranger = DataKeys::new(&[3; 32], &[]).seal("lost", "row-x");
    execute!(
        store,
        "INSERT INTO sealed_test (id, secret) VALUES ('row-x', $1)",
        &stranger
    )
    .unwrap();
    let done = store.rotate_column(&column, &new, 4).await.unwrap();
    assert_eq!(
        done,
        Rotated {
            resealed: 20,
            current: 5,
            failed: 1
        }
    );
    let rows = store.sealed_batch(&column, "", 100).await.unwrap();
    assert_eq!(rows.len(), 26, "NULLs are skipped");
    let only_new = DataKeys::new(&[2; 32], &[]);
    for (id, sealed) in rows.iter().filter(|(id, _)| id != "row-x") {
        let n: usize = id.trim_start_matches("row-").parse().unwrap();
        assert_eq!(only_new.open(sealed, id).unwrap(), format!("value {n}"));
    }
    let again = store.rotate_column(&column, &new, 4).await.unwrap();
    assert_eq!((again.resealed, again.current), (0, 25));
    assert!(
        !store
            .reseal(&column, "row-01", "not the value", "x")
            .await
            .unwrap()
    );
    execute!(store, "DROP TABLE sealed_test").unwrap();
}

/// Runs the whole contract on a store whose database is empty.
async fn contract(store: Store) {
    migrates_once(&store).await;
    users(&store).await;
    refresh_tokens(&store).await;
    api_keys(&store).await;
    revocations(&store).await;
    lockout(&store).await;
    events(&store).await;
    jobs(&store).await;
    sealed_columns(&store).await;
    super::e2ee_contract::e2ee(&store).await;
    store.close().await;
}

async fn revocations(store: &Store) {
    let token = Revocation::Token {
        jti: "j-1".into(),
        expires_at: 100,
    };
    let key = Revocation::Key {
        kid: "ak_000000000000000000000001".into(),
    };
    let user = Revocation::User {
        user: "u-1".into(),
        before: 40,
        expires_at: 200,
    };
    let first = store.add_revocation(&token, 10).await.unwrap();
    let second = store.add_revocation(&key, 11).await.unwrap();
    let third = store.add_revocation(&user, 12).await.unwrap();
    assert!(first < second && second < third);
    let all = store.revocations_after(0, 50, 10).await.unwrap();
    assert_eq!(
        all,
        [
            (first, token.clone()),
            (second, key.clone()),
            (third, user.clone())
        ]
    );
    // Made at 11 or later, up to the third: what a reader by sequence may have passed.
    let recent = store.recent_revocations(third, 11, 50, 10).await.unwrap();
    assert_eq!(recent, [(second, key.clone()), (third, user.clone())]);
    // From where a reader left off, page by page; expired ones are left out.
    let rest = store.revocations_after(first, 50, 1).await.unwrap();
    assert_eq!(rest, [(second, key.clone())]);
    let later = store.revocations_after(0, 150, 10).await.unwrap();
    assert_eq!(later, [(second, key.clone()), (third, user.clone())]);
    assert_eq!(store.purge_revocations(150, 1000).await.unwrap(), 1);
    assert_eq!(
        store.purge_revocations(10_000, 1000).await.unwrap(),
        1,
        "keys stay"
    );
    let kept = store.revocations_after(0, 10_000, 10).await.unwrap();
    assert_eq!(kept, [(second, key)]);
}

async fn lockout(store: &Store) {
    let rule = LockoutRule {
        threshold: 3,
        window_seconds: 100,
        lock_seconds: 500,
    };
    let counted = |locked_until| LoginAttempt::Counted { locked_until };
    // Counted before the check, by name in any case; the third within the window locks.
    assert_eq!(
        store.reserve_login("Locky", 10, rule).await.unwrap(),
        counted(None)
    );
    assert_eq!(
        store.reserve_login("locky", 20, rule).await.unwrap(),
        counted(None)
    );
    assert_eq!(
        store.login_failures("LOCKY").await.unwrap(),
        Some((2, None))
    );
    assert_eq!(
        store.reserve_login("locky", 30, rule).await.unwrap(),
        counted(Some(530))
    );
    assert_eq!(
        store.reserve_login("locky", 40, rule).await.unwrap(),
        LoginAttempt::Locked(530)
    );
    assert_eq!(
        store.login_failures("locky").await.unwrap(),
        Some((3, Some(530)))
    );
    // After the lock the count starts again.
    assert_eq!(
        store.reserve_login("locky", 530, rule).await.unwrap(),
        counted(None)
    );
    assert_eq!(
        store.login_failures("locky").await.unwrap(),
        Some((1, None))
    );
    // Failures older than the window no longer count.
    assert_eq!(
        store.reserve_login("locky", 540, rule).await.unwrap(),
        counted(None)
    );
    assert_eq!(
        store.reserve_login("locky", 700, rule).await.unwrap(),
        counted(None)
    );
    assert_eq!(
        store.login_failures("locky").await.unwrap(),
        Some((1, None))
    );
    assert!(store.clear_login_failures("Locky").await.unwrap());
    assert!(!store.clear_login_failures("locky").await.unwrap());
    // Stale counts go; locks that still hold stay.
    store.reserve_login("old", 1, rule).await.unwrap();
    for _ in 0..3 {
        store.reserve_login("held", 1, rule).await.unwrap();
    }
    assert_eq!(store.purge_login_failures(100, 200, 1000).await.unwrap(), 1);
    assert_eq!(store.login_failures("old").await.unwrap(), None);
    assert!(store.login_failures("held").await.unwrap().is_some());
}

async fn migrates_once(store: &Store) {
    assert!(store.check().await.is_ok());
    store.migrate().await.unwrap();
    let applied = store.applied_migrations().await.unwrap();
    let versions = |m: &sqlx::migrate::Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
    let expected = versions(&SQLITE_MIGRATIONS);
    assert_eq!(
        versions(&POSTGRES_MIGRATIONS),
        expected,
        "both engines, the same versions"
    );
    assert_eq!(expected, (1..=expected.len() as i64).collect::<Vec<_>>());
    assert_eq!(applied, expected);
    store.migrate().await.expect("a second run is a no-op");
    assert_eq!(store.applied_migrations().await.unwrap(), applied);
}

async fn users(store: &Store) {
    let created = store.create_user(&alice(), NOW).await.unwrap();
    assert!(created.active);
    let shout = NewUser {
        username: "ALICE",
        ..alice()
    };
    let taken = store.create_user(&shout, NOW).await.unwrap_err();
    assert!(matches!(taken, StoreError::Duplicate(_)), "{taken}");
    let bob = NewUser {
        username: "bob",
        email: None,
        ..alice()
    };
    store.create_user(&bob, NOW).await.unwrap();

    let found = store.user_by_name("aLiCe").await.unwrap().unwrap();
    assert_eq!(found, created);
    assert_eq!(
        store.user_by_id(&created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.user_by_name("nobody").await.unwrap(), None);
    let names: Vec<String> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["Alice", "bob"]);

    assert!(store.set_password(&created.id, "new-hash").await.unwrap());
    assert!(store.set_active(&created.id, false).await.unwrap());
    store.record_login(&created.id, NOW + 5).await.unwrap();
    let changed = store.user_by_id(&created.id).await.unwrap().unwrap();
    assert_eq!(
        (
            changed.password_hash.as_str(),
            changed.active,
            changed.last_login_at
        ),
        ("new-hash", false, Some(NOW + 5))
    );
    assert!(!store.set_active("no-such-id", true).await.unwrap());
    assert!(
        !format!("{changed:?}").contains("new-hash"),
        "Debug shows no hash"
    );
}

async fn refresh_tokens(store: &Store) {
    let user = store.user_by_name("bob").await.unwrap().unwrap();
    let first = token("t1", &user.id, "f1", NOW + 60);
    store.add_refresh_token(&first).await.unwrap();
    assert_eq!(
        store.refresh_token("hash-of-t1").await.unwrap(),
        Some(first)
    );

    let second = token("t2", &user.id, "f1", NOW + 60);
    assert!(store.rotate_refresh_token("t1", &second).await.unwrap());
    let rotated = store.refresh_token("hash-of-t1").await.unwrap().unwrap();
    assert_eq!(
        (rotated.revoked, rotated.replaced_by.as_deref()),
        (true, Some("t2"))
    );
    // A reuse of the rotated token stores nothing.
    let third = token("t3", &user.id, "f1", NOW + 60);
    assert!(!store.rotate_refresh_token("t1", &third).await.unwrap());
    assert_eq!(store.refresh_token("hash-of-t3").await.unwrap(), None);
    assert_eq!(store.revoke_family("f1").await.unwrap(), 1);
    assert!(
        store
            .refresh_token("hash-of-t2")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );

    store
        .add_refresh_token(&token("t4", &user.id, "f2", NOW - 1))
        .await
        .unwrap();
    store
        .add_refresh_token(&token("t5", &user.id, "f3", NOW + 60))
        .await
        .unwrap();
    assert_eq!(store.purge_expired_tokens(NOW, 1000).await.unwrap(), 1);
    assert_eq!(store.revoke_user_tokens(&user.id).await.unwrap(), 1);
    // Removing a user removes its tokens.
    assert!(store.remove_user(&user.id).await.unwrap());
    assert_eq!(store.refresh_token("hash-of-t5").await.unwrap(), None);
    assert!(!store.remove_user(&user.id).await.unwrap());
}

async fn api_keys(store: &Store) {
    let key = |id: &str, name: &str| ApiKey {
        id: id.into(),
        name: name.into(),
        secret_sealed: format!("sealed-{id}"),
        created_at: NOW,
        revoked_at: None,
    };
    store.add_api_key(&key("k1", "backend")).await.unwrap();
    let same_name = store.add_api_key(&key("k2", "backend")).await.unwrap_err();
    assert!(matches!(same_name, StoreError::Duplicate(_)), "{same_name}");
    assert!(store.revoke_api_key("k1", NOW + 1).await.unwrap());
    assert!(
        !store.revoke_api_key("k1", NOW + 2).await.unwrap(),
        "revoked once"
    );
    // A revoked key's name may be used again.
    store.add_api_key(&key("k3", "backend")).await.unwrap();
    let keys = store.api_keys().await.unwrap();
    let listed: Vec<_> = keys.iter().map(|k| (k.id.as_str(), k.revoked_at)).collect();
    assert_eq!(listed, [("k1", Some(NOW + 1)), ("k3", None)]);
    assert_eq!(
        store.api_key("k3").await.unwrap(),
        Some(key("k3", "backend"))
    );
    assert!(
        !format!("{:?}", keys[1]).contains("sealed"),
        "Debug shows no secret"
    );
}

async fn events(store: &Store) {
    for (at, kind) in [
        (NOW, "login_failed"),
        (NOW + 1, "login_failed"),
        (NOW + 2, "lockout"),
    ] {
        let event = SecurityEvent {
            id: 0,
            at,
            kind: kind.into(),
            user_id: None,
            username: Some("alice".into()),
            ip: Some("192.0.2.1".into()),
            detail: None,
        };
        store.record_event(&event).await.unwrap();
    }
    let latest = store.events(2).await.unwrap();
    let kinds: Vec<_> = latest.iter().map(|e| (e.at, e.kind.as_str())).collect();
    assert_eq!(kinds, [(NOW + 2, "lockout"), (NOW + 1, "login_failed")]);
}

fn size() -> PoolSize {
    PoolSize { min: 0, max: 4 }
}

#[tokio::test]
async fn sqlite_file_keeps_the_contract() {
    let dir = std::env::temp_dir().join(format!("sb-store-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}/nested/switchboard.db", dir.display());
    let store = Store::connect(&url, size()).await.unwrap();
    assert_eq!(store.engine(), "sqlite");
    contract(store).await;
    assert!(
        dir.join("nested/switchboard.db").exists(),
        "file and directory created"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sqlite_in_memory_keeps_the_contract() {
    contract(Store::connect("sqlite::memory:", size()).await.unwrap()).await;
}

#[tokio::test]
async fn bad_urls_are_refused_without_showing_passwords() {
    for url in [
        "mysql://u:hunter2@h/db",
        "nonsense",
        "postgres://u:hunter2@h:notaport/db",
    ] {
        let e = Store::connect(url, size()).await.unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{url}: {e}");
    }
    assert_eq!(
        redact("postgres://u:p@ss@h:5432/db"),
        "postgres://h:5432/db"
    );
    assert_eq!(
        redact("postgres://u@h/db?password=hunter2"),
        "postgres://h/db"
    );
}

#[tokio::test]
#[ignore = "needs Postgres: run scripts/test"]
async fn postgres_keeps_the_contract() {
    let admin = std::env::var("SWITCHBOARD_TEST_DATABASE_URL")
        .expect("SWITCHBOARD_TEST_DATABASE_URL is not set: run scripts/test");
    let name = format!("store_{}", uuid::Uuid::new_v4().simple());
    let pool = PgPool::connect(&admin).await.unwrap();
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&pool)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let store = Store::connect(&format!("{base}/{name}"), size())
        .await
        .unwrap();
    assert_eq!(store.engine(), "postgres");
    contract(store).await;
    let drop = format!("DROP DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&pool)
        .await
        .unwrap();
}
