//! The region's own `Retry-After` (a 429's): nothing goes to the region before the time it
//! named, clamped so that a hostile or mistaken value cannot switch a region off for good.

use std::sync::Arc;

use tokio::time::{Duration, Instant};

/// A 429's `Retry-After`, read (and clamped) now.
pub(crate) fn retry_after_of(response: &reqwest::Response) -> Option<Duration> {
    if response.status() != http::StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    parse_retry_after(value.to_str().ok()?, std::time::SystemTime::now())
}

/// `now + wait` without overflowing the clock: a wait too long for it is as good as forever,
/// which a year stands in for.
pub fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

/// The longest `Retry-After` the proxy honours. A region may ask for more (or send
/// `18446744073709551615`); past this the proxy asks it again, so a typo or a hostile value
/// cannot switch a region off for good, nor overflow the clock.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The tenants a region answered 429 (`retry_after_scope = "project"`), each held back until
/// the time named. Bounded in bytes (keys counted) and in time (no hold outlives
/// [`MAX_RETRY_AFTER`]); past the bound the least used are forgotten, which lets a tenant try
/// once more, never blocks one.
#[derive(Clone)]
pub(crate) struct TenantBackOffs(moka::sync::Cache<Arc<str>, Instant>);

/// What the holds of one region may take: room for some ten thousand tenants.
const TENANT_HOLDS_BYTES: u64 = 1 << 20;

impl std::fmt::Debug for TenantBackOffs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantBackOffs")
            .field("held", &self.0.entry_count())
            .finish()
    }
}

impl TenantBackOffs {
    pub fn new() -> TenantBackOffs {
        TenantBackOffs(
            moka::sync::Cache::builder()
                .max_capacity(TENANT_HOLDS_BYTES)
                .weigher(|tenant: &Arc<str>, _: &Instant| (tenant.len() + 96) as u32)
                .time_to_live(MAX_RETRY_AFTER)
                .build(),
        )
    }

    /// Bytes the holds weigh (`vbs_map_bytes`).
    pub fn bytes(&self) -> u64 {
        self.0.run_pending_tasks();
        self.0.weighted_size()
    }

    /// Is `tenant` held back at `now`?
    pub fn holds(&self, tenant: &str, now: Instant) -> bool {
        self.0.get(tenant).is_some_and(|until| now < until)
    }

    /// Tenants held back at `now`, and how long the longest hold has left (status page).
    pub fn held(&self, now: Instant) -> Option<(usize, Duration)> {
        let left: Vec<Duration> = self
            .0
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(_, until)| until - now)
            .collect();
        Some((left.len(), left.into_iter().max()?))
    }

    /// Hold `tenant` back until `until` (or longer, if it already is).
    pub fn hold(&self, tenant: &str, until: Instant) {
        let held = self.0.get(tenant).map_or(until, |u| u.max(until));
        self.0.insert(Arc::from(tenant), held);
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3), at most
/// [`MAX_RETRY_AFTER`]; `None` if unreadable.
pub(crate) fn parse_retry_after(value: &str, now_system: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let when = httpdate::parse_http_date(value).ok()?;
            when.duration_since(now_system).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("soon", now), None);
        // Absurd values are clamped, never an overflow later.
        assert_eq!(
            parse_retry_after("18446744073709551615", now),
            Some(MAX_RETRY_AFTER)
        );
        let far = httpdate::fmt_http_date(now + Duration::from_secs(86_400 * 365 * 100));
        assert_eq!(parse_retry_after(&far, now), Some(MAX_RETRY_AFTER));
    }
}
