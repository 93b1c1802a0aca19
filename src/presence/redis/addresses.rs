//! Connections per address, cluster-wide: a HASH per address of node incarnation → count
//! (`{P:addr:A}`), checked and counted by one script, so the cap holds across nodes. Each
//! incarnation indexes the addresses it counts in its node set (`a:ADDRESS`), written before
//! its count and removed after it, so a reaper that takes over a dead incarnation finds and
//! drops every count it held.
//!
//! The node keeps its own counts ([`Addresses`]); operations on one address are serialized on
//! the node, so the index never misses a count. Reconciliation writes the counts back, as it
//! does the rest of the mirror.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fred::interfaces::{HashesInterface, SetsInterface};
use fred::prelude::Error as RedisError;

use super::RedisPresence;
use super::store::Store;
use crate::metrics as m;
use crate::presence::AddressHold;

/// `KEYS[1]` address HASH; `ARGV` owner, max. Counts one connection for the owner unless the
/// address holds `max` over all owners: returns 1, or 0 when refused.
pub const HOLD: &str = r#"
local held = 0
for _, n in ipairs(redis.call('HVALS', KEYS[1])) do held = held + tonumber(n) end
if held >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"#;

/// `KEYS[1]` address HASH; `ARGV` owner. Gives back one of the owner's connections.
pub const RELEASE: &str = r#"
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n <= 1 then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
"#;

/// The prefix of an address in a node set.
const INDEX_PREFIX: &str = "a:";

/// One address's count on this node; its lock serializes the node's writes for the address.
type Count = Arc<tokio::sync::Mutex<u32>>;

/// The connections per address this node counts.
#[derive(Default)]
pub struct Addresses {
    counts: Mutex<HashMap<String, Count>>,
    /// Bumped when the node starts over after being reaped: older holds are void.
    generation: AtomicU64,
}

impl Addresses {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Count>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, address: &str) -> Count {
        Arc::clone(self.lock().entry(address.to_owned()).or_default())
    }

    /// Forgets an address nobody counts or waits for.
    fn tidy(&self, address: &str, count: Count) {
        let mut counts = self.lock();
        // Two references: the map's and `count`; any other is a caller about to use it.
        if Arc::strong_count(&count) == 2 && count.try_lock().is_ok_and(|n| *n == 0) {
            counts.remove(address);
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forgets every count (the reaper released them) and voids the holds taken before.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.lock().clear();
    }

    /// Every address with its count. Called under the presence gate held exclusively, when no
    /// write is under way, so no count is locked.
    pub fn snapshot(&self) -> Vec<(String, u32)> {
        self.lock()
            .iter()
            .filter_map(|(address, count)| Some((address.clone(), *count.try_lock().ok()?)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The node-set entry of an address.
pub fn index_entry(address: &str) -> String {
    format!("{INDEX_PREFIX}{address}")
}

/// The address of a node-set entry, if it is one.
pub fn indexed_address(entry: &str) -> Option<&str> {
    entry.strip_prefix(INDEX_PREFIX)
}

impl Store {
    async fn index_address(&self, owner: &str, address: &str, add: bool) -> Result<(), RedisError> {
        let (set, entry) = (self.keys.node(owner), index_entry(address));
        let _: i64 = if add {
            self.cmd().sadd(set, entry).await?
        } else {
            self.cmd().srem(set, entry).await?
        };
        Ok(())
    }

    /// Drops `owner`'s count of `address` (a reaper, or a reconciliation).
    pub async fn drop_address(&self, owner: &str, address: &str) -> Result<(), RedisError> {
        let _: i64 = self.cmd().hdel(self.keys.address(address), owner).await?;
        self.index_address(owner, address, false).await
    }

    /// Writes `owner`'s count of `address` back (a reconciliation).
    pub async fn restore_address(
        &self,
        owner: &str,
        address: &str,
        count: u32,
    ) -> Result<(), RedisError> {
        self.index_address(owner, address, true).await?;
        let _: i64 = self
            .cmd()
            .hset(self.keys.address(address), vec![(owner.to_owned(), count)])
            .await?;
        Ok(())
    }

    pub async fn address_connections(&self, address: &str) -> Result<usize, RedisError> {
        let counts: Vec<i64> = self.cmd().hvals(self.keys.address(address)).await?;
        Ok(counts
            .iter()
            .map(|n| usize::try_from(*n).unwrap_or(0))
            .sum())
    }
}

impl RedisPresence {
    pub(super) async fn hold(&self, address: &str, max: usize) -> Option<AddressHold> {
        let _gate = self.gate.read().await;
        let generation = self.addresses.generation();
        let entry = self.addresses.entry(address);
        let admitted = {
            let mut count = entry.lock().await;
            let owner = self.owner();
            let checked = async {
                if *count == 0 {
                    self.store.index_address(&owner, address, true).await?;
                }
                let args = vec![owner.clone(), max.to_string()];
                let key = self.store.keys.address(address);
                let admitted: i64 = self.store.run(&self.store.scripts.hold, key, args).await?;
                if admitted == 0 && *count == 0 {
                    self.store.index_address(&owner, address, false).await?;
                }
                Ok::<_, RedisError>(admitted == 1)
            };
            let admitted = checked.await.unwrap_or_else(|e| {
                // Fail open; the next reconciliation writes the count.
                metrics::counter!(m::RATE_LIMIT_ERRORS, "limit" => "ip_connections").increment(1);
                let _ = self.failed(e);
                true
            });
            if admitted {
                *count += 1;
            }
            admitted
        };
        self.addresses.tidy(address, entry);
        admitted.then(|| AddressHold {
            address: address.to_owned(),
            generation,
        })
    }

    pub(super) async fn release(&self, hold: AddressHold) {
        let _gate = self.gate.read().await;
        if hold.generation != self.addresses.generation() {
            return;
        }
        let entry = self.addresses.entry(&hold.address);
        {
            let mut count = entry.lock().await;
            if *count == 0 {
                return;
            }
            *count -= 1;
            let owner = self.owner();
            let released = async {
                let key = self.store.keys.address(&hold.address);
                let _: i64 = self
                    .store
                    .run(&self.store.scripts.release, key, vec![owner.clone()])
                    .await?;
                if *count == 0 {
                    self.store
                        .index_address(&owner, &hold.address, false)
                        .await?;
                }
                Ok::<_, RedisError>(())
            };
            if let Err(e) = released.await {
                let _ = self.failed(e);
            }
        }
        self.addresses.tidy(&hold.address, entry);
    }
}
