//! `GET /v3/{project}/{collection}[/detail]` and the VBS alias `/native/backups/detail`: extract
//! the caller, parse the request, answer from the response cache or (on a miss, in a task of
//! its own) from the listing service (`listing::service::list`), then the answer's headers:
//! its own next link, `Cache-Status`, `Age`, `ETag` and conditional GET.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::ApiError;
use super::{body::Chunks, Caller};
use crate::cache::coalescing::Lookup;
use crate::cache::key::Identity;
use crate::cache::{Caches, RenderedPage};
use crate::cinder::resource::Resource;
use crate::config::Config;
use crate::identity::TokenInfo;
use crate::listing::render::View;
use crate::listing::request::ListQuery;
use crate::listing::service::{self, Lister, ListRequest};
use crate::listing::target::{RawRequest, Target};

pub async fn handle(
    State(lister): State<Arc<Lister>>,
    State(config): State<Arc<Config>>,
    caller: Caller,
    request: Request,
    view: View,
    resource: &'static Resource,
) -> Response {
    let (parts, _body) = request.into_parts();
    match prepare(&lister, &config, &parts, &caller, view, resource) {
        Ok(request) => serve(&lister, request, &caller, &parts.headers).await,
        Err(e) => caller.answered(e.into_response()),
    }
}

/// Everything decided from the request alone; its errors (bad input) are never cached.
fn prepare(
    lister: &Lister,
    config: &Config,
    parts: &axum::http::request::Parts,
    caller: &Caller,
    view: View,
    resource: &'static Resource,
) -> Result<ListRequest, ApiError> {
    // The target is the same for every caller: worked out once per raw request (and version
    // and base URL), then found again (listing/target.rs).
    let version = caller.ctx.version;
    let raw = RawRequest {
        resource,
        view,
        version,
        public_base: caller.public_base.parts(),
        path_and_query: parts.uri.path_and_query().map_or("", |p| p.as_str()),
    };
    let target = lister.targets.target_of(&raw, || {
        let path = parts.uri.path();
        let scope = super::scope(path)?;
        let max_limit = config.server.max_limit;
        let query = ListQuery::parse(parts.uri.query(), version, max_limit, resource)?;
        let base = caller.public_base.to_string();
        Ok::<_, ApiError>(Target::new(resource, scope, path, query, view, version, base))
    })?;
    let caches = &lister.caches;
    let identity = cache_identity(
        caches,
        config,
        caller.ctx.token.as_bytes(),
        caller.token_info.as_deref(),
    );
    let refresh = caches.honor_client_no_cache && asks_no_cache(&parts.headers);
    Ok(ListRequest {
        target,
        ctx: caller.ctx.clone(),
        identity,
        token_info: caller.token_info.clone(),
        refresh,
    })
}

/// The caller's part of the cache keys: the token's HMAC, or with `cache.scope = "project"`,
/// who Keystone said the token is (its project and role set).
pub(crate) fn cache_identity(
    caches: &Caches,
    config: &Config,
    token: &[u8],
    token_info: Option<&TokenInfo>,
) -> Identity {
    match (token_info, config.cache.scope) {
        (Some(info), crate::config::CacheScope::Project) => {
            caches.identity(info.scope_key().as_bytes())
        }
        _ => caches.identity(token),
    }
}

fn asks_no_cache(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|d| {
                matches!(
                    d.trim().to_ascii_lowercase().as_str(),
                    "no-cache" | "no-store" | "max-age=0"
                )
            })
        })
    })
}

async fn serve(
    lister: &Arc<Lister>,
    request: ListRequest,
    caller: &Caller,
    headers: &HeaderMap,
) -> Response {
    let request = Arc::new(request);
    let refresh = request.refresh;
    let served = service::answer(lister, request.clone()).await;
    let ttl = lister.caches.ttl;
    let recent = matches!(served, Lookup::Recent(_));
    let mut calls = 0;
    let (produced, cache_status, age) = match served {
        Lookup::Lost => {
            let e = ApiError::Internal("The listing could not be produced.".into());
            return caller.answered(e.into_response());
        }
        Lookup::Shed => {
            let e = ApiError::Busy("The proxy is at capacity; retry shortly.".into());
            return caller.answered(e.into_response());
        }
        Lookup::Hit(e) | Lookup::Recent(e) => {
            let age = e.age(tokio::time::Instant::now());
            let left = ttl.saturating_sub(age).as_secs();
            let detail = if recent {
                "; detail=refreshed-recently"
            } else {
                ""
            };
            (
                e.value.clone(),
                header_of(format_args!("vbs-proxy; hit; ttl={left}{detail}")),
                Some(age.as_secs()),
            )
        }
        Lookup::StaleWhileRevalidate(e) => {
            let age = e.age(tokio::time::Instant::now());
            (
                e.value.clone(),
                HeaderValue::from_static("vbs-proxy; hit; fwd=stale"),
                Some(age.as_secs()),
            )
        }
        Lookup::StaleIfError(e) => {
            let age = e.age(tokio::time::Instant::now());
            (
                e.value.clone(),
                HeaderValue::from_static("vbs-proxy; hit; fwd=stale; detail=stale-if-error"),
                Some(age.as_secs()),
            )
        }
        Lookup::FetchOutcome { fetched, collapsed } => {
            let fwd = if refresh { "request" } else { "miss" };
            let mut status = format!("vbs-proxy; fwd={fwd}");
            if collapsed {
                status.push_str("; collapsed");
            }
            if fetched.store.is_some() {
                status.push_str("; stored");
            }
            if let (Ok(page), false) = (&*fetched.value, collapsed) {
                calls = page.calls;
            }
            if fetched.value.as_ref().as_ref().is_ok_and(|p| p.degraded) {
                status.push_str("; detail=stale-if-error");
            }
            let status = HeaderValue::try_from(status).expect("ascii");
            (fetched.value.clone(), status, None)
        }
    };
    let mut response = match &*produced {
        Ok(page) => respond(page, &request, caller, headers, cache_status, age),
        Err(e) => {
            let mut r = caller.answered(ApiError::from(e.clone()).into_response());
            r.headers_mut().insert(super::CACHE_STATUS, cache_status);
            r
        }
    };
    if calls > 0 {
        // For the request log; absent means none (a hit: no extension map to make).
        let calls = super::observe::UpstreamCalls(calls);
        response.extensions_mut().insert(calls);
    }
    response
}

/// The response for this request from a produced page: its own next link, its headers.
fn respond(
    produced: &RenderedPage,
    request: &ListRequest,
    caller: &Caller,
    headers: &HeaderMap,
    cache_status: HeaderValue,
    age: Option<u64>,
) -> Response {
    let not_modified = produced
        .etag
        .as_ref()
        .is_some_and(|etag| matches_etag(headers, etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        // The page's bytes are shared; the next link is this request's (its own parameter
        // order and base URL) around the page's marker, spliced without a copy.
        let body = match &produced.next_marker {
            None => Chunks::new([
                produced.head.clone(),
                Bytes::new(),
                Bytes::new(),
                Bytes::new(),
                produced.tail.clone(),
            ]),
            Some(marker) => Chunks::new([
                produced.head.clone(),
                request.target.next_href_head.clone(),
                marker.clone(),
                Bytes::from_static(b"\""),
                produced.tail.clone(),
            ]),
        };
        let mut r = axum::body::Body::new(body).into_response();
        // Room for every header of the answer at once (it carries about ten).
        *r.headers_mut() = HeaderMap::with_capacity(16);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(missing) = &produced.missing_regions {
            r.headers_mut()
                .insert(super::MISSING_REGIONS, missing.clone());
        }
        r
    };
    let h = response.headers_mut();
    caller.response_headers(h);
    if let Some(etag) = &produced.etag {
        h.insert(header::ETAG, etag.clone());
    }
    h.insert(super::CACHE_STATUS, cache_status);
    if let Some(age) = age {
        h.insert(header::AGE, age_header(age));
    }
    response
}

/// `If-None-Match` against a weak validator (weak comparison, RFC 9110 §13.1.2).
fn matches_etag(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or("").trim_start_matches("W/");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
        })
}

/// A header value written on the stack and copied once (a `format!` and a `HeaderValue` from
/// its `String` cost two allocations on every hit).
fn header_of(text: std::fmt::Arguments<'_>) -> HeaderValue {
    use std::io::Write;
    let mut buffer = [0u8; 96];
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    match cursor.write_fmt(text) {
        Ok(()) => {
            let written = cursor.position() as usize;
            HeaderValue::from_bytes(&buffer[..written]).expect("ascii")
        }
        Err(_) => HeaderValue::try_from(text.to_string()).expect("ascii"),
    }
}

/// `Age: N`: made once for the first ten minutes' values and shared (a hit's answer is most
/// often younger than that), written for the others.
fn age_header(secs: u64) -> HeaderValue {
    const KEPT: u64 = 600;
    static MADE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    if secs >= KEPT {
        return HeaderValue::from(secs);
    }
    let made = MADE.get_or_init(|| {
        let shared = |n: u64| Bytes::from_owner(n.to_string());
        let value = |n| HeaderValue::from_maybe_shared(shared(n)).expect("digits");
        (0..KEPT).map(value).collect()
    });
    made[secs as usize].clone()
}
