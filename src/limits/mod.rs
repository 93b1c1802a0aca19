//! Limits: how much one connection, one user, one address or one node may take.
//!
//! - [`MessageLimit`]: a connection's message rate with a burst (`msg_rate`, `msg_burst`),
//!   local to the connection (GCRA through `governor`).
//! - [`NodeSlots`]: the WebSockets this node holds against `max_connections`.
//! - [`Pending`]: the WebSockets that have not authenticated yet, per node and per address
//!   (`max_unauthenticated`, `ip_unauthenticated`).
//! - [`Throttle`]: request rates per address (upgrades, `/auth` requests) and per user
//!   (messages over all its connections, through [`UserBudgets`]), the same on every node: in
//!   process ([`MemoryThrottle`]) or on Redis ([`redis::RedisThrottle`]).
//!
//! Which address a request comes from, behind trusted proxies, is [`crate::client_ip`].
//!
//! Every limit is a setting, and `0` turns it off.

mod message;
mod pending;
pub mod redis;
mod throttle;
mod user;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use message::{MessageLimit, Verdict};
pub use pending::{Pending, PendingFull, PendingSlot};
pub use throttle::{MemoryThrottle, Rate, Throttle};
pub use user::{UserBudget, UserBudgets};

/// The WebSockets a node holds, against its `max_connections` (0 = no limit).
#[derive(Debug, Clone)]
pub struct NodeSlots {
    held: Arc<AtomicUsize>,
    max: usize,
}

/// A held slot; released when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl NodeSlots {
    pub fn new(max: usize) -> Self {
        Self {
            held: Arc::default(),
            max,
        }
    }

    /// Takes a slot, unless the node holds `max` already.
    pub fn take(&self) -> Option<Slot> {
        let taken = self.held.fetch_add(1, Ordering::AcqRel);
        if self.max > 0 && taken >= self.max {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(Arc::clone(&self.held)))
    }

    /// Whether the node is full (it refuses new WebSockets).
    pub fn full(&self) -> bool {
        self.max > 0 && self.held.load(Ordering::Acquire) >= self.max
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_up_to_the_maximum_and_released_when_dropped() {
        let slots = NodeSlots::new(2);
        let a = slots.take().unwrap();
        let _b = slots.take().unwrap();
        assert!(slots.full());
        assert!(slots.take().is_none());
        assert_eq!(slots.held(), 2, "a refused take holds nothing");
        drop(a);
        assert!(!slots.full());
        assert!(slots.take().is_some());
        let unlimited = NodeSlots::new(0);
        let held: Vec<_> = (0..1000).map(|_| unlimited.take().unwrap()).collect();
        assert!(!unlimited.full());
        assert_eq!(unlimited.held(), held.len());
    }
}
