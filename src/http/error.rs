//! The one place where errors become HTTP answers, in Cinder's fault format
//! (`cinder/api/openstack/wsgi.py` `Fault`): `{"<kind>": {"code": N, "message": "..."}}`.
//! A caller's mistake is a 4xx; only the proxy's own bugs are 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// `Retry-After` of the proxy's own 503s, in seconds.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A method the proxy does not serve (405, Cinder's `badMethod`).
    #[error("{0}")]
    BadMethod(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotAcceptable(String),
    /// Regions failed and the policy says fail (502), or every region is down (503).
    #[error("{message}")]
    Regions { status: StatusCode, message: String },
    /// A region's own 4xx answer, returned as it came (every region agreed, or it is a 401/403).
    #[error("upstream answered {status}")]
    Upstream {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        www_authenticate: Option<HeaderValue>,
    },
    #[error("{0}")]
    Internal(String),
    /// 413 (body too large) or 429.
    #[error("{message}")]
    OverLimit { status: StatusCode, message: String },
    /// 429 `overLimit` with `Retry-After`: the project passed its `[tenants]` limit.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    #[error("{0}")]
    HeadersTooLarge(String),
    /// Load shed: 503 with `Retry-After`.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Timeout(String),
    /// keystonemiddleware's 401: its body, and where to authenticate.
    #[error("The request you have made requires authentication.")]
    KeystoneUnauthorized { www_authenticate: HeaderValue },
}

/// The lower modules' errors, as the faults Cinder would give.
impl From<crate::error::RequestError> for ApiError {
    fn from(e: crate::error::RequestError) -> ApiError {
        use crate::error::RequestError as E;
        match e {
            E::BadRequest(m) => ApiError::BadRequest(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::NotAcceptable(m) => ApiError::NotAcceptable(m),
            E::Regions {
                unavailable,
                message,
            } => ApiError::Regions {
                status: if unavailable {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_GATEWAY
                },
                message,
            },
            E::TooManyRequests {
                message,
                retry_after,
            } => ApiError::TooManyRequests {
                message,
                // Whole seconds, rounded up: never sooner than the limit allows.
                retry_after_secs: retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
            },
            E::Upstream {
                status,
                content_type,
                body,
                www_authenticate,
            } => ApiError::Upstream {
                status,
                content_type,
                body,
                www_authenticate,
            },
        }
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    /// Status and Cinder fault body.
    pub fn fault(&self) -> (StatusCode, serde_json::Value) {
        let (status, kind, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "badRequest", m.as_str()),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.as_str()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.as_str()),
            ApiError::BadMethod(m) => (StatusCode::METHOD_NOT_ALLOWED, "badMethod", m.as_str()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "itemNotFound", m.as_str()),
            // Cinder reports an unsupported version under `computeFault`.
            ApiError::NotAcceptable(m) => (StatusCode::NOT_ACCEPTABLE, "computeFault", m.as_str()),
            ApiError::Regions { status, message } => {
                let kind = if *status == StatusCode::SERVICE_UNAVAILABLE {
                    "serviceUnavailable"
                } else {
                    "computeFault"
                };
                (*status, kind, message.as_str())
            }
            ApiError::Upstream { status, .. } => (*status, "computeFault", "upstream error"),
            ApiError::Internal(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "computeFault",
                m.as_str(),
            ),
            ApiError::OverLimit { status, message } => (*status, "overLimit", message.as_str()),
            // Cinder's overLimit fault carries retryAfter (api/openstack/wsgi.py OverLimitFault).
            ApiError::TooManyRequests {
                message,
                retry_after_secs,
            } => {
                let status = StatusCode::TOO_MANY_REQUESTS;
                let body = serde_json::json!({"overLimit": {
                    "code": 429,
                    "message": message,
                    "retryAfter": retry_after_secs.to_string(),
                }});
                return (status, body);
            }
            ApiError::HeadersTooLarge(m) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "badRequest",
                m.as_str(),
            ),
            ApiError::Busy(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "serviceUnavailable",
                m.as_str(),
            ),
            ApiError::Timeout(m) => (StatusCode::GATEWAY_TIMEOUT, "computeFault", m.as_str()),
            // authtoken's own format (keystonemiddleware/auth_token/__init__.py), not Cinder's.
            ApiError::KeystoneUnauthorized { .. } => {
                let status = StatusCode::UNAUTHORIZED;
                let body = serde_json::json!({"error": {
                    "code": 401,
                    "title": "Unauthorized",
                    "message": "The request you have made requires authentication.",
                }});
                return (status, body);
            }
        };
        let body = serde_json::json!({ kind: { "code": status.as_u16(), "message": message } });
        (status, body)
    }

    /// Status, content type and body bytes.
    pub(crate) fn into_parts(self) -> (StatusCode, Option<HeaderValue>, Bytes) {
        match self {
            ApiError::Upstream {
                status,
                content_type,
                body,
                ..
            } => (status, content_type, body),
            other => {
                if matches!(other, ApiError::Internal(_)) {
                    tracing::error!(error = %other, "internal error");
                }
                let (status, body) = other.fault();
                (
                    status,
                    Some(HeaderValue::from_static("application/json")),
                    Bytes::from(body.to_string()),
                )
            }
        }
    }
}

/// Every 503 of the proxy's says when to come back (load shedding, regions unavailable),
/// whether it is made now or served from a produced answer.
pub(crate) fn set_retry_after(status: StatusCode, headers: &mut axum::http::HeaderMap) {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from_static(RETRY_AFTER_SECS));
    }
}

/// The fault alone; the handler that made it adds the microversion headers when the version
/// was resolved (Cinder puts them on faults raised inside the API, not on version-header
/// errors).
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Where to authenticate: Keystone's (the proxy's own check) or a region's 401's.
        let www_authenticate = match &self {
            ApiError::KeystoneUnauthorized { www_authenticate } => Some(www_authenticate.clone()),
            ApiError::Upstream {
                www_authenticate, ..
            } => www_authenticate.clone(),
            _ => None,
        };
        let retry_after = match &self {
            ApiError::TooManyRequests {
                retry_after_secs, ..
            } => Some(HeaderValue::from(*retry_after_secs)),
            _ => None,
        };
        let (status, content_type, body) = self.into_parts();
        let mut response = (status, body).into_response();
        match content_type {
            Some(ct) => response.headers_mut().insert(header::CONTENT_TYPE, ct),
            None => response.headers_mut().remove(header::CONTENT_TYPE),
        };
        set_retry_after(status, response.headers_mut());
        if let Some(value) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let Some(value) = www_authenticate {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RequestError;

    #[test]
    fn request_errors_become_cinders_faults() {
        let fault = |e: RequestError| {
            let (status, body) = ApiError::from(e).fault();
            (
                status.as_u16(),
                body.as_object().unwrap().keys().next().unwrap().clone(),
            )
        };
        assert_eq!(
            fault(RequestError::bad_request("x")),
            (400, "badRequest".into())
        );
        assert_eq!(
            fault(RequestError::NotFound("x".into())),
            (404, "itemNotFound".into())
        );
        // Cinder reports an unsupported version under computeFault.
        assert_eq!(
            fault(RequestError::NotAcceptable("x".into())),
            (406, "computeFault".into())
        );
        let regions = |unavailable| RequestError::Regions {
            unavailable,
            message: "x".into(),
        };
        assert_eq!(fault(regions(true)), (503, "serviceUnavailable".into()));
        assert_eq!(fault(regions(false)), (502, "computeFault".into()));
    }
}
