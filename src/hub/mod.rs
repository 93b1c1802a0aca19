//! The hub: a node's delivery and membership logic over the [`Registry`] (local connections),
//! the [`Presence`] store, the [`Bus`] and the node's [rosters](roster). Frames for local
//! recipients are delivered directly; the bus carries them to other nodes, where
//! [`Hub::route`] hands them to local connections. The same code runs with the in-process bus
//! on a single node and with Redis in a cluster.
//!
//! Membership changes (here) are awaited: a joiner's `user_joined` is on the bus before the
//! joiner gets `users_in_room`. Signals ([`relay`]) are posted: the sending connection never
//! waits for Redis, and what cannot be delivered comes back to it as an error frame.

mod devices;
mod moves;
mod relay;
mod returns;
mod roster;
mod strays;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::auth::{Revocation, Revoked};
use crate::bus::{Bus, BusError, Envelope, Inbound, Route, Topic};
use crate::metrics as m;
use crate::presence::{Adopted, Claim, Joined, Presence, PresenceError, Resumable};
use crate::protocol::{
    CloseCode, ErrorCode, ErrorFrame, Frame, NodeId, PeerView, RoomId, ServerMessage,
};
use crate::protocol::{Member, Stamp, UserId};
use crate::registry::{ConnHandle, Registry};

pub use relay::Relayed;
pub use roster::{Rosters, Seat};
pub use subscriptions::Subscriptions;

/// Inbound items the routing task takes per wake-up.
const INBOUND_BATCH: usize = 256;

pub struct Hub {
    pub node: NodeId,
    pub registry: Registry,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn Presence>,
    pub rosters: Rosters,
    /// The revocations this node knows; the token verifier checks against the same set.
    pub revoked: Arc<Revoked>,
    subs: Arc<Subscriptions>,
    /// Where hand-off envelopes go ([`Route::Handoff`], [`Route::Conn`]), in the order they
    /// arrived: to the resume layer's task, once it is set up.
    handoffs: std::sync::OnceLock<mpsc::UnboundedSender<Envelope>>,
    /// Where the resumable sessions this node takes over from dead nodes go: to the resume
    /// layer, once it is set up (until then they leave as the dead node's other members do).
    adoptions: std::sync::OnceLock<mpsc::UnboundedSender<Adopted>>,
    /// Targeted signals whose node no longer listens, for [`Hub::run_returns`], in order.
    returns: mpsc::UnboundedSender<returns::Return>,
    returns_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<returns::Return>>>,
    /// Signals waiting for a session this node is taking over ([`strays`]).
    strays: strays::Strays,
    /// Targeted signals on their way through the returns, per peer.
    diverted: returns::Diverted,
}

fn unavailable(e: impl std::fmt::Display) -> ErrorFrame {
    tracing::warn!(error = %e, "cluster state unavailable");
    try_again()
}

/// The `unavailable` error frame.
fn try_again() -> ErrorFrame {
    ErrorFrame::new(
        ErrorCode::Unavailable,
        "cluster state is unavailable; try again",
    )
}

impl From<PresenceError> for ErrorFrame {
    fn from(e: PresenceError) -> Self {
        unavailable(e)
    }
}

impl From<BusError> for ErrorFrame {
    fn from(e: BusError) -> Self {
        match e {
            // Counted, not logged: under overload this happens per message.
            BusError::Overloaded(_) => ErrorFrame::new(
                ErrorCode::Unavailable,
                "the cluster is overloaded; try again",
            ),
            e => unavailable(e),
        }
    }
}

impl Hub {
    pub fn new(
        node: NodeId,
        bus: Arc<dyn Bus>,
        presence: Arc<dyn Presence>,
        linger: Duration,
    ) -> Self {
        let (returns, returns_rx) = mpsc::unbounded_channel();
        Self {
            returns,
            returns_rx: std::sync::Mutex::new(Some(returns_rx)),
            strays: strays::Strays::default(),
            diverted: returns::Diverted::default(),
            subs: Arc::new(Subscriptions::new(Arc::clone(&bus), linger)),
            rosters: Rosters::new(node.clone()),
            node,
            registry: Registry::default(),
            bus,
            presence,
            revoked: Arc::default(),
            handoffs: std::sync::OnceLock::new(),
            adoptions: std::sync::OnceLock::new(),
        }
    }

    /// Applies `revocation` on this node: its tokens are refused from now on, and the local
    /// connections that authenticated with them are closed (4004). Returns how many closed.
    /// A revocation the node knew already changes nothing: its connections were closed then,
    /// and newer ones with its tokens were refused.
    pub fn apply_revocation(&self, revocation: &Revocation) -> usize {
        if !self.revoked.add(revocation) {
            return 0;
        }
        metrics::counter!(m::REVOCATIONS, "kind" => revocation.kind()).increment(1);
        tracing::warn!(
            event = "revocation",
            kind = revocation.kind(),
            "revocation applied"
        );
        let stops = |h: &ConnHandle| revocation.stops(h.user.as_str(), &h.credential);
        self.registry.close_where(stops, CloseCode::Revoked)
    }

    /// Applies `revocation` here and tells every other node. The caller has stored it: a node
    /// the bus did not reach reads it from the store.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), BusError> {
        self.apply_revocation(revocation);
        let payload = serde_json::to_vec(revocation).expect("a revocation serializes");
        self.publish(&Topic::Cluster, Route::Revoke, payload.into(), Stamp::NONE)
            .await
            .map(|_| ())
    }

    /// Registers an authenticated connection, taking over the client id from the same user's
    /// older connection (anywhere in the cluster) or refusing another user's. With
    /// `max_devices` (not 0), a user who would hold more connections than that across the
    /// cluster is refused (`rate_limited`); presence counts them, so a dead node's connections
    /// stop counting when it is reaped. Checked after the claim: two connections racing for the
    /// last place may both be refused, never both admitted. A resumable `session` is kept with
    /// the claim, for a survivor to take over if this node dies.
    pub async fn connect(
        &self,
        me: &Member,
        handle: ConnHandle,
        max_devices: usize,
        session: Option<&Resumable>,
    ) -> Result<(), ErrorFrame> {
        let claimed = match session {
            Some(session) => self.presence.claim_resumable(me, session).await?,
            None => self.presence.claim(me).await?,
        };
        match claimed {
            Claim::Taken => {
                return Err(ErrorFrame::new(
                    ErrorCode::ClientIdTaken,
                    "this client id belongs to another user",
                ));
            }
            Claim::Replaced(old) => self.replace(&old).await,
            Claim::Fresh => {}
        }
        if max_devices > 0 {
            match self.presence.devices(&me.user_id).await {
                Ok(held) if held > max_devices => {
                    if let Err(e) = self.presence.evict(me).await {
                        tracing::warn!(error = %e, "a refused connection stays in presence until reaped");
                    }
                    m::limit_hit("user_connections");
                    let message = format!(
                        "this user holds {max_devices} connections already; close one first"
                    );
                    return Err(ErrorFrame::new(ErrorCode::RateLimited, message).max(max_devices));
                }
                // Presence out of reach: the cap is not enforced rather than everyone refused.
                _ => {}
            }
        }
        let (conn, credential) = (handle.conn, Arc::clone(&handle.credential));
        self.registry.insert(handle);
        // A revocation applied between the token check and the insert closed nothing here:
        // it is in the set by now (it is added before connections are scanned), so look again.
        if self.revoked.refuses_token(me.user_id.as_str(), &credential) {
            self.registry.close(conn, CloseCode::Revoked);
        }
        if let Err(e) = self.subs.acquire(&Topic::User(me.user_id.clone())).await {
            tracing::warn!(error = %e, "user subscription failed; cross-node delivery degraded");
        }
        Ok(())
    }

    /// Evicts a replaced connection from its rooms (peers see `user_left`) and closes it, on
    /// whichever node holds it.
    async fn replace(&self, old: &Member) {
        metrics::counter!(m::TAKEOVERS).increment(1);
        self.evict(old).await;
        if !self.registry.close(old.conn, CloseCode::Replaced) {
            let kick = Route::Kick {
                client: old.client_id.clone(),
                conn: old.conn,
            };
            let topic = Topic::Node(old.node.clone());
            if let Err(e) = self.publish(&topic, kick, Bytes::new(), Stamp::NONE).await {
                tracing::warn!(error = %e, "could not reach the replaced connection's node");
            }
        }
    }

    /// Removes `member` from presence and tells its rooms it left.
    pub async fn evict(&self, member: &Member) {
        let rooms = match self.presence.evict(member).await {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::warn!(error = %e, "presence eviction failed");
                return;
            }
        };
        for room in rooms {
            let _ = self.announce_left(&room, member).await;
        }
    }

    /// Joins `room`; returns the other members.
    pub async fn join(
        &self,
        me: &Member,
        room: &RoomId,
        cap: usize,
    ) -> Result<Vec<PeerView>, ErrorFrame> {
        let topic = Topic::Room(room.clone());
        self.subs.acquire(&topic).await?;
        // Registered (held back) before the snapshot, so that no event published in between
        // is lost; a member that joined just before may then be announced again.
        let joining = self.registry.begin_join(room, me.conn);
        self.rosters.open(room);
        let refuse = |hub: &Self| {
            if joining {
                hub.registry.abort_join(room, me.conn);
            }
            hub.subs.release(&topic);
            hub.close_roster_if_unused(room);
        };
        let others = match self.presence.join(room, me, cap).await {
            Ok(Joined::Joined(others)) => others,
            Ok(Joined::Already(others)) => {
                if joining {
                    self.registry.confirm_join(room, me.conn);
                } else {
                    self.subs.release(&topic);
                }
                self.rosters.merge(room, &others);
                return Ok(others.iter().map(Member::view).collect());
            }
            Ok(Joined::Full) => {
                refuse(self);
                return Err(
                    ErrorFrame::new(ErrorCode::RoomFull, format!("room {room} is full"))
                        .room(room)
                        .max(cap),
                );
            }
            Err(e) => {
                refuse(self);
                return Err(e.into());
            }
        };
        self.registry.confirm_join(room, me.conn);
        self.rosters.merge(room, &others);
        metrics::counter!(m::JOINS).increment(1);
        let _ = self.announce_joined(room, me).await;
        Ok(others.iter().map(Member::view).collect())
    }

    /// Leaves `room`; peers see `user_left`.
    pub async fn leave(&self, me: &Member, room: &RoomId) -> Result<(), ErrorFrame> {
        let removed = self.presence.leave(room, me).await;
        if self.registry.leave(room, me.conn) {
            self.subs.release(&Topic::Room(room.clone()));
            self.close_roster_if_unused(room);
        }
        if removed? {
            self.announce_left(room, me).await?;
        }
        Ok(())
    }

    /// Whether `user` has a connection in one of `rooms`, cluster-wide.
    pub async fn shares_room(&self, rooms: &[RoomId], user: &UserId) -> Result<bool, ErrorFrame> {
        for room in rooms {
            let members = self.presence.members(room).await?;
            if members.iter().any(|m| &m.user_id == user) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Cleans up after a closed connection.
    pub async fn disconnect(&self, me: &Member) {
        self.evict(me).await;
        let Some(rooms) = self.registry.remove(me.conn) else {
            return;
        };
        self.subs.release(&Topic::User(me.user_id.clone()));
        for room in rooms {
            self.subs.release(&Topic::Room(room.clone()));
            self.close_roster_if_unused(&room);
        }
    }

    fn close_roster_if_unused(&self, room: &RoomId) {
        if !self.registry.has_room(room) {
            self.rosters.close(room);
        }
    }

    async fn announce_joined(&self, room: &RoomId, member: &Member) -> Result<(), ErrorFrame> {
        let joined = ServerMessage::UserJoined {
            room: room.clone(),
            peer: member.view(),
        };
        let route = Route::Joined {
            room: room.clone(),
            client: member.client_id.clone(),
            conn: member.conn,
            node: member.node.clone(),
        };
        self.announce(room, member, route, joined).await
    }

    async fn announce_left(&self, room: &RoomId, member: &Member) -> Result<(), ErrorFrame> {
        self.rosters.unseat(room, member.conn);
        let left = ServerMessage::UserLeft {
            room: room.clone(),
            peer: member.view(),
        };
        let route = Route::Left {
            room: room.clone(),
            client: member.client_id.clone(),
            conn: member.conn,
        };
        self.announce(room, member, route, left).await
    }

    /// Tells every other member of `room`, here and on other nodes.
    async fn announce(
        &self,
        room: &RoomId,
        member: &Member,
        route: Route,
        message: ServerMessage,
    ) -> Result<(), ErrorFrame> {
        let frame = Frame::from(message.to_json());
        self.registry.deliver_room(room, member.conn, &frame);
        self.publish(&Topic::Room(room.clone()), route, frame.into(), Stamp::NONE)
            .await?;
        Ok(())
    }

    async fn publish(
        &self,
        topic: &Topic,
        route: Route,
        payload: Bytes,
        stamp: Stamp,
    ) -> Result<usize, BusError> {
        let envelope = Envelope {
            origin: self.node.clone(),
            route,
            payload,
            stamp,
        };
        let result = self.bus.publish(topic, envelope).await;
        if result.is_err() {
            metrics::counter!(m::BUS_ERRORS).increment(1);
        }
        result
    }

    /// Routes what the bus delivers to local connections until the bus closes.
    pub async fn run_inbound(self: Arc<Self>, mut inbound: mpsc::Receiver<Inbound>) {
        let mut batch = Vec::with_capacity(INBOUND_BATCH);
        while inbound.recv_many(&mut batch, INBOUND_BATCH).await > 0 {
            for item in batch.drain(..) {
                self.route(item);
            }
        }
    }

    /// Renews the node's lease and tells rooms about members of dead nodes, every `every`.
    pub async fn run_reaper(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match self.presence.reap().await {
                Ok(reaped) => {
                    if reaped.evicted {
                        self.reconnect_everyone();
                    }
                    for conn in reaped.replaced {
                        self.registry.close(conn, CloseCode::Replaced);
                    }
                    for (room, member) in reaped.gone {
                        let _ = self.announce_left(&room, &member).await;
                    }
                    for adopted in reaped.adopted {
                        self.adopted(adopted).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
        }
    }

    /// Tells every local client to reconnect and closes it with 1012: the cluster was told
    /// they left (this node was reaped), and re-joining is how their rooms see them again.
    fn reconnect_everyone(&self) {
        tracing::warn!(
            connections = self.registry.connections(),
            "this node was reaped: asking every client to reconnect"
        );
        // The cluster saw these sessions leave, or a survivor took them over and holds what
        // was sent to them since, while this node went on delivering: a resume could repeat
        // frames. The clients connect afresh (replacing what a survivor took over).
        let notice = ServerMessage::Reconnect {
            reason: "node_evicted",
            resume: None,
        };
        self.registry.broadcast_all(&Frame::from(notice.to_json()));
        self.registry.close_all(CloseCode::ServiceRestart);
    }

    /// Topics the node listens to.
    pub fn topics(&self) -> Vec<Topic> {
        self.subs.topics()
    }
}
