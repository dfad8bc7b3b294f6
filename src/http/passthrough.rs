//! Any other `/v3/` request: forwarded unchanged to the primary region, its answer read whole
//! (bounded by `upstream.max_body_bytes`) and sent back, so the region's slot is free before a
//! slow client starts reading. The request body is read first (bounded): Cinder's eventlet
//! server is happiest with a `Content-Length`, and its request bodies are small JSON
//! documents.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use std::sync::Arc;

use crate::cache::{Caches, ItemKey, Owner};
use crate::identity::TokenInfo;
use crate::cinder::microversion::{negotiate, Version};
use crate::config::Config;
use crate::regions::{CallContext, RegionError, Regions};
use crate::routing::{self, Destination};
use axum::http::Method;

/// Hop-by-hop headers (RFC 9110 §7.6.1) and what the proxy must not pass on (a region's
/// `Server` names its software and version to every tenant).
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "forwarded"
            | "server"
    ) && !name.as_str().starts_with("x-forwarded-")
}

fn copy_headers(from: &HeaderMap) -> HeaderMap {
    from.iter()
        .filter(|(n, _)| forwardable(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// Whose listings a successful write in `scope` makes stale: the writer's project's (from the
/// URL, or from Keystone's word on the token), and the writer's own project-less listings when
/// only its token knows their project. Nobody else's: other tenants' entries are not looked
/// at (a write used to scan both layers, and drop every tenant's project-less listings).
fn written(config: &Config, caches: &Caches, parts: &Parts, scope: &str) -> Vec<Owner> {
    let token_info = parts.extensions.get::<Arc<TokenInfo>>().map(Arc::as_ref);
    let token = parts.headers.get(super::AUTH_TOKEN).map_or(&b""[..], |t| t.as_bytes());
    let identity = super::list::cache_identity(caches, config, token, token_info);
    let project = token_info.and_then(|t| t.project_id.as_deref());
    let mut owners = vec![Owner::of(scope, project, identity)];
    if project.is_none() {
        owners.push(Owner::Caller(identity));
    }
    owners.dedup();
    owners
}

/// The header that sends a request to one region by name (`X-VBS-Region: r2`), for scripts
/// and admin tools; not honoured on the aggregated listings.
pub const PIN: &str = "x-vbs-region";

/// Which region the request goes to: the one it is pinned to, the one holding the item its
/// path names (with that item's id), the one holding a creation's sources, or the primary
/// (`crate::routing`).
async fn destination(
    config: &Config,
    regions: &Regions,
    caches: &Caches,
    parts: &Parts,
    body: &[u8],
) -> Result<(usize, Option<ItemKey>), ApiError> {
    if let Some(pin) = parts.headers.get(PIN) {
        let name = pin.to_str().unwrap_or_default();
        let pinned = regions.iter().position(|r| r.name == name);
        return pinned.map(|i| (i, None)).ok_or_else(|| {
            let names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
            ApiError::bad_request(format!(
                "Unknown region in {PIN}; the regions are: {}.",
                names.join(", ")
            ))
        });
    }
    let segments = super::path::segments(parts.uri.path())?;
    let primary = config.primary_index();
    let destination = routing::destination(&segments, parts.method == Method::POST);
    if let (Destination::Primary, _) | (_, 1) = (&destination, regions.len()) {
        let item = match destination {
            Destination::Member { resource, id, .. } => Some(ItemKey::of(resource.collection, &id)),
            _ => None,
        };
        return Ok((if regions.len() == 1 { 0 } else { primary }, item));
    }
    let ctx = lookup_context(regions, parts)?;
    match destination {
        Destination::Member {
            resource,
            scope,
            id,
            action,
        } => {
            let owner = routing::owner(regions, caches, resource, &scope, &id, &ctx).await?;
            if let Some(action) = action {
                let named = (owner, resource.member, id.as_str());
                routing::check_action(regions, caches, action, &scope, body, named, &ctx).await?;
            }
            Ok((owner, Some(ItemKey::of(resource.collection, &id))))
        }
        Destination::Create { creation, scope } => {
            let placed = routing::place(regions, caches, creation, &scope, body, &ctx).await?;
            Ok((placed.unwrap_or(primary), None))
        }
        Destination::Primary => Ok((primary, None)),
    }
}

/// The caller's context for looking items up in the regions: its token (401 without one),
/// its microversion when the regions serve it (the project-less routes need 3.67), else the
/// oldest.
fn lookup_context(regions: &Regions, parts: &Parts) -> Result<CallContext, ApiError> {
    let token = parts
        .headers
        .get(super::AUTH_TOKEN)
        .filter(|t| !t.is_empty())
        .cloned()
        .ok_or_else(|| {
            ApiError::Unauthorized("The request you have made requires authentication.".into())
        })?;
    let asked = parts.headers.get(super::API_VERSION).map(HeaderValue::as_bytes);
    let version = negotiate(asked, regions.versions.max()).unwrap_or(Version::new(3, 0));
    Ok(CallContext {
        token,
        version,
        request_id: super::observe::RequestId::of(parts),
        traceparent: parts.headers.get("traceparent").cloned(),
        background: false,
    })
}

pub async fn handle(
    State(config): State<Arc<Config>>,
    State(regions): State<Arc<Regions>>,
    State(caches): State<Arc<Caches>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if !config.server.passthrough {
        return ApiError::NotFound("The resource could not be found.".into()).into_response();
    }
    // Only `/v3/{project}/...`, rebuilt from encoded segments: never `/`, `/healthcheck` or a
    // path the region would resolve differently.
    let path = match super::path::upstream_path(parts.uri.path()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // A malformed version header is the caller's mistake, and Cinder answers it 500 (which
    // would count against the region for everybody): refused here as the listings refuse it.
    // A well-formed one goes on as it came (the region may serve more than every region does).
    let version = parts.headers.get(super::API_VERSION).map(HeaderValue::as_bytes);
    if let Err(e) = negotiate(version, Version::new(3, u32::MAX)) {
        return ApiError::from(e).into_response();
    }
    let limit = config.server.max_request_body.as_u64() as usize;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::OverLimit {
                status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "Request body larger than server.max_request_body ({limit} bytes)."
                ),
            }
            .into_response()
        }
    };
    // Whom a 429 of the region holds back (`upstream.retry_after_scope`), and whose
    // `[tenants]` limit the call counts against (before any region is asked, lookups too).
    let scope = super::scope(parts.uri.path()).ok();
    let token = parts.headers.get(super::AUTH_TOKEN);
    let tenant = scope
        .as_deref()
        .zip(token)
        .map(|(scope, token)| crate::regions::tenant(scope, token));
    let _under_way = match tenant.as_deref() {
        Some(tenant) => match regions.tenant_admits(tenant).await {
            Ok(under_way) => Some(under_way),
            Err(refused) => return ApiError::from(refused).into_response(),
        },
        None => None,
    };
    let (index, item) = match destination(&config, &regions, &caches, &parts, &body).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let region = regions.region(index);
    let url = match parts.uri.query() {
        Some(q) => format!("{}{path}?{q}", region.base),
        None => format!("{}{path}", region.base),
    };
    let request = region
        .http()
        .request(parts.method.clone(), &url)
        .headers(copy_headers(&parts.headers))
        .body(body);
    let name = &region.name;
    match region.forward(request, tenant.as_deref()).await {
        Ok(upstream) => {
            // A successful write changes what the project's listings would show.
            if parts.method != axum::http::Method::GET
                && parts.method != axum::http::Method::HEAD
                && upstream.status.is_success()
            {
                if let Some(scope) = &scope {
                    let owners = written(&config, &caches, &parts, scope);
                    let purged = caches.purge_owners(&owners);
                    if let Some(shared) = &caches.shared {
                        shared.purge_owners(&owners).await;
                    }
                    tracing::debug!(scope, purged, "write passed through: listings dropped");
                }
                // A deleted item's owner is forgotten (an id is not reused, but the map's
                // room is better spent on items that exist).
                if let (&Method::DELETE, Some(item)) = (&parts.method, &item) {
                    routing::forget_owner(&caches, item).await;
                }
            }
            let mut response = Response::new(Body::from(upstream.body));
            *response.status_mut() = upstream.status;
            *response.headers_mut() = copy_headers(&upstream.headers);
            super::error::set_retry_after(upstream.status, response.headers_mut());
            response
        }
        Err(e) => {
            tracing::warn!(region = %name, call = "passthrough", kind = e.kind(), error = %e, "region failed");
            let status = match e {
                RegionError::Refused(_) | RegionError::CircuitOpen { .. } => {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
                RegionError::Timeout => axum::http::StatusCode::GATEWAY_TIMEOUT,
                _ => axum::http::StatusCode::BAD_GATEWAY,
            };
            let safe = matches!(parts.method, Method::GET | Method::HEAD);
            let message = match (&e, safe) {
                // A call that changes state is never retried: whether it was carried out is
                // the region's to say (the caller looks at the resource before trying again).
                (RegionError::Timeout, false) => format!(
                    "Region {name} did not answer in time: the request may have been carried out."
                ),
                _ => format!("Region {name} could not be asked: {e}."),
            };
            ApiError::Regions { status, message }.into_response()
        }
    }
}
