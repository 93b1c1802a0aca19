//! The signaling rules, without I/O: what an authenticated connection may send, to whom, and
//! what the relayed frame looks like. [`Session::handle`] turns a parsed client message into an
//! [`Action`] for the connection task to carry out, or an error frame for the client.

use crate::protocol::Member;
use crate::protocol::RoomGrant;
use crate::protocol::{
    ClientId, ClientMessage, ErrorCode, ErrorFrame, RoomId, RoomSignalKind, ServerMessage, UserId,
    UserSignalKind, inbound,
};

/// What the connection task does next.
#[derive(Debug)]
pub enum Action {
    Reply(ServerMessage),
    Join(RoomId),
    Leave(RoomId),
    /// Relay `frame` to `to` in `room`, or to every other member when `to` is `None`.
    SendRoom {
        kind: RoomSignalKind,
        room: RoomId,
        to: Option<ClientId>,
        frame: String,
    },
    /// Relay `frame` to every connection of `target`.
    SendUser {
        kind: UserSignalKind,
        target: UserId,
        frame: String,
    },
    Nothing,
}

/// Fields a client may not set on a relayed room signal: the addressing the server consumes,
/// and every field the server vouches for in either shape of signal (it sets its own values of
/// those it vouches for here; a receiver must never read a client's value of the others).
const ROOM_SET: [&str; 8] = [
    "to",
    "from",
    "username",
    "user_id",
    "room",
    "sender_user_id",
    "from_user_id",
    // The recipient's sequence number, which its connection writes in front.
    "seq",
];
/// The same for a relayed user-addressed signal.
const USER_SET: [&str; 7] = [
    "sender_user_id",
    "from_user_id",
    "from",
    "username",
    "user_id",
    "room",
    "seq",
];

/// An authenticated connection's signaling state.
#[derive(Debug)]
pub struct Session {
    pub me: Member,
    pub grant: RoomGrant,
    pub max_rooms: usize,
    rooms: Vec<RoomId>,
    /// The sender's fields on its room signals, rendered once: `"from":..,"username":..,
    /// "user_id":..,"room":` (the room follows per signal).
    room_tail: String,
    /// The sender's fields on its user-addressed signals, rendered once.
    user_tail: String,
}

impl Session {
    pub fn new(me: Member, grant: RoomGrant, max_rooms: usize) -> Self {
        let mut room_tail = String::new();
        inbound::render_member(&mut room_tail, "from", me.client_id.as_str());
        room_tail.push(',');
        inbound::render_member(&mut room_tail, "username", &me.username);
        room_tail.push(',');
        inbound::render_member(&mut room_tail, "user_id", me.user_id.as_str());
        room_tail.push_str(",\"room\":");
        let mut user_tail = String::new();
        inbound::render_member(&mut user_tail, "sender_user_id", me.user_id.as_str());
        user_tail.push(',');
        inbound::render_member(&mut user_tail, "from_user_id", me.user_id.as_str());
        user_tail.push(',');
        inbound::render_member(&mut user_tail, "from", me.client_id.as_str());
        user_tail.push(',');
        inbound::render_member(&mut user_tail, "username", &me.username);
        Self {
            me,
            grant,
            max_rooms,
            rooms: Vec::new(),
            room_tail,
            user_tail,
        }
    }

    pub fn rooms(&self) -> &[RoomId] {
        &self.rooms
    }

    /// Records a join the hub carried out.
    pub fn joined(&mut self, room: RoomId) {
        if !self.rooms.contains(&room) {
            self.rooms.push(room);
        }
    }

    /// Records a leave the hub carried out.
    pub fn left(&mut self, room: &RoomId) {
        self.rooms.retain(|r| r != room);
    }

    /// Checks that this session may join `room`.
    pub fn may_join(&self, room: &RoomId) -> Result<(), ErrorFrame> {
        if !self.grant.allows(room) {
            return Err(ErrorFrame::new(
                ErrorCode::Forbidden,
                format!("token does not grant room {room}"),
            )
            .room(room));
        }
        if !self.rooms.contains(room) && self.rooms.len() >= self.max_rooms {
            return Err(ErrorFrame::new(
                ErrorCode::TooManyRooms,
                format!("a connection may be in at most {} rooms", self.max_rooms),
            )
            .max(self.max_rooms));
        }
        Ok(())
    }

    pub fn handle(&self, message: ClientMessage<'_>) -> Result<Action, ErrorFrame> {
        match message {
            ClientMessage::Ping => Ok(Action::Reply(ServerMessage::Pong)),
            ClientMessage::Pong => Ok(Action::Nothing),
            ClientMessage::AuthToken { .. } | ClientMessage::Resume { .. } => Err(ErrorFrame::new(
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            )),
            ClientMessage::Join(room) => {
                self.may_join(&room)?;
                Ok(Action::Join(room))
            }
            ClientMessage::Leave(room) => {
                self.require_member(&room)?;
                Ok(Action::Leave(room))
            }
            ClientMessage::RoomSignal {
                kind,
                to,
                room,
                body,
            } => {
                let room = self.pick_room(room)?;
                if to.as_ref() == Some(&self.me.client_id) {
                    return Err(ErrorFrame::new(
                        ErrorCode::InvalidField,
                        "a client cannot address itself",
                    )
                    .field("to"));
                }
                // Room names need no JSON escaping (their charset is validated).
                let tail = [self.room_tail.as_str(), "\"", room.as_str(), "\""];
                let frame = body.splice(&ROOM_SET, &tail);
                Ok(Action::SendRoom {
                    kind,
                    room,
                    to,
                    frame,
                })
            }
            ClientMessage::UserSignal { kind, target, body } => {
                let frame = body.splice(&USER_SET, &[&self.user_tail]);
                Ok(Action::SendUser {
                    kind,
                    target,
                    frame,
                })
            }
        }
    }

    fn require_member(&self, room: &RoomId) -> Result<(), ErrorFrame> {
        if self.rooms.contains(room) {
            Ok(())
        } else {
            Err(not_in_room(Some(room)))
        }
    }

    /// The room a signal is for: the named one, or the only one the session is in.
    fn pick_room(&self, named: Option<RoomId>) -> Result<RoomId, ErrorFrame> {
        match (named, self.rooms.as_slice()) {
            (Some(room), _) => self.require_member(&room).map(|()| room),
            (None, [only]) => Ok(only.clone()),
            (None, []) => Err(not_in_room(None)),
            (None, _) => Err(ErrorFrame::new(
                ErrorCode::MissingField,
                "in several rooms: name the room with `room`",
            )
            .field("room")),
        }
    }
}

fn not_in_room(room: Option<&RoomId>) -> ErrorFrame {
    match room {
        Some(r) => ErrorFrame::new(ErrorCode::NotInRoom, format!("not in room {r}")).room(r),
        None => ErrorFrame::new(ErrorCode::NotInRoom, "not in any room"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ConnId, NodeId, inbound::parse};
    use serde_json::{Value, json};

    fn session(grant: RoomGrant) -> Session {
        let me = Member {
            client_id: ClientId::parse("me").unwrap(),
            user_id: UserId::parse("u-me").unwrap(),
            username: "Me".into(),
            conn: ConnId(1),
            node: NodeId::parse("n1").unwrap(),
        };
        Session::new(me, grant, 2)
    }

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    fn handle(s: &Session, text: &str) -> Result<Action, ErrorFrame> {
        s.handle(parse(text).unwrap())
    }

    fn err(s: &Session, text: &str) -> ErrorCode {
        handle(s, text).unwrap_err().code
    }

    #[test]
    fn room_signals_need_a_room() {
        let mut s = session(RoomGrant::Any);
        assert_eq!(
            err(&s, r#"{"type":"offer","offer":{}}"#),
            ErrorCode::NotInRoom
        );
        s.joined(room("a"));
        let Action::SendRoom {
            room: r, to, frame, ..
        } = handle(
            &s,
            r#"{"type":"offer","offer":{"sdp":"x"},"to":"peer","from":"evil","sender_user_id":"evil","from_user_id":"evil","user_id":"evil"}"#,
        )
        .unwrap()
        else {
            panic!("expected SendRoom")
        };
        assert_eq!((r.as_str(), to.unwrap().as_str()), ("a", "peer"));
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            v,
            json!({"type":"offer","offer":{"sdp":"x"},"from":"me","username":"Me","user_id":"u-me","room":"a"})
        );
        s.joined(room("b"));
        assert_eq!(err(&s, r#"{"type":"answer"}"#), ErrorCode::MissingField);
        assert_eq!(
            err(&s, r#"{"type":"answer","room":"c"}"#),
            ErrorCode::NotInRoom
        );
        assert!(handle(&s, r#"{"type":"answer","room":"b"}"#).is_ok());
        assert_eq!(
            err(&s, r#"{"type":"signal","to":"me"}"#),
            ErrorCode::MissingField
        );
        assert_eq!(
            err(&s, r#"{"type":"signal","room":"a","to":"me"}"#),
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn sender_fields_are_escaped_once_and_correctly() {
        let mut me = session(RoomGrant::Any).me;
        me.username = "A \"q\" \\ b\u{1}".into();
        let mut s = Session::new(me, RoomGrant::Any, 2);
        s.joined(room("a"));
        let Ok(Action::SendRoom { frame, .. }) = handle(&s, r#"{"type":"signal","username":"x"}"#)
        else {
            panic!("expected SendRoom")
        };
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["username"], "A \"q\" \\ b\u{1}");
        let Ok(Action::SendUser { frame, .. }) = handle(
            &s,
            r#"{"type":"webrtc_answer","target_user_id":"u","username":"x"}"#,
        ) else {
            panic!("expected SendUser")
        };
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["username"], "A \"q\" \\ b\u{1}");
    }

    #[test]
    fn joins_respect_grants_and_room_cap() {
        let mut s = session(RoomGrant::Only(vec!["ok-*".into()]));
        assert_eq!(
            err(&s, r#"{"type":"join","room":"nope"}"#),
            ErrorCode::Forbidden
        );
        assert!(matches!(
            handle(&s, r#"{"type":"join","room":"ok-1"}"#),
            Ok(Action::Join(_))
        ));
        s.joined(room("ok-1"));
        s.joined(room("ok-2"));
        assert_eq!(
            err(&s, r#"{"type":"join","room":"ok-3"}"#),
            ErrorCode::TooManyRooms
        );
        assert!(matches!(
            handle(&s, r#"{"type":"join","room":"ok-1"}"#),
            Ok(Action::Join(_))
        ));
        assert_eq!(
            err(&s, r#"{"type":"leave","room":"ok-3"}"#),
            ErrorCode::NotInRoom
        );
        s.left(&room("ok-1"));
        assert_eq!(s.rooms(), &[room("ok-2")]);
    }

    #[test]
    fn user_signals_carry_the_sender() {
        let s = session(RoomGrant::Any);
        let Action::SendUser { target, frame, .. } = handle(
            &s,
            r#"{"type":"webrtc_offer","target_user_id":"u-2","data":{"sdp":"v"},"sender_user_id":"forged","user_id":"forged","room":"forged","from":"forged"}"#,
        )
        .unwrap() else {
            panic!("expected SendUser")
        };
        assert_eq!(target.as_str(), "u-2");
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            v,
            json!({"type":"webrtc_offer","target_user_id":"u-2","data":{"sdp":"v"},
                   "sender_user_id":"u-me","from_user_id":"u-me","from":"me","username":"Me"})
        );
    }

    #[test]
    fn keepalive_and_reauth() {
        let s = session(RoomGrant::Any);
        assert!(matches!(
            handle(&s, r#"{"type":"ping"}"#),
            Ok(Action::Reply(ServerMessage::Pong))
        ));
        assert_eq!(
            err(&s, r#"{"type":"auth_token","token":"t"}"#),
            ErrorCode::AlreadyAuthenticated
        );
    }
}
