//! `GET /v3/{project}/os-availability-zone`, `GET /v3/{project}/volumes/summary`: every
//! region asked, their answers combined (`routing::combined`), nothing cached (small, rare,
//! and each region checks the caller itself).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::Caller;
use crate::cinder::query::decode_query;
use crate::error::RequestError;
use crate::listing::source::every_region_json;
use crate::regions::Regions;
use crate::routing::combined::Combined;

pub async fn handle(
    State(regions): State<Arc<Regions>>,
    caller: Caller,
    request: Request,
    combined: Combined,
) -> Response {
    let (parts, _body) = request.into_parts();
    let scope = match super::scope(parts.uri.path()) {
        Ok(s) => s,
        Err(e) => return caller.answered(e.into_response()),
    };
    let params = decode_query(parts.uri.query().unwrap_or(""));
    let tenant = crate::regions::tenant(&scope, &caller.ctx.token);
    let answers = match regions.tenant_admits(&tenant).await {
        Ok(_under_way) => every_region_json(&regions, &scope, combined.path(), &params, &caller.ctx).await,
        Err(refused) => Err(refused),
    };
    let combined = answers.and_then(|answers| {
        combined.combine(&answers).map_err(|why| RequestError::Regions {
            unavailable: false,
            message: format!("The regions' answers could not be combined: {why}"),
        })
    });
    match combined {
        Ok(body) => {
            let mut response = (StatusCode::OK, body.to_string()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            caller.response_headers(response.headers_mut());
            response
        }
        Err(e) => caller.answered(ApiError::from(e).into_response()),
    }
}
