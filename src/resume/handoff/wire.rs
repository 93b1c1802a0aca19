//! The hand-off's messages between nodes: JSON in [`crate::bus::Route::Handoff`] envelopes.

use serde::{Deserialize, Serialize};

use crate::auth::Credential;
use crate::protocol::{ClientId, ConnId, Member, NodeId, RoomGrant, RoomId, UserId};
use crate::resume::Parked;

/// One step of a hand-off.
#[derive(Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub(super) enum Step {
    Ask {
        asker: NodeId,
        session: String,
        hash: [u8; 32],
        last_seq: u64,
        conn: ConnId,
        user: Option<UserId>,
    },
    Answer {
        conn: ConnId,
        handed: Option<Box<Handed>>,
        refused: Option<String>,
    },
    Moved {
        conn: ConnId,
    },
    /// The answer came too late (the asker gave up): the holder keeps the session.
    Declined {
        conn: ConnId,
    },
    End {
        conn: ConnId,
    },
}

/// What the new node needs to continue a session.
#[derive(Serialize, Deserialize)]
pub struct Handed {
    pub holder: NodeId,
    pub session: String,
    pub client_id: ClientId,
    pub user_id: UserId,
    pub username: String,
    pub rooms: Vec<RoomId>,
    /// The rooms the token opens (`None`: any).
    grant: Option<Vec<String>>,
    pub max_rooms: usize,
    jti: Option<String>,
    key: Option<String>,
    issued_at: u64,
    expires_at: u64,
    pub admin: bool,
    pub peers: Vec<String>,
    /// The frames written after `last_seq`, each with its number.
    pub replay: Vec<(u64, String)>,
}

/// What describes a session apart from its rooms and frames.
pub struct Described<'a> {
    pub session: &'a str,
    pub me: &'a Member,
    pub grant: &'a RoomGrant,
    pub max_rooms: usize,
    pub credential: &'a Credential,
    pub admin: bool,
    pub peers: &'a [String],
}

impl Handed {
    pub(super) fn of(parked: &Parked, last_seq: u64, holder: NodeId) -> Self {
        let mut handed = Self::describe(
            &Described {
                session: &parked.ticket.grant.session,
                me: &parked.me,
                grant: &parked.session.grant,
                max_rooms: parked.session.max_rooms,
                credential: &parked.credential,
                admin: parked.admin,
                peers: &parked.peers,
            },
            holder,
        );
        handed.rooms = parked.session.rooms().to_vec();
        handed.replay = (parked
            .replay
            .after(last_seq)
            .unwrap_or_default()
            .into_iter())
        .map(|(seq, frame)| (seq, frame.as_str().to_owned()))
        .collect();
        handed
    }

    /// A session held by `holder`, without rooms or frames.
    pub fn describe(d: &Described<'_>, holder: NodeId) -> Self {
        let cred = d.credential;
        Self {
            holder,
            session: d.session.to_owned(),
            client_id: d.me.client_id.clone(),
            user_id: d.me.user_id.clone(),
            username: d.me.username.clone(),
            rooms: Vec::new(),
            grant: match d.grant {
                RoomGrant::Any => None,
                RoomGrant::Only(names) => Some(names.clone()),
            },
            max_rooms: d.max_rooms,
            jti: cred.jti.as_deref().map(str::to_owned),
            key: cred.key.as_deref().map(str::to_owned),
            issued_at: cred.issued_at,
            expires_at: cred.expires_at,
            admin: d.admin,
            peers: d.peers.to_vec(),
            replay: Vec::new(),
        }
    }

    pub fn grant(&self) -> RoomGrant {
        match &self.grant {
            None => RoomGrant::Any,
            Some(names) => RoomGrant::Only(names.clone()),
        }
    }

    pub fn credential(&self) -> Credential {
        Credential {
            jti: self.jti.as_deref().map(Into::into),
            key: self.key.as_deref().map(Into::into),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::Refusal;

    #[test]
    fn steps_round_trip_and_refusals_keep_their_reason() {
        let ask = Step::Ask {
            asker: NodeId::parse("node-1").unwrap(),
            session: "s".into(),
            hash: [7; 32],
            last_seq: 41,
            conn: ConnId(u64::MAX),
            user: Some(UserId::parse("bob").unwrap()),
        };
        let json = serde_json::to_vec(&ask).unwrap();
        let Step::Ask {
            hash,
            last_seq,
            conn,
            ..
        } = serde_json::from_slice(&json).unwrap()
        else {
            panic!("not an ask");
        };
        assert_eq!((hash, last_seq, conn), ([7; 32], 41, ConnId(u64::MAX)));
        for refusal in [
            Refusal::Disabled,
            Refusal::Expired,
            Refusal::InvalidToken,
            Refusal::Overflow,
            Refusal::Closed,
        ] {
            assert_eq!(Refusal::from_reason(refusal.reason()), refusal);
        }
        assert_eq!(Refusal::from_reason("anything else"), Refusal::Expired);
    }
}
