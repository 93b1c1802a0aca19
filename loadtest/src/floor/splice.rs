//! The floor's whole message handling: read a frame's top level, keeping every value as raw
//! JSON; drop the addressing fields; add the server-set ones.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// Fields the floor sets itself on a relayed frame (or drops, for `to`).
const SERVER_SET: [&str; 5] = ["to", "from", "username", "user_id", "room"];

/// The top level of a client frame.
#[derive(Debug)]
pub struct Head<'a> {
    pub kind: &'a str,
    pub to: Option<&'a str>,
    pub room: Option<&'a str>,
    fields: BTreeMap<&'a str, &'a RawValue>,
}

/// Read a frame's top level; `None` if it is not a JSON object with a string `type`.
pub fn read(text: &str) -> Option<Head<'_>> {
    let fields: BTreeMap<&str, &RawValue> = serde_json::from_str(text).ok()?;
    let string = |key: &str| {
        fields
            .get(key)
            .and_then(|raw| serde_json::from_str::<&str>(raw.get()).ok())
    };
    let kind = string("type")?;
    let (to, room) = (string("to"), string("room"));
    Some(Head {
        kind,
        to,
        room,
        fields,
    })
}

impl Head<'_> {
    /// The frame as a recipient gets it: `to` removed, `sender` (pre-rendered
    /// `"from":..,"username":..,"user_id":..`) and `"room"` added.
    pub fn relay(&self, sender: &str, room_json: &str) -> String {
        let mut out = String::with_capacity(
            self.fields
                .values()
                .map(|v| v.get().len() + 24)
                .sum::<usize>()
                + 128,
        );
        out.push('{');
        for (key, value) in &self.fields {
            if SERVER_SET.contains(key) {
                continue;
            }
            // A borrowed key has no escapes, so it can be written back verbatim.
            out.push('"');
            out.push_str(key);
            out.push_str("\":");
            out.push_str(value.get());
            out.push(',');
        }
        out.push_str(sender);
        out.push_str(",\"room\":");
        out.push_str(room_json);
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn relays_with_to_removed_and_sender_fields_set() {
        let frame =
            r#"{"type":"offer","offer":{"type":"offer","sdp":"v=0\r\n"},"to":"b","from":"forged"}"#;
        let head = read(frame).unwrap();
        assert_eq!((head.kind, head.to, head.room), ("offer", Some("b"), None));
        let out: Value = serde_json::from_str(
            &head.relay(r#""from":"a","username":"a","user_id":"a""#, r#""r1""#),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"type":"offer","offer":{"type":"offer","sdp":"v=0\r\n"},"from":"a","username":"a","user_id":"a","room":"r1"})
        );
    }

    #[test]
    fn refuses_non_objects_and_missing_type() {
        for bad in ["[]", "\"x\"", "{}", r#"{"type":5}"#, "{", "garbage"] {
            assert!(read(bad).is_none(), "{bad}");
        }
        assert_eq!(
            read(r#"{"type":"join","room":"r"}"#).unwrap().room,
            Some("r")
        );
    }
}
