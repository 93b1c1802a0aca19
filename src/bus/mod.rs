//! The cluster bus: how a node hands a frame to the nodes that hold its recipients.
//!
//! Guarantees every implementation keeps (checked by [`contract`]):
//! - **At most once.** An envelope reaches each subscribed node at most once; nothing is stored
//!   for nodes that were not subscribed when it was published.
//! - **Ordered per publisher and topic.** Envelopes one node publishes on one topic arrive at
//!   every subscriber in the order they were published.
//! - **No echo.** A node never receives its own envelopes.
//! - **Honest receiver counts.** [`Bus::publish`] returns how many *other* nodes were subscribed
//!   to the topic at that moment, so that "nobody is listening" is an answer, not a guess.
//!
//! Nodes subscribe to a topic while they hold a local connection interested in it (a member of
//! the room, a device of the user); see [`crate::hub`]. What arrives is read by one inbound task
//! per node.

pub mod memory;
pub mod redis;

#[cfg(test)]
mod contract;

use async_trait::async_trait;
use bytes::Bytes;

use crate::protocol::{ClientId, ConnId, NodeId, RoomId, UserId};

/// What a node listens to: a room's traffic, or a user's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Room(RoomId),
    User(UserId),
}

/// Which local connections of a receiving node get an envelope's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every local member of `room` except connection `except`.
    Room { room: RoomId, except: ConnId },
    /// The connection that holds `client`.
    Client { client: ClientId },
    /// The connection that holds `client`, if it is a local member of `room`.
    Member { room: RoomId, client: ClientId },
    /// Every local connection of `user` except `except`.
    User { user: UserId, except: ConnId },
    /// Close connection `conn` of `client` with 4001: a newer connection took its client id.
    Kick { client: ClientId, conn: ConnId },
}

/// One message between nodes: a frame and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub origin: NodeId,
    pub route: Route,
    /// The JSON text frame, ready to send (UTF-8; empty for [`Route::Kick`]).
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("this bus cannot check room membership")]
    Unsupported,
}

/// The transport between nodes. Memory for a single node and tests, Redis for a cluster.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes `envelope` on `topic`; returns the number of *other* nodes subscribed to it.
    async fn publish(&self, topic: &Topic, envelope: Envelope) -> Result<usize, BusError>;

    /// Publishes `envelope` on `room`'s topic if `client` is a member of `room`, checking and
    /// publishing in one atomic step: `Ok(None)` when it is not a member, else `Ok(Some(n))`
    /// with `n` as for [`Bus::publish`]. A bus that cannot see presence answers
    /// [`BusError::Unsupported`], and the caller asks presence first.
    async fn publish_to_member(
        &self,
        room: &RoomId,
        client: &ClientId,
        envelope: Envelope,
    ) -> Result<Option<usize>, BusError> {
        let _ = (room, client, envelope);
        Err(BusError::Unsupported)
    }

    /// Starts delivering `topic` to this node's inbound stream. Idempotent. When it returns,
    /// envelopes published afterwards are delivered.
    async fn subscribe(&self, topic: &Topic) -> Result<(), BusError>;

    /// Stops delivering `topic`. Idempotent.
    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BusError>;

    /// Checks the connection to the bus (for readiness).
    async fn check(&self) -> Result<(), BusError>;

    /// A short name for health output: `memory` or `redis`.
    fn kind(&self) -> &'static str;
}
