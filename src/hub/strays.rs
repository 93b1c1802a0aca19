//! Signals that reach this node for a session it is taking over from a dead node. Presence
//! points at this node (the takeover script ran) a moment before the hub registers the session,
//! and the other nodes route its signals here at once: such a signal waits here for the
//! registration, in order, instead of being answered `peer_not_found`.
//!
//! A targeted signal for a client not registered here becomes a *stray*: it waits while
//! presence says the client's connection is on this node, and goes into the session's outbox,
//! before anything newer, when [`Hub::adopt`] registers it. A client that presence does not
//! place here, or a takeover that never completes (within [`STRAY_WAIT`]), is answered
//! `peer_not_found` as before. Only where sessions outlive their node (a cluster with Redis
//! presence); elsewhere a miss is answered at once.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Hub;
use super::relay::peer_not_found;
use super::returns::Return;
use crate::protocol::{ClientId, ConnId, Frame, NodeId, RoomId};
use crate::registry::ConnHandle;

/// How long a stray waits for its session's takeover to complete; past it, its sender is told
/// `peer_not_found`. A takeover registers its sessions milliseconds after presence names this
/// node.
pub(super) const STRAY_WAIT: Duration = Duration::from_secs(10);

/// The sender of a room broadcast's copy for one member (a broadcast held for the members of a
/// node that died): its sender is not told when the copy finds nobody.
pub(super) const NOBODY: ConnId = ConnId(0);

/// One signal waiting for its session.
struct Stray {
    frame: Frame,
    room: RoomId,
    /// The sending connection and its node, to tell if the session never comes.
    from: ConnId,
    origin: NodeId,
}

struct Waiting {
    since: Instant,
    frames: Vec<Stray>,
}

/// The strays of this node, per client.
#[derive(Default)]
pub(super) struct Strays(Mutex<HashMap<ClientId, Waiting>>);

impl Strays {
    fn lock(&self) -> MutexGuard<'_, HashMap<ClientId, Waiting>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Hub {
    /// A targeted signal for `client` in `room` that no local connection took. Where sessions
    /// outlive their node it waits (see the module); otherwise its sender is told.
    pub(super) fn stray(
        &self,
        origin: NodeId,
        room: RoomId,
        client: ClientId,
        from: ConnId,
        frame: Frame,
    ) {
        if !self.presence.outlives_nodes() {
            return self.refuse(&origin, room, client, from);
        }
        let mut waiting = self.strays.lock();
        // Registered meanwhile (the registration holds this lock): delivered in order.
        let frame = match self.registry.deliver_client(&client, Some(&room), frame) {
            Ok(()) => return,
            Err(frame) => frame,
        };
        let stray = Stray {
            frame,
            room: room.clone(),
            from,
            origin,
        };
        if let Some(w) = waiting.get_mut(&client) {
            w.frames.push(stray);
            return;
        }
        waiting.insert(
            client.clone(),
            Waiting {
                since: Instant::now(),
                frames: vec![stray],
            },
        );
        drop(waiting);
        let _ = self.returns.send(Return::Stray { room, client });
    }

    /// Whether `client`'s strays may go on waiting: presence places its connection in `room`
    /// on this node. Otherwise their senders are told.
    pub(super) async fn check_strays(&self, room: RoomId, client: ClientId) {
        let here = match self.presence.member(&room, &client).await {
            Ok(Some(peer)) if peer.node == self.node => true,
            // Taken over by this node, its seat not rewritten yet.
            Ok(Some(peer)) => {
                let owner = self.presence.conn_node(peer.conn).await;
                owner.is_ok_and(|node| node.as_ref() == Some(&self.node))
            }
            _ => false,
        };
        if !here {
            let gone = self.strays.lock().remove(&client);
            self.refuse_all(client, gone);
        }
    }

    /// Tells the senders of strays that waited longer than [`STRAY_WAIT`].
    pub(super) fn sweep_strays(&self) {
        let now = Instant::now();
        let expired: Vec<_> = {
            let mut waiting = self.strays.lock();
            let old: Vec<ClientId> = waiting
                .iter()
                .filter(|(_, w)| now.duration_since(w.since) >= STRAY_WAIT)
                .map(|(c, _)| c.clone())
                .collect();
            old.into_iter()
                .filter_map(|c| waiting.remove(&c).map(|w| (c, w)))
                .collect()
        };
        for (client, w) in expired {
            self.refuse_all(client, Some(w));
        }
    }

    /// Registers the session `handle` taken over from a dead node, with its rooms: the strays
    /// that waited for it go into its outbox first, and no signal can slip between them and the
    /// registration.
    pub(super) fn register_adopted(&self, handle: ConnHandle, rooms: &[RoomId]) {
        let (conn, client) = (handle.conn, handle.client.clone());
        let mut waiting = self.strays.lock();
        let mut refused = Vec::new();
        for stray in waiting.remove(&client).into_iter().flat_map(|w| w.frames) {
            let Stray {
                frame,
                room,
                from,
                origin,
            } = stray;
            // Only for the rooms it holds, as a delivery checks.
            if !rooms.contains(&room) || handle.outbox.try_send(frame).is_err() {
                refused.push((origin, room, from));
            }
        }
        self.registry.insert(handle);
        for room in rooms {
            self.registry.join(room, conn);
        }
        drop(waiting);
        for (origin, room, from) in refused {
            self.refuse(&origin, room, client.clone(), from);
        }
    }

    fn refuse_all(&self, client: ClientId, waiting: Option<Waiting>) {
        for stray in waiting.into_iter().flat_map(|w| w.frames) {
            self.refuse(&stray.origin, stray.room, client.clone(), stray.from);
        }
    }

    /// Tells the sender `from` on node `origin` that `client` is not in `room` (nobody, for a
    /// copy of a room broadcast: [`NOBODY`]).
    fn refuse(&self, origin: &NodeId, room: RoomId, client: ClientId, from: ConnId) {
        if from == NOBODY {
            return;
        }
        if *origin == self.node {
            self.rosters.unseat_missing(&room, &client, None);
            self.tell(from, peer_not_found(&room, &client));
        } else {
            self.bounce(origin.clone(), room, client, from);
        }
    }
}
