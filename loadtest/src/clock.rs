//! One process-wide clock and the open-loop send schedule.
//!
//! Senders and receivers live in the same process, so one-way latency is read on one clock:
//! nanoseconds since a process-wide [`Instant`] epoch. The [`Schedule`] fixes, before a run
//! starts, the instant at which every message is due; latency is measured from that instant,
//! not from the moment the sender got round to it, so a stalled sender cannot hide latency.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process-wide epoch (set on first use).
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from the epoch to `t` (0 for instants before it).
pub fn ns_of(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    ns_of(Instant::now())
}

/// Open-loop schedule of `total` slots at `rate` per second, dealt round-robin to `senders`.
///
/// Slot `j` is due at `start + j / rate` and belongs to sender `j % senders` as that sender's
/// message number `j / senders`, so every sender runs at `rate / senders` and the senders are
/// evenly phase-shifted.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate: f64,
    senders: u64,
    total: u64,
}

impl Schedule {
    /// A schedule of `rate * duration` slots (rounded) starting at `start`.
    pub fn new(start: Instant, rate: f64, senders: usize, duration: Duration) -> Self {
        let total = (rate * duration.as_secs_f64()).round().max(0.0) as u64;
        Self {
            start,
            rate,
            senders: senders.max(1) as u64,
            total,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The instant slot `j` is due.
    pub fn slot_due(&self, slot: u64) -> Instant {
        self.start + Duration::from_secs_f64(slot as f64 / self.rate)
    }

    /// The sender that owns slot `j`.
    pub fn slot_sender(&self, slot: u64) -> usize {
        (slot % self.senders) as usize
    }

    /// How many messages sender `s` sends in the whole run.
    pub fn count_for(&self, sender: usize) -> u64 {
        let s = sender as u64;
        if s >= self.total {
            return 0;
        }
        (self.total - s).div_ceil(self.senders)
    }

    /// The instant sender `s`'s message `i` is due.
    pub fn due(&self, sender: usize, i: u64) -> Instant {
        self.slot_due(i * self.senders + sender as u64)
    }

    /// The first message index of sender `s` that is due at or after `t`.
    pub fn first_due_from(&self, sender: usize, t: Instant) -> u64 {
        let elapsed = t.saturating_duration_since(self.start).as_secs_f64();
        let slot = (elapsed * self.rate).ceil() as u64;
        let s = sender as u64;
        let mut i = slot.saturating_sub(s).div_ceil(self.senders);
        while i > 0 && self.due(sender, i - 1) >= t {
            i -= 1;
        }
        while self.due(sender, i) < t {
            i += 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(rate: f64, senders: usize, secs: u64) -> Schedule {
        Schedule::new(Instant::now(), rate, senders, Duration::from_secs(secs))
    }

    #[test]
    fn slots_are_evenly_spaced_and_dealt_round_robin() {
        let s = sched(1000.0, 4, 2);
        assert_eq!(s.total(), 2000);
        assert_eq!(s.slot_due(1) - s.slot_due(0), Duration::from_millis(1));
        assert_eq!(s.slot_sender(5), 1);
        assert_eq!(s.due(1, 1), s.slot_due(5));
        assert_eq!(s.due(3, 2) - s.due(3, 1), Duration::from_millis(4));
    }

    #[test]
    fn per_sender_counts_add_up() {
        let s = sched(10.0, 3, 1);
        let counts: Vec<u64> = (0..3).map(|k| s.count_for(k)).collect();
        assert_eq!(counts, vec![4, 3, 3]);
        assert_eq!(sched(2.0, 5, 1).count_for(4), 0);
    }

    #[test]
    fn first_due_from_skips_past_slots_only() {
        let start = Instant::now();
        let s = Schedule::new(start, 100.0, 2, Duration::from_secs(10));
        assert_eq!(s.first_due_from(0, start), 0);
        let t = start + Duration::from_millis(35);
        let i = s.first_due_from(1, t);
        assert!(s.due(1, i) >= t && s.due(1, i - 1) < t);
        assert_eq!(s.due(1, i), s.slot_due(5));
    }

    #[test]
    fn ns_of_is_monotonic_from_the_epoch() {
        let a = now_ns();
        let b = ns_of(Instant::now() + Duration::from_millis(1));
        assert!(b >= a + 1_000_000);
        assert_eq!(ns_of(epoch()), 0);
    }
}
