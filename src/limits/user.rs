//! A user's message rate over all its connections, cluster-wide (`user_msg_rate`,
//! `user_msg_burst`).
//!
//! The bucket is the cluster's [`Throttle`] (GCRA on Redis in a cluster). A node does not ask it
//! per message: it takes a few hits at once ([`UserBudget::refill`]) and spends them locally,
//! one atomic step per message, shared by the user's connections on the node. Hits a node took
//! and has not spent are spent by nobody else, so a user can never send more than the bucket
//! allows across the cluster; with several nodes it may be refused up to a few messages early.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::throttle::{Rate, Throttle};

/// The hits a node takes at once: a small share of the burst and of a second's rate, so that
/// what one node holds unspent stays small; at most this many.
const MAX_CHUNK: u32 = 1000;

/// A user's message hits on this node.
pub struct UserBudget {
    user: String,
    /// Hits taken from the cluster and not spent yet.
    left: AtomicU32,
    /// One refill at a time: the others wait and spend what it took.
    refilling: tokio::sync::Mutex<()>,
}

impl UserBudget {
    /// Spends one hit taken before; `false` when none is left (then [`Self::refill`]).
    pub fn try_spend(&self) -> bool {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Spends one hit, taking more from the cluster first: `Err(wait)` when the user is over
    /// its rate.
    pub async fn refill(&self, throttle: &dyn Throttle, rate: Rate) -> Result<(), Duration> {
        let _one = self.refilling.lock().await;
        if self.try_spend() {
            return Ok(());
        }
        let taken = throttle.take(rate, &self.user, chunk(rate)).await?;
        self.left
            .fetch_add(taken.saturating_sub(1), Ordering::AcqRel);
        Ok(())
    }
}

/// The hits one refill asks for.
fn chunk(rate: Rate) -> u32 {
    let per_second = rate.per_minute / 60;
    (rate.burst / 8).min(per_second / 4).clamp(1, MAX_CHUNK)
}

/// The budgets of the users with connections on this node.
#[derive(Default)]
pub struct UserBudgets {
    budgets: Mutex<HashMap<String, Weak<UserBudget>>>,
}

impl UserBudgets {
    /// The budget `user`'s connections on this node share; dropped with the last of them.
    pub fn get(&self, user: &str) -> Arc<UserBudget> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(budget) = budgets.get(user).and_then(Weak::upgrade) {
            return budget;
        }
        let budget = Arc::new(UserBudget {
            user: user.to_owned(),
            left: AtomicU32::new(0),
            refilling: tokio::sync::Mutex::new(()),
        });
        // Forget users gone from the node once the map doubled since the last sweep.
        if budgets.len() >= 1024 && budgets.len().is_power_of_two() {
            budgets.retain(|_, b| b.strong_count() > 0);
        }
        budgets.insert(user.to_owned(), Arc::downgrade(&budget));
        budget
    }

    pub fn len(&self) -> usize {
        self.budgets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MemoryThrottle;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            name: "user_msg_rate",
            per_minute: per_second * 60,
            burst,
            minutes: 1,
        }
    }

    #[tokio::test]
    async fn connections_of_a_user_share_one_budget_and_spend_what_a_refill_took() {
        let throttle = MemoryThrottle::default();
        let budgets = UserBudgets::default();
        let (a, b) = (budgets.get("u"), budgets.get("u"));
        assert!(Arc::ptr_eq(&a, &b));
        let rate = rate(1, 40);
        assert_eq!(chunk(rate), 1, "a slow rate takes one at a time");
        let mut passed = 0;
        for budget in [&a, &b].iter().cycle().take(60) {
            if budget.try_spend() || budget.refill(&throttle, rate).await.is_ok() {
                passed += 1;
            }
        }
        assert!((40..=41).contains(&passed), "{passed} of 60 passed");
        assert!(!budgets.get("v").try_spend());
        let other = budgets.get("v");
        assert!(
            other.refill(&throttle, rate).await.is_ok(),
            "another user has its own"
        );
    }

    #[tokio::test]
    async fn a_fast_rate_is_taken_in_chunks_and_never_over_the_bucket() {
        let throttle = MemoryThrottle::default();
        let budgets = UserBudgets::default();
        let rate = rate(100, 400);
        assert_eq!(chunk(rate), 25);
        let budget = budgets.get("u");
        let (mut passed, mut refills) = (0, 0);
        for _ in 0..1000 {
            if budget.try_spend() {
                passed += 1;
            } else {
                refills += 1;
                if budget.refill(&throttle, rate).await.is_ok() {
                    passed += 1;
                }
            }
        }
        assert!((400..=410).contains(&passed), "{passed} passed");
        assert!(refills < 700, "{refills} refills");
    }

    #[test]
    fn budgets_of_gone_users_are_forgotten() {
        let budgets = UserBudgets::default();
        for n in 0..5000 {
            drop(budgets.get(&n.to_string()));
        }
        assert!(budgets.len() < 5000, "{} kept", budgets.len());
        let kept = budgets.get("kept");
        for n in 5000..10_000 {
            drop(budgets.get(&n.to_string()));
        }
        assert!(Arc::ptr_eq(&kept, &budgets.get("kept")));
    }
}
