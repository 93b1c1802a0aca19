//! Redis plumbing the cluster backends share: the URL ([`url`]), the key and channel layout
//! ([`Keys`]) and a client builder with the node's reconnect and timeout policy. A leaf: it
//! knows Redis and the protocol's ids, nothing of the bus, presence or the node above them.
//!
//! # Key layout
//!
//! Every name starts with a hash tag, so that a Lua script's keys share one Redis Cluster slot
//! and sharded channels spread over the shards. `P` is `redis_prefix` (several clusters can
//! share one Redis), `INC` a node incarnation `node-id/epoch`.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{P:room:R}` | ZSET | member records of room R, scored by join order |
//! | `{P:client:C}` | HASH | the claim on client id C: `u` user, `k` conn, `o` owner, `m` record |
//! | `{P:user:U}:dev` | HASH | user U's connections: conn → owner (`devices` = HLEN) |
//! | `{P:conn:K}` | HASH | connection K: `o` owner, `m` record, `r:R` per room it joined; `s` session id and `b` session record when resumable |
//! | `{P:sess:S}` | HASH | resumable session S: `c` the connection holding it |
//! | `{P:conn:K}:held` | LIST | frames for connection K's session, whose node died, until a survivor takes it over |
//! | `{P:node:INC}` | SET | connections incarnation INC has entries for (the reaper's index) |
//! | `{P:nodes}` | ZSET | live incarnations, scored by lease deadline (ms, Redis clock) |
//! | `{P:nodes}:reaping` | ZSET | dead incarnations being reaped, scored by the reaper's deadline |
//! | `{P:nodes}:reaped` | ZSET | incarnations a reaper took over, scored by when (kept a day) |
//! | `{P:rooms}` | ZSET | rooms that may have members, scored by last join (s) |
//!
//! A member record is `conn|client|owner|["user","username"]`. Channels: `{P:room:R}:bus`,
//! `{P:user:U}:bus` and `{P:node:N}:bus` — PUBLISH/SUBSCRIBE on a standalone server,
//! SPUBLISH/SSUBSCRIBE on Redis Cluster. `docs/cluster.md` explains timing and failure behaviour.

mod keys;
mod script;
pub mod url;

use std::time::Duration;

use anyhow::Context;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface};
use fred::prelude::{Builder, ConnectionConfig, PerformanceConfig, ReconnectPolicy};

pub use keys::Keys;
pub use script::Script;
pub use url::Target;

/// Reconnect delays, ms: quick at first, never slower than a second.
const RECONNECT_MIN_MS: u32 = 50;
const RECONNECT_MAX_MS: u32 = 1000;
/// Connect and per-command bound for fred's own commands (AUTH, CLUSTER SLOTS, subscribe).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pub/sub messages fred buffers for the inbound task before it counts them as dropped.
const SUBSCRIBER_BUFFER: usize = 4096;
/// Connection events fred buffers for a client that receives no messages.
const EVENT_BUFFER: usize = 32;

/// The connected clients of one node: a publisher and a subscriber for the bus, a command
/// client for presence.
pub struct Clients {
    pub publisher: Client,
    pub subscriber: SubscriberClient,
    pub commands: Client,
}

/// What the clients' owner hears of their connections (the node counts them).
#[derive(Debug, Clone, Copy)]
pub struct Events {
    /// A connection came back after it was lost.
    pub reconnected: fn(),
    /// A connection failed (it is being re-established).
    pub failed: fn(),
}

impl Events {
    /// Nothing is told.
    pub const NONE: Self = Self {
        reconnected: || {},
        failed: || {},
    };
}

impl Clients {
    /// Connects all three, or none: a failure closes those already connected.
    pub async fn connect(target: &Target, events: Events) -> anyhow::Result<Self> {
        let publisher = client_with(target, events).await?;
        let subscriber = match subscriber_with(target, events).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                let _ = publisher.quit().await;
                return Err(e);
            }
        };
        match client_with(target, events).await {
            Ok(commands) => Ok(Self {
                publisher,
                subscriber,
                commands,
            }),
            Err(e) => {
                let _ = tokio::join!(publisher.quit(), subscriber.quit());
                Err(e)
            }
        }
    }

    /// Closes every connection (and stops their reconnecting).
    pub async fn quit(&self) {
        let _ = tokio::join!(
            self.publisher.quit(),
            self.subscriber.quit(),
            self.commands.quit()
        );
    }
}

/// A connected command client (one connection per shard).
pub async fn client(target: &Target) -> anyhow::Result<Client> {
    client_with(target, Events::NONE).await
}

async fn client_with(target: &Target, events: Events) -> anyhow::Result<Client> {
    let client = builder(target, EVENT_BUFFER)
        .build()
        .context("building the Redis client")?;
    init(&client, &target.redacted, events).await?;
    Ok(client)
}

/// A connected subscriber client, buffering pub/sub messages for one inbound task.
pub async fn subscriber(target: &Target) -> anyhow::Result<SubscriberClient> {
    subscriber_with(target, Events::NONE).await
}

async fn subscriber_with(target: &Target, events: Events) -> anyhow::Result<SubscriberClient> {
    let client = builder(target, SUBSCRIBER_BUFFER)
        .build_subscriber_client()
        .context("building the Redis subscriber")?;
    init(&client, &target.redacted, events).await?;
    Ok(client)
}

fn builder(target: &Target, buffer: usize) -> Builder {
    let mut builder = Builder::from_config(target.config.clone());
    builder
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            RECONNECT_MIN_MS,
            RECONNECT_MAX_MS,
            2,
        ))
        .set_performance_config(PerformanceConfig {
            default_command_timeout: CONNECT_TIMEOUT,
            broadcast_channel_capacity: buffer,
            ..PerformanceConfig::default()
        })
        .set_connection_config(ConnectionConfig {
            connection_timeout: CONNECT_TIMEOUT,
            internal_command_timeout: CONNECT_TIMEOUT,
            ..ConnectionConfig::default()
        });
    builder
}

/// Connects a client (failing when Redis is unreachable), logs its connection errors and
/// tells `events` of them and of reconnections. A client that could not connect is shut down,
/// so that it does not go on retrying.
async fn init(client: &impl EventInterface, redis: &str, events: Events) -> anyhow::Result<()> {
    use tokio::sync::broadcast::error::RecvError;
    let mut errors = client.error_rx();
    let mut reconnects = client.reconnect_rx();
    if let Err(e) = client.init().await {
        let _ = client.quit().await;
        return Err(e).with_context(|| format!("connecting to Redis at {redis}"));
    }
    // fred announces the first connections as "reconnections" too.
    while reconnects.try_recv().is_ok() {}
    tokio::spawn(async move {
        loop {
            match errors.recv().await {
                Ok((error, server)) => {
                    (events.failed)();
                    let server = server.map(|s| s.to_string()).unwrap_or_default();
                    tracing::warn!(%error, %server, "Redis connection error; reconnecting");
                }
                Err(RecvError::Lagged(n)) => (0..n).for_each(|_| (events.failed)()),
                Err(RecvError::Closed) => break,
            }
        }
    });
    tokio::spawn(async move {
        loop {
            match reconnects.recv().await {
                Ok(server) => {
                    (events.reconnected)();
                    tracing::info!(%server, "Redis connection re-established");
                }
                Err(RecvError::Lagged(n)) => (0..n).for_each(|_| (events.reconnected)()),
                Err(RecvError::Closed) => break,
            }
        }
    });
    Ok(())
}
