//! Names of every Redis key and channel a cluster uses (the layout is documented in
//! [`crate::redis`] and `docs/cluster.md`). Every name starts with a hash tag `{prefix:...}`, so
//! the keys one Lua script touches share a Redis Cluster slot and sharded channels spread over
//! the shards by room and by user.

use std::sync::Arc;

use crate::protocol::{ClientId, ConnId, NodeId, RoomId, UserId};

/// Key and channel names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    /// `prefix` holds no braces or spaces (the config validates it).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: Arc::from(prefix),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bus channel of a room: `{P:room:R}:bus`, in the room's slot.
    pub fn room_channel(&self, room: &RoomId) -> String {
        format!("{}:bus", self.room(room))
    }

    /// The bus channel of a user: `{P:user:U}:bus`, in the user's slot.
    pub fn user_channel(&self, user: &UserId) -> String {
        format!("{{{}:user:{user}}}:bus", self.prefix)
    }

    /// The bus channel of a node: `{P:node:N}:bus`.
    pub fn node_channel(&self, node: &NodeId) -> String {
        format!("{{{}:node:{node}}}:bus", self.prefix)
    }

    /// A rate limit's bucket for one key (an address): `{P:rate:NAME:KEY}`.
    pub fn rate(&self, name: &str, key: &str) -> String {
        format!("{{{}:rate:{name}:{key}}}", self.prefix)
    }

    /// The channel every node listens to: `{P}:cluster`.
    pub fn cluster_channel(&self) -> String {
        format!("{{{}}}:cluster", self.prefix)
    }

    /// ZSET of the members of a room, scored by join order.
    pub fn room(&self, room: &RoomId) -> String {
        format!("{{{}:room:{room}}}", self.prefix)
    }

    /// HASH of a user's connections (conn id → owning node incarnation).
    pub fn devices(&self, user: &UserId) -> String {
        format!("{{{}:user:{user}}}:dev", self.prefix)
    }

    /// HASH holding a client id's claim: `u` user, `k` conn, `o` owner, `m` member record.
    pub fn client(&self, client: &ClientId) -> String {
        format!("{{{}:client:{client}}}", self.prefix)
    }

    /// HASH of what a connection holds: `o` owner, `m` member record, `r:ROOM` per room, and
    /// for a resumable session `s` its id and `b` its record.
    pub fn conn(&self, conn: ConnId) -> String {
        format!("{{{}:conn:{}}}", self.prefix, conn.0)
    }

    /// LIST of the frames held for connection `conn` of a dead node, until a survivor takes its
    /// session over.
    pub fn held(&self, conn: ConnId) -> String {
        format!("{{{}:conn:{}}}:held", self.prefix, conn.0)
    }

    /// HASH naming the connection that holds resumable session `id`: `c` conn.
    pub fn session(&self, id: &str) -> String {
        format!("{{{}:sess:{id}}}", self.prefix)
    }

    /// HASH of the connections an address holds: node incarnation → count.
    pub fn address(&self, address: &str) -> String {
        format!("{{{}:addr:{address}}}", self.prefix)
    }

    /// SET of the connections a node incarnation holds entries for (conn ids), and of the
    /// addresses it counts connections of (`a:ADDRESS`).
    pub fn node(&self, incarnation: &str) -> String {
        format!("{{{}:node:{incarnation}}}", self.prefix)
    }

    /// ZSET of live node incarnations, scored by lease deadline (ms, Redis clock).
    pub fn leases(&self) -> String {
        format!("{{{}:nodes}}", self.prefix)
    }

    /// ZSET of dead incarnations being reaped, scored by the reaper's deadline.
    pub fn reaping(&self) -> String {
        format!("{{{}:nodes}}:reaping", self.prefix)
    }

    /// ZSET of incarnations a reaper took over, scored by when (ms, Redis clock; kept a day),
    /// so that a node that was only cut off learns it was reaped.
    pub fn reaped(&self) -> String {
        format!("{{{}:nodes}}:reaped", self.prefix)
    }

    /// ZSET of rooms that may have members, scored by the last join (s, Redis clock).
    pub fn rooms(&self) -> String {
        format!("{{{}:rooms}}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_hash_tag() {
        let keys = Keys::new("sb");
        let room = RoomId::parse("r.1").unwrap();
        let user = UserId::parse("ü@x").unwrap();
        assert_eq!(keys.room(&room), "{sb:room:r.1}");
        assert_eq!(keys.room_channel(&room), "{sb:room:r.1}:bus");
        assert_eq!(keys.user_channel(&user), "{sb:user:ü@x}:bus");
        assert_eq!(keys.devices(&user), "{sb:user:ü@x}:dev");
        let node = NodeId::parse("n-1").unwrap();
        assert_eq!(keys.node_channel(&node), "{sb:node:n-1}:bus");
        assert_eq!(keys.conn(ConnId(7)), "{sb:conn:7}");
        assert_eq!(keys.reaping(), "{sb:nodes}:reaping");
        assert_eq!(keys.address("2001:db8::/64"), "{sb:addr:2001:db8::/64}");
    }
}
