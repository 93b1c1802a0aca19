//! The E2EE relay's tables: accounts by phone hash, devices with their signed and fallback
//! keys, one-time prekeys (each claimed at most once, by one statement), claimed-key
//! tombstones, single-use WebSocket tickets and the queue of messages for offline devices.
//! Nothing here is plaintext: keys are public, contents are ciphertexts, bearer secrets are
//! SHA-256 hashes.

use super::{Pool, Store, StoreError, duplicate, timed};

/// A signed key: a signed prekey or a fallback ("last resort") key, Base64 as uploaded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SignedKey {
    pub key_id: i64,
    pub public_key: String,
    pub signature: String,
}

/// A one-time prekey, Base64 as uploaded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OneTimeKey {
    pub key_id: i64,
    pub public_key: String,
}

/// What registering a device stores (its account exists, or comes with it).
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub token_hash: String,
    pub registration_id: i64,
    pub signed_prekey: SignedKey,
    pub fallback_key: SignedKey,
    pub one_time_keys: Vec<OneTimeKey>,
}

/// A device as a peer's bundle fetch sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceKeys {
    pub device_id: i64,
    pub registration_id: i64,
    pub signed_prekey_id: i64,
    pub signed_prekey: String,
    pub prekey_signature: String,
    pub fallback_key_id: i64,
    pub fallback_key: String,
    pub fallback_signature: String,
}

/// An account's device: who holds a bearer token or a ticket.
///
/// Its `account_id:device_id` is the row's text key, `device_key`, under which its push token
/// is sealed ([`DeviceRef::key`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceRef {
    pub account_id: String,
    pub device_id: i64,
}

impl DeviceRef {
    /// `account_id:device_id`: the device row's text key.
    pub fn key(&self) -> String {
        format!("{}:{}", self.account_id, self.device_id)
    }
}

/// How an upload of one-time prekeys ended. Nothing is stored unless it is `Stored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// Stored (key ids already held with the same public key count as stored); the device
    /// now holds this many.
    Stored(i64),
    /// These key ids were claimed already, or are held with another public key.
    Conflict(Vec<i64>),
    /// The device would hold more than the cap.
    TooMany { held: i64 },
}

/// A queued message, as delivered.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Queued {
    pub id: i64,
    pub sender_id: String,
    pub sender_device: i64,
    pub content: String,
    pub sent_at: i64,
}

/// A message to queue for one device.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub device_id: i64,
    pub content: String,
}

const INSERT_DEVICE: &str = "INSERT INTO e2ee_devices (account_id, device_id, token_hash, \
    registration_id, signed_prekey_id, signed_prekey, prekey_signature, fallback_key_id, \
    fallback_key, fallback_signature, created_at, updated_at, device_key) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)";
const INSERT_PREKEY: &str = "INSERT INTO e2ee_prekeys (account_id, device_id, key_id, public_key) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, device_id, key_id) DO NOTHING";

/// Inserts `device` as `device_id` of `account` and its one-time keys, inside `$tx`.
macro_rules! insert_device {
    ($tx:expr, $account:expr, $device_id:expr, $device:expr, $now:expr) => {{
        let d = $device;
        sqlx::query(INSERT_DEVICE)
            .bind($account)
            .bind($device_id)
            .bind(&d.token_hash)
            .bind(d.registration_id)
            .bind(d.signed_prekey.key_id)
            .bind(&d.signed_prekey.public_key)
            .bind(&d.signed_prekey.signature)
            .bind(d.fallback_key.key_id)
            .bind(&d.fallback_key.public_key)
            .bind(&d.fallback_key.signature)
            .bind($now)
            .bind(format!("{}:{}", $account, $device_id))
            .execute(&mut *$tx)
            .await
            .map_err(duplicate("a device with this token"))?;
        for key in &d.one_time_keys {
            sqlx::query(INSERT_PREKEY)
                .bind($account)
                .bind($device_id)
                .bind(key.key_id)
                .bind(&key.public_key)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

impl Store {
    /// Creates the account of `phone_hash` with `device` as its device 1; returns the
    /// account's id. [`StoreError::Duplicate`] when the phone hash is registered already.
    pub async fn e2ee_register(
        &self,
        phone_hash: &str,
        identity_key: &str,
        device: &NewDevice,
        now: i64,
    ) -> Result<String, StoreError> {
        timed("e2ee_register", async move {
            const ACCOUNT: &str = "INSERT INTO e2ee_accounts (id, phone_hash, identity_key, \
                created_at) VALUES ($1, $2, $3, $4)";
            let id = uuid::Uuid::new_v4().to_string();
            on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                sqlx::query(ACCOUNT)
                    .bind(&id)
                    .bind(phone_hash)
                    .bind(identity_key)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(duplicate("an account with this phone hash"))?;
                insert_device!(tx, &id, 1_i64, device, now);
                tx.commit().await?;
            });
            Ok(id)
        })
        .await
    }

    /// Adds `device` to `account` under the next free device id; returns it.
    pub async fn e2ee_add_device(
        &self,
        account: &str,
        device: &NewDevice,
        now: i64,
    ) -> Result<i64, StoreError> {
        timed("e2ee_add_device", async move {
            const NEXT: &str = "SELECT COALESCE(MAX(device_id), 0) + 1 FROM e2ee_devices \
                WHERE account_id = $1";
            // Two devices added at once may pick the same id: the loser tries the next one.
            for _ in 0..5 {
                let added: Result<i64, StoreError> = on_pool!(self, pool => async {
                    let mut tx = pool.begin().await?;
                    let next: i64 = sqlx::query_scalar(NEXT)
                        .bind(account)
                        .fetch_one(&mut *tx)
                        .await?;
                    insert_device!(tx, account, next, device, now);
                    tx.commit().await?;
                    Ok(next)
                }
                .await);
                match added {
                    Err(StoreError::Duplicate(_)) => continue,
                    other => return other,
                }
            }
            Err(StoreError::Unavailable("device ids contended".into()))
        })
        .await
    }

    /// The device whose bearer token hashes to `hash`.
    pub async fn e2ee_device_by_token(&self, hash: &str) -> Result<Option<DeviceRef>, StoreError> {
        timed("e2ee_device_by_token", async move {
            const SQL: &str =
                "SELECT account_id, device_id FROM e2ee_devices WHERE token_hash = $1";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(hash).fetch_optional(pool).await?))
        })
        .await
    }

    /// The account of `phone_hash`: its id and identity key.
    pub async fn e2ee_account(
        &self,
        phone_hash: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        timed("e2ee_account", async move {
            const SQL: &str = "SELECT id, identity_key FROM e2ee_accounts WHERE phone_hash = $1";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL)
                .bind(phone_hash)
                .fetch_optional(pool)
                .await?))
        })
        .await
    }

    /// The identity key of account `id`.
    pub async fn e2ee_identity_key(&self, id: &str) -> Result<Option<String>, StoreError> {
        timed("e2ee_identity_key", async move {
            const SQL: &str = "SELECT identity_key FROM e2ee_accounts WHERE id = $1";
            Ok(on_pool!(self, pool => sqlx::query_scalar(SQL).bind(id).fetch_optional(pool).await?))
        })
        .await
    }

    /// Every device of `account` with its public keys, by device id.
    pub async fn e2ee_devices(&self, account: &str) -> Result<Vec<DeviceKeys>, StoreError> {
        timed("e2ee_devices", async move {
            const SQL: &str = "SELECT device_id, registration_id, signed_prekey_id, \
                signed_prekey, prekey_signature, fallback_key_id, fallback_key, \
                fallback_signature FROM e2ee_devices WHERE account_id = $1 ORDER BY device_id";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(account).fetch_all(pool).await?))
        })
        .await
    }

    /// Removes a device with its keys, tickets and queued messages; `false` when unknown.
    pub async fn e2ee_remove_device(&self, device: &DeviceRef) -> Result<bool, StoreError> {
        timed("e2ee_remove_device", async move {
            const SQL: &str = "DELETE FROM e2ee_devices WHERE account_id = $1 AND device_id = $2";
            Ok(execute!(self, SQL, &device.account_id, device.device_id)? == 1)
        })
        .await
    }

    /// The one-time prekeys `device` holds unclaimed.
    pub async fn e2ee_prekey_count(&self, device: &DeviceRef) -> Result<i64, StoreError> {
        timed("e2ee_prekey_count", async move {
            const SQL: &str =
                "SELECT COUNT(*) FROM e2ee_prekeys WHERE account_id = $1 AND device_id = $2";
            Ok(on_pool!(self, pool => sqlx::query_scalar(SQL)
                .bind(&device.account_id)
                .bind(device.device_id)
                .fetch_one(pool)
                .await?))
        })
        .await
    }

    /// Stores one-time prekeys of `device`, and its new signed prekey if any, all or nothing:
    /// a key id claimed in the tombstones' window, or held with another public key, refuses
    /// the upload; so does holding more than `cap`. Keys held already with the same public
    /// key are kept as they are, so that a retried upload stores nothing twice.
    pub async fn e2ee_upload(
        &self,
        device: &DeviceRef,
        keys: &[OneTimeKey],
        signed: Option<&SignedKey>,
        cap: i64,
        now: i64,
    ) -> Result<Upload, StoreError> {
        timed("e2ee_upload", async move {
            // The first statement locks the device's row (Postgres) or the database (SQLite),
            // so that concurrent uploads of one device count against the cap in turn.
            const TOUCH: &str = "UPDATE e2ee_devices SET updated_at = $3 \
                WHERE account_id = $1 AND device_id = $2";
            const CLAIMED: &str = "SELECT 1 FROM e2ee_claimed_prekeys \
                WHERE account_id = $1 AND device_id = $2 AND key_id = $3";
            const HELD: &str = "SELECT public_key FROM e2ee_prekeys \
                WHERE account_id = $1 AND device_id = $2 AND key_id = $3";
            const COUNT: &str =
                "SELECT COUNT(*) FROM e2ee_prekeys WHERE account_id = $1 AND device_id = $2";
            const SIGNED: &str = "UPDATE e2ee_devices SET signed_prekey_id = $3, \
                signed_prekey = $4, prekey_signature = $5 WHERE account_id = $1 AND device_id = $2";
            let (account, id) = (&device.account_id, device.device_id);
            let outcome = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                sqlx::query(TOUCH).bind(account).bind(id).bind(now).execute(&mut *tx).await?;
                let mut conflicts = Vec::new();
                let mut fresh = 0_i64;
                for key in keys {
                    let claimed: Option<i32> = sqlx::query_scalar(CLAIMED)
                        .bind(account).bind(id).bind(key.key_id)
                        .fetch_optional(&mut *tx).await?;
                    let held: Option<String> = sqlx::query_scalar(HELD)
                        .bind(account).bind(id).bind(key.key_id)
                        .fetch_optional(&mut *tx).await?;
                    match held {
                        _ if claimed.is_some() => conflicts.push(key.key_id),
                        Some(held) if held != key.public_key => conflicts.push(key.key_id),
                        Some(_) => {}
                        None => fresh += 1,
                    }
                }
                if !conflicts.is_empty() {
                    return Ok(Upload::Conflict(conflicts));
                }
                let held: i64 = sqlx::query_scalar(COUNT)
                    .bind(account).bind(id).fetch_one(&mut *tx).await?;
                if held + fresh > cap {
                    return Ok(Upload::TooMany { held });
                }
                for key in keys {
                    sqlx::query(INSERT_PREKEY)
                        .bind(account).bind(id).bind(key.key_id).bind(&key.public_key)
                        .execute(&mut *tx).await?;
                }
                if let Some(s) = signed {
                    sqlx::query(SIGNED)
                        .bind(account).bind(id).bind(s.key_id).bind(&s.public_key)
                        .bind(&s.signature)
                        .execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Upload::Stored(held + fresh)
            });
            Ok(outcome)
        })
        .await
    }

    /// Claims the oldest one-time prekey of `device` (`None` when none is left) and keeps its
    /// id as a tombstone. On Postgres one statement, skipping keys that concurrent claims
    /// hold, so that no two claims on any node get the same key; SQLite's single writer
    /// serialises the claims.
    pub async fn e2ee_claim(
        &self,
        device: &DeviceRef,
        now: i64,
    ) -> Result<Option<OneTimeKey>, StoreError> {
        timed("e2ee_claim", async move {
            const POSTGRES: &str = "WITH claimed AS (DELETE FROM e2ee_prekeys WHERE id = \
                (SELECT id FROM e2ee_prekeys WHERE account_id = $1 AND device_id = $2 \
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                RETURNING account_id, device_id, key_id, public_key), \
                tombstone AS (INSERT INTO e2ee_claimed_prekeys \
                (account_id, device_id, key_id, claimed_at) \
                SELECT account_id, device_id, key_id, $3 FROM claimed \
                ON CONFLICT (account_id, device_id, key_id) DO UPDATE SET claimed_at = $3) \
                SELECT key_id, public_key FROM claimed";
            const SQLITE: &str = "DELETE FROM e2ee_prekeys WHERE id = \
                (SELECT id FROM e2ee_prekeys WHERE account_id = $1 AND device_id = $2 \
                ORDER BY id LIMIT 1) RETURNING key_id, public_key";
            const TOMBSTONE: &str = "INSERT INTO e2ee_claimed_prekeys \
                (account_id, device_id, key_id, claimed_at) VALUES ($1, $2, $3, $4) \
                ON CONFLICT (account_id, device_id, key_id) DO UPDATE SET claimed_at = $4";
            let (account, id) = (&device.account_id, device.device_id);
            let key = match &self.pool {
                Pool::Postgres(pool) => {
                    sqlx::query_as(POSTGRES)
                        .bind(account)
                        .bind(id)
                        .bind(now)
                        .fetch_optional(pool)
                        .await?
                }
                Pool::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    let key: Option<OneTimeKey> = sqlx::query_as(SQLITE)
                        .bind(account)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(key) = &key {
                        sqlx::query(TOMBSTONE)
                            .bind(account)
                            .bind(id)
                            .bind(key.key_id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    key
                }
            };
            Ok(key)
        })
        .await
    }
}
