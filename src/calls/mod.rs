//! QR call invites (seed 004): an owner hands out codes; whoever scans one calls the owner,
//! and neither learns anything of the other. See `docs/calls.md`.
//!
//! - Codes ([`code`]): random tokens of which the store keeps only the SHA-256.
//! - Calls: a row of `call_sessions` whose status moves by conditional updates, so that of the
//!   owner's devices answering on any node exactly one wins. Both participants are known only
//!   by per-call anonymous ids and hold a random signaling secret (only its hash is stored).
//! - Delivery over the [`Hub`]: the owner's devices are the account's connections on `/ws`
//!   (user-addressed, on any node); each side of a call is addressed as a user of its own
//!   ([`side_user`]), so that the signaling socket of one side reaches the other's on any node.

pub mod code;
mod notify;
pub mod signal;

use std::sync::Arc;
use std::time::Duration;

use crate::config::CallsConfig;
use crate::hub::Hub;
use crate::protocol::{ClientId, UserId};
use crate::store::{CallCode, CallSession, Store, StoreError};

pub use notify::{call_ended as notify_ended, server_member};

/// Statuses a call ends in.
pub const FINAL: [&str; 4] = ["ended", "missed", "rejected", "expired"];

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Not a code at all (client-detectable: frame, length, checksum).
    #[error("this is not a well-formed call code")]
    Malformed,
    /// Unknown, expired or revoked, or its owner's account is disabled: one answer for all.
    #[error("this code is not valid")]
    Invalid,
    /// No such call for this user.
    #[error("no such call")]
    NoSuchCall,
    /// Another device answered first.
    #[error("the call was answered on another device")]
    Taken,
    /// The call is over (missed, rejected, ended or expired).
    #[error("the call is over")]
    Over,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `a`: who scanned the code.
    Caller,
    /// `b`: the code's owner.
    Owner,
}

impl Side {
    pub fn letter(self) -> &'static str {
        match self {
            Side::Caller => "a",
            Side::Owner => "b",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Owner,
            Side::Owner => Side::Caller,
        }
    }

    pub fn role(self) -> &'static str {
        match self {
            Side::Caller => "caller",
            Side::Owner => "callee",
        }
    }

    /// This side's anonymous id in `call`.
    pub fn anon(self, call: &CallSession) -> &str {
        match self {
            Side::Caller => &call.participant_a_anon,
            Side::Owner => &call.participant_b_anon,
        }
    }
}

/// The user a side of a call is addressed as on the hub: `call:<sessionId>:<a|b>`.
pub fn side_user(session_id: &str, side: Side) -> UserId {
    UserId::parse(&format!("call:{session_id}:{}", side.letter())).expect("a valid user id")
}

/// Whether `user` is a side of a call ([`side_user`]): reserved for call signaling sockets,
/// so that no token's connection may be one or send it anything.
pub fn is_call_side(user: &UserId) -> bool {
    user.as_str().starts_with("call:")
}

/// The client id of a side's signaling connection.
pub fn side_client(session_id: &str, side: Side) -> ClientId {
    ClientId::parse(&format!("{session_id}_{}", side.letter())).expect("a valid client id")
}

/// Whether `id` can be a session id: `session_` and 32 hex digits.
pub fn valid_session_id(id: &str) -> bool {
    id.strip_prefix("session_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A new per-call anonymous id: `anon_` and 24 hex digits (96 random bits).
pub fn new_anon_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("anon_{hex}")
}

/// Whether a caller's own anonymous id is acceptable: `anon_` and 8–64 of `[A-Za-z0-9_-]`.
pub fn valid_anon_id(id: &str) -> bool {
    id.strip_prefix("anon_").is_some_and(|rest| {
        (8..=64).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// A new call's caller side.
#[derive(Debug)]
pub struct Initiated {
    pub call: CallSession,
    /// The caller's signaling secret (only its hash is stored).
    pub secret: String,
}

/// The calls service of a node: cheap to build per request.
#[derive(Clone)]
pub struct Calls {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub config: CallsConfig,
}

pub fn unix_now() -> i64 {
    crate::auth::unix_seconds()
}

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Calls {
    /// A new code of `user_id`: its QR text and its row.
    pub async fn generate(&self, user_id: &str) -> Result<(String, CallCode), CallError> {
        let (token, hash) = code::new_token();
        let now = unix_now();
        let row = CallCode {
            id: uuid::Uuid::new_v4().simple().to_string(),
            user_id: user_id.to_owned(),
            created_at: now,
            expires_at: now.saturating_add(seconds(self.config.token_ttl)),
            is_revoked: false,
        };
        self.store.add_call_code(&hash, &row).await?;
        Ok((code::qr_data(&token), row))
    }

    /// The live code a scanned text names.
    pub async fn check(&self, scanned: &str) -> Result<CallCode, CallError> {
        let token = code::parse(scanned).map_err(|_| CallError::Malformed)?;
        let found = self.store.call_code(&code::hash(token)).await?;
        found
            .filter(|c| !c.is_revoked && c.expires_at > unix_now())
            .ok_or(CallError::Invalid)
    }

    /// Starts a call with the code `scanned`: the owner's devices ring, on every node. A call
    /// nobody can hear (no device online) is `missed` at once.
    pub async fn initiate(
        &self,
        scanned: &str,
        caller_anon: Option<&str>,
    ) -> Result<Initiated, CallError> {
        let code = self.check(scanned).await?;
        let (secret, secret_hash) = crate::accounts::new_secret();
        let now = unix_now();
        let mut call = CallSession {
            session_id: format!("session_{}", uuid::Uuid::new_v4().simple()),
            participant_a_anon: caller_anon.map_or_else(new_anon_id, str::to_owned),
            participant_b_anon: new_anon_id(),
            status: "ringing".to_owned(),
            created_at: now,
            answered_at: None,
            ended_at: None,
            encryption_fingerprint: None,
            fingerprint_a: None,
            fingerprint_b: None,
            owner_id: code.user_id,
            caller_secret_hash: secret_hash,
            callee_secret_hash: None,
            ring_deadline: now.saturating_add(seconds(self.config.ring_timeout)),
            session_deadline: now.saturating_add(seconds(self.config.session_timeout)),
        };
        self.store.create_call(&call).await?;
        metrics::counter!(crate::metrics::CALLS, "outcome" => "initiated").increment(1);
        if self.ring(&call).await {
            self.spawn_ring_timer(call.session_id.clone());
        } else if self
            .store
            .finish_call(&call.session_id, "ringing", "missed", now)
            .await?
        {
            metrics::counter!(crate::metrics::CALLS, "outcome" => "missed").increment(1);
            call.status = "missed".to_owned();
            call.ended_at = Some(now);
        }
        Ok(Initiated { call, secret })
    }

    /// The call `session_id` if `user_id` owns it.
    async fn owned(&self, session_id: &str, user_id: &str) -> Result<CallSession, CallError> {
        if !valid_session_id(session_id) {
            return Err(CallError::NoSuchCall);
        }
        let call = self.store.call(session_id).await?;
        call.filter(|c| c.owner_id == user_id)
            .ok_or(CallError::NoSuchCall)
    }

    /// Answers a ringing call on one of the owner's devices: the owner's signaling secret for
    /// the one device that wins (cluster-wide); [`CallError::Taken`] for the others.
    pub async fn answer(
        &self,
        session_id: &str,
        user_id: &str,
    ) -> Result<(CallSession, String), CallError> {
        let mut call = self.owned(session_id, user_id).await?;
        let (secret, hash) = crate::accounts::new_secret();
        let now = unix_now();
        let deadline = now.saturating_add(seconds(self.config.session_timeout));
        if !self
            .store
            .answer_call(session_id, &hash, now, deadline)
            .await?
        {
            let current = self.store.call(session_id).await?;
            return Err(match current.map(|c| c.status) {
                Some(status) if status == "active" => CallError::Taken,
                _ => CallError::Over,
            });
        }
        metrics::counter!(crate::metrics::CALLS, "outcome" => "answered").increment(1);
        call.status = "active".to_owned();
        call.answered_at = Some(now);
        call.session_deadline = deadline;
        self.answered(&call).await;
        Ok((call, secret))
    }

    /// Declines a ringing call.
    pub async fn reject(&self, session_id: &str, user_id: &str) -> Result<(), CallError> {
        let call = self.owned(session_id, user_id).await?;
        if !self
            .store
            .finish_call(session_id, "ringing", "rejected", unix_now())
            .await?
        {
            return Err(CallError::Over);
        }
        metrics::counter!(crate::metrics::CALLS, "outcome" => "rejected").increment(1);
        self.ended(&call, "rejected").await;
        Ok(())
    }

    /// Ends the call from `side` (hang-up): `ended` from ringing or active; `false` when it
    /// was over already.
    pub async fn hang_up(&self, call: &CallSession, side: Side) -> Result<bool, CallError> {
        let now = unix_now();
        for from in ["active", "ringing"] {
            if self
                .store
                .finish_call(&call.session_id, from, "ended", now)
                .await?
            {
                metrics::counter!(crate::metrics::CALLS, "outcome" => "ended").increment(1);
                if from == "ringing" {
                    self.tell_owner(&call.owner_id, notify::owner_ended(call, "cancelled"))
                        .await;
                }
                self.tell_side(call, side.other(), r#"{"type":"hang-up"}"#.to_owned())
                    .await;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Ends an active call whose time is up (`expired`); `false` when it was over already.
    pub async fn expire(&self, call: &CallSession) -> Result<bool, CallError> {
        let done = self
            .store
            .finish_call(&call.session_id, "active", "expired", unix_now())
            .await?;
        if done {
            metrics::counter!(crate::metrics::CALLS, "outcome" => "expired").increment(1);
            for side in [Side::Caller, Side::Owner] {
                self.tell_side(call, side, notify::call_ended("expired"))
                    .await;
            }
        }
        Ok(done)
    }
}
