//! A region's guard (README, "Resilience"): every call to the region is admitted here and its
//! outcome recorded here. One policy a file, in the order a call meets them: the region's own
//! `Retry-After` (`retry_after.rs`), the circuit breaker (`breaker.rs`, with the proxy's own
//! probe in `probe.rs`), the declared rate (`rate.rs`), the fleet's shared word
//! (`fleet.rs`), then a concurrency slot; the retry budget (`budget.rs`) bounds what a
//! failing region is asked again, and a region that let a deadline pass is waited for only a
//! grace until it answers again (`pace.rs`); a timeout counts against the region only when
//! it answered nothing else while the call was out (`admission.rs`). `admission.rs` runs them for a call and learns from its
//! outcome. The policies' state is pure, behind one mutex, and judged with the tokio clock, so
//! the tests drive it with paused time.

mod admission;
mod breaker;
mod budget;
pub(crate) mod fair;
mod fleet;
mod pace;
mod probe;
mod rate;
pub(crate) mod retry_after;
pub(crate) mod tally;

use std::sync::{Arc, Mutex};

use tokio::time::{Duration, Instant};

use crate::config::RegionSettings;
pub(super) use admission::Judged;
pub(crate) use breaker::BreakerState;
use breaker::{Breaker, Thresholds};
use budget::RetryBudget;
use rate::TokenBucket;
pub use retry_after::later;

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
    breaker: Breaker,
    budget: RetryBudget,
    bucket: TokenBucket,
    /// No request before this time (the region's `Retry-After`).
    retry_after: Option<Instant>,
    pace: pace::Pace,
    /// When the region last answered a call (any status).
    last_answer: Option<Instant>,
}

#[derive(Debug)]
pub struct Guard {
    pub settings: RegionSettings,
    state: Mutex<State>,
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
    /// `retry_after_scope = "project"`: tenants the region answered 429, held back until the
    /// time it named (`retry_after.rs`).
    tenants_backing_off: retry_after::TenantBackOffs,
    /// Calls waiting for a token and a slot, served by project in turn (`fair.rs`).
    pub(crate) fair: fair::FairQueue,
    /// Fleet mode: the region's rate limit, `Retry-After` and open breakers are shared
    /// through it; while it cannot be reached, this replica keeps to its share of the rate.
    fleet: Option<Arc<crate::fleet::Fleet>>,
    /// What its calls came to, for the status page.
    pub(crate) tally: tally::Tally,
}

impl Guard {
    pub fn new(settings: RegionSettings) -> Guard {
        Guard {
            permits: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrency)),
            tenants_backing_off: retry_after::TenantBackOffs::new(),
            fair: fair::FairQueue::new(settings.max_queued_per_project),
            state: Mutex::new(State {
                breaker: Breaker::new(),
                budget: RetryBudget::new(),
                bucket: TokenBucket::new(settings.rate_limit),
                retry_after: None,
                pace: pace::Pace::default(),
                last_answer: None,
            }),
            settings,
            fleet: None,
            tally: tally::Tally::default(),
        }
    }

    /// In fleet mode: the region's rate is the fleet's, shared through `fleet`.
    pub(crate) fn in_fleet(mut self, fleet: Option<Arc<crate::fleet::Fleet>>) -> Guard {
        self.fleet = fleet;
        self
    }

    pub(crate) fn fleet(&self) -> Option<&Arc<crate::fleet::Fleet>> {
        self.fleet.as_ref()
    }

    /// The rate this replica holds the region to now: the region's (in fleet mode the fleet's
    /// store holds the fleet to it too), or, while the store cannot be reached, this replica's
    /// share of it, the rate over the replicas it last saw alive: each replica alone at the
    /// whole rate would let a fleet of N send N times it.
    fn rate_now(&self) -> f64 {
        let rate = self.settings.rate_limit;
        match &self.fleet {
            Some(fleet) if !fleet.is_up() => rate / f64::from(fleet.replicas_alive().max(1)),
            _ => rate,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn breaker(&self) -> BreakerState {
        self.state().breaker.state
    }

    /// May a request go now? A `first` attempt (not a retry) also earns retry budget. While
    /// the breaker is open or half-open, no client request goes: a client never waits on a
    /// region that is known to be failing (the probe is the proxy's own, see `take_probe`).
    pub(crate) fn admit(&self, now: Instant, first: bool) -> Result<(), Refusal> {
        let mut s = self.state();
        if s.retry_after.is_some_and(|until| now < until) {
            return Err(Refusal::BackingOff);
        }
        if s.breaker.state != BreakerState::Closed {
            return Err(Refusal::CircuitOpen);
        }
        if first {
            s.budget.deposit(self.settings.retry_budget);
        }
        Ok(())
    }

    /// Is the open breaker's cool-down over? Then this caller sends the one probe (the
    /// breaker is half-open until the probe's outcome is recorded).
    pub(crate) fn take_probe(&self, now: Instant) -> bool {
        self.state().breaker.take_probe(now)
    }

    /// A rate token now, or how long until one.
    pub(crate) fn take_token(&self, now: Instant) -> Result<(), Duration> {
        let rate = self.rate_now();
        self.state().bucket.take(rate, now)
    }

    /// How long a call may wait for a token and a slot: `queue_timeout`, and with a rate
    /// limit one token interval more, since a call whose turn has come may still wait for the
    /// next token (with `rate_limit = 10` and the default 100 ms, a turn that came just after
    /// a token was spent would otherwise always miss).
    ///
    /// In fleet mode the interval is that of this replica's share of the fleet's rate (the
    /// rate over the replicas alive): with every replica contending, that is how often its
    /// turn at the fleet's bucket comes.
    pub(crate) fn queue_wait(&self) -> Duration {
        let rate = match &self.fleet {
            Some(fleet) => self.settings.rate_limit / f64::from(fleet.replicas_alive().max(1)),
            None => self.settings.rate_limit,
        };
        let interval = if rate > 0.0 {
            Duration::from_secs_f64(1.0 / rate)
        } else {
            Duration::ZERO
        };
        self.settings.queue_timeout.saturating_add(interval)
    }

    /// A token taken for nobody goes back.
    pub(crate) fn refund_token(&self) {
        let rate = self.rate_now();
        self.state().bucket.refund(rate);
    }

    /// Record what a sent request came to (`cause`: what went wrong, if it did); true when
    /// this opened the breaker.
    pub fn record(&self, health: Health, now: Instant, cause: Option<&str>) -> bool {
        if health == Health::Faulty {
            self.tally.failed(cause.unwrap_or("failed"));
        }
        let thresholds = Thresholds {
            failures: self.settings.breaker_failures,
            ratio: self.settings.breaker_failure_ratio,
            cooldown: self.settings.breaker_cooldown,
        };
        self.state()
            .breaker
            .record(health, now, cause, &thresholds)
    }

    /// While the breaker is open or half-open: the failure that opened it and how long until
    /// the next probe may go (zero when it is due or in flight).
    pub(crate) fn open_since(&self, now: Instant) -> Option<(Arc<str>, Duration)> {
        self.state().breaker.open_since(now)
    }

    /// A call was answered, after `took`, or its deadline passed (`None`): see `pace.rs`.
    pub(crate) fn paced(&self, took: Option<Duration>) {
        let mut s = self.state();
        match took {
            Some(took) => {
                s.pace.answered(took);
                s.last_answer = Some(Instant::now());
            }
            None => s.pace.missed_deadline(),
        }
    }

    /// How long the region's `Retry-After` still holds every call back, if it does.
    pub(crate) fn backing_off(&self, now: Instant) -> Option<Duration> {
        let until = self.state().retry_after?;
        (until > now).then(|| until - now)
    }

    /// Projects its 429s hold back now (`retry_after_scope = "project"`), and how long the
    /// longest hold has left.
    pub(crate) fn tenants_held(&self, now: Instant) -> Option<(usize, Duration)> {
        self.tenants_backing_off.held(now)
    }

    /// The projects its 429s hold back, as a handle the scrape reads their bytes from.
    pub(crate) fn tenant_holds(&self) -> retry_after::TenantBackOffs {
        self.tenants_backing_off.clone()
    }

    /// Calls sent to the region now (slots of `max_concurrency` taken).
    pub(crate) fn in_flight(&self) -> usize {
        self.settings
            .max_concurrency
            .saturating_sub(self.permits.available_permits())
    }

    /// Has the region answered any call since `since`?
    pub(crate) fn answered_since(&self, since: Instant) -> bool {
        self.state().last_answer.is_some_and(|t| t > since)
    }


    /// How long a page waits for the region once the others have answered: `None` (its
    /// whole deadline) unless a deadline passed and it has not answered since (`pace.rs`).
    pub fn suspect_grace(&self) -> Option<Duration> {
        self.state().pace.grace()
    }

    /// Is `tenant` held back by a 429 of its own (`retry_after_scope = "project"`)?
    pub(crate) fn tenant_backing_off(&self, tenant: &str, now: Instant) -> bool {
        self.tenants_backing_off.holds(tenant, now)
    }

    /// The region answered `tenant` 429: nothing of the tenant's goes to it before `until`.
    pub(crate) fn back_off_tenant(&self, tenant: &str, until: Instant) {
        self.tenants_backing_off.hold(tenant, until);
    }

    /// The region answered 429: nothing goes to it before `until`.
    pub(crate) fn back_off_until(&self, until: Instant) {
        let mut s = self.state();
        s.retry_after = Some(s.retry_after.map_or(until, |u| u.max(until)));
    }

    /// Take one retry from the budget, if there is one.
    pub(crate) fn take_retry(&self) -> bool {
        self.state().budget.withdraw()
    }

    /// Full-jitter exponential backoff before retry `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        budget::backoff(self.settings.retry_backoff, attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::breaker::RATIO_WINDOW;
    use super::budget::BUDGET_RESERVE;
    use super::*;

    fn config() -> RegionSettings {
        RegionSettings {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            max_body_bytes: bytesize::ByteSize::mib(1),
            pool_idle_timeout: Duration::from_secs(2),
            retry_after_scope: crate::config::RetryAfterScope::Project,
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
            max_queued_per_project: 64,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_fails_fast_probes_and_closes() {
        let g = Guard::new(config());
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
        let g = Guard::new(RegionSettings {
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
        let g = Guard::new(config());
        g.back_off_until(Instant::now() + Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(g.admit(Instant::now(), true), Err(Refusal::BackingOff));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(g.admit(Instant::now(), true), Ok(()));
    }

    #[test]
    fn retry_budget_is_a_fraction_of_requests() {
        let g = Guard::new(config());
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
        let g = Guard::new(RegionSettings {
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
}
