//! The outermost layer: every request gets its request id, its SERVER span (a child of the
//! client's `traceparent`), one log event and the request metrics, labelled by the route's
//! template (`super::route_template`). A tower layer around the router, not a middleware
//! inside it: nothing is boxed or cloned per request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::Instrument;

use super::{CACHE_STATUS, COMPUTE_REQUEST_ID, REQUEST_ID};
use crate::state::metrics::HttpMetrics;

/// The request's `X-Openstack-Request-Id`: the client's when it sent a sane one.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub HeaderValue);

impl RequestId {
    /// The request's id, as the observation layer gave it (a request that did not pass it,
    /// in a unit test say, gets the nil one).
    pub(crate) fn of(parts: &axum::http::request::Parts) -> HeaderValue {
        parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_else(|| HeaderValue::from_static("req-00000000-0000-0000-0000-000000000000"))
    }
}

/// Upstream calls a response cost (set by the listing handler on a miss).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamCalls(pub u32);

/// `req-` and a UUID in its hyphenated form, as oslo.context makes them: nothing else a client
/// sends reaches the answer's headers or the log.
fn is_request_id(value: &[u8]) -> bool {
    value.len() == 40
        && value.starts_with(b"req-")
        && value[4..].iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn request_id(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| is_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(|| {
            // The thread's RNG, not a getrandom syscall per request (uuid's new_v4); written
            // in place, not formatted; its bytes owned by one shared allocation, so the
            // copies the answer's headers and the region calls take cost none.
            let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
            let mut text = *b"req-00000000-0000-0000-0000-000000000000";
            id.hyphenated().encode_lower(&mut text[4..]);
            HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text)).expect("ascii")
        })
}

#[derive(Clone)]
pub(crate) struct ObserveLayer {
    metrics: Arc<HttpMetrics>,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<HttpMetrics>) -> ObserveLayer {
        ObserveLayer { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let route = super::route_template(request.uri().path());
        let method = request.method().clone();
        let id = request_id(&request);
        request.extensions_mut().insert(RequestId(id.clone()));
        let span = tracing::info_span!(
            "request",
            otel.kind = "server",
            otel.name = tracing::field::Empty,
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
            request_id = %id.to_str().unwrap_or(""),
        );
        // The span's name in traces ("GET /v3/{project_id}/backups/detail"); only then: in a
        // log line it repeated the method and route beside them, and it cost an allocation
        // per request.
        if crate::telemetry::traces_on() {
            span.record("otel.name", format!("{method} {route}"));
        }
        crate::telemetry::adopt_parent(&span, request.headers());
        self.metrics.in_flight.inc();
        Observed {
            inner: self.inner.call(request).instrument(span.clone()),
            watch: Some(Watch {
                answered: false,
                started,
                route,
                id,
                span,
                metrics: self.metrics.clone(),
            }),
        }
    }
}

/// What the answer is recorded with once it is ready.
struct Watch {
    /// The answer was recorded; else, on drop, the client went away first.
    answered: bool,
    started: Instant,
    route: &'static str,
    id: HeaderValue,
    span: tracing::Span,
    metrics: Arc<HttpMetrics>,
}

pin_project_lite::pin_project! {
    pub struct Observed<F> {
        #[pin]
        inner: Instrumented<F>,
        watch: Option<Watch>,
    }
}

impl<F> Future for Observed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        let mut watch = this.watch.take().expect("polled after it was ready");
        watch.answered(&mut response);
        Poll::Ready(Ok(response))
    }
}

/// What nginx logs for a request whose client closed the connection before the answer.
const CLIENT_CLOSED: u16 = 499;

impl Drop for Watch {
    /// A request whose client went away before its answer still leaves the in-flight count,
    /// and is counted and logged as nginx does (499).
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        if !self.answered {
            let took = self.started.elapsed();
            self.metrics
                .observe(self.route, CLIENT_CLOSED, took);
            self.span.record("http.response.status_code", CLIENT_CLOSED);
            tracing::info!(
                parent: &self.span,
                status = CLIENT_CLOSED,
                duration_ms = millis(took),
                "request abandoned: the client closed the connection before the answer"
            );
        }
    }
}

impl Watch {
    fn answered(&mut self, response: &mut Response) {
        self.answered = true;
        let status = response.status().as_u16();
        let took = self.started.elapsed();
        self.metrics.observe(self.route, status, took);
        self.span.record("http.response.status_code", status);
        let headers = response.headers_mut();
        if !headers.contains_key(REQUEST_ID) {
            headers.insert(REQUEST_ID, self.id.clone());
            headers.insert(COMPUTE_REQUEST_ID, self.id.clone());
        }
        // The fields are read only when the event is logged (log.level info or finer).
        let upstream_calls = response
            .extensions()
            .get::<UpstreamCalls>()
            .map_or(0, |c| c.0);
        // Method and route are the span's (every line carries them once).
        tracing::info!(
            parent: &self.span,
            status,
            duration_ms = millis(took),
            cache = %response
                .headers()
                .get(CACHE_STATUS)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            upstream_calls,
            "request"
        );
    }
}

/// Milliseconds to the microsecond (`1.706`, not `1.7063300000000001`).
fn millis(took: std::time::Duration) -> f64 {
    (took.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::is_request_id;

    #[test]
    fn request_ids_are_req_and_a_uuid() {
        assert!(is_request_id(b"req-0b1f5c4e-6d2a-4f7b-9a3c-1e2d3f4a5b6c"));
        assert!(is_request_id(b"req-0B1F5C4E-6D2A-4F7B-9A3C-1E2D3F4A5B6C"));
        for bad in [
            &b"req-"[..],
            b"req-0b1f5c4e-6d2a-4f7b-9a3c-1e2d3f4a5b6",
            b"req-0b1f5c4e 6d2a-4f7b-9a3c-1e2d3f4a5b6c",
            b"req-{b1f5c4e-6d2a-4f7b-9a3c-1e2d3f4a5b6c",
            b"req-x level=error msg=forged",
            b"abc-0b1f5c4e-6d2a-4f7b-9a3c-1e2d3f4a5b6c",
        ] {
            assert!(!is_request_id(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
