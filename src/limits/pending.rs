//! WebSockets that have not authenticated yet: at most `max_unauthenticated` on the node and
//! `ip_unauthenticated` from one address. Such a socket costs the node a task and buffers while
//! it proves nothing, for up to `auth_timeout`; a client that opens many and never
//! authenticates would otherwise hold them all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which cap refused a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingFull {
    /// The node holds `max_unauthenticated`.
    Node,
    /// The address holds `ip_unauthenticated` on this node.
    Address,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    per_address: HashMap<String, usize>,
}

/// The node's unauthenticated sockets.
#[derive(Debug, Clone)]
pub struct Pending {
    held: Arc<Mutex<Held>>,
    max: usize,
    max_per_address: usize,
}

/// An unauthenticated socket's place; given back when it authenticates or ends (dropped).
#[derive(Debug)]
pub struct PendingSlot {
    held: Arc<Mutex<Held>>,
    address: String,
}

fn lock(held: &Mutex<Held>) -> MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pending {
    /// Caps of `max` on the node and `max_per_address` per address (0: no cap).
    pub fn new(max: usize, max_per_address: usize) -> Self {
        Self {
            held: Arc::default(),
            max,
            max_per_address,
        }
    }

    /// Takes a place for a socket from `address` (a budget key).
    pub fn take(&self, address: &str) -> Result<PendingSlot, PendingFull> {
        let mut held = lock(&self.held);
        if self.max > 0 && held.total >= self.max {
            return Err(PendingFull::Node);
        }
        let from_address = held.per_address.get(address).copied().unwrap_or(0);
        if self.max_per_address > 0 && from_address >= self.max_per_address {
            return Err(PendingFull::Address);
        }
        held.total += 1;
        *held.per_address.entry(address.to_owned()).or_default() += 1;
        Ok(PendingSlot {
            held: Arc::clone(&self.held),
            address: address.to_owned(),
        })
    }

    /// How many sockets wait to authenticate.
    pub fn held(&self) -> usize {
        lock(&self.held).total
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        held.total -= 1;
        if let Some(n) = held.per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                held.per_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_node_and_per_address_and_places_come_back() {
        let pending = Pending::new(3, 2);
        let a1 = pending.take("a").unwrap();
        let _a2 = pending.take("a").unwrap();
        assert_eq!(pending.take("a").unwrap_err(), PendingFull::Address);
        let _b = pending.take("b").unwrap();
        assert_eq!(pending.take("c").unwrap_err(), PendingFull::Node);
        drop(a1);
        assert_eq!(pending.held(), 2);
        let _a3 = pending.take("a").unwrap();
        let open = Pending::new(0, 0);
        let held: Vec<_> = (0..100).map(|_| open.take("a").unwrap()).collect();
        assert_eq!(open.held(), held.len());
        drop(held);
        assert_eq!(open.held(), 0);
        assert!(lock(&open.held).per_address.is_empty());
    }
}
