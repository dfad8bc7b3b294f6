//! Version documents (`GET /`, `GET /v3/`) and region health. The proxy's maximum
//! microversion is the lowest maximum over the regions that answered, so a request the
//! proxy accepts is one every region accepts.

use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::ApiError;
use crate::app::AppState;
use crate::microversion::Version;

const DEFAULT_UPDATED: &str = "2023-08-31T00:00:00Z";

#[derive(Debug, Clone, Default)]
struct RegionVersion {
    max: Option<Version>,
    updated: Option<String>,
    reachable: bool,
}

/// What the regions said in their last version documents.
#[derive(Debug, Default)]
pub struct VersionBook {
    regions: RwLock<Vec<RegionVersion>>,
}

impl VersionBook {
    pub fn new(regions: usize) -> VersionBook {
        VersionBook {
            regions: RwLock::new(vec![RegionVersion::default(); regions]),
        }
    }

    /// The lowest maximum over regions that reported one; 3.0 until any has.
    pub fn max(&self) -> Version {
        let regions = self.regions.read().expect("not poisoned");
        regions
            .iter()
            .filter_map(|r| r.max)
            .min()
            .unwrap_or(Version::MIN)
    }

    pub fn any_reachable(&self) -> bool {
        self.regions
            .read()
            .expect("not poisoned")
            .iter()
            .any(|r| r.reachable)
    }

    fn updated(&self) -> String {
        let regions = self.regions.read().expect("not poisoned");
        regions
            .iter()
            .find_map(|r| r.updated.clone())
            .unwrap_or_else(|| DEFAULT_UPDATED.to_string())
    }

    fn record(&self, region: usize, doc: Option<&Value>) {
        let v3 = doc.and_then(|d| d["versions"].as_array()).and_then(|vs| {
            vs.iter()
                .find(|v| v["id"].as_str().is_some_and(|id| id.starts_with("v3")))
        });
        let entry = RegionVersion {
            max: v3
                .and_then(|v| v["version"].as_str())
                .and_then(Version::parse),
            // A timestamp; anything longer is not kept (the book must not grow on a region's say).
            updated: v3
                .and_then(|v| v["updated"].as_str())
                .filter(|u| u.len() <= 64)
                .map(str::to_string),
            reachable: doc.is_some(),
        };
        let mut regions = self.regions.write().expect("not poisoned");
        // A region that stopped answering keeps its last known maximum: versions do not
        // shrink while it is down.
        let old = std::mem::take(&mut regions[region]);
        regions[region] = RegionVersion {
            max: entry.max.or(old.max),
            updated: entry.updated.or(old.updated),
            reachable: entry.reachable,
        };
    }
}

/// Read every region's version document once, concurrently.
pub async fn refresh(state: &AppState) {
    let upstream = &state.upstream;
    let calls = (0..upstream.regions.len()).map(|i| async move { (i, upstream.versions(i).await) });
    for (i, result) in futures::future::join_all(calls).await {
        match result {
            Ok(doc) => state.versions.record(i, Some(&doc)),
            Err(e) => {
                tracing::warn!(region = %upstream.regions[i].name, kind = e.kind(), error = %e, "version document unavailable");
                state.versions.record(i, None);
            }
        }
    }
}

/// Keep the book fresh for as long as the proxy runs.
pub fn spawn_refresher(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.upstream.version_refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first refresh ran before serving
        loop {
            tick.tick().await;
            refresh(&state).await;
        }
    })
}

fn document(state: &AppState, base: &str) -> String {
    json!({"versions": [{
        "id": "v3.0",
        "status": "CURRENT",
        "version": state.versions.max().to_string(),
        "min_version": Version::MIN.to_string(),
        "updated": state.versions.updated(),
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{base}/v3/")}
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}]
    }]})
    .to_string()
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
pub async fn root(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let base = match super::public_base(&state, &parts) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    json_response(StatusCode::MULTIPLE_CHOICES, document(&state, &base))
}

/// `GET /v3/`: behind authentication in Cinder, 200.
pub async fn v3(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if parts
        .headers
        .get("x-auth-token")
        .is_none_or(|t| t.is_empty())
    {
        return ApiError::Unauthorized("The request you have made requires authentication.".into())
            .into_response();
    }
    let base = match super::public_base(&state, &parts) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    json_response(StatusCode::OK, document(&state, &base))
}

/// 200 when at least one region answered its last version probe.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.versions.any_reachable() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no region reachable").into_response()
    }
}
