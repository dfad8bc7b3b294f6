//! Per-region protection (README, Resilience): a circuit breaker, a retry budget, a token-bucket rate
//! limit and the region's own `Retry-After`. Pure state behind one mutex, judged with the tokio
//! clock so the tests drive it with paused time; the concurrency limit is a semaphore beside it.

use std::sync::{Arc, Mutex};

use rand::Rng;
use tokio::time::{Duration, Instant};

use crate::config::RegionSettings;

/// Retries always allowed before the ratio has anything to go on.
const BUDGET_RESERVE: f64 = 10.0;
/// The failure ratio is judged over this many recent calls, once there are this many.
const RATIO_WINDOW: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Requests fail fast; once `until` has passed, the proxy's own probe is due.
    Open {
        until: Instant,
    },
    /// The proxy's probe is out; requests still fail fast until it answers.
    HalfOpen,
}

/// What one sent request says about the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answered as a working region does.
    Healthy,
    /// No answer, a 5xx or a 429.
    Faulty,
    /// The answer depends on the request (a 4xx, the wrong shape): nothing is learnt.
    Unknown,
}

/// Why the guard refused to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    CircuitOpen,
    /// The region said `Retry-After`; no request before this time.
    BackingOff,
    RateLimited,
    Overloaded,
}

#[derive(Debug)]
struct State {
    breaker: BreakerState,
    consecutive_failures: u32,
    /// Most recent outcomes, true = failure.
    recent: std::collections::VecDeque<bool>,
    retry_after: Option<Instant>,
    /// The last failure recorded, as the error said it.
    last_failure: Option<Arc<str>>,
    budget: f64,
    /// Token bucket: tokens and when they were counted.
    tokens: f64,
    counted_at: Instant,
}

#[derive(Debug)]
pub struct Protection {
    pub settings: RegionSettings,
    state: Mutex<State>,
    pub permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Protection {
    pub fn new(settings: RegionSettings) -> Protection {
        let burst = settings.rate_limit.max(1.0);
        Protection {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(settings.max_concurrency)),
            state: Mutex::new(State {
                breaker: BreakerState::Closed,
                consecutive_failures: 0,
                recent: std::collections::VecDeque::with_capacity(RATIO_WINDOW),
                retry_after: None,
                last_failure: None,
                budget: BUDGET_RESERVE,
                tokens: burst,
                counted_at: Instant::now(),
            }),
            settings,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn breaker(&self) -> BreakerState {
        self.state().breaker
    }

    /// May a request go now? A `first` attempt (not a retry) also earns retry budget. While
    /// the breaker is open or half-open, no client request goes: a client never waits on a
    /// region that is known to be failing (the probe is the proxy's own, see `take_probe`).
    pub fn admit(&self, now: Instant, first: bool) -> Result<(), Refusal> {
        let mut s = self.state();
        if s.retry_after.is_some_and(|until| now < until) {
            return Err(Refusal::BackingOff);
        }
        if s.breaker != BreakerState::Closed {
            return Err(Refusal::CircuitOpen);
        }
        if first {
            s.budget = (s.budget + self.settings.retry_budget).min(BUDGET_RESERVE + 100.0);
        }
        Ok(())
    }

    /// Is the open breaker's cool-down over? Then this caller sends the one probe (the
    /// breaker is half-open until the probe's outcome is recorded).
    pub fn take_probe(&self, now: Instant) -> bool {
        let mut s = self.state();
        match s.breaker {
            BreakerState::Open { until } if now >= until => {
                s.breaker = BreakerState::HalfOpen;
                true
            }
            _ => false,
        }
    }

    /// A rate token now, or how long until one.
    pub fn take_token(&self, now: Instant) -> Result<(), Duration> {
        let rate = self.settings.rate_limit;
        if rate <= 0.0 {
            return Ok(());
        }
        let mut s = self.state();
        let elapsed = now.saturating_duration_since(s.counted_at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * rate).min(rate.max(1.0));
        s.counted_at = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.tokens) / rate))
        }
    }

    /// Record what a sent request came to (`cause`: what went wrong, if it did); true when
    /// this opened the breaker.
    pub fn record(&self, health: Health, now: Instant, cause: Option<&str>) -> bool {
        let failure = match health {
            Health::Healthy => false,
            Health::Faulty => true,
            Health::Unknown => return false,
        };
        let mut s = self.state();
        if failure {
            s.last_failure = Some(Arc::from(cause.unwrap_or("failed")));
        }
        if s.recent.len() == RATIO_WINDOW {
            s.recent.pop_front();
        }
        s.recent.push_back(failure);
        if !failure {
            s.consecutive_failures = 0;
            s.breaker = BreakerState::Closed;
            return false;
        }
        s.consecutive_failures += 1;
        let failures = s.recent.iter().filter(|f| **f).count();
        let ratio_tripped = s.recent.len() == RATIO_WINDOW
            && failures as f64 / RATIO_WINDOW as f64 >= self.settings.breaker_failure_ratio;
        if s.breaker == BreakerState::HalfOpen
            || s.consecutive_failures >= self.settings.breaker_failures
            || ratio_tripped
        {
            s.breaker = BreakerState::Open {
                until: later(now, self.settings.breaker_cooldown),
            };
            s.recent.clear();
            return true;
        }
        false
    }

    /// While the breaker is open or half-open: the failure that opened it and how long until
    /// the next probe may go (zero when it is due or in flight).
    pub fn open_since(&self, now: Instant) -> Option<(Arc<str>, Duration)> {
        let s = self.state();
        let retry_in = match s.breaker {
            BreakerState::Closed => return None,
            BreakerState::Open { until } => until.saturating_duration_since(now),
            BreakerState::HalfOpen => Duration::ZERO,
        };
        Some((s.last_failure.clone()?, retry_in))
    }

    /// The region answered 429: nothing goes to it before `until`.
    pub fn back_off_until(&self, until: Instant) {
        let mut s = self.state();
        s.retry_after = Some(s.retry_after.map_or(until, |u| u.max(until)));
    }

    /// Take one retry from the budget, if there is one.
    pub fn take_retry(&self) -> bool {
        let mut s = self.state();
        if s.budget >= 1.0 {
            s.budget -= 1.0;
            true
        } else {
            false
        }
    }

    /// Full-jitter exponential backoff before retry `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .settings
            .retry_backoff
            .saturating_mul(1 << attempt.min(10));
        cap.mul_f64(rand::thread_rng().gen_range(0.0..1.0))
    }
}

/// `now + wait` without overflowing the clock: a wait too long for it is as good as forever,
/// which a year stands in for.
pub fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

/// The longest `Retry-After` the proxy honours. A region may ask for more (or send
/// `18446744073709551615`); past this the proxy asks it again, so a typo or a hostile value
/// cannot switch a region off for good, nor overflow the clock.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3), at most
/// [`MAX_RETRY_AFTER`]; `None` if unreadable.
pub fn parse_retry_after(value: &str, now_system: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let when = httpdate::parse_http_date(value).ok()?;
            when.duration_since(now_system).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RegionSettings {
        RegionSettings {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            max_body_bytes: bytesize::ByteSize::mib(1),
            pool_idle_timeout: Duration::from_secs(2),
            ca_file: None,
            cert_file: None,
            key_file: None,
            retries: 2,
            retry_backoff: Duration::from_millis(50),
            retry_budget: 0.2,
            breaker_failures: 3,
            breaker_failure_ratio: 0.5,
            breaker_cooldown: Duration::from_secs(10),
            rate_limit: 0.0,
            max_concurrency: 4,
            queue_timeout: Duration::from_millis(100),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_fails_fast_probes_and_closes() {
        let g = Protection::new(config());
        for _ in 0..3 {
            assert_eq!(g.admit(Instant::now(), true), Ok(()));
            g.record(Health::Faulty, Instant::now(), Some("connection refused"));
        }
        assert!(matches!(g.breaker(), BreakerState::Open { .. }));
        assert_eq!(g.admit(Instant::now(), true), Err(Refusal::CircuitOpen));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!g.take_probe(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        // Cool-down over: one probe is due, and it is not a client's; clients still fail fast.
        assert_eq!(g.admit(Instant::now(), true), Err(Refusal::CircuitOpen));
        assert!(g.take_probe(Instant::now()));
        assert!(!g.take_probe(Instant::now()), "one probe at a time");
        assert_eq!(g.breaker(), BreakerState::HalfOpen);
        assert_eq!(g.admit(Instant::now(), true), Err(Refusal::CircuitOpen));
        // The probe fails: open again for a full cool-down.
        g.record(Health::Faulty, Instant::now(), Some("connection refused"));
        assert_eq!(g.admit(Instant::now(), true), Err(Refusal::CircuitOpen));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(g.take_probe(Instant::now()));
        g.record(Health::Healthy, Instant::now(), None);
        assert_eq!(g.breaker(), BreakerState::Closed);
        assert_eq!(g.admit(Instant::now(), true), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_on_a_failure_ratio_too() {
        let g = Protection::new(RegionSettings {
            breaker_failures: 100,
            ..config()
        });
        for i in 0..RATIO_WINDOW {
            g.admit(Instant::now(), true).unwrap();
            g.record(
                if i % 2 == 1 {
                    Health::Faulty
                } else {
                    Health::Healthy
                },
                Instant::now(),
                Some("answered HTTP 503"),
            ); // half fail, never two in a row
        }
        assert!(matches!(g.breaker(), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_every_request_back_until_then() {
        let g = Protection::new(config());
        g.back_off_until(Instant::now() + Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(g.admit(Instant::now(), true), Err(Refusal::BackingOff));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(g.admit(Instant::now(), true), Ok(()));
    }

    #[test]
    fn retry_budget_is_a_fraction_of_requests() {
        let g = Protection::new(config());
        let mut retries = 0;
        for _ in 0..1000 {
            g.admit(Instant::now(), true).unwrap();
            while g.take_retry() {
                retries += 1;
                if retries % 2 == 0 {
                    break;
                }
            }
        }
        assert!(
            retries as f64 <= BUDGET_RESERVE + 0.2 * 1000.0 + 1.0,
            "{retries}"
        );
        assert!(retries >= 200, "{retries}");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_requests() {
        let g = Protection::new(RegionSettings {
            rate_limit: 2.0,
            ..config()
        });
        assert!(g.take_token(Instant::now()).is_ok());
        assert!(g.take_token(Instant::now()).is_ok());
        let wait = g.take_token(Instant::now()).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        tokio::time::advance(wait).await;
        assert!(g.take_token(Instant::now()).is_ok());
    }

    #[test]
    fn retry_after_values() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("soon", now), None);
        // Absurd values are clamped, never an overflow later.
        assert_eq!(
            parse_retry_after("18446744073709551615", now),
            Some(MAX_RETRY_AFTER)
        );
        let far = httpdate::fmt_http_date(now + Duration::from_secs(86_400 * 365 * 100));
        assert_eq!(parse_retry_after(&far, now), Some(MAX_RETRY_AFTER));
    }
}
