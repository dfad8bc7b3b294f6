//! The HTTP front: routes, thin handlers and what they share (token, microversion, request
//! id, public base URL, response headers).

pub mod admin;
pub mod auth;
pub mod body;
pub mod error;
pub mod list;
pub mod listener;
pub mod observe;
pub mod passthrough;
pub mod path;
pub mod protect;
pub mod show;
pub mod versions;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{request::Parts, HeaderMap, HeaderName, HeaderValue};
use axum::routing::get;

use axum::Router;

use crate::state::AppState;
use crate::listing::render::View;
use crate::cinder::resource::RESOURCES;
use crate::cinder::microversion::{self, Version};
use crate::regions::CallContext;
use error::ApiError;

pub const API_VERSION: HeaderName = HeaderName::from_static("openstack-api-version");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-openstack-request-id");
pub const COMPUTE_REQUEST_ID: HeaderName = HeaderName::from_static("x-compute-request-id");
pub const MISSING_REGIONS: HeaderName = HeaderName::from_static("x-aggregate-missing-regions");
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// The whole application, and the middleware order, in one place: every request is observed
/// (request id, span, log event, metrics);
/// API requests then pass the inbound protection (header size, load shedding, request
/// timeout); the operational routes (`/healthz`, `/readyz`, `/metrics`) skip it so probes and
/// scrapes still answer under overload.
pub fn router(state: AppState) -> Router {
    // Layers run outside in: the inbound limits, then the token check (only with Keystone:
    // without it the cache-hit path has no layer more).
    let mut api = routes(state.clone());
    if state.keystone.is_some() {
        api = api.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    }
    let api = api.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        protect::inbound,
    ));
    api.merge(ops_routes(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state,
            observe::observe,
        ))
}

/// Every route, in one place. Each listed resource has its detail and summary listings and
/// its show route, also without the project segment (Cinder ≥ 3.67 routes; python-cinderclient's
/// noauth mode uses them), and backups the VBS alias `/native/backups/detail`.
pub fn routes(state: AppState) -> Router {
    let list = |view, resource| {
        get(move |s, c, r| list::handle(s, c, r, view, resource)).fallback(passthrough::handle)
    };
    let show = |resource| {
        get(move |s, c, r| show::handle(s, c, r, resource)).fallback(passthrough::handle)
    };
    let mut router = Router::new()
        .route("/", get(versions::root))
        .route("/v3", get(versions::v3))
        .route("/v3/", get(versions::v3));
    for resource in RESOURCES {
        let c = resource.collection;
        for scope in ["/v3/{project_id}", "/v3"] {
            router = router
                .route(&format!("{scope}/{c}/detail"), list(View::Detail, resource))
                .route(&format!("{scope}/{c}"), list(View::Summary, resource))
                .route(&format!("{scope}/{c}/{{id}}"), show(resource));
            if resource.native_alias {
                let alias = format!("{scope}/native/{c}/detail");
                router = router.route(&alias, list(View::Detail, resource));
            }
        }
    }
    router
        .route("/admin/cache/purge", axum::routing::post(admin::purge))
        .fallback(passthrough::handle)
        .with_state(state)
}

/// Liveness, readiness and metrics: outside the inbound protection.
pub fn ops_routes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .route("/readyz", get(versions::readyz))
        .route("/metrics", get(admin::metrics))
        .with_state(state)
}

/// The part of a backups path before the collection: `/v3/{project}` (the project
/// re-encoded, so every spelling of it is one scope), or `/v3` for the project-less routes.
/// Regions are asked under the same scope, so their links and the caller's identity work out
/// as they would talking to Cinder directly.
pub fn scope(path: &str) -> Result<String, ApiError> {
    let segments = path::segments(path)?;
    let collection = |s: &str| s == "native" || RESOURCES.iter().any(|r| r.collection == s);
    match segments.get(1).map(String::as_str) {
        Some(s) if collection(s) => Ok("/v3".to_string()),
        Some(project) => Ok(format!("/v3/{}", crate::cinder::path::encode_segment(project))),
        None => Err(ApiError::NotFound(
            "The resource could not be found.".into(),
        )),
    }
}

/// The headers of every API answer made for a caller: the microversion it was made at, and
/// that it is this caller's alone (a shared HTTP cache in front must neither serve it to
/// another token nor mix versions).
pub fn set_version_headers(headers: &mut HeaderMap, version: Version) {
    headers.insert(API_VERSION, api_version_header(version));
    headers.insert(
        axum::http::header::VARY,
        HeaderValue::from_static("X-Auth-Token, OpenStack-API-Version"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("private"),
    );
}

/// `OpenStack-API-Version: volume 3.N`, made once per 3.x version (every answer carries one).
fn api_version_header(version: Version) -> HeaderValue {
    const KEPT: u32 = 128;
    static MADE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let make = |version: Version| HeaderValue::try_from(format!("volume {version}")).expect("ascii");
    if version.major != 3 || version.minor >= KEPT {
        return make(version);
    }
    let made = MADE.get_or_init(|| (0..KEPT).map(|minor| make(Version::new(3, minor))).collect());
    made[version.minor as usize].clone()
}

/// What an aggregated route needs from the request before it goes upstream.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ctx: CallContext,
    pub public_base: String,
    /// Who the token is, when Keystone checked it (`http::auth`).
    pub token_info: Option<std::sync::Arc<crate::identity::TokenInfo>>,
}

impl Caller {
    /// Token (401 without one, no upstream call), microversion, request id, public base.
    pub fn from_parts(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
        let token = parts
            .headers
            .get(AUTH_TOKEN)
            .filter(|t| !t.is_empty())
            .cloned()
            .ok_or_else(|| {
                ApiError::Unauthorized("The request you have made requires authentication.".into())
            })?;
        let version = microversion::negotiate(
            parts.headers.get(API_VERSION).map(HeaderValue::as_bytes),
            state.regions.versions.max(),
        )?;
        let request_id = parts
            .extensions
            .get::<observe::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_else(|| {
                HeaderValue::from_static("req-00000000-0000-0000-0000-000000000000")
            });
        let ctx = CallContext {
            token,
            version,
            request_id,
            traceparent: parts.headers.get("traceparent").cloned(),
        };
        Ok(Caller {
            ctx,
            public_base: public_base(state, parts)?,
            token_info: parts.extensions.get().cloned(),
        })
    }
}

/// A handler that takes a `Caller` gets one, or the request is answered with the fault
/// (401 without a token, 400/406 for the microversion, 400 for a bad Host) before it runs.
impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        Caller::from_parts(state, parts)
    }
}

impl Caller {
    /// `response` (an answer or a fault) with the headers every answer to this caller carries.
    pub fn answered(&self, mut response: axum::response::Response) -> axum::response::Response {
        self.response_headers(response.headers_mut());
        response
    }

    /// Headers every aggregated answer carries.
    pub fn response_headers(&self, headers: &mut HeaderMap) {
        set_version_headers(headers, self.ctx.version);
        headers.insert(REQUEST_ID, self.ctx.request_id.clone());
        headers.insert(COMPUTE_REQUEST_ID, self.ctx.request_id.clone());
    }
}

/// `server.public_url`, else the request's scheme and Host. `X-Forwarded-Proto/Host` count
/// only from `server.trusted_proxies`: Cinder trusts `X-Forwarded-Host` from anyone, which
/// behind a cache is a poisoning vector. A Host that is not an RFC 3986 authority is the
/// caller's mistake (400): it would otherwise reach every href of the answer, and its key.
pub fn public_base(state: &AppState, parts: &Parts) -> Result<String, ApiError> {
    if let Some(url) = &state.config.server.public_url {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let trusted = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ci| state.config.server.trusted_proxies.contains(&ci.0.ip()));
    let mut scheme = match parts.extensions.get::<listener::ServedOverTls>() {
        Some(_) => "https",
        None => "http",
    };
    let mut host = match parts.headers.get("host") {
        None => "localhost",
        Some(h) => h.to_str().map_err(|_| bad_host())?,
    };
    if trusted {
        if let Some(proto) = header("x-forwarded-proto").and_then(|p| p.split(',').next()) {
            match proto.trim() {
                "https" => scheme = "https",
                "http" => scheme = "http",
                _ => {}
            }
        }
        // As Cinder's get_request_url: the last entry of a list.
        if let Some(fwd) = header("x-forwarded-host").and_then(|h| h.split(',').next_back()) {
            if !fwd.trim().is_empty() {
                host = fwd.trim();
            }
        }
    }
    if !is_authority(host) {
        return Err(bad_host());
    }
    Ok(format!("{scheme}://{host}"))
}

fn bad_host() -> ApiError {
    ApiError::bad_request("Invalid Host header.")
}

/// RFC 3986 §3.2 `host [ ":" port ]` (no userinfo: a Host header has none), at most 255
/// bytes of host: `reg-name` (unreserved, sub-delims, pct-encoded), IPv4, or `[IP-literal]`.
pub fn is_authority(s: &str) -> bool {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((literal, after)) => {
                let ok = !literal.is_empty()
                    && literal
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
                if !ok {
                    return false;
                }
                match after {
                    "" => return true,
                    _ => match after.strip_prefix(':') {
                        Some(port) => ("x", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        },
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && host.len() <= 255 && is_reg_name(host.as_bytes())
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`, not empty (an IPv4 address is one).
fn is_reg_name(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if b.len() > i + 2 && b[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit) => i += 3,
            c if c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c) => i += 1,
            _ => return false,
        }
    }
    !b.is_empty()
}

/// A path segment as the client meant it (percent-decoded).
pub fn decode_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn scope_is_the_path_before_the_collection() {
        assert_eq!(super::scope("/v3/abc/backups/detail").unwrap(), "/v3/abc");
        assert_eq!(
            super::scope("/v3/abc/native/backups/detail").unwrap(),
            "/v3/abc"
        );
        assert_eq!(super::scope("/v3/a%20b/backups/x").unwrap(), "/v3/a%20b");
        assert_eq!(super::scope("/v3/%61bc/backups/x").unwrap(), "/v3/abc");
        assert_eq!(super::scope("/v3/backups/detail").unwrap(), "/v3");
        assert_eq!(super::scope("/v3/native/backups/detail").unwrap(), "/v3");
        assert!(super::scope("/v3/../backups").is_err());
    }

    #[test]
    fn hosts_are_authorities() {
        for good in [
            "proxy.example",
            "proxy.example:8776",
            "127.0.0.1:1",
            "[::1]:8776",
            "[fe80::1]",
            "a%20b",
            "x'y",
        ] {
            assert!(super::is_authority(good), "{good}");
        }
        for bad in [
            "",
            ":80",
            "evil.example/x\", \"injected\": \"yes",
            "a\"b\\",
            "user@host",
            "host:port",
            "host:123456",
            "[::1",
            "[::1]x",
            "a%2",
            "a b",
            &"h".repeat(256),
        ] {
            assert!(!super::is_authority(bad), "{bad}");
        }
    }
}
