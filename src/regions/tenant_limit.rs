//! Per-project limits at the edge (`[tenants]`, README "Fair sharing"): how many requests
//! that need a region call one project may make, whatever the others do. A generic cell rate
//! algorithm per project: `rate` a second, `burst` at once above it. Past it the request is
//! refused before any region is asked, with how long to wait. Cache hits never come here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use crate::config::TenantsConfig;

/// Bytes the projects' states may take, keys included (a project's scope is a path segment).
const MAX_BYTES: u64 = 16 << 20;

#[derive(Debug)]
pub struct TenantLimits {
    /// Seconds between two requests of one project; `None`: no limit.
    interval: Option<Duration>,
    /// How far ahead of now a project's theoretical arrival time may run.
    tolerance: Duration,
    /// A project's theoretical arrival time: when its next request would be on time.
    projects: moka::sync::Cache<Box<str>, Arc<Mutex<Instant>>>,
    /// Requests refused, all projects together (no label per project: cardinality).
    pub(crate) refused: Counter,
}

impl TenantLimits {
    pub fn new(config: &TenantsConfig) -> TenantLimits {
        let interval = (config.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / config.rate));
        TenantLimits {
            interval,
            tolerance: interval.unwrap_or_default() * config.burst.max(1),
            projects: moka::sync::Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(weight)
                // A project idle for a burst's time is back to a full burst anyway.
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            refused: Counter::default(),
        }
    }

    /// May `tenant` make a request that needs a region call now? `Err(wait)`: not before
    /// `wait` has passed.
    pub fn admit(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let state = match self.projects.get(tenant) {
            Some(state) => state,
            None => self
                .projects
                .get_with(tenant.into(), || Arc::new(Mutex::new(now))),
        };
        let mut tat = state.lock().unwrap_or_else(|p| p.into_inner());
        let next = (*tat).max(now) + interval;
        if next.saturating_duration_since(now) > self.tolerance {
            self.refused.inc();
            return Err(next.saturating_duration_since(now) - self.tolerance);
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

    #[tokio::test(start_paused = true)]
    async fn a_project_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let limits = TenantLimits::new(&TenantsConfig { rate: 2.0, burst: 3 });
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(limits.admit("/v3/a", now), Ok(()));
        }
        let wait = limits.admit("/v3/a", now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(limits.admit("/v3/b", now), Ok(()), "another project");
        assert_eq!(limits.admit("/v3/a", now + wait), Ok(()));
        assert!(limits.admit("/v3/a", now + wait).is_err());
        assert_eq!(limits.refused.get(), 2);
        let off = TenantLimits::new(&TenantsConfig { rate: 0.0, burst: 1 });
        assert!((0..1000).all(|_| off.admit("/v3/a", now).is_ok()));
    }
}
