//! Presence in Redis (cluster mode). Keys (layout in [`crate::redis`] and `docs/cluster.md`):
//! a ZSET per room of member records in join order, a HASH per client id (the claim), a HASH per
//! user (its connections), a HASH per connection and a SET per node incarnation indexing what
//! that node holds, and the lease ZSET. Joins and claims are Lua scripts on one key, so caps and
//! takeovers hold cluster-wide; removals are conditional on the connection (and, for reapers,
//! on the owning incarnation).
//!
//! Each node mirrors what it holds ([`mirror`]). A write that failed marks the node dirty; the
//! next [`Presence::reap`] then reconciles Redis with the mirror, as it does when the lease had
//! expired before anyone took it over (the node stalled). A node whose lease vanished (Redis
//! lost its data) takes a new incarnation and writes its mirror back under it. A node that
//! another node reaped takes a new incarnation holding nothing and reports itself
//! [evicted](Reaped::evicted): its rooms were told its members left, so they reconnect.

mod addresses;
mod adopt;
mod lease;
mod mirror;
mod queries;
mod record;
mod removal;
mod scripts;
mod store;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::Client;
use fred::prelude::{Error as RedisError, Options};

use super::{
    AddressHold, Claim, Hold, Joined, Member, Presence, PresenceError, Reaped, Resumable,
    RoomSummary,
};
use crate::protocol::{ClientId, ConnId, NodeId, RoomId, UserId};
use crate::redis::Keys;
use addresses::Addresses;
use mirror::Mirror;
use store::{Claimed, Store};

/// How long one presence command may take before the caller gets `unavailable`.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

fn fast() -> Options {
    Options {
        fail_fast: true,
        timeout: Some(COMMAND_TIMEOUT),
        ..Options::default()
    }
}

pub struct RedisPresence {
    store: Store,
    mirror: Mirror,
    /// The connections per address this node counts.
    addresses: Addresses,
    node: NodeId,
    lease_ttl: Duration,
    /// The current incarnation, `node/epoch`: the owner written into every entry.
    owner: Mutex<String>,
    /// A write failed: Redis may disagree with the mirror until the next reconciliation.
    dirty: AtomicBool,
    /// Shared by writes, exclusive for reconciliation, so it sees no write half-done.
    gate: tokio::sync::RwLock<()>,
    /// Where the next sweep of the room index starts.
    sweep_from: AtomicUsize,
    /// Departures that failed to reach Redis, and so were never announced: the next
    /// reconciliation announces them.
    departed: Mutex<Vec<(RoomId, Member)>>,
}

impl RedisPresence {
    /// Loads the scripts and takes a lease for a fresh incarnation of `node`.
    pub async fn start(
        client: Client,
        keys: Keys,
        node: NodeId,
        lease_ttl: Duration,
    ) -> Result<Self, RedisError> {
        let scripts = scripts::Scripts::load(&client).await?;
        let presence = Self {
            store: Store {
                client,
                keys,
                scripts,
                room_grace_s: queries::ROOM_INDEX_GRACE_S,
            },
            sweep_from: AtomicUsize::new(0),
            mirror: Mirror::default(),
            addresses: Addresses::default(),
            owner: Mutex::new(lease::incarnation(&node)),
            node,
            lease_ttl,
            dirty: AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
            departed: Mutex::default(),
        };
        presence.renew(true).await?;
        Ok(presence)
    }

    fn owner_lock(&self) -> MutexGuard<'_, String> {
        self.owner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn owner(&self) -> String {
        self.owner_lock().clone()
    }

    /// A failed write: reconcile at the next reap.
    fn failed(&self, e: RedisError) -> PresenceError {
        self.dirty.store(true, Ordering::Release);
        unavailable(e)
    }

    /// Remembers departures whose removal failed, to announce them after reconciliation.
    fn departed(&self, gone: impl IntoIterator<Item = (RoomId, Member)>) {
        self.departed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(gone);
    }

    fn take_departed(&self) -> Vec<(RoomId, Member)> {
        std::mem::take(&mut *self.departed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl RedisPresence {
    async fn claim_for(
        &self,
        me: &Member,
        session: Option<&Resumable>,
    ) -> Result<Claim, PresenceError> {
        let _gate = self.gate.read().await;
        let claimed = self.store.claim(me, &self.owner(), false, session).await;
        match claimed.map_err(|e| self.failed(e))? {
            Claimed::Taken | Claimed::Lost => Ok(Claim::Taken),
            Claimed::Fresh => {
                self.mirror.claimed(me, session);
                Ok(Claim::Fresh)
            }
            Claimed::Replaced(old) => {
                self.mirror.claimed(me, session);
                Ok(Claim::Replaced(old))
            }
        }
    }
}

fn unavailable(e: RedisError) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

#[async_trait]
impl Presence for RedisPresence {
    async fn claim(&self, me: &Member) -> Result<Claim, PresenceError> {
        self.claim_for(me, None).await
    }

    async fn claim_resumable(
        &self,
        me: &Member,
        session: &Resumable,
    ) -> Result<Claim, PresenceError> {
        self.claim_for(me, Some(session)).await
    }

    async fn holds_claim(&self, me: &Member) -> bool {
        self.store
            .claim_holder(me)
            .await
            .is_ok_and(|k| k == Some(me.conn))
    }

    async fn conn_node(&self, conn: ConnId) -> Result<Option<NodeId>, PresenceError> {
        let owner = self.store.conn_owner(conn).await.map_err(unavailable)?;
        Ok(owner
            .as_deref()
            .and_then(|o| o.split('/').next())
            .and_then(|node| NodeId::parse(node).ok()))
    }

    async fn hold(&self, member: &Member, frame: &str) -> Result<Hold, PresenceError> {
        let ttl = self.adoption_wait() * 4;
        if self
            .store
            .hold(member, frame, ttl)
            .await
            .map_err(unavailable)?
        {
            return Ok(Hold::Held);
        }
        // Taken over since the caller looked (its seats are rewritten a moment later).
        Ok(match self.conn_node(member.conn).await? {
            Some(node) if node != member.node => Hold::Moved(node),
            _ => Hold::Refused,
        })
    }

    async fn hold_user(&self, user: &UserId, frame: &str) -> Result<usize, PresenceError> {
        let held = self
            .store
            .hold_user(user, frame, self.adoption_wait() * 4)
            .await;
        held.map_err(unavailable)
    }

    async fn take_held(&self, conn: ConnId) -> Result<Vec<String>, PresenceError> {
        self.store.take_held(conn).await.map_err(unavailable)
    }

    async fn session_known(&self, id: &str) -> bool {
        self.store.session_named(id).await.unwrap_or(false)
    }

    fn adoption_wait(&self) -> Duration {
        // A dead node's lease runs out within a period, and a survivor's next reap (every
        // half period) takes it over.
        self.lease_ttl * 2
    }

    async fn join(&self, room: &RoomId, me: &Member, cap: usize) -> Result<Joined, PresenceError> {
        let _gate = self.gate.read().await;
        let joined = self.store.join(room, me, &self.owner(), cap).await;
        let (joined, seq) = joined.map_err(|e| self.failed(e))?;
        if !matches!(joined, Joined::Full) {
            self.mirror.joined(me.conn, room, seq);
        }
        Ok(joined)
    }

    async fn leave(&self, room: &RoomId, me: &Member) -> Result<bool, PresenceError> {
        let _gate = self.gate.read().await;
        self.mirror.left(me.conn, room);
        let left = self.store.leave(room, me.conn).await;
        if left.is_err() {
            self.departed([(room.clone(), me.clone())]);
        }
        left.map_err(|e| self.failed(e))
    }

    async fn evict(&self, member: &Member) -> Result<Vec<RoomId>, PresenceError> {
        let _gate = self.gate.read().await;
        let held = self.mirror.evicted(member.conn);
        // A connection of this node that the mirror does not hold may belong to an incarnation
        // that was reaped: what a survivor took over of it (a session) is the survivor's now.
        if held.is_none() && member.node == self.node {
            match self.store.conn_owner(member.conn).await {
                Ok(Some(owner)) if !owner.starts_with(&format!("{}/", self.node)) => {
                    return Ok(Vec::new());
                }
                Ok(_) => {}
                Err(e) => return Err(self.failed(e)),
            }
        }
        let gone = self
            .store
            .remove_conn(member.conn, None, Some(member))
            .await;
        if let (Err(_), Some(held)) = (&gone, held) {
            self.departed(
                held.rooms
                    .into_iter()
                    .map(|(room, _)| (room, held.member.clone())),
            );
        }
        let gone = gone.map_err(|e| self.failed(e))?;
        Ok(gone.into_iter().map(|(room, _)| room).collect())
    }

    async fn member(
        &self,
        room: &RoomId,
        client: &ClientId,
    ) -> Result<Option<Member>, PresenceError> {
        let members = self.store.members(room).await.map_err(unavailable)?;
        Ok(members.into_iter().find(|m| &m.client_id == client))
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<Member>, PresenceError> {
        self.store.members(room).await.map_err(unavailable)
    }

    async fn rooms(&self) -> Result<Vec<RoomSummary>, PresenceError> {
        self.store.rooms().await.map_err(unavailable)
    }

    async fn devices(&self, user: &UserId) -> Result<usize, PresenceError> {
        self.store.devices(user).await.map_err(unavailable)
    }

    async fn hold_address(&self, address: &str, max: usize) -> Option<AddressHold> {
        self.hold(address, max).await
    }

    async fn release_address(&self, hold: AddressHold) {
        self.release(hold).await;
    }

    async fn address_connections(&self, address: &str) -> Result<usize, PresenceError> {
        let held = self.store.address_connections(address).await;
        held.map_err(unavailable)
    }

    async fn check(&self) -> Result<(), PresenceError> {
        self.store.ping().await.map_err(unavailable)
    }

    async fn reap(&self) -> Result<Reaped, PresenceError> {
        self.renew_and_reap().await
    }
}

#[cfg(test)]
mod tests;
