//! One region's client: its reqwest client (pooled connections), its guard, and the one
//! guarded call every request to the region makes (admitted, bounded by one deadline, read
//! within `max_body_bytes`, retried within the budget, judged). The Cinder endpoints it calls
//! are in `endpoints.rs`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;
use tracing::Instrument;

use super::guard::retry_after::retry_after_of;
use super::guard::{later, Guard, Judged};
use super::metrics::UpstreamMetrics;
use super::RegionError;
use crate::cinder::microversion::Version;
use crate::config::RegionConfig;

/// What every upstream call carries for the caller.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub token: HeaderValue,
    pub version: Version,
    pub(crate) request_id: HeaderValue,
    pub traceparent: Option<HeaderValue>,
    /// The proxy refreshes a stale page nobody waits for: its calls wait in the proxy's own
    /// flow at a contended region (README, "Fair sharing"), not in the project's.
    pub(crate) background: bool,
}

/// Whom a region call is for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Whom<'a> {
    /// The project's scope, or a project-less caller's token digest: whom a 429 holds back
    /// with `retry_after_scope = "project"`. `None` for the proxy's own calls (probes).
    pub tenant: Option<&'a str>,
    /// Whose turn the call waits for at a contended limiter: the tenant's, or `None`, the
    /// proxy's own flow (probes, background refreshes).
    pub flow: Option<&'a str>,
}

impl<'a> Whom<'a> {
    /// The proxy's own call (a version document, a probe).
    pub(crate) const PROXY: Whom<'static> = Whom {
        tenant: None,
        flow: None,
    };

    /// A call for `tenant` in `ctx`: in its flow unless it is the proxy's background work.
    pub(crate) fn of(tenant: &'a str, ctx: &CallContext) -> Whom<'a> {
        Whom {
            tenant: Some(tenant),
            flow: (!ctx.background).then_some(tenant),
        }
    }

    /// A client's own call (a pass-through: never background).
    pub(crate) fn client(tenant: Option<&'a str>) -> Whom<'a> {
        Whom {
            tenant,
            flow: tenant,
        }
    }
}

/// One regional Cinder, as every call to it sees it.
pub struct RegionClient {
    pub name: String,
    /// Endpoint root without a trailing slash, e.g. `http://127.0.0.1:9001`.
    pub base: String,
    pub(super) http: reqwest::Client,
    pub guard: Arc<Guard>,
    max_body: u64,
    /// `upstream.timeout`: the whole budget of one call, retries included.
    pub(super) timeout: Duration,
    pub(super) metrics: UpstreamMetrics,
    /// Project listings it answered 404 in a row (see [`RegionClient::listed`]).
    listing_404s: AtomicU32,
}

/// Project listings answered 404 in a row before a region is called misconfigured.
const MISCONFIGURED_AFTER: u32 = 3;

impl RegionClient {
    /// The client of `region`. With `kept` (the same region, by name and URL, before
    /// Keystone's catalog changed), its reqwest client (its pooled connections) and its guard
    /// (breaker, budget and limits) go on.
    pub(super) fn new(
        region: &RegionConfig,
        metrics: UpstreamMetrics,
        fleet: Option<Arc<crate::fleet::Fleet>>,
        kept: Option<&RegionClient>,
    ) -> RegionClient {
        let p = region.settings();
        let base = region.url.trim_end_matches('/').to_string();
        let (http, guard) = match kept {
            Some(kept) => (kept.http.clone(), kept.guard.clone()),
            None => {
                let http = region
                    .tls
                    .apply(reqwest::Client::builder())
                    .timeout(p.timeout)
                    .connect_timeout(p.connect_timeout)
                    // Idle connections: never more than may be in flight, and closed well
                    // before the region's server would (Apache httpd's KeepAliveTimeout is
                    // 5 s), so a request never lands on a connection the server is closing.
                    .pool_max_idle_per_host(p.max_concurrency)
                    .pool_idle_timeout(p.pool_idle_timeout)
                    // Cinder builds links from the Host we send: keep the configured one.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("the TLS files were checked when the configuration was loaded");
                let guard = Guard::new(p.clone()).in_fleet(fleet);
                (http, Arc::new(guard))
            }
        };
        RegionClient {
            name: region.name.clone(),
            base,
            http,
            guard,
            max_body: p.max_body_bytes.as_u64(),
            timeout: p.timeout,
            metrics,
            listing_404s: AtomicU32::new(0),
        }
    }

    /// The reqwest client (pass-through builds its requests on it).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// One guarded call: admitted by the region's guard, sent, read (bounded), retried within
    /// the budget, and its outcome counted. Only `ok` statuses are success; anything else is
    /// the region's refusal or failure, with its body kept for the caller.
    ///
    /// `upstream.timeout` is the whole budget of the call, retries and waits for the guard
    /// included: a hung region costs a request one deadline, never one per attempt.
    /// `whom`: the tenant a 429 holds back, and the flow the call waits in.
    pub(super) async fn call<T>(
        &self,
        request: reqwest::RequestBuilder,
        client_traceparent: Option<&HeaderValue>,
        whom: Whom<'_>,
        ok: &[StatusCode],
        parse: impl Fn(Bytes) -> Result<T, String>,
    ) -> Result<T, RegionError> {
        let guard = &self.guard;
        let deadline = later(Instant::now(), self.timeout);
        let mut attempt = 0;
        loop {
            let request = request
                .try_clone()
                .expect("GET requests have no streaming body");
            let (result, judged) = match self.admitted(attempt == 0, deadline, whom).await {
                Err(refused) => (Err(refused), None),
                Ok(_permit) => {
                    let started = Instant::now();
                    let span = self.span(attempt);
                    let exchange = async {
                        let response = self.send(request, client_traceparent, &span).await?;
                        self.read(response, ok).await
                    };
                    let result = within(deadline, exchange.instrument(span.clone()))
                        .await
                        .and_then(|body| parse(body).map_err(RegionError::Body));
                    let judged = match &result {
                        Ok(_) => Judged::ok(),
                        Err(e) => Judged::of(e),
                    };
                    self.count_attempt(&span, started, &judged);
                    (result, Some((judged, started.elapsed())))
                }
            };
            let retry = matches!(&result, Err(e) if e.is_retryable())
                && attempt < guard.settings.retries
                && Instant::now() < deadline
                && guard.take_retry();
            if retry {
                attempt += 1;
                self.metrics.count_retry(&self.name);
                let pause = later(Instant::now(), guard.backoff(attempt));
                tokio::time::sleep_until(deadline.min(pause)).await;
                continue;
            }
            // One request, one verdict on the region (its last attempt's): retries of a
            // failing request are not more failures of the region, and a retry that is
            // served is a region that serves.
            if let Some((judged, took)) = judged {
                self.learn(judged, took, whom.tenant);
            }
            return result;
        }
    }

    /// Pass-through: `request` (any method, its body read already) through the region's guard
    /// as one attempt, never retried. The answer is read whole (bounded by `max_body_bytes`)
    /// within the deadline and goes back whatever its status (the client gets the region's
    /// own answer), judged for the region's health like any other. The region's concurrency
    /// slot is free once it is read: a client that then reads slowly, or not at all, holds
    /// only its own answer (until `server.write_timeout`), never the region.
    pub(crate) async fn forward(
        &self,
        request: reqwest::RequestBuilder,
        tenant: Option<&str>,
    ) -> Result<Forwarded, RegionError> {
        let whom = Whom::client(tenant);
        let deadline = later(Instant::now(), self.timeout);
        let _permit = self.admitted(true, deadline, whom).await?;
        let started = Instant::now();
        let span = self.span(0);
        let exchange = async {
            let response = self.send(request, None, &span).await?;
            let (status, headers) = (response.status(), response.headers().clone());
            let retry_after = retry_after_of(&response);
            let body = self.read_bounded(response).await?;
            Ok((Forwarded { status, headers, body }, retry_after))
        };
        let read = within(deadline, exchange.instrument(span.clone())).await;
        let judged = match &read {
            Ok((answer, retry_after)) => Judged::status(answer.status, *retry_after),
            Err(e) => Judged::of(e),
        };
        self.judge(&span, started, judged, whom.tenant);
        read.map(|(answer, _)| answer)
    }

    /// The CLIENT span of one attempt.
    fn span(&self, attempt: u32) -> tracing::Span {
        let name = &self.name;
        tracing::info_span!(
            "region call",
            otel.kind = "client",
            otel.name = %format!("GET {name}"),
            region = %name,
            attempt = attempt + 1,
            http.response.status_code = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    }

    /// Send, with the attempt's trace context upstream as `traceparent` (with tracing export
    /// off, the client's own, passed on as it came); the answer's head.
    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        client_traceparent: Option<&HeaderValue>,
        span: &tracing::Span,
    ) -> Result<reqwest::Response, RegionError> {
        let trace = crate::telemetry::trace_headers(span);
        match (trace.get("traceparent"), client_traceparent) {
            (Some(ours), _) => request = request.header("traceparent", ours.as_str()),
            (None, Some(theirs)) => request = request.header("traceparent", theirs.clone()),
            (None, None) => {}
        }
        request.send().await.map_err(RegionError::from_reqwest)
    }

    /// Read an answer (bounded by `upstream.max_body_bytes`): its body when its status is
    /// `ok`, else the region's refusal with its body (and a 429's `Retry-After`).
    async fn read(
        &self,
        response: reqwest::Response,
        ok: &[StatusCode],
    ) -> Result<Bytes, RegionError> {
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .cloned();
        let retry_after = retry_after_of(&response);
        let www_authenticate = (status == StatusCode::UNAUTHORIZED)
            .then(|| response.headers().get(reqwest::header::WWW_AUTHENTICATE).cloned())
            .flatten()
            .map(Box::new);
        let body = self.read_bounded(response).await?;
        if !ok.contains(&status) {
            return Err(RegionError::Status {
                status,
                content_type,
                body,
                retry_after,
                www_authenticate,
            });
        }
        Ok(body)
    }

    /// An answer's body, at most `upstream.max_body_bytes` of it.
    async fn read_bounded(&self, mut response: reqwest::Response) -> Result<Bytes, RegionError> {
        let max = self.max_body;
        let too_large = || {
            RegionError::Body(format!(
                "answer larger than upstream.max_body_bytes ({max} bytes)"
            ))
        };
        if response.content_length().is_some_and(|len| len > max) {
            return Err(too_large());
        }
        // Sized by the announced length (checked against the bound above): no regrowth and
        // no slack kept with a cached region page.
        let announced = response.content_length().unwrap_or(0);
        let mut body = bytes::BytesMut::with_capacity(announced as usize);
        while let Some(chunk) = response.chunk().await.map_err(RegionError::from_reqwest)? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// What the region answered to a listing in a project's scope without a marker. Cinder
    /// answers such a listing 200, or 4xx for the request (400, 401, 403) — never 404, unless
    /// the configured URL is not its endpoint (a path prefix too many, or too few). After a
    /// few in a row the region is misconfigured: logged once (WARN), shown in
    /// `vbs_upstream_misconfigured` and in `/readyz`, until it answers a listing again.
    pub fn listed(&self, status: StatusCode) {
        let count = &self.listing_404s;
        if status != StatusCode::NOT_FOUND {
            count.store(0, Ordering::Relaxed);
            return;
        }
        if count.fetch_add(1, Ordering::Relaxed) + 1 == MISCONFIGURED_AFTER {
            tracing::warn!(
                region = %self.name,
                url = %self.base,
                "the region answers 404 to project listings: its url is probably not the Cinder \
                 endpoint (give the root, e.g. https://cinder.example:8776, or the catalog's \
                 .../v3/%(project_id)s)"
            );
        }
    }

    /// Does the region look misconfigured (see [`RegionClient::listed`])?
    pub fn misconfigured(&self) -> bool {
        self.listing_404s.load(Ordering::Relaxed) >= MISCONFIGURED_AFTER
    }
}

/// A region's answer to a forwarded request, read whole.
#[derive(Debug)]
pub struct Forwarded {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// `fut`, or a timeout at `deadline`.
async fn within<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = Result<T, RegionError>>,
) -> Result<T, RegionError> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .unwrap_or(Err(RegionError::Timeout))
}

