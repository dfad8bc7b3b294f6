//! Fleet mode: after this replica's own guard said yes, the fleet's word on a call (the
//! region's rate shared by the replicas, a `Retry-After` or an open breaker another replica
//! saw). Redis unavailable: this replica's own limits stand alone.

use std::sync::Arc;

use tokio::time::Instant;

use super::{later, Refusal};
use crate::config::RetryAfterScope;
use crate::fleet::Admission;
use crate::regions::{RegionClient, RegionError};

impl RegionClient {
    /// `Ok` to send; a wait for the fleet's rate limit is taken while it ends before
    /// `queue_until`.
    pub(super) async fn fleet_admits(
        &self,
        queue_until: Instant,
        tenant: Option<&str>,
    ) -> Result<(), RegionError> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        let tenant = tenant
            .filter(|_| self.guard.settings.retry_after_scope == RetryAfterScope::Project)
            .map(|t| super::admission::tenant_key(&self.name, t));
        loop {
            let rate = self.guard.settings.rate_limit;
            match fleet.admit(&self.name, tenant.as_deref(), rate).await {
                None | Some(Admission::Go) => return Ok(()),
                Some(Admission::Wait(wait)) => {
                    let ready = later(Instant::now(), wait);
                    if ready > queue_until {
                        return Err(RegionError::Refused(Refusal::RateLimited));
                    }
                    tokio::time::sleep_until(ready).await;
                }
                Some(Admission::BackingOff(wait)) => {
                    // Another replica's 429: this one honours it too, from now on.
                    self.guard.back_off_until(later(Instant::now(), wait));
                    return Err(RegionError::Refused(Refusal::BackingOff));
                }
                Some(Admission::TenantBackingOff(wait)) => {
                    let tenant = tenant.as_deref().expect("asked for a tenant");
                    let tenant = tenant.split_once('\n').map_or(tenant, |(_, t)| t);
                    self.guard.back_off_tenant(tenant, later(Instant::now(), wait));
                    return Err(RegionError::Refused(Refusal::BackingOff));
                }
                Some(Admission::BreakerOpen { cause, retry_in }) => {
                    return Err(RegionError::CircuitOpen {
                        cause: Arc::from(format!("{cause} (seen by another replica)")),
                        retry_in_secs: retry_in.as_secs_f64().ceil() as u64,
                    });
                }
            }
        }
    }
}
