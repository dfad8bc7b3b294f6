//! Tokens checked at the edge (with `[keystone_authtoken]`), as keystonemiddleware's
//! `authtoken` does in front of Cinder: no token, or one Keystone does not know, is 401 with
//! `WWW-Authenticate: Keystone uri=...` and reaches no region; a token of another project than
//! the URL's gets Cinder's 400 "Malformed request url" (cinder/api/openstack/wsgi.py checks
//! the URL's project against the context's) without a region call; Keystone unavailable is
//! 503 with `Retry-After`, never a request let through unchecked. Who the token is goes on
//! with the request (`cache.scope = "project"` keys by it).

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;
use crate::identity::Verdict;
use crate::cinder::resource::RESOURCES;

pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // The layer is only there with Keystone (app::router).
    let Some(keystone) = &state.keystone else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    // The version list needs no token (as behind authtoken); the admin routes have their own.
    if path == "/" || path.starts_with("/admin/") {
        return next.run(request).await;
    }
    let unauthorized = || ApiError::KeystoneUnauthorized {
        www_authenticate: HeaderValue::try_from(keystone.www_authenticate.as_str())
            .unwrap_or(HeaderValue::from_static("Keystone")),
    };
    let Some(token) = request
        .headers()
        .get(super::AUTH_TOKEN)
        .filter(|t| !t.is_empty())
    else {
        return unauthorized().into_response();
    };
    let info = match keystone.check(token.as_bytes()).await {
        Ok(Verdict::Valid(info)) => info,
        Ok(Verdict::Invalid) => return unauthorized().into_response(),
        Err(unavailable) => {
            tracing::warn!(error = %unavailable, "a token could not be checked");
            return ApiError::Busy(
                "The identity service is unavailable; retry shortly.".into(),
            )
            .into_response();
        }
    };
    if let Some(project) = url_project(request.uri().path()) {
        if info.project_id.as_deref() != Some(project.as_str()) {
            return ApiError::bad_request("Malformed request url").into_response();
        }
    }
    request.extensions_mut().insert(info);
    next.run(request).await
}

/// The project a `/v3/{project}/...` path names; `None` for the project-less routes
/// (`/v3/backups/detail`: Cinder >= 3.67 takes the project from the token) and the version
/// document.
fn url_project(path: &str) -> Option<String> {
    let mut segments = path.strip_prefix("/v3/")?.split('/');
    let first = segments.next()?;
    segments.next()?;
    let project = super::decode_segment(first);
    let collection = RESOURCES.iter().any(|r| r.collection == project);
    (!collection).then_some(project)
}

#[cfg(test)]
mod tests {
    use super::url_project;

    #[test]
    fn the_project_of_a_path() {
        assert_eq!(url_project("/v3/abc/backups/detail").as_deref(), Some("abc"));
        assert_eq!(url_project("/v3/a%20b/volumes").as_deref(), Some("a b"));
        assert_eq!(url_project("/v3/backups/detail"), None);
        assert_eq!(url_project("/v3/snapshots/x"), None);
        assert_eq!(url_project("/v3/"), None);
        assert_eq!(url_project("/v3/abc"), None);
        assert_eq!(url_project("/"), None);
    }
}
