//! TURN credentials and the ICE servers clients get. coturn with `use-auth-secret` checks
//! time-limited credentials of the TURN REST API scheme: the username is
//! `<expiry unix time>:<user id>` and the password is base64(HMAC-SHA1(secret, username)), so
//! the node and coturn share only the secret. The first configured secret signs; the others are
//! for a rotation, while coturn still accepts them (`docs/turn.md`).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::{Config, Secret};
use crate::protocol::{IceServer, UserId};

/// Time-limited TURN credentials for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `<expiry>:<user id>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
    /// Seconds the credential stays valid.
    pub ttl: u64,
}

/// The node's STUN and TURN servers and the secret that signs TURN credentials.
#[derive(Clone)]
pub struct Turn {
    secret: Option<Secret>,
    turn_uris: Vec<String>,
    stun_uris: Vec<String>,
    ttl: Duration,
}

impl Turn {
    pub fn from_config(config: &Config) -> Self {
        Self {
            secret: config.turn.secret.first().cloned(),
            turn_uris: config.turn.uris.clone(),
            stun_uris: config.stun_uris.clone(),
            ttl: config.turn.ttl,
        }
    }

    /// Whether TURN credentials can be issued (a secret is set).
    pub fn has_turn(&self) -> bool {
        self.secret.is_some()
    }

    /// The TURN URIs credentials are for.
    pub fn turn_uris(&self) -> &[String] {
        &self.turn_uris
    }

    /// Credentials for `user`, valid `ttl` from `now` (Unix seconds); `None` without a secret.
    pub fn credential(&self, user: &UserId, now: u64) -> Option<TurnCredential> {
        let secret = self.secret.as_ref()?;
        let ttl = self.ttl.as_secs();
        let username = format!("{}:{}", now + ttl, user.as_str());
        let credential = sign(secret.expose().as_bytes(), &username);
        Some(TurnCredential {
            username,
            credential,
            ttl,
        })
    }

    /// The `iceServers` of an `RTCConfiguration` for `user`: the STUN URIs, then the TURN URIs
    /// with fresh credentials (when a secret is set). Empty when neither is configured.
    pub fn ice_servers(&self, user: &UserId, now: u64) -> Vec<IceServer> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun_uris.is_empty() {
            servers.push(IceServer {
                urls: self.stun_uris.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(turn) = self.credential(user, now) {
            servers.push(IceServer {
                urls: self.turn_uris.clone(),
                username: Some(turn.username),
                credential: Some(turn.credential),
            });
        }
        servers
    }
}

/// The TURN REST API password of `username`: base64(HMAC-SHA1(secret, username)).
pub fn sign(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_match_known_vectors() {
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
        //   b"north-secret", b"1735689600:alice", hashlib.sha1).digest()).decode())'
        assert_eq!(
            sign(b"north-secret", "1735689600:alice"),
            "/Hgk2wzS1yMKgEQRSzOmdlh6bg0="
        );
        // RFC 2202, test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
        assert_eq!(
            sign(b"Jefe", "what do ya want for nothing?"),
            STANDARD.encode(hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"))
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn turn(secrets: &[&str], stun: &[&str]) -> Turn {
        let mut config = Config::default();
        config.turn.secret = secrets.iter().map(|s| Secret::new(*s)).collect();
        config.turn.uris = vec!["turn:turn.example:3478?transport=udp".into()];
        config.stun_uris = stun.iter().map(|s| (*s).to_owned()).collect();
        config.turn.ttl = Duration::from_secs(600);
        Turn::from_config(&config)
    }

    #[test]
    fn credentials_name_the_expiry_and_the_user_and_the_first_secret_signs() {
        let user = UserId::parse("u-1").unwrap();
        let cred = turn(&["new", "old"], &[]).credential(&user, 1000).unwrap();
        assert_eq!(cred.username, "1600:u-1");
        assert_eq!(cred.credential, sign(b"new", "1600:u-1"));
        assert_eq!(cred.ttl, 600);
        assert!(turn(&[], &[]).credential(&user, 1000).is_none());
    }

    #[test]
    fn ice_servers_hold_stun_then_turn() {
        let user = UserId::parse("u-1").unwrap();
        let both = turn(&["s"], &["stun:stun.example:3478"]).ice_servers(&user, 0);
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].urls, ["stun:stun.example:3478"]);
        assert!(both[0].username.is_none());
        assert_eq!(both[1].username.as_deref(), Some("600:u-1"));
        let stun_only = turn(&[], &["stun:stun.example:3478"]).ice_servers(&user, 0);
        assert_eq!(stun_only.len(), 1);
        assert!(turn(&[], &[]).ice_servers(&user, 0).is_empty());
    }
}
