//! The E2EE relay's queue and tickets: messages kept until their device acknowledges them,
//! single-use WebSocket tickets taken in one statement, push tokens, and the batched purges
//! the retention job runs.

use super::e2ee::{DeviceRef, Outgoing, Queued};
use super::{Pool, Store, StoreError, timed};

impl Store {
    /// Queues one message per device of `recipient` from `sender`, all or nothing; returns
    /// their ids in the order given.
    pub async fn e2ee_enqueue(
        &self,
        recipient: &str,
        sender: &DeviceRef,
        messages: &[Outgoing],
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        timed("e2ee_enqueue", async move {
            const SQL: &str = "INSERT INTO e2ee_messages \
                (account_id, device_id, sender_id, sender_device, content, sent_at) \
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
            let ids = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let mut ids = Vec::with_capacity(messages.len());
                for m in messages {
                    let id: i64 = sqlx::query_scalar(SQL)
                        .bind(recipient)
                        .bind(m.device_id)
                        .bind(&sender.account_id)
                        .bind(sender.device_id)
                        .bind(&m.content)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                    ids.push(id);
                }
                tx.commit().await?;
                ids
            });
            Ok(ids)
        })
        .await
    }

    /// The messages waiting for `device` with ids above `after`, oldest first, at most `limit`.
    pub async fn e2ee_pending(
        &self,
        device: &DeviceRef,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Queued>, StoreError> {
        timed("e2ee_pending", async move {
            const SQL: &str = "SELECT id, sender_id, sender_device, content, sent_at \
                FROM e2ee_messages WHERE account_id = $1 AND device_id = $2 AND id > $3 \
                ORDER BY id LIMIT $4";
            Ok(on_pool!(self, pool => sqlx::query_as(SQL)
                .bind(&device.account_id)
                .bind(device.device_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?))
        })
        .await
    }

    /// Deletes the messages of `device` among `ids` (acknowledged); unknown ids, and ids of
    /// other devices, change nothing. Returns how many went.
    pub async fn e2ee_ack(&self, device: &DeviceRef, ids: &[i64]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        timed("e2ee_ack", async move {
            let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "DELETE FROM e2ee_messages WHERE account_id = $1 AND device_id = $2 \
                 AND id IN ({})",
                list.join(", ")
            );
            // Only numbered placeholders are written into the text; the ids are bound.
            Ok(on_pool!(self, pool => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(&device.account_id)
                    .bind(device.device_id);
                for id in ids {
                    query = query.bind(*id);
                }
                query.execute(pool).await?.rows_affected()
            }))
        })
        .await
    }

    /// Keeps a WebSocket ticket of `device` by its hash until `expires_at`.
    pub async fn e2ee_add_ticket(
        &self,
        hash: &str,
        device: &DeviceRef,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        timed("e2ee_add_ticket", async move {
            const SQL: &str = "INSERT INTO e2ee_tickets \
                (ticket_hash, account_id, device_id, expires_at) VALUES ($1, $2, $3, $4)";
            execute!(
                self,
                SQL,
                hash,
                &device.account_id,
                device.device_id,
                expires_at
            )?;
            Ok(())
        })
        .await
    }

    /// Takes the ticket that hashes to `hash`: one statement deletes and returns it, so that
    /// of two nodes taking one ticket at once exactly one gets it. `None` when unknown, used
    /// or expired at `now`.
    pub async fn e2ee_take_ticket(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<DeviceRef>, StoreError> {
        timed("e2ee_take_ticket", async move {
            const SQL: &str = "DELETE FROM e2ee_tickets WHERE ticket_hash = $1 \
                RETURNING account_id, device_id, expires_at";
            let row: Option<(String, i64, i64)> = on_pool!(self, pool => sqlx::query_as(SQL)
                .bind(hash)
                .fetch_optional(pool)
                .await?);
            Ok(row
                .filter(|(_, _, expires)| *expires > now)
                .map(|(account_id, device_id, _)| DeviceRef {
                    account_id,
                    device_id,
                }))
        })
        .await
    }

    /// Sets (or with `None` clears) the sealed push token of `device`; `false` when unknown.
    pub async fn e2ee_set_push_token(
        &self,
        device: &DeviceRef,
        sealed: Option<&str>,
    ) -> Result<bool, StoreError> {
        timed("e2ee_set_push_token", async move {
            const SQL: &str = "UPDATE e2ee_devices SET push_token_sealed = $3 \
                WHERE account_id = $1 AND device_id = $2";
            Ok(execute!(self, SQL, &device.account_id, device.device_id, sealed)? == 1)
        })
        .await
    }

    /// The sealed push token of `device`, if it has one.
    pub async fn e2ee_push_token(&self, device: &DeviceRef) -> Result<Option<String>, StoreError> {
        timed("e2ee_push_token", async move {
            const SQL: &str = "SELECT push_token_sealed FROM e2ee_devices \
                WHERE account_id = $1 AND device_id = $2";
            let token: Option<Option<String>> = on_pool!(self, pool => sqlx::query_scalar(SQL)
                .bind(&device.account_id)
                .bind(device.device_id)
                .fetch_optional(pool)
                .await?);
            Ok(token.flatten())
        })
        .await
    }

    /// Deletes at most `batch` queued messages sent before `before`; returns how many.
    pub async fn e2ee_purge_messages(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        timed("e2ee_purge_messages", async move {
            const SQL: &str = "DELETE FROM e2ee_messages WHERE id IN (SELECT id FROM \
                e2ee_messages WHERE sent_at < $1 ORDER BY id LIMIT $2)";
            Ok(execute!(self, SQL, before, batch)?)
        })
        .await
    }

    /// Deletes at most `batch` claimed-key tombstones from before `before`; returns how many.
    pub async fn e2ee_purge_claimed(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        timed("e2ee_purge_claimed", async move {
            const SQL: &str = "DELETE FROM e2ee_claimed_prekeys WHERE (account_id, device_id, \
                key_id) IN (SELECT account_id, device_id, key_id FROM e2ee_claimed_prekeys \
                WHERE claimed_at < $1 LIMIT $2)";
            Ok(execute!(self, SQL, before, batch)?)
        })
        .await
    }

    /// Deletes at most `batch` tickets that expired before `now`; returns how many.
    pub async fn e2ee_purge_tickets(&self, now: i64, batch: i64) -> Result<u64, StoreError> {
        timed("e2ee_purge_tickets", async move {
            const SQL: &str = "DELETE FROM e2ee_tickets WHERE ticket_hash IN (SELECT \
                ticket_hash FROM e2ee_tickets WHERE expires_at < $1 LIMIT $2)";
            Ok(execute!(self, SQL, now, batch)?)
        })
        .await
    }
}
