//! Signals that found no listener: a targeted signal whose node did not listen goes to where
//! presence says its peer is now; when that node does not listen either and the peer's session
//! can outlive it (a cluster), the signal is held in Redis for the survivor that takes the
//! session over. A node whose bus connection came back takes back what was held for its own
//! connections meanwhile. One task takes them all, in order, so each sender's order holds.

use std::sync::Arc;

use super::Hub;
use super::relay::peer_not_found;
use crate::bus::{Envelope, Route, Topic};
use crate::metrics as m;
use crate::protocol::Frame;

/// What [`Hub::run_returns`] takes, in order.
pub(super) enum Return {
    /// A targeted signal whose node did not listen.
    Signal(Envelope),
    /// The bus connection came back: signals may have been held for this node's sessions.
    Reclaim,
}

impl Hub {
    /// Takes the targeted signals whose node did not listen, in order, until the hub stops:
    /// each goes to where presence says its peer is now; when that node does not listen
    /// either and the peer's session can outlive it, the signal is held for the survivor that
    /// takes the session over; otherwise the sender gets `peer_not_found`.
    pub async fn run_returns(self: Arc<Self>) {
        let rx = self.returns_rx.lock().ok().and_then(|mut rx| rx.take());
        let Some(mut returns) = rx else {
            return;
        };
        while let Some(item) = returns.recv().await {
            match item {
                Return::Signal(envelope) => self.hold_or_bounce(envelope).await,
                Return::Reclaim => self.reclaim_held().await,
            }
        }
    }

    /// Delivers what was held for this node's sessions while its bus connection was down (the
    /// others took it for dead): nobody takes them over, since this node still holds them.
    async fn reclaim_held(&self) {
        let conns = self.registry.conn_ids();
        let mut reclaimed = 0;
        for conn in conns {
            let Ok(frames) = self.presence.take_held(conn).await else {
                continue;
            };
            for frame in frames {
                reclaimed += usize::from(self.registry.deliver_conn(conn, &Frame::from(frame)));
            }
        }
        if reclaimed > 0 {
            tracing::info!(reclaimed, "delivered signals held while the bus was down");
        }
    }

    async fn hold_or_bounce(&self, envelope: Envelope) {
        let Envelope {
            route: Route::Member { room, client, from },
            payload,
            stamp,
            ..
        } = envelope
        else {
            return;
        };
        let peer = match self.presence.member(&room, &client).await {
            Ok(Some(peer)) => peer,
            Ok(None) => return self.tell(from, peer_not_found(&room, &client)),
            Err(_) => return self.tell(from, super::try_again()),
        };
        if peer.node == self.node {
            let Ok(frame) = Frame::try_from(payload) else {
                return;
            };
            if self
                .registry
                .deliver_client(&client, Some(&room), frame.stamped(stamp))
                .is_err()
            {
                self.tell(from, peer_not_found(&room, &client));
            }
            return;
        }
        let route = Route::Member {
            room: room.clone(),
            client: client.clone(),
            from,
        };
        let topic = Topic::Node(peer.node.clone());
        if matches!(self.publish(&topic, route, payload.clone(), stamp).await, Ok(n) if n > 0) {
            return;
        }
        let Ok(text) = std::str::from_utf8(&payload) else {
            return;
        };
        match self.presence.hold(&peer, text).await {
            Ok(true) => metrics::counter!(m::SIGNALS_HELD).increment(1),
            Ok(false) => self.tell(from, peer_not_found(&room, &client)),
            Err(_) => self.tell(from, super::try_again()),
        }
    }
}
