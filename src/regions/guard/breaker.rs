//! The circuit breaker: opens after `breaker_failures` failures in a row or a failure ratio of
//! `breaker_failure_ratio` over the last calls; while open no client request goes, and after
//! `breaker_cooldown` the proxy's own probe (`probe.rs`) decides whether it closes.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::{Duration, Instant};

use super::retry_after::later;
use super::Health;

/// The failure ratio is judged over this many recent calls, once there are this many.
pub(super) const RATIO_WINDOW: usize = 20;

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

#[derive(Debug)]
pub(super) struct Breaker {
    pub(super) state: BreakerState,
    consecutive_failures: u32,
    /// Most recent outcomes, true = failure.
    recent: VecDeque<bool>,
    /// The last failure recorded, as the error said it.
    last_failure: Option<Arc<str>>,
}

/// What the breaker is told to judge by (from the region's settings).
pub(super) struct Thresholds {
    pub failures: u32,
    pub(crate) ratio: f64,
    pub(crate) cooldown: Duration,
}

impl Breaker {
    pub(super) fn new() -> Breaker {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            recent: VecDeque::with_capacity(RATIO_WINDOW),
            last_failure: None,
        }
    }

    /// Is the open breaker's cool-down over? Then this caller sends the one probe (the
    /// breaker is half-open until the probe's outcome is recorded).
    pub(super) fn take_probe(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            _ => false,
        }
    }

    /// Record what a sent request came to; true when this opened the breaker.
    pub(super) fn record(
        &mut self,
        health: Health,
        now: Instant,
        cause: Option<&str>,
        t: &Thresholds,
    ) -> bool {
        let failure = match health {
            Health::Healthy => false,
            Health::Faulty => true,
            Health::Unknown => return false,
        };
        if failure {
            self.last_failure = Some(Arc::from(cause.unwrap_or("failed")));
        }
        if self.recent.len() == RATIO_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(failure);
        if !failure {
            self.consecutive_failures = 0;
            self.state = BreakerState::Closed;
            return false;
        }
        self.consecutive_failures += 1;
        let failures = self.recent.iter().filter(|f| **f).count();
        let ratio_tripped = self.recent.len() == RATIO_WINDOW
            && failures as f64 / RATIO_WINDOW as f64 >= t.ratio;
        if self.state == BreakerState::HalfOpen
            || self.consecutive_failures >= t.failures
            || ratio_tripped
        {
            self.state = BreakerState::Open {
                until: later(now, t.cooldown),
            };
            self.recent.clear();
            return true;
        }
        false
    }

    /// While open or half-open: the failure that opened it and how long until the next probe
    /// may go (zero when it is due or in flight).
    pub(super) fn open_since(&self, now: Instant) -> Option<(Arc<str>, Duration)> {
        let retry_in = match self.state {
            BreakerState::Closed => return None,
            BreakerState::Open { until } => until.saturating_duration_since(now),
            BreakerState::HalfOpen => Duration::ZERO,
        };
        Some((self.last_failure.clone()?, retry_in))
    }
}
