//! QR calls across three nodes on a real Redis and a real Postgres (started by scripts/test):
//! the owner's devices ring on different nodes, one answers, the participants signal from
//! different nodes, and devices answering on different nodes at once have exactly one winner.

use switchboard::config::{Config, Secret};

use super::*;
use crate::cluster::{Redis, redis_config, spawn_cluster};

/// A node config on the test Redis under a fresh prefix, with a fresh Postgres database.
pub async fn cluster_config() -> Config {
    config_on(Redis::Standalone).await
}

/// [`cluster_config`] on `redis`.
async fn config_on(redis: Redis) -> Config {
    let admin = std::env::var("SWITCHBOARD_TEST_DATABASE_URL").expect("run scripts/test");
    let name = format!("calls_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    let mut config = redis_config(&redis.url());
    config.database.url = Secret::new(format!("{base}/{name}"));
    config.calls.ip_rate = 0;
    config.calls.code_rate = 0;
    config
}

#[tokio::test]
#[ignore = "needs Redis and Postgres: run scripts/test"]
async fn the_whole_call_flows_across_three_nodes_on_redis_and_postgres() {
    let nodes = spawn_cluster(3, &cluster_config().await);
    assert_eq!(nodes[0].state.store.engine(), "postgres");
    full_flow(&nodes).await;
}

#[tokio::test]
#[ignore = "needs Redis and Postgres: run scripts/test"]
async fn the_whole_call_flows_across_three_nodes_on_a_redis_cluster() {
    let nodes = spawn_cluster(3, &config_on(Redis::Cluster).await);
    full_flow(&nodes).await;
}

#[tokio::test]
#[ignore = "needs Redis and Postgres: run scripts/test"]
async fn devices_answering_on_different_nodes_at_once_have_exactly_one_winner() {
    let nodes = spawn_cluster(3, &cluster_config().await);
    let owner = register(&nodes[0]).await;
    let code = generate(&nodes[0], &owner).await;
    let mut phone = device(&nodes[0], &owner, "phone").await;
    let mut tablet = device(&nodes[1], &owner, "tablet").await;
    for round in 0..25 {
        let (status, call) = initiate(&nodes[2], &code).await;
        assert_eq!(
            (status, call["status"].as_str()),
            (200, Some("ringing")),
            "{call}"
        );
        let session = call["sessionId"].as_str().unwrap();
        phone.recv_type("incoming_call").await;
        tablet.recv_type("incoming_call").await;
        let (one, two) = tokio::join!(
            accept(&nodes[0], &owner, session),
            accept(&nodes[1], &owner, session)
        );
        let mut statuses = [one.0, two.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {one:?} {two:?}");
        let loser = if one.0 == 409 { &one.1 } else { &two.1 };
        assert_eq!(loser["code"], "call_taken");
        phone.recv_type("call_answered").await;
        tablet.recv_type("call_answered").await;
    }
}

#[tokio::test]
#[ignore = "needs Redis and Postgres: run scripts/test"]
async fn an_owner_offline_on_every_node_is_missed_and_one_online_anywhere_rings() {
    let nodes = spawn_cluster(3, &cluster_config().await);
    let owner = register(&nodes[0]).await;
    let code = generate(&nodes[0], &owner).await;
    let (_, call) = initiate(&nodes[1], &code).await;
    assert_eq!(call["status"], "missed");
    let mut phone = device(&nodes[2], &owner, "phone").await;
    let (_, call) = initiate(&nodes[1], &code).await;
    assert_eq!(call["status"], "ringing");
    assert_eq!(
        phone.recv_type("incoming_call").await["sessionId"],
        call["sessionId"]
    );
}
