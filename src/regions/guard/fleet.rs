//! Fleet mode: after this replica's own guard said yes, the fleet's word on a call (the
//! region's rate shared by the replicas, a `Retry-After` or an open breaker another replica
//! saw). Redis unavailable: this replica's own limits (its share of the rate) stand alone.
//! When the fleet's bucket has no token, the call waits in this replica's queue, whose
//! dispatcher reserves the fleet's tokens one at a time (`admission.rs`).

use std::sync::Arc;

use tokio::time::Instant;

use super::{later, Refusal};
use crate::config::RetryAfterScope;
use crate::fleet::Admission;
use crate::regions::{RegionClient, RegionError};

/// The fleet's word on a call this replica admitted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FleetSays {
    Go,
    /// No token of the fleet's now: wait in this replica's queue, whose dispatcher takes the
    /// fleet's tokens in turn.
    Queue,
}

impl RegionClient {
    /// `Go` to send; `Queue` when the fleet's bucket has no token now (unless the
    /// dispatcher took the fleet's token for this call already: `token_taken`).
    pub(super) async fn fleet_admits(
        &self,
        tenant: Option<&str>,
        token_taken: bool,
    ) -> Result<FleetSays, RegionError> {
        let Some(fleet) = self.guard.fleet() else {
            return Ok(FleetSays::Go);
        };
        let tenant = tenant
            .filter(|_| self.guard.settings.retry_after_scope == RetryAfterScope::Project)
            .map(|t| super::admission::tenant_key(&self.name, t));
        // With the token taken, only the back-offs and the breaker are asked about.
        let rate = match token_taken {
            true => 0.0,
            false => self.guard.settings.rate_limit,
        };
        match fleet.admit(&self.name, tenant.as_deref(), rate).await {
            None | Some(Admission::Go) => Ok(FleetSays::Go),
            Some(Admission::Wait(_)) => Ok(FleetSays::Queue),
            Some(Admission::BackingOff(wait)) => {
                // Another replica's 429: this one honours it too, from now on.
                self.guard.back_off_until(later(Instant::now(), wait));
                Err(RegionError::Refused(Refusal::BackingOff))
            }
            Some(Admission::TenantBackingOff(wait)) => {
                let tenant = tenant.as_deref().expect("asked for a tenant");
                let tenant = tenant.split_once('\n').map_or(tenant, |(_, t)| t);
                self.guard.back_off_tenant(tenant, later(Instant::now(), wait));
                Err(RegionError::Refused(Refusal::BackingOff))
            }
            Some(Admission::BreakerOpen { cause, retry_in }) => Err(RegionError::CircuitOpen {
                cause: Arc::from(format!("{cause} (seen by another replica)")),
                retry_in_secs: retry_in.as_secs_f64().ceil() as u64,
            }),
        }
    }
}
