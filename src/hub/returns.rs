//! Signals that found no listener: a targeted signal whose node did not listen goes to where
//! presence says its peer is now; when that node does not listen either and the peer's session
//! can outlive it (a cluster), the signal is held in Redis for the survivor that takes the
//! session over. A node whose bus connection came back takes back what was held for its own
//! connections meanwhile. One task takes them all, in order, so each sender's order holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::Hub;
use super::relay::peer_not_found;
use super::strays::NOBODY;
use crate::bus::{Envelope, Route, Topic};
use crate::metrics as m;
use crate::presence::Hold;
use crate::protocol::{ClientId, Frame, Member, NodeId, RoomId, Stamp};

/// What [`Hub::run_returns`] takes, in order.
pub(super) enum Return {
    /// A targeted signal whose node did not listen.
    Signal(Envelope),
    /// The bus connection came back: signals may have been held for this node's sessions.
    Reclaim,
    /// A signal for `client` in `room` is waiting here for its session ([`super::strays`]).
    Stray { room: RoomId, client: ClientId },
    /// A room broadcast fewer nodes heard than hold members of the room.
    Broadcast(Envelope),
}

/// How often waiting strays are checked for their deadline.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Times a returned signal is placed again when its peer's connection changed hands between
/// the lookup and the hold (a takeover under way).
const PLACE_ATTEMPTS: usize = 3;

/// Where a peer was last found, per room and client, while signals to it keep coming back.
type Found = HashMap<(RoomId, ClientId), Member>;

/// Targeted signals on their way through [`Hub::run_returns`], per room and peer: while any
/// is, newer signals to that peer take the same way, so that none overtakes them (a direct
/// route to the survivor that took the peer's session over opens before the returns are
/// through).
#[derive(Default)]
pub(super) struct Diverted {
    /// How many peers have signals on the way (checked first, without the lock).
    peers: AtomicUsize,
    queued: Mutex<HashMap<(RoomId, ClientId), usize>>,
}

impl Diverted {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(RoomId, ClientId), usize>> {
        self.queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether signals to `client` in `room` are on their way through the returns.
    pub(super) fn holds(&self, room: &RoomId, client: &ClientId) -> bool {
        self.peers.load(Ordering::Acquire) > 0
            && self.lock().contains_key(&(room.clone(), client.clone()))
    }

    fn add(&self, key: (RoomId, ClientId)) {
        let mut queued = self.lock();
        let n = queued.entry(key).or_insert(0);
        if *n == 0 {
            self.peers.fetch_add(1, Ordering::AcqRel);
        }
        *n += 1;
    }

    /// One signal is through; `true` when it was the last to its peer.
    fn done(&self, key: &(RoomId, ClientId)) -> bool {
        let mut queued = self.lock();
        let Some(n) = queued.get_mut(key) else {
            return true;
        };
        *n -= 1;
        if *n > 0 {
            return false;
        }
        queued.remove(key);
        self.peers.fetch_sub(1, Ordering::AcqRel);
        true
    }
}

impl Hub {
    /// Sends a targeted signal (`route` [`Route::Member`]) through the returns, behind those to
    /// the same peer.
    pub(super) fn divert(&self, envelope: Envelope) {
        if let Route::Member { room, client, .. } = &envelope.route {
            self.diverted.add((room.clone(), client.clone()));
        }
        let _ = self.returns.send(Return::Signal(envelope));
    }

    /// Takes the targeted signals whose node did not listen, in order, until the hub stops:
    /// each goes to where presence says its peer is now; when that node does not listen
    /// either and the peer's session can outlive it, the signal is held for the survivor that
    /// takes the session over; otherwise the sender gets `peer_not_found`.
    pub async fn run_returns(self: Arc<Self>) {
        let rx = self.returns_rx.lock().ok().and_then(|mut rx| rx.take());
        let Some(mut returns) = rx else {
            return;
        };
        let mut found = Found::new();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let item = tokio::select! {
                item = returns.recv() => item,
                _ = sweep.tick() => {
                    self.sweep_strays();
                    continue;
                }
            };
            match item {
                Some(Return::Signal(envelope)) => {
                    let Route::Member { room, client, .. } = &envelope.route else {
                        continue;
                    };
                    let key = (room.clone(), client.clone());
                    self.hold_or_bounce(envelope, &mut found).await;
                    if self.diverted.done(&key) {
                        found.remove(&key);
                    }
                }
                Some(Return::Reclaim) => self.reclaim_held().await,
                Some(Return::Stray { room, client }) => self.check_strays(room, client).await,
                Some(Return::Broadcast(envelope)) => self.hold_broadcast(envelope).await,
                None => return,
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

    async fn hold_or_bounce(&self, envelope: Envelope, found: &mut Found) {
        let Envelope {
            route: Route::Member { room, client, from },
            payload,
            stamp,
            ..
        } = envelope
        else {
            return;
        };
        let key = (room.clone(), client.clone());
        let mut moved: Option<NodeId> = None;
        for _ in 0..PLACE_ATTEMPTS {
            // Where the previous signal to the peer went, while they keep coming.
            let looked = match found.remove(&key) {
                Some(peer) => Ok(Some(peer)),
                None => self.presence.member(&room, &client).await,
            };
            let peer = match looked {
                Ok(Some(mut peer)) => {
                    if let Some(node) = moved.take() {
                        peer.node = node;
                    }
                    peer
                }
                Ok(None) => return self.tell(from, peer_not_found(&room, &client)),
                Err(_) => return self.tell(from, super::try_again()),
            };
            if peer.node == self.node {
                // Taken over by this node: it waits for the registration if need be.
                let Ok(frame) = Frame::try_from(payload) else {
                    return;
                };
                let origin = self.node.clone();
                return self.stray(origin, room, client, from, frame.stamped(stamp));
            }
            let route = Route::Member {
                room: room.clone(),
                client: client.clone(),
                from,
            };
            let topic = Topic::Node(peer.node.clone());
            if matches!(self.publish(&topic, route, payload.clone(), stamp).await, Ok(n) if n > 0) {
                found.insert(key, peer);
                return;
            }
            let Ok(text) = std::str::from_utf8(&payload) else {
                return;
            };
            match self.presence.hold(&peer, text).await {
                Ok(Hold::Held) => {
                    found.insert(key, peer);
                    return metrics::counter!(m::SIGNALS_HELD).increment(1);
                }
                Ok(Hold::Refused) => break,
                // Taken over since the lookup: the survivor's node takes it (and keeps it
                // until the session is registered there).
                Ok(Hold::Moved(node)) => moved = Some(node),
                Err(_) => return self.tell(from, super::try_again()),
            }
        }
        self.tell(from, peer_not_found(&room, &client));
    }

    /// Holds a room broadcast for the members of the room whose node no longer listens (a
    /// survivor takes their sessions over), or sends it on to where a takeover moved them.
    /// Nodes that listen got it; nobody is told anything.
    async fn hold_broadcast(&self, envelope: Envelope) {
        let Envelope {
            route: Route::Room { room, .. },
            payload,
            stamp,
            ..
        } = envelope
        else {
            return;
        };
        let seats = self.rosters.seats(&room);
        let Ok(text) = std::str::from_utf8(&payload) else {
            return;
        };
        for node in super::roster::nodes(&seats) {
            let probe = Envelope {
                origin: self.node.clone(),
                route: Route::Probe,
                payload: Bytes::new(),
                stamp: Stamp::NONE,
            };
            if !matches!(
                self.bus.publish(&Topic::Node(node.clone()), probe).await,
                Ok(0)
            ) {
                continue;
            }
            for seat in seats.iter().filter(|s| s.node == *node) {
                let Ok(Some(peer)) = self.presence.member(&room, &seat.client).await else {
                    continue;
                };
                let to = if peer.node == seat.node {
                    match self.presence.hold(&peer, text).await {
                        Ok(Hold::Held) => {
                            metrics::counter!(m::SIGNALS_HELD).increment(1);
                            continue;
                        }
                        Ok(Hold::Moved(node)) => node,
                        _ => continue,
                    }
                } else {
                    peer.node
                };
                // Taken over: a targeted copy to the member where it is now.
                let route = Route::Member {
                    room: room.clone(),
                    client: seat.client.clone(),
                    from: NOBODY,
                };
                if to == self.node {
                    // Registered here already, it heard the broadcast here.
                    if self.registry.member_conn(&room, &seat.client).is_some() {
                        continue;
                    }
                    if let Ok(frame) = Frame::try_from(payload.clone()) {
                        let origin = self.node.clone();
                        let client = seat.client.clone();
                        self.stray(origin, room.clone(), client, NOBODY, frame.stamped(stamp));
                    }
                } else {
                    let _ = self
                        .publish(&Topic::Node(to), route, payload.clone(), stamp)
                        .await;
                }
            }
        }
    }
}
