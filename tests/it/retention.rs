//! The retention job across a cluster: nodes that start at once on one Postgres run it once,
//! and it deletes everything expired, in batches.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard::store::{NewUser, PoolSize, RefreshToken, Store};

use crate::support::{NodeProcess, WAIT, fresh_postgres, sample, scrape};

const EXPIRED: usize = 2_345;

async fn store_with_expired_tokens(url: &str) -> Store {
    let store = Store::connect(url, PoolSize { min: 1, max: 4 })
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let now = switchboard::auth::unix_seconds();
    let user = NewUser {
        username: "owner",
        email: None,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        role: "user",
    };
    let user = store.create_user(&user, now).await.unwrap();
    for n in 0..EXPIRED + 3 {
        let token = RefreshToken {
            id: format!("rt-{n}"),
            user_id: user.id.clone(),
            family_id: "family".into(),
            token_hash: format!("hash-{n}"),
            created_at: now - 7200,
            expires_at: if n < EXPIRED { now - 60 } else { now + 3600 },
            revoked: false,
            replaced_by: None,
        };
        store.add_refresh_token(&token).await.unwrap();
    }
    store
}

/// The sum of `series` over the nodes' metrics listeners.
async fn total(listeners: &[SocketAddr], series: &str) -> f64 {
    let mut sum = 0.0;
    for &addr in listeners {
        sum += sample(&scrape(addr).await, series).unwrap_or(0.0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Postgres: run scripts/test"]
async fn five_nodes_starting_at_once_run_the_retention_job_once() {
    let url = fresh_postgres("retention").await;
    let store = store_with_expired_tokens(&url).await;
    let mut nodes: Vec<NodeProcess> = (0..5)
        .map(|_| {
            NodeProcess::start(&[
                ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
                ("SWITCHBOARD_DATABASE_URL", &url),
                ("SWITCHBOARD_RETENTION_INTERVAL", "1h"),
            ])
        })
        .collect();
    let mut addresses = Vec::new();
    for node in &mut nodes {
        addresses.push(node.metrics_address());
        node.wait_for("connected; serving", WAIT);
    }
    let ran = r#"switchboard_retention_runs_total{result="ran"}"#;
    let skipped = r#"switchboard_retention_runs_total{result="skipped"}"#;
    let failed = r#"switchboard_retention_runs_total{result="failed"}"#;
    // Generous: the whole suite runs beside it, and the run deletes thousands of rows.
    let deadline = Instant::now() + WAIT * 6;
    loop {
        let ticked = total(&addresses, ran).await + total(&addresses, skipped).await;
        assert_eq!(total(&addresses, failed).await, 0.0, "a run failed");
        if ticked >= 5.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{ticked} of 5 nodes ticked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total(&addresses, ran).await, 1.0, "one node ran it");
    assert_eq!(
        total(&addresses, skipped).await,
        4.0,
        "the others found it claimed"
    );
    let removed = r#"switchboard_retention_rows_removed_total{table="refresh_tokens"}"#;
    assert_eq!(total(&addresses, removed).await, EXPIRED as f64);
    for n in 0..EXPIRED + 3 {
        let kept = store.refresh_token(&format!("hash-{n}")).await.unwrap();
        assert_eq!(kept.is_some(), n >= EXPIRED, "token {n}");
    }
    let (winner, _) = store.last_job_run("retention").await.unwrap().unwrap();
    assert!(!winner.is_empty());
    for node in nodes {
        assert_eq!(node.terminate(), Some(0));
    }
    store.close().await;
}
