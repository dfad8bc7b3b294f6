//! Inbound protection, answered in Cinder's fault format: `TRACE` and `CONNECT`, a path that
//! is not what it looks like, headers past `server.max_header_bytes`, and load past `server.max_in_flight` are
//! refused before any work (nothing queues: past the limit a request is shed at once); an
//! admitted request is bounded by `server.request_timeout`. Tower layers around the router;
//! the operational routes (`/healthz`, `/readyz`, `/metrics`) pass them untouched, so probes
//! and scrapes still answer under overload.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::error::ApiError;

/// The limits of `[server]` the inbound layer holds a request to, and its shed count.
#[derive(Clone)]
pub(crate) struct InboundLayer {
    max_header_bytes: u64,
    in_flight: Arc<Semaphore>,
    shed: Counter,
}

impl InboundLayer {
    pub fn new(max_header_bytes: u64, in_flight: Arc<Semaphore>, shed: Counter) -> InboundLayer {
        InboundLayer {
            max_header_bytes,
            in_flight,
            shed,
        }
    }
}

impl<S> Layer<S> for InboundLayer {
    type Service = Inbound<S>;

    fn layer(&self, inner: S) -> Inbound<S> {
        Inbound {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Inbound<S> {
    inner: S,
    limits: InboundLayer,
}

impl<S> Inbound<S> {
    /// The fault for a request refused at the door, or its slot among those in flight.
    fn admit(&self, request: &Request) -> Result<OwnedSemaphorePermit, ApiError> {
        // TRACE would echo a request (its token) back; CONNECT would open a tunnel. Cinder
        // serves neither.
        let method = request.method();
        if method == axum::http::Method::TRACE || method == axum::http::Method::CONNECT {
            return Err(ApiError::BadMethod(format!(
                "The method {method} is not allowed."
            )));
        }
        super::path::check(request.uri().path())?;
        // RFC 9112 §3.2: an HTTP/1.1 request without a Host, or any with two Host lines, is a
        // 400 (two Hosts are a request-smuggling and cache-poisoning vector).
        let mut hosts = request.headers().get_all(axum::http::header::HOST).iter();
        let (first, second) = (hosts.next(), hosts.next());
        let lacks_host = first.is_none() && request.version() == axum::http::Version::HTTP_11;
        if second.is_some() || (lacks_host && request.uri().authority().is_none()) {
            return Err(ApiError::bad_request("Invalid Host header."));
        }
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        let max = self.limits.max_header_bytes;
        if header_bytes as u64 > max {
            return Err(ApiError::HeadersTooLarge(format!(
                "Request headers are {header_bytes} bytes; server.max_header_bytes allows {max}."
            )));
        }
        self.limits.in_flight.clone().try_acquire_owned().map_err(|_| {
            self.limits.shed.inc();
            ApiError::Busy("The proxy is at capacity; retry shortly.".into())
        })
    }
}

impl<S> Service<Request> for Inbound<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Admitted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if super::is_ops_route(request.uri().path()) {
            return Admitted::Running {
                inner: self.inner.call(request),
                _slot: None,
            };
        }
        match self.admit(&request) {
            Ok(slot) => Admitted::Running {
                inner: self.inner.call(request),
                _slot: Some(slot),
            },
            Err(refused) => Admitted::Refused {
                answer: Some(refused.into_response()),
            },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = AdmittedProj]
    pub enum Admitted<F> {
        Running {
            #[pin]
            inner: F,
            // Held until the answer's head is ready.
            _slot: Option<OwnedSemaphorePermit>,
        },
        Refused {
            answer: Option<Response>,
        },
    }
}

impl<F> Future for Admitted<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProj::Running { inner, .. } => inner.poll(cx),
            AdmittedProj::Refused { answer } => {
                Poll::Ready(Ok(answer.take().expect("polled after it was ready")))
            }
        }
    }
}

/// `server.request_timeout` over an admitted API request: past it, Cinder's 504 fault.
#[derive(Clone)]
pub(crate) struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    pub fn new(limit: Duration) -> TimeoutLayer {
        TimeoutLayer { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<Request> for Timeout<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Bounded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // An operational route is not bounded (tokio's timer takes a wait past its range as
        // "never").
        let limit = match super::is_ops_route(request.uri().path()) {
            true => Duration::MAX,
            false => self.limit,
        };
        Bounded {
            inner: tokio::time::timeout(limit, self.inner.call(request)),
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct Bounded<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F> Future for Bounded<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match std::task::ready!(this.inner.poll(cx)) {
            Ok(answer) => Poll::Ready(answer),
            Err(_) => Poll::Ready(Ok(ApiError::Timeout(format!(
                "The request took longer than server.request_timeout ({:?}).",
                this.limit
            ))
            .into_response())),
        }
    }
}
