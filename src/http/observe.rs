//! One place that watches every request: its request id, its SERVER span (a child of the
//! client's `traceparent`), one log event, and the request metrics.

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::{CACHE_STATUS, COMPUTE_REQUEST_ID, REQUEST_ID};
use crate::state::AppState;

/// The request's `X-Openstack-Request-Id`: the client's when it sent a sane one.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Upstream calls a response cost (set by the listing handler on a miss).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamCalls(pub u32);

fn request_id(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| v.len() <= 64 && v.to_str().is_ok_and(|s| s.starts_with("req-")))
        .cloned()
        .unwrap_or_else(|| {
            // The thread's RNG, not a getrandom syscall per request (uuid's new_v4); written
            // in place, not formatted.
            let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
            let mut text = *b"req-00000000-0000-0000-0000-000000000000";
            id.hyphenated().encode_lower(&mut text[4..]);
            HeaderValue::from_bytes(&text).expect("ascii")
        })
}

pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = tokio::time::Instant::now();
    // The router's template (a shared string: cloning it does not copy it).
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let id = request_id(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        otel.name = %format!("{method} {route}"),
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %id.to_str().unwrap_or(""),
    );
    crate::telemetry::adopt_parent(&span, request.headers());
    let metrics = &state.metrics.http;
    metrics.in_flight.inc();
    let mut response = next.run(request).instrument(span.clone()).await;
    metrics.in_flight.dec();
    let status = response.status().as_u16();
    let took = started.elapsed();
    metrics.observe(route, status, took);
    span.record("http.response.status_code", status);
    let headers = response.headers_mut();
    if !headers.contains_key(REQUEST_ID) {
        headers.insert(REQUEST_ID, id.clone());
        headers.insert(COMPUTE_REQUEST_ID, id);
    }
    // The fields are read only when the event is logged (log.level info or finer).
    let upstream_calls = response
        .extensions()
        .get::<UpstreamCalls>()
        .map_or(0, |c| c.0);
    tracing::info!(
        parent: &span,
        method = %method,
        route = %route,
        status,
        duration_ms = took.as_secs_f64() * 1000.0,
        cache = %response
            .headers()
            .get(CACHE_STATUS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        upstream_calls,
        "request"
    );
    response
}
