//! The retention job: what the store keeps past its time is deleted in batches, by one node
//! of the cluster per interval. Every node ticks; each tick claims the interval's run through
//! the store ([`Store::claim_job`], one conditional upsert), so however many nodes start at
//! once, one runs it. Each [`Step`] deletes at most [`BATCH`] rows per statement and goes on
//! until a batch comes back short, so no statement holds long locks. Rows removed are counted
//! in `switchboard_retention_rows_removed_total{table}`.

use std::time::Duration;

use crate::metrics as m;
use crate::store::{Store, StoreError};

/// The job's name in `job_runs`.
pub const JOB: &str = "retention";
/// Rows one statement deletes at most.
pub const BATCH: i64 = 1000;
/// Failure counts older than this are forgotten (a lockout's window is shorter).
const LOGIN_FAILURES_KEPT: i64 = 86_400;
/// E2EE messages no device acknowledged are deleted after this long (seed 003: 30 days).
pub const E2EE_MESSAGES_KEPT: i64 = 30 * 86_400;
/// Claimed one-time prekey ids refuse re-uploads for this long (seed 003: 7 days).
pub const E2EE_CLAIMED_KEPT: i64 = 7 * 86_400;

/// One kind of expired data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Refresh tokens past their expiry.
    RefreshTokens,
    /// Revocations whose tokens have all expired.
    Revocations,
    /// Failed-login counts not touched for a day and not locking.
    LoginFailures,
    /// E2EE messages queued more than 30 days ago and never acknowledged.
    E2eeMessages,
    /// Claimed one-time prekey ids (tombstones) older than 7 days.
    E2eeClaimedKeys,
    /// E2EE WebSocket tickets past their expiry.
    E2eeTickets,
    /// QR call codes past their expiry, or revoked.
    CallCodes,
    /// QR calls that ended more than the retention period ago (calls whose time ran out
    /// while no node watched them are ended first).
    CallSessions,
}

impl Step {
    pub const ALL: &[Step] = &[
        Step::RefreshTokens,
        Step::Revocations,
        Step::LoginFailures,
        Step::E2eeMessages,
        Step::E2eeClaimedKeys,
        Step::E2eeTickets,
        Step::CallCodes,
        Step::CallSessions,
    ];

    /// The table it deletes from (the metric's label).
    pub fn table(self) -> &'static str {
        match self {
            Step::RefreshTokens => "refresh_tokens",
            Step::Revocations => "revocations",
            Step::LoginFailures => "login_failures",
            Step::E2eeMessages => "e2ee_messages",
            Step::E2eeClaimedKeys => "e2ee_claimed_prekeys",
            Step::E2eeTickets => "e2ee_tickets",
            Step::CallCodes => "token_mappings",
            Step::CallSessions => "call_sessions",
        }
    }

    /// Deletes one batch (at most `limit` rows) of what is expired at `now`, or older than
    /// `cutoff` where the retention period applies; returns the rows deleted.
    async fn purge(
        self,
        store: &Store,
        now: i64,
        cutoff: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        match self {
            Step::RefreshTokens => store.purge_expired_tokens(now, limit).await,
            Step::Revocations => store.purge_revocations(now, limit).await,
            Step::LoginFailures => {
                store
                    .purge_login_failures(now - LOGIN_FAILURES_KEPT, now, limit)
                    .await
            }
            Step::E2eeMessages => {
                store
                    .e2ee_purge_messages(now - E2EE_MESSAGES_KEPT, limit)
                    .await
            }
            Step::E2eeClaimedKeys => {
                store
                    .e2ee_purge_claimed(now - E2EE_CLAIMED_KEPT, limit)
                    .await
            }
            Step::E2eeTickets => store.e2ee_purge_tickets(now, limit).await,
            Step::CallCodes => store.purge_call_codes(now, limit).await,
            Step::CallSessions => {
                store.expire_calls(now).await?;
                store.purge_calls(cutoff, limit).await
            }
        }
    }
}

/// The job as one node runs it.
#[derive(Debug, Clone)]
pub struct Retention {
    pub store: Store,
    /// This node's id (recorded as the run's owner).
    pub node: String,
    /// How long data under the retention period is kept (`retention_days`).
    pub keep: Duration,
    /// How often the cluster runs it (`retention_interval`).
    pub every: Duration,
}

impl Retention {
    /// Ticks a few times per interval (at most once a minute), running the job when this
    /// node wins the interval's claim. Runs until the task is dropped.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(
            (self.every / 4).clamp(Duration::from_millis(250), Duration::from_secs(60)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = match self.tick(crate::auth::unix_seconds()).await {
                Ok(Some(removed)) => {
                    if removed > 0 {
                        tracing::info!(removed, "retention: expired rows deleted");
                    }
                    "ran"
                }
                Ok(None) => "skipped",
                Err(e) => {
                    tracing::warn!(error = %e, "retention: the run failed; the next interval tries again");
                    "failed"
                }
            };
            metrics::counter!(m::RETENTION_RUNS, "result" => result).increment(1);
        }
    }

    /// Claims the run for `now` and runs it: the rows removed, or `None` when another node
    /// has run it within the interval.
    pub async fn tick(&self, now: i64) -> Result<Option<u64>, StoreError> {
        let every = i64::try_from(self.every.as_secs()).unwrap_or(i64::MAX);
        if !self.store.claim_job(JOB, &self.node, now, every).await? {
            return Ok(None);
        }
        self.run_once(now).await.map(Some)
    }

    /// Runs every step to the end, batch by batch, regardless of the claim.
    pub async fn run_once(&self, now: i64) -> Result<u64, StoreError> {
        let keep = i64::try_from(self.keep.as_secs()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(keep);
        let mut total = 0;
        for &step in Step::ALL {
            loop {
                let removed = step.purge(&self.store, now, cutoff, BATCH).await?;
                if removed > 0 {
                    metrics::counter!(m::RETENTION_REMOVED, "table" => step.table())
                        .increment(removed);
                }
                total += removed;
                if removed < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewUser, PoolSize, RefreshToken};

    const NOW: i64 = 1_800_000_000;

    async fn store_with_tokens(expired: usize, live: usize) -> Store {
        let size = PoolSize { min: 1, max: 1 };
        let store = Store::connect("sqlite::memory:", size).await.unwrap();
        store.migrate().await.unwrap();
        let user = NewUser {
            username: "owner",
            email: None,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            role: "user",
        };
        let user = store.create_user(&user, NOW).await.unwrap();
        for n in 0..expired + live {
            let expires_at = if n < expired { NOW - 1 } else { NOW + 3600 };
            let token = RefreshToken {
                id: format!("rt-{n}"),
                user_id: user.id.clone(),
                family_id: "family".into(),
                token_hash: format!("hash-{n}"),
                created_at: NOW - 7200,
                expires_at,
                revoked: false,
                replaced_by: None,
            };
            store.add_refresh_token(&token).await.unwrap();
        }
        store
    }

    #[tokio::test]
    async fn a_run_deletes_everything_expired_in_batches_and_the_interval_runs_once() {
        let expired = 2 * BATCH as usize + 17;
        let store = store_with_tokens(expired, 5).await;
        let job = |node: &str| Retention {
            store: store.clone(),
            node: node.into(),
            keep: Duration::from_secs(30 * 86_400),
            every: Duration::from_secs(3600),
        };
        assert_eq!(job("a").tick(NOW).await.unwrap(), Some(expired as u64));
        assert_eq!(
            job("b").tick(NOW + 10).await.unwrap(),
            None,
            "a ran it this interval"
        );
        assert_eq!(
            store.last_job_run(JOB).await.unwrap(),
            Some(("a".into(), NOW))
        );
        for n in expired..expired + 5 {
            let hash = format!("hash-{n}");
            assert!(
                store.refresh_token(&hash).await.unwrap().is_some(),
                "live tokens stay"
            );
        }
        assert_eq!(job("b").tick(NOW + 3600).await.unwrap(), Some(0));
    }
}
