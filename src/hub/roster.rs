//! Rosters: for each room this node has a local member in (or a join under way), where the
//! room's *other* members are — which node holds each one, on which connection. A targeted
//! signal to a member on another node goes straight to that node's topic, with no Redis read on
//! the way.
//!
//! A roster is a cache of presence, kept current by the room's own traffic: opened when a local
//! join starts (so that announcements racing the join are not missed), merged with the
//! snapshot the join returns, and updated by the `Joined`/`Left` envelopes every node
//! subscribed to the room receives. It can be wrong in two ways, both repaired by the hub: it
//! may lack a member (the hub then asks presence and re-seeds the room), or name one that is
//! gone (the node it names bounces the signal, and the seat goes).

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::protocol::Member;
use crate::protocol::{ClientId, ConnId, NodeId, RoomId};

/// A member on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub client: ClientId,
    pub conn: ConnId,
    pub node: NodeId,
}

/// The nodes `seats` are on, each once.
pub fn nodes(seats: &[Seat]) -> Vec<&NodeId> {
    let mut nodes: Vec<&NodeId> = Vec::new();
    for seat in seats {
        if !nodes.contains(&&seat.node) {
            nodes.push(&seat.node);
        }
    }
    nodes
}

impl Seat {
    fn of(member: &Member) -> Self {
        Self {
            client: member.client_id.clone(),
            conn: member.conn,
            node: member.node.clone(),
        }
    }
}

pub struct Rosters {
    node: NodeId,
    rooms: RwLock<HashMap<RoomId, Vec<Seat>>>,
}

impl Rosters {
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            rooms: RwLock::default(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<RoomId, Vec<Seat>>> {
        self.rooms.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<RoomId, Vec<Seat>>> {
        self.rooms.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The node that holds `client` in `room`, as far as this node knows.
    pub fn locate(&self, room: &RoomId, client: &ClientId) -> Option<NodeId> {
        let rooms = self.read();
        let seats = rooms.get(room)?;
        let seat = seats.iter().find(|s| s.client == *client)?;
        Some(seat.node.clone())
    }

    /// The connection that holds `client` in `room`, as far as this node knows.
    pub fn conn_of(&self, room: &RoomId, client: &ClientId) -> Option<ConnId> {
        let rooms = self.read();
        let seat = rooms.get(room)?.iter().find(|s| s.client == *client)?;
        Some(seat.conn)
    }

    /// Starts keeping `room`'s roster (a local join began). Idempotent.
    pub fn open(&self, room: &RoomId) {
        if !self.read().contains_key(room) {
            self.write().entry(room.clone()).or_default();
        }
    }

    /// Stops keeping `room`'s roster (no local member is left).
    pub fn close(&self, room: &RoomId) {
        self.write().remove(room);
    }

    /// Adds the members of a join's snapshot that the roster does not know yet.
    pub fn merge(&self, room: &RoomId, members: &[Member]) {
        let mut rooms = self.write();
        let Some(seats) = rooms.get_mut(room) else {
            return;
        };
        for member in members.iter().filter(|m| m.node != self.node) {
            if !seats.iter().any(|s| s.client == member.client_id) {
                seats.push(Seat::of(member));
            }
        }
    }

    /// Replaces what the roster knows of `room` with a fresh presence snapshot.
    pub fn reseed(&self, room: &RoomId, members: &[Member]) {
        let mut rooms = self.write();
        if let Some(seats) = rooms.get_mut(room) {
            *seats = members
                .iter()
                .filter(|m| m.node != self.node)
                .map(Seat::of)
                .collect();
        }
    }

    /// A member joined on another node; it replaces an older seat of the same client.
    pub fn seat(&self, room: &RoomId, seat: Seat) {
        if seat.node == self.node {
            return;
        }
        let mut rooms = self.write();
        let Some(seats) = rooms.get_mut(room) else {
            return;
        };
        match seats.iter_mut().find(|s| s.client == seat.client) {
            Some(old) => *old = seat,
            None => seats.push(seat),
        }
    }

    /// Connection `conn` left `room`.
    pub fn unseat(&self, room: &RoomId, conn: ConnId) {
        if let Some(seats) = self.write().get_mut(room) {
            seats.retain(|s| s.conn != conn);
        }
    }

    /// `client` was not found where the roster said: drops its seat, if it still names `node`
    /// (any node when `None`).
    pub fn unseat_missing(&self, room: &RoomId, client: &ClientId, node: Option<&NodeId>) {
        if let Some(seats) = self.write().get_mut(room) {
            seats.retain(|s| s.client != *client || node.is_some_and(|n| s.node != *n));
        }
    }

    /// The other members of `room` as far as this node knows.
    pub fn seats(&self, room: &RoomId) -> Vec<Seat> {
        self.read().get(room).cloned().unwrap_or_default()
    }

    /// How many other nodes hold members of `room`, as far as this node knows.
    pub fn nodes_of(&self, room: &RoomId) -> usize {
        self.read().get(room).map_or(0, |seats| nodes(seats).len())
    }

    /// Rooms with a roster.
    pub fn rooms(&self) -> usize {
        self.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::UserId;

    fn member(client: &str, conn: u64, node: &str) -> Member {
        Member {
            client_id: ClientId::parse(client).unwrap(),
            user_id: UserId::parse("u").unwrap(),
            username: "U".into(),
            conn: ConnId(conn),
            node: NodeId::parse(node).unwrap(),
        }
    }

    fn setup() -> (Rosters, RoomId, ClientId) {
        let rosters = Rosters::new(NodeId::parse("me").unwrap());
        let room = RoomId::parse("r").unwrap();
        rosters.open(&room);
        (rosters, room, ClientId::parse("b").unwrap())
    }

    fn node(s: &str) -> Option<NodeId> {
        Some(NodeId::parse(s).unwrap())
    }

    #[test]
    fn only_open_rooms_and_other_nodes_are_kept() {
        let (rosters, room, b) = setup();
        let other = RoomId::parse("other").unwrap();
        rosters.merge(&other, &[member("b", 1, "n2")]);
        assert_eq!(rosters.locate(&other, &b), None);
        rosters.merge(&room, &[member("a", 9, "me"), member("b", 1, "n2")]);
        assert_eq!(rosters.locate(&room, &ClientId::parse("a").unwrap()), None);
        assert_eq!(rosters.locate(&room, &b), node("n2"));
        rosters.close(&room);
        assert_eq!(rosters.locate(&room, &b), None);
        assert_eq!(rosters.rooms(), 0);
    }

    #[test]
    fn events_win_over_snapshots_and_leaves_match_the_connection() {
        let (rosters, room, b) = setup();
        // b moved to n3 (a takeover) before the snapshot from n2 was merged.
        rosters.seat(&room, Seat::of(&member("b", 2, "n3")));
        rosters.merge(&room, &[member("b", 1, "n2")]);
        assert_eq!(rosters.locate(&room, &b), node("n3"));
        // The old connection's departure does not remove the new seat.
        rosters.unseat(&room, ConnId(1));
        assert_eq!(rosters.locate(&room, &b), node("n3"));
        rosters.unseat(&room, ConnId(2));
        assert_eq!(rosters.locate(&room, &b), None);
    }

    #[test]
    fn bounces_and_reseeds_repair_the_roster() {
        let (rosters, room, b) = setup();
        rosters.seat(&room, Seat::of(&member("b", 1, "n2")));
        rosters.unseat_missing(&room, &b, node("n9").as_ref());
        assert_eq!(rosters.locate(&room, &b), node("n2"), "a stale bounce");
        rosters.unseat_missing(&room, &b, node("n2").as_ref());
        assert_eq!(rosters.locate(&room, &b), None);
        rosters.reseed(&room, &[member("b", 3, "n4"), member("c", 4, "n2")]);
        assert_eq!(rosters.locate(&room, &b), node("n4"));
        rosters.unseat_missing(&room, &b, None);
        assert_eq!(rosters.locate(&room, &b), None);
    }
}
