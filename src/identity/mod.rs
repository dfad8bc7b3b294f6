//! Keystone, as keystonemiddleware's `authtoken` uses it in front of Cinder: the proxy keeps
//! a token of its own (a service user, re-authenticated before it expires) and validates each
//! client token with `GET /v3/auth/tokens?nocatalog` (`X-Subject-Token`). A verdict is kept,
//! by an HMAC of the token (never the token), until `min(expires_at, token_cache_time)`;
//! concurrent validations of one token are one call to Keystone.
//!
//! Keystone unreachable, slow or refusing the proxy's own credentials is never an open door:
//! tokens validated before keep working until their verdict expires; any other is
//! "unavailable" (the caller answers 503), never let through unchecked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::config::{KeystoneAuthType, KeystoneConfig};

/// Bytes of verdicts kept at most, each weighed with its key and what Keystone said of the
/// token (about 400 bytes for a token of two roles and 32-character ids: some 85,000
/// verdicts). A bound of its own, outside `cache.max_bytes`: a flood of distinct listings
/// must not evict the verdicts and send every caller back to Keystone.
const MAX_VERDICT_BYTES: u64 = 32 << 20;
/// Validations sent to Keystone at once: more tokens never seen before wait for a turn (each
/// validation is bounded by the client's timeout), so a flood of random tokens costs Keystone
/// this many concurrent requests, not one per token.
pub const MAX_VALIDATIONS: usize = 32;
/// Every call to Keystone is bounded.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The service token is renewed when this little of its life is left.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Who a valid token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user_id: String,
    /// Project-scoped tokens: the project and its domain.
    pub project_id: Option<String>,
    pub(crate) project_domain_id: Option<String>,
    /// Domain-scoped tokens: the domain.
    pub(crate) domain_id: Option<String>,
    /// Role names, sorted (implied roles included, as Keystone lists them).
    pub roles: Vec<String>,
    pub expires_at: SystemTime,
}

impl TokenInfo {
    /// What the token may see, as the cache keys it under `cache.scope = "project"`: its
    /// project (and domain) and its role set. Two users with the same roles in one project
    /// see the same listings; any other difference is another key.
    pub(crate) fn scope_key(&self) -> String {
        format!(
            "project\n{}\n{}\n{}\n{}",
            self.project_id.as_deref().unwrap_or(""),
            self.project_domain_id.as_deref().unwrap_or(""),
            self.domain_id.as_deref().unwrap_or(""),
            self.roles.join(",")
        )
    }
}

/// Keystone's word on a token.
#[derive(Debug, Clone)]
pub enum Verdict {
    Valid(Arc<TokenInfo>),
    /// Unknown, expired or revoked (Keystone's 404).
    Invalid,
}

/// Keystone could not give a verdict (down, slow, or refusing the proxy's own credentials).
#[derive(Debug, Clone, thiserror::Error)]
#[error("Keystone is unavailable: {0}")]
pub struct Unavailable(pub String);

struct ServiceToken {
    token: String,
    renew_at: SystemTime,
}

pub struct Keystone {
    http: reqwest::Client,
    /// `.../v3`, without a trailing slash.
    auth_url: String,
    auth_body: Value,
    /// `Keystone uri="..."`, for 401 answers.
    pub(crate) www_authenticate: String,
    service: tokio::sync::Mutex<Option<ServiceToken>>,
    verdicts: moka::future::Cache<[u8; 32], Verdict>,
    /// Turns to validate a token with Keystone ([`MAX_VALIDATIONS`]).
    validations: tokio::sync::Semaphore,
    key: [u8; 32],
    /// Validations asked of Keystone, those that failed, and the last failure: for the
    /// status page.
    pub(crate) asked: std::sync::atomic::AtomicU64,
    pub(crate) failed: std::sync::atomic::AtomicU64,
    pub(crate) last_failure: std::sync::Mutex<Option<(SystemTime, String)>>,
}

/// A verdict's bytes: its key, the entry's bookkeeping, and the token's ids and roles.
fn verdict_weight(_key: &[u8; 32], verdict: &Verdict) -> u32 {
    let info = match verdict {
        Verdict::Valid(info) => {
            let ids = [&info.project_id, &info.project_domain_id, &info.domain_id];
            let ids: usize = ids.iter().map(|id| id.as_ref().map_or(0, String::len)).sum();
            let roles: usize = info.roles.iter().map(|r| r.len() + 24).sum();
            std::mem::size_of::<TokenInfo>() + info.user_id.len() + ids + roles
        }
        Verdict::Invalid => 0,
    };
    (32 + 96 + info).min(u32::MAX as usize) as u32
}

/// A verdict is kept until the token expires, and never longer than `token_cache_time`.
struct VerdictExpiry {
    token_cache_time: Duration,
}

impl moka::Expiry<[u8; 32], Verdict> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        verdict: &Verdict,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(match verdict {
            Verdict::Valid(info) => info
                .expires_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(self.token_cache_time),
            Verdict::Invalid => self.token_cache_time,
        })
    }
}

impl Keystone {
    /// `None` without `auth_url` (tokens then go to the regions unchecked).
    pub fn new(config: &KeystoneConfig) -> Result<Option<Keystone>, String> {
        let Some(url) = &config.auth_url else {
            return Ok(None);
        };
        let url = url.trim_end_matches('/');
        let auth_url = match url.ends_with("/v3") {
            true => url.to_string(),
            false => format!("{url}/v3"),
        };
        let www = config
            .www_authenticate_uri
            .clone()
            .unwrap_or_else(|| auth_url.trim_end_matches("/v3").to_string());
        let mut http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(2));
        if let Some(ca) = &config.cafile {
            let tls = crate::tls::RegionTls::load(Some(ca), None, None).map_err(|(_, e)| e)?;
            http = tls.apply(http);
        }
        let auth_body = match config.auth_type {
            KeystoneAuthType::Password => json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": config.username,
                    "domain": {"name": config.user_domain_name},
                    "password": config.password,
                }}},
                "scope": {"project": {
                    "name": config.project_name,
                    "domain": {"name": config.project_domain_name},
                }},
            }}),
            KeystoneAuthType::V3applicationcredential => json!({"auth": {
                "identity": {"methods": ["application_credential"], "application_credential": {
                    "id": config.application_credential_id,
                    "secret": config.application_credential_secret,
                }},
            }}),
        };
        Ok(Some(Keystone {
            http: http.build().map_err(|e| format!("keystone client: {e}"))?,
            auth_url,
            auth_body,
            www_authenticate: format!("Keystone uri=\"{www}\""),
            service: tokio::sync::Mutex::new(None),
            verdicts: moka::future::Cache::builder()
                .max_capacity(MAX_VERDICT_BYTES)
                .weigher(verdict_weight)
                .expire_after(VerdictExpiry {
                    token_cache_time: config.token_cache_time,
                })
                .build(),
            validations: tokio::sync::Semaphore::new(MAX_VALIDATIONS),
            key: rand::random(),
            asked: Default::default(),
            failed: Default::default(),
            last_failure: Default::default(),
        }))
    }

    /// Keystone's verdict on `token`: kept, or asked once however many ask at once.
    pub async fn check(&self, token: &[u8]) -> Result<Verdict, Unavailable> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(token);
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        let token = String::from_utf8_lossy(token).into_owned();
        self.verdicts
            .try_get_with(key, self.validate(token))
            .await
            .map_err(|e| (*e).clone())
    }

    /// Verdicts kept now.
    pub(crate) fn verdicts_kept(&self) -> u64 {
        self.verdicts.entry_count()
    }

    /// Bytes the verdicts kept weigh, read at each scrape (`vbs_map_bytes`; the future
    /// cache's housekeeping cannot be run from a scrape, so the latest few writes may not be
    /// in it yet).
    pub(crate) fn verdicts_bytes(self: &Arc<Self>) -> Box<dyn Fn() -> u64 + Send + Sync> {
        let keystone = self.clone();
        Box::new(move || keystone.verdicts.weighted_size())
    }

    /// One validation, counted (and its failure remembered) for the status page.
    async fn validate(&self, token: String) -> Result<Verdict, Unavailable> {
        use std::sync::atomic::Ordering::Relaxed;
        self.asked.fetch_add(1, Relaxed);
        let verdict = self.validate_once(token).await;
        if let Err(e) = &verdict {
            self.failed.fetch_add(1, Relaxed);
            let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
            *last = Some((SystemTime::now(), e.0.clone()));
        }
        verdict
    }

    /// One validation, with the service token renewed (once) if Keystone refuses it.
    async fn validate_once(&self, token: String) -> Result<Verdict, Unavailable> {
        let _turn = self
            .validations
            .acquire()
            .await
            .map_err(|_| Unavailable("the validations are closed".into()))?;
        for attempt in 0..2 {
            let service = self.service_token(attempt > 0).await?;
            let answer = self
                .http
                .get(format!("{}/auth/tokens?nocatalog", self.auth_url))
                .header("X-Auth-Token", &service)
                .header("X-Subject-Token", &token)
                .send()
                .await
                .map_err(|e| Unavailable(format!("validating a token: {}", e.without_url())))?;
            match answer.status().as_u16() {
                200 => {
                    let body: Value = answer
                        .json()
                        .await
                        .map_err(|e| Unavailable(format!("a validation that is not JSON: {e}")))?;
                    return token_info(&body)
                        .map(|info| Verdict::Valid(Arc::new(info)))
                        .ok_or_else(|| Unavailable("a validation without a token".into()));
                }
                404 => return Ok(Verdict::Invalid),
                // The proxy's own token expired or was revoked: a new one, once.
                401 if attempt == 0 => continue,
                status => {
                    return Err(Unavailable(format!(
                        "Keystone answered {status} to the proxy's validation (does the service user have the service role?)"
                    )))
                }
            }
        }
        Err(Unavailable("Keystone refuses the proxy's own token".into()))
    }

    /// The proxy's own token: kept until shortly before it expires, or renewed when `renew`.
    async fn service_token(&self, renew: bool) -> Result<String, Unavailable> {
        let mut held = self.service.lock().await;
        if let Some(t) = held.as_ref() {
            if !renew && SystemTime::now() < t.renew_at {
                return Ok(t.token.clone());
            }
        }
        let (token, body) = self.authenticate(false).await.inspect_err(|_| *held = None)?;
        let expires = expires_at(&body).unwrap_or_else(|| SystemTime::now() + RENEW_BEFORE);
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        *held = Some(ServiceToken {
            token: token.clone(),
            renew_at: expires - RENEW_BEFORE.min(left / 2),
        });
        Ok(token)
    }

    /// A new token of the proxy's own (with the catalog, or without): the token and
    /// Keystone's body.
    async fn authenticate(&self, with_catalog: bool) -> Result<(String, Value), Unavailable> {
        let query = if with_catalog { "" } else { "?nocatalog" };
        let answer = self
            .http
            .post(format!("{}/auth/tokens{query}", self.auth_url))
            .json(&self.auth_body)
            .send()
            .await
            .map_err(|e| Unavailable(format!("authenticating the proxy: {}", e.without_url())))?;
        if answer.status().as_u16() != 201 {
            return Err(Unavailable(format!(
                "Keystone answered {} to the proxy's own authentication",
                answer.status().as_u16()
            )));
        }
        let token = answer
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| Unavailable("no X-Subject-Token in Keystone's answer".into()))?;
        let body: Value = answer
            .json()
            .await
            .map_err(|e| Unavailable(format!("Keystone's token is not JSON: {e}")))?;
        Ok((token, body))
    }

    /// The catalog's endpoints of `service_type` at `interface` (in `regions` only, unless
    /// empty), as (Keystone region, URL), sorted by region; read with a new token of the
    /// proxy's own, which carries the catalog.
    pub async fn catalog(
        &self,
        service_type: &str,
        interface: &str,
        regions: &[String],
    ) -> Result<Vec<(String, String)>, Unavailable> {
        let (_, body) = self.authenticate(true).await?;
        // Keystone fills `%(project_id)s` in with the token's project (the proxy's own): that
        // tail is not the endpoint's.
        let own_project = body["token"]["project"]["id"].as_str().unwrap_or("");
        let endpoint_of = |url: &str| match url.trim_end_matches('/').strip_suffix(own_project) {
            Some(base) if !own_project.is_empty() && base.ends_with('/') => base.to_string(),
            _ => url.to_string(),
        };
        let mut found: Vec<(String, String)> = body["token"]["catalog"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|service| service["type"] == service_type)
            .flat_map(|service| service["endpoints"].as_array().into_iter().flatten())
            .filter(|endpoint| endpoint["interface"] == interface)
            .filter_map(|endpoint| {
                let region = endpoint["region_id"]
                    .as_str()
                    .or_else(|| endpoint["region"].as_str())?;
                Some((region.to_string(), endpoint_of(endpoint["url"].as_str()?)))
            })
            .filter(|(region, _)| regions.is_empty() || regions.contains(region))
            .collect();
        found.sort();
        found.dedup_by(|a, b| a.0 == b.0);
        Ok(found)
    }
}

fn expires_at(body: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(body["token"]["expires_at"].as_str()?.trim_end_matches('Z')).ok()
}

/// A validation's `token` object, as far as the proxy needs it.
fn token_info(body: &Value) -> Option<TokenInfo> {
    let token = &body["token"];
    let text = |v: &Value| v.as_str().map(str::to_string);
    let mut roles: Vec<String> = token["roles"]
        .as_array()
        .map(|roles| roles.iter().filter_map(|r| text(&r["name"])).collect())
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    Some(TokenInfo {
        user_id: text(&token["user"]["id"])?,
        project_id: text(&token["project"]["id"]),
        project_domain_id: text(&token["project"]["domain"]["id"]),
        domain_id: text(&token["domain"]["id"]),
        roles,
        expires_at: expires_at(body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_reads_who_the_token_is() {
        let body = json!({"token": {
            "expires_at": "2026-11-27T20:52:27.000000Z",
            "user": {"id": "u1", "name": "alice"},
            "project": {"id": "p1", "domain": {"id": "default"}},
            "roles": [{"name": "reader"}, {"name": "member"}, {"name": "reader"}],
        }});
        let info = token_info(&body).expect("a token");
        assert_eq!(info.project_id.as_deref(), Some("p1"));
        assert_eq!(info.roles, vec!["member", "reader"], "sorted, once each");
        assert_eq!(
            info.expires_at,
            humantime::parse_rfc3339("2026-11-27T20:52:27Z").unwrap()
        );
        let other_roles = TokenInfo {
            roles: vec!["admin".into(), "member".into(), "reader".into()],
            ..info.clone()
        };
        assert_ne!(info.scope_key(), other_roles.scope_key());
        let other_user = TokenInfo {
            user_id: "u2".into(),
            ..info.clone()
        };
        assert_eq!(info.scope_key(), other_user.scope_key(), "users share by role set");
        assert!(token_info(&json!({"token": {}})).is_none());
    }

    /// Verdicts are bounded in bytes, what Keystone said of a token included: a token of
    /// many roles weighs more than one of few, so the bound holds whatever the roles.
    #[test]
    fn a_verdict_weighs_what_it_holds() {
        let info = TokenInfo {
            user_id: "u1".into(),
            project_id: Some("p1".into()),
            project_domain_id: Some("default".into()),
            domain_id: None,
            roles: vec!["member".into()],
            expires_at: SystemTime::now(),
        };
        let weight = |info: &TokenInfo| verdict_weight(&[0; 32], &Verdict::Valid(Arc::new(info.clone())));
        let invalid = verdict_weight(&[0; 32], &Verdict::Invalid);
        assert!(weight(&info) > invalid);
        let many = TokenInfo {
            roles: (0..100).map(|i| format!("role-{i:03}")).collect(),
            ..info.clone()
        };
        // Each role its bytes and a `String`'s 24: 100 roles of 8 bytes in place of "member".
        assert_eq!(weight(&many) - weight(&info), 100 * (8 + 24) - (6 + 24));
    }
}
