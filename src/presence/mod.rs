//! Presence: which connection holds which client id, and who is in which room, cluster-wide.
//!
//! Every entry is owned by one connection ([`ConnId`]) on one node ([`NodeId`]). Removals are
//! conditional on that owner, so a late cleanup of a replaced connection never removes its
//! successor. Room caps are enforced atomically: two joins racing for the last seat cannot
//! both succeed.

pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::protocol::{ClientId, ConnId, Member, NodeId, RoomId, UserId};

/// The outcome of claiming a client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody held it.
    Fresh,
    /// The same user held it with another connection, which must now be evicted and closed.
    Replaced(Member),
    /// Another user's connection holds it; nothing changed.
    Taken,
}

/// The outcome of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// Joined; these are the other members.
    Joined(Vec<Member>),
    /// Already a member; these are the other members.
    Already(Vec<Member>),
    /// The room is at its cap; nothing changed.
    Full,
}

/// A session its node keeps resumable, written with its connection's claim: what a survivor
/// needs to take the session over when that node dies ([`Reaped::adopted`]). The record is
/// opaque here (the resume layer writes and reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumable {
    pub id: String,
    pub record: String,
}

/// A resumable session of a dead node that this node took over: presence holds it here now
/// (its client id, its seats in `rooms`, its device entry), and nobody was told anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub member: Member,
    pub rooms: Vec<RoomId>,
    pub session: Resumable,
    /// Frames sent to it after its node died, held until now, in the order they came.
    pub held: Vec<String>,
    /// Some could not be held (over the caps): it cannot be resumed whole.
    pub overflowed: bool,
}

/// What one lease period of [`Presence::reap`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Members removed from presence: of dead nodes, and departures of this node that could
    /// not be recorded before. Their rooms must be told.
    pub gone: Vec<(RoomId, Member)>,
    /// Local connections whose client id another connection took while Redis was out of
    /// reach: they are out of presence now and must be closed as replaced.
    pub replaced: Vec<ConnId>,
    /// Another node reaped this one while it was cut off from Redis, and told its rooms that
    /// its members left: its connections must reconnect to be seen again.
    pub evicted: bool,
    /// Resumable sessions of dead nodes taken over by this node: they must be held here until
    /// their clients resume them or their window ends.
    pub adopted: Vec<Adopted>,
}

/// What became of a signal [held](Presence::hold) for a session whose node no longer listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Held,
    /// Not held: the session cannot resume, or too much is held for it already.
    Refused,
    /// Not held: a survivor took the session over since; it is on this node now.
    Moved(NodeId),
}

/// A room and its member count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomSummary {
    pub room: RoomId,
    pub members: usize,
}

/// A connection counted against its address by [`Presence::hold_address`]; give it back with
/// [`Presence::release_address`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressHold {
    pub address: String,
    /// The node's presence generation that counted it. A node that was reaped lost its counts
    /// (the reaper released them): holds from before are released locally only.
    pub generation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
}

/// The presence store. Memory for a single node and tests, Redis for a cluster.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Claims `me.client_id` for `me.conn`, replacing the same user's older connection.
    async fn claim(&self, me: &Member) -> Result<Claim, PresenceError>;

    /// [`Presence::claim`] for a resumable session: stores that outlive a node keep `session`
    /// with the claim, so that a survivor can take the session over if this node dies.
    async fn claim_resumable(
        &self,
        me: &Member,
        session: &Resumable,
    ) -> Result<Claim, PresenceError> {
        let _ = session;
        self.claim(me).await
    }

    /// Whether `me.conn` still holds `me.client_id` (a session taken over from a dead node, not
    /// replaced since).
    async fn holds_claim(&self, me: &Member) -> bool {
        let _ = me;
        true
    }

    /// Whether resumable session `id` is held by a connection the cluster still knows: live,
    /// parked, or on a dead node not reaped yet (which a survivor takes over within
    /// [`Presence::adoption_wait`]).
    async fn session_known(&self, id: &str) -> bool {
        let _ = id;
        false
    }

    /// Holds `frame` for `member`'s resumable session while its node (which no longer listens)
    /// still owns it, until a survivor takes the session over.
    /// The node whose incarnation owns connection `conn`'s entries (a takeover changes it a
    /// moment before the connection's seats), if any.
    async fn conn_node(&self, conn: ConnId) -> Result<Option<NodeId>, PresenceError> {
        let _ = conn;
        Ok(None)
    }

    async fn hold(&self, member: &Member, frame: &str) -> Result<Hold, PresenceError> {
        let _ = (member, frame);
        Ok(Hold::Refused)
    }

    /// [`Presence::hold`] for every connection of `user` (a user-addressed signal when no node
    /// that listens holds one); returns for how many it was held.
    async fn hold_user(&self, user: &UserId, frame: &str) -> Result<usize, PresenceError> {
        let _ = (user, frame);
        Ok(0)
    }

    /// Takes what was [held](Presence::hold) for local connection `conn` (its node was taken
    /// for dead while it stayed up).
    async fn take_held(&self, conn: ConnId) -> Result<Vec<String>, PresenceError> {
        let _ = conn;
        Ok(Vec::new())
    }

    /// Whether resumable sessions outlive their node here (a survivor takes them over).
    fn outlives_nodes(&self) -> bool {
        !self.adoption_wait().is_zero()
    }

    /// How long after its node dies a resumable session may wait to be taken over.
    fn adoption_wait(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Adds `me` to `room` unless it holds `cap` members already.
    async fn join(&self, room: &RoomId, me: &Member, cap: usize) -> Result<Joined, PresenceError>;

    /// Removes `me` from `room`; `false` when it was not (or no longer) a member.
    async fn leave(&self, room: &RoomId, me: &Member) -> Result<bool, PresenceError>;

    /// Removes every membership of `member.conn` and its client-id claim; returns the rooms it
    /// was removed from (empty when another cleanup got there first).
    async fn evict(&self, member: &Member) -> Result<Vec<RoomId>, PresenceError>;

    /// The member holding `client` in `room`, if any.
    async fn member(
        &self,
        room: &RoomId,
        client: &ClientId,
    ) -> Result<Option<Member>, PresenceError>;

    /// Every member of `room`, in join order.
    async fn members(&self, room: &RoomId) -> Result<Vec<Member>, PresenceError>;

    /// Every non-empty room, in name order.
    async fn rooms(&self) -> Result<Vec<RoomSummary>, PresenceError>;

    /// How many connections `user` has.
    async fn devices(&self, user: &UserId) -> Result<usize, PresenceError>;

    /// Counts a connection from `address` (a [`budget_key`](crate::client_ip::budget_key))
    /// unless the cluster holds `max` from it already (`None`). The count is this node's until
    /// released, or until a reaper takes over its lease (a crashed node frees its addresses).
    /// A store out of reach admits (limits fail open) and counts the connection when it is
    /// back.
    async fn hold_address(&self, address: &str, max: usize) -> Option<AddressHold>;

    /// Gives back a connection [held](Presence::hold_address) by this node.
    async fn release_address(&self, hold: AddressHold);

    /// How many connections `address` holds across the cluster (live nodes and dead ones not
    /// reaped yet).
    async fn address_connections(&self, address: &str) -> Result<usize, PresenceError>;

    /// Checks the store (for readiness).
    async fn check(&self) -> Result<(), PresenceError>;

    /// Renews this node's lease and removes the members of nodes whose lease expired; returns
    /// what was removed, so that their rooms can be told, and whether this node itself had
    /// been reaped. Stores without leases (a single process) have nothing to reap.
    async fn reap(&self) -> Result<Reaped, PresenceError> {
        Ok(Reaped::default())
    }
}
