//! The hub: a node's delivery and membership logic over the [`Registry`] (local connections),
//! the [`Presence`] store and the [`Bus`]. Frames for local recipients are delivered directly;
//! the bus carries them to other nodes, where [`Hub::route`] hands them to local connections.
//! The same code runs with the in-process bus on a single node and with Redis in a cluster.

mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::{Bus, BusError, Envelope, Route, Topic};
use crate::metrics as m;
use crate::presence::{Claim, Joined, Member, Presence, PresenceError};
use crate::protocol::{
    ClientId, CloseCode, ErrorCode, ErrorFrame, NodeId, PeerView, RoomId, ServerMessage, UserId,
};
use crate::registry::{ConnHandle, Registry};

pub use subscriptions::Subscriptions;

pub struct Hub {
    pub node: NodeId,
    pub registry: Registry,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn Presence>,
    subs: Arc<Subscriptions>,
}

fn unavailable(e: impl std::fmt::Display) -> ErrorFrame {
    tracing::warn!(error = %e, "cluster state unavailable");
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
        unavailable(e)
    }
}

impl Hub {
    pub fn new(
        node: NodeId,
        bus: Arc<dyn Bus>,
        presence: Arc<dyn Presence>,
        linger: Duration,
    ) -> Self {
        Self {
            subs: Arc::new(Subscriptions::new(Arc::clone(&bus), linger)),
            node,
            registry: Registry::default(),
            bus,
            presence,
        }
    }

    /// Registers an authenticated connection, taking over the client id from the same user's
    /// older connection (anywhere in the cluster) or refusing another user's.
    pub async fn connect(&self, me: &Member, handle: ConnHandle) -> Result<(), ErrorFrame> {
        match self.presence.claim(me).await? {
            Claim::Taken => {
                return Err(ErrorFrame::new(
                    ErrorCode::ClientIdTaken,
                    "this client id belongs to another user",
                ));
            }
            Claim::Replaced(old) => self.replace(&old).await,
            Claim::Fresh => {}
        }
        self.registry.insert(handle);
        if let Err(e) = self.subs.acquire(&Topic::User(me.user_id.clone())).await {
            tracing::warn!(error = %e, "user subscription failed; cross-node delivery degraded");
        }
        Ok(())
    }

    /// Evicts a replaced connection from its rooms (peers see `user_left`) and closes it.
    async fn replace(&self, old: &Member) {
        metrics::counter!(m::TAKEOVERS).increment(1);
        self.evict(old).await;
        if !self.registry.close(old.conn, CloseCode::Replaced) {
            let kick = Route::Kick {
                client: old.client_id.clone(),
                conn: old.conn,
            };
            let topic = Topic::User(old.user_id.clone());
            if let Err(e) = self.publish(&topic, kick, Bytes::new()).await {
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
        let refuse = |hub: &Self| {
            if joining {
                hub.registry.abort_join(room, me.conn);
            }
            hub.subs.release(&topic);
        };
        let others = match self.presence.join(room, me, cap).await {
            Ok(Joined::Joined(others)) => others,
            Ok(Joined::Already(others)) => {
                if joining {
                    self.registry.confirm_join(room, me.conn);
                } else {
                    self.subs.release(&topic);
                }
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
        metrics::counter!(m::JOINS).increment(1);
        let joined = ServerMessage::UserJoined {
            room: room.clone(),
            peer: me.view(),
        };
        let _ = self
            .send_room(me, room, None, joined.to_json().into())
            .await;
        Ok(others.iter().map(Member::view).collect())
    }

    /// Leaves `room`; peers see `user_left`.
    pub async fn leave(&self, me: &Member, room: &RoomId) -> Result<(), ErrorFrame> {
        let removed = self.presence.leave(room, me).await;
        if self.registry.leave(room, me.conn) {
            self.subs.release(&Topic::Room(room.clone()));
        }
        if removed? {
            self.announce_left(room, me).await?;
        }
        Ok(())
    }

    /// Cleans up after a closed connection.
    pub async fn disconnect(&self, me: &Member) {
        self.evict(me).await;
        let Some(rooms) = self.registry.remove(me.conn) else {
            return;
        };
        self.subs.release(&Topic::User(me.user_id.clone()));
        for room in rooms {
            self.subs.release(&Topic::Room(room));
        }
    }

    async fn announce_left(&self, room: &RoomId, member: &Member) -> Result<(), ErrorFrame> {
        let left = ServerMessage::UserLeft {
            room: room.clone(),
            peer: member.view(),
        };
        self.send_room(member, room, None, left.to_json().into())
            .await
    }

    /// Relays `frame` to `to` in `room`, or to every member but the sender.
    pub async fn send_room(
        &self,
        me: &Member,
        room: &RoomId,
        to: Option<&ClientId>,
        frame: Utf8Bytes,
    ) -> Result<(), ErrorFrame> {
        let Some(to) = to else {
            self.registry.deliver_room(room, me.conn, &frame);
            let route = Route::Room {
                room: room.clone(),
                except: me.conn,
            };
            self.publish(&Topic::Room(room.clone()), route, frame.into())
                .await?;
            return Ok(());
        };
        if self.registry.deliver_client(to, Some(room), &frame) {
            return Ok(());
        }
        let peer_not_found = || {
            let mut e = ErrorFrame::new(
                ErrorCode::PeerNotFound,
                format!("no client {to} in room {room}"),
            )
            .room(room);
            e.to = Some(to.clone());
            e
        };
        let envelope = Envelope {
            origin: self.node.clone(),
            route: Route::Member {
                room: room.clone(),
                client: to.clone(),
            },
            payload: frame.clone().into(),
        };
        // One step where the bus can check membership itself (Redis: one script); otherwise
        // ask presence, then publish on the peer's user topic.
        let receivers = match self.bus.publish_to_member(room, to, envelope).await {
            Ok(Some(receivers)) => receivers,
            Ok(None) => return Err(peer_not_found()),
            Err(BusError::Unsupported) => {
                let peer = self
                    .presence
                    .member(room, to)
                    .await?
                    .ok_or_else(peer_not_found)?;
                let route = Route::Client { client: to.clone() };
                self.publish(&Topic::User(peer.user_id), route, frame.into())
                    .await?
            }
            Err(e) => {
                metrics::counter!(m::BUS_ERRORS).increment(1);
                return Err(e.into());
            }
        };
        if receivers == 0 {
            return Err(peer_not_found());
        }
        Ok(())
    }

    /// Relays `frame` to every connection of `target` but the sender's own.
    pub async fn send_user(
        &self,
        me: &Member,
        target: &UserId,
        frame: Utf8Bytes,
    ) -> Result<(), ErrorFrame> {
        let local = self.registry.deliver_user(target, me.conn, &frame);
        let route = Route::User {
            user: target.clone(),
            except: me.conn,
        };
        let topic = Topic::User(target.clone());
        let published = self.publish(&topic, route, frame.into());
        // A node keeps listening to a user's topic for the subscription linger after the user's
        // last connection there left: a receiver count alone does not prove the user online.
        let (published, devices) = if local == 0 {
            let (published, devices) = tokio::join!(published, self.presence.devices(target));
            (published, devices.ok())
        } else {
            (published.await, None)
        };
        let remote = match published {
            Ok(_) if devices == Some(0) => 0,
            Ok(n) => n,
            Err(_) if local > 0 => 0,
            Err(e) => return Err(e.into()),
        };
        if local + remote == 0 {
            let mut e = ErrorFrame::new(
                ErrorCode::UserOffline,
                format!("user {target} is not connected"),
            );
            e.target_user_id = Some(target.clone());
            return Err(e);
        }
        Ok(())
    }

    async fn publish(
        &self,
        topic: &Topic,
        route: Route,
        payload: Bytes,
    ) -> Result<usize, BusError> {
        let envelope = Envelope {
            origin: self.node.clone(),
            route,
            payload,
        };
        let result = self.bus.publish(topic, envelope).await;
        if result.is_err() {
            metrics::counter!(m::BUS_ERRORS).increment(1);
        }
        result
    }

    /// Routes envelopes from other nodes to local connections until the bus closes.
    pub async fn run_inbound(self: Arc<Self>, mut inbound: mpsc::Receiver<Envelope>) {
        while let Some(envelope) = inbound.recv().await {
            self.route(envelope);
        }
    }

    /// Hands one envelope from another node to the local connections it names.
    pub fn route(&self, envelope: Envelope) {
        if envelope.origin == self.node {
            return;
        }
        let frame = match Utf8Bytes::try_from(envelope.payload) {
            Ok(frame) => frame,
            Err(_) => {
                metrics::counter!(m::BUS_DROPPED).increment(1);
                return;
            }
        };
        match envelope.route {
            Route::Room { room, except } => {
                self.registry.deliver_room(&room, except, &frame);
            }
            Route::Client { client } => {
                self.registry.deliver_client(&client, None, &frame);
            }
            Route::Member { room, client } => {
                self.registry.deliver_client(&client, Some(&room), &frame);
            }
            Route::User { user, except } => {
                self.registry.deliver_user(&user, except, &frame);
            }
            Route::Kick { conn, .. } => {
                self.registry.close(conn, CloseCode::Replaced);
            }
        }
    }

    /// Renews the node's lease and tells rooms about members of dead nodes, every `every`.
    pub async fn run_reaper(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match self.presence.reap().await {
                Ok(gone) => {
                    for (room, member) in gone {
                        let _ = self.announce_left(&room, &member).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
        }
    }

    /// Topics the node listens to.
    pub fn topics(&self) -> Vec<Topic> {
        self.subs.topics()
    }
}
