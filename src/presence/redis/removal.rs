//! Removing a connection's entries: on eviction (everything of the connection), for a reaper
//! or a reconciliation (only what one incarnation still owns), and stale memberships of a live
//! connection.

use std::collections::HashMap;

use fred::interfaces::{HashesInterface, KeysInterface, SetsInterface};
use futures_util::future::try_join_all;

use super::mirror::Held;
use super::record;
use super::store::{Result, Store, room_field};
use crate::protocol::Member;
use crate::protocol::{ConnId, RoomId};

impl Store {
    /// Removes `conn` from `room` (only if `owner` holds it, when given); returns its record.
    pub(super) async fn leave_room(
        &self,
        room: &RoomId,
        conn: ConnId,
        owner: Option<&str>,
    ) -> Result<Option<Member>> {
        let args = vec![conn.0.to_string(), owner.unwrap_or_default().to_owned()];
        let removed: Option<String> = self
            .run(&self.scripts.leave, self.keys.room(room), args)
            .await?;
        Ok(removed.as_deref().and_then(record::member))
    }

    pub async fn leave(&self, room: &RoomId, conn: ConnId) -> Result<bool> {
        let removed = self.leave_room(room, conn, None).await?;
        let _: i64 = self
            .cmd()
            .hdel(self.keys.conn(conn), room_field(room))
            .await?;
        Ok(removed.is_some())
    }

    /// Removes a connection's memberships, claim, device entry and index entries. With
    /// `owner`, only what that incarnation still holds (a reaper); without, everything of the
    /// connection (an eviction). Returns the memberships removed.
    pub async fn remove_conn(
        &self,
        conn: ConnId,
        owner: Option<&str>,
        known: Option<&Member>,
    ) -> Result<Vec<(RoomId, Member)>> {
        let key = self.keys.conn(conn);
        let held: HashMap<String, String> = self.cmd().hgetall(&key).await?;
        let recorded = held.get("o").map(String::as_str);
        if owner.is_some() && recorded != owner {
            return Ok(Vec::new());
        }
        let Some(member) = held
            .get("m")
            .and_then(|m| record::member(m))
            .or_else(|| known.cloned())
        else {
            let _: i64 = self.cmd().del(&key).await?;
            return Ok(Vec::new());
        };
        let rooms: Vec<RoomId> = held
            .keys()
            .filter_map(|f| f.strip_prefix("r:"))
            .filter_map(|r| RoomId::parse(r).ok())
            .collect();
        let removed =
            try_join_all(rooms.iter().map(|room| self.leave_room(room, conn, owner))).await?;
        let gone = rooms
            .into_iter()
            .zip(removed)
            .filter_map(|(room, rec)| rec.map(|m| (room, m)))
            .collect();
        self.drop_conn_keys(&member, owner, recorded).await?;
        if let Some(session) = held.get("s") {
            self.unname(session, conn).await?;
        }
        Ok(gone)
    }

    async fn drop_conn_keys(
        &self,
        member: &Member,
        owner: Option<&str>,
        recorded: Option<&str>,
    ) -> Result<()> {
        let conn = member.conn.0.to_string();
        let args = vec![conn.clone(), owner.unwrap_or_default().to_owned()];
        let key = self.keys.client(&member.client_id);
        let _: i64 = self.run(&self.scripts.unclaim, key, args).await?;
        let devices = self.keys.devices(&member.user_id);
        let key = self.keys.conn(member.conn);
        match owner {
            Some(owner) => {
                let args = vec![conn.clone(), owner.to_owned()];
                let _: i64 = self.run(&self.scripts.hdel_if, devices, args).await?;
                let args = vec!["o".to_owned(), owner.to_owned()];
                let _: i64 = self.run(&self.scripts.del_if, key, args).await?;
            }
            None => {
                let _: i64 = self.cmd().hdel(devices, conn.clone()).await?;
                let _: i64 = self.cmd().del(key).await?;
            }
        }
        if let Some(recorded) = recorded {
            let _: i64 = self.cmd().srem(self.keys.node(recorded), conn).await?;
        }
        Ok(())
    }

    /// Removes memberships Redis holds for a local connection that the mirror no longer has.
    pub async fn purge_rooms(&self, held: &Held) -> Result<Vec<(RoomId, Member)>> {
        let fields: Vec<String> = self.cmd().hkeys(self.keys.conn(held.member.conn)).await?;
        let stale: Vec<RoomId> = fields
            .iter()
            .filter_map(|f| f.strip_prefix("r:"))
            .filter_map(|r| RoomId::parse(r).ok())
            .filter(|r| !held.holds(r))
            .collect();
        let mut gone = Vec::new();
        for room in stale {
            if self.leave(&room, held.member.conn).await? {
                gone.push((room, held.member.clone()));
            }
        }
        Ok(gone)
    }
}
