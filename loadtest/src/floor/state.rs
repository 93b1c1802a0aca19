//! The floor's rooms: who is in which room and how to reach them.
//!
//! Lock order is always the room map, then one room. Delivery is `try_send` into a bounded
//! outbox; a full outbox marks that connection for closing as a slow consumer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::payload::json_str;

/// Frames a connection may have queued before it is closed as a slow consumer.
pub const OUTBOX: usize = 256;

/// How to reach one connection.
#[derive(Clone)]
pub struct Peer {
    pub tx: mpsc::Sender<Utf8Bytes>,
    pub kick: CancellationToken,
}

impl Peer {
    pub fn deliver(&self, frame: Utf8Bytes) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(frame) {
            self.kick.cancel();
        }
    }
}

/// One authenticated connection, with its pre-rendered JSON pieces.
pub struct Me {
    pub client_id: String,
    /// `"from":..,"username":..,"user_id":..` for relayed frames.
    pub sender_fields: String,
    /// `"client_id":..,"username":..,"user_id":..` for presence events.
    pub user_fields: String,
    pub peer: Peer,
}

impl Me {
    /// The floor decodes no token: the client id doubles as user name and id.
    pub fn new(client_id: String, peer: Peer) -> Self {
        let id = json_str(&client_id);
        Self {
            sender_fields: format!(r#""from":{id},"username":{id},"user_id":{id}"#),
            user_fields: format!(r#""client_id":{id},"username":{id},"user_id":{id}"#),
            client_id,
            peer,
        }
    }
}

/// Members of one room by client id.
#[derive(Default)]
pub struct Room {
    members: HashMap<String, (Peer, Arc<str>)>,
}

pub type RoomRef = Arc<Mutex<Room>>;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Room {
    /// Deliver to `to`; false if no such member.
    pub fn send_to(&self, to: &str, frame: Utf8Bytes) -> bool {
        self.members
            .get(to)
            .map(|(p, _)| p.deliver(frame))
            .is_some()
    }

    /// Deliver to every member but `except`.
    pub fn broadcast(&self, except: &str, frame: &Utf8Bytes) {
        for (id, (peer, _)) in &self.members {
            if id != except {
                peer.deliver(frame.clone());
            }
        }
    }
}

/// All rooms of one floor process.
#[derive(Default)]
pub struct Floor {
    rooms: Mutex<HashMap<String, RoomRef>>,
}

impl Floor {
    /// Join `name`: tell `me` who is there, tell them `me` arrived.
    pub fn join(&self, name: &str, me: &Me) -> RoomRef {
        let mut rooms = lock(&self.rooms);
        let room = Arc::clone(rooms.entry(name.to_owned()).or_default());
        let mut r = lock(&room);
        let room_json = json_str(name);
        let users: Vec<&str> = r
            .members
            .iter()
            .filter(|(id, _)| **id != me.client_id)
            .map(|(_, (_, u))| &**u)
            .collect();
        let list = format!(
            r#"{{"type":"users_in_room","room":{room_json},"users":[{}]}}"#,
            users.join(",")
        );
        me.peer.deliver(list.into());
        let joined = Utf8Bytes::from(format!(
            r#"{{"type":"user_joined","room":{room_json},{}}}"#,
            me.user_fields
        ));
        r.broadcast(&me.client_id, &joined);
        let user: Arc<str> = format!("{{{}}}", me.user_fields).into();
        r.members
            .insert(me.client_id.clone(), (me.peer.clone(), user));
        drop(r);
        room
    }

    /// Leave `name` (if `me` is still the member there), tell the others, drop an empty room.
    pub fn leave(&self, name: &str, room: &RoomRef, me: &Me) {
        let mut rooms = lock(&self.rooms);
        let mut r = lock(room);
        let mine = r
            .members
            .get(&me.client_id)
            .is_some_and(|(p, _)| p.tx.same_channel(&me.peer.tx));
        if mine {
            r.members.remove(&me.client_id);
            let left = format!(
                r#"{{"type":"user_left","room":{},{}}}"#,
                json_str(name),
                me.user_fields
            );
            r.broadcast(&me.client_id, &left.into());
        }
        if r.members.is_empty() && rooms.get(name).is_some_and(|cur| Arc::ptr_eq(cur, room)) {
            rooms.remove(name);
        }
    }
}
