//! The Redis bus. One channel per topic (`{prefix:room:R}:bus`, `{prefix:user:U}:bus`): classic
//! PUBLISH/SUBSCRIBE against a standalone server, sharded SPUBLISH/SSUBSCRIBE against Redis
//! Cluster so that traffic spreads over the shards.
//!
//! - **One publishing connection.** Every publish of a node goes through one fred client (one
//!   connection per shard), so one sender's envelopes on one channel reach Redis in order.
//! - **One subscriber connection and one inbound task.** What arrives is decoded and pushed
//!   into a bounded queue; when it is full the envelope is dropped and counted
//!   ([`crate::metrics::BUS_DROPPED`]).
//! - **Receiver counts.** PUBLISH/SPUBLISH count subscribed connections, one per node; this node
//!   is subtracted when it listens to the channel itself.
//! - **Reconnects.** The bus keeps the set of channels it wants and subscribes to all of them
//!   again whenever the subscriber connection comes back.

mod codec;
mod inbound;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, LuaInterface, PubsubInterface};
use fred::prelude::{Error as RedisError, Options, Server, Value};
use tokio::sync::{broadcast, mpsc};

use super::{Bus, BusError, Envelope, Topic};
use crate::cluster::Keys;
use crate::protocol::{ClientId, NodeId, RoomId};

pub use super::memory::INBOUND_CAPACITY;

/// How long one bus command may take before the caller gets `unavailable`.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Channels subscribed per command when re-subscribing after a reconnect.
const RESUBSCRIBE_BATCH: usize = 256;
/// The pause between failed re-subscription attempts.
const RESUBSCRIBE_RETRY: Duration = Duration::from_millis(250);

struct Shared {
    node: NodeId,
    sharded: bool,
    subscriber: SubscriberClient,
    /// Channels this node listens to (re-subscribed after reconnects; subtracted from counts).
    wanted: Mutex<HashSet<String>>,
    /// Serialises subscription commands with re-subscription.
    ops: tokio::sync::Mutex<()>,
}

pub struct RedisBus {
    keys: Keys,
    publisher: Client,
    shared: Arc<Shared>,
}

impl RedisBus {
    /// Wraps connected clients and starts the node's inbound task; returns the bus and the
    /// stream of envelopes other nodes sent to this one.
    pub fn start(
        node: NodeId,
        keys: Keys,
        sharded: bool,
        publisher: Client,
        subscriber: SubscriberClient,
    ) -> (Self, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        let shared = Arc::new(Shared {
            node,
            sharded,
            subscriber,
            wanted: Mutex::default(),
            ops: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(inbound::run(shared.node.clone(), messages, tx));
        tokio::spawn(resubscribe_on_reconnect(Arc::clone(&shared), reconnects));
        let bus = Self {
            keys,
            publisher,
            shared,
        };
        (bus, rx)
    }
}

impl RedisBus {
    /// A receiver count less this node, when it listens to `channel` itself.
    fn others(&self, channel: &str, receivers: i64) -> usize {
        let me = i64::from(self.shared.wanted().contains(channel));
        usize::try_from(receivers - me).unwrap_or(0)
    }
}

impl Shared {
    fn wanted(&self) -> MutexGuard<'_, HashSet<String>> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn subscribe(&self, channels: Vec<String>) -> Result<(), RedisError> {
        if self.sharded {
            // SSUBSCRIBE takes channels of one slot only.
            for channel in channels {
                self.subscriber.ssubscribe(channel).await?;
            }
            Ok(())
        } else {
            self.subscriber.subscribe(channels).await
        }
    }

    async fn unsubscribe(&self, channel: String) -> Result<(), RedisError> {
        if self.sharded {
            self.subscriber.sunsubscribe(channel).await
        } else {
            self.subscriber.unsubscribe(channel).await
        }
    }
}

fn fast() -> Options {
    Options {
        fail_fast: true,
        timeout: Some(COMMAND_TIMEOUT),
        ..Options::default()
    }
}

fn unavailable(e: RedisError) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// `KEYS[1]` the room's member set, `KEYS[2]` its channel (one hash tag, so one slot);
/// `ARGV` client id, payload, `PUBLISH` or `SPUBLISH`. Publishes only if the client is a member
/// (records are `conn|client|...`, see `presence/redis/record.rs`); returns the receiver
/// count, or -1 when it is not a member.
const PUBLISH_TO_MEMBER: &str = r#"
for _, r in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.match(r, '^%d+|([^|]+)|') == ARGV[1] then
    return redis.call(ARGV[3], KEYS[2], ARGV[2])
  end
end
return -1
"#;

/// The SHA-1 that EVALSHA names [`PUBLISH_TO_MEMBER`] by.
fn publish_to_member_sha() -> &'static str {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| {
        use sha1::{Digest, Sha1};
        Sha1::digest(PUBLISH_TO_MEMBER.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: &Topic, envelope: Envelope) -> Result<usize, BusError> {
        let channel = self.keys.channel(topic);
        let payload = codec::encode(&envelope);
        let publisher = self.publisher.with_options(&fast());
        let receivers: i64 = if self.shared.sharded {
            publisher.spublish(channel.as_str(), payload).await
        } else {
            publisher.publish(channel.as_str(), payload).await
        }
        .map_err(unavailable)?;
        Ok(self.others(&channel, receivers))
    }

    async fn publish_to_member(
        &self,
        room: &RoomId,
        client: &ClientId,
        envelope: Envelope,
    ) -> Result<Option<usize>, BusError> {
        let channel = self.keys.channel(&Topic::Room(room.clone()));
        let keys = vec![self.keys.room(room), channel.clone()];
        let command = if self.shared.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let args: Vec<Value> = vec![
            client.as_str().into(),
            Value::Bytes(codec::encode(&envelope)),
            command.into(),
        ];
        let publisher = self.publisher.with_options(&fast());
        let receivers: i64 = match publisher
            .evalsha(publish_to_member_sha(), keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                publisher.eval(PUBLISH_TO_MEMBER, keys, args).await
            }
            result => result,
        }
        .map_err(unavailable)?;
        Ok((receivers >= 0).then(|| self.others(&channel, receivers)))
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BusError> {
        let channel = self.keys.channel(topic);
        let _ops = self.shared.ops.lock().await;
        if !self.shared.subscriber.is_connected() {
            return Err(BusError::Unavailable(
                "the Redis subscriber connection is down".into(),
            ));
        }
        let subscribed = tokio::time::timeout(
            COMMAND_TIMEOUT,
            self.shared.subscribe(vec![channel.clone()]),
        );
        match subscribed.await {
            Ok(Ok(())) => {
                self.shared.wanted().insert(channel);
                Ok(())
            }
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(BusError::Unavailable("subscribe timed out".into())),
        }
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BusError> {
        let channel = self.keys.channel(topic);
        let _ops = self.shared.ops.lock().await;
        if !self.shared.wanted().remove(&channel) {
            return Ok(());
        }
        // Without a connection the subscription went with it, and a reconnect only subscribes
        // to what is still wanted.
        if !self.shared.subscriber.is_connected() {
            return Ok(());
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, self.shared.unsubscribe(channel)).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(BusError::Unavailable("unsubscribe timed out".into())),
        }
    }

    async fn check(&self) -> Result<(), BusError> {
        if !self.shared.subscriber.is_connected() {
            return Err(BusError::Unavailable(
                "the Redis subscriber connection is down".into(),
            ));
        }
        let _: Value = self
            .publisher
            .with_options(&fast())
            .ping(None)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// Subscribes to every wanted channel again each time the subscriber connection comes back.
async fn resubscribe_on_reconnect(
    shared: Arc<Shared>,
    mut reconnects: broadcast::Receiver<Server>,
) {
    loop {
        match reconnects.recv().await {
            Ok(server) => tracing::info!(%server, "Redis subscriber connected; re-subscribing"),
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => break,
        }
        while let Err(e) = resubscribe(&shared).await {
            if !shared.subscriber.is_connected() {
                break; // the next reconnect event tries again
            }
            tracing::warn!(error = %e, "re-subscribing failed; retrying");
            tokio::time::sleep(RESUBSCRIBE_RETRY).await;
        }
    }
}

async fn resubscribe(shared: &Shared) -> Result<(), RedisError> {
    let _ops = shared.ops.lock().await;
    let channels: Vec<String> = shared.wanted().iter().cloned().collect();
    for batch in channels.chunks(RESUBSCRIBE_BATCH) {
        shared.subscribe(batch.to_vec()).await?;
    }
    Ok(())
}
