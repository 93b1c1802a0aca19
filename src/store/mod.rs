//! The durable store: accounts, refresh tokens, API keys and security events, in an embedded
//! SQLite file (the default, `sqlite://data/switchboard.db`) or in Postgres
//! (`postgres://...`). The only module that imports sqlx.
//!
//! One [`Store`] speaks to either engine. The SQL is written once (`$1`-style parameters, which
//! both engines take) and each statement runs on whichever pool the URL chose; only the
//! migrations differ per engine (`migrations/sqlite`, `migrations/postgres`, embedded in the
//! binary and applied by [`Store::migrate`]). Times are Unix seconds, ids UUID text, and
//! secrets never stored in the clear: passwords as argon2id hashes, refresh tokens as SHA-256
//! hashes, API-key secrets sealed. Signaling never waits on the store.

mod records;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use e2ee::{DeviceKeys, DeviceRef, NewDevice, OneTimeKey, Outgoing, Queued, SignedKey, Upload};
pub use records::{ApiKey, NewUser, RefreshToken, SecurityEvent, User};

use crate::auth::Revocation;
use crate::metrics as m;

const INSERT_REFRESH_TOKEN: &str = "INSERT INTO refresh_tokens \
    (id, user_id, family_id, token_hash, created_at, expires_at, revoked, replaced_by) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// How long a connection attempt or a wait for a pooled connection may take.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no engine the store speaks, or is malformed.
    #[error("{0}")]
    Url(String),
    /// A unique key is taken (a username, an API key name).
    #[error("{0} already exists")]
    Duplicate(&'static str),
    /// The database could not be reached or failed; the text never holds credentials.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("migrating the database failed: {0}")]
    Migrate(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Maps a unique-key violation to [`StoreError::Duplicate`] of `what`.
fn duplicate(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate(what),
        _ => StoreError::from(e),
    }
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the engine's pool: the same code, type-checked once per
/// engine.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs a statement with `binds` on the store's pool; yields the rows it affected.
macro_rules! execute {
    ($store:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        on_pool!($store, pool => sqlx::query($sql)
            $(.bind($bind))*
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
    };
}

#[cfg(test)]
mod contract;
mod e2ee;
#[cfg(test)]
mod e2ee_contract;
mod e2ee_queue;
mod upkeep;

pub use upkeep::{Rotated, SEALED_COLUMNS, SealedColumn};
mod calls;

pub use calls::{CallCode, CallSession, SealedProfile};

/// When failed logins lock a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutRule {
    /// Failures within the window that lock it.
    pub threshold: i64,
    /// Failures older than this many seconds no longer count.
    pub window_seconds: i64,
    /// For how long it is locked.
    pub lock_seconds: i64,
}

/// What [`Store::reserve_login`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginAttempt {
    /// The attempt is counted; `locked_until` is set when it was the one too many.
    Counted { locked_until: Option<i64> },
    /// The name is locked until then: the password is not checked.
    Locked(i64),
}

/// Pool sizes.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    pub min: u32,
    pub max: u32,
}

/// The durable store (cheap to clone: the pool is shared).
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Opens the database `url` names: `sqlite://PATH` (the file and its directory are created
    /// when missing; `sqlite::memory:` for a private in-memory database) or `postgres://...`.
    pub async fn connect(url: &str, size: PoolSize) -> Result<Self, StoreError> {
        let pool = match engine(url)? {
            Engine::Sqlite => Pool::Sqlite(sqlite(url, size).await?),
            Engine::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Url(redacted_error(&e)))?;
                let pool = PgPoolOptions::new()
                    .min_connections(size.min)
                    .max_connections(size.max)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                Pool::Postgres(pool)
            }
        };
        Ok(Self { pool })
    }

    /// Like [`Store::connect`], but a Postgres pool connects on first use instead of now, so
    /// that a node can start while its database is down (an SQLite file opens at once).
    pub async fn connect_lazy(url: &str, size: PoolSize) -> Result<Self, StoreError> {
        match engine(url)? {
            Engine::Sqlite => Self::connect(url, size).await,
            Engine::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Url(redacted_error(&e)))?;
                let pool = PgPoolOptions::new()
                    .min_connections(size.min)
                    .max_connections(size.max)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options);
                Ok(Self {
                    pool: Pool::Postgres(pool),
                })
            }
        }
    }

    /// `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Applies the migrations the database lacks; a no-op when it is current.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        timed("migrate", async move {
            let result = match &self.pool {
                Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
                Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
            };
            result.map_err(|e| StoreError::Migrate(e.to_string()))
        })
        .await
    }

    /// The versions of the migrations applied, in order.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        timed("applied_migrations", async move {
            const SQL: &str = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
            Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_all(pool).await?))
        })
        .await
    }

    /// Checks that the database answers (for readiness).
    pub async fn check(&self) -> Result<(), StoreError> {
        timed("check", async move {
            execute!(self, "SELECT 1")?;
            Ok(())
        })
        .await
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }

    pub async fn create_user(&self, new: &NewUser<'_>, now: i64) -> Result<User, StoreError> {
        timed("create_user", async move {
            const SQL: &str = "INSERT INTO users \
                (id, username, username_key, email, password_hash, role, active, created_at) \
                VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7)";
            let id = uuid::Uuid::new_v4().to_string();
            let key = username_key(new.username);
            execute!(
                self,
                SQL,
                &id,
                new.username,
                &key,
                new.email,
                new.password_hash,
                new.role,
                now
            )
            .map_err(duplicate("a user with this username"))?;
            Ok(User {
                id,
                username: new.username.to_owned(),
                email: new.email.map(str::to_owned),
                password_hash: new.password_hash.to_owned(),
                role: new.role.to_owned(),
                active: true,
                created_at: now,
                last_login_at: None,
            })
        })
        .await
    }

    /// The user called `username`, in any case.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        timed("user_by_name", async move {
            const SQL: &str = "SELECT * FROM users WHERE username_key = $1";
            let key = username_key(username);
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(&key).fetch_optional(pool).await?))
        })
        .await
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        timed("user_by_id", async move {
            const SQL: &str = "SELECT * FROM users WHERE id = $1";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?))
        })
        .await
    }

    /// Every user, by username.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        timed("users", async move {
            const SQL: &str = "SELECT * FROM users ORDER BY username_key";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?))
        })
        .await
    }

    /// Replaces a user's password hash; `false` when there is no such user.
    pub async fn set_password(&self, id: &str, hash: &str) -> Result<bool, StoreError> {
        timed("set_password", async move {
            const SQL: &str = "UPDATE users SET password_hash = $2 WHERE id = $1";
            Ok(execute!(self, SQL, id, hash)? == 1)
        })
        .await
    }

    /// Enables or disables a user; `false` when there is no such user.
    pub async fn set_active(&self, id: &str, active: bool) -> Result<bool, StoreError> {
        timed("set_active", async move {
            const SQL: &str = "UPDATE users SET active = $2 WHERE id = $1";
            Ok(execute!(self, SQL, id, active)? == 1)
        })
        .await
    }

    /// Removes a user and its refresh tokens; `false` when there is no such user.
    pub async fn remove_user(&self, id: &str) -> Result<bool, StoreError> {
        timed("remove_user", async move {
            const TOKENS: &str = "DELETE FROM refresh_tokens WHERE user_id = $1";
            const USER: &str = "DELETE FROM users WHERE id = $1";
            let removed = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                sqlx::query(TOKENS).bind(id).execute(&mut *tx).await?;
                let done = sqlx::query(USER).bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                done.rows_affected()
            });
            Ok(removed == 1)
        })
        .await
    }

    /// Records a successful login at `now`.
    pub async fn record_login(&self, id: &str, now: i64) -> Result<(), StoreError> {
        timed("record_login", async move {
            const SQL: &str = "UPDATE users SET last_login_at = $2 WHERE id = $1";
            execute!(self, SQL, id, now)?;
            Ok(())
        })
        .await
    }

    /// Counts a login attempt of `username` at `now` before its password is checked, so that
    /// concurrent attempts cannot pass a lockout together. Failures older than `window` no
    /// longer count; the `threshold`-th one locks the name until `lock_until`. One statement,
    /// so that attempts on every node count. [`LoginAttempt::Locked`] when the name is locked.
    pub async fn reserve_login(
        &self,
        username: &str,
        now: i64,
        rule: LockoutRule,
    ) -> Result<LoginAttempt, StoreError> {
        timed("reserve_login", async move {
            const SQL: &str = "INSERT INTO login_failures \
                (username_key, failures, updated_at, locked_until) \
                VALUES ($1, 1, $2, CASE WHEN $3 <= 1 THEN $4 ELSE NULL END) \
                ON CONFLICT (username_key) DO UPDATE SET \
                failures = CASE WHEN login_failures.locked_until IS NOT NULL \
                    OR login_failures.updated_at < $5 THEN 1 \
                    ELSE login_failures.failures + 1 END, \
                updated_at = $2, \
                locked_until = CASE WHEN (CASE WHEN login_failures.locked_until IS NOT NULL \
                    OR login_failures.updated_at < $5 THEN 1 \
                    ELSE login_failures.failures + 1 END) >= $3 THEN $4 ELSE NULL END \
                WHERE login_failures.locked_until IS NULL OR login_failures.locked_until <= $2 \
                RETURNING failures, locked_until";
            const LOCKED: &str = "SELECT locked_until FROM login_failures WHERE username_key = $1";
            let key = username_key(username);
            let row: Option<(i64, Option<i64>)> = on_pool!(self, pool => sqlx::query_as(SQL)
                .bind(&key)
                .bind(now)
                .bind(rule.threshold)
                .bind(now.saturating_add(rule.lock_seconds))
                .bind(now.saturating_sub(rule.window_seconds))
                .fetch_optional(pool)
                .await?);
            if let Some((_, locked_until)) = row {
                return Ok(LoginAttempt::Counted { locked_until });
            }
            let until: Option<Option<i64>> = on_pool!(self, pool => sqlx::query_scalar(LOCKED)
                .bind(&key)
                .fetch_optional(pool)
                .await?);
            Ok(LoginAttempt::Locked(until.flatten().unwrap_or(now)))
        })
        .await
    }

    /// Forgets the failed logins of `username` (a success, or an administrator's unlock);
    /// `false` when there were none.
    pub async fn clear_login_failures(&self, username: &str) -> Result<bool, StoreError> {
        timed("clear_login_failures", async move {
            const SQL: &str = "DELETE FROM login_failures WHERE username_key = $1";
            Ok(execute!(self, SQL, &username_key(username))? == 1)
        })
        .await
    }

    /// The failed logins counted for `username` and until when it is locked, if any.
    pub async fn login_failures(
        &self,
        username: &str,
    ) -> Result<Option<(i64, Option<i64>)>, StoreError> {
        timed("login_failures", async move {
            const SQL: &str =
                "SELECT failures, locked_until FROM login_failures WHERE username_key = $1";
            let key = username_key(username);
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(&key).fetch_optional(pool).await?))
        })
        .await
    }

    /// Deletes up to `limit` failure counts last touched before `stale` and not locked at
    /// `now`; returns how many.
    pub async fn purge_login_failures(
        &self,
        stale: i64,
        now: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        timed("purge_login_failures", async move {
            const SQL: &str = "DELETE FROM login_failures WHERE username_key IN \
                (SELECT username_key FROM login_failures WHERE updated_at < $1 \
                AND (locked_until IS NULL OR locked_until <= $2) LIMIT $3)";
            Ok(execute!(self, SQL, stale, now, limit)?)
        })
        .await
    }

    pub async fn add_refresh_token(&self, token: &RefreshToken) -> Result<(), StoreError> {
        timed("add_refresh_token", async move {
            const SQL: &str = INSERT_REFRESH_TOKEN;
            let t = token;
            execute!(
                self,
                SQL,
                &t.id,
                &t.user_id,
                &t.family_id,
                &t.token_hash,
                t.created_at,
                t.expires_at,
                t.revoked,
                &t.replaced_by
            )
            .map_err(duplicate("a refresh token with this hash"))?;
            Ok(())
        })
        .await
    }

    /// The refresh token whose hash is `hash`.
    pub async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshToken>, StoreError> {
        timed("refresh_token", async move {
            const SQL: &str = "SELECT * FROM refresh_tokens WHERE token_hash = $1";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(hash).fetch_optional(pool).await?))
        })
        .await
    }

    /// Replaces refresh token `old` by `new` in one transaction: `false` (and nothing stored)
    /// when `old` was already revoked or rotated — a reuse, which the caller answers by
    /// revoking the family.
    pub async fn rotate_refresh_token(
        &self,
        old: &str,
        new: &RefreshToken,
    ) -> Result<bool, StoreError> {
        timed("rotate_refresh_token", async move {
            const REVOKE: &str = "UPDATE refresh_tokens SET revoked = TRUE, replaced_by = $2 \
                WHERE id = $1 AND NOT revoked";
            const INSERT: &str = INSERT_REFRESH_TOKEN;
            let rotated = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let revoked = sqlx::query(REVOKE).bind(old).bind(&new.id).execute(&mut *tx).await?;
                if revoked.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query(INSERT)
                    .bind(&new.id)
                    .bind(&new.user_id)
                    .bind(&new.family_id)
                    .bind(&new.token_hash)
                    .bind(new.created_at)
                    .bind(new.expires_at)
                    .bind(new.revoked)
                    .bind(&new.replaced_by)
                    .execute(&mut *tx)
                    .await
                    .map_err(duplicate("a refresh token with this hash"))?;
                tx.commit().await?;
                true
            });
            Ok(rotated)
        })
        .await
    }

    /// Revokes every token of a family; returns how many were still live.
    pub async fn revoke_family(&self, family: &str) -> Result<u64, StoreError> {
        timed("revoke_family", async move {
            const SQL: &str =
                "UPDATE refresh_tokens SET revoked = TRUE WHERE family_id = $1 AND NOT revoked";
            Ok(execute!(self, SQL, family)?)
        })
        .await
    }

    /// Revokes every refresh token of a user; returns how many were still live.
    pub async fn revoke_user_tokens(&self, user_id: &str) -> Result<u64, StoreError> {
        timed("revoke_user_tokens", async move {
            const SQL: &str =
                "UPDATE refresh_tokens SET revoked = TRUE WHERE user_id = $1 AND NOT revoked";
            Ok(execute!(self, SQL, user_id)?)
        })
        .await
    }

    /// Deletes up to `limit` refresh tokens that expired before `now`; returns how many.
    pub async fn purge_expired_tokens(&self, now: i64, limit: i64) -> Result<u64, StoreError> {
        timed("purge_expired_tokens", async move {
            const SQL: &str = "DELETE FROM refresh_tokens WHERE id IN \
                (SELECT id FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)";
            Ok(execute!(self, SQL, now, limit)?)
        })
        .await
    }

    pub async fn add_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        timed("add_api_key", async move {
            const SQL: &str = "INSERT INTO api_keys (id, name, secret_sealed, created_at, revoked_at) \
                VALUES ($1, $2, $3, $4, $5)";
            execute!(
                self,
                SQL,
                &key.id,
                &key.name,
                &key.secret_sealed,
                key.created_at,
                key.revoked_at
            )
            .map_err(duplicate("an API key with this id or name"))?;
            Ok(())
        })
        .await
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        timed("api_key", async move {
            const SQL: &str = "SELECT * FROM api_keys WHERE id = $1";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?))
        })
        .await
    }

    /// Every API key, revoked ones included, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        timed("api_keys", async move {
            const SQL: &str = "SELECT * FROM api_keys ORDER BY created_at, id";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?))
        })
        .await
    }

    /// Revokes an API key at `now`; `false` when there is no live key with this id.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        timed("revoke_api_key", async move {
            const SQL: &str =
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
            Ok(execute!(self, SQL, id, now)? == 1)
        })
        .await
    }

    pub async fn record_event(&self, event: &SecurityEvent) -> Result<(), StoreError> {
        timed("record_event", async move {
            const SQL: &str = "INSERT INTO security_events (at, kind, user_id, username, ip, detail) \
                VALUES ($1, $2, $3, $4, $5, $6)";
            let e = event;
            execute!(
                self,
                SQL,
                e.at,
                &e.kind,
                &e.user_id,
                &e.username,
                &e.ip,
                &e.detail
            )?;
            Ok(())
        })
        .await
    }

    /// Keeps `revocation` (made at `now`); returns its sequence number.
    pub async fn add_revocation(
        &self,
        revocation: &Revocation,
        now: i64,
    ) -> Result<i64, StoreError> {
        timed("add_revocation", async move {
            const SQL: &str = "INSERT INTO revocations \
                (kind, subject, issued_before, expires_at, created_at) \
                VALUES ($1, $2, $3, $4, $5) RETURNING seq";
            let (subject, before) = match revocation {
                Revocation::Token { jti, .. } => (jti.as_str(), None),
                Revocation::Key { kid } => (kid.as_str(), None),
                Revocation::User { user, before, .. } => (user.as_str(), Some(seconds(*before))),
            };
            let expires = seconds(revocation.expires_at());
            let seq: i64 = on_pool!(self, pool => sqlx::query_scalar(SQL)
                .bind(revocation.kind())
                .bind(subject)
                .bind(before)
                .bind(expires)
                .bind(now)
                .fetch_one(pool)
                .await?);
            Ok(seq)
        })
        .await
    }

    /// The revocations after sequence number `after` that still matter at `now`, in order,
    /// at most `limit`; each with its sequence number.
    pub async fn revocations_after(
        &self,
        after: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Revocation)>, StoreError> {
        timed("revocations_after", async move {
            const SQL: &str = "SELECT seq, kind, subject, issued_before, expires_at FROM revocations \
                WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3";
            let rows: Vec<RevocationRow> = on_pool!(self, pool => sqlx::query_as(SQL)
                .bind(after)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?);
            Ok(rows.into_iter().filter_map(revocation).collect())
        })
        .await
    }

    /// The revocations up to sequence number `upto` made at `since` or later that still
    /// matter at `now`, at most `limit`: rows whose insert committed after a later-numbered
    /// one's, which a reader going by sequence numbers passed.
    pub async fn recent_revocations(
        &self,
        upto: i64,
        since: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Revocation)>, StoreError> {
        timed("recent_revocations", async move {
            const SQL: &str = "SELECT seq, kind, subject, issued_before, expires_at FROM revocations \
                WHERE seq <= $1 AND created_at >= $2 AND expires_at > $3 ORDER BY seq LIMIT $4";
            let rows: Vec<RevocationRow> = on_pool!(self, pool => sqlx::query_as(SQL)
                .bind(upto)
                .bind(since)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?);
            Ok(rows.into_iter().filter_map(revocation).collect())
        })
        .await
    }

    /// Deletes up to `limit` revocations whose tokens have all expired by `now`; returns how
    /// many.
    pub async fn purge_revocations(&self, now: i64, limit: i64) -> Result<u64, StoreError> {
        timed("purge_revocations", async move {
            const SQL: &str = "DELETE FROM revocations WHERE seq IN \
                (SELECT seq FROM revocations WHERE expires_at <= $1 LIMIT $2)";
            Ok(execute!(self, SQL, now, limit)?)
        })
        .await
    }

    /// The latest `limit` security events, newest first.
    pub async fn events(&self, limit: i64) -> Result<Vec<SecurityEvent>, StoreError> {
        timed("events", async move {
            const SQL: &str = "SELECT * FROM security_events ORDER BY at DESC, id DESC LIMIT $1";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(limit).fetch_all(pool).await?))
        })
        .await
    }
}

/// A row of `revocations`: seq, kind, subject, issued_before, expires_at.
type RevocationRow = (i64, String, String, Option<i64>, i64);

/// The revocation a row holds, with its sequence number; `None` for a kind this version does
/// not know.
fn revocation((seq, kind, subject, before, expires): RevocationRow) -> Option<(i64, Revocation)> {
    let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
    let revocation = match kind.as_str() {
        "token" => Revocation::Token {
            jti: subject,
            expires_at: unsigned(expires),
        },
        "key" => Revocation::Key { kid: subject },
        "user" => Revocation::User {
            user: subject,
            before: unsigned(before.unwrap_or(0)),
            expires_at: unsigned(expires),
        },
        _ => return None,
    };
    Some((seq, revocation))
}

/// Runs one store operation, timed and counted under `operation` (its method's name):
/// `switchboard_store_query_seconds` and, when it fails, `switchboard_store_errors_total`.
async fn timed<T>(
    operation: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let result = work.await;
    metrics::histogram!(m::STORE_QUERY, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!(m::STORE_ERRORS, "operation" => operation).increment(1);
    }
    result
}

/// Unix seconds as the store keeps them (`u64::MAX`, "never", as `i64::MAX`).
fn seconds(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The key a username is unique under: folded to lower case.
pub fn username_key(username: &str) -> String {
    username.to_lowercase()
}

enum Engine {
    Sqlite,
    Postgres,
}

fn engine(url: &str) -> Result<Engine, StoreError> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme {
        "sqlite" => Ok(Engine::Sqlite),
        "postgres" | "postgresql" => Ok(Engine::Postgres),
        _ => Err(StoreError::Url(format!(
            "{:?} is not a sqlite:// or postgres:// URL",
            redact(url)
        ))),
    }
}

/// Opens an SQLite database, creating the file and its directory when missing.
async fn sqlite(url: &str, size: PoolSize) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Url(e.to_string()))?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(ACQUIRE_TIMEOUT);
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let options = if memory {
        options
    } else {
        if let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        options.journal_mode(SqliteJournalMode::Wal)
    };
    // An in-memory database lives as long as its connection: keep exactly one.
    let (min, max) = if memory { (1, 1) } else { (size.min, size.max) };
    let pool = SqlitePoolOptions::new()
        .min_connections(min)
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// A database URL without its credentials and query (which may carry `password=`).
pub fn redact(url: &str) -> String {
    let url = url.split_once(['?', '#']).map_or(url, |(kept, _)| kept);
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => url.to_owned(),
    }
}

/// A URL parse error's text, which may quote the URL, reduced to its kind.
fn redacted_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "malformed postgres:// URL".into(),
        other => other.to_string(),
    }
}
