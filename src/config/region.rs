//! Per-region settings (protection, and the TLS files of the calls), declared once:
//! `[upstream]` sets them for every region, and a `[[regions]]` entry may set any of its keys
//! for itself. The entry's keys are merged over
//! `[upstream]`'s by figment, so there is no second, all-optional copy of this struct.

use std::path::PathBuf;
use std::time::Duration;

use figment::providers::Serialized;
use figment::value::Dict;
use figment::Figment;
use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSettings {
    /// The whole budget of one call to the region, retries and waits included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of an idempotent GET after a timeout, connection error or 5xx.
    pub retries: u32,
    /// Base of the jittered exponential backoff between retries.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Retries allowed per request sent (plus a reserve of 10).
    pub retry_budget: f64,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// Failure ratio over the last 20 calls that opens the breaker.
    pub breaker_failure_ratio: f64,
    /// How long an open breaker fails fast before the proxy's probe.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Requests in flight to the region at once.
    pub max_concurrency: usize,
    /// Requests per second to the region; 0 = no limit.
    pub rate_limit: f64,
    /// How long a request waits for a concurrency slot or a rate token before the region
    /// counts as unavailable for it.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Calls of one project (one flow) that may wait at the region's limiter at once; past
    /// it the call is refused at once (`regions/guard/fair.rs`).
    pub max_queued_per_project: usize,
    /// Larger upstream answers fail that request.
    pub max_body_bytes: bytesize::ByteSize,
    /// Idle pooled connections to the region are closed after this long.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Whom a 429's `Retry-After` holds back: the tenant whose request got it, or everyone.
    pub retry_after_scope: RetryAfterScope,
    /// PEM certificates trusted for the region's HTTPS besides webpki's roots and the system
    /// trust store (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The proxy's client certificate chain and key (PEM) for regions that require mTLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Whom a region's 429 `Retry-After` holds back (`upstream.retry_after_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfterScope {
    /// The project (for a project-less call, the caller) whose request was answered 429:
    /// a limiter in front of the region throttles one tenant (API gateways do), and one
    /// tenant's throttling must not decide what the others get. The default.
    Project,
    /// Every request to the region: for a region whose 429s mean "the whole service is
    /// overloaded".
    Region,
}

impl RegionSettings {
    /// From a table's keys (`[upstream]`); `at` names the table in errors.
    pub fn from_keys(keys: &Dict, at: &str) -> Result<Self, ConfigError> {
        Figment::from(Serialized::defaults(keys))
            .extract()
            .map_err(|e| named(at, e))
    }

    /// `self` with a region's own keys merged over it; an unknown key is an error naming it.
    pub fn with_overrides(&self, overrides: &Dict, at: &str) -> Result<Self, ConfigError> {
        Figment::from(Serialized::defaults(self))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| named(at, e))
    }

    /// Each key's bounds; `at(key)` names where the value came from.
    pub fn validate(&self, at: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        let checks: [(&str, bool, &str); 9] = [
            ("timeout", self.timeout.is_zero(), "must be greater than 0"),
            (
                "connect_timeout",
                self.connect_timeout.is_zero(),
                "must be greater than 0",
            ),
            (
                "max_concurrency",
                self.max_concurrency == 0,
                "must be at least 1",
            ),
            (
                "breaker_failures",
                self.breaker_failures == 0,
                "must be at least 1",
            ),
            (
                "breaker_failure_ratio",
                !(self.breaker_failure_ratio > 0.0 && self.breaker_failure_ratio <= 1.0),
                "must be in (0, 1]",
            ),
            (
                "retry_budget",
                !(self.retry_budget >= 0.0 && self.retry_budget.is_finite()),
                "must be a non-negative number",
            ),
            (
                "rate_limit",
                !(self.rate_limit >= 0.0 && self.rate_limit.is_finite()),
                "must be a non-negative number (0 = no limit)",
            ),
            ("retries", self.retries > 10, "must be at most 10"),
            (
                "max_queued_per_project",
                self.max_queued_per_project == 0,
                "must be at least 1",
            ),
        ];
        match checks.iter().find(|(_, bad, _)| *bad) {
            Some((key, _, message)) => Err(invalid(at(key), *message)),
            None => Ok(()),
        }
    }
}

/// figment's error about a key of the table at `at`, named as the operator wrote it
/// (`regions[0].timeout`), without the provider's internals.
fn named(at: &str, e: figment::Error) -> ConfigError {
    let key: Vec<&str> = e
        .path
        .iter()
        .map(String::as_str)
        .filter(|p| *p != "default")
        .collect();
    let key = match key.as_slice() {
        [] => at.to_string(),
        keys => format!("{at}.{}", keys.join(".")),
    };
    invalid(key, super::what_is_wrong(&e.kind, at))
}
