//! The domain values the rules work on: a connection as the cluster knows it ([`Member`]) and
//! the rooms a token lets it into ([`RoomGrant`]).

use super::{ClientId, ConnId, NodeId, PeerView, RoomId, UserId};

/// A connection as the cluster knows it: who it is, and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub client_id: ClientId,
    pub user_id: UserId,
    pub username: String,
    pub conn: ConnId,
    pub node: NodeId,
}

impl Member {
    /// The member as peers see it.
    pub fn view(&self) -> PeerView {
        PeerView {
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            user_id: self.user_id.clone(),
        }
    }
}

/// Which rooms a token may join: any, or those named and `prefix*` patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomGrant {
    Any,
    Only(Vec<String>),
}

impl RoomGrant {
    pub fn allows(&self, room: &RoomId) -> bool {
        match self {
            Self::Any => true,
            Self::Only(patterns) => matches_any(patterns, room.as_str()),
        }
    }
}

/// Whether `name` is one of `patterns`: a name, or `prefix*` for every name it starts.
pub fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}
