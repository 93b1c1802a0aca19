//! The node's one publishing task. Everything the node publishes — awaited publishes and posted
//! signals alike — goes through one bounded queue, in order. The task takes whatever is queued
//! (a *round*), packs it into one batch per channel, publishes every batch of the round
//! concurrently, and waits for Redis to answer before taking the next round.
//!
//! Under light load a round is one envelope and goes out at once; under heavy load envelopes
//! queue while a round is in flight, so batches grow with the load and the number of Redis
//! commands does not (smart batching). A full queue refuses posts with
//! [`BusError::Overloaded`] instead of growing: overload shows as errors, not as latency.
//!
//! When a round fails, each sending connection gets back only the first of its envelopes that
//! the round carried (one `unavailable` for the sender, not one per frame, which would flood
//! its outbox); an addressed envelope nobody received always comes back, since each is its own
//! `peer_not_found`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, PubsubInterface};
use fred::prelude::Error as RedisError;
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};

use super::codec::BatchWriter;
use super::{Shared, fast};
use crate::bus::{BusError, Envelope, Inbound, Route, Topic, Undelivered};
use crate::metrics as m;
use crate::protocol::ConnId;
use crate::redis::Keys;

/// Envelopes a node may have queued for Redis before posts are refused as overloaded.
pub const QUEUE: usize = 16_384;
/// Posted envelopes one sender may have queued once the queue is half full: a sixteenth of it,
/// so that one connection flooding the cluster (or several) cannot fill the queue every other
/// connection's cross-node signals go through. Below half full a sender may burst past it.
pub const SHARE: u32 = (QUEUE / 16) as u32;
/// Free places in the queue below which shares are enforced.
pub const PRESSED: usize = QUEUE / 2;
/// Slots senders are counted in (a connection id, which is random, picks its slot; two
/// connections that share one share its place).
const SHARE_SLOTS: usize = 4096;

/// Each sender's posted envelopes in the queue, against [`SHARE`].
pub struct Shares {
    slots: Box<[AtomicU32]>,
}

impl Default for Shares {
    fn default() -> Self {
        Self {
            slots: (0..SHARE_SLOTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl Shares {
    fn slot(&self, conn: ConnId) -> &AtomicU32 {
        &self.slots[(conn.0 as usize) % SHARE_SLOTS]
    }

    /// Counts one envelope of `conn` into the queue; `false` when it holds its share already
    /// and the queue is `pressed` (half full).
    pub fn take(&self, conn: ConnId, pressed: bool) -> bool {
        let slot = self.slot(conn);
        if slot.fetch_add(1, Ordering::AcqRel) >= SHARE && pressed {
            slot.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// An envelope of `conn` left the queue.
    pub fn give_back(&self, conn: ConnId) {
        self.slot(conn).fetch_sub(1, Ordering::AcqRel);
    }
}

/// The sender whose share a posted envelope counts against.
pub fn poster(out: &Outgoing) -> Option<ConnId> {
    match out.reply {
        Some(_) => None,
        None => sender(&out.envelope.route),
    }
}
/// The most envelopes one round takes from the queue.
const ROUND_ENVELOPES: usize = 4096;
/// A batch past this size is closed and the channel's next envelopes start another.
const BATCH_BYTES: usize = 256 * 1024;

pub type Reply = oneshot::Sender<Result<usize, BusError>>;

/// One envelope on its way to Redis.
pub struct Outgoing {
    pub topic: Topic,
    pub envelope: Envelope,
    /// The publisher waiting for the receiver count, or `None` for a posted envelope, which
    /// comes back on the inbound stream if no other node gets it.
    pub reply: Option<Reply>,
    /// Other nodes a posted envelope is expected to reach (0: none expected); fewer, and it
    /// comes back as [`Undelivered::Short`].
    pub expect: usize,
}

/// What to tell about one envelope of a batch once Redis answered.
enum Waiter {
    Reply(Reply),
    Posted(Envelope, usize),
}

/// A batch being packed.
struct Packing {
    channel: String,
    writer: BatchWriter,
    waiters: Vec<Waiter>,
}

/// A packed batch.
struct Batch {
    channel: String,
    payload: Bytes,
    waiters: Vec<Waiter>,
}

/// What the task needs besides its queue.
pub struct Context {
    pub shared: Arc<Shared>,
    pub keys: Keys,
    pub client: Client,
    /// The node's own inbound stream, for returned posts.
    pub inbound: mpsc::Sender<Inbound>,
}

/// Publishes what arrives on `queue` until every sender is gone.
pub async fn run(ctx: Context, mut queue: mpsc::Receiver<Outgoing>) {
    let mut round = Vec::with_capacity(ROUND_ENVELOPES);
    while queue.recv_many(&mut round, ROUND_ENVELOPES).await > 0 {
        let batches = pack(&ctx, round.drain(..));
        let results = join_all(batches.iter().map(|b| publish(&ctx, b))).await;
        let mut told = HashSet::new();
        for (batch, result) in batches.into_iter().zip(results) {
            settle(&ctx, batch, result, &mut told);
        }
    }
    tracing::debug!("bus publisher ended");
}

/// Packs a round into batches: one per channel, in the order each channel first appears,
/// envelopes in queue order within each. A channel gets another batch past [`BATCH_BYTES`], or
/// when its open batch would let an envelope overtake one its sender put in a later batch (on
/// one connection, batches reach Redis in this order: so does each sender's traffic).
fn pack(ctx: &Context, round: impl Iterator<Item = Outgoing>) -> Vec<Batch> {
    let mut batches: Vec<Packing> = Vec::new();
    let mut open: HashMap<Topic, usize> = HashMap::new();
    let mut latest: HashMap<ConnId, usize> = HashMap::new();
    for out in round {
        let sender = sender(&out.envelope.route);
        // A posted envelope leaves its sender's share as it leaves the queue.
        if let (None, Some(conn)) = (&out.reply, sender) {
            ctx.shared.shares.give_back(conn);
        }
        let behind = sender.and_then(|c| latest.get(&c)).copied().unwrap_or(0);
        let at = match open.get(&out.topic) {
            Some(&at) if at >= behind && batches[at].writer.size() < BATCH_BYTES => at,
            _ => {
                batches.push(Packing {
                    channel: super::channel(&ctx.keys, &out.topic),
                    writer: BatchWriter::new(&ctx.shared.node),
                    waiters: Vec::new(),
                });
                open.insert(out.topic, batches.len() - 1);
                batches.len() - 1
            }
        };
        if let Some(conn) = sender {
            latest.insert(conn, at);
        }
        let batch = &mut batches[at];
        batch.writer.push(
            &out.envelope.route,
            out.envelope.stamp,
            &out.envelope.payload,
        );
        batch.waiters.push(match out.reply {
            Some(reply) => Waiter::Reply(reply),
            None => Waiter::Posted(out.envelope, out.expect),
        });
    }
    metrics::counter!(m::BUS_BATCHES).increment(batches.len() as u64);
    batches.into_iter().map(Packing::seal).collect()
}

impl Packing {
    fn seal(self) -> Batch {
        metrics::counter!(m::BUS_ENVELOPES).increment(self.writer.count() as u64);
        metrics::histogram!(m::BUS_BATCH_SIZE).record(self.writer.count() as f64);
        Batch {
            channel: self.channel,
            payload: self.writer.finish(),
            waiters: self.waiters,
        }
    }
}

async fn publish(ctx: &Context, batch: &Batch) -> Result<i64, RedisError> {
    if batch.channel.is_empty() {
        // `Topic::Returns`: nobody gets it, and it comes back in its sender's order.
        return Ok(0);
    }
    let client = ctx.client.with_options(&fast());
    let (channel, payload) = (batch.channel.as_str(), batch.payload.clone());
    let started = Instant::now();
    let result = if ctx.shared.sharded {
        client.spublish(channel, payload).await
    } else {
        client.publish(channel, payload).await
    };
    metrics::histogram!(m::BUS_PUBLISH).record(started.elapsed().as_secs_f64());
    result
}

/// Answers every waiter of a published batch; `told` holds the senders already given back an
/// envelope of a failed batch this round.
fn settle(
    ctx: &Context,
    batch: Batch,
    result: Result<i64, RedisError>,
    told: &mut HashSet<ConnId>,
) {
    let outcome = match result {
        Ok(receivers) => Ok(ctx.shared.others(&batch.channel, receivers)),
        Err(e) => {
            tracing::warn!(error = %e, "bus publish failed");
            Err(e.to_string())
        }
    };
    for waiter in batch.waiters {
        match (waiter, &outcome) {
            (Waiter::Reply(reply), Ok(n)) => drop(reply.send(Ok(*n))),
            (Waiter::Reply(reply), Err(e)) => {
                drop(reply.send(Err(BusError::Unavailable(e.clone()))))
            }
            (Waiter::Posted(envelope, _), Ok(0)) if envelope.route.is_addressed() => {
                give_back(ctx, envelope, Undelivered::NoReceiver)
            }
            (Waiter::Posted(envelope, expect), Ok(n)) if *n < expect => {
                give_back(ctx, envelope, Undelivered::Short)
            }
            (Waiter::Posted(..), Ok(_)) => {}
            (Waiter::Posted(envelope, _), Err(_)) => {
                if sender(&envelope.route).is_none_or(|conn| told.insert(conn)) {
                    give_back(ctx, envelope, Undelivered::Unavailable);
                }
            }
        }
    }
}

/// The local connection an envelope comes from.
fn sender(route: &Route) -> Option<ConnId> {
    match route {
        Route::Member { from, .. } => Some(*from),
        Route::Room { except, .. } | Route::User { except, .. } => Some(*except),
        Route::Joined { conn, .. } | Route::Left { conn, .. } => Some(*conn),
        Route::Bounce { .. }
        | Route::Kick { .. }
        | Route::Revoke
        | Route::Handoff
        | Route::Probe
        | Route::Conn { .. } => None,
    }
}

fn give_back(ctx: &Context, envelope: Envelope, why: Undelivered) {
    metrics::counter!(m::BUS_RETURNED, "reason" => why.label()).increment(1);
    if ctx
        .inbound
        .try_send(Inbound::Returned(envelope, why))
        .is_err()
    {
        metrics::counter!(m::BUS_DROPPED).increment(1);
    }
}
