//! Typed configuration: embedded defaults (`config/default.toml`) → file → `VBS_PROXY__*`
//! environment, validated once at start-up. Every error names the key it is about, and the
//! command line turns it into exit code 64 (EX_USAGE), as linkerd2-proxy does.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

/// The defaults, shipped in the binary so `demo` and tests need no file.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    pub merge: MergeConfig,
    pub cache: CacheConfig,
    pub upstream: UpstreamConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    #[serde(default)]
    pub public_url: Option<String>,
    pub max_limit: usize,
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    #[serde(default)]
    pub cursor_secret: Option<String>,
    #[serde(default)]
    pub primary_region: Option<String>,
    /// Forward other `/v3/` paths to the primary region; off → 404.
    pub passthrough: bool,
    /// Longest a client request may take before the proxy answers 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests handled at once; more are shed with 503 and `Retry-After`.
    pub max_in_flight: usize,
    /// Largest request body accepted (pass-through writes, admin).
    pub max_request_body: bytesize::ByteSize,
    /// Largest total of request header bytes.
    pub max_header_bytes: bytesize::ByteSize,
    /// After SIGTERM/SIGINT: how long in-flight requests may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Connections open at once; more wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// A request head must be complete this long after its first byte.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight is closed after this long without a byte.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Collation {
    /// Byte-wise string order, as sqlite and real Cinder's tests.
    Binary,
    /// Case-insensitive order, as a typical MySQL `*_ci` collation.
    CaseInsensitive,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    pub collation: Collation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// Entries are keyed by a keyed hash of the caller's token: never shared across callers.
    Token,
    /// Shared by callers of one project and role set; needs token validation (not built yet).
    Project,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Freshness; 0 turns caching off (requests are still coalesced).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Bound of each layer's weighed bytes (region pages, responses): half each.
    pub max_bytes: bytesize::ByteSize,
    pub scope: CacheScope,
    pub honor_client_no_cache: bool,
    /// A key is refreshed for `no-cache` clients at most this often; other forced requests
    /// share the refresh in flight or get the entry it just stored.
    #[serde(with = "humantime_serde")]
    pub min_refresh_interval: Duration,
    /// HMAC key for the identity part of cache keys; random at start when unset.
    #[serde(default)]
    pub key_secret: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    Partial,
    Fail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub on_region_failure: FailurePolicy,
    /// How often the regions' version documents are re-read (for `latest` and `GET /`).
    #[serde(with = "humantime_serde")]
    pub version_refresh: Duration,
    /// Once every other region has answered a page, how long to wait for the last one before
    /// answering without it (partial, not stored). Unset: its own `timeout`.
    #[serde(default, with = "humantime_serde")]
    pub partial_grace: Option<Duration>,
    #[serde(flatten)]
    pub protection: Protection,
}

/// Per-region protection; `[upstream]` sets it for all, a `[[regions]]` entry may override
/// any key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protection {
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
    /// How long an open breaker fails fast before one probe.
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
    /// Larger upstream answers are the region's failure.
    pub max_body_bytes: bytesize::ByteSize,
    /// Idle pooled connections to the region are closed after this long.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
}

/// A region's overrides of `[upstream]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionOverrides {
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    pub retries: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub retry_backoff: Option<Duration>,
    pub retry_budget: Option<f64>,
    pub breaker_failures: Option<u32>,
    pub breaker_failure_ratio: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub breaker_cooldown: Option<Duration>,
    pub max_concurrency: Option<usize>,
    pub rate_limit: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
    pub max_body_bytes: Option<bytesize::ByteSize>,
    #[serde(default, with = "humantime_serde")]
    pub pool_idle_timeout: Option<Duration>,
}

impl Config {
    /// The effective protection and timeouts of region `i`.
    pub fn region_protection(&self, i: usize) -> (Protection, Duration, Duration) {
        let o = &self.regions[i].overrides;
        let g = &self.upstream.protection;
        let p = Protection {
            retries: o.retries.unwrap_or(g.retries),
            retry_backoff: o.retry_backoff.unwrap_or(g.retry_backoff),
            retry_budget: o.retry_budget.unwrap_or(g.retry_budget),
            breaker_failures: o.breaker_failures.unwrap_or(g.breaker_failures),
            breaker_failure_ratio: o.breaker_failure_ratio.unwrap_or(g.breaker_failure_ratio),
            breaker_cooldown: o.breaker_cooldown.unwrap_or(g.breaker_cooldown),
            max_concurrency: o.max_concurrency.unwrap_or(g.max_concurrency),
            rate_limit: o.rate_limit.unwrap_or(g.rate_limit),
            queue_timeout: o.queue_timeout.unwrap_or(g.queue_timeout),
            max_body_bytes: o.max_body_bytes.unwrap_or(g.max_body_bytes),
            pool_idle_timeout: o.pool_idle_timeout.unwrap_or(g.pool_idle_timeout),
        };
        (
            p,
            o.timeout.unwrap_or(self.upstream.timeout),
            o.connect_timeout.unwrap_or(self.upstream.connect_timeout),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector base URL (`/v1/traces` is appended); traces are off without it.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub name: String,
    pub url: String,
    #[serde(flatten)]
    pub overrides: RegionOverrides,
}

impl RegionConfig {
    fn overrides_key(&self, key: &str) -> bool {
        let o = &self.overrides;
        match key {
            "timeout" => o.timeout.is_some(),
            "connect_timeout" => o.connect_timeout.is_some(),
            "max_concurrency" => o.max_concurrency.is_some(),
            "breaker_failure_ratio" => o.breaker_failure_ratio.is_some(),
            "breaker_failures" => o.breaker_failures.is_some(),
            "retry_budget" => o.retry_budget.is_some(),
            "rate_limit" => o.rate_limit.is_some(),
            "retries" => o.retries.is_some(),
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Parse(format!(
                    "file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::extract(figment.merge(Env::prefixed("VBS_PROXY__").split("__")))
    }

    /// Defaults plus a TOML string; for tests and the demo (no environment).
    pub fn from_toml(toml: &str) -> Result<Config, ConfigError> {
        Self::extract(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(toml)))
    }

    fn extract(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            // figment's error already names the key path ("for key `server.max_limit`").
            let mut msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            msgs.dedup();
            ConfigError::Parse(msgs.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.max_limit == 0 {
            return Err(invalid("server.max_limit", "must be at least 1"));
        }
        if let Some(url) = &self.server.public_url {
            check_http_url(url).map_err(|m| invalid("server.public_url", m))?;
        }
        if matches!(&self.server.cursor_secret, Some(s) if s.len() < 16) {
            return Err(invalid(
                "server.cursor_secret",
                "must be at least 16 characters",
            ));
        }
        if self.regions.is_empty() {
            return Err(invalid("regions", "at least one [[regions]] is required"));
        }
        for (i, region) in self.regions.iter().enumerate() {
            let key = format!("regions[{i}]");
            if region.name.is_empty() || region.name.contains([',', ' ']) {
                return Err(invalid(
                    format!("{key}.name"),
                    "must be non-empty, without commas or spaces",
                ));
            }
            if self.regions[..i].iter().any(|r| r.name == region.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate region name {:?}", region.name),
                ));
            }
            check_http_url(&region.url).map_err(|m| invalid(format!("{key}.url"), m))?;
        }
        if let Some(primary) = &self.server.primary_region {
            if !self.regions.iter().any(|r| &r.name == primary) {
                return Err(invalid(
                    "server.primary_region",
                    format!("no region is named {primary:?}"),
                ));
            }
        }
        if let Some(url) = &self.telemetry.otlp_endpoint {
            check_http_url(url).map_err(|m| invalid("telemetry.otlp_endpoint", m))?;
        }
        if self.cache.scope == CacheScope::Project {
            return Err(invalid(
                "cache.scope",
                "\"project\" needs Keystone token validation, which vbs-proxy does not do yet; use \"token\"",
            ));
        }
        if self.cache.max_bytes.as_u64() < 1024 * 1024 {
            return Err(invalid("cache.max_bytes", "must be at least 1MiB"));
        }
        if matches!(&self.cache.key_secret, Some(s) if s.len() < 16) {
            return Err(invalid(
                "cache.key_secret",
                "must be at least 16 characters",
            ));
        }
        if matches!(&self.admin.token, Some(t) if t.len() < 16) {
            return Err(invalid("admin.token", "must be at least 16 characters"));
        }
        for (key, d) in [
            ("server.request_timeout", self.server.request_timeout),
            ("server.shutdown_grace", self.server.shutdown_grace),
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.idle_timeout", self.server.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.server.max_in_flight == 0 {
            return Err(invalid("server.max_in_flight", "must be at least 1"));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        for i in 0..self.regions.len() {
            self.validate_region_protection(i)?;
        }
        if self.upstream.version_refresh.is_zero() {
            return Err(invalid(
                "upstream.version_refresh",
                "must be greater than 0",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        Ok(())
    }

    fn validate_region_protection(&self, i: usize) -> Result<(), ConfigError> {
        let (p, timeout, connect) = self.region_protection(i);
        // Name the key where the value came from: the region's override or [upstream].
        let at = |k: &str| {
            if self.regions[i].overrides_key(k) {
                format!("regions[{i}].{k}")
            } else {
                format!("upstream.{k}")
            }
        };
        let checks: [(&str, bool, &str); 8] = [
            ("timeout", timeout.is_zero(), "must be greater than 0"),
            (
                "connect_timeout",
                connect.is_zero(),
                "must be greater than 0",
            ),
            (
                "max_concurrency",
                p.max_concurrency == 0,
                "must be at least 1",
            ),
            (
                "breaker_failures",
                p.breaker_failures == 0,
                "must be at least 1",
            ),
            (
                "breaker_failure_ratio",
                !(p.breaker_failure_ratio > 0.0 && p.breaker_failure_ratio <= 1.0),
                "must be in (0, 1]",
            ),
            (
                "retry_budget",
                !(p.retry_budget >= 0.0 && p.retry_budget.is_finite()),
                "must be a non-negative number",
            ),
            (
                "rate_limit",
                !(p.rate_limit >= 0.0 && p.rate_limit.is_finite()),
                "must be a non-negative number (0 = no limit)",
            ),
            ("retries", p.retries > 10, "must be at most 10"),
        ];
        match checks.iter().find(|(_, bad, _)| *bad) {
            Some((key, _, message)) => Err(invalid(at(key), *message)),
            None => Ok(()),
        }
    }

    /// Index of the primary region (pass-through target).
    pub fn primary_index(&self) -> usize {
        self.server
            .primary_region
            .as_ref()
            .and_then(|p| self.regions.iter().position(|r| &r.name == p))
            .unwrap_or(0)
    }
}

/// An `http(s)://host[:port][/path]` URL without query or fragment; returned without a
/// trailing slash by the caller's trimming.
fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} must use http or https"));
    }
    if parsed.host_str().is_none() {
        return Err(format!("{url:?} has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_REGION: &str = "[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:9001\"\n";

    #[test]
    fn defaults_and_one_region_validate() {
        let c = Config::from_toml(ONE_REGION).unwrap();
        assert_eq!(c.server.max_limit, 1000);
        assert_eq!(c.merge.collation, Collation::Binary);
        assert_eq!(c.upstream.on_region_failure, FailurePolicy::Partial);
        assert_eq!(c.primary_index(), 0);
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml("").unwrap_err().to_string();
        assert!(err.contains("`regions`"), "{err}");
        let err = Config::from_toml(&format!("{ONE_REGION}[server]\nmax_limit = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.max_limit"), "{err}");
        let err = Config::from_toml(&format!("{ONE_REGION}[merge]\ncollation = \"klingon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("collation"), "{err}");
        let bad_url = "[[regions]]\nname = \"a\"\nurl = \"ftp://x\"\n";
        let err = Config::from_toml(bad_url).unwrap_err().to_string();
        assert!(err.contains("regions[0].url"), "{err}");
        let err = Config::from_toml(&format!("{ONE_REGION}{ONE_REGION}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("regions[1].name"), "{err}");
        let err = Config::from_toml(&format!("{ONE_REGION}[server]\nprimary_region = \"z\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.primary_region"), "{err}");
        let err = Config::from_toml(&format!("{ONE_REGION}[cache]\nscope = \"project\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.scope"), "{err}");
        let err = Config::from_toml(&format!("{ONE_REGION}[cache]\nmax_bytes = \"lots\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_bytes"), "{err}");
        let err = Config::from_toml(&format!("{ONE_REGION}[upstream]\ntimeout = \"soon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeout"), "{err}");
    }

    #[test]
    fn regions_override_upstream_protection() {
        let toml = "[upstream]\nretries = 1\nmax_concurrency = 8\n[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nmax_concurrency = 2\ntimeout = \"3s\"\n";
        let c = Config::from_toml(toml).unwrap();
        let (p, timeout, _) = c.region_protection(0);
        assert_eq!(
            (p.retries, p.max_concurrency, timeout),
            (1, 2, Duration::from_secs(3))
        );
        let bad = "[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nmax_concurrency = 0\n";
        let err = Config::from_toml(bad).unwrap_err().to_string();
        assert!(err.contains("regions[0].max_concurrency"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml(&format!("{ONE_REGION}[server]\nlisten_port = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }
}
