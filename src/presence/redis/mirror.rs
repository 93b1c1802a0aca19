//! What this node holds in Redis, kept locally: its connections' claims and memberships. After
//! Redis lost them (a restart) or they drifted (a write that failed half-way), the node writes
//! them back from here and removes what it no longer holds.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::presence::Resumable;
use crate::protocol::Member;
use crate::protocol::{ConnId, RoomId};

/// A local connection with a claim, and its rooms with the join sequence number each gave it.
#[derive(Debug, Clone)]
pub struct Held {
    pub member: Member,
    pub rooms: Vec<(RoomId, u64)>,
    /// The resumable session it holds, if any.
    pub session: Option<Resumable>,
}

impl Held {
    pub fn holds(&self, room: &RoomId) -> bool {
        self.rooms.iter().any(|(r, _)| r == room)
    }
}

#[derive(Default)]
pub struct Mirror {
    conns: Mutex<HashMap<ConnId, Held>>,
}

impl Mirror {
    fn lock(&self) -> MutexGuard<'_, HashMap<ConnId, Held>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn claimed(&self, member: &Member, session: Option<&Resumable>) {
        self.lock().entry(member.conn).or_insert_with(|| Held {
            member: member.clone(),
            rooms: Vec::new(),
            session: session.cloned(),
        });
    }

    /// Holds a connection taken over from a dead node.
    pub fn adopted(&self, held: Held) {
        self.lock().insert(held.member.conn, held);
    }

    pub fn joined(&self, conn: ConnId, room: &RoomId, seq: u64) {
        if let Some(held) = self.lock().get_mut(&conn)
            && !held.holds(room)
        {
            held.rooms.push((room.clone(), seq));
        }
    }

    pub fn left(&self, conn: ConnId, room: &RoomId) {
        if let Some(held) = self.lock().get_mut(&conn) {
            held.rooms.retain(|(r, _)| r != room);
        }
    }

    /// Forgets a connection; returns what it held.
    pub fn evicted(&self, conn: ConnId) -> Option<Held> {
        self.lock().remove(&conn)
    }

    /// Forgets every connection; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut conns = self.lock();
        let held = conns.len();
        conns.clear();
        held
    }

    pub fn snapshot(&self) -> Vec<Held> {
        self.lock().values().cloned().collect()
    }
}
