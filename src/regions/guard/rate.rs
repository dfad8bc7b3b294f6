//! The region's declared rate (`rate_limit`, calls per second): a token bucket with a burst of
//! one second's worth.

use tokio::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct TokenBucket {
    tokens: f64,
    counted_at: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: f64) -> TokenBucket {
        TokenBucket {
            tokens: rate.max(1.0),
            counted_at: Instant::now(),
        }
    }

    /// A token taken for nobody (every waiter gave up) goes back.
    pub(super) fn refund(&mut self, rate: f64) {
        if rate > 0.0 {
            self.tokens = (self.tokens + 1.0).min(rate.max(1.0));
        }
    }

    /// A token now, or how long until one (`rate` ≤ 0: no limit).
    pub(super) fn take(&mut self, rate: f64, now: Instant) -> Result<(), Duration> {
        if rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.counted_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.counted_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}
