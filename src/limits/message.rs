//! A connection's message rate: `rate` messages a second sustained, `burst` at once (GCRA),
//! and after authentication its user's rate over all its connections ([`UserBudget`]).
//!
//! The first message over the limit is answered (`rate_limited` with the wait); the ones after
//! it, until one passes again, are dropped without an answer, so a flood does not turn into a
//! flood of error frames; more than `burst` (at least 10) refused within one second close the
//! connection, however many pass in between.

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::user::UserBudget;

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
    /// Within the connection's rate, but the user's hits on this node are spent: take more
    /// ([`UserBudget::refill`]) and [`settle`](MessageLimit::settle) with the outcome.
    Refill,
}

/// One connection's message limiter.
pub struct MessageLimit {
    /// The connection's own rate, if limited.
    limiter: Option<DefaultDirectRateLimiter>,
    /// The user's budget on this node, once authenticated (if limited).
    user: Option<Arc<UserBudget>>,
    clock: DefaultClock,
    /// Messages refused since the last one that passed (the first is answered).
    refused: u32,
    /// Refusals within the current second, and when that second began.
    window: (Instant, u32),
    /// Refusals within one second that close the connection.
    max_refused: u32,
}

impl MessageLimit {
    /// A limiter of `rate` messages a second with a `burst` (`rate` 0: no limit of its own).
    pub fn new(rate: usize, burst: usize) -> Self {
        // Building a clock calibrates it (tens of µs): every connection shares one.
        static CLOCK: OnceLock<DefaultClock> = OnceLock::new();
        let clock = CLOCK.get_or_init(DefaultClock::default).clone();
        let burst = nonzero(burst).unwrap_or(NonZeroU32::MIN);
        let limiter = nonzero(rate).map(|rate| {
            let quota = Quota::per_second(rate).allow_burst(burst);
            RateLimiter::direct_with_clock(quota, clock.clone())
        });
        Self {
            limiter,
            user: None,
            clock,
            refused: 0,
            window: (Instant::now(), 0),
            max_refused: burst.get().max(10),
        }
    }

    /// From now on, messages also count against the user's `budget` (whose burst is `burst`).
    pub fn with_user(&mut self, budget: Arc<UserBudget>, burst: usize) {
        if self.limiter.is_none() {
            self.max_refused = u32::try_from(burst).unwrap_or(u32::MAX).max(10);
        }
        self.user = Some(budget);
    }

    /// The user's budget, for a [`Verdict::Refill`].
    pub fn user(&self) -> Option<&Arc<UserBudget>> {
        self.user.as_ref()
    }

    pub fn check(&mut self) -> Verdict {
        if let Some(limiter) = &self.limiter
            && let Err(not_until) = limiter.check()
        {
            let wait = not_until.wait_time_from(self.clock.now());
            return self.refuse(wait);
        }
        if let Some(user) = &self.user
            && !user.try_spend()
        {
            return Verdict::Refill;
        }
        self.refused = 0;
        Verdict::Pass
    }

    /// The verdict on a message after a [`Verdict::Refill`]: `refilled` is its outcome.
    pub fn settle(&mut self, refilled: Result<(), Duration>) -> Verdict {
        match refilled {
            Ok(()) => {
                self.refused = 0;
                Verdict::Pass
            }
            Err(wait) => self.refuse(wait),
        }
    }

    fn refuse(&mut self, wait: Duration) -> Verdict {
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
            Verdict::Refuse(wait)
        } else {
            Verdict::Drop
        }
    }
}

fn nonzero(n: usize) -> Option<NonZeroU32> {
    NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_first_refusal_is_told_then_floods_close() {
        let mut limit = MessageLimit::new(1, 12);
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
        let mut limit = MessageLimit::new(1000, 1);
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
        let mut limit = MessageLimit::new(0, 10);
        for _ in 0..10_000 {
            assert_eq!(limit.check(), Verdict::Pass);
        }
    }

    #[tokio::test]
    async fn the_user_budget_is_asked_once_the_connection_passes() {
        let throttle = crate::limits::MemoryThrottle::default();
        let budgets = crate::limits::UserBudgets::default();
        let rate = crate::limits::Rate {
            name: "user_msg_rate",
            per_minute: 60,
            burst: 3,
            minutes: 1,
        };
        let mut limit = MessageLimit::new(0, 10);
        limit.with_user(budgets.get("u"), 3);
        let mut verdicts = Vec::new();
        for _ in 0..5 {
            let verdict = match limit.check() {
                Verdict::Refill => {
                    let budget = Arc::clone(limit.user().unwrap());
                    limit.settle(budget.refill(&throttle, rate).await)
                }
                verdict => verdict,
            };
            verdicts.push(std::mem::discriminant(&verdict));
        }
        let pass = std::mem::discriminant(&Verdict::Pass);
        let refuse = std::mem::discriminant(&Verdict::Refuse(Duration::ZERO));
        let drop = std::mem::discriminant(&Verdict::Drop);
        assert_eq!(verdicts, [pass, pass, pass, refuse, drop]);
    }
}
