//! `POST /admin/cache/purge`, `GET /admin/throttled` and `GET /metrics`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use std::sync::Arc;

use crate::config::{Config, ThrottledNames};
use crate::regions::throttled::{Reason, WINDOW};
use crate::cache::Caches;
use crate::state::metrics::Metrics;
use crate::regions::Regions;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Purge {
    /// Absent: everything. Present, it must be a project id: `null` is a mistake, not "all".
    #[serde(default, deserialize_with = "present")]
    project_id: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// Equal, in time that does not depend on where they differ (both sides hashed first, so
/// lengths do not leak either).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The admin routes are off without `admin.token` (404, as for any unknown route), and need
/// it in `X-Admin-Token`.
pub(crate) fn authorized(config: &Config, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &config.admin.token else {
        return Err(ApiError::NotFound("The resource could not be found.".into()));
    };
    let Some(given) = headers.get("x-admin-token") else {
        return Err(ApiError::Unauthorized("X-Admin-Token is required.".into()));
    };
    if !same_secret(given.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::Forbidden("Invalid admin token.".into()));
    }
    Ok(())
}

/// `GET /admin/throttled[?limit=N]`: the projects refused most in the last minute (a 429 of
/// `[tenants]`, or a call past its turn at a region's limiter), most first, by reason; named
/// by a digest or by id (`admin.throttled_names`). At most `limit` (20; 1 to 1000).
pub async fn throttled(
    State(config): State<Arc<Config>>,
    State(regions): State<Arc<Regions>>,
    request: Request,
) -> Response {
    if let Err(e) = authorized(&config, request.headers()) {
        return e.into_response();
    }
    let mut limit = 20;
    for (key, value) in crate::cinder::query::decode_query(request.uri().query().unwrap_or("")) {
        match (key.as_str(), value.parse::<usize>()) {
            ("limit", Ok(n)) if (1..=1000).contains(&n) => limit = n,
            _ => {
                return ApiError::bad_request(format!(
                    "Invalid query: {key}={value} (only limit, 1 to 1000, is known)."
                ))
                .into_response()
            }
        }
    }
    let names = config.admin.throttled_names;
    let throttled: Vec<serde_json::Value> = regions
        .metrics
        .throttled
        .top(limit)
        .into_iter()
        .map(|t| {
            let mut entry = serde_json::Map::new();
            let (key, name) = throttled_name(&t.tenant, names);
            entry.insert(key.into(), name.into());
            let refused: serde_json::Map<String, serde_json::Value> = Reason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), t.refused[*r as usize].into()))
                .collect();
            entry.insert("refused".into(), refused.into());
            entry.insert("total".into(), t.total().into());
            let ago = (t.since_last.as_secs_f64() * 10.0).round() / 10.0;
            entry.insert("last_refused_seconds_ago".into(), ago.into());
            entry.into()
        })
        .collect();
    let body = serde_json::json!({
        "window_seconds": WINDOW.as_secs(),
        "throttled": throttled,
    });
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.to_string(),
    )
        .into_response()
}

/// How the operator's view names a tenant: a project by id, or by the SHA-256 of its id
/// (hex, 16 bytes); a project-less caller by the digest of its token it is known by.
fn throttled_name(tenant: &str, names: ThrottledNames) -> (&'static str, String) {
    if let Some(caller) = tenant.strip_prefix("/v3@") {
        return ("caller_sha256", caller.to_string());
    }
    let project = super::decode_segment(tenant.strip_prefix("/v3/").unwrap_or(tenant));
    match names {
        ThrottledNames::Named => ("project", project),
        ThrottledNames::Hashed => {
            let digest = Sha256::digest(project.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            ("project_sha256", hex)
        }
    }
}

/// `{"project_id": "..."}` drops that project's entries, `{}` drops all; answers how many.
pub async fn purge(
    State(config): State<Arc<Config>>,
    State(caches): State<Arc<Caches>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(e) = authorized(&config, &parts.headers) {
        return e.into_response();
    }
    let bytes = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::bad_request("Request body too large or unreadable.").into_response()
        }
    };
    let purge: Purge = if bytes.iter().all(u8::is_ascii_whitespace) {
        Purge::default()
    } else {
        // An object only: serde reads a struct from an array too (`[]` was "purge all").
        let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|v| match v.is_object() {
                true => serde_json::from_value::<Purge>(v).map_err(|e| e.to_string()),
                false => Err("a JSON object is expected".to_string()),
            });
        match parsed {
            Ok(p) => p,
            Err(e) => {
                return ApiError::bad_request(format!("Invalid purge request: {e}")).into_response()
            }
        }
    };
    if purge.project_id.as_deref().is_some_and(|p| {
        let p = super::decode_segment(p);
        p.is_empty() || !crate::cinder::path::is_path_segment(&p)
    }) {
        return ApiError::bad_request("project_id must name a project.").into_response();
    }
    // The scope as listings are keyed: decoded, then encoded once (every spelling matches).
    let scope = purge.project_id.as_ref().map(|p| {
        format!(
            "/v3/{}",
            crate::cinder::path::encode_segment(&super::decode_segment(p))
        )
    });
    let purged = caches.purge(scope.as_deref());
    // The other replicas' pages too; if Redis cannot be told, the answer says so.
    let fleet_purged = match &caches.shared {
        Some(shared) => Some(shared.purge(scope.as_deref()).await),
        None => None,
    };
    tracing::info!(
        fleet_purged,
        project = purge.project_id.as_deref().unwrap_or("*"),
        purged,
        "cache purged"
    );
    let body = match fleet_purged {
        None => serde_json::json!({ "purged": purged }),
        Some(fleet) => serde_json::json!({ "purged": purged, "fleet_purged": fleet }),
    }
    .to_string();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// `GET /metrics`: OpenMetrics for a scraper that asks for it (Prometheus does), else the
/// Prometheus text format every scraper and `promtool check metrics` read.
pub async fn metrics(
    State(metrics): State<Arc<Metrics>>,
    State(caches): State<Arc<Caches>>,
    State(regions): State<Arc<Regions>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = metrics.render(&caches, &regions, openmetrics);
    let ct = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static(ct))], body).into_response()
}
