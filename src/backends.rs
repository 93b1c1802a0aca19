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

/// Connects a node's bus and presence to the Redis `url` names, under `prefix`.
pub async fn connect(
    url: &str,
    prefix: &str,
    node: &NodeId,
    lease_ttl: Duration,
) -> anyhow::Result<Backends> {
    let target = redis::url::parse(url)?;
    let keys = Keys::new(prefix);
    let mut tasks = Tasks::default();
    let publisher = redis::client(&target).await?;
    let subscriber = redis::subscriber(&target).await?;
    let (bus, inbound) = RedisBus::start(
        node.clone(),
        keys.clone(),
        target.clustered,
        publisher,
        subscriber,
        &mut tasks,
    )
    .await
    .with_context(|| format!("subscribing to the node channel on {}", target.redacted))?;
    let client = redis::client(&target).await?;
    let presence = RedisPresence::start(client, keys, node.clone(), lease_ttl)
        .await
        .with_context(|| format!("starting presence on {}", target.redacted))?;
    tracing::info!(redis = %target.redacted, cluster = target.clustered, prefix, "cluster backends connected");
    Ok(Backends {
        bus: Arc::new(bus),
        inbound,
        presence: Arc::new(presence),
        tasks,
    })
}
