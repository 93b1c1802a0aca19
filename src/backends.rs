//! What a node runs on — the [`Bus`] with its inbound stream, the [`Presence`] store and the
//! durable [`Store`] — built from the config: in-process bus and presence for a single node,
//! Redis for a cluster node; SQLite or Postgres for durable data. The one place that knows
//! every implementation.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::bus::memory::MemoryHub;
use crate::bus::redis::RedisBus;
use crate::bus::{Bus, Inbound};
use crate::config::Config;
use crate::limits::redis::RedisThrottle;
use crate::limits::{MemoryThrottle, Throttle};
use crate::presence::Presence;
use crate::presence::memory::MemoryPresence;
use crate::presence::redis::RedisPresence;
use crate::protocol::NodeId;
use crate::redis::{self, Keys};
use crate::store::{PoolSize, Store};
use crate::tasks::Tasks;

/// The backends a node runs on, and the essential tasks they started.
pub struct Backends {
    pub bus: Arc<dyn Bus>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub presence: Arc<dyn Presence>,
    /// Request rates per address, shared by the nodes that share the bus.
    pub throttle: Arc<dyn Throttle>,
    pub store: Store,
    pub tasks: Tasks,
}

impl Backends {
    /// In-process bus and presence for a standalone node.
    pub fn standalone(node: &NodeId, store: Store) -> Self {
        Self::in_process(&MemoryHub::new(), &MemoryPresence::new(), node, store)
    }

    /// In-process bus and presence shared by several nodes of one process.
    pub fn in_process(
        hub: &MemoryHub,
        presence: &MemoryPresence,
        node: &NodeId,
        store: Store,
    ) -> Self {
        let (bus, inbound) = hub.attach(node.clone());
        Self {
            bus: Arc::new(bus),
            inbound,
            presence: Arc::new(presence.clone()),
            throttle: Arc::new(MemoryThrottle::default()),
            store,
            tasks: Tasks::default(),
        }
    }

    /// The store the config names, then Redis when `redis.url` is set (otherwise in-process).
    pub async fn from_config(config: &Config, node: &NodeId) -> anyhow::Result<Self> {
        let store = open_store(config).await?;
        match &config.redis.url {
            None => Ok(Self::standalone(node, store)),
            Some(url) => {
                let (prefix, ttl) = (&config.redis.prefix, config.lease_ttl);
                connect(url.expose(), prefix, node, ttl, store).await
            }
        }
    }
}

fn pool_size(config: &Config) -> PoolSize {
    PoolSize {
        min: u32::try_from(config.database.pool_min).unwrap_or(u32::MAX),
        max: u32::try_from(config.database.pool_max).unwrap_or(u32::MAX),
    }
}

/// The first delay between attempts to migrate a database that is down, doubled after each.
const MIGRATE_RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest delay between those attempts.
const MIGRATE_RETRY_MAX: Duration = Duration::from_secs(10);

/// The store of a node, which must not wait for it: an SQLite file opens and migrates at once
/// (a failure there is a configuration error); a Postgres pool connects on first use, and a
/// background task applies the migrations once the database answers, retrying with backoff.
/// Until then, whatever needs the database answers `unavailable`; signaling does not need it.
pub async fn node_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database.url.expose();
    let shown = crate::store::redact(url);
    let store = Store::connect_lazy(url, pool_size(config))
        .await
        .with_context(|| format!("opening the database at {shown}"))?;
    if store.engine() == "sqlite" {
        migrate_sqlite(&store)
            .await
            .with_context(|| format!("migrating the database at {shown}"))?;
        return Ok(store);
    }
    let migrating = store.clone();
    tokio::spawn(async move {
        let mut delay = MIGRATE_RETRY_FIRST;
        for attempt in 1u32.. {
            match migrating.migrate().await {
                Ok(()) => {
                    tracing::info!(database = %shown, "database migrated");
                    return;
                }
                Err(error) => {
                    tracing::warn!(database = %shown, attempt, retry_in = ?delay, %error, "database not migrated yet; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MIGRATE_RETRY_MAX);
        }
    });
    Ok(store)
}

/// Migrates an SQLite file that other processes may be migrating at the same moment (nodes
/// started together on one machine): SQLite's migrations take no lock, so a loser of that race
/// finds the tables made and tries again, by when the winner has recorded its migration.
async fn migrate_sqlite(store: &Store) -> Result<(), crate::store::StoreError> {
    let mut tries = 0;
    loop {
        match store.migrate().await {
            Err(_) if tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            done => return done,
        }
    }
}

/// Opens the database the config names and applies the migrations it lacks (for the CLI,
/// which waits for it).
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let size = pool_size(config);
    let url = config.database.url.expose();
    let shown = crate::store::redact(url);
    let store = Store::connect(url, size)
        .await
        .with_context(|| format!("opening the database at {shown}"))?;
    if let Err(e) = store.migrate().await {
        store.close().await;
        return Err(e).with_context(|| format!("migrating the database at {shown}"));
    }
    Ok(store)
}

/// Connects a node's bus and presence to the Redis `url` names, under `prefix`. On failure
/// nothing is left behind: the clients made are closed and the tasks started are stopped.
pub async fn connect(
    url: &str,
    prefix: &str,
    node: &NodeId,
    lease_ttl: Duration,
    store: Store,
) -> anyhow::Result<Backends> {
    let target = redis::url::parse(url)?;
    let events = redis::Events {
        reconnected: || metrics::counter!(crate::metrics::REDIS_RECONNECTS).increment(1),
        failed: || metrics::counter!(crate::metrics::REDIS_ERRORS).increment(1),
    };
    let clients = redis::Clients::connect(&target, events).await?;
    let mut tasks = Tasks::default();
    match start(&target, prefix, node, lease_ttl, &clients, &mut tasks).await {
        Ok((bus, inbound, presence, throttle)) => {
            tracing::info!(redis = %target.redacted, cluster = target.clustered, prefix, "cluster backends connected");
            Ok(Backends {
                bus: Arc::new(bus),
                inbound,
                presence: Arc::new(presence),
                throttle: Arc::new(throttle),
                store,
                tasks,
            })
        }
        Err(e) => {
            tasks.abort();
            clients.quit().await;
            Err(e)
        }
    }
}

type Started = (
    RedisBus,
    mpsc::Receiver<Inbound>,
    RedisPresence,
    RedisThrottle,
);

async fn start(
    target: &redis::Target,
    prefix: &str,
    node: &NodeId,
    lease_ttl: Duration,
    clients: &redis::Clients,
    tasks: &mut Tasks,
) -> anyhow::Result<Started> {
    let keys = Keys::new(prefix);
    let (bus, inbound) = RedisBus::start(
        node.clone(),
        keys.clone(),
        target.clustered,
        clients.publisher.clone(),
        clients.subscriber.clone(),
        tasks,
    )
    .await
    .with_context(|| format!("subscribing to the node channel on {}", target.redacted))?;
    let presence = RedisPresence::start(
        clients.commands.clone(),
        keys.clone(),
        node.clone(),
        lease_ttl,
    )
    .await
    .with_context(|| format!("starting presence on {}", target.redacted))?;
    let throttle = RedisThrottle::start(clients.commands.clone(), keys)
        .await
        .with_context(|| format!("loading the rate limits' script on {}", target.redacted))?;
    Ok((bus, inbound, presence, throttle))
}
