//! The cluster backends a node runs on — the [`Bus`] with its inbound stream and the
//! [`Presence`] store — built from the config: in-process for a single node, Redis for a
//! cluster node. The one place that knows every implementation.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::bus::memory::MemoryHub;
use crate::bus::redis::RedisBus;
use crate::bus::{Bus, Inbound};
use crate::config::Config;
use crate::presence::Presence;
use crate::presence::memory::MemoryPresence;
use crate::presence::redis::RedisPresence;
use crate::protocol::NodeId;
use crate::redis::{self, Keys};
use crate::tasks::Tasks;

/// The cluster backends a node runs on, and the essential tasks they started.
pub struct Backends {
    pub bus: Arc<dyn Bus>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub presence: Arc<dyn Presence>,
    pub tasks: Tasks,
}

impl Backends {
    /// In-process backends for a standalone node.
    pub fn standalone(node: &NodeId) -> Self {
        Self::in_process(&MemoryHub::new(), &MemoryPresence::new(), node)
    }

    /// In-process backends shared by several nodes of one process.
    pub fn in_process(hub: &MemoryHub, presence: &MemoryPresence, node: &NodeId) -> Self {
        let (bus, inbound) = hub.attach(node.clone());
        Self {
            bus: Arc::new(bus),
            inbound,
            presence: Arc::new(presence.clone()),
            tasks: Tasks::default(),
        }
    }

    /// Redis when `redis_url` is set, otherwise in-process.
    pub async fn from_config(config: &Config, node: &NodeId) -> anyhow::Result<Self> {
        match &config.redis.url {
            None => Ok(Self::standalone(node)),
            Some(url) => connect(url.expose(), &config.redis.prefix, node, config.lease_ttl).await,
        }
    }
}

/// Connects a node's bus and presence to the Redis `url` names, under `prefix`. On failure
/// nothing is left behind: the clients made are closed and the tasks started are stopped.
pub async fn connect(
    url: &str,
    prefix: &str,
    node: &NodeId,
    lease_ttl: Duration,
) -> anyhow::Result<Backends> {
    let target = redis::url::parse(url)?;
    let clients = redis::Clients::connect(&target).await?;
    let mut tasks = Tasks::default();
    match start(&target, prefix, node, lease_ttl, &clients, &mut tasks).await {
        Ok((bus, inbound, presence)) => {
            tracing::info!(redis = %target.redacted, cluster = target.clustered, prefix, "cluster backends connected");
            Ok(Backends {
                bus: Arc::new(bus),
                inbound,
                presence: Arc::new(presence),
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

type Started = (RedisBus, mpsc::Receiver<Inbound>, RedisPresence);

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
    let presence = RedisPresence::start(clients.commands.clone(), keys, node.clone(), lease_ttl)
        .await
        .with_context(|| format!("starting presence on {}", target.redacted))?;
    Ok((bus, inbound, presence))
}
