//! Presence reads over Redis.

use fred::interfaces::{
    ClientLike, HashesInterface, KeysInterface, ListInterface, SortedSetsInterface,
};
use futures_util::future::{join_all, try_join_all};

use super::record;
use super::store::{Result, Store};
use crate::presence::RoomSummary;
use crate::protocol::Member;
use crate::protocol::{ConnId, RoomId, UserId};

/// Frames held at most for one session whose node died.
pub const HELD_FRAMES: usize = 256;
/// Bytes of frames held at most for one session whose node died.
pub const HELD_BYTES: usize = 1024 * 1024;

/// How long an empty room stays in the room index after its last join, in seconds (a join
/// touches the index a moment before it reaches the room).
pub const ROOM_INDEX_GRACE_S: u64 = 10;

impl Store {
    pub async fn members(&self, room: &RoomId) -> Result<Vec<Member>> {
        let recs: Vec<String> = self
            .cmd()
            .zrange(self.keys.room(room), 0, -1, None, false, None, false)
            .await?;
        Ok(recs.iter().filter_map(|r| record::member(r)).collect())
    }

    /// Every non-empty room; drops rooms from the index that stayed empty past the grace.
    pub async fn rooms(&self) -> Result<Vec<RoomSummary>> {
        let names: Vec<String> = self
            .cmd()
            .zrange(self.keys.rooms(), 0, -1, None, false, None, false)
            .await?;
        let rooms: Vec<RoomId> = names.iter().filter_map(|r| RoomId::parse(r).ok()).collect();
        let cmd = self.cmd();
        let counts =
            try_join_all(rooms.iter().map(|r| cmd.zcard::<i64, _>(self.keys.room(r)))).await?;
        let mut summaries = Vec::new();
        let mut empty = Vec::new();
        for (room, count) in rooms.into_iter().zip(counts) {
            match usize::try_from(count) {
                Ok(members) if members > 0 => summaries.push(RoomSummary { room, members }),
                _ => empty.push(room),
            }
        }
        self.forget_rooms(&empty).await;
        summaries.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(summaries)
    }

    /// Drops `rooms` (found empty) from the index, each unless a join touched it within the
    /// grace. Best effort: what stays is dropped by a later sweep.
    async fn forget_rooms(&self, rooms: &[RoomId]) -> usize {
        let grace = self.room_grace_s.to_string();
        let forgotten = join_all(rooms.iter().map(|room| {
            let args = vec![room.to_string(), grace.clone()];
            self.scripts
                .forget_room
                .run::<i64>(&self.client, vec![self.keys.rooms()], args)
        }))
        .await;
        forgotten.into_iter().filter(|f| matches!(f, Ok(1))).count()
    }

    /// Checks `batch` entries of the room index from position `from` and drops the empty ones
    /// past the grace; returns where the next sweep starts (0 after the end). Run by every node
    /// each lease period, so rooms that emptied are dropped even when nobody lists them, and
    /// the index holds the rooms with members plus those emptied within a few periods.
    pub async fn sweep_rooms(&self, from: usize, batch: usize) -> Result<(usize, usize)> {
        let end = i64::try_from(from + batch - 1).unwrap_or(i64::MAX);
        let start = i64::try_from(from).unwrap_or(0);
        let names: Vec<String> = self
            .cmd()
            .zrange(self.keys.rooms(), start, end, None, false, None, false)
            .await?;
        let rooms: Vec<RoomId> = names.iter().filter_map(|r| RoomId::parse(r).ok()).collect();
        let cmd = self.cmd();
        let counts =
            try_join_all(rooms.iter().map(|r| cmd.zcard::<i64, _>(self.keys.room(r)))).await?;
        let empty: Vec<RoomId> = rooms
            .into_iter()
            .zip(counts)
            .filter(|(_, n)| *n == 0)
            .map(|(room, _)| room)
            .collect();
        let forgotten = self.forget_rooms(&empty).await;
        let next = if names.len() < batch {
            0
        } else {
            from + batch - forgotten
        };
        Ok((next, forgotten))
    }

    pub async fn devices(&self, user: &UserId) -> Result<usize> {
        let n: i64 = self.cmd().hlen(self.keys.devices(user)).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// [`Presence::hold`](crate::presence::Presence::hold): at most [`HELD_FRAMES`] per
    /// connection, kept for `ttl`.
    pub async fn hold(
        &self,
        member: &Member,
        frame: &str,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let owner = format!("{}/", member.node);
        self.hold_for(member.conn, &owner, frame, ttl).await
    }

    /// [`Store::hold`] for every connection of `user` its device entries name, each while the
    /// incarnation there still owns it; returns for how many it was held.
    pub async fn hold_user(
        &self,
        user: &UserId,
        frame: &str,
        ttl: std::time::Duration,
    ) -> Result<usize> {
        let devices: std::collections::HashMap<String, String> =
            self.cmd().hgetall(self.keys.devices(user)).await?;
        let mut held = 0;
        for (conn, owner) in devices {
            let Ok(conn) = conn.parse() else { continue };
            if self.hold_for(ConnId(conn), &owner, frame, ttl).await? {
                held += 1;
            }
        }
        Ok(held)
    }

    /// Takes (reads and drops) what is held for `conn`.
    pub async fn take_held(&self, conn: ConnId) -> Result<Vec<String>> {
        let key = self.keys.held(conn);
        let held: Vec<String> = self.cmd().lrange(&key, 0, -1).await?;
        if !held.is_empty() {
            let _: () = self.cmd().ltrim(&key, held.len() as i64, -1).await?;
            let _: i64 = self
                .cmd()
                .hdel(self.keys.conn(conn), vec!["hb", "ov"])
                .await?;
        }
        Ok(held)
    }

    /// Holds `frame` for `conn` while the owner its hash names starts with `owner`.
    async fn hold_for(
        &self,
        conn: ConnId,
        owner: &str,
        frame: &str,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let keys = vec![self.keys.conn(conn), self.keys.held(conn)];
        let args = vec![
            owner.to_owned(),
            frame.to_owned(),
            HELD_FRAMES.to_string(),
            ttl.as_millis().to_string(),
            HELD_BYTES.to_string(),
        ];
        let held: i64 = self
            .scripts
            .hold_frame
            .run(&self.client, keys, args)
            .await?;
        Ok(held == 1)
    }

    /// The incarnation that owns connection `conn`'s entries, if any.
    pub async fn conn_owner(&self, conn: ConnId) -> Result<Option<String>> {
        self.cmd().hget(self.keys.conn(conn), "o").await
    }

    /// The connection holding `me`'s client id, if any.
    pub async fn claim_holder(&self, me: &Member) -> Result<Option<ConnId>> {
        let k: Option<String> = self
            .cmd()
            .hget(self.keys.client(&me.client_id), "k")
            .await?;
        Ok(k.and_then(|k| k.parse().ok()).map(ConnId))
    }

    /// Whether a connection holds resumable session `id`.
    pub async fn session_named(&self, id: &str) -> Result<bool> {
        let n: i64 = self.cmd().exists(self.keys.session(id)).await?;
        Ok(n > 0)
    }

    pub async fn ping(&self) -> Result<()> {
        let _: fred::prelude::Value = self.cmd().ping(None).await?;
        Ok(())
    }
}
