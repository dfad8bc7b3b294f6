//! Tokens checked at the edge (with `[keystone_authtoken]`), as keystonemiddleware's
//! `authtoken` does in front of Cinder: no token, or one Keystone does not know, is 401 with
//! `WWW-Authenticate: Keystone uri=...` and reaches no region; a token of another project than
//! the URL's gets Cinder's 400 "Malformed request url" (cinder/api/openstack/wsgi.py checks
//! the URL's project against the context's) without a region call; Keystone unavailable is
//! 503 with `Retry-After`, never a request let through unchecked. Who the token is goes on
//! with the request (`cache.scope = "project"` keys by it).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::error::ApiError;
use crate::cinder::resource::names_collection;
use crate::identity::{Keystone, Verdict};

/// With `[keystone_authtoken]`, the token check; without it, nothing (a request passes
/// straight through, with no box and no clone).
#[derive(Clone)]
pub(crate) struct AuthLayer {
    keystone: Option<Arc<Keystone>>,
}

impl AuthLayer {
    pub fn new(keystone: Option<Arc<Keystone>>) -> AuthLayer {
        AuthLayer { keystone }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            keystone: self.keystone.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    keystone: Option<Arc<Keystone>>,
}

impl<S> Service<Request> for Authenticate<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Checked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let path = request.uri().path();
        // The version list needs no token (as behind authtoken); the admin and operational
        // routes have their own protection.
        let exempt = path == "/" || path.starts_with("/admin/") || super::is_ops_route(path);
        let keystone = match &self.keystone {
            Some(keystone) if !exempt => keystone.clone(),
            _ => {
                return Checked::Passed {
                    inner: self.inner.call(request),
                }
            }
        };
        // The check awaits Keystone: the inner service goes with it (the one taken ready
        // here; a clone stays for the next request).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Checked::Checking {
            check: Box::pin(authenticate(keystone, inner, request)),
        }
    }
}

pin_project_lite::pin_project! {
    #[project = CheckedProj]
    pub enum Checked<F> {
        Passed {
            #[pin]
            inner: F,
        },
        Checking {
            check: BoxFuture<'static, Result<Response, Infallible>>,
        },
    }
}

impl<F> Future for Checked<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CheckedProj::Passed { inner } => inner.poll(cx),
            CheckedProj::Checking { check } => check.as_mut().poll(cx),
        }
    }
}

async fn authenticate<S>(
    keystone: Arc<Keystone>,
    mut inner: S,
    mut request: Request,
) -> Result<Response, Infallible>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let unauthorized = || ApiError::KeystoneUnauthorized {
        www_authenticate: HeaderValue::try_from(keystone.www_authenticate.as_str())
            .unwrap_or(HeaderValue::from_static("Keystone")),
    };
    let Some(token) = request
        .headers()
        .get(super::AUTH_TOKEN)
        .filter(|t| !t.is_empty())
    else {
        return Ok(unauthorized().into_response());
    };
    let info = match keystone.check(token.as_bytes()).await {
        Ok(Verdict::Valid(info)) => info,
        Ok(Verdict::Invalid) => return Ok(unauthorized().into_response()),
        Err(unavailable) => {
            tracing::warn!(error = %unavailable, "a token could not be checked");
            let busy = ApiError::Busy("The identity service is unavailable; retry shortly.".into());
            return Ok(busy.into_response());
        }
    };
    if let Some(project) = url_project(request.uri().path()) {
        if info.project_id.as_deref() != Some(project.as_str()) {
            return Ok(ApiError::bad_request("Malformed request url").into_response());
        }
    }
    request.extensions_mut().insert(info);
    inner.call(request).await
}

/// The project a `/v3/{project}/...` path names; `None` for the project-less routes
/// (`/v3/backups/detail`: Cinder >= 3.67 takes the project from the token) and the version
/// document.
fn url_project(path: &str) -> Option<String> {
    let mut segments = path.strip_prefix("/v3/")?.split('/');
    let first = segments.next()?;
    segments.next()?;
    let project = super::decode_segment(first);
    // `/v3/native/backups/detail` is the VBS alias's project-less route, not a project.
    (!names_collection(&project)).then_some(project)
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
        assert_eq!(url_project("/v3/native/backups/detail"), None);
        assert_eq!(url_project("/v3/"), None);
        assert_eq!(url_project("/v3/abc"), None);
        assert_eq!(url_project("/"), None);
    }
}
