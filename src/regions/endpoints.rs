//! The Cinder endpoints the proxy calls on a region, each through the region's guarded call:
//! a listing's detail view, one item, and the version document. Paths are built from
//! percent-encoded segments (`crate::cinder::path`) and stay under the scope they were given.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use serde_json::Value;

use super::client::{CallContext, RegionClient, Whom};
use super::RegionError;
use crate::cinder::item::{self, Item, ListPage};
use crate::cinder::path::encode_segment;
use crate::cinder::resource::Resource;

impl RegionClient {
    /// A GET on the region with the caller's token, microversion and request id.
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
        self.http.get(url).headers(headers)
    }

    /// `GET {base}{scope}/{collection}/detail?{params}`, items parsed for `fields`. `scope` is
    /// `/v3/{project}` or, project-less (Cinder ≥ 3.67 routes), `/v3`.
    pub async fn list(
        &self,
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
            self.base, resource.collection
        );
        let request = self.get(&url, ctx);
        let tenant = tenant(scope, &ctx.token);
        self.call(
            request,
            ctx.traceparent.as_ref(),
            Whom::of(&tenant, ctx),
            &[StatusCode::OK],
            |body| item::parse_list(body, fields, resource),
        )
        .await
    }

    /// `GET {base}{scope}/{collection}/{id}`: the item, or the region's refusal. `id` must
    /// pass [`is_path_segment`]; it is sent as one percent-encoded segment.
    pub async fn show(
        &self,
        resource: &Resource,
        scope: &str,
        id: &str,
        fields: &[&str],
        ctx: &CallContext,
    ) -> Result<Item, RegionError> {
        let url = format!(
            "{}{scope}/{}/{}",
            self.base,
            resource.collection,
            encode_segment(id)
        );
        let request = self.get(&url, ctx);
        let tenant = tenant(scope, &ctx.token);
        self.call(
            request,
            ctx.traceparent.as_ref(),
            Whom::of(&tenant, ctx),
            &[StatusCode::OK],
            |body| item::parse_show(body, fields, resource),
        )
        .await
    }

    /// `GET {base}{scope}/{path}?{params}` as JSON: an answer the proxy combines whole.
    /// `path` is the proxy's own (a constant), the parameters the caller's, re-encoded.
    pub async fn get_json(
        &self,
        scope: &str,
        path: &str,
        params: &[(String, String)],
        ctx: &CallContext,
    ) -> Result<Value, RegionError> {
        let mut query = String::new();
        for (k, v) in params {
            crate::cinder::query::push_pair(&mut query, k, v);
        }
        let url = format!("{}{scope}/{path}?{query}", self.base);
        let request = self.get(&url, ctx);
        let tenant = tenant(scope, &ctx.token);
        self.call(request, ctx.traceparent.as_ref(), Whom::of(&tenant, ctx), &[StatusCode::OK], |body| {
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
        })
        .await
    }

    /// `GET {base}/`: the version document (Cinder answers 300 there).
    pub async fn versions(&self) -> Result<Value, RegionError> {
        let url = format!("{}/", self.base);
        let request = self.http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json");
        let ok = [StatusCode::OK, StatusCode::MULTIPLE_CHOICES];
        self.call(request, None, Whom::PROXY, &ok, |body| {
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
        })
        .await
    }
}

/// Whom a call is made for, as a 429 with `retry_after_scope = "project"` holds back: the
/// project's scope (`/v3/{project}`), or on a project-less route (`/v3`, whose project only
/// the token knows) the caller, as a digest of its token (never the token).
pub fn tenant<'a>(scope: &'a str, token: &HeaderValue) -> std::borrow::Cow<'a, str> {
    use sha2::Digest;
    if scope != "/v3" {
        return std::borrow::Cow::Borrowed(scope);
    }
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    std::borrow::Cow::Owned(format!("/v3@{hex}"))
}
