//! Per-project limits at the edge (`[tenants]`, README "Fair sharing"): how many requests
//! that need a region call one project may make, whatever the others do. A generic cell rate
//! algorithm per project: `rate` a second, `burst` at once above it; and at most
//! `max_concurrency` of them under way at once. Past either the request is refused before any
//! region is asked, with how long to wait. Cache hits never come here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;

use super::throttled::Reason;
use crate::config::TenantsConfig;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    reason: &'static str,
}

/// Why a request was refused, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    pub retry_after: Duration,
}

/// Bytes the projects' states may take, keys included (a project's scope is a path segment).
const MAX_BYTES: u64 = 16 << 20;

#[derive(Debug)]
pub struct TenantLimits {
    /// The settings it was made from (a reload that changes them makes new limits).
    pub(crate) made_of: TenantsConfig,
    /// Seconds between two requests of one project; `None`: no limit.
    interval: Option<Duration>,
    /// How far ahead of now a project's theoretical arrival time may run.
    tolerance: Duration,
    burst: u32,
    /// A project's theoretical arrival time: when its next request would be on time.
    projects: moka::sync::Cache<Box<str>, Arc<Mutex<Instant>>>,
    /// `max_concurrency`: one project's requests under way at once; 0: no cap.
    max_concurrency: u32,
    /// Each project's requests under way now. A project leaves at zero, so the map holds at
    /// most one entry per request in flight (`server.max_in_flight`).
    under_way: Arc<UnderWayCounts>,
    /// Requests refused by reason, all projects together (no label per project: cardinality).
    pub(crate) refused: Family<ReasonLabel, Counter>,
}

/// Each project's requests under way.
type UnderWayCounts = Mutex<HashMap<Box<str>, u32>>;

/// A request of one project under way to the regions: counted against its
/// `max_concurrency` until dropped.
#[derive(Debug)]
pub struct UnderWay {
    counted: Option<(Arc<UnderWayCounts>, Box<str>)>,
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        if let Some((under_way, tenant)) = self.counted.take() {
            let mut map = under_way.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&tenant) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&tenant);
                }
            }
        }
    }
}

impl TenantLimits {
    /// Bytes the projects' states weigh (`vbs_map_bytes`).
    pub(crate) fn bytes(&self) -> u64 {
        self.projects.run_pending_tasks();
        self.projects.weighted_size()
    }

    pub fn new(config: &TenantsConfig) -> TenantLimits {
        let interval = (config.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / config.rate));
        TenantLimits {
            made_of: config.clone(),
            interval,
            tolerance: interval.unwrap_or_default() * config.burst.max(1),
            burst: config.burst.max(1),
            projects: moka::sync::Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(weight)
                // A project idle for a burst's time is back to a full burst anyway.
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            max_concurrency: config.max_concurrency,
            under_way: Arc::default(),
            refused: Family::default(),
        }
    }

    /// May `tenant` make a request that needs a region call now, on this replica's `share`
    /// of the rate (1, or in fleet mode while Redis is away the replicas last seen alive)?
    /// While it is under way, the returned value counts it. Refused: it waits or is under
    /// way too often.
    pub fn admit(&self, tenant: &str, now: Instant, share: u32) -> Result<UnderWay, Refused> {
        let under_way = self.start(tenant)?;
        if let Err(wait) = self.on_time(tenant, now, share) {
            return Err(self.refuse(Reason::Rate, wait));
        }
        Ok(under_way)
    }

    pub fn max_concurrency(&self) -> u32 {
        self.max_concurrency
    }

    /// The rate as the fleet's store holds it: the interval between two requests of one
    /// project and how far ahead its burst lets it run (`None`: no rate).
    pub(crate) fn fleet_gcra(&self) -> Option<(Duration, Duration)> {
        self.interval.map(|i| (i, self.tolerance))
    }

    pub(crate) fn refuse(&self, reason: Reason, retry_after: Duration) -> Refused {
        let label = ReasonLabel {
            reason: reason.as_str(),
        };
        self.refused.get_or_create(&label).inc();
        Refused {
            reason,
            retry_after,
        }
    }

    /// One more request of `tenant` under way, within `max_concurrency`. Refused, it may try
    /// again when one of its requests is answered: a second, as `Retry-After` says it.
    /// Per replica, as the region's own concurrency (`upstream.max_concurrency`) is.
    fn start(&self, tenant: &str) -> Result<UnderWay, Refused> {
        if self.max_concurrency == 0 {
            return Ok(UnderWay { counted: None });
        }
        let cap = self.max_concurrency;
        let mut map = self.under_way.lock().unwrap_or_else(|p| p.into_inner());
        let n = match map.get_mut(tenant) {
            Some(n) => n,
            None => map.entry(tenant.into()).or_insert(0),
        };
        if *n >= cap {
            drop(map);
            return Err(self.refuse(Reason::Concurrency, Duration::from_secs(1)));
        }
        *n += 1;
        Ok(UnderWay {
            counted: Some((self.under_way.clone(), tenant.into())),
        })
    }

    /// The rate: `Err(wait)` when `tenant` is early by more than its burst.
    fn on_time(&self, tenant: &str, now: Instant, share: u32) -> Result<(), Duration> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        // A share of the rate, and of the burst (at least one request).
        let share = share.max(1);
        let interval = interval * share;
        let tolerance = match share {
            1 => self.tolerance,
            _ => interval * (self.burst / share).max(1),
        };
        let state = match self.projects.get(tenant) {
            Some(state) => state,
            None => self
                .projects
                .get_with(tenant.into(), || Arc::new(Mutex::new(now))),
        };
        let mut tat = state.lock().unwrap_or_else(|p| p.into_inner());
        let next = (*tat).max(now) + interval;
        if next.saturating_duration_since(now) > tolerance {
            return Err(next.saturating_duration_since(now) - tolerance);
        }
        *tat = next;
        Ok(())
    }
}

/// A project's state in bytes: its key, the state, and the cache's own bookkeeping.
#[allow(clippy::borrowed_box)] // moka's weigher takes the key as stored
fn weight(key: &Box<str>, _state: &Arc<Mutex<Instant>>) -> u32 {
    (key.len() + 96).min(u32::MAX as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, burst: u32, max_concurrency: u32) -> TenantLimits {
        TenantLimits::new(&TenantsConfig {
            rate,
            burst,
            max_concurrency,
        })
    }

    fn refused(limits: &TenantLimits, reason: Reason) -> u64 {
        let label = ReasonLabel {
            reason: reason.as_str(),
        };
        limits.refused.get_or_create(&label).get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_project_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let limits = limits(2.0, 3, 0);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(limits.admit("/v3/a", now, 1).is_ok());
        }
        let wait = limits.admit("/v3/a", now, 1).unwrap_err();
        assert_eq!(wait.retry_after, Duration::from_millis(500));
        assert_eq!(wait.reason, Reason::Rate);
        assert!(limits.admit("/v3/b", now, 1).is_ok(), "another project");
        assert!(limits.admit("/v3/a", now + wait.retry_after, 1).is_ok());
        assert!(limits.admit("/v3/a", now + wait.retry_after, 1).is_err());
        assert_eq!(refused(&limits, Reason::Rate), 2);
        let off = self::limits(0.0, 1, 0);
        assert!((0..1000).all(|_| off.admit("/v3/a", now, 1).is_ok()));
    }

    #[test]
    fn a_project_has_at_most_its_requests_under_way_and_others_are_untouched() {
        let limits = limits(0.0, 1, 2);
        let now = Instant::now();
        let first = limits.admit("/v3/a", now, 1).unwrap();
        let second = limits.admit("/v3/a", now, 1).unwrap();
        let third = limits.admit("/v3/a", now, 1).unwrap_err();
        assert_eq!(third.reason, Reason::Concurrency);
        assert_eq!(third.retry_after, Duration::from_secs(1));
        let other = limits.admit("/v3/b", now, 1).unwrap();
        drop(first);
        let again = limits.admit("/v3/a", now, 1).unwrap();
        assert!(limits.admit("/v3/a", now, 1).is_err());
        drop((second, again, other));
        assert!(limits.under_way.lock().unwrap().is_empty(), "no project left behind");
        assert_eq!(refused(&limits, Reason::Concurrency), 2);
    }

    /// While the fleet's store is away, each of N replicas keeps 1/N of the rate and of the
    /// burst (at least one); the cap on requests under way is per replica anyway.
    #[tokio::test(start_paused = true)]
    async fn a_share_of_the_rate_while_the_fleet_is_apart() {
        let limits = limits(2.0, 4, 0);
        let now = Instant::now();
        assert!(limits.admit("/v3/a", now, 2).is_ok());
        assert!(limits.admit("/v3/a", now, 2).is_ok());
        let wait = limits.admit("/v3/a", now, 2).unwrap_err();
        assert_eq!(wait.retry_after, Duration::from_secs(1), "1/s, not 2/s");
        assert!(limits.admit("/v3/c", now, 8).is_ok(), "at least one");
        assert!(limits.admit("/v3/c", now, 8).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_rate_does_not_stay_under_way() {
        let limits = limits(1.0, 1, 1);
        let now = Instant::now();
        let first = limits.admit("/v3/a", now, 1).unwrap();
        drop(first);
        assert_eq!(limits.admit("/v3/a", now, 1).unwrap_err().reason, Reason::Rate);
        assert!(limits.under_way.lock().unwrap().is_empty());
    }
}
