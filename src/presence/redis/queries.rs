//! Presence reads over Redis.

use fred::interfaces::{ClientLike, HashesInterface, SortedSetsInterface};
use futures_util::future::{join_all, try_join_all};

use super::record;
use super::store::{Result, Store};
use crate::presence::RoomSummary;
use crate::protocol::Member;
use crate::protocol::{RoomId, UserId};

/// How long an empty room stays in the room index after its last join, in seconds (a join
/// touches the index before it reaches the room).
const ROOM_INDEX_GRACE_S: u64 = 60;

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
        let grace = ROOM_INDEX_GRACE_S.to_string();
        join_all(empty.iter().map(|room| {
            let args = vec![room.to_string(), grace.clone()];
            self.scripts
                .forget_room
                .run::<i64>(&self.client, vec![self.keys.rooms()], args)
        }))
        .await;
        summaries.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(summaries)
    }

    pub async fn devices(&self, user: &UserId) -> Result<usize> {
        let n: i64 = self.cmd().hlen(self.keys.devices(user)).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub async fn ping(&self) -> Result<()> {
        let _: fred::prelude::Value = self.cmd().ping(None).await?;
        Ok(())
    }
}
