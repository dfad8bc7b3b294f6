//! What a request can come to below the HTTP front, typed and free of it: the listing's and
//! the regions' errors. `http/error.rs` is the one place they become Cinder faults.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// The caller's mistake (Cinder's `badRequest`).
    #[error("{0}")]
    BadRequest(String),
    /// No such backup, marker or route (Cinder's `itemNotFound`).
    #[error("{0}")]
    NotFound(String),
    /// A microversion outside what the regions serve (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// Regions failed and the policy says fail (`unavailable`: every region is down).
    #[error("{message}")]
    Regions { unavailable: bool, message: String },
    /// The caller's project passed its `[tenants]` limit: no region asked; try again after
    /// `retry_after`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    /// A region's own 4xx answer, returned as it came (every region agreed, or a 401/403).
    #[error("a region answered {status}")]
    Upstream {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        /// A 401's `WWW-Authenticate`, as the region sent it.
        www_authenticate: Option<HeaderValue>,
    },
}

impl RequestError {
    pub fn bad_request(message: impl Into<String>) -> RequestError {
        RequestError::BadRequest(message.into())
    }

    /// The regions failed (not the caller): stale data may stand in.
    pub(crate) fn is_upstream_failure(&self) -> bool {
        match self {
            RequestError::Regions { .. } => true,
            RequestError::Upstream { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}
