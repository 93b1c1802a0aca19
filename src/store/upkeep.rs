//! The store's upkeep: which node runs a cluster-wide job this interval, and the columns
//! sealed with data keys that a key rotation re-seals.

use super::{Pool, Store, StoreError, timed};
use crate::datakey::DataKeys;

/// A column whose values are sealed with the node's data keys (`crate::datakey`), each with
/// the value of its row's `key_column` (a unique text column) as the sealing context, so that
/// `switchboard data rotate-key` can re-seal it row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumn {
    pub table: &'static str,
    pub key_column: &'static str,
    pub column: &'static str,
}

/// Every sealed column of the schema: what a key rotation walks. A feature that seals a
/// column lists it here.
pub const SEALED_COLUMNS: &[SealedColumn] = &[
    // QR call owners' profile fields (`docs/calls.md`).
    SealedColumn {
        table: "user_profiles",
        key_column: "user_id",
        column: "emergency_contact",
    },
    SealedColumn {
        table: "user_profiles",
        key_column: "user_id",
        column: "vehicle_number",
    },
    // E2EE devices' push tokens (`docs/e2ee.md`).
    SealedColumn {
        table: "e2ee_devices",
        key_column: "device_key",
        column: "push_token_sealed",
    },
];

/// What a key rotation did to a column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotated {
    /// Values sealed again under the current key.
    pub resealed: u64,
    /// Values already under the current key.
    pub current: u64,
    /// Values that opened with no key this node holds (or were tampered with); left as they
    /// are.
    pub failed: u64,
}

impl std::ops::AddAssign for Rotated {
    fn add_assign(&mut self, other: Self) {
        self.resealed += other.resealed;
        self.current += other.current;
        self.failed += other.failed;
    }
}

impl Store {
    /// Claims this interval's run of job `name` for `node`: true when no node started it in
    /// the last `every` seconds (then `node` is recorded as starting it at `now`). One
    /// conditional upsert, so of many nodes claiming at once exactly one wins.
    pub async fn claim_job(
        &self,
        name: &str,
        node: &str,
        now: i64,
        every: i64,
    ) -> Result<bool, StoreError> {
        timed("claim_job", async move {
            const SQL: &str = "INSERT INTO job_runs (name, node, started_at) VALUES ($1, $2, $3) \
                ON CONFLICT (name) DO UPDATE SET node = excluded.node, \
                started_at = excluded.started_at WHERE job_runs.started_at <= $4";
            let claimed = execute!(self, SQL, name, node, now, now.saturating_sub(every))?;
            Ok(claimed == 1)
        })
        .await
    }

    /// The node that last started job `name`, and when.
    pub async fn last_job_run(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        timed("last_job_run", async move {
            const SQL: &str = "SELECT node, started_at FROM job_runs WHERE name = $1";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(name).fetch_optional(pool).await?))
        })
        .await
    }

    /// Up to `limit` rows of `sealed` after key `after`, in key order: (key, sealed value).
    /// Rows whose value is NULL are skipped.
    pub async fn sealed_batch(
        &self,
        sealed: &SealedColumn,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        timed("sealed_batch", async move {
            let SealedColumn {
                table,
                key_column: key,
                column,
            } = sealed;
            // The names come from `SEALED_COLUMNS`, constants of this crate.
            let sql = format!(
                "SELECT {key}, {column} FROM {table} WHERE {key} > $1 AND {column} IS NOT NULL \
                 ORDER BY {key} LIMIT $2"
            );
            Ok(
                on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?),
            )
        })
        .await
    }

    /// Replaces `old` with `new` in the row keyed `key`; false when the value changed
    /// meanwhile (a concurrent write wins over a rotation, which is then not needed).
    pub async fn reseal(
        &self,
        sealed: &SealedColumn,
        key: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        timed("reseal", async move {
            let SealedColumn {
                table,
                key_column,
                column,
            } = sealed;
            let sql = format!(
                "UPDATE {table} SET {column} = $1 WHERE {key_column} = $2 AND {column} = $3"
            );
            let updated = on_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(new)
                .bind(key)
                .bind(old)
                .execute(pool)
                .await?
                .rows_affected());
            Ok(updated == 1)
        })
        .await
    }

    /// Re-seals every value of `sealed` that is not under `keys`' current key, `batch` rows
    /// at a time in key order (each row its own short update, so writers never wait long).
    /// Values no key opens are counted, never logged, and left as they are.
    pub async fn rotate_column(
        &self,
        sealed: &SealedColumn,
        keys: &DataKeys,
        batch: i64,
    ) -> Result<Rotated, StoreError> {
        let mut done = Rotated::default();
        let mut after = String::new();
        loop {
            let rows = self.sealed_batch(sealed, &after, batch).await?;
            for (key, value) in &rows {
                match keys.reseal(value, key) {
                    Ok(None) => done.current += 1,
                    Ok(Some(new)) => {
                        if self.reseal(sealed, key, value, &new).await? {
                            done.resealed += 1;
                        } else {
                            done.current += 1;
                        }
                    }
                    Err(_) => done.failed += 1,
                }
            }
            match rows.last() {
                Some((key, _)) if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= batch => {
                    after.clone_from(key);
                }
                _ => return Ok(done),
            }
        }
    }
}
