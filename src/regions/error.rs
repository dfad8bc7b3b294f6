//! What a call to a region can come to, by kind: the region's own answer (kept whole for the
//! caller), no answer (timeout, connection, TLS, transport), an answer of the wrong shape, or
//! the guard's refusal. Each kind says what it means for the region's health and whether it is
//! worth trying again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::guard::{Health, Refusal};

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
    pub(super) fn health(&self) -> Health {
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
    pub(super) fn is_retryable(&self) -> bool {
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
    pub(crate) fn is_not_here(&self) -> bool {
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
    pub(super) fn from_reqwest(e: reqwest::Error) -> RegionError {
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
