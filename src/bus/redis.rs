//! The Redis bus. One channel per topic (`{prefix:room:R}:bus`, `{prefix:user:U}:bus`,
//! `{prefix:node:N}:bus`): classic PUBLISH/SUBSCRIBE against a standalone server, sharded
//! SPUBLISH/SSUBSCRIBE against Redis Cluster so that traffic spreads over the shards.
//!
//! - **One publishing task.** Every publish of a node goes through one queue and one fred
//!   client (one connection per shard), so one sender's envelopes on one channel reach Redis in
//!   order; what queues up while Redis answers goes out as one batch per channel
//!   ([`publisher`]).
//! - **One subscriber connection and one inbound task.** What arrives is decoded and pushed
//!   into a bounded queue; when it is full the envelope is dropped and counted
//!   ([`crate::metrics::BUS_DROPPED`]).
//! - **Confirmed subscriptions.** `subscribe` and `unsubscribe` return once Redis has processed
//!   them, so a join is announced only after its node hears the room ([`Shared::barrier`]).
//! - **Receiver counts.** PUBLISH/SPUBLISH count subscribed connections, one per node; this node
//!   is subtracted when it listens to the channel itself.
//! - **Reconnects.** The bus keeps the set of channels it wants (its node channel among them)
//!   and subscribes to all of them again whenever the subscriber connection comes back.

pub mod codec;
mod inbound;
mod publisher;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Error as RedisError, Options, Server, Value};
use fred::types::ClusterHash;
use fred::util::redis_keyslot;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Bus, BusError, Envelope, Inbound, Topic};
use crate::protocol::NodeId;
use crate::redis::Keys;
use crate::tasks::Tasks;
use publisher::Outgoing;

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
    /// Each sender's share of the publish queue.
    shares: publisher::Shares,
}

pub struct RedisBus {
    keys: Keys,
    publisher: Client,
    queue: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

impl RedisBus {
    /// Wraps connected clients, starts the node's inbound, publishing and re-subscribing tasks
    /// (as essential `tasks`) and subscribes to the node's own channel; returns the bus and the
    /// node's inbound stream.
    pub async fn start(
        node: NodeId,
        keys: Keys,
        sharded: bool,
        publisher: Client,
        subscriber: SubscriberClient,
        tasks: &mut Tasks,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), BusError> {
        let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        let shared = Arc::new(Shared {
            node: node.clone(),
            sharded,
            subscriber,
            wanted: Mutex::default(),
            ops: tokio::sync::Mutex::new(()),
            shares: publisher::Shares::default(),
        });
        tasks.spawn(
            "bus-inbound",
            inbound::run(node.clone(), messages, tx.clone()),
        );
        tasks.spawn(
            "bus-resubscriber",
            resubscribe_on_reconnect(Arc::clone(&shared), reconnects, tx.clone()),
        );
        let (queue, queued) = mpsc::channel(publisher::QUEUE);
        let context = publisher::Context {
            shared: Arc::clone(&shared),
            keys: keys.clone(),
            client: publisher.clone(),
            inbound: tx,
        };
        tasks.spawn("bus-publisher", publisher::run(context, queued));
        let bus = Self {
            keys,
            publisher,
            queue,
            shared,
        };
        bus.subscribe(&Topic::Node(node)).await?;
        bus.subscribe(&Topic::Cluster).await?;
        Ok((bus, rx))
    }
}

/// The Redis channel of a topic (names in [`Keys`]).
fn channel(keys: &Keys, topic: &Topic) -> String {
    match topic {
        Topic::Room(room) => keys.room_channel(room),
        Topic::User(user) => keys.user_channel(user),
        Topic::Node(node) => keys.node_channel(node),
        Topic::Cluster => keys.cluster_channel(),
        // Never published (see `publisher`).
        Topic::Returns => String::new(),
    }
}

impl Shared {
    fn wanted(&self) -> MutexGuard<'_, HashSet<String>> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver count less this node, when it listens to `channel` itself.
    fn others(&self, channel: &str, receivers: i64) -> usize {
        let me = i64::from(self.wanted().contains(channel));
        usize::try_from(receivers - me).unwrap_or(0)
    }

    async fn subscribe(&self, channels: Vec<String>) -> Result<(), RedisError> {
        if self.sharded {
            // SSUBSCRIBE takes channels of one slot only.
            for channel in channels {
                self.subscriber.ssubscribe(channel).await?;
            }
            Ok(())
        } else {
            self.subscriber.subscribe(channels).await?;
            self.barrier(None).await
        }
    }

    async fn unsubscribe(&self, channel: String) -> Result<(), RedisError> {
        let slot = redis_keyslot(channel.as_bytes());
        if self.sharded {
            self.subscriber.sunsubscribe(channel).await?;
            self.barrier(Some(slot)).await
        } else {
            self.subscriber.unsubscribe(channel).await?;
            self.barrier(None).await
        }
    }

    /// Waits until Redis has processed what this node sent on its subscriber connection (to
    /// the shard of `slot`, on Redis Cluster).
    ///
    /// fred answers SUBSCRIBE, UNSUBSCRIBE and SUNSUBSCRIBE as soon as they are queued, because
    /// their confirmations arrive out of band (only SSUBSCRIBE waits for its own). Redis answers
    /// one connection's commands in order, so the reply to a PING sent after them means the
    /// change is in place: a join announces itself only once its node hears the room.
    async fn barrier(&self, slot: Option<u16>) -> Result<(), RedisError> {
        let options = Options {
            cluster_hash: slot.map(ClusterHash::Custom),
            ..Options::default()
        };
        let _: Value = self.subscriber.with_options(&options).ping(None).await?;
        Ok(())
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

fn stopped() -> BusError {
    BusError::Unavailable("the bus publisher stopped".into())
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: &Topic, envelope: Envelope) -> Result<usize, BusError> {
        let (reply, answer) = oneshot::channel();
        let outgoing = Outgoing {
            topic: topic.clone(),
            envelope,
            reply: Some(reply),
            expect: 0,
        };
        // Queueing waits for room (bounded), then Redis answers within the command timeout.
        let published = async {
            self.queue.send(outgoing).await.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        match tokio::time::timeout(2 * COMMAND_TIMEOUT, published).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Unavailable("publish timed out".into())),
        }
    }

    fn post(&self, topic: Topic, envelope: Envelope) -> Result<(), BusError> {
        self.post_expecting(topic, envelope, 0)
    }

    fn post_expecting(
        &self,
        topic: Topic,
        envelope: Envelope,
        nodes: usize,
    ) -> Result<(), BusError> {
        if !self.publisher.is_connected() {
            return Err(BusError::Unavailable(
                "the Redis publisher connection is down".into(),
            ));
        }
        let outgoing = Outgoing {
            topic,
            envelope,
            reply: None,
            expect: nodes,
        };
        let poster = publisher::poster(&outgoing);
        if let Some(conn) = poster
            && !self
                .shared
                .shares
                .take(conn, self.queue.capacity() < publisher::PRESSED)
        {
            return Err(BusError::Overloaded(publisher::SHARE as usize));
        }
        self.queue.try_send(outgoing).map_err(|e| {
            if let Some(conn) = poster {
                self.shared.shares.give_back(conn);
            }
            match e {
                mpsc::error::TrySendError::Full(_) => BusError::Overloaded(publisher::QUEUE),
                mpsc::error::TrySendError::Closed(_) => stopped(),
            }
        })
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BusError> {
        let channel = channel(&self.keys, topic);
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
        if *topic == Topic::Node(self.shared.node.clone()) || *topic == Topic::Cluster {
            return Ok(());
        }
        let channel = channel(&self.keys, topic);
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
    inbound: mpsc::Sender<Inbound>,
) {
    loop {
        match reconnects.recv().await {
            Ok(server) => tracing::info!(%server, "Redis subscriber connected; re-subscribing"),
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => break,
        }
        loop {
            match resubscribe(&shared).await {
                Ok(()) => {
                    let _ = inbound.send(Inbound::Resubscribed).await;
                    break;
                }
                Err(_) if !shared.subscriber.is_connected() => break, // the next reconnect tries again
                Err(e) => {
                    tracing::warn!(error = %e, "re-subscribing failed; retrying");
                    tokio::time::sleep(RESUBSCRIBE_RETRY).await;
                }
            }
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
