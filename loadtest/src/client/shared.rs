//! State shared by all clients of one run and the run's orchestrator.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::clock::Schedule;
use crate::conn::Auth;
use crate::target::Target;

/// State shared by all clients of one run and its orchestrator.
pub struct Shared {
    pub targets: Vec<Target>,
    pub auth: Auth,
    pub reconnect: bool,
    /// Reconnects resume the session where the server offers it.
    pub resume: bool,
    pub cancel: CancellationToken,
    pub schedule: OnceLock<Schedule>,
    /// Clients done with setup, joined or not.
    pub ready: AtomicUsize,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    /// Senders that have sent (or skipped) their last message, or given up.
    pub senders_done: AtomicUsize,
    /// Index of a node that was killed; reconnects avoid it.
    pub dead_node: OnceLock<usize>,
    pub kill_at: OnceLock<Instant>,
}

impl Shared {
    pub fn new(targets: Vec<Target>, auth: Auth, reconnect: bool, resume: bool) -> Self {
        Self {
            targets,
            auth,
            reconnect,
            resume,
            cancel: CancellationToken::new(),
            schedule: OnceLock::new(),
            ready: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            senders_done: AtomicUsize::new(0),
            dead_node: OnceLock::new(),
            kill_at: OnceLock::new(),
        }
    }

    /// The node for placement `slot`, skipping a killed one.
    pub fn target_for(&self, slot: usize) -> &Target {
        let dead = self.dead_node.get().copied();
        let alive: Vec<&Target> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != dead)
            .map(|(_, t)| t)
            .collect();
        if alive.is_empty() {
            return &self.targets[slot % self.targets.len()];
        }
        alive[slot % alive.len()]
    }
}
