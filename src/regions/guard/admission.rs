//! A call through the guard: admitted by each policy in turn (or refused, counted, nothing
//! sent), and its outcome judged: counted, recorded by the breaker, a 429's `Retry-After`
//! honoured, and told to the fleet.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::fair::Joined;
use super::fleet::FleetSays;
use super::{later, Guard, Health, Refusal};
use crate::config::RetryAfterScope;
use crate::regions::client::Whom;
use crate::regions::throttled::Reason;
use crate::regions::{RegionClient, RegionError};

/// What one attempt came to, as the metrics, the span and the guard record it.
pub(crate) struct Judged {
    /// HTTP status; 0 when there was no answer.
    pub status: u16,
    pub outcome: &'static str,
    pub(crate) health: Health,
    pub(crate) retry_after: Option<Duration>,
    /// What went wrong, for the breaker to tell when it refuses.
    pub failure: Option<String>,
}

impl Judged {
    pub fn ok() -> Judged {
        Judged {
            status: 200,
            outcome: "ok",
            health: Health::Healthy,
            retry_after: None,
            failure: None,
        }
    }

    pub fn of(e: &RegionError) -> Judged {
        Judged {
            status: e.status().map_or(0, |s| s.as_u16()),
            outcome: e.kind(),
            health: e.health(),
            retry_after: match e {
                RegionError::Status { retry_after, .. } => *retry_after,
                _ => None,
            },
            failure: Some(e.to_string()),
        }
    }

    /// A pass-through answer, judged by its status alone (its body is the client's).
    pub fn status(status: StatusCode, retry_after: Option<Duration>) -> Judged {
        if status.is_success() || status.is_redirection() || status.is_informational() {
            return Judged {
                status: status.as_u16(),
                ..Judged::ok()
            };
        }
        Judged::of(&RegionError::Status {
            status,
            content_type: None,
            body: Bytes::new(),
            retry_after,
            www_authenticate: None,
        })
    }
}

/// While calls wait at the region's limiter: take a token (in fleet mode the fleet's too, so
/// that what the fleet lets through goes to the call whose turn it is here, not to whichever
/// granted call asks Redis first), then a slot, and give them to the call whose turn it is
/// then (so a call that joined during the wait is considered); stop when nobody waits,
/// giving this replica's token back.
async fn hand_out(guard: Arc<Guard>, region: String) {
    loop {
        while let Err(wait) = guard.take_token(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        if let Some(fleet) = guard.fleet().filter(|_| guard.settings.rate_limit > 0.0) {
            // Redis unavailable: this replica's share of the rate (its bucket) stands alone.
            let rate = guard.settings.rate_limit;
            if let Some(wait) = fleet.reserve_rate_token(&region, rate).await {
                tokio::time::sleep(wait).await;
            }
        }
        let Ok(permit) = guard.permits.clone().acquire_owned().await else {
            return; // never closed
        };
        if guard.fair.hand_over(permit).is_some() {
            guard.refund_token();
            return;
        }
    }
}

impl RegionClient {
    /// Through the guard: `Retry-After`, breaker, a rate token and a concurrency slot
    /// (waiting up to the queue timeout, served by tenant in turn when contended), then the
    /// fleet; never past `deadline`. A refusal is counted here: nothing is sent.
    pub(crate) async fn admitted(
        &self,
        first: bool,
        deadline: Instant,
        whom: Whom<'_>,
    ) -> Result<OwnedSemaphorePermit, RegionError> {
        let guard = &self.guard;
        let queue_until = deadline.min(later(Instant::now(), guard.queue_wait()));
        if guard.take_probe(Instant::now()) {
            self.spawn_probe();
        }
        let outcome = async {
            guard
                .admit(Instant::now(), first)
                .map_err(|refusal| self.refused(refusal))?;
            if whom.tenant.is_some_and(|t| guard.tenant_backing_off(t, Instant::now())) {
                return Err(RegionError::Refused(Refusal::BackingOff));
            }
            if let Some(permit) = self.at_once() {
                match self.fleet_admits(whom.tenant, false).await? {
                    FleetSays::Go => return Ok(permit),
                    // The fleet's bucket is contended: this call waits its turn here, so
                    // that the fleet's tokens go by this replica's turns, not by who asks
                    // Redis first.
                    FleetSays::Queue => {
                        drop(permit);
                        guard.refund_token();
                    }
                }
            }
            let permit = self.in_turn(queue_until, whom.flow).await?;
            self.fleet_admits(whom.tenant, true).await?;
            Ok(permit)
        }
        .await;
        if let Err(refused) = &outcome {
            self.metrics.count(&self.name, refused.kind());
            self.guard.tally.count(refused.kind(), None);
        }
        outcome
    }

    /// A rate token and a concurrency slot at once, while nobody waits for them.
    fn at_once(&self) -> Option<OwnedSemaphorePermit> {
        let guard = &self.guard;
        if guard.fair.is_idle() && guard.take_token(Instant::now()).is_ok() {
            match guard.permits.clone().try_acquire_owned() {
                Ok(permit) => return Some(permit),
                Err(_) => guard.refund_token(),
            }
        }
        None
    }

    /// A rate token and a concurrency slot (in fleet mode the fleet's token too, taken by the
    /// dispatcher) in the tenant's turn (`fair.rs`), by `queue_until`. The proxy's own calls
    /// (no tenant) are a flow of their own: never starved by clients, never starving them.
    async fn in_turn(
        &self,
        queue_until: Instant,
        flow: Option<&str>,
    ) -> Result<OwnedSemaphorePermit, RegionError> {
        let guard = &self.guard;
        let short = if guard.settings.rate_limit > 0.0 {
            Refusal::RateLimited
        } else {
            Refusal::Overloaded
        };
        let refused = || {
            if let Some(flow) = flow {
                self.metrics.throttled.record(flow, Reason::RegionQueue);
            }
            Err(RegionError::Refused(short))
        };
        match guard.fair.join(flow.unwrap_or("")) {
            Joined::Full => refused(),
            Joined::Waiting { grant, dispatch } => {
                if dispatch {
                    tokio::spawn(hand_out(Arc::clone(guard), self.name.clone()));
                }
                let joined = Instant::now();
                let granted = tokio::time::timeout_at(queue_until, grant).await;
                self.metrics.observe_queue_wait(&self.name, joined.elapsed());
                match granted {
                    Ok(Ok(permit)) => Ok(permit),
                    _ => refused(),
                }
            }
        }
    }

    /// A refusal of this replica's guard, with what opened the breaker when it is that.
    fn refused(&self, refusal: Refusal) -> RegionError {
        match refusal {
            Refusal::CircuitOpen => self.guard.open_since(Instant::now()).map_or(
                RegionError::Refused(Refusal::CircuitOpen),
                |(cause, retry_in)| RegionError::CircuitOpen {
                    cause,
                    retry_in_secs: retry_in.as_secs_f64().ceil() as u64,
                },
            ),
            other => RegionError::Refused(other),
        }
    }

    /// Count an attempt, and let the guard learn from it (one attempt, one request).
    pub(crate) fn judge(
        &self,
        span: &tracing::Span,
        started: Instant,
        judged: Judged,
        tenant: Option<&str>,
    ) {
        self.count_attempt(span, started, &judged);
        self.learn(judged, started.elapsed(), tenant);
    }

    /// An attempt in the metrics and its span.
    pub(crate) fn count_attempt(&self, span: &tracing::Span, started: Instant, judged: &Judged) {
        span.record("http.response.status_code", judged.status);
        span.record("outcome", judged.outcome);
        let took = started.elapsed();
        self.metrics.observe_latency(&self.name, took);
        self.metrics.count(&self.name, judged.outcome);
        self.guard.tally.count(judged.outcome, Some(took));
    }

    /// What a request's outcome (its last attempt's, which took `took`) says about the
    /// region, for its guard (a 429's `Retry-After` included, and whether it keeps its
    /// deadlines) and, in fleet mode, for the other replicas.
    pub(crate) fn learn(&self, judged: Judged, took: Duration, tenant: Option<&str>) {
        let guard = &self.guard;
        let mut health = judged.health;
        let throttled = judged.status == StatusCode::TOO_MANY_REQUESTS.as_u16();
        // Nothing goes to the region before the time it named (1 s if none): for the tenant
        // it answered, or for everyone (`retry_after_scope`).
        let wait = judged.retry_after.unwrap_or(Duration::from_secs(1));
        let tenant = tenant.filter(|_| guard.settings.retry_after_scope == RetryAfterScope::Project);
        if let (true, Some(tenant)) = (throttled, tenant) {
            // One tenant throttled is that tenant's limit, not the region's health (the status
            // page shows it all the same).
            guard.back_off_tenant(tenant, later(Instant::now(), wait));
            guard.tally.failed(judged.failure.as_deref().unwrap_or("429"));
            guard.paced(Some(took));
            if let Some(fleet) = guard.fleet() {
                let (fleet, key) = (Arc::clone(fleet), tenant_key(&self.name, tenant));
                tokio::spawn(async move { fleet.publish_back_off(&key, wait).await });
            }
            return;
        }
        if judged.status != 0 {
            guard.paced(Some(took));
        } else if judged.outcome == RegionError::Timeout.kind() {
            let now = Instant::now();
            if guard.answered_since(now.checked_sub(took).unwrap_or(now)) {
                // The region answered other calls while this one was out: its cost was its
                // own (a deep offset, a count over a huge table, a filter without an index),
                // not the region's state. Five such queries at once opened the breaker for
                // every tenant. A region that answered nobody for a whole deadline is, as far
                // as the proxy can tell, hung: that timeout counts (and makes it suspect).
                // Asking it something cheap instead (its version document) could not tell a
                // hung database from a slow query, and would leave such a region unshielded.
                health = Health::Unknown;
            } else {
                guard.paced(None);
            }
        }
        let opened = guard.record(health, Instant::now(), judged.failure.as_deref());
        let back_off = throttled.then_some(wait);
        if let Some(wait) = back_off {
            guard.back_off_until(later(Instant::now(), wait));
        }
        // Told to the fleet in the background: the answer does not wait for Redis.
        if let (Some(fleet), true) = (guard.fleet(), back_off.is_some() || opened) {
            let (fleet, name) = (Arc::clone(fleet), self.name.clone());
            let cooldown = guard.settings.breaker_cooldown;
            let cause = judged.failure.unwrap_or_default();
            tokio::spawn(async move {
                if let Some(wait) = back_off {
                    fleet.publish_back_off(&name, wait).await;
                }
                if opened {
                    fleet.publish_breaker_open(&name, &cause, cooldown).await;
                }
            });
        }
    }
}

/// A tenant's key among the fleet's back-offs: the region's, then the tenant (a project's
/// scope, or a project-less caller's token digest; never a token).
pub(crate) fn tenant_key(region: &str, tenant: &str) -> String {
    format!("{region}\n{tenant}")
}
