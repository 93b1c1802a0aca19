//! Relaying signals, and routing what other nodes send.
//!
//! A targeted room signal goes to the local connection when the peer is here; otherwise to the
//! peer's node, found in the room's roster (or, when the roster does not know the peer, in
//! presence). It is *posted*: the sender's connection goes on at once, and the node holding the
//! peer bounces it if the peer is not there after all, so the sender still gets
//! `peer_not_found`. Room broadcasts are posted on the room's topic. User-addressed signals
//! wait for the bus, since `user_offline` depends on who received them.

use super::returns::Return;
use super::{Hub, Seat};
use crate::auth::Revocation;
use crate::bus::{Envelope, Inbound, Route, Topic, Undelivered};
use crate::metrics as m;
use crate::protocol::Member;
use crate::protocol::{
    ClientId, CloseCode, ConnId, ErrorCode, ErrorFrame, Frame, NodeId, RoomId, ServerMessage,
    UserId,
};

pub(super) fn peer_not_found(room: &RoomId, to: &ClientId) -> ErrorFrame {
    let mut e = ErrorFrame::new(
        ErrorCode::PeerNotFound,
        format!("no client {to} in room {room}"),
    )
    .room(room);
    e.to = Some(to.clone());
    e
}

/// How far [`Hub::relay_room`] got.
#[derive(Debug)]
pub enum Relayed {
    /// Delivered locally or posted to the nodes concerned.
    Done,
    /// The roster does not know the peer: [`Hub::send_to_unknown`] asks presence.
    Unknown(Frame),
}

impl Hub {
    /// Relays `frame` to `to` in `room`, or to every member but the sender, without waiting
    /// for anything (the relay hot path).
    pub fn relay_room(
        &self,
        me: &Member,
        room: &RoomId,
        to: Option<&ClientId>,
        frame: Frame,
    ) -> Result<Relayed, ErrorFrame> {
        let Some(to) = to else {
            self.registry.deliver_room(room, me.conn, &frame);
            let route = Route::Room {
                room: room.clone(),
                except: me.conn,
            };
            // Where sessions outlive their node, a broadcast fewer nodes heard than hold
            // members comes back, to be held for the members of a node that died.
            let nodes = if self.presence.outlives_nodes() {
                self.rosters.nodes_of(room)
            } else {
                0
            };
            self.post_expecting(Topic::Room(room.clone()), route, frame, nodes)?;
            return Ok(Relayed::Done);
        };
        if self.diverted.holds(room, to) {
            // Earlier signals to the peer are on their way through the returns: behind them
            // (and behind those still on their way to a node that will not take them).
            let route = Route::Member {
                room: room.clone(),
                client: to.clone(),
                from: me.conn,
            };
            self.post(Topic::Returns, route, frame)?;
            return Ok(Relayed::Done);
        }
        let frame = match self.registry.deliver_client(to, Some(room), frame) {
            Ok(()) => return Ok(Relayed::Done),
            Err(frame) => frame,
        };
        match self.rosters.locate(room, to) {
            Some(node) => self.post_to_member(me, room, to, node, frame)?,
            None => return Ok(Relayed::Unknown(frame)),
        }
        Ok(Relayed::Done)
    }

    /// [`Hub::relay_room`], then [`Hub::send_to_unknown`] if needed.
    pub async fn send_room(
        &self,
        me: &Member,
        room: &RoomId,
        to: Option<&ClientId>,
        frame: Frame,
    ) -> Result<(), ErrorFrame> {
        match (self.relay_room(me, room, to, frame)?, to) {
            (Relayed::Unknown(frame), Some(to)) => self.send_to_unknown(me, room, to, frame).await,
            _ => Ok(()),
        }
    }

    /// Relays `frame` to `to` in `room`, a peer the roster does not know, after asking presence.
    pub async fn send_to_unknown(
        &self,
        me: &Member,
        room: &RoomId,
        to: &ClientId,
        frame: Frame,
    ) -> Result<(), ErrorFrame> {
        let node = self
            .locate_in_presence(room, to)
            .await?
            .ok_or_else(|| peer_not_found(room, to))?;
        if node == self.node {
            // Presence places the peer here, where it is not registered (yet): a session this
            // node is taking over from a dead one.
            let origin = self.node.clone();
            self.stray(origin, room.clone(), to.clone(), me.conn, frame);
            return Ok(());
        }
        self.post_to_member(me, room, to, node, frame)
    }

    fn post_to_member(
        &self,
        me: &Member,
        room: &RoomId,
        to: &ClientId,
        node: NodeId,
        frame: Frame,
    ) -> Result<(), ErrorFrame> {
        let route = Route::Member {
            room: room.clone(),
            client: to.clone(),
            from: me.conn,
        };
        self.post(Topic::Node(node), route, frame)
    }

    /// The node of `client` in `room` according to presence; re-seeds the room's roster, which
    /// did not know it.
    async fn locate_in_presence(
        &self,
        room: &RoomId,
        client: &ClientId,
    ) -> Result<Option<NodeId>, ErrorFrame> {
        let members = self.presence.members(room).await?;
        self.rosters.reseed(room, &members);
        let peer = members.into_iter().find(|m| m.client_id == *client);
        Ok(peer.map(|m| m.node))
    }

    /// Relays `frame` to every connection of `target` but the sender's own.
    pub async fn send_user(
        &self,
        me: &Member,
        target: &UserId,
        frame: Frame,
    ) -> Result<(), ErrorFrame> {
        let local = self.registry.deliver_user(target, me.conn, &frame);
        let route = Route::User {
            user: target.clone(),
            except: me.conn,
        };
        let topic = Topic::User(target.clone());
        let stamp = frame.stamp();
        // Kept for a connection of the user that comes here while the envelope is on its way.
        let kept = (local == 0).then(|| frame.clone());
        let published = self.publish(&topic, route, frame.into(), stamp);
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
        // A connection of the user that came here while the envelope was on its way: its
        // subscription is taken off the receiver count as this node's own even when Redis
        // published before it, and this node drops its own envelopes, so it gets the frame
        // here. (A session moving here that its old node forwards the frame to as well writes
        // it once: a hand-off drops what came both ways.)
        let mut late = match &kept {
            Some(frame) if local + remote == 0 => {
                self.registry.deliver_user(target, me.conn, frame)
            }
            _ => 0,
        };
        // The user's connections are all on nodes that no longer listen (they died): the frame
        // is held for each of their sessions that a survivor is about to take over.
        if let (Some(frame), 0) = (&kept, local + remote + late)
            && devices.is_some_and(|n| n > 0)
        {
            late = self
                .presence
                .hold_user(target, frame.as_str())
                .await
                .unwrap_or(0);
            if late > 0 {
                metrics::counter!(m::SIGNALS_HELD).increment(1);
            }
        }
        if local + remote + late == 0 {
            let mut e = ErrorFrame::new(
                ErrorCode::UserOffline,
                format!("user {target} is not connected"),
            );
            e.target_user_id = Some(target.clone());
            return Err(e);
        }
        Ok(())
    }

    fn post(&self, topic: Topic, route: Route, frame: Frame) -> Result<(), ErrorFrame> {
        self.post_expecting(topic, route, frame, 0)
    }

    /// [`Hub::post`], expecting `nodes` other nodes to hear it ([`Bus::post_expecting`]).
    fn post_expecting(
        &self,
        topic: Topic,
        route: Route,
        frame: Frame,
        nodes: usize,
    ) -> Result<(), ErrorFrame> {
        let stamp = frame.stamp();
        let envelope = Envelope {
            origin: self.node.clone(),
            route,
            payload: frame.into_bytes(),
            stamp,
        };
        self.bus
            .post_expecting(topic, envelope, nodes)
            .map_err(|e| {
                metrics::counter!(m::BUS_ERRORS).increment(1);
                ErrorFrame::from(e)
            })
    }

    /// Handles one item of the node's inbound stream.
    pub fn route(&self, inbound: Inbound) {
        match inbound {
            Inbound::Envelope(envelope) if envelope.origin != self.node => self.deliver(envelope),
            Inbound::Envelope(_) => {}
            Inbound::Returned(envelope, why) => self.returned(envelope, why),
            Inbound::Resubscribed => {
                if self.presence.outlives_nodes() {
                    let _ = self.returns.send(Return::Reclaim);
                }
            }
        }
    }

    /// Hands one envelope from another node to the local connections it names.
    fn deliver(&self, envelope: Envelope) {
        let Envelope {
            origin,
            route,
            payload,
            stamp,
        } = envelope;
        match route {
            Route::Kick { conn, .. } => {
                self.registry.close(conn, CloseCode::Replaced);
                return;
            }
            Route::Bounce { room, client, conn } => {
                self.rosters.unseat_missing(&room, &client, Some(&origin));
                self.tell(conn, peer_not_found(&room, &client));
                return;
            }
            Route::Handoff | Route::Conn { .. } => {
                let envelope = Envelope {
                    origin,
                    route,
                    payload,
                    stamp,
                };
                self.hand_off(envelope);
                return;
            }
            Route::Probe => return,
            Route::Revoke => {
                match serde_json::from_slice::<Revocation>(&payload) {
                    Ok(revocation) => {
                        self.apply_revocation(&revocation);
                    }
                    Err(_) => metrics::counter!(m::BUS_DROPPED).increment(1),
                }
                return;
            }
            _ => {}
        }
        let Ok(frame) = Frame::try_from(payload) else {
            metrics::counter!(m::BUS_DROPPED).increment(1);
            return;
        };
        let frame = frame.stamped(stamp.remote());
        match route {
            Route::Room { room, except } => {
                self.registry.deliver_room(&room, except, &frame);
            }
            Route::Joined {
                room,
                client,
                conn,
                node,
            } => {
                // Known before the local members hear of it, so they can answer at once.
                self.rosters.seat(&room, Seat { client, conn, node });
                // Empty: a session that moved here from another node, silently.
                if !frame.as_str().is_empty() {
                    self.registry.deliver_room(&room, conn, &frame);
                }
            }
            Route::Left { room, client, conn } => {
                if self.holds_elsewhere(&room, &client, conn) {
                    // A newer connection of the client is in the room: this `user_left` was
                    // overtaken by its `user_joined` (they come from different nodes, or from
                    // a reaper), and must not undo it.
                    metrics::counter!(m::STALE_LEAVES).increment(1);
                    return;
                }
                self.rosters.unseat(&room, conn);
                self.registry.deliver_room(&room, conn, &frame);
            }
            Route::Member { room, client, from } => {
                if let Err(frame) = self.registry.deliver_client(&client, Some(&room), frame) {
                    self.stray(origin, room, client, from, frame);
                }
            }
            Route::User { user, except } => {
                self.registry.deliver_user(&user, except, &frame);
            }
            Route::Kick { .. }
            | Route::Bounce { .. }
            | Route::Revoke
            | Route::Handoff
            | Route::Probe
            | Route::Conn { .. } => {}
        }
    }

    /// Whether a connection other than `conn` holds `client` in `room`, here or (as far as the
    /// roster knows) on another node.
    fn holds_elsewhere(&self, room: &RoomId, client: &ClientId, conn: ConnId) -> bool {
        let current = self
            .registry
            .member_conn(room, client)
            .or_else(|| self.rosters.conn_of(room, client));
        current.is_some_and(|current| current != conn)
    }

    /// Tells node `origin` that `client` is not in `room` here.
    pub(super) fn bounce(&self, origin: NodeId, room: RoomId, client: ClientId, conn: ConnId) {
        let route = Route::Bounce { room, client, conn };
        let _ = self.post(Topic::Node(origin), route, Frame::from_static(""));
    }

    /// A posted envelope reached no other node: tells its sender.
    fn returned(&self, envelope: Envelope, why: Undelivered) {
        if why == Undelivered::Short {
            // A broadcast a node with members of the room did not hear.
            if matches!(envelope.route, Route::Room { .. }) {
                let _ = self.returns.send(Return::Broadcast(envelope));
            }
            return;
        }
        let (conn, error) = match (envelope.route, why) {
            (Route::Member { room, client, from }, Undelivered::NoReceiver) => {
                // The peer's node may have died with its session, which a survivor takes
                // over: where sessions outlive their node, the signal is held for it (and the
                // seat stays, for the room's broadcasts, until the takeover moves it).
                if self.presence.outlives_nodes() {
                    let route = Route::Member { room, client, from };
                    self.divert(Envelope { route, ..envelope });
                    return;
                }
                self.rosters.unseat_missing(&room, &client, None);
                (from, peer_not_found(&room, &client))
            }
            (
                Route::Member { from: conn, .. } | Route::Room { except: conn, .. },
                Undelivered::Unavailable,
            ) => {
                // The publisher logged the failure once for its whole batch.
                metrics::counter!(m::BUS_ERRORS).increment(1);
                (conn, super::try_again())
            }
            _ => return,
        };
        self.tell(conn, error);
    }

    /// Sends an error frame to local connection `conn`, if it is still here.
    pub(super) fn tell(&self, conn: ConnId, error: ErrorFrame) {
        metrics::counter!(m::MESSAGE_ERRORS, "code" => error.code.as_str()).increment(1);
        let frame = Frame::from(ServerMessage::from(error).to_json());
        self.registry.deliver_conn(conn, &frame);
    }
}
