//! The retry budget: retries are a fraction (`retry_budget`) of first attempts, plus a small
//! reserve, so that retries cannot multiply the load on a failing region; and the full-jitter
//! backoff between attempts.

use rand::Rng;
use tokio::time::Duration;

/// Retries always allowed before the ratio has anything to go on.
pub(super) const BUDGET_RESERVE: f64 = 10.0;

#[derive(Debug)]
pub(super) struct RetryBudget {
    balance: f64,
}

impl RetryBudget {
    pub(super) fn new() -> RetryBudget {
        RetryBudget {
            balance: BUDGET_RESERVE,
        }
    }

    /// A first attempt earns `ratio` of a retry.
    pub(super) fn deposit(&mut self, ratio: f64) {
        self.balance = (self.balance + ratio).min(BUDGET_RESERVE + 100.0);
    }

    /// Take one retry, if there is one.
    pub(super) fn withdraw(&mut self) -> bool {
        if self.balance >= 1.0 {
            self.balance -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Full-jitter exponential backoff before retry `attempt` (1-based).
pub(super) fn backoff(base: Duration, attempt: u32) -> Duration {
    let cap = base.saturating_mul(1 << attempt.min(10));
    cap.mul_f64(rand::thread_rng().gen_range(0.0..1.0))
}
