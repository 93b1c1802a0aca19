//! A session moving between nodes (`resume` on another node): the new connection takes the
//! client id and the room seats of the old one without anyone seeing it leave or join. The
//! hand-off itself (who holds the session, what it carries) is the resume layer's; the hub
//! carries its envelopes ([`Route::Handoff`], [`Route::Conn`]) to it, in order.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Hub;
use crate::bus::{BusError, Envelope, Route, Topic};
use crate::metrics as m;
use crate::presence::{Adopted, Claim, Joined, Resumable};
use crate::protocol::{CloseCode, ErrorCode, ErrorFrame, Member, RoomId, Stamp};
use crate::registry::ConnHandle;

impl Hub {
    /// Sends hand-off envelopes to `handoffs` from now on (once; later calls change nothing).
    pub fn take_handoffs(&self, handoffs: mpsc::UnboundedSender<Envelope>) {
        let _ = self.handoffs.set(handoffs);
    }

    /// Passes a hand-off envelope on; dropped (and counted) when nobody takes them.
    pub(super) fn hand_off(&self, envelope: Envelope) {
        let taken = self
            .handoffs
            .get()
            .is_some_and(|tx| tx.send(envelope).is_ok());
        if !taken {
            metrics::counter!(m::BUS_DROPPED).increment(1);
        }
    }

    /// Publishes a hand-off step on `topic`; returns how many other nodes listened.
    pub async fn publish_handoff(
        &self,
        topic: &Topic,
        route: Route,
        payload: Bytes,
        stamp: Stamp,
    ) -> Result<usize, BusError> {
        self.publish(topic, route, payload, stamp).await
    }

    /// Registers the new connection of a session that moved here: it takes the client id from
    /// the old connection without evicting or closing it (the old node lets it go itself).
    pub async fn connect_moved(
        &self,
        me: &Member,
        handle: ConnHandle,
        session: &Resumable,
    ) -> Result<(), ErrorFrame> {
        if let Claim::Taken = self.presence.claim_resumable(me, session).await? {
            return Err(ErrorFrame::new(
                ErrorCode::ClientIdTaken,
                "this client id belongs to another user",
            ));
        }
        let (conn, credential) = (handle.conn, std::sync::Arc::clone(&handle.credential));
        self.registry.insert(handle);
        if self.revoked.refuses_token(me.user_id.as_str(), &credential) {
            self.registry.close(conn, CloseCode::Revoked);
        }
        self.subs.acquire(&Topic::User(me.user_id.clone())).await?;
        Ok(())
    }

    /// Sends the sessions this node takes over from dead nodes to `adoptions` from now on (once;
    /// later calls change nothing).
    pub fn take_adoptions(&self, adoptions: mpsc::UnboundedSender<Adopted>) {
        let _ = self.adoptions.set(adoptions);
    }

    /// Passes a session taken over from a dead node to the resume layer; without one (resuming
    /// is off here) it leaves, and its rooms are told.
    pub(super) async fn adopted(&self, adopted: Adopted) {
        let adopted = match self.adoptions.get() {
            Some(tx) => match tx.send(adopted) {
                Ok(()) => return,
                Err(mpsc::error::SendError(adopted)) => adopted,
            },
            None => adopted,
        };
        self.disconnect(&adopted.member).await;
    }

    /// Holds a session taken over from a dead node (presence points at this node already): its
    /// connection is registered without a socket, listens to its user and rooms, and the other
    /// nodes route its seats here. Nobody is told anything. `false` when a fresh connection
    /// took its client id before it was registered here (whose takeover closed nothing here):
    /// it is let go.
    pub async fn adopt(&self, me: &Member, handle: ConnHandle, rooms: &[RoomId]) -> bool {
        let (conn, credential) = (handle.conn, std::sync::Arc::clone(&handle.credential));
        self.register_adopted(handle, rooms);
        if !self.presence.holds_claim(me).await {
            self.registry.remove(conn);
            if let Err(e) = self.presence.evict(me).await {
                tracing::warn!(error = %e, "a session taken over stays in presence until reconciled");
            }
            return false;
        }
        if self.revoked.refuses_token(me.user_id.as_str(), &credential) {
            self.registry.close(conn, CloseCode::Revoked);
        }
        if let Err(e) = self.subs.acquire(&Topic::User(me.user_id.clone())).await {
            tracing::warn!(error = %e, "an adopted session's user subscription failed");
        }
        for room in rooms {
            let topic = Topic::Room(room.clone());
            if let Err(e) = self.subs.acquire(&topic).await {
                tracing::warn!(error = %e, "an adopted session's room subscription failed");
            }
            self.rosters.open(room);
            if let Ok(members) = self.presence.members(room).await {
                self.rosters.reseed(room, &members);
            }
            let _ = self.seat_here(me, room).await;
        }
        true
    }

    /// Tells the other nodes' rosters that `me` sits in `room` on this node (no `user_joined`).
    async fn seat_here(&self, me: &Member, room: &RoomId) -> Result<usize, BusError> {
        let seat = Route::Joined {
            room: room.clone(),
            client: me.client_id.clone(),
            conn: me.conn,
            node: me.node.clone(),
        };
        let topic = Topic::Room(room.clone());
        self.publish(&topic, seat, Bytes::new(), Stamp::NONE).await
    }

    /// Takes over the seat of the moved session in `room`: presence and every roster point at
    /// the new connection, and nobody is told anything (the join replaces the old record).
    pub async fn rejoin(&self, me: &Member, room: &RoomId) -> Result<(), ErrorFrame> {
        let topic = Topic::Room(room.clone());
        self.subs.acquire(&topic).await?;
        let joining = self.registry.begin_join(room, me.conn);
        self.rosters.open(room);
        let others = match self.presence.join(room, me, usize::MAX).await {
            Ok(Joined::Joined(others) | Joined::Already(others)) => others,
            Ok(Joined::Full) | Err(_) => {
                if joining {
                    self.registry.abort_join(room, me.conn);
                }
                self.subs.release(&topic);
                self.close_roster_if_unused(room);
                return Err(ErrorFrame::new(
                    ErrorCode::Unavailable,
                    "cluster state is unavailable; try again",
                ));
            }
        };
        self.registry.confirm_join(room, me.conn);
        self.rosters.merge(room, &others);
        self.seat_here(me, room).await?;
        Ok(())
    }
}
