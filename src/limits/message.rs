//! A connection's message rate: `rate` messages a second sustained, `burst` at once (GCRA).
//!
//! The first message over the limit is answered (`rate_limited` with the wait); the ones after
//! it, until one passes again, are dropped without an answer, so a flood does not turn into a
//! flood of error frames; more than `burst` (at least 10) refused within one second close the
//! connection, however many pass in between.

use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Pass,
    /// Over it: drop the message and tell the client to wait this long.
    Refuse(Duration),
    /// Over it again: drop the message silently.
    Drop,
    /// The client keeps flooding: close the connection.
    Close,
}

/// One connection's message limiter.
pub struct MessageLimit {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    /// Messages refused since the last one that passed (the first is answered).
    refused: u32,
    /// Refusals within the current second, and when that second began.
    window: (Instant, u32),
    /// Refusals within one second that close the connection.
    max_refused: u32,
}

impl MessageLimit {
    /// A limiter of `rate` messages a second with a `burst`; `None` when `rate` is 0 (off).
    pub fn new(rate: usize, burst: usize) -> Option<Self> {
        let rate = NonZeroU32::new(u32::try_from(rate).unwrap_or(u32::MAX))?;
        let burst =
            NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        // Building a clock calibrates it (tens of µs): every connection shares one.
        static CLOCK: OnceLock<DefaultClock> = OnceLock::new();
        let clock = CLOCK.get_or_init(DefaultClock::default).clone();
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Self {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            refused: 0,
            window: (Instant::now(), 0),
            max_refused: burst.get().max(10),
        })
    }

    pub fn check(&mut self) -> Verdict {
        match self.limiter.check() {
            Ok(()) => {
                self.refused = 0;
                Verdict::Pass
            }
            Err(not_until) => {
                self.refused = self.refused.saturating_add(1);
                let (since, count) = &mut self.window;
                if since.elapsed() >= Duration::from_secs(1) {
                    *since = Instant::now();
                    *count = 0;
                }
                *count += 1;
                if *count > self.max_refused {
                    Verdict::Close
                } else if self.refused == 1 {
                    Verdict::Refuse(not_until.wait_time_from(self.clock.now()))
                } else {
                    Verdict::Drop
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_first_refusal_is_told_then_floods_close() {
        let mut limit = MessageLimit::new(1, 12).unwrap();
        for n in 0..12 {
            assert_eq!(limit.check(), Verdict::Pass, "message {n} of the burst");
        }
        match limit.check() {
            Verdict::Refuse(wait) => assert!(wait <= Duration::from_secs(1), "{wait:?}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        for _ in 0..11 {
            assert_eq!(limit.check(), Verdict::Drop);
        }
        assert_eq!(limit.check(), Verdict::Close);
    }

    #[test]
    fn a_steady_flood_that_lets_some_through_is_closed_too() {
        // One message a second passes; a flood in between is refused: the refusals within a
        // second close it even though passes reset the "in a row" count.
        let mut limit = MessageLimit::new(1000, 1).unwrap();
        let mut verdicts = Vec::new();
        for _ in 0..100_000 {
            let verdict = limit.check();
            verdicts.push(verdict);
            if verdict == Verdict::Close {
                break;
            }
        }
        assert_eq!(verdicts.last(), Some(&Verdict::Close), "never closed");
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(MessageLimit::new(0, 10).is_none());
    }
}
