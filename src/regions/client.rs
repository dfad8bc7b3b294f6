//! The regional Cinder endpoints: a reqwest client per region behind its guard (breaker,
//! retry budget, rate and concurrency limits, `Retry-After`), typed answers, failures named
//! by kind in logs and metrics.

use std::sync::Arc;
use std::time::Duration;

use super::protection::{self, Health, Protection, Refusal};
use crate::fleet::Admission;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

use crate::config::Config;
use crate::cinder::item::{self, Item, ListPage};
use crate::cinder::path::encode_segment;
use crate::cinder::resource::Resource;
use crate::cinder::microversion::Version;

#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    /// Endpoint root without a trailing slash, e.g. `http://127.0.0.1:9001`.
    pub base: String,
}

/// A 429's `Retry-After`, read (and clamped) now.
fn retry_after_of(response: &reqwest::Response) -> Option<Duration> {
    if response.status() != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    protection::parse_retry_after(value.to_str().ok()?, std::time::SystemTime::now())
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

/// What one attempt came to, as the metrics, the span and the guard record it.
struct Judged {
    /// HTTP status; 0 when there was no answer.
    status: u16,
    outcome: &'static str,
    health: Health,
    retry_after: Option<Duration>,
    /// What went wrong, for the breaker to tell when it refuses.
    failure: Option<String>,
}

impl Judged {
    fn ok() -> Judged {
        Judged {
            status: 200,
            outcome: "ok",
            health: Health::Healthy,
            retry_after: None,
            failure: None,
        }
    }

    fn of(e: &RegionError) -> Judged {
        Judged {
            status: e.status().map_or(0, |s| s.as_u16()),
            outcome: e.kind(),
            health: e.health(),
            retry_after: match e {
                RegionError::Status { retry_after, .. } => *retry_after,
                _ => None,
            },
            failure: Some(e.to_string()),
        }
    }

    /// A pass-through answer, judged by its status alone (its body is the client's).
    fn status(status: StatusCode, retry_after: Option<Duration>) -> Judged {
        if status.is_success() || status.is_redirection() || status.is_informational() {
            return Judged {
                status: status.as_u16(),
                ..Judged::ok()
            };
        }
        Judged::of(&RegionError::Status {
            status,
            content_type: None,
            body: Bytes::new(),
            retry_after,
            www_authenticate: None,
        })
    }
}

/// What every upstream call carries for the caller.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub token: HeaderValue,
    pub version: Version,
    pub request_id: HeaderValue,
    pub traceparent: Option<HeaderValue>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegionError {
    /// The region answered, but not 200.
    #[error("answered HTTP {status}")]
    Status {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        /// A 429's `Retry-After`, clamped.
        retry_after: Option<Duration>,
        /// A 401's `WWW-Authenticate` (where to authenticate), passed on to the client.
        /// Boxed: rare, and the error travels in every region call's `Result`.
        www_authenticate: Option<Box<HeaderValue>>,
    },
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    /// The TLS handshake failed: a certificate not trusted or not accepted, a peer that does
    /// not speak TLS. Not retried: the next attempt would fail the same way.
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("invalid answer: {0}")]
    Body(String),
    /// Every other region had answered `upstream.partial_grace` ago; the page went on
    /// without this one (its call was not cancelled).
    #[error("too slow: the other regions answered, and upstream.partial_grace passed")]
    Straggler,
    /// The proxy's own call for this page never finished (a bug, logged where it happened).
    #[error("the call was lost")]
    Lost,
    /// Not sent: the proxy's own protection of the region said no.
    #[error("not asked: {}", refusal_text(*.0))]
    Refused(Refusal),
    /// Not sent: the region's breaker is open, since the failure it names.
    #[error("not asked: circuit breaker open after \"{cause}\"; next try in {retry_in_secs} s")]
    CircuitOpen { cause: Arc<str>, retry_in_secs: u64 },
}

fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::CircuitOpen => "circuit breaker open",
        Refusal::BackingOff => "backing off after 429 Retry-After",
        Refusal::RateLimited => "rate limit reached",
        Refusal::Overloaded => "too many requests in flight",
    }
}

impl RegionError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RegionError::Status { status, .. } if status.is_client_error() => "status_4xx",
            RegionError::Status { .. } => "status_5xx",
            RegionError::Timeout => "timeout",
            RegionError::Connect(_) => "connect",
            RegionError::Tls(_) => "tls",
            RegionError::Transport(_) => "transport",
            RegionError::Body(_) => "body",
            RegionError::Lost => "lost",
            RegionError::Straggler => "straggler",
            RegionError::Refused(Refusal::CircuitOpen) | RegionError::CircuitOpen { .. } => {
                "circuit_open"
            }
            RegionError::Refused(Refusal::BackingOff) => "backing_off",
            RegionError::Refused(Refusal::RateLimited) => "rate_limited",
            RegionError::Refused(Refusal::Overloaded) => "overloaded",
        }
    }

    /// What this outcome says about the region's health (client input never changes it: README,
    /// Security). Only what a region does whatever it is asked counts against it: no answer
    /// (transport, timeout), 5xx, 429. A 4xx, or an answer of the wrong shape, depends on the
    /// request (a client's id can route to another Cinder view: `GET .../backups/detail` is a
    /// listing, not a show), so it is that request's problem and says nothing either way.
    fn health(&self) -> Health {
        match self {
            RegionError::Status { status, .. }
                if status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS =>
            {
                Health::Faulty
            }
            RegionError::Timeout
            | RegionError::Connect(_)
            | RegionError::Tls(_)
            | RegionError::Transport(_) => Health::Faulty,
            RegionError::Status { .. }
            | RegionError::Body(_)
            | RegionError::Lost
            | RegionError::Straggler
            | RegionError::Refused(_)
            | RegionError::CircuitOpen { .. } => Health::Unknown,
        }
    }

    /// Worth trying again (an idempotent GET): timeouts, lost connections, 5xx.
    fn is_retryable(&self) -> bool {
        match self {
            RegionError::Status { status, .. } => status.is_server_error(),
            RegionError::Timeout | RegionError::Connect(_) | RegionError::Transport(_) => true,
            RegionError::Body(_)
            | RegionError::Tls(_)
            | RegionError::Refused(_)
            | RegionError::CircuitOpen { .. }
            | RegionError::Lost
            | RegionError::Straggler => false,
        }
    }

    /// The region answered, and what it said means "no such backup here": a 4xx other than
    /// an authorization refusal or 429, or an answer that is not a backup at all (the id
    /// routed to another view).
    pub fn is_not_here(&self) -> bool {
        match self {
            RegionError::Status { status, .. } => {
                status.is_client_error()
                    && !matches!(
                        *status,
                        StatusCode::UNAUTHORIZED
                            | StatusCode::FORBIDDEN
                            | StatusCode::TOO_MANY_REQUESTS
                    )
            }
            RegionError::Body(_) => true,
            _ => false,
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RegionError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Without the URL: errors reach clients, which must not learn regions' internal URLs.
    fn from_reqwest(e: reqwest::Error) -> RegionError {
        let e = e.without_url();
        // The causes say what happened ("tcp connect error: Connection refused"); the
        // top-level text alone does not.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        if let Some(tls) = crate::tls::tls_failure(&e) {
            RegionError::Tls(tls.to_string())
        } else if e.is_timeout() {
            RegionError::Timeout
        } else if e.is_connect() {
            RegionError::Connect(text)
        } else {
            RegionError::Transport(text)
        }
    }
}

pub struct Upstream {
    pub regions: Vec<Region>,
    clients: Vec<reqwest::Client>,
    pub guards: Vec<std::sync::Arc<Protection>>,
    max_body: Vec<u64>,
    /// `upstream.timeout` per region: the whole budget of one call, retries included.
    timeouts: Vec<Duration>,
    pub metrics: super::metrics::UpstreamMetrics,
    /// Fleet mode: the regions' rate limits, `Retry-After` and open breakers are shared.
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl Upstream {
    /// The regions of `config`. With `previous` (the regions before Keystone's catalog
    /// changed), a region of the same name and URL keeps its client (its pooled
    /// connections) and its guard (its breaker, budget and limits), and the call metrics go on.
    pub fn new(
        config: &Config,
        fleet: Option<Arc<crate::fleet::Fleet>>,
        previous: Option<&Upstream>,
    ) -> Upstream {
        let mut up = Upstream {
            fleet,
            regions: Vec::new(),
            clients: Vec::new(),
            guards: Vec::new(),
            max_body: Vec::new(),
            timeouts: Vec::new(),
            metrics: previous.map(|p| p.metrics.clone()).unwrap_or_default(),
        };
        for r in &config.regions {
            let p = r.settings();
            let base = r.url.trim_end_matches('/').to_string();
            let kept = previous.and_then(|previous| {
                let i = previous
                    .regions
                    .iter()
                    .position(|old| old.name == r.name && old.base == base)?;
                Some((previous.clients[i].clone(), previous.guards[i].clone()))
            });
            let (client, guard) = kept.unwrap_or_else(|| {
                let client = r
                .tls
                .apply(reqwest::Client::builder())
                .timeout(p.timeout)
                .connect_timeout(p.connect_timeout)
                // Idle connections: never more than may be in flight, and closed well before
                // the region's server would (Apache httpd's KeepAliveTimeout is 5 s), so a
                // request never lands on a connection the server is closing.
                .pool_max_idle_per_host(p.max_concurrency)
                .pool_idle_timeout(p.pool_idle_timeout)
                // Cinder builds links from the Host we send: keep the configured one.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("the TLS files were checked when the configuration was loaded");
                (client, Arc::new(Protection::new(p.clone())))
            });
            up.regions.push(Region {
                name: r.name.clone(),
                base,
            });
            up.clients.push(client);
            up.max_body.push(p.max_body_bytes.as_u64());
            up.timeouts.push(p.timeout);
            up.guards.push(guard);
        }
        up
    }

    /// The client of region `i` (pass-through uses the primary's).
    pub fn client(&self, region: usize) -> &reqwest::Client {
        &self.clients[region]
    }

    fn get(&self, region: usize, url: &str, ctx: &CallContext) -> reqwest::RequestBuilder {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-auth-token"), ctx.token.clone());
        headers.insert(
            HeaderName::from_static("openstack-api-version"),
            HeaderValue::try_from(format!("volume {}", ctx.version)).expect("ascii"),
        );
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-openstack-request-id"),
            ctx.request_id.clone(),
        );
        self.clients[region].get(url).headers(headers)
    }

    /// One guarded call: admitted by the region's guard, sent, read (bounded), retried within
    /// the budget, and its outcome counted. Only `ok` statuses are success; anything else is
    /// the region's refusal or failure, with its body kept for the caller.
    ///
    /// `upstream.timeout` is the whole budget of the call, retries and waits for the guard
    /// included: a hung region costs a request one deadline, never one per attempt.
    async fn call<T>(
        &self,
        region: usize,
        request: reqwest::RequestBuilder,
        client_traceparent: Option<&HeaderValue>,
        ok: &[StatusCode],
        parse: impl Fn(Bytes) -> Result<T, String>,
    ) -> Result<T, RegionError> {
        let guard = &self.guards[region];
        let deadline = protection::later(Instant::now(), self.timeouts[region]);
        let mut attempt = 0;
        loop {
            let request = request
                .try_clone()
                .expect("GET requests have no streaming body");
            let result = match self.admitted(region, attempt == 0, deadline).await {
                Err(refused) => Err(refused),
                Ok(_permit) => {
                    let started = Instant::now();
                    let span = self.span(region, attempt);
                    let exchange = async {
                        let response = self.send(request, client_traceparent, &span).await?;
                        self.read(region, response, ok).await
                    };
                    let result = within(deadline, exchange.instrument(span.clone()))
                        .await
                        .and_then(|body| parse(body).map_err(RegionError::Body));
                    match &result {
                        Ok(_) => self.judge(region, &span, started, Judged::ok()),
                        Err(e) => self.judge(region, &span, started, Judged::of(e)),
                    }
                    result
                }
            };
            match result {
                Err(e)
                    if e.is_retryable()
                        && attempt < guard.settings.retries
                        && Instant::now() < deadline
                        && guard.take_retry() =>
                {
                    attempt += 1;
                    self.metrics.count_retry(&self.regions[region].name);
                    let pause = protection::later(Instant::now(), guard.backoff(attempt));
                    tokio::time::sleep_until(deadline.min(pause)).await;
                }
                other => return other,
            }
        }
    }

    /// Pass-through: `request` (any method, its body read already) through the region's guard
    /// as one attempt, never retried. The answer's head goes back whatever its status (the
    /// client gets the region's own answer), judged for the region's health like any other;
    /// the concurrency permit comes with it, for the caller to hold until the body is out.
    pub async fn forward(
        &self,
        region: usize,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, OwnedSemaphorePermit), RegionError> {
        let deadline = protection::later(Instant::now(), self.timeouts[region]);
        let permit = self.admitted(region, true, deadline).await?;
        let started = Instant::now();
        let span = self.span(region, 0);
        let sent = within(
            deadline,
            self.send(request, None, &span).instrument(span.clone()),
        )
        .await;
        let judged = match &sent {
            Ok(r) => Judged::status(r.status(), retry_after_of(r)),
            Err(e) => Judged::of(e),
        };
        self.judge(region, &span, started, judged);
        Ok((sent?, permit))
    }

    /// The CLIENT span of one attempt.
    fn span(&self, region: usize, attempt: u32) -> tracing::Span {
        let name = &self.regions[region].name;
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

    /// Count an attempt, and let the guard learn from it (a 429's `Retry-After` included).
    fn judge(&self, region: usize, span: &tracing::Span, started: Instant, judged: Judged) {
        let guard = &self.guards[region];
        let name = &self.regions[region].name;
        span.record("http.response.status_code", judged.status);
        span.record("outcome", judged.outcome);
        self.metrics.observe_latency(name, started.elapsed());
        self.metrics.count(name, judged.outcome);
        let opened = guard.record(judged.health, Instant::now(), judged.failure.as_deref());
        let back_off = (judged.status == StatusCode::TOO_MANY_REQUESTS.as_u16())
            // Nothing goes to the region before the time it named (1 s if none).
            .then(|| judged.retry_after.unwrap_or(Duration::from_secs(1)));
        if let Some(wait) = back_off {
            guard.back_off_until(protection::later(Instant::now(), wait));
        }
        // Told to the fleet in the background: the answer does not wait for Redis.
        if let (Some(fleet), true) = (&self.fleet, back_off.is_some() || opened) {
            let (fleet, name) = (fleet.clone(), name.clone());
            let cooldown = guard.settings.breaker_cooldown;
            let cause = judged.failure.unwrap_or_default();
            tokio::spawn(async move {
                if let Some(wait) = back_off {
                    fleet.publish_back_off(&name, wait).await;
                }
                if opened {
                    fleet.publish_breaker_open(&name, &cause, cooldown).await;
                }
            });
        }
    }

    /// The fleet's word on a call to `region` (after this replica's own guard said yes):
    /// `Ok` to send; a wait for the fleet's rate limit is taken while it ends before
    /// `queue_until`. Redis unavailable: this replica's own limits stand alone.
    async fn fleet_admits(&self, region: usize, queue_until: Instant) -> Result<(), RegionError> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        let guard = &self.guards[region];
        let name = &self.regions[region].name;
        loop {
            match fleet.admit(name, guard.settings.rate_limit).await {
                None | Some(Admission::Go) => return Ok(()),
                Some(Admission::Wait(wait)) => {
                    let ready = protection::later(Instant::now(), wait);
                    if ready > queue_until {
                        return Err(RegionError::Refused(Refusal::RateLimited));
                    }
                    tokio::time::sleep_until(ready).await;
                }
                Some(Admission::BackingOff(wait)) => {
                    // Another replica's 429: this one honours it too, from now on.
                    guard.back_off_until(protection::later(Instant::now(), wait));
                    return Err(RegionError::Refused(Refusal::BackingOff));
                }
                Some(Admission::BreakerOpen { cause, retry_in }) => {
                    return Err(RegionError::CircuitOpen {
                        cause: Arc::from(format!("{cause} (seen by another replica)")),
                        retry_in_secs: retry_in.as_secs_f64().ceil() as u64,
                    });
                }
            }
        }
    }

    /// Through the guard: `Retry-After`, breaker, rate limit (waiting up to the queue
    /// timeout for a token), then a concurrency slot (same bound); never past `deadline`.
    /// A refusal is counted here: nothing is sent.
    async fn admitted(
        &self,
        region: usize,
        first: bool,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, RegionError> {
        let guard = &self.guards[region];
        let queue_until = deadline.min(protection::later(
            Instant::now(),
            guard.settings.queue_timeout,
        ));
        if guard.take_probe(Instant::now()) {
            self.spawn_probe(region);
        }
        let outcome = async {
            guard
                .admit(Instant::now(), first)
                .map_err(|refusal| self.refused(region, refusal))?;
            if let Err(wait) = guard.take_token(Instant::now()) {
                let ready = protection::later(Instant::now(), wait);
                if ready > queue_until {
                    return Err(RegionError::Refused(Refusal::RateLimited));
                }
                tokio::time::sleep_until(ready).await;
                guard
                    .take_token(Instant::now())
                    .map_err(|_| RegionError::Refused(Refusal::RateLimited))?;
            }
            self.fleet_admits(region, queue_until).await?;
            let permit = guard.permits.clone().acquire_owned();
            match tokio::time::timeout_at(queue_until, permit).await {
                Ok(Ok(permit)) => Ok(permit),
                _ => Err(RegionError::Refused(Refusal::Overloaded)),
            }
        }
        .await;
        if let Err(refused) = &outcome {
            self.metrics.count(&self.regions[region].name, refused.kind());
        }
        outcome
    }

    /// A refusal of this replica's guard, with what opened the breaker when it is that.
    fn refused(&self, region: usize, refusal: Refusal) -> RegionError {
        match refusal {
            Refusal::CircuitOpen => self.guards[region].open_since(Instant::now()).map_or(
                RegionError::Refused(Refusal::CircuitOpen),
                |(cause, retry_in)| RegionError::CircuitOpen {
                    cause,
                    retry_in_secs: retry_in.as_secs_f64().ceil() as u64,
                },
            ),
            other => RegionError::Refused(other),
        }
    }

    /// The half-open probe: the proxy's own request for the region's version document, in a
    /// task of its own, so that no client waits on a region known to be failing. Its outcome
    /// closes the breaker or opens it for another cool-down.
    fn spawn_probe(&self, region: usize) {
        let guard = self.guards[region].clone();
        let request = self.clients[region]
            .get(format!("{}/", self.regions[region].base))
            .header(reqwest::header::ACCEPT, "application/json");
        let name = self.regions[region].name.clone();
        let metrics = self.metrics.clone();
        let timeout = self.timeouts[region];
        tokio::spawn(async move {
            let started = Instant::now();
            let sent = tokio::time::timeout(timeout, request.send()).await;
            let judged = match sent {
                Err(_) => Judged::of(&RegionError::Timeout),
                Ok(Err(e)) => Judged::of(&RegionError::from_reqwest(e)),
                Ok(Ok(r)) => Judged::status(r.status(), retry_after_of(&r)),
            };
            metrics.observe_latency(&name, started.elapsed());
            metrics.count(&name, judged.outcome);
            // Any answer but a 5xx or 429 is a region that answers (it cannot stay half-open).
            let health = match judged.health {
                Health::Unknown => Health::Healthy,
                other => other,
            };
            guard.record(health, Instant::now(), judged.failure.as_deref());
            if let Some(wait) = judged.retry_after {
                guard.back_off_until(protection::later(Instant::now(), wait));
            }
            tracing::info!(region = %name, outcome = judged.outcome, breaker = ?guard.breaker(), "breaker probe");
        });
    }

    /// Read an answer (bounded by `upstream.max_body_bytes`): its body when its status is
    /// `ok`, else the region's refusal with its body (and a 429's `Retry-After`).
    async fn read(
        &self,
        region: usize,
        mut response: reqwest::Response,
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
        let max = self.max_body[region];
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
        let body = body.freeze();
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

    /// `GET {base}{scope}/{collection}/detail?{params}`, items parsed for `fields`. `scope` is
    /// `/v3/{project}` or, project-less (Cinder ≥ 3.67 routes), `/v3`.
    pub async fn list(
        &self,
        region: usize,
        resource: &Resource,
        scope: &str,
        params: &[(String, String)],
        fields: &[&str],
        ctx: &CallContext,
    ) -> Result<ListPage, RegionError> {
        let mut query = String::new();
        for (k, v) in params {
            crate::cinder::query::push_pair(&mut query, k, v);
        }
        let url = format!(
            "{}{scope}/{}/detail?{query}",
            self.regions[region].base, resource.collection
        );
        let request = self.get(region, &url, ctx);
        self.call(
            region,
            request,
            ctx.traceparent.as_ref(),
            &[StatusCode::OK],
            |body| item::parse_list(body, fields, resource),
        )
        .await
    }

    /// `GET {base}{scope}/{collection}/{id}`: the item, or the region's refusal. `id` must
    /// pass [`is_path_segment`]; it is sent as one percent-encoded segment.
    pub async fn show(
        &self,
        region: usize,
        resource: &Resource,
        scope: &str,
        id: &str,
        fields: &[&str],
        ctx: &CallContext,
    ) -> Result<Item, RegionError> {
        let url = format!(
            "{}{scope}/{}/{}",
            self.regions[region].base,
            resource.collection,
            encode_segment(id)
        );
        let request = self.get(region, &url, ctx);
        self.call(
            region,
            request,
            ctx.traceparent.as_ref(),
            &[StatusCode::OK],
            |body| item::parse_show(body, fields, resource),
        )
        .await
    }

    /// `GET {base}/`: the version document (Cinder answers 300 there).
    pub async fn versions(&self, region: usize) -> Result<Value, RegionError> {
        let url = format!("{}/", self.regions[region].base);
        let request = self.clients[region]
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json");
        let ok = [StatusCode::OK, StatusCode::MULTIPLE_CHOICES];
        self.call(region, request, None, &ok, |body| {
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_that_stay_in_the_catalog_keep_their_guards() {
        let config = |regions: &[(&str, &str)]| {
            let toml: String = regions
                .iter()
                .map(|(name, url)| format!("[[regions]]\nname = \"{name}\"\nurl = \"{url}\"\n"))
                .collect();
            Config::from_toml(&toml).unwrap()
        };
        let before = Upstream::new(
            &config(&[("a", "http://127.0.0.1:1"), ("b", "http://127.0.0.1:2")]),
            None,
            None,
        );
        // b moved, c is new, a stayed (now second).
        let after = Upstream::new(
            &config(&[
                ("c", "http://127.0.0.1:3"),
                ("a", "http://127.0.0.1:1"),
                ("b", "http://127.0.0.1:9"),
            ]),
            None,
            Some(&before),
        );
        let kept = |i: usize, j: usize| Arc::ptr_eq(&after.guards[i], &before.guards[j]);
        assert!(kept(1, 0), "a keeps its breaker and budget");
        assert!(!kept(2, 1), "b at another URL is another region");
        assert_eq!(after.guards.len(), 3);
        assert_eq!(after.regions[2].base, "http://127.0.0.1:9");
    }
}
