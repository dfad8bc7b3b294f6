//! What a region's calls came to, for the status page (`state/status.rs`): counts by outcome
//! and a latency histogram, both cumulative (the page's sampler reads them every second and
//! takes the difference over the last minute), and the last failure with its wall-clock
//! time. In-process numbers: the page never scrapes the proxy's own `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Upper bounds of the latency buckets, in milliseconds (the last bucket is everything
/// slower), the bounds of `vbs_upstream_latency_seconds`.
pub const LATENCY_BOUNDS_MS: [u64; 13] = [1, 3, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Calls by outcome (`ok`, `status_5xx`, `timeout`, `rate_limited`, ...: the
/// `vbs_upstream_calls_total` outcomes) and sent calls by latency bucket.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    pub outcomes: BTreeMap<&'static str, u64>,
    pub latency: [u64; LATENCY_BOUNDS_MS.len() + 1],
}

impl Counts {
    /// What was counted since `earlier` (a reading of the same tally).
    pub fn since(&self, earlier: &Counts) -> Counts {
        let outcomes = self
            .outcomes
            .iter()
            .map(|(k, v)| (*k, v - earlier.outcomes.get(k).copied().unwrap_or(0).min(*v)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let mut latency = self.latency;
        for (now, then) in latency.iter_mut().zip(earlier.latency) {
            *now = now.saturating_sub(then);
        }
        Counts { outcomes, latency }
    }

    pub fn calls(&self) -> u64 {
        self.outcomes.values().sum()
    }

    /// The latency under which a share `q` of the sent calls came back: the upper bound of the
    /// bucket the `q`-th call falls in (a bound, not an estimate inside the bucket); `None`
    /// without calls, or when it falls in the last, open bucket (slower than 10 s).
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BOUNDS_MS.get(i).map(|ms| Duration::from_millis(*ms));
            }
        }
        None
    }
}

/// A region's tally (one per guard: it lives as long as the region's guard).
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<Counts>,
    last_failure: Mutex<Option<(SystemTime, Arc<str>)>>,
}

impl Tally {
    /// A call's outcome; `took` when it was sent (a refusal of the guard was not).
    pub fn count(&self, outcome: &'static str, took: Option<Duration>) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.outcomes.entry(outcome).or_default() += 1;
        if let Some(took) = took {
            let ms = took.as_millis();
            let bucket = LATENCY_BOUNDS_MS
                .iter()
                .position(|bound| ms <= u128::from(*bound))
                .unwrap_or(LATENCY_BOUNDS_MS.len());
            counts.latency[bucket] += 1;
        }
    }

    /// A failure of the region (no answer, a 5xx, a 429), as the breaker was told of it.
    pub fn failed(&self, cause: &str) {
        let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some((SystemTime::now(), Arc::from(cause)));
    }

    pub fn reading(&self) -> Counts {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn last_failure(&self) -> Option<(SystemTime, Arc<str>)> {
        self.last_failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_the_bounds_of_their_buckets_and_readings_subtract() {
        let tally = Tally::default();
        for _ in 0..98 {
            tally.count("ok", Some(Duration::from_millis(4)));
        }
        tally.count("status_5xx", Some(Duration::from_millis(40)));
        tally.count("timeout", Some(Duration::from_secs(30)));
        tally.count("rate_limited", None);
        let first = tally.reading();
        assert_eq!(first.calls(), 101);
        assert_eq!(first.latency_quantile(0.5), Some(Duration::from_millis(5)));
        assert_eq!(first.latency_quantile(0.99), Some(Duration::from_millis(50)));
        assert_eq!(first.latency_quantile(1.0), None, "slower than the last bound");
        tally.count("ok", Some(Duration::from_millis(200)));
        let since = tally.reading().since(&first);
        assert_eq!(since.outcomes, BTreeMap::from([("ok", 1)]));
        assert_eq!(since.latency_quantile(0.5), Some(Duration::from_millis(250)));
        assert_eq!(Counts::default().latency_quantile(0.5), None);
    }
}
