//! Identifier newtypes. Each validates on construction, so a value of these types is always
//! safe to put in a Redis key, a log line or a JSON frame.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {rule}")]
pub struct InvalidId {
    pub what: &'static str,
    pub rule: &'static str,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $rule:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                let valid: fn(&str) -> bool = $valid;
                if valid(s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(InvalidId { what: $what, rule: $rule })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn charset(s: &str, max: usize, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

id_type!(
    /// A room name: 1–128 characters of `[A-Za-z0-9._:-]`.
    RoomId,
    "room",
    "1-128 characters of [A-Za-z0-9._:-]",
    |s| charset(s, 128, b"._:-")
);

id_type!(
    /// A connection's client id: 1–64 characters of `[A-Za-z0-9_-]`; unique cluster-wide.
    ClientId,
    "client id",
    "1-64 characters of [A-Za-z0-9_-]",
    |s| charset(s, 64, b"_-")
);

id_type!(
    /// A user id (the token's `sub`): 1–128 printable characters, no whitespace or control
    /// characters.
    UserId,
    "user id",
    "1-128 printable characters without whitespace",
    |s| !s.is_empty()
        && s.chars().count() <= 128
        && s.chars().all(|c| !c.is_control() && !c.is_whitespace())
);

id_type!(
    /// A node's id: 1–64 characters of `[A-Za-z0-9_.-]`; unique within a cluster.
    NodeId,
    "node id",
    "1-64 characters of [A-Za-z0-9_.-]",
    |s| charset(s, 64, b"_.-")
);

impl ClientId {
    /// A fresh random client id (a UUID).
    pub fn generate() -> Self {
        Self(Arc::from(uuid::Uuid::new_v4().to_string()))
    }
}

impl NodeId {
    /// A fresh random node id.
    pub fn generate() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self(Arc::from(format!("node-{}", &id[..12])))
    }
}

/// One WebSocket connection, unique cluster-wide (random 64 bits). A client id outlives a
/// connection across takeovers; a `ConnId` never does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().as_u64_pair().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        for ok in ["a", "lobby", "team.alpha:call-1_x", &"r".repeat(128)] {
            assert!(RoomId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "ü",
            "a/b",
            "a?b",
            &"r".repeat(129),
            "room\n",
            "😀",
        ] {
            assert!(RoomId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_ids() {
        assert!(ClientId::parse("abc_DEF-123").is_ok());
        assert!(ClientId::parse(&"c".repeat(65)).is_err());
        assert!(ClientId::parse("a.b").is_err());
        assert!(ClientId::parse(ClientId::generate().as_str()).is_ok());
    }

    #[test]
    fn user_ids() {
        assert!(UserId::parse("user@example.com").is_ok());
        assert!(UserId::parse("ユーザー").is_ok());
        assert!(UserId::parse("a b").is_err());
        assert!(UserId::parse("a\u{0}").is_err());
        assert!(UserId::parse("").is_err());
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<RoomId>(r#""ok""#).is_ok());
        assert!(serde_json::from_str::<RoomId>(r#""not ok""#).is_err());
        assert!(serde_json::from_str::<RoomId>("12").is_err());
    }
}
