//! Calling the regions: the merge's [`Source`] over HTTP (through the region-page cache),
//! finding which region holds a backup, and turning region failures into the answer
//! (docs/api.md: failures).

use http::StatusCode;

use crate::cache::key::{Identity, KeyHasher, Owner, PageKey};
use crate::cache::{Caches, ItemKey};
use crate::config::FailurePolicy;
use crate::error::RequestError;
use crate::listing::merge::{Item, Source};
use crate::cinder::resource::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cache::coalescing::{FetchOutcome, Fetching, Lookup};
use crate::regions::guard::Refusal;
use crate::cinder::item::ListPage;
use crate::regions::{CallContext, RegionClient, RegionError, Regions};

/// What a page asks of the regions, for one caller.
pub(crate) struct Asking<'a> {
    pub resource: &'static Resource,
    /// `/v3/{project}` or `/v3`, as the client addressed the proxy.
    pub scope: &'a str,
    /// The fields the page's comparator needs decoded.
    pub fields: &'a [&'static str],
    pub ctx: &'a CallContext,
    /// The caller's part of the region-page keys.
    pub identity: Identity,
    /// Whose data the pages are, for purges.
    pub owner: Owner,
    /// Forced refresh (`no-cache`).
    pub refresh: bool,
}

/// The regions as the merge reads them, through the region-page cache.
pub(crate) struct RegionSource<'a> {
    regions: &'a Arc<Regions>,
    caches: &'a Caches,
    asking: Asking<'a>,
    /// A region's failure was covered by a stale page: the answer must not be stored.
    pub degraded: AtomicBool,
    /// The region-page keys this page was made from (see [`RegionSource::forget_pages`]).
    used: std::sync::Mutex<Vec<PageKey>>,
}

impl<'a> RegionSource<'a> {
    pub fn new(regions: &'a Arc<Regions>, caches: &'a Caches, asking: Asking<'a>) -> Self {
        RegionSource {
            regions,
            caches,
            asking,
            degraded: AtomicBool::new(false),
            used: Default::default(),
        }
    }

    /// Drop the region pages this page was made from: the page is whole and the response
    /// layer keeps it, so they would be held twice (a parsed region page weighs more than the
    /// answer made of it). What is lost: a different query that asks a region exactly the
    /// same thing within the TTL asks it again (README, "Cache").
    pub(crate) fn forget_pages(&self) {
        let used = std::mem::take(&mut *self.used.lock().expect("not poisoned"));
        for key in &used {
            self.caches.pages.forget(key);
        }
    }

    fn key(&self, region: usize, params: &[(String, String)]) -> PageKey {
        let a = &self.asking;
        let mut request = KeyHasher::new();
        request
            .part(a.resource.collection.as_bytes())
            .part(a.ctx.version.to_string().as_bytes())
            .part(a.scope.as_bytes());
        for field in a.fields {
            request.part(field.as_bytes());
        }
        // The query as it is sent: what the region answers depends on nothing else.
        let mut query = String::new();
        for (k, v) in params {
            crate::cinder::query::push_pair(&mut query, k, v);
        }
        request.part(query.as_bytes());
        PageKey {
            identity: a.identity,
            region: region as u32,
            request: request.finish(),
        }
    }
}

impl Source for RegionSource<'_> {
    async fn list(
        &self,
        region: usize,
        params: Vec<(String, String)>,
    ) -> Result<ListPage, RegionError> {
        let key = self.key(region, &params);
        let a = &self.asking;
        let (resource, scope, ctx) = (a.resource, a.scope.to_string(), a.ctx.clone());
        let owner = a.owner.clone();
        let fields = a.fields.to_vec();
        let regions = self.regions.clone();
        let enabled = self.caches.enabled;
        let fetch = move |_: &_, why: Fetching| async move {
            // A refresh of a stale page nobody waits for is the proxy's own work.
            let ctx = CallContext {
                background: ctx.background || why == Fetching::Refresh,
                ..ctx
            };
            let client = regions.region(region);
            let result = client
                .list(resource, &scope, &params, &fields, &ctx)
                .await;
            if let Err(e) = &result {
                log_failure(client, "list", e);
            }
            // A wrong endpoint URL shows as 404s to listings that cannot be 404 otherwise.
            let answered = match &result {
                Ok(_) => Some(http::StatusCode::OK),
                Err(e) => e.status(),
            };
            if scope != "/v3" && !params.iter().any(|(k, _)| k == "marker") {
                if let Some(status) = answered {
                    client.listed(status);
                }
            }
            let failed = result
                .as_ref()
                .err()
                .is_some_and(crate::cache::upstream_failed);
            let store = (enabled && result.is_ok()).then(|| {
                let weight = result
                    .as_ref()
                    .map_or(0, |p| p.weight())
                    .min(u32::MAX as usize) as u32;
                (weight, owner)
            });
            FetchOutcome {
                value: Arc::new(result),
                store,
                failed,
                age: std::time::Duration::ZERO,
            }
        };
        if self.caches.enabled {
            self.used.lock().expect("not poisoned").push(key);
        }
        let served = self.caches.pages.get(key, a.refresh, fetch).await;
        let result = match served {
            Lookup::Hit(e) | Lookup::Recent(e) | Lookup::StaleWhileRevalidate(e) => e.value.clone(),
            Lookup::StaleIfError(e) => {
                self.degraded.store(true, Ordering::Relaxed);
                e.value.clone()
            }
            Lookup::FetchOutcome { fetched, .. } => fetched.value.clone(),
            Lookup::Lost => return Err(RegionError::Lost),
            Lookup::Shed => return Err(RegionError::Refused(Refusal::Overloaded)),
        };
        (*result).clone()
    }
}

fn log_failure(region: &RegionClient, call: &str, e: &RegionError) {
    let name = &region.name;
    match e {
        // A 4xx is usually the caller's (bad filter, no permission): not the region's fault.
        RegionError::Status { status, .. } if status.is_client_error() => {
            tracing::info!(region = %name, call, kind = e.kind(), error = %e, "region refused")
        }
        _ => tracing::warn!(region = %name, call, kind = e.kind(), error = %e, "region failed"),
    }
}

/// Which region holds item `id`: the one remembered from a listing, else every region at
/// once, lowest index among the 200s. 404 only when every region says so.
pub(crate) async fn find_item(
    resource: &Resource,
    regions: &Regions,
    caches: &Caches,
    scope: &str,
    id: &str,
    fields: &[&str],
    ctx: &CallContext,
) -> Result<(usize, Item), RequestError> {
    if !crate::cinder::path::is_path_segment(id) {
        // Not an id any region could hold, nor one that can be asked for without becoming
        // another route: Cinder's answer for an unknown id, and no region call.
        return Err(RequestError::NotFound(resource.not_found(id)));
    }
    let key = ItemKey::of(resource.collection, id);
    if let Some(region) = caches.holders.get(&key) {
        if let Ok(item) = regions
            .region(region)
            .show(resource, scope, id, fields, ctx)
            .await
        {
            return Ok((region, item));
        }
    }
    let calls = regions.iter().enumerate().map(|(i, region)| async move {
        (i, region.show(resource, scope, id, fields, ctx).await)
    });
    let mut failures = Vec::new();
    for (i, result) in futures::future::join_all(calls).await {
        match result {
            Ok(item) => {
                if regions.len() > 1 {
                    caches.holders.insert(key, i);
                }
                return Ok((i, item));
            }
            Err(e) => failures.push((i, e)),
        }
    }
    if let Some(refusal) = auth_refusal(&failures) {
        return Err(refusal);
    }
    let unavailable: Vec<_> = failures
        .iter()
        .filter(|(_, e)| !e.is_not_here())
        .inspect(|(i, e)| log_failure(regions.region(*i), "show", e))
        .map(|(i, e)| format!("{} ({e})", regions.name(*i)))
        .collect();
    if unavailable.is_empty() {
        Err(RequestError::NotFound(resource.not_found(id)))
    } else {
        Err(RequestError::Regions {
            unavailable: true,
            message: format!(
                "{} {id} could not be looked up: {}",
                resource.title,
                unavailable.join(", ")
            ),
        })
    }
}

/// Every region's JSON answer to `GET {scope}/{path}?{params}`, in configuration order, for
/// answers combined whole (a sum is wrong without every part): any region that could not
/// answer fails the request, naming it, whatever `upstream.on_region_failure` says.
pub async fn every_region_json(
    regions: &Regions,
    scope: &str,
    path: &str,
    params: &[(String, String)],
    ctx: &CallContext,
) -> Result<Vec<serde_json::Value>, RequestError> {
    let calls = regions
        .iter()
        .map(|region| region.get_json(scope, path, params, ctx));
    let mut answers = Vec::with_capacity(regions.len());
    let mut failed = Vec::new();
    for (i, answer) in futures::future::join_all(calls).await.into_iter().enumerate() {
        match answer {
            Ok(json) => answers.push(json),
            Err(e) => {
                log_failure(regions.region(i), path, &e);
                failed.push((i, e));
            }
        }
    }
    let missing = judge_failures(regions, &failed)?;
    if !missing.is_empty() {
        return Err(RequestError::Regions {
            unavailable: false,
            message: format!("Regions failed: {}", missing.join(", ")),
        });
    }
    Ok(answers)
}

/// A 401 or 403 from any region wins over data: the caller is not allowed.
fn auth_refusal(failed: &[(usize, RegionError)]) -> Option<RequestError> {
    failed.iter().find_map(|(_, e)| match e {
        RegionError::Status {
            status,
            content_type,
            body,
            www_authenticate,
            ..
        } if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN => {
            Some(RequestError::Upstream {
                status: *status,
                content_type: content_type.clone(),
                body: body.clone(),
                www_authenticate: www_authenticate.as_deref().cloned(),
            })
        }
        _ => None,
    })
}

/// A page some regions failed: `Ok(names)` of the missing regions when answering partially,
/// else the error the failure policy (`upstream.on_region_failure`) makes of it.
pub(crate) fn judge_failures(
    regions: &Regions,
    failed: &[(usize, RegionError)],
) -> Result<Vec<String>, RequestError> {
    if failed.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(refusal) = auth_refusal(failed) {
        return Err(refusal);
    }
    let names = |f: &[(usize, RegionError)]| {
        f.iter()
            .map(|(i, e)| format!("{} ({e})", regions.name(*i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut distinct: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() == regions.len() {
        // Every region gave the same 4xx (a bad filter, say): that is the answer.
        let first = &failed[0].1;
        if let RegionError::Status {
            status,
            content_type,
            body,
            www_authenticate,
            ..
        } = first
        {
            if status.is_client_error() && failed.iter().all(|(_, e)| e.status() == Some(*status)) {
                return Err(RequestError::Upstream {
                    status: *status,
                    content_type: content_type.clone(),
                    body: body.clone(),
                    www_authenticate: www_authenticate.as_deref().cloned(),
                });
            }
        }
        return Err(RequestError::Regions {
            unavailable: true,
            message: format!("No region could answer: {}", names(failed)),
        });
    }
    match regions.on_failure {
        FailurePolicy::Fail => Err(RequestError::Regions {
            unavailable: false,
            message: format!("Regions failed: {}", names(failed)),
        }),
        FailurePolicy::Partial => Ok(distinct
            .iter()
            .map(|&i| regions.name(i).to_string())
            .collect()),
    }
}
