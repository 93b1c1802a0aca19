//! Revocations: tokens and keys that must stop working before they expire. A node holds the
//! set in memory ([`Revoked`]), so a check never waits; the store keeps them durably and the
//! bus carries each new one to every node (see [`crate::credentials`]).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::{Credential, Identity};

/// One revocation, as the store keeps it and the bus carries it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// The access token with this `jti` (logout); kept until the token would have expired.
    Token { jti: String, expires_at: u64 },
    /// Every token signed with this API key, for good.
    Key { kid: String },
    /// Every token of `user` issued before `before` (a disabled account, a new password);
    /// kept until such tokens would have expired.
    User {
        user: String,
        before: u64,
        expires_at: u64,
    },
}

impl Revocation {
    /// When the revocation stops mattering: every token it stops has expired (`u64::MAX`
    /// for keys).
    pub fn expires_at(&self) -> u64 {
        match self {
            Self::Token { expires_at, .. } | Self::User { expires_at, .. } => *expires_at,
            Self::Key { .. } => u64::MAX,
        }
    }

    /// Whether this revocation stops a token of `user` with `credential`.
    pub fn stops(&self, user: &str, credential: &Credential) -> bool {
        match self {
            Self::Token { jti, .. } => credential.jti.as_deref() == Some(jti),
            Self::Key { kid } => credential.key.as_deref() == Some(kid),
            Self::User {
                user: revoked,
                before,
                ..
            } => revoked == user && credential.issued_at < *before,
        }
    }

    /// A short label for logs and metrics: `token`, `key` or `user`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::Key { .. } => "key",
            Self::User { .. } => "user",
        }
    }
}

#[derive(Default)]
struct Sets {
    tokens: HashMap<Box<str>, u64>,
    keys: HashSet<Box<str>>,
    /// user → (issued before, expires at)
    users: HashMap<Box<str>, (u64, u64)>,
}

/// The revocations a node knows, checked on every authentication.
#[derive(Default)]
pub struct Revoked {
    sets: RwLock<Sets>,
    /// Whether any revocation is held: the check of a node that has none takes no lock.
    any: AtomicBool,
}

impl Revoked {
    /// Adds `revocation`; returns whether it was new.
    pub fn add(&self, revocation: &Revocation) -> bool {
        let mut sets = self.sets.write().unwrap_or_else(|e| e.into_inner());
        let new = match revocation {
            Revocation::Token { jti, expires_at } => sets
                .tokens
                .insert(jti.as_str().into(), *expires_at)
                .is_none(),
            Revocation::Key { kid } => sets.keys.insert(kid.as_str().into()),
            Revocation::User {
                user,
                before,
                expires_at,
            } => {
                let entry = sets.users.entry(user.as_str().into()).or_insert((0, 0));
                let newer = *before > entry.0;
                entry.0 = entry.0.max(*before);
                entry.1 = entry.1.max(*expires_at);
                newer
            }
        };
        self.any.store(true, Ordering::Release);
        new
    }

    /// Whether `identity`'s token is revoked.
    pub fn refuses(&self, identity: &Identity) -> bool {
        self.refuses_token(identity.user_id.as_str(), &identity.credential)
    }

    /// Whether the token of `user` described by `credential` is revoked.
    pub fn refuses_token(&self, user: &str, credential: &Credential) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let sets = self.sets.read().unwrap_or_else(|e| e.into_inner());
        credential
            .jti
            .as_deref()
            .is_some_and(|jti| sets.tokens.contains_key(jti))
            || credential
                .key
                .as_deref()
                .is_some_and(|kid| sets.keys.contains(kid))
            || sets
                .users
                .get(user)
                .is_some_and(|(before, _)| credential.issued_at < *before)
    }

    /// Forgets what expired before `now`; returns how many were dropped.
    pub fn prune(&self, now: u64) -> usize {
        let mut sets = self.sets.write().unwrap_or_else(|e| e.into_inner());
        let before = sets.tokens.len() + sets.users.len();
        sets.tokens.retain(|_, expires| *expires > now);
        sets.users.retain(|_, (_, expires)| *expires > now);
        before - sets.tokens.len() - sets.users.len()
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        let sets = self.sets.read().unwrap_or_else(|e| e.into_inner());
        sets.tokens.len() + sets.keys.len() + sets.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{RoomGrant, UserId};

    fn identity(user: &str, jti: Option<&str>, key: Option<&str>, iat: u64) -> Identity {
        Identity {
            user_id: UserId::parse(user).unwrap(),
            name: user.into(),
            rooms: RoomGrant::Any,
            peers: Vec::new(),
            admin: false,
            credential: Credential {
                jti: jti.map(Into::into),
                key: key.map(Into::into),
                issued_at: iat,
                expires_at: iat + 3600,
            },
        }
    }

    #[test]
    fn each_kind_stops_only_its_tokens() {
        let revoked = Revoked::default();
        let a = identity("alice", Some("j1"), None, 100);
        let b = identity("bob", Some("j2"), Some("ak_1"), 100);
        assert!(!revoked.refuses(&a) && !revoked.refuses(&b));

        let token = Revocation::Token {
            jti: "j1".into(),
            expires_at: 200,
        };
        assert!(revoked.add(&token));
        assert!(!revoked.add(&token), "a repeat is not new");
        assert!(revoked.refuses(&a) && !revoked.refuses(&b));
        assert!(token.stops("alice", &a.credential) && !token.stops("bob", &b.credential));

        revoked.add(&Revocation::Key { kid: "ak_1".into() });
        assert!(revoked.refuses(&b));

        let user = Revocation::User {
            user: "carol".into(),
            before: 150,
            expires_at: 500,
        };
        revoked.add(&user);
        assert!(revoked.refuses(&identity("carol", None, None, 149)));
        assert!(!revoked.refuses(&identity("carol", None, None, 150)));
        assert!(!revoked.refuses(&identity("dave", None, None, 1)));
    }

    #[test]
    fn expired_revocations_are_pruned_but_keys_stay() {
        let revoked = Revoked::default();
        revoked.add(&Revocation::Token {
            jti: "j".into(),
            expires_at: 10,
        });
        revoked.add(&Revocation::Key { kid: "k".into() });
        assert_eq!(revoked.prune(11), 1);
        assert_eq!(revoked.len(), 1);
    }

    #[test]
    fn the_wire_form_is_tagged_json() {
        let r = Revocation::Token {
            jti: "j".into(),
            expires_at: 5,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"kind":"token","jti":"j","expires_at":5}"#);
        assert_eq!(serde_json::from_str::<Revocation>(&json).unwrap(), r);
        assert!(serde_json::from_str::<Revocation>(r#"{"kind":"other"}"#).is_err());
    }
}
