//! Taking over the resumable sessions of a dead incarnation: instead of removing a connection
//! that holds one, the reaper writes it back under its own incarnation (client id, seats,
//! device entry, the session's record) and holds it, so that nobody sees the member leave and
//! its client can resume the session on any node ([`Reaped::adopted`]).
//!
//! The takeover of each connection is atomic ([`TAKE_OVER`](super::scripts)): of two reapers
//! that both came to a dead incarnation (a reaping deadline passed), one takes a session. The
//! connection is indexed under the new incarnation first, so a reaper that dies half-way leaves
//! it reachable. Seats are rewritten in place and only where the room still holds the
//! connection.
//!
//! [`Reaped::adopted`]: crate::presence::Reaped::adopted

use std::collections::HashMap;

use fred::interfaces::{HashesInterface, SetsInterface};
use fred::prelude::Error as RedisError;

use super::mirror::Held;
use super::store::{Claimed, room_field};
use super::{RedisPresence, record};
use crate::presence::{Adopted, Resumable};
use crate::protocol::{ConnId, Member, RoomId};

type Gone = Vec<(RoomId, Member)>;

/// What became of one connection of a dead incarnation.
pub(super) enum Adoption {
    /// Not to be taken over: no resumable session, or another reaper has it.
    Skipped,
    Adopted(Adopted),
    /// Its client id went to another connection meanwhile: its seats were removed.
    Removed(Gone),
}

impl RedisPresence {
    /// Takes over `conn` of dead incarnation `dead` when it holds a resumable session and
    /// still holds its client id.
    pub(super) async fn adopt(&self, conn: ConnId, dead: &str) -> Result<Adoption, RedisError> {
        let store = &self.store;
        let key = store.keys.conn(conn);
        let fields: HashMap<String, String> = store.cmd().hgetall(&key).await?;
        if fields.get("o").map(String::as_str) != Some(dead) {
            return Ok(Adoption::Skipped);
        }
        let (Some(rec), Some(id), Some(session)) =
            (fields.get("m"), fields.get("s"), fields.get("b"))
        else {
            return Ok(Adoption::Skipped);
        };
        let Some(mut member) = record::member(rec) else {
            return Ok(Adoption::Skipped);
        };
        member.node = self.node.clone();
        let rooms: Vec<RoomId> = fields
            .keys()
            .filter_map(|f| f.strip_prefix("r:"))
            .filter_map(|r| RoomId::parse(r).ok())
            .collect();
        let session = Resumable {
            id: id.clone(),
            record: session.clone(),
        };
        let _gate = self.gate.read().await;
        let owner = self.owner();
        let rec = record::encode(&member, &owner);
        let node_set = store.keys.node(&owner);
        let _: i64 = store.cmd().sadd(&node_set, conn.0.to_string()).await?;
        let args = vec![dead.to_owned(), owner.clone(), rec.clone()];
        let keys = vec![key.clone(), store.keys.held(conn)];
        let taken: Vec<String> = store
            .scripts
            .take_over
            .run(&store.client, keys, args)
            .await?;
        if taken.first().is_none_or(|t| t != "1") {
            let _: i64 = store.cmd().srem(&node_set, conn.0.to_string()).await?;
            return Ok(Adoption::Skipped);
        }
        if let Claimed::Lost = store.claim(&member, &owner, true, Some(&session)).await? {
            // Another connection took the client id: the seats and the device entry go (the
            // claim dropped the rest).
            let devices = store.keys.devices(&member.user_id);
            let _: i64 = store.cmd().hdel(devices, conn.0.to_string()).await?;
            let mut gone = Vec::new();
            for room in rooms {
                if let Some(m) = store.leave_room(&room, conn, None).await? {
                    gone.push((room, m));
                }
            }
            return Ok(Adoption::Removed(gone));
        }
        let mut held = Held {
            member: member.clone(),
            rooms: Vec::new(),
            session: Some(session.clone()),
        };
        for room in rooms {
            let args = vec![rec.clone(), conn.0.to_string(), String::new()];
            let seq: i64 = store
                .run(&store.scripts.restore_room, store.keys.room(&room), args)
                .await?;
            match u64::try_from(seq) {
                Ok(seq) => held.rooms.push((room, seq)),
                Err(_) => {
                    let _: i64 = store.cmd().hdel(&key, room_field(&room)).await?;
                }
            }
        }
        let rooms = held.rooms.iter().map(|(r, _)| r.clone()).collect();
        self.mirror.adopted(held);
        let mut taken = taken.into_iter().skip(1);
        let overflowed = taken.next().is_some_and(|o| o == "1");
        Ok(Adoption::Adopted(Adopted {
            member,
            rooms,
            session,
            held: taken.collect(),
            overflowed,
        }))
    }
}
