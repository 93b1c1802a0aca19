//! Frames the tool receives, reduced to what it needs: presence, errors and stamps.

use std::borrow::Cow;

use serde::Deserialize;

use crate::payload::Stamp;

/// What a received frame means to the tool.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    AuthRequired,
    /// With the session's grant when the server offers resuming.
    AuthSuccess(Option<Grant>),
    /// A session resumed (`resumed`), or why not (`resume_failed`'s `reason`).
    Resumed,
    ResumeFailed(String),
    UsersInRoom(Vec<String>),
    UserJoined(String),
    UserLeft(String),
    /// A relayed offer / candidate / signal; `None` when it carries no readable stamp.
    Signal(Option<Stamp>),
    Error(String),
    /// A draining node's notice, with the session's grant when it offers resuming.
    Reconnect(Option<Grant>),
    Other,
}

/// What resumes a session: its id and resume token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub session: String,
    pub token: String,
}

#[derive(Deserialize)]
struct Inbound<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    users: Option<Vec<UserRef>>,
    #[serde(default, borrow)]
    candidate: Option<Carrier<'a>>,
    #[serde(default, borrow)]
    offer: Option<Carrier<'a>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    resume_token: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct UserRef {
    client_id: String,
}

#[derive(Deserialize)]
struct Carrier<'a> {
    #[serde(default, borrow)]
    lt: Option<Cow<'a, str>>,
}

/// Parse a received text frame; `None` if it is not a JSON object with a `type`.
pub fn parse(text: &str) -> Option<Event> {
    parse_numbered(text).map(|(event, _)| event)
}

/// [`parse`], with the frame's `seq` (a session's number, when the server numbers frames).
pub fn parse_numbered(text: &str) -> Option<(Event, Option<u64>)> {
    let msg: Inbound<'_> = serde_json::from_str(text).ok()?;
    let Inbound {
        kind,
        code,
        client_id,
        users,
        candidate,
        offer,
        seq,
        session,
        resume_token,
        reason,
    } = msg;
    let grant = session
        .zip(resume_token)
        .map(|(session, token)| Grant { session, token });
    let event = match kind.as_ref() {
        "offer" | "answer" | "ice_candidate" | "signal" => {
            let lt = candidate.or(offer).and_then(|c| c.lt);
            Event::Signal(lt.as_deref().and_then(Stamp::decode))
        }
        "auth_required" => Event::AuthRequired,
        "auth_success" => Event::AuthSuccess(grant),
        "resumed" => Event::Resumed,
        "resume_failed" => Event::ResumeFailed(reason.unwrap_or_default()),
        "users_in_room" => Event::UsersInRoom(
            users
                .unwrap_or_default()
                .into_iter()
                .map(|u| u.client_id)
                .collect(),
        ),
        "user_joined" => Event::UserJoined(client_id.unwrap_or_default()),
        "user_left" => Event::UserLeft(client_id.unwrap_or_default()),
        "error" => Event::Error(code.unwrap_or_else(|| "no_code".to_owned())),
        "reconnect" => Event::Reconnect(grant),
        _ => Event::Other,
    };
    Some((event, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::FrameBuilder;

    /// What a relay does: drop `to`, add the sender fields.
    fn relay(frame: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(frame).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("to");
        obj.insert("from".into(), "c-1".into());
        obj.insert("room".into(), "r".into());
        v.to_string()
    }

    #[test]
    fn relayed_frames_decode_to_their_stamp() {
        let b = FrameBuilder::new(Some("x"), true);
        for seq in [0, 1] {
            let stamp = Stamp {
                sender: 3,
                seq,
                sched_ns: 99,
            };
            assert_eq!(
                parse(&relay(&b.build(&stamp))),
                Some(Event::Signal(Some(stamp)))
            );
        }
    }

    #[test]
    fn parses_control_frames() {
        let users = r#"{"type":"users_in_room","room":"r","users":[{"client_id":"a","username":"u","user_id":"1"}]}"#;
        assert_eq!(parse(users), Some(Event::UsersInRoom(vec!["a".into()])));
        let joined =
            r#"{"type":"user_joined","room":"r","client_id":"b","username":"u","user_id":"2"}"#;
        assert_eq!(parse(joined), Some(Event::UserJoined("b".into())));
        let err = r#"{"type":"error","code":"peer_not_found","message":"m"}"#;
        assert_eq!(parse(err), Some(Event::Error("peer_not_found".into())));
        assert_eq!(
            parse(r#"{"type":"ice_candidate","candidate":{}}"#),
            Some(Event::Signal(None))
        );
        assert_eq!(parse(r#"{"type":"pong"}"#), Some(Event::Other));
        assert_eq!(parse("not json"), None);
    }

    #[test]
    fn parses_sessions_and_their_numbers() {
        let grant = Some(Grant {
            session: "s".into(),
            token: "t".into(),
        });
        let ok = r#"{"type":"auth_success","client_id":"a","session":"s","resume_token":"t"}"#;
        assert_eq!(
            parse_numbered(ok),
            Some((Event::AuthSuccess(grant.clone()), None))
        );
        let notice =
            r#"{"seq":7,"type":"reconnect","reason":"shutdown","session":"s","resume_token":"t"}"#;
        assert_eq!(
            parse_numbered(notice),
            Some((Event::Reconnect(grant), Some(7)))
        );
        assert_eq!(
            parse(r#"{"type":"auth_success","client_id":"a"}"#),
            Some(Event::AuthSuccess(None))
        );
        let failed = r#"{"type":"resume_failed","reason":"expired","message":"m"}"#;
        assert_eq!(parse(failed), Some(Event::ResumeFailed("expired".into())));
        let signal = r#"{"seq":12,"type":"ice_candidate","candidate":{}}"#;
        assert_eq!(
            parse_numbered(signal),
            Some((Event::Signal(None), Some(12)))
        );
    }
}
