//! The regional Cinder endpoints: one reqwest client, typed answers, failures named by kind.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use serde_json::Value;

use crate::config::Config;
pub use crate::item::ListPage;
use crate::item::{self, Item};
use crate::microversion::Version;

#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    /// Endpoint root without a trailing slash, e.g. `http://127.0.0.1:9001`.
    pub base: String,
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
    },
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("invalid answer: {0}")]
    Body(String),
}

impl RegionError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RegionError::Status { status, .. } if status.is_client_error() => "status_4xx",
            RegionError::Status { .. } => "status_5xx",
            RegionError::Timeout => "timeout",
            RegionError::Connect(_) => "connect",
            RegionError::Transport(_) => "transport",
            RegionError::Body(_) => "body",
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RegionError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn from_reqwest(e: reqwest::Error) -> RegionError {
        if e.is_timeout() {
            RegionError::Timeout
        } else if e.is_connect() {
            RegionError::Connect(e.to_string())
        } else {
            RegionError::Transport(e.to_string())
        }
    }
}

pub struct Upstream {
    client: reqwest::Client,
    pub regions: Vec<Region>,
}

impl Upstream {
    pub fn new(config: &Config) -> Upstream {
        let client = reqwest::Client::builder()
            .timeout(config.upstream.timeout)
            .connect_timeout(config.upstream.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // Cinder builds links from the Host we send: keep the configured one.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client builds with static settings");
        let regions = config
            .regions
            .iter()
            .map(|r| Region {
                name: r.name.clone(),
                base: r.url.trim_end_matches('/').to_string(),
            })
            .collect();
        Upstream { client, regions }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn get(&self, url: &str, ctx: &CallContext) -> reqwest::RequestBuilder {
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
        if let Some(tp) = &ctx.traceparent {
            headers.insert(HeaderName::from_static("traceparent"), tp.clone());
        }
        self.client.get(url).headers(headers)
    }

    /// Send, read the whole body, and accept only the `ok` statuses; anything else is the
    /// region's refusal or failure, with its body kept for the caller.
    async fn fetch(
        request: reqwest::RequestBuilder,
        ok: &[StatusCode],
    ) -> Result<Bytes, RegionError> {
        let response = request.send().await.map_err(RegionError::from_reqwest)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .cloned();
        let body = response.bytes().await.map_err(RegionError::from_reqwest)?;
        if !ok.contains(&status) {
            return Err(RegionError::Status {
                status,
                content_type,
                body,
            });
        }
        Ok(body)
    }

    async fn get_ok(&self, url: &str, ctx: &CallContext) -> Result<Bytes, RegionError> {
        Self::fetch(self.get(url, ctx), &[StatusCode::OK]).await
    }

    /// `GET {base}{scope}/backups/detail?{params}`, items parsed for `fields`. `scope` is
    /// `/v3/{project}` or, project-less (Cinder ≥ 3.67 routes), `/v3`.
    pub async fn list(
        &self,
        region: usize,
        scope: &str,
        params: &[(String, String)],
        fields: &[&str],
        ctx: &CallContext,
    ) -> Result<ListPage, RegionError> {
        let mut query = String::new();
        for (k, v) in params {
            crate::query::push_pair(&mut query, k, v);
        }
        let url = format!(
            "{}{scope}/backups/detail?{query}",
            self.regions[region].base
        );
        let body = self.get_ok(&url, ctx).await?;
        item::parse_list(body, fields).map_err(RegionError::Body)
    }

    /// `GET {base}{scope}/backups/{id}`: the backup, or the region's refusal.
    pub async fn show(
        &self,
        region: usize,
        scope: &str,
        id: &str,
        fields: &[&str],
        ctx: &CallContext,
    ) -> Result<Item, RegionError> {
        let url = format!(
            "{}{scope}/backups/{}",
            self.regions[region].base,
            encode_segment(id)
        );
        let body = self.get_ok(&url, ctx).await?;
        item::parse_show(body, fields).map_err(RegionError::Body)
    }

    /// `GET {base}/`: the version document (Cinder answers 300 there).
    pub async fn versions(&self, region: usize) -> Result<Value, RegionError> {
        let url = format!("{}/", self.regions[region].base);
        let request = self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json");
        let body = Self::fetch(request, &[StatusCode::OK, StatusCode::MULTIPLE_CHOICES]).await?;
        serde_json::from_slice(&body).map_err(|e| RegionError::Body(format!("not JSON: {e}")))
    }
}

/// Percent-encode one path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("ab-12"), "ab-12");
        assert_eq!(encode_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
