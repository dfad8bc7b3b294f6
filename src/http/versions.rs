//! Version documents (`GET /`, `GET /v3/`) and region health. The proxy's maximum
//! microversion is the lowest maximum over the regions that answered, so a request the
//! proxy accepts is one every region accepts.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use crate::config::Config;
use crate::cinder::microversion::Version;
use crate::regions::Regions;

/// The version document, or a 503 while no region's version document has been read: the
/// proxy does not know which microversions it can offer, and says so rather than guess 3.0.
fn document(regions: &Regions, base: &str, status: StatusCode) -> Response {
    let Some(max) = regions.versions.known_max() else {
        return ApiError::Regions {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "The supported microversions are not known yet: no region's version \
                      document has been read."
                .into(),
        }
        .into_response();
    };
    let body = json!({"versions": [{
        "id": "v3.0",
        "status": "CURRENT",
        "version": max.to_string(),
        "min_version": Version::MIN.to_string(),
        "updated": regions.versions.updated(),
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{base}/v3/")}
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}]
    }]})
    .to_string();
    json_response(status, body)
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `GET /`: Cinder answers 300 Multiple Choices, without authentication.
pub async fn root(
    State(config): State<Arc<Config>>,
    State(regions): State<Arc<Regions>>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let base = match super::caller::public_base(&config, &parts) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    document(&regions, &base, StatusCode::MULTIPLE_CHOICES)
}

/// `GET /v3/`: behind authentication in Cinder, 200.
pub async fn v3(
    State(config): State<Arc<Config>>,
    State(regions): State<Arc<Regions>>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    if parts
        .headers
        .get("x-auth-token")
        .is_none_or(|t| t.is_empty())
    {
        return ApiError::Unauthorized("The request you have made requires authentication.".into())
            .into_response();
    }
    let base = match super::caller::public_base(&config, &parts) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    document(&regions, &base, StatusCode::OK)
}

/// 200 when at least one region answered its last version probe; a line per region that
/// looks misconfigured (it answers 404 to project listings) either way.
pub async fn readyz(State(regions): State<Arc<Regions>>) -> Response {
    let (status, mut body) = if regions.versions.any_reachable() {
        (StatusCode::OK, "ready".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no region reachable".to_string())
    };
    // Names only: the regions' URLs stay out of what any caller can read (the log has them).
    for region in regions.iter().filter(|r| r.misconfigured()) {
        body.push_str(&format!(
            "\nregion {}: answers 404 to project listings; check its url",
            region.name
        ));
    }
    (status, body).into_response()
}
