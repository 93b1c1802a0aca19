//! Presence writes over Redis, one method per step of the [`Presence`](crate::presence)
//! contract (removals in `removal.rs`, reads in `queries.rs`). Index entries (`conn` hash,
//! `node` set) are written *before* the state they index and removed *after* it, so whatever a
//! node holds is always reachable from its node set when a reaper comes for it.

use fred::clients::{Client, WithOptions};
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface, SetsInterface};
use fred::prelude::{Error as RedisError, FromValue};

use super::fast;
use super::mirror::Held;
use super::record;
use super::scripts::{Script, Scripts};
use crate::presence::{Joined, Resumable};
use crate::protocol::Member;
use crate::protocol::{ConnId, RoomId};
use crate::redis::Keys;

pub(super) type Result<T> = std::result::Result<T, RedisError>;

/// The outcome of a claim script.
pub enum Claimed {
    Fresh,
    Replaced(Member),
    Taken,
    /// Restoring: another connection took the client id meanwhile.
    Lost,
}

pub struct Store {
    pub client: Client,
    pub keys: Keys,
    pub scripts: Scripts,
    /// How long an empty room stays in the room index after its last join, in seconds (a join
    /// touches the index a moment before it reaches the room).
    pub room_grace_s: u64,
}

pub(super) fn room_field(room: &RoomId) -> String {
    format!("r:{room}")
}

impl Store {
    pub(super) fn cmd(&self) -> WithOptions<Client> {
        self.client.with_options(&fast())
    }

    /// Runs a script on one key.
    pub(super) async fn run<R: FromValue>(
        &self,
        script: &Script,
        key: String,
        args: Vec<String>,
    ) -> Result<R> {
        script.run(&self.client, vec![key], args).await
    }

    /// Claims `me.client_id` (for resumable `session`); indexes the connection first.
    pub async fn claim(
        &self,
        me: &Member,
        owner: &str,
        restore: bool,
        session: Option<&Resumable>,
    ) -> Result<Claimed> {
        let rec = record::encode(me, owner);
        self.index(me.conn, owner, &rec, &[], session).await?;
        let args = vec![
            me.user_id.to_string(),
            me.conn.0.to_string(),
            owner.to_owned(),
            rec,
            if restore { "1" } else { "0" }.to_owned(),
        ];
        let key = self.keys.client(&me.client_id);
        let reply: Vec<String> = self.run(&self.scripts.claim, key, args).await?;
        let claimed = match reply.first().map(String::as_str) {
            Some("replaced") => match reply.get(1).and_then(|r| record::member(r)) {
                Some(old) => Claimed::Replaced(old),
                None => Claimed::Fresh,
            },
            Some("taken") => Claimed::Taken,
            Some("lost") => Claimed::Lost,
            _ => Claimed::Fresh,
        };
        let devices = self.keys.devices(&me.user_id);
        match &claimed {
            Claimed::Taken | Claimed::Lost => {
                self.unindex(me.conn, owner).await?;
                if let Some(session) = session {
                    self.unname(&session.id, me.conn).await?;
                }
            }
            Claimed::Fresh | Claimed::Replaced(_) => {
                let _: i64 = self
                    .cmd()
                    .hset(&devices, vec![(me.conn.0.to_string(), owner.to_owned())])
                    .await?;
            }
        }
        if let Claimed::Replaced(old) = &claimed {
            // The same user's older connection no longer counts as a device.
            let _: i64 = self.cmd().hdel(&devices, old.conn.0.to_string()).await?;
        }
        Ok(claimed)
    }

    /// Adds the connection to the node's set and writes its hash (owner, record, rooms, and
    /// the resumable session it holds, which the session's key then names).
    async fn index(
        &self,
        conn: ConnId,
        owner: &str,
        rec: &str,
        rooms: &[RoomId],
        session: Option<&Resumable>,
    ) -> Result<()> {
        let mut fields = vec![
            ("o".to_owned(), owner.to_owned()),
            ("m".to_owned(), rec.to_owned()),
        ];
        fields.extend(rooms.iter().map(|r| (room_field(r), "1".to_owned())));
        if let Some(session) = session {
            fields.push(("s".to_owned(), session.id.clone()));
            fields.push(("b".to_owned(), session.record.clone()));
        }
        let cmd = self.cmd();
        let named = async {
            let Some(session) = session else {
                return Ok(0);
            };
            let field = vec![("c".to_owned(), conn.0.to_string())];
            cmd.hset::<i64, _, _>(self.keys.session(&session.id), field)
                .await
        };
        let (a, b, c) = tokio::join!(
            cmd.sadd::<i64, _, _>(self.keys.node(owner), conn.0.to_string()),
            cmd.hset::<i64, _, _>(self.keys.conn(conn), fields),
            named,
        );
        a.and(b).and(c).map(|_| ())
    }

    /// Drops the key of resumable session `id` if `conn` holds it.
    pub(super) async fn unname(&self, id: &str, conn: ConnId) -> Result<()> {
        let args = vec!["c".to_owned(), conn.0.to_string()];
        let _: i64 = self
            .run(&self.scripts.del_if, self.keys.session(id), args)
            .await?;
        Ok(())
    }

    async fn unindex(&self, conn: ConnId, owner: &str) -> Result<()> {
        let cmd = self.cmd();
        let _: i64 = cmd.del(self.keys.conn(conn)).await?;
        let _: i64 = cmd.srem(self.keys.node(owner), conn.0.to_string()).await?;
        Ok(())
    }

    /// Joins `room`; with the join sequence number the member holds (0 when full).
    pub async fn join(
        &self,
        room: &RoomId,
        me: &Member,
        owner: &str,
        cap: usize,
    ) -> Result<(Joined, u64)> {
        let rec = record::encode(me, owner);
        let (indexed, touched) = tokio::join!(
            self.index(me.conn, owner, &rec, std::slice::from_ref(room), None),
            self.touch(room),
        );
        indexed?;
        touched?;
        let args = vec![
            rec,
            me.conn.0.to_string(),
            me.client_id.to_string(),
            cap.to_string(),
        ];
        let reply: Vec<String> = self
            .run(&self.scripts.join, self.keys.room(room), args)
            .await?;
        let seq = reply
            .get(1)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        let others = || {
            reply
                .iter()
                .skip(2)
                .filter_map(|r| record::member(r))
                .collect()
        };
        Ok(match reply.first().map(String::as_str) {
            Some("already") => (Joined::Already(others()), seq),
            Some("joined") => (Joined::Joined(others()), seq),
            _ => {
                let _: i64 = self
                    .cmd()
                    .hdel(self.keys.conn(me.conn), room_field(room))
                    .await?;
                (Joined::Full, 0)
            }
        })
    }

    /// Writes a live local connection back: index, claim, device, memberships. `false` when
    /// another connection took its client id meanwhile.
    pub async fn restore(&self, held: &Held, owner: &str) -> Result<bool> {
        let member = &held.member;
        let rec = record::encode(member, owner);
        let rooms: Vec<RoomId> = held.rooms.iter().map(|(room, _)| room.clone()).collect();
        let session = held.session.as_ref();
        self.index(member.conn, owner, &rec, &rooms, session)
            .await?;
        if matches!(
            self.claim(member, owner, true, session).await?,
            Claimed::Lost
        ) {
            return Ok(false);
        }
        for (room, seq) in &held.rooms {
            self.touch(room).await?;
            let args = vec![rec.clone(), member.conn.0.to_string(), seq.to_string()];
            let _: i64 = self
                .run(&self.scripts.restore_room, self.keys.room(room), args)
                .await?;
        }
        Ok(true)
    }

    /// Marks `room` in the room index as possibly non-empty.
    async fn touch(&self, room: &RoomId) -> Result<()> {
        let _: i64 = self
            .run(
                &self.scripts.touch_room,
                self.keys.rooms(),
                vec![room.to_string()],
            )
            .await?;
        Ok(())
    }
}
