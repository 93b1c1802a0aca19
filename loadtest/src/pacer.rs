//! The pacer: one OS thread that wakes each sender when its next message is due.
//!
//! Tokio's timer has millisecond granularity, which would add up to a millisecond of send delay
//! to every message and so to every latency figure. The pacer instead sleeps on the OS timer
//! (tens of microseconds of slack) and pokes the owning sender's [`Notify`] once a slot is due.
//! Senders always check the [`Schedule`] themselves, so a poke can never make a message early.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::clock::Schedule;

/// Longest single sleep, so that a stop request is seen promptly.
const MAX_NAP: Duration = Duration::from_millis(20);

/// A running pacer thread; stops at the end of its schedule or on [`Pacer::stop`].
pub struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    /// Start pacing `schedule`, waking `wakers[sender]` for each due slot.
    pub fn spawn(schedule: Schedule, wakers: Vec<Arc<Notify>>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || pace(&schedule, &wakers, &flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Ask the thread to stop and wait for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn pace(schedule: &Schedule, wakers: &[Arc<Notify>], stop: &AtomicBool) {
    for slot in 0..schedule.total() {
        let due = schedule.slot_due(slot);
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(MAX_NAP));
        }
        if let Some(waker) = wakers.get(schedule.slot_sender(slot)) {
            waker.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_every_sender_no_earlier_than_due() {
        let start = Instant::now() + Duration::from_millis(5);
        let schedule = Schedule::new(start, 1000.0, 2, Duration::from_millis(20));
        let wakers: Vec<_> = (0..2).map(|_| Arc::new(Notify::new())).collect();
        let pacer = Pacer::spawn(schedule, wakers.clone()).expect("spawn");
        std::thread::sleep(Duration::from_millis(40));
        pacer.stop();
        assert!(Instant::now() >= schedule.slot_due(schedule.total() - 1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        for w in &wakers {
            let woke = rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(5), w.notified()).await
            });
            assert!(woke.is_ok(), "each sender holds a wake-up permit");
        }
    }
}
