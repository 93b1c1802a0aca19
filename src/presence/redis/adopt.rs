//! Taking over the resumable sessions of a dead incarnation: instead of removing a connection
//! that holds one, the reaper writes it back under its own incarnation (client id, seats,
//! device entry, the session's record) and holds it, so that nobody sees the member leave and
//! its client can resume the session on any node ([`Reaped::adopted`]).

use std::collections::HashMap;

use fred::interfaces::HashesInterface;
use fred::prelude::Error as RedisError;

use super::mirror::Held;
use super::{RedisPresence, record};
use crate::presence::{Adopted, Resumable};
use crate::protocol::{ConnId, Member, RoomId};

type Gone = Vec<(RoomId, Member)>;

impl RedisPresence {
    /// Takes over `conn` of dead incarnation `dead` when it holds a resumable session and
    /// still holds its client id: what it took over, or the seats it removed when the client
    /// id went to another connection meanwhile; `None` when it is not to be taken over.
    pub(super) async fn adopt(
        &self,
        conn: ConnId,
        dead: &str,
    ) -> Result<Option<Result<Adopted, Gone>>, RedisError> {
        let store = &self.store;
        let fields: HashMap<String, String> = store.cmd().hgetall(store.keys.conn(conn)).await?;
        if fields.get("o").map(String::as_str) != Some(dead) {
            return Ok(None);
        }
        let (Some(rec), Some(id), Some(session)) =
            (fields.get("m"), fields.get("s"), fields.get("b"))
        else {
            return Ok(None);
        };
        let Some(mut member) = record::member(rec) else {
            return Ok(None);
        };
        let claim: Vec<Option<String>> = store
            .cmd()
            .hmget(store.keys.client(&member.client_id), vec!["k", "o"])
            .await?;
        let conn_text = conn.0.to_string();
        if claim.first().and_then(Option::as_deref) != Some(conn_text.as_str())
            || claim.get(1).and_then(Option::as_deref) != Some(dead)
        {
            return Ok(None);
        }
        member.node = self.node.clone();
        let rooms: Vec<RoomId> = fields
            .keys()
            .filter_map(|f| f.strip_prefix("r:"))
            .filter_map(|r| RoomId::parse(r).ok())
            .collect();
        let held = Held {
            member: member.clone(),
            rooms: rooms.iter().map(|r| (r.clone(), 0)).collect(),
            session: Some(Resumable {
                id: id.clone(),
                record: session.clone(),
            }),
        };
        let _gate = self.gate.read().await;
        if store.restore(&held, &self.owner()).await? {
            let session = held.session.clone().expect("set above");
            self.mirror.adopted(held);
            Ok(Some(Ok(Adopted {
                member,
                rooms,
                session,
            })))
        } else {
            // Another connection took the client id between the look and the write: what was
            // written back goes, and the connection's seats with it.
            Ok(Some(Err(store.remove_conn(conn, None, None).await?)))
        }
    }
}
