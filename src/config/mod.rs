//! Typed configuration: embedded defaults (`config/default.toml`) → file → `VBS_PROXY__*`
//! environment, validated once at start-up. Every error names the key it is about, and the
//! command line turns it into exit code 64 (EX_USAGE), as linkerd2-proxy does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

pub mod region;
pub use region::{RegionSettings, RetryAfterScope};

/// The defaults, shipped in the binary so `demo` and tests need no file.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    pub tenants: TenantsConfig,
    pub merge: MergeConfig,
    pub cache: CacheConfig,
    pub upstream: UpstreamConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub fleet: FleetConfig,
    pub keystone_authtoken: KeystoneConfig,
    pub regions_from_catalog: CatalogRegions,
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
    /// Where it was read from, so that a reload (SIGHUP) reads the same again: `None` when it
    /// was not read from a file and the environment (a test's or the demo's TOML).
    #[serde(skip)]
    pub source: Option<Source>,
}

/// A configuration read by [`Config::load`]: the file (if any) over the defaults, then the
/// environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub file: Option<std::path::PathBuf>,
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
    pub cursor_secret: Option<Secret>,
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
    /// The most rows one listing request may read from the regions, all calls together.
    pub max_upstream_rows: u64,
    /// A client that takes none of its answer's bytes for this long is cut off.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// The listener's own TLS: a PEM certificate chain and its private key (both or neither).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// How often the two files are checked for a change (SIGHUP reloads them at once).
    #[serde(with = "humantime_serde")]
    pub tls_reload_check: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub token: Option<Secret>,
    /// How `GET /admin/throttled` names projects.
    #[serde(default)]
    pub throttled_names: ThrottledNames,
    /// A listener of its own for the status page and the metrics, with no token: an address
    /// only operators reach.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// How the operator's view of throttled projects names them: by a digest (the default: the
/// view can be shared without naming customers) or by project id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottledNames {
    #[default]
    Hashed,
    Named,
}

/// Per-project limits at the edge (README, "Fair sharing"): what one project may ask of the
/// regions, whatever the others do. Cache hits are never limited.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    /// Requests per second one project may make that need a region call; 0 = no limit.
    pub rate: f64,
    /// How many such requests one project may make at once above its rate.
    pub burst: u32,
    /// How many such requests of one project may be under way at once (each asks a region
    /// one call at a time, so this caps its share of every region's concurrency); 0 = no cap.
    pub max_concurrency: u32,
}

impl TenantsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(invalid(
                "tenants.rate",
                "must be a non-negative number (0 = no limit)",
            ));
        }
        if self.rate > 0.0 && self.burst == 0 {
            return Err(invalid("tenants.burst", "must be at least 1 with a rate"));
        }
        Ok(())
    }
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
    /// Shared by callers of one project and role set (who they are comes from Keystone:
    /// needs `[keystone_authtoken]`).
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
    pub key_secret: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    Partial,
    Fail,
}

/// `[upstream]`. Its unknown keys are refused by `RegionSettings`, which reads the rest.
#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamConfig {
    pub on_region_failure: FailurePolicy,
    /// How often the regions' version documents are re-read (for `latest` and `GET /`).
    #[serde(with = "humantime_serde")]
    pub version_refresh: Duration,
    /// Once every other region has answered a page, how long to wait for the last one before
    /// answering without it (partial, not stored). Unset: its own `timeout`.
    #[serde(default, with = "humantime_serde")]
    pub partial_grace: Option<Duration>,
    /// A region that let a call's deadline pass, and has not answered since, is waited for
    /// at most a grace once the others have answered (twice its slowest recent answer, at
    /// least 500 ms); false: its whole `timeout`, until the breaker opens.
    pub suspect_grace: bool,
    /// The per-region keys of `[upstream]` (protection and TLS): every region's, unless its
    /// `[[regions]]` entry sets a key for itself. Read into `RegionSettings` at load (a
    /// flattened struct would lose the key's name from figment's errors).
    #[serde(flatten)]
    per_region: figment::value::Dict,
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

/// `[regions_from_catalog]`: the regions are the catalog's endpoints of `service_type`, read
/// with the proxy's own Keystone token at start, instead of `[[regions]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogRegions {
    #[serde(default)]
    pub service_type: Option<String>,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Only these Keystone regions (all when empty).
    pub regions: Vec<String>,
}

/// How the proxy authenticates itself to Keystone (keystonemiddleware's `auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeystoneAuthType {
    Password,
    V3applicationcredential,
}

/// `[keystone_authtoken]`: the option names operators know from keystonemiddleware. With
/// `auth_url` set, every client token is checked with Keystone before any region sees it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneConfig {
    /// Keystone's identity endpoint, e.g. `http://keystone:5000/v3` (`/v3` is added when
    /// missing).
    #[serde(default)]
    pub auth_url: Option<String>,
    pub auth_type: KeystoneAuthType,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    pub user_domain_name: String,
    #[serde(default)]
    pub project_name: Option<String>,
    pub project_domain_name: String,
    #[serde(default)]
    pub application_credential_id: Option<String>,
    #[serde(default)]
    pub application_credential_secret: Option<String>,
    /// How long a token's validation is trusted (at most until the token expires).
    #[serde(with = "humantime_serde")]
    pub token_cache_time: Duration,
    /// Sent in `WWW-Authenticate: Keystone uri="..."` on a 401; default: `auth_url` without
    /// its `/v3`.
    #[serde(default)]
    pub www_authenticate_uri: Option<String>,
    /// PEM certificates trusted for an HTTPS Keystone besides the system trust store.
    #[serde(default)]
    pub cafile: Option<PathBuf>,
}

/// A secret of the configuration (a key, a token): used as the string it is, never printed
/// (`Config`'s `Debug` shows `<hidden>`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }
}

impl std::ops::Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// Passwords and secrets are never printed.
impl std::fmt::Debug for KeystoneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<set>");
        f.debug_struct("KeystoneConfig")
            .field("auth_url", &self.auth_url)
            .field("auth_type", &self.auth_type)
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("project_name", &self.project_name)
            .field("application_credential_id", &self.application_credential_id)
            .field(
                "application_credential_secret",
                &hidden(&self.application_credential_secret),
            )
            .field("token_cache_time", &self.token_cache_time)
            .finish()
    }
}

impl KeystoneConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.auth_url else {
            return Ok(());
        };
        check_http_url(url).map_err(|m| invalid("keystone_authtoken.auth_url", m))?;
        if let Some(uri) = &self.www_authenticate_uri {
            check_http_url(uri)
                .map_err(|m| invalid("keystone_authtoken.www_authenticate_uri", m))?;
        }
        let required: &[(&str, &Option<String>)] = match self.auth_type {
            KeystoneAuthType::Password => &[
                ("username", &self.username),
                ("password", &self.password),
                ("project_name", &self.project_name),
            ],
            KeystoneAuthType::V3applicationcredential => &[
                ("application_credential_id", &self.application_credential_id),
                (
                    "application_credential_secret",
                    &self.application_credential_secret,
                ),
            ],
        };
        if let Some((key, _)) = required
            .iter()
            .find(|(_, v)| v.as_deref().is_none_or(str::is_empty))
        {
            return Err(invalid(
                format!("keystone_authtoken.{key}"),
                "must be set for this auth_type",
            ));
        }
        if self.token_cache_time.is_zero() {
            return Err(invalid(
                "keystone_authtoken.token_cache_time",
                "must be greater than 0",
            ));
        }
        if let Some(ca) = &self.cafile {
            crate::tls::RegionTls::load(Some(ca), None, None)
                .map_err(|(_, e)| invalid("keystone_authtoken.cafile", e))?;
        }
        Ok(())
    }
}

/// `[fleet]`: replicas sharing one response cache, one flight per key and the regions'
/// limits through Redis. Off (every process on its own) without `redis_url`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `redis://[user:password@]host:port/db` or `rediss://...` (TLS).
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prepended to every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// The longest any Redis operation may take; past it the operation is given up.
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
    /// How long a replica waits for another replica's fetch of the same page before it fetches
    /// the page itself (also the lock's expiry: a replica that dies holding it frees it then).
    #[serde(with = "humantime_serde")]
    pub flight_wait: Duration,
    /// PEM certificates trusted for `rediss://` besides the system trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The URL may hold a password: never printed.
impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("key_prefix", &self.key_prefix)
            .field("op_timeout", &self.op_timeout)
            .field("flight_wait", &self.flight_wait)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl FleetConfig {
    fn validate(&self, config: &Config) -> Result<(), ConfigError> {
        let Some(url) = &self.redis_url else {
            return Ok(());
        };
        // The URL's text is never repeated: it may carry a password.
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(invalid(
                "fleet.redis_url",
                "must be a redis:// or rediss:// URL",
            ));
        }
        if redis::Client::open(url.as_str()).is_err() {
            return Err(invalid("fleet.redis_url", "is not a valid Redis URL"));
        }
        if self.op_timeout.is_zero() {
            return Err(invalid("fleet.op_timeout", "must be greater than 0"));
        }
        if self.flight_wait.is_zero() {
            return Err(invalid("fleet.flight_wait", "must be greater than 0"));
        }
        // Replicas share entries and cursors only if they key and sign them alike.
        if config.cache.key_secret.is_none() {
            return Err(invalid(
                "cache.key_secret",
                "must be set (the same on every replica) when fleet.redis_url is",
            ));
        }
        if config.server.cursor_secret.is_none() {
            return Err(invalid(
                "server.cursor_secret",
                "must be set (the same on every replica) when fleet.redis_url is",
            ));
        }
        Ok(())
    }
}

/// One `[[regions]]` entry: its name, its endpoint, and the per-region keys it sets for itself.
#[derive(Debug, Clone, Deserialize)]
pub struct RegionConfig {
    pub name: String,
    pub url: String,
    /// Its own per-region keys, merged over `[upstream]`'s into `settings` at load.
    #[serde(flatten)]
    overrides: figment::value::Dict,
    /// The effective settings (resolved at load).
    #[serde(skip)]
    settings: Option<RegionSettings>,
    /// Its TLS files, read and checked at load.
    #[serde(skip)]
    pub tls: crate::tls::RegionTls,
}

impl RegionConfig {
    /// Its settings: `[upstream]`'s with its own keys.
    pub fn settings(&self) -> &RegionSettings {
        self.settings
            .as_ref()
            .expect("resolved when the configuration is loaded")
    }

    /// Where a per-region key's value came from, as the operator wrote it: the region's own
    /// key, or `[upstream]`'s.
    fn key_of(&self, i: usize, key: &str) -> String {
        if self.overrides.contains_key(key) {
            format!("regions[{i}].{key}")
        } else {
            format!("upstream.{key}")
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_limit == 0 {
            return Err(invalid("server.max_limit", "must be at least 1"));
        }
        if let Some(url) = &self.public_url {
            check_http_url(url).map_err(|m| invalid("server.public_url", m))?;
        }
        if matches!(&self.cursor_secret, Some(s) if s.len() < 16) {
            return Err(invalid(
                "server.cursor_secret",
                "must be at least 16 characters",
            ));
        }
        for (key, d) in [
            ("server.request_timeout", self.request_timeout),
            ("server.shutdown_grace", self.shutdown_grace),
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.idle_timeout", self.idle_timeout),
            ("server.write_timeout", self.write_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.max_in_flight == 0 {
            return Err(invalid("server.max_in_flight", "must be at least 1"));
        }
        if self.max_upstream_rows <= self.max_limit as u64 {
            return Err(invalid(
                "server.max_upstream_rows",
                "must be more than server.max_limit",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => Err(invalid(
                "server.tls_cert_file",
                "needs server.tls_key_file as well",
            )),
            (None, Some(_)) => Err(invalid(
                "server.tls_key_file",
                "needs server.tls_cert_file as well",
            )),
            _ if self.tls_reload_check.is_zero() => {
                Err(invalid("server.tls_reload_check", "must be greater than 0"))
            }
            _ => Ok(()),
        }
    }
}

impl AdminConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if matches!(&self.token, Some(t) if t.len() < 16) {
            return Err(invalid("admin.token", "must be at least 16 characters"));
        }
        Ok(())
    }
}

impl CacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes.as_u64() < 1024 * 1024 {
            return Err(invalid("cache.max_bytes", "must be at least 1MiB"));
        }
        if matches!(&self.key_secret, Some(s) if s.len() < 16) {
            return Err(invalid(
                "cache.key_secret",
                "must be at least 16 characters",
            ));
        }
        Ok(())
    }
}

impl UpstreamConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.version_refresh.is_zero() {
            return Err(invalid(
                "upstream.version_refresh",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

impl TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.otlp_endpoint {
            check_http_url(url).map_err(|m| invalid("telemetry.otlp_endpoint", m))?;
        }
        Ok(())
    }
}

impl LogConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        Ok(())
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
        let mut config = Self::extract(figment.merge(Env::prefixed("VBS_PROXY__").split("__")))?;
        config.source = Some(Source {
            file: file.map(Path::to_path_buf),
        });
        Ok(config)
    }

    /// Defaults plus a TOML string; for tests and the demo (no environment).
    pub fn from_toml(toml: &str) -> Result<Config, ConfigError> {
        Self::extract(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(toml)))
    }

    fn extract(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|first| {
            let mut msgs = every_error(&figment);
            if msgs.is_empty() {
                msgs = first.into_iter().map(|e| describe(&e)).collect();
            }
            msgs.dedup();
            ConfigError::Parse(msgs.join("; "))
        })?;
        config.resolve()
    }

    /// The regions of the catalog (name, URL as the catalog gives it), in place of
    /// `[[regions]]`; checked like those.
    pub fn with_catalog_regions(
        mut self,
        endpoints: Vec<(String, String)>,
    ) -> Result<Config, ConfigError> {
        self.regions = endpoints
            .into_iter()
            .map(|(name, url)| RegionConfig {
                name,
                url,
                overrides: Default::default(),
                settings: None,
                tls: Default::default(),
            })
            .collect();
        self.resolve()
    }

    /// Each region's settings, endpoint and TLS files resolved, and everything checked.
    fn resolve(mut self) -> Result<Config, ConfigError> {
        let config = &mut self;
        let upstream = RegionSettings::from_keys(&config.upstream.per_region, "upstream")?;
        for (i, region) in config.regions.iter_mut().enumerate() {
            let at = format!("regions[{i}]");
            region.settings = Some(upstream.with_overrides(&region.overrides, &at)?);
            region.url = endpoint_base(&region.url);
        }
        config.validate()?;
        // The files are read now, so that check-config and start-up name a bad one.
        for (i, region) in config.regions.iter_mut().enumerate() {
            let s = region.settings();
            region.tls = crate::tls::RegionTls::load(
                s.ca_file.as_deref(),
                s.cert_file.as_deref(),
                s.key_file.as_deref(),
            )
            .map_err(|(key, message)| invalid(region.key_of(i, key), message))?;
        }
        if let (Some(cert), Some(key)) = (&config.server.tls_cert_file, &config.server.tls_key_file)
        {
            crate::tls::ServerTls::load(cert, key)
                .map_err(|message| invalid("server.tls_cert_file", message))?;
        }
        Ok(self)
    }

    /// Every section validates itself; what spans sections (the regions and the primary
    /// region) is checked here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.validate_regions()?;
        // A first page of max_limit rows asks every region for as many at once.
        let first_page = self.server.max_limit as u64 * self.regions.len() as u64;
        if self.server.max_upstream_rows < first_page {
            return Err(invalid(
                "server.max_upstream_rows",
                format!(
                    "must be at least server.max_limit × the number of regions ({first_page}): \
                     a page of max_limit rows asks every region for as many"
                ),
            ));
        }
        self.telemetry.validate()?;
        self.cache.validate()?;
        if self.cache.scope == CacheScope::Project && self.keystone_authtoken.auth_url.is_none() {
            return Err(invalid(
                "cache.scope",
                "\"project\" needs [keystone_authtoken] auth_url: the proxy must know whose token it is",
            ));
        }
        self.admin.validate()?;
        self.tenants.validate()?;
        self.upstream.validate()?;
        self.fleet.validate(self)?;
        self.keystone_authtoken.validate()?;
        self.log.validate()
    }

    fn validate_regions(&self) -> Result<(), ConfigError> {
        let catalog = &self.regions_from_catalog.service_type;
        match (self.regions.is_empty(), catalog.is_some()) {
            (true, false) => {
                return Err(invalid(
                    "regions",
                    "at least one [[regions]] is required (or [regions_from_catalog])",
                ))
            }
            // Read at start (see `with_catalog_regions`).
            (true, true) if self.keystone_authtoken.auth_url.is_some() => return Ok(()),
            (true, true) => {
                return Err(invalid(
                    "regions_from_catalog.service_type",
                    "needs [keystone_authtoken] auth_url: the catalog is read with its token",
                ))
            }
            _ => {}
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
            self.validate_region_protection(i)?;
        }
        if let Some(primary) = &self.server.primary_region {
            if !self.regions.iter().any(|r| &r.name == primary) {
                return Err(invalid(
                    "server.primary_region",
                    format!("no region is named {primary:?}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_region_protection(&self, i: usize) -> Result<(), ConfigError> {
        let region = &self.regions[i];
        // Name the key where the value came from: the region's own, or [upstream].
        region.settings().validate(|k| region.key_of(i, k))
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

/// What figment found wrong, without its nested quoting: an unknown key with the keys its
/// section has (`section`: where it was, empty at the top level), an unknown value with the
/// values there are.
pub(crate) fn what_is_wrong(kind: &figment::error::Kind, section: &str) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownField(found, known) => {
            let within = match section.is_empty() {
                true => "at the top level".to_string(),
                false => format!("in [{section}]"),
            };
            format!(
                "unknown key `{found}`; {within} the keys are {}",
                known.join(", ")
            )
        }
        Kind::UnknownVariant(found, known) => {
            format!("unknown value `{found}`; it is one of {}", known.join(", "))
        }
        other => other.to_string(),
    }
}

/// Every mistake of a configuration, where serde stops at the first: each section read on
/// its own (a mistake per section), every unknown key of a section named (not only the
/// first), and every unknown section. An operator fixing a file sees them all at once.
fn every_error(figment: &Figment) -> Vec<String> {
    fn section<T: serde::de::DeserializeOwned>(
        figment: &Figment,
        name: &str,
        msgs: &mut Vec<String>,
    ) {
        if !figment.contains(name) {
            return;
        }
        let at = |key: &[String], what: String| {
            let path: Vec<String> = std::iter::once(name.to_string())
                .chain(key.iter().cloned())
                .collect();
            let from = source_of(figment.find_metadata(&path.join(".")), &path);
            format!("{}: {what}{from}", path.join("."))
        };
        let Ok(mut table) = figment.extract_inner::<figment::value::Dict>(name) else {
            // Not a table (the regions' array, or a mistake): serde's first error.
            if let Err(errors) = figment.extract_inner::<T>(name) {
                for e in errors {
                    let key = e
                        .path
                        .strip_prefix(&[name.to_string()][..])
                        .unwrap_or(&e.path)
                        .to_vec();
                    msgs.push(at(&key, what_is_wrong(&e.kind, name)));
                }
            }
            return;
        };
        // serde stops at a section's first mistake: the key at fault is taken out and the
        // section read again, until it reads or a key it needs is missing.
        for _ in 0..=table.len() {
            let value = figment::value::Value::from(table.clone());
            let Err(errors) = T::deserialize(&value) else {
                return;
            };
            let Some(e) = errors.into_iter().next() else {
                return;
            };
            match &e.kind {
                figment::error::Kind::UnknownField(_, known) => {
                    let unknown: Vec<String> = table
                        .keys()
                        .filter(|k| !known.contains(&k.as_str()))
                        .cloned()
                        .collect();
                    for key in &unknown {
                        let what = format!(
                            "unknown key `{key}`; in [{name}] the keys are {}",
                            known.join(", ")
                        );
                        msgs.push(at(std::slice::from_ref(key), what));
                        table.remove(key);
                    }
                }
                // A key taken out above, now missing: said already.
                figment::error::Kind::MissingField(_) => return,
                kind => {
                    msgs.push(at(&e.path, what_is_wrong(kind, name)));
                    match e.path.first() {
                        Some(key) if table.remove(key).is_some() => {}
                        _ => return,
                    }
                }
            }
        }
    }
    let mut msgs = Vec::new();
    section::<ServerConfig>(figment, "server", &mut msgs);
    section::<AdminConfig>(figment, "admin", &mut msgs);
    section::<TenantsConfig>(figment, "tenants", &mut msgs);
    section::<MergeConfig>(figment, "merge", &mut msgs);
    section::<CacheConfig>(figment, "cache", &mut msgs);
    section::<UpstreamConfig>(figment, "upstream", &mut msgs);
    section::<LogConfig>(figment, "log", &mut msgs);
    section::<TelemetryConfig>(figment, "telemetry", &mut msgs);
    section::<FleetConfig>(figment, "fleet", &mut msgs);
    section::<KeystoneConfig>(figment, "keystone_authtoken", &mut msgs);
    section::<CatalogRegions>(figment, "regions_from_catalog", &mut msgs);
    section::<Vec<RegionConfig>>(figment, "regions", &mut msgs);
    const SECTIONS: [&str; 12] = [
        "server",
        "admin",
        "tenants",
        "merge",
        "cache",
        "upstream",
        "log",
        "telemetry",
        "fleet",
        "keystone_authtoken",
        "regions_from_catalog",
        "regions",
    ];
    let top = figment
        .extract::<figment::value::Dict>()
        .unwrap_or_default();
    for name in top.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        let from = source_of(figment.find_metadata(name), std::slice::from_ref(name));
        msgs.push(format!(
            "unknown section `{name}`; the sections are {}{from}",
            SECTIONS.join(", ")
        ));
    }
    msgs
}

/// Where a key came from, for its error: the file, or the environment variable that set it.
fn source_of(metadata: Option<&figment::Metadata>, path: &[String]) -> String {
    match metadata {
        Some(m) if m.name.contains("environment") => format!(
            " (from the environment: VBS_PROXY__{})",
            path.join("__").to_uppercase()
        ),
        Some(m) => match &m.source {
            Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
            _ => String::new(),
        },
        None => String::new(),
    }
}

/// One of figment's errors as an operator reads it: the key (`cache.ttl`, not figment's
/// `default.cache.ttl`: profiles are not used here), what is wrong, and where it came from
/// (the file, or the environment variable that set it).
fn describe(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let section = e.path[..e.path.len().saturating_sub(1)].join(".");
    let what = what_is_wrong(&e.kind, &section);
    let from = source_of(e.metadata.as_ref(), &e.path);
    match key.is_empty() {
        true => format!("{what}{from}"),
        false => format!("{key}: {what}{from}"),
    }
}

/// The Cinder endpoint a region URL names, as the proxy builds paths on it
/// (`{base}/v3/{project}/...`): the URL as given, or what `openstack endpoint list` shows —
/// `.../v3/%(project_id)s` (also `$(project_id)s`, `%(tenant_id)s`, `$(tenant_id)s`) or
/// `.../v3` — or what `openstack catalog list` shows, `.../v3/{a project id}`, with that tail
/// and trailing slashes taken off. (Everything Cinder serves under `/v3/` is a project's or
/// project-less, so a segment after `/v3` is a project id, never part of the endpoint; kept,
/// every listing would ask for `/v3/{id}/v3/{project}/...` and miss the region.)
pub fn endpoint_base(url: &str) -> String {
    const PROJECT_TEMPLATES: &[&str] = &[
        "%(project_id)s",
        "$(project_id)s",
        "%(tenant_id)s",
        "$(tenant_id)s",
    ];
    let mut base = url.trim_end_matches('/');
    for template in PROJECT_TEMPLATES {
        if let Some(rest) = base.strip_suffix(template) {
            base = rest.trim_end_matches('/');
            break;
        }
    }
    if let Some((root, project)) = base.rsplit_once("/v3/") {
        // In the path (a host named `v3` is not a path segment).
        let in_path = root.find("://").is_some_and(|i| root.len() > i + 3);
        if in_path && !project.is_empty() && !project.contains('/') {
            base = root;
        }
    }
    base.strip_suffix("/v3").unwrap_or(base).to_string()
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

    /// Errors name the key as the operator wrote it, without figment's profile or its nested
    /// quoting, and an unknown key comes with the keys its section has.
    #[test]
    fn errors_name_the_key_and_what_it_could_be() {
        let err = Config::from_toml(&format!("[cache]\nttll = \"3s\"\n{ONE_REGION}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache.ttll: unknown key `ttll`; in [cache] the keys are ttl, "),
            "{err}"
        );
        assert!(!err.contains("default.") && !err.contains("``"), "{err}");
        let err = Config::from_toml(&format!(
            "[upstream]\non_region_failure = \"x\"\n{ONE_REGION}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "upstream.on_region_failure: unknown value `x`; it is one of partial, fail"
            ),
            "{err}"
        );
        let err = Config::from_toml(&format!("{ONE_REGION}retriez = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("regions[0].retriez") && err.contains("unknown key `retriez`"),
            "{err}"
        );
        assert!(!err.contains("``"), "{err}");
    }

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
        // What `openstack endpoint list` shows names the same endpoint as its base.
        for url in [
            "https://cinder.example:8776",
            "https://cinder.example:8776/",
            "https://cinder.example:8776/v3",
            "https://cinder.example:8776/v3/",
            "https://cinder.example:8776/v3/%(project_id)s",
            "https://cinder.example:8776/v3/$(project_id)s",
            "https://cinder.example:8776/v3/%(tenant_id)s/",
            // `openstack catalog list`: the token's project, substituted.
            "https://cinder.example:8776/v3/4f3c0e4a1b2d4c5e8f9a0b1c2d3e4f5a",
        ] {
            let toml = format!("[[regions]]\nname = \"a\"\nurl = \"{url}\"\n");
            let config = Config::from_toml(&toml).unwrap();
            assert_eq!(
                config.regions[0].url, "https://cinder.example:8776",
                "{url}"
            );
        }
        // devstack serves Cinder under a path prefix: it stays.
        assert_eq!(
            endpoint_base("http://10.0.0.1/volume/v3/$(project_id)s"),
            "http://10.0.0.1/volume"
        );
        assert_eq!(
            endpoint_base("http://10.0.0.1/volume/v3/4f3c0e4a1b2d"),
            "http://10.0.0.1/volume"
        );
        assert_eq!(endpoint_base("http://v3/x"), "http://v3/x");

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
        let p = c.regions[0].settings();
        assert_eq!(
            (p.retries, p.max_concurrency, p.timeout),
            (1, 2, Duration::from_secs(3))
        );
        let bad = "[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nmax_concurrency = 0\n";
        let err = Config::from_toml(bad).unwrap_err().to_string();
        assert!(err.contains("regions[0].max_concurrency"), "{err}");
    }

    #[test]
    fn every_mistake_of_a_file_is_reported_at_once() {
        let toml = format!(
            "{ONE_REGION}[server]\nmax_limit = \"lots\"\nlisten_port = 1\n\
             [cache]\nttl = \"soon\"\ntll = \"1s\"\ntl = \"2s\"\n[upstrem]\nretries = 1\n"
        );
        let err = Config::from_toml(&toml).unwrap_err().to_string();
        for mistake in [
            "server.listen_port: unknown key",
            "server.max_limit: invalid type",
            "cache.ttl: invalid value",
            "cache.tll: unknown key",
            "cache.tl: unknown key",
            "unknown section `upstrem`",
        ] {
            assert!(err.contains(mistake), "{mistake} in {err}");
        }
        assert!(
            !err.contains("missing field"),
            "a key taken out is not missing: {err}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml(&format!("{ONE_REGION}[server]\nlisten_port = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let config = Config::from_toml(
            "[server]\ncursor_secret = \"cursor-secret-0123456789\"\n\
             [admin]\ntoken = \"admin-token-0123456789\"\n\
             [cache]\nkey_secret = \"cache-key-0123456789ab\"\n\
             [[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        let printed = format!("{config:?}");
        for secret in ["cursor-secret", "admin-token", "cache-key"] {
            assert!(!printed.contains(secret), "{secret} printed");
        }
        assert!(printed.contains("<hidden>"));
        assert_eq!(&*config.admin.token.unwrap(), "admin-token-0123456789");
    }
}
