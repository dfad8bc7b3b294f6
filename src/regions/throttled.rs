//! Who is throttled now (README, "Fair sharing"): the projects refused lately, by reason, for
//! the operator (`GET /admin/throttled`) and the `vbs_tenants_throttled` gauge. Metrics carry
//! no label per project (cardinality); this record is where the names are. A project's
//! record goes a minute after its last refusal; the record is bounded in bytes, keys
//! included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes the records may take, keys included.
const MAX_BYTES: u64 = 4 << 20;

/// A project stays in the record this long after its last refusal.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Why a project's request or call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Past its `tenants.rate` and `tenants.burst` (429).
    Rate,
    /// Past its `tenants.max_concurrency` (429).
    Concurrency,
    /// Its call waited its turn at a region's limiter past the queue timeout, or its queue
    /// there was full.
    RegionQueue,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Rate, Reason::Concurrency, Reason::RegionQueue];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rate => "rate",
            Reason::Concurrency => "concurrency",
            Reason::RegionQueue => "region_queue",
        }
    }
}

#[derive(Debug)]
struct Record {
    refused: [AtomicU64; 3],
    last: Mutex<Instant>,
}

/// One project's refusals in the record.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    /// The tenant: a project's scope (`/v3/{project}`), or a project-less caller's digest.
    pub tenant: Box<str>,
    /// By [`Reason::ALL`].
    pub refused: [u64; 3],
    pub since_last: Duration,
}

impl Throttle {
    pub fn total(&self) -> u64 {
        self.refused.iter().sum()
    }
}

#[derive(Debug)]
pub struct Throttled {
    projects: moka::sync::Cache<Box<str>, Arc<Record>>,
}

impl Default for Throttled {
    fn default() -> Self {
        Throttled {
            projects: moka::sync::Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(weight)
                .time_to_idle(WINDOW)
                .build(),
        }
    }
}

impl Throttled {
    /// Bytes the records weigh (`vbs_map_bytes`).
    pub(crate) fn bytes(&self) -> u64 {
        self.projects.run_pending_tasks();
        self.projects.weighted_size()
    }

    /// `tenant` was refused for `reason`.
    pub(crate) fn record(&self, tenant: &str, reason: Reason) {
        let record = match self.projects.get(tenant) {
            Some(r) => r,
            None => self.projects.get_with(tenant.into(), || {
                Arc::new(Record {
                    refused: Default::default(),
                    last: Mutex::new(Instant::now()),
                })
            }),
        };
        record.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
        *record.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// The `n` projects refused most within the window, most first.
    pub fn top(&self, n: usize) -> Vec<Throttle> {
        let now = Instant::now();
        let mut all: Vec<Throttle> = self
            .projects
            .iter()
            .map(|(tenant, r)| Throttle {
                tenant: Box::from(&**tenant),
                refused: std::array::from_fn(|i| r.refused[i].load(Ordering::Relaxed)),
                since_last: now
                    .saturating_duration_since(*r.last.lock().unwrap_or_else(|p| p.into_inner())),
            })
            .filter(|t| t.since_last < WINDOW)
            .collect();
        all.sort_by(|a, b| b.total().cmp(&a.total()).then_with(|| a.tenant.cmp(&b.tenant)));
        all.truncate(n);
        all
    }

    /// Projects refused within the window.
    pub fn count(&self) -> u64 {
        self.projects.run_pending_tasks();
        self.projects.entry_count()
    }
}

#[allow(clippy::borrowed_box)] // moka's weigher takes the key as stored
fn weight(key: &Box<str>, _: &Arc<Record>) -> u32 {
    (key.len() + 160).min(u32::MAX as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_refused_projects_come_first_with_their_reasons() {
        let t = Throttled::default();
        for _ in 0..3 {
            t.record("/v3/a", Reason::Rate);
        }
        t.record("/v3/a", Reason::RegionQueue);
        t.record("/v3/b", Reason::Concurrency);
        for _ in 0..5 {
            t.record("/v3/c", Reason::RegionQueue);
        }
        let top = t.top(2);
        let names: Vec<&str> = top.iter().map(|t| &*t.tenant).collect();
        assert_eq!(names, ["/v3/c", "/v3/a"]);
        assert_eq!(top[1].refused, [3, 0, 1]);
        assert!(top[0].since_last < WINDOW);
        assert_eq!(t.count(), 3);
    }

    #[test]
    fn the_record_is_bounded_in_bytes() {
        let t = Throttled::default();
        let long = "x".repeat(60_000);
        for i in 0..200 {
            t.record(&format!("/v3/{i}{long}"), Reason::Rate);
        }
        t.projects.run_pending_tasks();
        assert!(t.projects.weighted_size() <= MAX_BYTES);
        assert!(t.count() < 200);
    }
}
