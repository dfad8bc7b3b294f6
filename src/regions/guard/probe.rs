//! The half-open probe: the proxy's own request for the region's version document, in a task
//! of its own, so that no client waits on a region known to be failing. Its outcome closes
//! the breaker or opens it for another cool-down.

use tokio::time::Instant;

use super::retry_after::retry_after_of;
use super::{later, Health, Judged};
use crate::regions::{RegionClient, RegionError};

impl RegionClient {
    pub(super) fn spawn_probe(&self) {
        let guard = self.guard.clone();
        let request = self
            .http
            .get(format!("{}/", self.base))
            .header(reqwest::header::ACCEPT, "application/json");
        let name = self.name.clone();
        let metrics = self.metrics.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let started = Instant::now();
            let sent = tokio::time::timeout(timeout, request.send()).await;
            let judged = match sent {
                Err(_) => Judged::of(&RegionError::Timeout),
                Ok(Err(e)) => Judged::of(&RegionError::from_reqwest(e)),
                Ok(Ok(r)) => Judged::status(r.status(), retry_after_of(&r)),
            };
            let took = started.elapsed();
            metrics.observe_latency(&name, took);
            match judged.status {
                0 if judged.outcome == RegionError::Timeout.kind() => guard.paced(None),
                0 => {}
                _ => guard.paced(Some(took)),
            }
            metrics.count(&name, judged.outcome);
            guard.tally.count(judged.outcome, Some(took));
            // Any answer but a 5xx or 429 is a region that answers (it cannot stay half-open).
            let health = match judged.health {
                Health::Unknown => Health::Healthy,
                other => other,
            };
            guard.record(health, Instant::now(), judged.failure.as_deref());
            if let Some(wait) = judged.retry_after {
                guard.back_off_until(later(Instant::now(), wait));
            }
            tracing::info!(region = %name, outcome = judged.outcome, breaker = ?guard.breaker(), "breaker probe");
        });
    }
}
