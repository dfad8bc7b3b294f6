//! Who is calling, extracted once per request before a handler runs: the token (401 without
//! one, before any region is asked), the microversion negotiated against what the regions
//! serve, the request id, the trace context, the public base URL the answer's links use (from
//! `server.public_url`, or the Host, trusted only as far as `server.trusted_proxies` says),
//! and who Keystone said the token is.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::{request::Parts, HeaderMap, HeaderValue};

use super::error::ApiError;
use super::{set_version_headers, API_VERSION, AUTH_TOKEN, COMPUTE_REQUEST_ID, REQUEST_ID};
use crate::cinder::microversion;
use crate::config::Config;
use crate::regions::{CallContext, Regions};

/// What an aggregated route needs from the request before it goes upstream.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ctx: CallContext,
    pub public_base: PublicBase,
    /// Who the token is, when Keystone checked it (`http::auth`).
    pub(crate) token_info: Option<std::sync::Arc<crate::identity::TokenInfo>>,
}

impl Caller {
    /// Token (401 without one, no upstream call), microversion, request id, public base.
    pub(crate) fn from_parts(
        config: &Arc<Config>,
        regions: &Regions,
        parts: &Parts,
    ) -> Result<Caller, ApiError> {
        let token = parts
            .headers
            .get(AUTH_TOKEN)
            .filter(|t| !t.is_empty())
            .cloned()
            .ok_or_else(|| {
                ApiError::Unauthorized("The request you have made requires authentication.".into())
            })?;
        let version = microversion::negotiate(
            parts.headers.get(API_VERSION).map(HeaderValue::as_bytes),
            regions.versions.max(),
        )?;
        let request_id = super::observe::RequestId::of(parts);
        let ctx = CallContext {
            token,
            version,
            request_id,
            traceparent: parts.headers.get("traceparent").cloned(),
            background: false,
        };
        Ok(Caller {
            ctx,
            public_base: PublicBase::of(config, parts)?,
            token_info: parts.extensions.get().cloned(),
        })
    }
}

/// A handler that takes a `Caller` gets one, or the request is answered with the fault
/// (401 without a token, 400/406 for the microversion, 400 for a bad Host) before it runs.
impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Config>: FromRef<S>,
    Arc<Regions>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Caller, ApiError> {
        let (config, regions) = (Arc::<Config>::from_ref(state), Arc::<Regions>::from_ref(state));
        Caller::from_parts(&config, &regions, parts)
    }
}

impl Caller {
    /// `response` (an answer or a fault) with the headers every answer to this caller carries.
    pub fn answered(&self, mut response: axum::response::Response) -> axum::response::Response {
        self.response_headers(response.headers_mut());
        response
    }

    /// Headers every aggregated answer carries.
    pub(crate) fn response_headers(&self, headers: &mut HeaderMap) {
        set_version_headers(headers, self.ctx.version);
        headers.insert(REQUEST_ID, self.ctx.request_id.clone());
        headers.insert(COMPUTE_REQUEST_ID, self.ctx.request_id.clone());
    }
}

/// The proxy's base URL as this caller sees it (see [`PublicBase::of`]), as a string.
pub fn public_base(config: &Arc<Config>, parts: &Parts) -> Result<String, ApiError> {
    PublicBase::of(config, parts).map(|base| base.to_string())
}

/// The proxy's base URL as this caller sees it, kept as the parts it is made of: a cache hit
/// only writes it into its target's key, and never needs it as a string of its own.
#[derive(Debug, Clone)]
pub enum PublicBase {
    /// `server.public_url` (without its trailing `/`).
    Configured(Arc<Config>),
    /// The scheme, and the authority: `header[range]` (the Host, or a trusted proxy's
    /// `X-Forwarded-Host` entry), checked.
    Request {
        scheme: &'static str,
        header: HeaderValue,
        range: std::ops::Range<usize>,
    },
}

impl PublicBase {
    /// `server.public_url`, else the request's scheme and Host. `X-Forwarded-Proto/Host`
    /// count only from `server.trusted_proxies`: Cinder trusts `X-Forwarded-Host` from anyone,
    /// which behind a cache is a poisoning vector. A Host that is not an RFC 3986 authority is
    /// the caller's mistake (400): it would otherwise reach every href of the answer, and its
    /// key.
    pub fn of(config: &Arc<Config>, parts: &Parts) -> Result<PublicBase, ApiError> {
        if config.server.public_url.is_some() {
            return Ok(PublicBase::Configured(config.clone()));
        }
        let trusted = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|ci| config.server.trusted_proxies.contains(&ci.0.ip()));
        let mut scheme = match parts.extensions.get::<super::listener::ServedOverTls>() {
            Some(_) => "https",
            None => "http",
        };
        // An absolute-form target's authority wins over `Host` (RFC 9112 §3.2.2); two Host
        // lines, or none in HTTP/1.1, were refused at the door (`protect.rs`).
        let host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).map_err(|_| bad_host())?,
            None => parts
                .headers
                .get("host")
                .cloned()
                .unwrap_or(HeaderValue::from_static("localhost")),
        };
        let text = host.to_str().map_err(|_| bad_host())?;
        let mut base = (host.clone(), 0..text.len());
        if trusted {
            let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
            if let Some(proto) = header("x-forwarded-proto").and_then(|p| p.split(',').next()) {
                match proto.trim() {
                    "https" => scheme = "https",
                    "http" => scheme = "http",
                    _ => {}
                }
            }
            // As Cinder's get_request_url: the last entry of a list.
            if let Some(forwarded) = parts.headers.get("x-forwarded-host") {
                let text = forwarded.to_str().unwrap_or("");
                let last = text.rsplit(',').next().unwrap_or("");
                let trimmed = last.trim();
                if !trimmed.is_empty() {
                    let start = trimmed.as_ptr() as usize - text.as_ptr() as usize;
                    base = (forwarded.clone(), start..start + trimmed.len());
                }
            }
        }
        let (header, range) = base;
        let authority = &header.to_str().map_err(|_| bad_host())?[range.clone()];
        if !is_authority(authority) {
            return Err(bad_host());
        }
        Ok(PublicBase::Request {
            scheme,
            header,
            range,
        })
    }

    /// The base URL's parts, in order: written one after the other they make it.
    pub(crate) fn parts(&self) -> [&str; 3] {
        match self {
            PublicBase::Configured(config) => {
                let url = config.server.public_url.as_deref().unwrap_or_default();
                [url.trim_end_matches('/'), "", ""]
            }
            PublicBase::Request {
                scheme,
                header,
                range,
            } => {
                // Checked to be visible ASCII when it was made.
                let authority = header.to_str().map_or("", |h| &h[range.clone()]);
                [scheme, "://", authority]
            }
        }
    }
}

impl std::fmt::Display for PublicBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.parts().iter().try_for_each(|part| f.write_str(part))
    }
}

fn bad_host() -> ApiError {
    ApiError::bad_request("Invalid Host header.")
}

/// RFC 3986 §3.2 `host [ ":" port ]` (no userinfo: a Host header has none), at most 255
/// bytes of host: `reg-name` (unreserved, sub-delims, pct-encoded), IPv4, or `[IP-literal]`.
pub(crate) fn is_authority(s: &str) -> bool {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((literal, after)) => {
                let ok = !literal.is_empty()
                    && literal
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
                if !ok {
                    return false;
                }
                match after {
                    "" => return true,
                    _ => match after.strip_prefix(':') {
                        Some(port) => ("x", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        },
    };
    // RFC 3986 allows an empty port; a port is at most 65535 (RFC 9110 §4.2.1 needs a TCP port).
    let port_ok = port.is_none_or(|p| {
        p.is_empty() || (p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|n| n <= 65535))
    });
    port_ok && host.len() <= 255 && is_reg_name(host.as_bytes())
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`, not empty (an IPv4 address is one).
fn is_reg_name(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if b.len() > i + 2 && b[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit) => i += 3,
            c if c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c) => i += 1,
            _ => return false,
        }
    }
    !b.is_empty()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_are_authorities() {
        for good in [
            "proxy.example",
            "proxy.example:8776",
            "127.0.0.1:1",
            "[::1]:8776",
            "[fe80::1]",
            "a%20b",
            "x'y",
        ] {
            assert!(super::is_authority(good), "{good}");
        }
        for bad in [
            "",
            ":80",
            "evil.example/x\", \"injected\": \"yes",
            "a\"b\\",
            "user@host",
            "host:port",
            "host:123456",
            "host:65536",
            "host:99999",
            "[::1",
            "[::1]x",
            "a%2",
            "a b",
            &"h".repeat(256),
        ] {
            assert!(!super::is_authority(bad), "{bad}");
        }
    }
}
