//! `GET /v3/{project}/{collection}/{id}`: the region that holds it answers, links rewritten.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use super::Caller;
use crate::cache::Caches;
use crate::cinder::resource::Resource;
use crate::listing::links::Rewriter;
use crate::listing::source;
use crate::regions::Regions;

pub async fn handle(
    State(regions): State<Arc<Regions>>,
    State(caches): State<Arc<Caches>>,
    caller: Caller,
    request: Request,
    resource: &'static Resource,
) -> Response {
    let (parts, _body) = request.into_parts();
    let path = parts.uri.path();
    let scope = match super::scope(path) {
        Ok(s) => s,
        Err(e) => return caller.answered(e.into_response()),
    };
    let id = super::decode_segment(path.rsplit('/').next().unwrap_or(""));
    let tenant = crate::regions::tenant(&scope, &caller.ctx.token);
    let _under_way = match regions.tenant_admits(&tenant).await {
        Ok(under_way) => under_way,
        Err(refused) => {
            return caller.answered(super::error::ApiError::from(refused).into_response())
        }
    };
    match source::find_item(resource, &regions, &caches, &scope, &id, &[], &caller.ctx).await {
        Ok((_, item)) => {
            let base = caller.public_base.to_string();
            let rewriter = Rewriter::new(&regions.bases, &base);
            let mut body = Vec::with_capacity(item.raw().len() + 16);
            body.extend_from_slice(format!("{{\"{}\": ", resource.member).as_bytes());
            rewriter.write_json(item.raw(), &mut body);
            body.push(b'}');
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            caller.response_headers(response.headers_mut());
            response
        }
        Err(e) => caller.answered(super::error::ApiError::from(e).into_response()),
    }
}
