//! The cluster bus: how a node hands a frame to the nodes that hold its recipients.
//!
//! Guarantees every implementation keeps (checked by the `contract` test suite):
//! - **At most once.** An envelope reaches each subscribed node at most once; nothing is stored
//!   for nodes that were not subscribed when it was published.
//! - **Ordered per publisher and topic.** Envelopes one node hands to one topic, by
//!   [`Bus::publish`] and [`Bus::post`] alike, arrive at every subscriber in that order.
//! - **No echo.** A node never receives its own envelopes.
//! - **Honest receiver counts.** [`Bus::publish`] returns how many *other* nodes were subscribed
//!   to the topic at that moment, so that "nobody is listening" is an answer, not a guess.
//! - **Nothing posted vanishes unseen.** An envelope given to [`Bus::post`] that the transport
//!   failed to carry, or an [addressed](Route::is_addressed) one that no other node listened
//!   for, comes back on the poster's own inbound stream as [`Inbound::Returned`], so its sender
//!   can be told.
//!
//! Every node listens to its own [`Topic::Node`] and to [`Topic::Cluster`] from the start; it subscribes to room and user
//! topics while it holds a local connection interested in them (a member of the room, a device
//! of the user); see [`crate::hub`]. What arrives is read by one inbound task per node.

pub mod memory;
pub mod redis;

#[cfg(test)]
mod contract;

use async_trait::async_trait;
use bytes::Bytes;

use crate::protocol::{ClientId, ConnId, NodeId, RoomId, Stamp, UserId};

/// What a node listens to: a room's traffic, a user's, or what is addressed to the node itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Room(RoomId),
    User(UserId),
    Node(NodeId),
    /// What every node hears: cluster-wide notices such as revocations. Every node listens to
    /// it from the start, as to its own [`Topic::Node`].
    Cluster,
    /// Nobody: an addressed envelope posted here is not published but comes back to its node
    /// as undelivered ([`Undelivered::NoReceiver`]), behind whatever its sender posted before
    /// (how a node sends a signal the slow way without letting it overtake those ahead of it).
    Returns,
}

/// Which local connections of a receiving node get an envelope's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every local member of `room` except connection `except`.
    Room { room: RoomId, except: ConnId },
    /// `client` (connection `conn`, on node `node`) joined `room`: every other local member
    /// gets the payload (`user_joined`), and the receiving node learns where `client` is.
    Joined {
        room: RoomId,
        client: ClientId,
        conn: ConnId,
        node: NodeId,
    },
    /// Connection `conn` of `client` left `room`: every other local member gets the payload
    /// (`user_left`).
    Left {
        room: RoomId,
        client: ClientId,
        conn: ConnId,
    },
    /// The connection that holds `client`, if it is a local member of `room`; sent by
    /// connection `from` of the origin node, which hears back ([`Route::Bounce`]) when the
    /// client is not there.
    Member {
        room: RoomId,
        client: ClientId,
        from: ConnId,
    },
    /// A [`Route::Member`] envelope of connection `conn` found no `client` in `room` on the
    /// node that sent this back.
    Bounce {
        room: RoomId,
        client: ClientId,
        conn: ConnId,
    },
    /// Every local connection of `user` except `except`.
    User { user: UserId, except: ConnId },
    /// Close connection `conn` of `client` with 4001: a newer connection took its client id.
    Kick { client: ClientId, conn: ConnId },
    /// A revocation (its JSON in the payload): every node stops the tokens it names and closes
    /// the local connections that authenticated with them.
    Revoke,
    /// A step of a session's hand-off between nodes (its JSON in the payload: an ask on
    /// [`Topic::Cluster`], an answer or an end on the asker's [`Topic::Node`]); see
    /// [`crate::hub`] and the `resume` module.
    Handoff,
    /// A frame that reached a session's old connection, forwarded to its new connection `conn`
    /// on the receiving node during a hand-off.
    Conn { conn: ConnId },
    /// Nothing to deliver: a node asks whether another node still listens (the receiver count
    /// of the publish).
    Probe,
}

impl Route {
    /// One route of every kind, with ids that exercise the encodings (tests of the codec and
    /// of the bus contract).
    #[cfg(test)]
    pub fn samples(node: &NodeId) -> Vec<Route> {
        let client = ClientId::parse("c-1").unwrap();
        let room = RoomId::parse("r.1:x-y_z").unwrap();
        vec![
            Route::Room {
                room: room.clone(),
                except: ConnId(u64::MAX),
            },
            Route::Joined {
                room: room.clone(),
                client: client.clone(),
                conn: ConnId(1),
                node: node.clone(),
            },
            Route::Left {
                room: room.clone(),
                client: client.clone(),
                conn: ConnId(2),
            },
            Route::Member {
                room: RoomId::parse("r.2").unwrap(),
                client: client.clone(),
                from: ConnId(3),
            },
            Route::Bounce {
                room,
                client: client.clone(),
                conn: ConnId(4),
            },
            Route::User {
                user: UserId::parse("üser:x@y").unwrap(),
                except: ConnId(0),
            },
            Route::Kick {
                client,
                conn: ConnId(42),
            },
            Route::Revoke,
            Route::Handoff,
            Route::Conn { conn: ConnId(7) },
            Route::Probe,
        ]
    }

    /// Whether the route names one recipient, so that a posted envelope nobody received
    /// comes back ([`Inbound::Returned`] with [`Undelivered::NoReceiver`]).
    pub fn is_addressed(&self) -> bool {
        matches!(self, Route::Member { .. })
    }
}

/// One message between nodes: a frame and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub origin: NodeId,
    pub route: Route,
    /// The JSON text frame, ready to send (UTF-8; empty for [`Route::Kick`] and
    /// [`Route::Bounce`]; the revocation's JSON for [`Route::Revoke`]).
    pub payload: Bytes,
    /// A relayed signal's receipt time and kind on its origin ([`Stamp::NONE`] for anything
    /// else), for the relay latency and delivery counts of the node that delivers it.
    pub stamp: Stamp,
}

/// Why a posted envelope came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// No other node listened to the topic (addressed routes only).
    NoReceiver,
    /// The transport failed (Redis down, or a command timed out).
    Unavailable,
    /// Fewer other nodes listened than the sender expected ([`Bus::post_expecting`]: a room
    /// broadcast, when a node holding members of the room may have died).
    Short,
}

impl Undelivered {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Undelivered::NoReceiver => "no_receiver",
            Undelivered::Unavailable => "unavailable",
            Undelivered::Short => "short",
        }
    }
}

/// What a node's inbound stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// An envelope another node published.
    Envelope(Envelope),
    /// An envelope this node posted that reached no other node.
    Returned(Envelope, Undelivered),
    /// The node's subscriptions are back after its bus connection dropped: the other nodes
    /// took it for dead meanwhile (signals for its sessions may be held for it).
    Resubscribed,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("bus overloaded: {0} envelopes queued")]
    Overloaded(usize),
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

/// The transport between nodes. Memory for a single node and tests, Redis for a cluster.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes `envelope` on `topic`; returns the number of *other* nodes subscribed to it.
    async fn publish(&self, topic: &Topic, envelope: Envelope) -> Result<usize, BusError>;

    /// Queues `envelope` for `topic` without waiting: the hot path of relayed signals. Fails at
    /// once only when the bus knows it cannot take it (its queue is full, its transport is
    /// down); anything that fails later comes back as [`Inbound::Returned`].
    fn post(&self, topic: Topic, envelope: Envelope) -> Result<(), BusError>;

    /// [`Bus::post`], expecting `nodes` other nodes to listen: when fewer do, the envelope
    /// comes back as [`Undelivered::Short`]. A bus that cannot count listeners posts it.
    fn post_expecting(
        &self,
        topic: Topic,
        envelope: Envelope,
        nodes: usize,
    ) -> Result<(), BusError> {
        let _ = nodes;
        self.post(topic, envelope)
    }

    /// Starts delivering `topic` to this node's inbound stream. Idempotent. When it returns,
    /// envelopes published afterwards are delivered.
    async fn subscribe(&self, topic: &Topic) -> Result<(), BusError>;

    /// Stops delivering `topic`. Idempotent; a node never stops listening to its own
    /// [`Topic::Node`] or to [`Topic::Cluster`].
    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BusError>;

    /// Checks the connection to the bus (for readiness).
    async fn check(&self) -> Result<(), BusError>;

    /// A short name for health output: `memory` or `redis`.
    fn kind(&self) -> &'static str;
}
