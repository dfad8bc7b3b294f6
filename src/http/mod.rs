//! The HTTP front: routes, thin handlers and what they share (token, microversion, request
//! id, public base URL, response headers).

pub mod admin;
pub mod auth;
pub mod body;
pub mod caller;
pub(crate) mod combined;
pub mod error;
pub mod list;
pub mod listener;
pub(crate) mod observe;
pub(crate) mod passthrough;
pub mod path;
pub(crate) mod protect;
pub mod show;
pub mod status;
pub mod versions;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::routing::get;
use axum::Router;

pub(crate) use caller::Caller;
use crate::cinder::microversion::Version;
use crate::cinder::resource::{names_collection, Resource, NATIVE_ALIAS, RESOURCES};
use crate::listing::render::View;
use crate::state::AppState;
use error::ApiError;

pub(crate) const API_VERSION: HeaderName = HeaderName::from_static("openstack-api-version");
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-openstack-request-id");
pub(crate) const COMPUTE_REQUEST_ID: HeaderName = HeaderName::from_static("x-compute-request-id");
pub(crate) const MISSING_REGIONS: HeaderName = HeaderName::from_static("x-aggregate-missing-regions");
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// The whole application as an axum `Router` (what `axum::serve` and the tests take): the
/// [`edge`] as its one service.
pub fn router(state: AppState) -> Router {
    Router::new().fallback_service(edge(state))
}

/// The routes inside the edge's layers, outermost first: every request is observed (request
/// id, span, log event, metrics); API requests then pass the inbound protection (path, header
/// size, load shedding) and the request timeout, then the token check (a layer that does
/// nothing without `[keystone_authtoken]`). The operational routes (`/healthz`, `/readyz`,
/// `/metrics`) pass the protection untouched, so probes and scrapes still answer under
/// overload. Tower layers around the router, not middlewares inside it: axum boxes and clones
/// a middleware per route and request.
pub fn edge(state: AppState) -> Edge {
    let server = &state.config.server;
    let inbound = protect::InboundLayer::new(
        server.max_header_bytes.as_u64(),
        state.in_flight.clone(),
        state.metrics.http.shed.clone(),
    );
    tower::ServiceBuilder::new()
        .layer(observe::ObserveLayer::new(state.metrics.http.clone()))
        .layer(inbound)
        .layer(protect::TimeoutLayer::new(server.request_timeout))
        .layer(auth::AuthLayer::new(state.keystone.clone()))
        .service(routes(state))
}

/// The application's service: the routes inside the edge's layers (see [`edge`]).
pub(crate) type Edge = observe::Observe<protect::Inbound<protect::Timeout<auth::Authenticate<Router>>>>;

/// What answers a resource's route.
#[derive(Clone, Copy)]
enum Endpoint {
    List(View, &'static Resource),
    Show(&'static Resource),
    Combined(crate::routing::combined::Combined),
}

/// Each listed resource has its detail and summary listings and its show route, also without
/// the project segment (Cinder ≥ 3.67 routes; python-cinderclient's noauth mode uses them),
/// and backups the VBS alias `/native/backups/detail`; then the routes whose answer combines
/// every region's (`routing::combined`).
fn resource_routes() -> Vec<(String, Endpoint)> {
    let mut routes = Vec::new();
    for resource in RESOURCES {
        let c = resource.collection;
        for scope in ["/v3/{project_id}", "/v3"] {
            let detail = Endpoint::List(View::Detail, resource);
            routes.push((format!("{scope}/{c}/detail"), detail));
            let summary = Endpoint::List(View::Summary, resource);
            routes.push((format!("{scope}/{c}"), summary));
            routes.push((format!("{scope}/{c}/{{id}}"), Endpoint::Show(resource)));
            if resource.native_alias {
                routes.push((format!("{scope}/{NATIVE_ALIAS}/{c}/detail"), detail));
            }
        }
    }
    for (template, combined) in crate::routing::combined::ROUTES {
        routes.push((template.to_string(), Endpoint::Combined(combined)));
    }
    routes
}

/// The routes that are not a resource's.
const FIXED_ROUTES: [&str; 10] = [
    "/",
    "/v3",
    "/v3/",
    "/admin/cache/purge",
    "/admin/throttled",
    "/healthz",
    "/readyz",
    "/metrics",
    "/status",
    "/status.json",
];

/// Liveness, readiness, metrics and the status page: outside the inbound protection and the
/// token check (the page has the admin token's), so the operator sees an overloaded proxy.
pub(crate) fn is_ops_route(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/status" | "/status.json"
    )
}

/// Every route, in one place; any other request is passed through.
fn routes(state: AppState) -> Router {
    let list = |view, resource| {
        let handler = move |l, s, c, r| list::handle(l, s, c, r, view, resource);
        get(handler).fallback(passthrough::handle)
    };
    let show = |resource| {
        let handler = move |l, s, c, r| show::handle(l, s, c, r, resource);
        get(handler).fallback(passthrough::handle)
    };
    let combine = |combined| {
        let handler = move |l, c, r| combined::handle(l, c, r, combined);
        get(handler).fallback(passthrough::handle)
    };
    let mut router = Router::new()
        .route("/", get(versions::root))
        .route("/v3", get(versions::v3))
        .route("/v3/", get(versions::v3))
        .route("/admin/cache/purge", axum::routing::post(admin::purge))
        .route("/admin/throttled", get(admin::throttled))
        .route("/healthz", get(|| async { "OK" }))
        .route("/readyz", get(versions::readyz))
        .route("/metrics", get(admin::metrics))
        .route("/status", get(status::page))
        .route("/status.json", get(status::json));
    for (template, endpoint) in resource_routes() {
        router = match endpoint {
            Endpoint::List(view, resource) => router.route(&template, list(view, resource)),
            Endpoint::Show(resource) => router.route(&template, show(resource)),
            Endpoint::Combined(combined) => router.route(&template, combine(combined)),
        };
    }
    router.fallback(passthrough::handle).with_state(state)
}

/// What `admin.listen` serves, to whoever reaches that address (the operator keeps it
/// private): the status page, its JSON and the metrics, with no token, each from the state
/// being served now (a reload or Keystone's catalog may have changed it).
pub fn private_routes(current: tokio::sync::watch::Receiver<AppState>) -> Router {
    Router::new()
        .route("/status", get(status::private_page))
        .route("/status.json", get(status::private_json))
        .route("/metrics", get(status::private_metrics))
        .with_state(current)
}

/// The template of the route that serves `path` (as axum's `MatchedPath` would say it), or
/// `unmatched`: the label of the request's metrics and log line, worked out before the router
/// sees the request. The templates go into the matcher axum's router is built on (matchit),
/// so the answer is the router's by construction, at the cost of one lookup; the test below
/// holds it to the router's own answer all the same.
pub(crate) fn route_template(path: &str) -> &'static str {
    static TEMPLATES: std::sync::OnceLock<matchit::Router<&'static str>> = std::sync::OnceLock::new();
    let templates = TEMPLATES.get_or_init(|| {
        let resources = resource_routes().into_iter().map(|(t, _)| t);
        let all = FIXED_ROUTES.iter().map(|t| t.to_string()).chain(resources);
        let mut router = matchit::Router::new();
        for template in all {
            let template: &'static str = Box::leak(template.into_boxed_str());
            router
                .insert(template, template)
                .expect("the router accepted the same templates");
        }
        router
    });
    templates.at(path).map_or("unmatched", |found| *found.value)
}

/// The part of a backups path before the collection: `/v3/{project}` (the project
/// re-encoded, so every spelling of it is one scope), or `/v3` for the project-less routes.
/// Regions are asked under the same scope, so their links and the caller's identity work out
/// as they would talking to Cinder directly.
pub fn scope(path: &str) -> Result<String, ApiError> {
    let segments = path::segments(path)?;
    match segments.get(1).map(String::as_str) {
        Some(s) if names_collection(s) => Ok("/v3".to_string()),
        Some(project) => Ok(format!("/v3/{}", crate::cinder::path::encode_segment(project))),
        None => Err(ApiError::NotFound(
            "The resource could not be found.".into(),
        )),
    }
}

/// The headers of every API answer made for a caller: the microversion it was made at, and
/// that it is this caller's alone (a shared HTTP cache in front must neither serve it to
/// another token nor mix versions).
pub(crate) fn set_version_headers(headers: &mut HeaderMap, version: Version) {
    headers.insert(API_VERSION, api_version_header(version));
    headers.insert(
        axum::http::header::VARY,
        HeaderValue::from_static("X-Auth-Token, OpenStack-API-Version"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("private"),
    );
}

/// `OpenStack-API-Version: volume 3.N`, made once per 3.x version (every answer carries one).
fn api_version_header(version: Version) -> HeaderValue {
    const KEPT: u32 = 128;
    static MADE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let make = |version: Version| HeaderValue::try_from(format!("volume {version}")).expect("ascii");
    if version.major != 3 || version.minor >= KEPT {
        return make(version);
    }
    let made = MADE.get_or_init(|| (0..KEPT).map(|minor| make(Version::new(3, minor))).collect());
    made[version.minor as usize].clone()
}

/// A path segment as the client meant it (percent-decoded).
pub(crate) fn decode_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn scope_is_the_path_before_the_collection() {
        assert_eq!(super::scope("/v3/abc/backups/detail").unwrap(), "/v3/abc");
        assert_eq!(
            super::scope("/v3/abc/native/backups/detail").unwrap(),
            "/v3/abc"
        );
        assert_eq!(super::scope("/v3/a%20b/backups/x").unwrap(), "/v3/a%20b");
        assert_eq!(super::scope("/v3/%61bc/backups/x").unwrap(), "/v3/abc");
        assert_eq!(super::scope("/v3/backups/detail").unwrap(), "/v3");
        assert_eq!(super::scope("/v3/native/backups/detail").unwrap(), "/v3");
        assert!(super::scope("/v3/../backups").is_err());
    }

    /// The label worked out before routing is the template the router matches, for every
    /// route and for paths near them.
    #[tokio::test]
    async fn route_templates_agree_with_the_router() {
        use axum::extract::MatchedPath;
        use tower::ServiceExt;
        let templates: Vec<String> = super::FIXED_ROUTES
            .iter()
            .map(|t| t.to_string())
            .chain(super::resource_routes().into_iter().map(|(t, _)| t))
            .collect();
        let mut router = axum::Router::new();
        for t in &templates {
            let answer = axum::routing::any(|m: MatchedPath| async move { m.as_str().to_owned() });
            router = router.route(t, answer);
        }
        let router = router.fallback(|| async { "unmatched" });
        let mut paths = vec![
            "/v3/abc/backups/".to_string(),
            "/v3//backups".to_string(),
            "/v3/abc/volumes/1".to_string(),
            "/nope".to_string(),
            "/v3/abc".to_string(),
            "//".to_string(),
        ];
        for t in &templates {
            for value in ["abc", "backups", "detail", "native", "snapshots", "volumes", "summary", "", "a%2Fb"] {
                let path = t
                    .split('/')
                    .map(|s| if s.starts_with('{') { value } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                paths.push(path.clone());
                paths.push(format!("{path}/more"));
            }
        }
        for path in paths {
            let request = axum::http::Request::get(&path)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
            assert_eq!(super::route_template(&path).as_bytes(), &*body, "{path}");
        }
    }
}
