//! Frames from clients. A frame is parsed one level deep: the addressing fields (`type`, `to`,
//! `room`, `target_user_id`) are read, every other value stays raw text. Relaying splices the
//! server-set fields into that text instead of re-serialising the payload, so an SDP body is
//! copied once and never parsed.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{ClientId, ErrorCode, ErrorFrame, RoomId, UserId};

named_enum! {
    /// Room signals: relayed to one member (`to`) or every other member of a room.
    pub enum RoomSignalKind {
        Offer = "offer",
        Answer = "answer",
        IceCandidate = "ice_candidate",
        Signal = "signal",
    }
}

named_enum! {
    /// User-addressed signals: relayed to every connection of `target_user_id`.
    pub enum UserSignalKind {
        Offer = "webrtc_offer",
        Answer = "webrtc_answer",
        IceCandidate = "webrtc_ice_candidate",
    }
}

/// A parsed client frame.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    /// `auth_token`; an invalid `clientId` is dropped (the server generates one).
    AuthToken {
        token: String,
        client_id: Option<ClientId>,
    },
    /// `resume`: take up a session that lost its connection, with the session's resume token,
    /// and receive what was sent to it after `last_seq`.
    Resume {
        session: String,
        resume_token: String,
        last_seq: u64,
    },
    Ping,
    /// A client's answer to a keepalive; ignored.
    Pong,
    Join(RoomId),
    Leave(RoomId),
    RoomSignal {
        kind: RoomSignalKind,
        to: Option<ClientId>,
        room: Option<RoomId>,
        body: RawObject<'a>,
    },
    UserSignal {
        kind: UserSignalKind,
        target: UserId,
        body: RawObject<'a>,
    },
}

/// The keys the server reads to route a frame.
const ADDRESSING: [&str; 4] = ["type", "to", "room", "target_user_id"];

/// The deepest nesting of arrays and objects a frame may have.
pub const MAX_DEPTH: usize = 32;

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientMessage<'_>, ErrorFrame> {
    if nesting_depth(text) > MAX_DEPTH {
        return Err(ErrorFrame::new(
            ErrorCode::InvalidJson,
            format!("frame nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    let body: RawObject<'_> = serde_json::from_str(text).map_err(|e| {
        ErrorFrame::new(
            ErrorCode::InvalidJson,
            format!("frame is not a JSON object: {}", short(&e)),
        )
    })?;
    // A key the server reads must be there once: a receiver's parser could read another copy
    // than the server did (JSON parsers differ on duplicates).
    for key in ADDRESSING {
        if body
            .entries
            .iter()
            .filter(|(k, _)| k == key)
            .nth(1)
            .is_some()
        {
            return Err(ErrorFrame::new(
                ErrorCode::InvalidField,
                format!("field `{key}` appears more than once"),
            )
            .field(key));
        }
    }
    let kind: Cow<'_, str> = body.field("type")?.ok_or_else(|| missing("type"))?;
    Ok(match &*kind {
        "auth_token" => ClientMessage::AuthToken {
            token: body
                .field::<Cow<'_, str>>("token")?
                .ok_or_else(|| missing("token"))?
                .into_owned(),
            client_id: body
                .get("clientId")
                .and_then(|raw| serde_json::from_str(raw.get()).ok()),
        },
        "resume" => ClientMessage::Resume {
            session: body
                .field::<Cow<'_, str>>("session")?
                .ok_or_else(|| missing("session"))?
                .into_owned(),
            resume_token: body
                .field::<Cow<'_, str>>("resume_token")?
                .ok_or_else(|| missing("resume_token"))?
                .into_owned(),
            last_seq: body.field("last_seq")?.ok_or_else(|| missing("last_seq"))?,
        },
        "ping" => ClientMessage::Ping,
        "pong" => ClientMessage::Pong,
        "join" => ClientMessage::Join(body.field("room")?.ok_or_else(|| missing("room"))?),
        "leave" => ClientMessage::Leave(body.field("room")?.ok_or_else(|| missing("room"))?),
        other => {
            if let Some(kind) = RoomSignalKind::from_name(other) {
                return room_signal(kind, body);
            }
            if let Some(kind) = UserSignalKind::from_name(other) {
                return user_signal(kind, body);
            }
            let shown: String = other.chars().take(64).collect();
            return Err(ErrorFrame::new(
                ErrorCode::UnknownType,
                format!("unknown message type {shown:?}"),
            ));
        }
    })
}

fn room_signal(kind: RoomSignalKind, body: RawObject<'_>) -> Result<ClientMessage<'_>, ErrorFrame> {
    Ok(ClientMessage::RoomSignal {
        kind,
        to: body.field("to")?,
        room: body.field("room")?,
        body,
    })
}

fn user_signal(kind: UserSignalKind, body: RawObject<'_>) -> Result<ClientMessage<'_>, ErrorFrame> {
    let target = body
        .field("target_user_id")?
        .ok_or_else(|| missing("target_user_id"))?;
    Ok(ClientMessage::UserSignal { kind, target, body })
}

/// The deepest nesting of `[` and `{` outside strings (a scan, not a parse). String bodies,
/// most of a frame's bytes (SDP), are skipped with `memchr`.
fn nesting_depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = string_end(bytes, i + 1),
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

/// The index of the quote that closes the string starting at `from` (or the end of input).
fn string_end(bytes: &[u8], mut from: usize) -> usize {
    while let Some(offset) = memchr::memchr2(b'"', b'\\', &bytes[from..]) {
        let at = from + offset;
        if bytes[at] == b'"' {
            return at;
        }
        from = at + 2;
        if from >= bytes.len() {
            break;
        }
    }
    bytes.len()
}

fn missing(field: &'static str) -> ErrorFrame {
    ErrorFrame::new(ErrorCode::MissingField, format!("missing field `{field}`")).field(field)
}

fn short(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.chars().take(120).collect()
}

/// A JSON object parsed one level deep, in the order the client sent its keys.
#[derive(Debug, Default)]
pub struct RawObject<'a> {
    entries: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    /// The raw value of the last `key` (JSON keeps the last of duplicates).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// Reads `key` as `T`; `null` counts as absent, a value of the wrong type or shape is
    /// `invalid_field`.
    pub fn field<T: serde::Deserialize<'a>>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, ErrorFrame> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|e| {
                ErrorFrame::new(
                    ErrorCode::InvalidField,
                    format!("field `{key}` is invalid: {}", short(&e)),
                )
                .field(key)
            }),
        }
    }

    /// The object's text without the fields named in `replace`, followed by `tail`: the
    /// members the server sets, already rendered as JSON (by [`render_member`]), in pieces.
    /// Keys a client sent for server-set fields are thereby replaced.
    pub fn splice(&self, replace: &[&str], tail: &[&str]) -> String {
        let raw_len: usize = self
            .entries
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let tail_len: usize = tail.iter().map(|piece| piece.len()).sum();
        let mut out = String::with_capacity(raw_len + tail_len + 2);
        out.push('{');
        let kept = self
            .entries
            .iter()
            .filter(|(k, _)| !replace.contains(&&**k));
        for (key, value) in kept {
            push_key(&mut out, key, matches!(key, Cow::Borrowed(_)));
            out.push_str(value.get());
            out.push(',');
        }
        if tail.is_empty() && out.ends_with(',') {
            out.pop();
        }
        for piece in tail {
            out.push_str(piece);
        }
        out.push('}');
        out
    }
}

/// Appends `"key":"value"` (both escaped as JSON needs) to `out`.
pub fn render_member(out: &mut String, key: &str, value: &str) {
    push_json_str(out, key);
    out.push(':');
    push_json_str(out, value);
}

/// `verbatim`: the key was borrowed straight from the frame, so it holds no escapes.
fn push_key(out: &mut String, key: &str, verbatim: bool) {
    if verbatim {
        out.push('"');
        out.push_str(key);
        out.push('"');
    } else {
        push_json_str(out, key);
    }
    out.push(':');
}

/// Writes `s` as a JSON string; text that needs no escaping (ids, most names) is copied as is.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("strings always serialise"));
    }
}

impl<'de> serde::Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = RawObject<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(6));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            entries.push((key.0, map.next_value::<&'de RawValue>()?));
        }
        Ok(RawObject { entries })
    }
}

/// An object key, borrowed from the frame when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn code(text: &str) -> ErrorCode {
        parse(text).unwrap_err().code
    }

    #[test]
    fn refuses_a_key_it_routes_by_given_twice() {
        for text in [
            r#"{"type":"offer","type":"join","room":"a"}"#,
            r#"{"type":"offer","t\u0079pe":"join"}"#,
            r#"{"type":"offer","to":"a","to":"b"}"#,
            r#"{"type":"join","room":"a","room":"b"}"#,
            r#"{"type":"webrtc_offer","target_user_id":"a","target_user_id":"b"}"#,
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField, "{text}");
            assert!(e.message.contains("more than once"), "{text}");
        }
        // Payload keys may repeat inside the payload, and other top-level keys pass as sent.
        assert!(parse(r#"{"type":"offer","offer":{"type":"a","type":"b"},"x":1,"x":2}"#).is_ok());
    }

    #[test]
    fn rejects_what_is_not_an_object() {
        for bad in [
            "",
            "garbage",
            "[1,2]",
            "42",
            "\"str\"",
            "{",
            "{\"type\":}",
            "null",
        ] {
            assert_eq!(code(bad), ErrorCode::InvalidJson, "{bad:?}");
        }
        let deep = format!(
            "{{\"type\":\"offer\",\"offer\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(code(&deep), ErrorCode::InvalidJson);
        let ok = format!("{{\"type\":\"ping\",\"x\":\"{}\"}}", "[".repeat(200));
        assert!(parse(&ok).is_ok(), "brackets inside strings do not count");
        assert_eq!(nesting_depth(r#"{"a":"\"{[","b":[{}]}"#), 3);
    }

    #[test]
    fn field_errors() {
        assert_eq!(code("{}"), ErrorCode::MissingField);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::InvalidField);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::MissingField);
        assert_eq!(
            code(r#"{"type":"join","room":"a b"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"join","room":["x"]}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(code(r#"{"type":"offer","to":5}"#), ErrorCode::InvalidField);
        assert_eq!(
            code(r#"{"type":"offer","to":"a.b"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(code(r#"{"type":"webrtc_offer"}"#), ErrorCode::MissingField);
        assert_eq!(code(r#"{"type":"auth_token"}"#), ErrorCode::MissingField);
        assert_eq!(
            code(r#"{"type":"auth_token","token":1}"#),
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn auth_token_keeps_only_valid_client_ids() {
        let ClientMessage::AuthToken { client_id, .. } =
            parse(r#"{"type":"auth_token","token":"t","clientId":"good-1"}"#).unwrap()
        else {
            panic!("not auth_token")
        };
        assert_eq!(client_id.unwrap().as_str(), "good-1");
        let ClientMessage::AuthToken { client_id, .. } =
            parse(r#"{"type":"auth_token","token":"t","clientId":"bad id!"}"#).unwrap()
        else {
            panic!("not auth_token")
        };
        assert!(client_id.is_none());
    }

    #[test]
    fn splice_replaces_addressing_and_keeps_payload() {
        let text = r#"{"type":"offer","offer":{"sdp":"v=0\r\n","type":"offer"},"to":"b","from":"forged","x\"y":1}"#;
        let ClientMessage::RoomSignal { body, to, .. } = parse(text).unwrap() else {
            panic!("not a room signal")
        };
        assert_eq!(to.unwrap().as_str(), "b");
        let mut tail = String::new();
        render_member(&mut tail, "from", "a");
        tail.push(',');
        render_member(&mut tail, "username", "Al \"x\"");
        let out = body.splice(
            &["to", "from", "username", "room"],
            &[&tail, ",\"room\":\"r\""],
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({"type":"offer","offer":{"sdp":"v=0\r\n","type":"offer"},"x\"y":1,
                   "from":"a","username":"Al \"x\"","room":"r"})
        );
    }

    #[test]
    fn splice_without_a_tail_or_with_nothing_kept() {
        let ClientMessage::RoomSignal { body, .. } =
            parse(r#"{"type":"signal","to":"b"}"#).unwrap()
        else {
            panic!("not a room signal")
        };
        assert_eq!(body.splice(&["to"], &[]), r#"{"type":"signal"}"#);
        assert_eq!(body.splice(&["to", "type"], &[]), "{}");
        assert_eq!(body.splice(&["to", "type"], &["\"a\":1"]), r#"{"a":1}"#);
        let ClientMessage::RoomSignal { body, .. } =
            parse(r#"{"type":"signal","k\u0065y":"\u00fc"}"#).unwrap()
        else {
            panic!("not a room signal")
        };
        // An escaped key is unescaped by the parser and escaped again as needed.
        let out: Value = serde_json::from_str(&body.splice(&[], &[])).unwrap();
        assert_eq!(out, json!({"type":"signal","key":"ü"}));
    }

    #[test]
    fn null_addressing_counts_as_absent() {
        let ClientMessage::RoomSignal { to, room, .. } =
            parse(r#"{"type":"signal","to":null,"room":null,"data":{}}"#).unwrap()
        else {
            panic!("not a room signal")
        };
        assert!(to.is_none() && room.is_none());
    }
}
