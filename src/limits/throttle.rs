//! Request rates per key (an address), the same on every node: [`Throttle`], in process for a
//! single node and over Redis for a cluster (GCRA in one Lua script per hit, on Redis's clock).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// A named rate: `per_minute` sustained (per `minutes` minutes), `burst` at once.
/// `per_minute == 0` is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// The limit's name: its setting, its metric label and its Redis key.
    pub name: &'static str,
    pub per_minute: u32,
    pub burst: u32,
    /// The window `per_minute` counts over, in minutes (1 for a rate per minute).
    pub minutes: u32,
}

impl Rate {
    /// `per_minute` hits a minute sustained (0 = off), `burst` at once; settings saturate.
    pub fn per_minute(name: &'static str, per_minute: usize, burst: usize) -> Self {
        Self {
            name,
            per_minute: u32::try_from(per_minute).unwrap_or(u32::MAX),
            burst: u32::try_from(burst).unwrap_or(u32::MAX),
            minutes: 1,
        }
    }

    /// `per_hour` hits an hour sustained (0 = off), `burst` at once; settings saturate.
    pub fn per_hour(name: &'static str, per_hour: usize, burst: usize) -> Self {
        Self {
            minutes: 60,
            ..Self::per_minute(name, per_hour, burst)
        }
    }

    /// `per_second` hits a second sustained (0 = off), `burst` at once; settings saturate.
    pub fn per_second(name: &'static str, per_second: usize, burst: usize) -> Self {
        Self::per_minute(name, per_second.saturating_mul(60), burst)
    }

    pub fn is_off(&self) -> bool {
        self.per_minute == 0
    }

    /// The time between two hits at the sustained rate.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) * self.minutes.max(1) / self.per_minute.max(1)
    }
}

/// Counts hits per key against a [`Rate`], across every node that shares it.
#[async_trait]
pub trait Throttle: Send + Sync + 'static {
    /// Counts up to `want` hits of `key` at once, as many as `rate` allows now (at least 1);
    /// returns how many, or `Err(wait)` when not even one fits (nothing is counted). A
    /// throttle that cannot reach its store lets all of them through.
    async fn take(&self, rate: Rate, key: &str, want: u32) -> Result<u32, Duration>;

    /// Counts one hit of `key`; `Err(wait)` when it is over `rate` (the hit is not counted).
    async fn hit(&self, rate: Rate, key: &str) -> Result<(), Duration> {
        self.take(rate, key, 1).await.map(|_| ())
    }
}

type Keyed = RateLimiter<String, HashMapStateStore<String>, DefaultClock>;

/// The throttle of a single node.
#[derive(Default)]
pub struct MemoryThrottle {
    limiters: Mutex<HashMap<&'static str, (Rate, Keyed)>>,
    clock: DefaultClock,
}

/// Keys a limiter holds before the idle ones are forgotten.
const PRUNE_AT: usize = 100_000;

#[async_trait]
impl Throttle for MemoryThrottle {
    async fn take(&self, rate: Rate, key: &str, want: u32) -> Result<u32, Duration> {
        if rate.is_off() {
            return Ok(want.max(1));
        }
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = || {
            let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(rate.interval())
                .expect("a positive interval")
                .allow_burst(burst);
            (
                rate,
                RateLimiter::hashmap_with_clock(quota, self.clock.clone()),
            )
        };
        let entry = limiters.entry(rate.name).or_insert_with(fresh);
        if entry.0 != rate {
            *entry = fresh();
        }
        let limiter = &entry.1;
        if limiter.len() >= PRUNE_AT {
            limiter.retain_recent();
        }
        let key = key.to_owned();
        if let Some(n) = NonZeroU32::new(want).filter(|n| n.get() > 1)
            && let Ok(Ok(())) = limiter.check_key_n(&key, n)
        {
            return Ok(n.get());
        }
        limiter
            .check_key(&key)
            .map(|()| 1)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_passes_per_key_then_hits_wait() {
        let throttle = MemoryThrottle::default();
        let rate = Rate {
            name: "test",
            per_minute: 60,
            burst: 3,
            minutes: 1,
        };
        for _ in 0..3 {
            assert!(throttle.hit(rate, "a").await.is_ok());
        }
        let wait = throttle.hit(rate, "a").await.unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            throttle.hit(rate, "b").await.is_ok(),
            "another key has its own"
        );
        assert_eq!(throttle.take(rate, "c", 5).await, Ok(1), "all or one");
        assert_eq!(throttle.take(rate, "c", 2).await, Ok(2));
        assert!(throttle.take(rate, "c", 2).await.is_err());
        let off = Rate {
            per_minute: 0,
            ..rate
        };
        for _ in 0..10 {
            assert!(throttle.hit(off, "a").await.is_ok());
        }
    }
}
