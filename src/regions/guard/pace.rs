//! How long a page waits for a region that let a deadline pass (issue 23, class 8).
//!
//! The breaker opens after several failures; until it does, every request would wait a whole
//! `upstream.timeout` for a region that has stopped answering. Instead, once a call's deadline
//! has passed without an answer, the region is *suspect* until it answers again, and a page
//! waits for it at most a grace after the other regions have answered: twice its slowest
//! answer among the last few, and never less than [`FLOOR`]. A hung region costs one deadline
//! (the call that found it out), and then a grace; a region that is merely slow (3 s, say)
//! has shown it, and is still waited for. Its calls go on, within their own deadline, in the
//! region-page cache's tasks: an answer that comes fills the cache and clears the suspicion.

use tokio::time::Duration;

/// The shortest grace a suspect region gets: enough for a healthy region's round trip under
/// load, short against any `upstream.timeout` worth setting.
pub const FLOOR: Duration = Duration::from_millis(500);

/// Answers remembered for the region's recent latency.
const RECENT: usize = 16;

#[derive(Debug, Default)]
pub(super) struct Pace {
    /// A call's deadline passed, and no call has been answered since.
    suspect: bool,
    /// How long the last answered calls took (a ring of `RECENT`).
    recent: [Duration; RECENT],
    next: usize,
}

impl Pace {
    /// A call was answered (any status: the region is there), after `took`.
    pub fn answered(&mut self, took: Duration) {
        self.suspect = false;
        self.recent[self.next] = took;
        self.next = (self.next + 1) % RECENT;
    }

    /// A call's deadline passed without an answer.
    pub fn missed_deadline(&mut self) {
        self.suspect = true;
    }

    /// How long a page waits for the region once the others have answered: `None` while it
    /// is not suspect (its whole deadline).
    pub fn grace(&self) -> Option<Duration> {
        let slowest = self.recent.iter().max().copied().unwrap_or_default();
        self.suspect.then(|| slowest.saturating_mul(2).max(FLOOR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_deadline_makes_a_region_suspect_until_it_answers() {
        let mut pace = Pace::default();
        assert_eq!(pace.grace(), None, "never missed: its whole deadline");
        pace.missed_deadline();
        assert_eq!(pace.grace(), Some(FLOOR), "nothing known of it: the floor");
        pace.answered(Duration::from_secs(3));
        assert_eq!(pace.grace(), None, "it answered");
        pace.missed_deadline();
        assert_eq!(
            pace.grace(),
            Some(Duration::from_secs(6)),
            "a slow region is waited for as long as it has shown it needs, twice"
        );
        // The slow answer ages out of the recent ones.
        for _ in 0..RECENT {
            pace.answered(Duration::from_millis(10));
        }
        pace.missed_deadline();
        assert_eq!(pace.grace(), Some(FLOOR));
    }
}
