//! A member as Redis stores it: `conn|client|owner|["user","username"]`, where `owner` is the
//! node incarnation `node/epoch` that holds the connection. Conn, client and owner come from
//! restricted character sets (no `|`), so Lua can match them; the user id and name, which may
//! hold anything printable, sit in a JSON tail.

use crate::protocol::Member;
use crate::protocol::{ClientId, ConnId, NodeId, UserId};

pub fn encode(member: &Member, owner: &str) -> String {
    let tail = serde_json::to_string(&(member.user_id.as_str(), member.username.as_str()))
        .unwrap_or_default();
    format!("{}|{}|{owner}|{tail}", member.conn.0, member.client_id)
}

/// The member and its owner incarnation; `None` for a record this version cannot read.
pub fn decode(record: &str) -> Option<(Member, &str)> {
    let mut parts = record.splitn(4, '|');
    let conn = ConnId(parts.next()?.parse().ok()?);
    let client_id = ClientId::parse(parts.next()?).ok()?;
    let owner = parts.next()?;
    let (user, username): (String, String) = serde_json::from_str(parts.next()?).ok()?;
    let node = NodeId::parse(owner.split('/').next()?).ok()?;
    let member = Member {
        client_id,
        user_id: UserId::parse(&user).ok()?,
        username,
        conn,
        node,
    };
    Some((member, owner))
}

/// Decodes a record, logging one that cannot be read.
pub fn member(record: &str) -> Option<Member> {
    let decoded = decode(record).map(|(m, _)| m);
    if decoded.is_none() {
        tracing::warn!(record, "unreadable presence record skipped");
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_odd_names() {
        let member = Member {
            client_id: ClientId::parse("c-1_x").unwrap(),
            user_id: UserId::parse("ü|{x}\"@y").unwrap(),
            username: "Ann | \"the\" {admin}\n".into(),
            conn: ConnId(u64::MAX),
            node: NodeId::parse("node-a.1").unwrap(),
        };
        let record = encode(&member, "node-a.1/00ff");
        assert!(record.starts_with("18446744073709551615|c-1_x|node-a.1/00ff|"));
        assert_eq!(decode(&record), Some((member, "node-a.1/00ff")));
        assert_eq!(decode("1|c|n/1|not json"), None);
    }
}
