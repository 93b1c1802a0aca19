//! The rows of QR call invites: codes (`token_mappings`, by the SHA-256 of their token), calls
//! (`call_sessions`, whose state changes are conditional updates, so that a race between nodes
//! has exactly one winner) and the owners' sealed profile fields (`user_profiles`).

use std::fmt;

use super::{Pool, Store, StoreError, timed};

/// A call code as its owner sees it (never its token or hash).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CallCode {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub is_revoked: bool,
}

impl fmt::Debug for CallCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallCode")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .field("is_revoked", &self.is_revoked)
            .finish_non_exhaustive()
    }
}

/// A call. Side `a` is the caller, `b` the owner.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CallSession {
    pub session_id: String,
    pub participant_a_anon: String,
    pub participant_b_anon: String,
    /// `ringing`, `active`, `ended`, `missed`, `rejected` or `expired`.
    pub status: String,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub encryption_fingerprint: Option<String>,
    pub fingerprint_a: Option<String>,
    pub fingerprint_b: Option<String>,
    pub owner_id: String,
    pub caller_secret_hash: String,
    pub callee_secret_hash: Option<String>,
    pub ring_deadline: i64,
    pub session_deadline: i64,
}

impl fmt::Debug for CallSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSession")
            .field("session_id", &self.session_id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// An owner's profile fields, each sealed with the data key.
#[derive(Clone, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct SealedProfile {
    pub emergency_contact: Option<String>,
    pub vehicle_number: Option<String>,
}

impl Store {
    /// Stores a new code of `user_id` under the SHA-256 hex of its token.
    pub async fn add_call_code(&self, hash: &str, code: &CallCode) -> Result<(), StoreError> {
        timed("add_call_code", async move {
            const SQL: &str = "INSERT INTO token_mappings \
                (hashed_token, id, user_id, created_at, expires_at, is_revoked) \
                VALUES ($1, $2, $3, $4, $5, FALSE)";
            let c = code;
            execute!(
                self,
                SQL,
                hash,
                &c.id,
                &c.user_id,
                c.created_at,
                c.expires_at
            )?;
            Ok(())
        })
        .await
    }

    /// The code whose token hashes to `hash`, if its owner's account is active.
    pub async fn call_code(&self, hash: &str) -> Result<Option<CallCode>, StoreError> {
        timed("call_code", async move {
            const SQL: &str = "SELECT t.id, t.user_id, t.created_at, t.expires_at, t.is_revoked \
                FROM token_mappings t JOIN users u ON u.id = t.user_id \
                WHERE t.hashed_token = $1 AND u.active";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(hash).fetch_optional(pool).await?))
        })
        .await
    }

    /// The codes of `user_id`, newest first.
    pub async fn call_codes(&self, user_id: &str) -> Result<Vec<CallCode>, StoreError> {
        timed("call_codes", async move {
            const SQL: &str = "SELECT id, user_id, created_at, expires_at, is_revoked \
                FROM token_mappings WHERE user_id = $1 ORDER BY created_at DESC, id";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(user_id).fetch_all(pool).await?))
        })
        .await
    }

    /// Revokes code `id` of `user_id`; `false` when the user has no such code.
    pub async fn revoke_call_code(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        timed("revoke_call_code", async move {
            const SQL: &str =
                "UPDATE token_mappings SET is_revoked = TRUE WHERE id = $1 AND user_id = $2";
            Ok(execute!(self, SQL, id, user_id)? == 1)
        })
        .await
    }

    /// Deletes up to `batch` codes that expired before `now` or were revoked.
    pub async fn purge_call_codes(&self, now: i64, batch: i64) -> Result<u64, StoreError> {
        timed("purge_call_codes", async move {
            const SQL: &str = "DELETE FROM token_mappings WHERE hashed_token IN \
                (SELECT hashed_token FROM token_mappings \
                 WHERE expires_at < $1 OR is_revoked LIMIT $2)";
            Ok(execute!(self, SQL, now, batch)?)
        })
        .await
    }

    pub async fn create_call(&self, call: &CallSession) -> Result<(), StoreError> {
        timed("create_call", async move {
            const SQL: &str = "INSERT INTO call_sessions \
                (session_id, participant_a_anon, participant_b_anon, status, created_at, \
                 owner_id, caller_secret_hash, ring_deadline, session_deadline) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
            let c = call;
            execute!(
                self,
                SQL,
                &c.session_id,
                &c.participant_a_anon,
                &c.participant_b_anon,
                &c.status,
                c.created_at,
                &c.owner_id,
                &c.caller_secret_hash,
                c.ring_deadline,
                c.session_deadline
            )?;
            Ok(())
        })
        .await
    }

    pub async fn call(&self, session_id: &str) -> Result<Option<CallSession>, StoreError> {
        timed("call", async move {
            const SQL: &str = "SELECT * FROM call_sessions WHERE session_id = $1";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(session_id).fetch_optional(pool).await?))
        })
        .await
    }

    /// Answers a ringing call at `now` (one statement: of devices racing on any node, exactly
    /// one gets `true`). The call may then last until `deadline`.
    pub async fn answer_call(
        &self,
        session_id: &str,
        callee_secret_hash: &str,
        now: i64,
        deadline: i64,
    ) -> Result<bool, StoreError> {
        timed("answer_call", async move {
            const SQL: &str = "UPDATE call_sessions SET status = 'active', answered_at = $3, \
                callee_secret_hash = $2, session_deadline = $4 \
                WHERE session_id = $1 AND status = 'ringing' AND ring_deadline > $3";
            Ok(execute!(self, SQL, session_id, callee_secret_hash, now, deadline)? == 1)
        })
        .await
    }

    /// Moves a call from status `from` to the final status `to` at `now`; `false` when it was
    /// not in `from` (another node or device moved it first).
    pub async fn finish_call(
        &self,
        session_id: &str,
        from: &str,
        to: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        timed("finish_call", async move {
            const SQL: &str = "UPDATE call_sessions SET status = $3, ended_at = $4 \
                WHERE session_id = $1 AND status = $2";
            Ok(execute!(self, SQL, session_id, from, to, now)? == 1)
        })
        .await
    }

    /// Records side `a` or `b`'s DTLS fingerprint; returns the call as it is now.
    pub async fn record_fingerprint(
        &self,
        session_id: &str,
        side_b: bool,
        fingerprint: &str,
    ) -> Result<Option<CallSession>, StoreError> {
        timed("record_fingerprint", async move {
            const A: &str = "UPDATE call_sessions SET fingerprint_a = $2 WHERE session_id = $1";
            const B: &str = "UPDATE call_sessions SET fingerprint_b = $2 WHERE session_id = $1";
            execute!(self, if side_b { B } else { A }, session_id, fingerprint)?;
            Ok(())
        })
        .await?;
        self.call(session_id).await
    }

    /// Sets the comparison value of both sides' fingerprints.
    pub async fn set_call_fingerprint(
        &self,
        session_id: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        timed("set_call_fingerprint", async move {
            const SQL: &str =
                "UPDATE call_sessions SET encryption_fingerprint = $2 WHERE session_id = $1";
            execute!(self, SQL, session_id, value)?;
            Ok(())
        })
        .await
    }

    /// Ends calls whose time ran out by `now`: ringing past its ring deadline → `missed`,
    /// active past its session deadline → `expired`. Returns how many changed.
    pub async fn expire_calls(&self, now: i64) -> Result<u64, StoreError> {
        timed("expire_calls", async move {
            const RINGING: &str = "UPDATE call_sessions SET status = 'missed', ended_at = $1 \
                WHERE status = 'ringing' AND ring_deadline <= $1";
            const ACTIVE: &str = "UPDATE call_sessions SET status = 'expired', ended_at = $1 \
                WHERE status = 'active' AND session_deadline <= $1";
            Ok(execute!(self, RINGING, now)? + execute!(self, ACTIVE, now)?)
        })
        .await
    }

    /// Deletes up to `batch` calls that ended before `before`.
    pub async fn purge_calls(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        timed("purge_calls", async move {
            const SQL: &str = "DELETE FROM call_sessions WHERE session_id IN \
                (SELECT session_id FROM call_sessions \
                 WHERE ended_at IS NOT NULL AND ended_at < $1 LIMIT $2)";
            Ok(execute!(self, SQL, before, batch)?)
        })
        .await
    }

    /// Stores `user_id`'s sealed profile fields.
    pub async fn set_profile(
        &self,
        user_id: &str,
        profile: &SealedProfile,
        now: i64,
    ) -> Result<(), StoreError> {
        timed("set_profile", async move {
            const SQL: &str = "INSERT INTO user_profiles \
                (user_id, emergency_contact, vehicle_number, updated_at) VALUES ($1, $2, $3, $4) \
                ON CONFLICT (user_id) DO UPDATE SET emergency_contact = $2, \
                vehicle_number = $3, updated_at = $4";
            let p = profile;
            execute!(
                self,
                SQL,
                user_id,
                &p.emergency_contact,
                &p.vehicle_number,
                now
            )?;
            Ok(())
        })
        .await
    }

    pub async fn profile(&self, user_id: &str) -> Result<Option<SealedProfile>, StoreError> {
        timed("profile", async move {
            const SQL: &str =
                "SELECT emergency_contact, vehicle_number FROM user_profiles WHERE user_id = $1";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(user_id).fetch_optional(pool).await?))
        })
        .await
    }
}
