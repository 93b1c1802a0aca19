//! Leases, reaping and reconciliation.
//!
//! Every node incarnation holds a lease: its score in the leases ZSET is a deadline (Redis
//! clock) that [`Presence::reap`](crate::presence::Presence::reap), run every `lease_ttl / 2`,
//! pushes `lease_ttl` ahead. A crashed node stops renewing; at most `lease_ttl` later its lease
//! is expired and the next reap of any survivor (at most `lease_ttl / 2` later) moves it to the
//! reaping ZSET in one script — so exactly one reaper takes it — and removes every entry the
//! dead incarnation still owns, recording the takeover in the reaped ZSET (for a day). A reaper
//! that dies half-way leaves a reaping deadline behind, after which another reaper takes the
//! incarnation over.
//!
//! A node that missed its lease while staying up learns at its next renewal whether it was
//! only [late](Lease::Late) (nobody took the lease, so nothing was reaped) or
//! [reaped](Lease::Reaped) (its members were announced as gone, so its clients must
//! reconnect).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::Ordering;

use fred::interfaces::{ClientLike, KeysInterface, SetsInterface, SortedSetsInterface};
use fred::prelude::Error as RedisError;
use futures_util::{StreamExt, TryStreamExt, stream};

use super::addresses::indexed_address;
use super::adopt::Adoption;
use super::{RedisPresence, fast};
use crate::metrics as m;
use crate::presence::{PresenceError, Reaped};
use crate::protocol::Member;
use crate::protocol::{ConnId, NodeId, RoomId};

/// Dead incarnations one reap takes on at most.
const REAP_BATCH: usize = 16;
/// Connections reconciled or reaped concurrently.
const PARALLEL: usize = 32;
/// Room index entries one lease period checks.
const SWEEP_BATCH: usize = 256;

type Gone = Vec<(RoomId, Member)>;

/// What renewing the lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lease {
    /// Renewed in time.
    Held,
    /// Renewed, but it had expired: nobody had taken it over, so nothing was reaped; Redis may
    /// have missed writes meanwhile.
    Late,
    /// Gone: another node took it over and reaped this incarnation's members.
    Reaped,
    /// Gone without a trace: Redis lost its data.
    Vanished,
}

/// A fresh incarnation of `node`: `node/epoch`, with a random epoch.
pub fn incarnation(node: &NodeId) -> String {
    format!("{node}/{:08x}", uuid::Uuid::new_v4().as_u128() as u32)
}

impl RedisPresence {
    fn ttl_ms(&self) -> String {
        self.lease_ttl.as_millis().to_string()
    }

    /// Renews the lease (registers it, when `register`); says what it found.
    pub(super) async fn renew(&self, register: bool) -> Result<Lease, RedisError> {
        let args = vec![
            self.owner(),
            self.ttl_ms(),
            if register { "1" } else { "0" }.to_owned(),
        ];
        let keys = vec![self.store.keys.leases(), self.store.keys.reaped()];
        let status: i64 = self
            .store
            .scripts
            .renew
            .run(&self.store.client, keys, args)
            .await?;
        Ok(match status {
            1 => Lease::Held,
            3 => Lease::Late,
            2 => Lease::Reaped,
            _ => Lease::Vanished,
        })
    }

    /// One lease period's work: renew, reconcile when needed, reap dead incarnations.
    pub(super) async fn renew_and_reap(&self) -> Result<Reaped, PresenceError> {
        let lease = self.renew(false).await.map_err(|e| self.failed(e))?;
        let reconcile = self.dirty.swap(false, Ordering::AcqRel);
        let mut tick = match lease {
            Lease::Held if reconcile => {
                tracing::info!("reconciling presence with Redis after failed writes");
                self.resync(None).await
            }
            Lease::Held => Ok(Reaped::default()),
            Lease::Late => {
                tracing::warn!(
                    "lease renewed after it had expired (this node stalled or lost Redis), \
                     before anyone reaped it; reconciling"
                );
                self.resync(None).await
            }
            Lease::Vanished => {
                let owner = incarnation(&self.node);
                tracing::warn!(%owner, "lease vanished (Redis lost its data); re-registering");
                self.resync(Some(owner)).await
            }
            Lease::Reaped => {
                let owner = incarnation(&self.node);
                tracing::warn!(
                    %owner,
                    "this node was reaped while cut off from Redis and its members were \
                     announced as gone; re-registering empty, its clients must reconnect"
                );
                if let Err(e) = self.start_over(owner).await {
                    // Dirty: the next period registers the new incarnation again.
                    let _ = self.failed(e);
                }
                Ok(Reaped {
                    evicted: true,
                    ..Reaped::default()
                })
            }
        }
        .map_err(|e| self.failed(e))?;
        for (room, member) in self.take_departed() {
            if !tick
                .gone
                .iter()
                .any(|(r, m)| *r == room && m.conn == member.conn)
            {
                tick.gone.push((room, member));
            }
        }
        // Right after re-registering, others may not have renewed yet (a Redis restored from
        // disk holds only stale leases): reap from the next period on.
        if lease == Lease::Held {
            self.reap_dead(&mut tick).await;
            self.sweep_rooms().await;
        }
        Ok(tick)
    }

    /// Registers a new incarnation holding nothing: what the reaped one held is gone from
    /// Redis (or going), and its connections are about to be closed; each one's cleanup removes
    /// whatever of it the reaper has not.
    async fn start_over(&self, owner: String) -> Result<(), RedisError> {
        let _gate = self.gate.write().await;
        let held = self.mirror.clear();
        self.addresses.clear();
        *self.owner_lock() = owner;
        self.renew(true).await?;
        tracing::info!(connections = held, "presence restarted empty");
        Ok(())
    }

    /// Makes Redis agree with the mirror, under a new incarnation if given: removes what this
    /// incarnation holds but no local connection does, then writes every local entry back.
    /// Returns what was removed, and the connections whose client id another connection took
    /// meanwhile (they were dropped from presence and must be closed).
    async fn resync(&self, new_owner: Option<String>) -> Result<Reaped, RedisError> {
        let _gate = self.gate.write().await;
        if let Some(owner) = new_owner {
            *self.owner_lock() = owner;
            self.renew(true).await?;
        }
        let owner = self.owner();
        let local = self.mirror.snapshot();
        let held: HashSet<ConnId> = local.iter().map(|h| h.member.conn).collect();
        let (indexed, indexed_addresses) = self.indexed(&owner).await?;
        let stale: Vec<ConnId> = indexed.into_iter().filter(|c| !held.contains(c)).collect();
        let mut gone = self.remove_all(stale, &owner).await?;
        let counts = self.addresses.snapshot();
        let counted: HashSet<&str> = counts.iter().map(|(a, _)| a.as_str()).collect();
        let stale_addresses: Vec<_> = indexed_addresses
            .iter()
            .filter(|a| !counted.contains(a.as_str()))
            .map(|a| self.store.drop_address(&owner, a))
            .collect();
        bounded(stale_addresses).await?;
        let restored_addresses: Vec<_> = counts
            .iter()
            .map(|(a, n)| self.store.restore_address(&owner, a, *n))
            .collect();
        bounded(restored_addresses).await?;
        let purges: Vec<_> = local.iter().map(|h| self.store.purge_rooms(h)).collect();
        gone.extend(bounded(purges).await?.into_iter().flatten());
        let restores: Vec<_> = local
            .iter()
            .map(|h| async { Ok((h.member.conn, self.store.restore(h, &owner).await?)) })
            .collect();
        let restored: Vec<(ConnId, bool)> = bounded(restores).await?;
        let mut replaced = Vec::new();
        for (conn, ok) in restored {
            if !ok {
                tracing::warn!(
                    conn = conn.0,
                    "client id taken over while Redis was away; closing the older connection"
                );
                self.mirror.evicted(conn);
                replaced.push(conn);
            }
        }
        tracing::info!(%owner, connections = local.len(), removed = gone.len(), "presence reconciled");
        Ok(Reaped {
            gone,
            replaced,
            evicted: false,
            adopted: Vec::new(),
        })
    }

    /// The connections and the addresses an incarnation indexes.
    async fn indexed(&self, owner: &str) -> Result<(Vec<ConnId>, Vec<String>), RedisError> {
        let cmd = self.store.client.with_options(&fast());
        let entries: Vec<String> = cmd.smembers(self.store.keys.node(owner)).await?;
        let conns = entries
            .iter()
            .filter_map(|c| c.parse().ok())
            .map(ConnId)
            .collect();
        let addresses = entries
            .iter()
            .filter_map(|e| indexed_address(e))
            .map(str::to_owned)
            .collect();
        Ok((conns, addresses))
    }

    /// Removes what `owner` still holds of each connection.
    async fn remove_all(&self, conns: Vec<ConnId>, owner: &str) -> Result<Gone, RedisError> {
        let removals: Vec<_> = conns
            .into_iter()
            .map(|conn| self.store.remove_conn(conn, Some(owner), None))
            .collect();
        Ok(bounded(removals).await?.into_iter().flatten().collect())
    }

    /// Drops one batch of rooms that emptied from the room index, where the last sweep ended.
    async fn sweep_rooms(&self) {
        let from = self.sweep_from.load(Ordering::Acquire);
        match self.store.sweep_rooms(from, SWEEP_BATCH).await {
            Ok((next, forgotten)) => {
                self.sweep_from.store(next, Ordering::Release);
                if forgotten > 0 {
                    tracing::debug!(forgotten, "dropped empty rooms from the room index");
                }
            }
            Err(e) => tracing::debug!(error = %e, "sweeping the room index failed"),
        }
    }

    /// Takes over expired incarnations: adopts their resumable sessions and removes the rest
    /// of their entries, into `tick`. Errors are logged: an incarnation left half-reaped is
    /// taken over again after its reaping deadline.
    async fn reap_dead(&self, tick: &mut Reaped) {
        let keys = vec![
            self.store.keys.leases(),
            self.store.keys.reaping(),
            self.store.keys.reaped(),
        ];
        let args = vec![self.ttl_ms(), REAP_BATCH.to_string()];
        let dead: Result<Vec<String>, _> = self
            .store
            .scripts
            .claim_dead
            .run(&self.store.client, keys, args)
            .await;
        let dead = dead.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "claiming dead leases failed");
            Vec::new()
        });
        for owner in dead {
            let adopted = tick.adopted.len();
            let (removed, finished) = self.reap_one(&owner, tick).await;
            let adopted = tick.adopted.len() - adopted;
            match finished {
                Ok(()) => {
                    metrics::counter!(m::PRESENCE_REAPS, "result" => "ok").increment(1);
                    tracing::info!(%owner, members = removed.len(), sessions = adopted, "reaped a dead node")
                }
                Err(e) => {
                    metrics::counter!(m::PRESENCE_REAPS, "result" => "error").increment(1);
                    tracing::warn!(%owner, error = %e, "reaping a dead node failed; retried later")
                }
            }
            tick.gone.extend(removed);
            // Long reaps must not cost this node its own lease.
            if let Err(e) = self.renew(false).await {
                tracing::warn!(error = %e, "lease renewal failed");
            }
        }
    }

    /// Adopts the resumable sessions of a dead incarnation (into `tick`), then removes what it
    /// still owns; returns what was removed even when a step failed (removals are conditional,
    /// so a later reaper announces nothing twice).
    async fn reap_one(&self, owner: &str, tick: &mut Reaped) -> (Gone, Result<(), RedisError>) {
        let (conns, addresses) = match self.indexed(owner).await {
            Ok(indexed) => indexed,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let adoptions: Vec<_> = conns.iter().map(|conn| self.adopt(*conn, owner)).collect();
        let adoptions: Vec<_> = stream::iter(adoptions)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        // Every session taken over is reported, even when another failed: the failed one is
        // taken over (or removed) at the next reap of this incarnation, and the node reconciles.
        let mut failed = Ok(());
        for adoption in adoptions {
            match adoption {
                Ok(Adoption::Adopted(adopted)) => tick.adopted.push(adopted),
                Ok(Adoption::Removed(gone)) => tick.gone.extend(gone),
                Ok(Adoption::Skipped) => {}
                Err(e) => {
                    self.dirty.store(true, Ordering::Release);
                    failed = Err(e);
                }
            }
        }
        if let Err(e) = failed {
            return (Vec::new(), Err(e));
        }
        let removals = conns
            .into_iter()
            .map(|conn| self.store.remove_conn(conn, Some(owner), None));
        let results: Vec<_> = stream::iter(removals)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut gone = Vec::new();
        let mut failed = Ok(());
        for result in results {
            match result {
                Ok(removed) => gone.extend(removed),
                Err(e) => failed = Err(e),
            }
        }
        let drops: Vec<_> = addresses
            .iter()
            .map(|a| self.store.drop_address(owner, a))
            .collect();
        if let Err(e) = bounded(drops).await {
            failed = Err(e);
        }
        if failed.is_ok() {
            failed = self.forget(owner).await;
        }
        (gone, failed)
    }

    /// Drops a fully reaped incarnation's index and reaping entry.
    async fn forget(&self, owner: &str) -> Result<(), RedisError> {
        let cmd = self.store.client.with_options(&fast());
        let _: i64 = cmd.del(self.store.keys.node(owner)).await?;
        let _: i64 = cmd.zrem(self.store.keys.reaping(), owner).await?;
        Ok(())
    }
}

/// Runs `futures` with at most [`PARALLEL`] in flight; the first error wins.
async fn bounded<T, F>(futures: Vec<F>) -> Result<Vec<T>, RedisError>
where
    F: Future<Output = Result<T, RedisError>>,
{
    stream::iter(futures)
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await
}
