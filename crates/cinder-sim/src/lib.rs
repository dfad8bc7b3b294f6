//! A simulated Cinder region: the backups API as `cinder-api` 29.0.0 serves it (observed
//! behaviour is summarised in the proxy's docs/api.md and docs/cinder-behaviour.md, and checked against
//! the real thing by `tests/conformance`), over an in-memory table. The demo runs three of
//! them; the tests use them as fake regions that count calls and can be told to fail.
//!
//! It is written apart from the proxy on purpose (its own crate, its own parsing in `api.rs`:
//! a bug in the proxy's query parser is not also in its test double), and models what matters
//! for an honest test: SQL ordering with NULLs first ascending, Cinder's marker filter with its
//! NULL→default coalescing (and so its paging bug on nullable keys), `osapi_max_limit`,
//! Cinder's next-link rule, filters and microversion-gated fields.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::{json, Map, Value};

pub mod api;
mod rows;

pub use api::Version;
use api::{bool_from_string, json_answer, query_pairs, urlencode, Dir, Fault as ApiFault, Listing};
pub use rows::{Backup, Cell, Kind, Row, Snapshot, Volume};

/// String order of the simulated database: sqlite's byte order, or a MySQL `*_ci` collation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collation {
    Binary,
    CaseInsensitive,
}

const INVALID_SORT_KEY: &str = "Invalid input received: Invalid sort key";

/// A fault the tests can make a region answer with.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub status: StatusCode,
    pub body: String,
    /// Extra response headers (`Retry-After`, say).
    pub headers: Vec<(&'static str, String)>,
}

impl Fault {
    pub fn new(status: u16, body: impl Into<String>) -> Option<Fault> {
        Some(Fault {
            status: StatusCode::from_u16(status).expect("a status"),
            body: body.into(),
            headers: Vec::new(),
        })
    }

    fn response(&self) -> Response {
        let mut r = json_answer(self.status, self.body.clone(), None);
        for (k, v) in &self.headers {
            r.headers_mut()
                .insert(*k, HeaderValue::try_from(v.as_str()).expect("header value"));
        }
        r
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub max_version: Version,
    pub osapi_max_limit: usize,
    pub collation: Collation,
    /// noauth gives an admin context; false models a member+reader user.
    pub admin: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            max_version: Version::new(3, 71),
            osapi_max_limit: 1000,
            collation: Collation::Binary,
            admin: true,
        }
    }
}

/// One simulated region: its table, settings, and what it has been asked.
#[derive(Debug, Default)]
pub struct SimRegion {
    pub backups: RwLock<Vec<Backup>>,
    pub snapshots: RwLock<Vec<Snapshot>>,
    pub config: RwLock<SimConfig>,
    pub fault: RwLock<Option<Fault>>,
    /// Calls to the listed resources' routes.
    pub calls: AtomicUsize,
    /// Rows sent: every item of a listing, and a shown item.
    pub rows_sent: AtomicUsize,
    /// Every request line (path and query) received, for assertions.
    pub requests: Mutex<Vec<String>>,
    /// Refusals by token (a region that does not accept this caller).
    pub refuse: RwLock<std::collections::HashMap<String, Fault>>,
    /// The `traceparent` of every resource request that had one.
    pub traceparents: Mutex<Vec<String>>,
    /// Signalled (one stored permit) whenever a resource request arrives.
    pub arrived: tokio::sync::Notify,
    /// When set, resource requests wait here for a permit before answering.
    pub gate: RwLock<Option<Arc<tokio::sync::Semaphore>>>,
    /// When set, only requests whose path and query contain it wait at the gate (a slow
    /// query among quick ones).
    pub gate_only: RwLock<Option<String>>,
    pub volumes: RwLock<Vec<Volume>>,
    /// Its availability zones (`os-availability-zone`), all available.
    pub zones: RwLock<Vec<String>>,
    /// When set, resource requests take this long to answer (a slow database).
    pub delay: RwLock<Option<std::time::Duration>>,
    /// When set: (requests in flight now, the most seen at once); each request then takes
    /// a millisecond, like a real database would take some time.
    pub watch: RwLock<Option<(Arc<AtomicUsize>, Arc<AtomicUsize>)>>,
    /// Version documents served (`GET /` and `GET /v3/`).
    pub version_reads: AtomicUsize,
}

impl SimRegion {
    pub fn new(config: SimConfig, backups: Vec<Backup>) -> Arc<SimRegion> {
        Arc::new(SimRegion {
            backups: RwLock::new(backups),
            config: RwLock::new(config),
            ..SimRegion::default()
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(AtomicOrdering::SeqCst)
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let router = Router::new()
            .route("/", get(versions))
            .route("/v3/", get(versions))
            .route("/v3/{project}/os-availability-zone", get(zones))
            .route("/v3/{project}/limits", get(limits))
            .route("/v3/{project}/volumes/summary", get(volume_summary));
        with_routes::<Volume>(with_routes::<Snapshot>(with_routes::<Backup>(router)))
            .route("/v3/{project}/volumes", post(create_volume))
            .route("/v3/{project}/backups", post(create))
            .route(
                "/v3/{project}/backups/{id}/export_record",
                get(export_record),
            )
            .route("/v3/{project}/backups/{id}/restore", post(restore))
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    "404 Not Found\n\nThe resource could not be found.\n\n   ",
                )
            })
            .with_state(self.clone())
    }

    /// Serve on `127.0.0.1:0`; returns the base URL.
    pub async fn spawn(self: &Arc<Self>) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(format!("http://{addr}"))
    }
}

type Sim = State<Arc<SimRegion>>;

/// A table's list, detail and show routes, with and without the project (Cinder >= 3.67
/// takes it from the context).
fn with_routes<R: Row>(router: Router<Arc<SimRegion>>) -> Router<Arc<SimRegion>> {
    let c = R::KIND.collection;
    let mut router = router;
    for scope in ["/v3/{project}", "/v3"] {
        router = router
            .route(
                &format!("{scope}/{c}/detail"),
                get(|s, r| listing::<R>(s, r, true)),
            )
            .route(
                &format!("{scope}/{c}"),
                get(|s, r| listing::<R>(s, r, false)),
            )
            .route(
                &format!("{scope}/{c}/{{id}}"),
                get(show::<R>).merge(delete(remove::<R>)),
            );
    }
    router
}

fn base_of(request: &Request) -> String {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn versions(State(sim): Sim, request: Request) -> Response {
    sim.version_reads.fetch_add(1, AtomicOrdering::SeqCst);
    let max = sim.config.read().expect("lock").max_version;
    let doc = json!({"versions": [{"id": "v3.0", "status": "CURRENT", "version": max.to_string(),
        "min_version": "3.0", "updated": "2023-08-31T00:00:00Z",
        "links": [{"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
                  {"rel": "self", "href": format!("{}/v3/", base_of(&request))}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}]}]});
    let status = if request.uri().path() == "/" {
        StatusCode::MULTIPLE_CHOICES
    } else {
        StatusCode::OK
    };
    json_answer(status, doc.to_string(), None)
}

/// What a request resolved to before the listing runs.
struct Context {
    version: Version,
    project: String,
    /// The project as it appears in the URL: "" on the project-less routes.
    in_url: String,
    admin: bool,
}

/// noauth: `X-Auth-Token: user:project`; the URL project must be the context's.
#[allow(clippy::result_large_err)] // a test double; the error is the answer itself
fn context(sim: &SimRegion, request: &Request) -> Result<Context, Response> {
    sim.calls.fetch_add(1, AtomicOrdering::SeqCst);
    sim.arrived.notify_one();
    let pq = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    sim.requests.lock().expect("lock").push(pq);
    if let Some(tp) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        sim.traceparents.lock().expect("lock").push(tp.to_string());
    }
    if let Some(f) = sim.fault.read().expect("lock").clone() {
        return Err(f.response());
    }
    let config = sim.config.read().expect("lock").clone();
    let Some(token) = request
        .headers()
        .get("x-auth-token")
        .and_then(|t| t.to_str().ok())
    else {
        return Err(StatusCode::NO_CONTENT.into_response());
    };
    if let Some(f) = sim.refuse.read().expect("lock").get(token) {
        return Err(f.response());
    }
    let token_project = token.split_once(':').map_or(token, |(_, p)| p).to_string();
    let version = api::negotiate(
        request
            .headers()
            .get("openstack-api-version")
            .map(|v| v.as_bytes()),
        config.max_version,
    )
    .map_err(|e| e.answer(None))?;
    let url_project = request
        .uri()
        .path()
        .split('/')
        .nth(2)
        .unwrap_or("")
        .to_string();
    // Project-less routes (Cinder >= 3.67): the context's project applies.
    let in_url =
        if url_project == Backup::KIND.collection || url_project == Snapshot::KIND.collection {
            String::new()
        } else {
            url_project
        };
    if !in_url.is_empty() && in_url != token_project {
        return Err(ApiFault::bad_request("Malformed request url").answer(Some(version)));
    }
    Ok(Context {
        version,
        project: token_project,
        in_url,
        admin: config.admin,
    })
}

/// `POST /v3/{project}/backups`: accepted (the simulation stores nothing); for write-through
/// tests.
async fn create(State(sim): Sim) -> Response {
    sim.calls.fetch_add(1, AtomicOrdering::SeqCst);
    let body = json!({"backup": {"id": "new-backup", "name": null, "links": []}}).to_string();
    json_answer(StatusCode::ACCEPTED, body, None)
}

/// `GET /v3/{project}/backups/{id}/export_record`: the backup's record, as large as the row
/// (Cinder base64-encodes the record into `backup_url`; the simulation sends the row's JSON as
/// it is). Pass-through tests use it for an answer of any size.
async fn export_record(State(sim): Sim, request: Request) -> Response {
    let ctx = context(&sim, &request);
    pass_gate(&sim, &request.uri().to_string()).await;
    let ctx = match ctx {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = request
        .uri()
        .path()
        .split('/')
        .nth(4)
        .unwrap_or("")
        .to_string();
    let rows = sim.backups.read().expect("lock");
    match rows.iter().find(|b| b.id == id && !b.deleted) {
        Some(b) => {
            let record = json!({"backup-record": {
                "backup_service": "cinder.backup.drivers.swift.SwiftBackupDriver",
                "backup_url": serde_json::to_string(b).expect("a row serialises"),
            }});
            json_answer(StatusCode::OK, record.to_string(), Some(ctx.version))
        }
        None => ApiFault::not_found(not_found::<Backup>(&id)).answer(Some(ctx.version)),
    }
}

/// A row of `R` the caller can see, by the id in the path's segment `at`: its index, or
/// Cinder's 404.
#[allow(clippy::result_large_err)] // a test double; the error is the answer itself
fn visible<R: Row>(
    sim: &SimRegion,
    ctx: &Context,
    request: &Request,
    at: usize,
) -> Result<(usize, String), Response> {
    let id = request
        .uri()
        .path()
        .split('/')
        .nth(at)
        .unwrap_or("")
        .to_string();
    let rows = R::table(sim).read().expect("lock");
    rows.iter()
        .position(|b| b.id() == id && !b.deleted() && (ctx.admin || b.project_id() == ctx.project))
        .map(|i| (i, id.clone()))
        .ok_or_else(|| ApiFault::not_found(not_found::<R>(&id)).answer(Some(ctx.version)))
}

/// `DELETE /v3/{project}/{collection}/{id}`: 202 and the row deleted, when its status allows
/// (a backup: available or error, `cinder/backup/api.py delete`); Cinder's 404 or 400.
async fn remove<R: Row>(State(sim): Sim, request: Request) -> Response {
    let ctx = match context(&sim, &request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let at = if ctx.in_url.is_empty() { 3 } else { 4 };
    let (i, _) = match visible::<R>(&sim, &ctx, &request, at) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let mut rows = R::table(&sim).write().expect("lock");
    if !rows[i].deletable() {
        let fault = ApiFault::bad_request(format!(
            "Invalid {}: {} status must be available or error",
            R::KIND.member,
            R::KIND.title
        ));
        return fault.answer(Some(ctx.version));
    }
    rows[i].mark_deleted();
    json_answer(StatusCode::ACCEPTED, String::new(), Some(ctx.version))
}

/// `POST /v3/{project}/backups/{id}/restore`: 202 with the restore's summary when the backup
/// is available (`cinder/backup/api.py restore`); Cinder's 404 or 400.
async fn restore(State(sim): Sim, request: Request) -> Response {
    let ctx = match context(&sim, &request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (i, id) = match visible::<Backup>(&sim, &ctx, &request, 4) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let rows = sim.backups.read().expect("lock");
    if rows[i].status != "available" {
        let fault = ApiFault::bad_request("Invalid backup: Backup status must be available");
        return fault.answer(Some(ctx.version));
    }
    let volume = format!("restore_backup_{id}");
    let body = json!({"restore": {"backup_id": id, "volume_id": volume, "volume_name": volume}});
    json_answer(StatusCode::ACCEPTED, body.to_string(), Some(ctx.version))
}

/// Wait at the gate, if one is set (tests hold requests in flight with it), then take the
/// region's delay, if it has one.
async fn pass_gate(sim: &SimRegion, target: &str) {
    let gate = sim.gate.read().expect("lock").clone();
    let gated = match sim.gate_only.read().expect("lock").as_deref() {
        None => true,
        Some(part) => target.contains(part),
    };
    if let (Some(gate), true) = (gate, gated) {
        let _permit = gate.acquire().await;
    }
    let delay = *sim.delay.read().expect("lock");
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
}

async fn show<R: Row>(State(sim): Sim, request: Request) -> Response {
    let ctx = context(&sim, &request);
    pass_gate(&sim, &request.uri().to_string()).await;
    let ctx = match ctx {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = last_segment(&request);
    let rows = R::table(&sim).read().expect("lock");
    let found = rows
        .iter()
        .find(|b| b.id() == id && !b.deleted() && (ctx.admin || b.project_id() == ctx.project));
    match found {
        Some(b) => {
            sim.rows_sent.fetch_add(1, AtomicOrdering::SeqCst);
            let item = b.detail(ctx.version, &base_of(&request), &ctx.in_url, ctx.admin);
            let mut body = Map::new();
            body.insert(R::KIND.member.into(), Value::Object(item));
            json_answer(
                StatusCode::OK,
                Value::Object(body).to_string(),
                Some(ctx.version),
            )
        }
        None => ApiFault::not_found(not_found::<R>(&id)).answer(Some(ctx.version)),
    }
}

/// Count a request in flight while it takes the millisecond a database would, when watched.
async fn watched(sim: &SimRegion) {
    let watch = sim.watch.read().expect("lock").clone();
    if let Some((now, peak)) = &watch {
        let n = now.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        peak.fetch_max(n, AtomicOrdering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        now.fetch_sub(1, AtomicOrdering::SeqCst);
    }
}

/// `GET /v3/{project}/volumes/summary` (3.12): the project's live volumes counted and their
/// sizes summed; from 3.36 each metadata key's distinct values (`db/api.py
/// get_volume_summary`, filters not modelled).
async fn volume_summary(State(sim): Sim, request: Request) -> Response {
    let ctx = match context(&sim, &request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let volumes = sim.volumes.read().expect("lock");
    let mine: Vec<&Volume> = volumes
        .iter()
        .filter(|v| !v.deleted && v.project_id == ctx.project)
        .collect();
    let mut summary = json!({
        "total_count": mine.len(),
        "total_size": mine.iter().map(|v| v.size).sum::<i64>(),
    });
    if ctx.version >= Version::new(3, 36) {
        let mut metadata: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in mine.iter().flat_map(|v| v.metadata.iter()) {
            let values = metadata.entry(k).or_default();
            if !values.contains(&v.as_str()) {
                values.push(v);
            }
        }
        summary["metadata"] = json!(metadata);
    }
    let body = json!({ "volume-summary": summary }).to_string();
    json_answer(StatusCode::OK, body, Some(ctx.version))
}

/// `GET /v3/{project}/limits`: no limits; a route the proxy only passes through.
async fn limits(State(sim): Sim, request: Request) -> Response {
    let ctx = context(&sim, &request);
    pass_gate(&sim, &request.uri().to_string()).await;
    watched(&sim).await;
    match ctx {
        Ok(c) => {
            let body = r#"{"limits": {"rate": [], "absolute": {}}}"#;
            json_answer(StatusCode::OK, body.into(), Some(c.version))
        }
        Err(r) => r,
    }
}

/// `POST /v3/{project}/volumes`: accepted, the new volume held here (its id counted from the
/// ones held); for routing tests.
async fn create_volume(State(sim): Sim, request: Request) -> Response {
    let ctx = match context(&sim, &request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut volumes = sim.volumes.write().expect("lock");
    let id = format!("new-volume-{}", volumes.len());
    volumes.push(Volume::held(&id, &ctx.project));
    let body = json!({"volume": {"id": id, "status": "creating"}}).to_string();
    json_answer(StatusCode::ACCEPTED, body, Some(ctx.version))
}

/// `GET /v3/{project}/os-availability-zone`: its zones, as Cinder lists them
/// (`api/contrib/availability_zones.py`).
async fn zones(State(sim): Sim, request: Request) -> Response {
    let ctx = match context(&sim, &request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let zones: Vec<Value> = sim
        .zones
        .read()
        .expect("lock")
        .iter()
        .map(|z| json!({"zoneName": z, "zoneState": {"available": true}}))
        .collect();
    let body = json!({ "availabilityZoneInfo": zones }).to_string();
    json_answer(StatusCode::OK, body, Some(ctx.version))
}

/// The path's last segment: the item a member route names.
fn last_segment(request: &Request) -> String {
    request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

fn not_found<R: Row>(id: &str) -> String {
    format!("{} {id} could not be found.", R::KIND.title)
}

async fn listing<R: Row>(State(sim): Sim, request: Request, detail: bool) -> Response {
    let ctx = context(&sim, &request);
    pass_gate(&sim, &request.uri().to_string()).await;
    watched(&sim).await;
    let ctx = match ctx {
        Ok(c) => c,
        Err(r) => return r,
    };
    let config = sim.config.read().expect("lock").clone();
    let rows = R::table(&sim).read().expect("lock");
    match list(&rows, &config, &ctx, request.uri().query()) {
        Ok(page) => {
            sim.rows_sent
                .fetch_add(page.rows.len(), AtomicOrdering::SeqCst);
            let base = base_of(&request);
            let items: Vec<Value> = page
                .rows
                .iter()
                .map(|b| {
                    let mut d = b.detail(ctx.version, &base, &ctx.in_url, ctx.admin);
                    if !detail {
                        d.retain(|k, _| R::KIND.summary.contains(&k.as_str()));
                    }
                    Value::Object(d)
                })
                .collect();
            let mut body = Map::new();
            let c = R::KIND.collection;
            body.insert(c.into(), Value::Array(items));
            if let Some(marker) = page.next_marker {
                let collection = if detail {
                    format!("{c}/detail")
                } else {
                    c.to_string()
                };
                let scope = if ctx.in_url.is_empty() {
                    String::new()
                } else {
                    format!("/{}", ctx.in_url)
                };
                let href = format!(
                    "{base}/v3{scope}/{collection}?{}",
                    next_query(request.uri().query(), &marker)
                );
                body.insert(format!("{c}_links"), json!([{"rel": "next", "href": href}]));
            }
            if let Some(count) = page.count {
                body.insert("count".into(), json!(count));
            }
            json_answer(
                StatusCode::OK,
                Value::Object(body).to_string(),
                Some(ctx.version),
            )
        }
        Err(e) => e.answer(Some(ctx.version)),
    }
}

fn next_query(raw: Option<&str>, marker: &str) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(raw.unwrap_or(""));
    pairs.retain(|(k, _)| k != "marker");
    pairs.push(("marker".into(), marker.into()));
    urlencode(&pairs)
}

struct SimPage<'a, R> {
    rows: Vec<&'a R>,
    next_marker: Option<String>,
    count: Option<usize>,
}

fn list<'a, R: Row>(
    rows: &'a [R],
    config: &SimConfig,
    ctx: &Context,
    raw: Option<&str>,
) -> Result<SimPage<'a, R>, ApiFault> {
    let kind = R::KIND;
    // Pagination and sort parameters, with Cinder's checks in Cinder's order.
    let q = Listing::parse(
        raw,
        ctx.version,
        config.osapi_max_limit,
        kind.name_sort_since,
    )?;
    let mut filters: Vec<(String, String)> = q.filters.clone();
    let mut all_tenants = false;
    if ctx.admin {
        if let Some(pos) = filters.iter().rposition(|(k, _)| k == "all_tenants") {
            let v = filters[pos].1.clone();
            all_tenants = match bool_from_string(&v) {
                Some(b) => b,
                None if kind.strict_all_tenants => {
                    return Err(ApiFault::bad_request(format!(
                        "all_tenants must be a boolean, got '{v}'."
                    )))
                }
                None => false,
            };
        }
        filters.retain(|(k, _)| k != "all_tenants");
    } else {
        filters.retain(|(k, _)| k != "all_tenants");
        if ctx.version >= Version::new(3, 31) {
            let mut bad: Vec<&str> = filters
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !kind.filters.contains(k))
                .collect();
            bad.dedup();
            if !bad.is_empty() {
                return Err(ApiFault::bad_request(format!(
                    "Invalid filters {} are found in query options.",
                    bad.join(",")
                )));
            }
        }
        filters.retain(|(k, _)| kind.kept_filters.contains(&k.as_str()));
    }
    // `key~` is a LIKE filter from 3.31 on; below it is ignored.
    if ctx.version < Version::new(3, 31) {
        filters.retain(|(k, _)| !k.ends_with('~'));
    }
    // A dict: the last value of a repeated key wins.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in filters {
        let column = match k.as_str() {
            "name" => "display_name".to_string(),
            "name~" => "display_name~".to_string(),
            _ => k,
        };
        last.insert(column, v);
    }

    let mut matching: Vec<&R> = rows
        .iter()
        .filter(|b| !b.deleted() && (all_tenants || b.project_id() == ctx.project))
        .collect();
    for (column, value) in &last {
        if let Some(col) = column.strip_suffix('~') {
            let needle = value.to_lowercase();
            matching.retain(|b| match b.cell(col) {
                Some(Cell::Text(s)) => like(&s.to_lowercase(), &needle),
                _ => false,
            });
        } else {
            matching.retain(|b| match b.cell(column) {
                Some(Cell::Text(s)) | Some(Cell::Time(s)) => s == value,
                Some(Cell::Int(n)) => n.to_string() == *value,
                _ => false, // NULL or not a column: matches nothing
            });
        }
    }
    let count = q.with_count.then_some(matching.len());

    // ORDER BY, then the marker filter, then OFFSET/LIMIT (db/api.py, sqlalchemyutils.py).
    let keys = q.sort.clone();
    let collation = config.collation;
    let marker_row = match &q.marker {
        Some(m) => Some(
            rows.iter()
                .find(|b| {
                    b.id() == m && !b.deleted() && (ctx.admin || b.project_id() == ctx.project)
                })
                .ok_or_else(|| ApiFault::not_found(not_found::<R>(m)))?,
        ),
        None => None,
    };
    if keys.iter().any(|(k, _)| !R::is_column(k)) {
        return Err(ApiFault::bad_request(INVALID_SORT_KEY));
    }
    matching.sort_by(|a, b| order_by(*a, *b, &keys, collation));
    if let Some(m) = marker_row {
        matching.retain(|b| after_marker(*b, m, &keys, collation));
    }
    let rows: Vec<&R> = matching.into_iter().skip(q.offset).take(q.limit).collect();
    // common.py _get_collection_links
    let item_count = match count {
        Some(c) if c > 0 => c,
        _ => rows.len(),
    };
    let next_marker = (!rows.is_empty() && q.limit <= item_count)
        .then(|| rows.last().expect("non-empty").id().to_string());
    Ok(SimPage {
        rows,
        next_marker,
        count,
    })
}

/// SQL `LIKE %needle%` with `%` and `_` as wildcards (Cinder does not escape them).
fn like(hay: &str, needle: &str) -> bool {
    let pattern: Vec<char> = format!("%{needle}%").chars().collect();
    let text: Vec<char> = hay.chars().collect();
    fn matches(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|i| matches(&p[1..], &t[i..])),
            Some('_') => !t.is_empty() && matches(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && matches(&p[1..], &t[1..]),
        }
    }
    matches(&pattern, &text)
}

fn cmp_cells(a: Cell<'_>, b: Cell<'_>, collation: Collation) -> Ordering {
    match (a, b) {
        (Cell::Null, Cell::Null) => Ordering::Equal,
        (Cell::Null, _) => Ordering::Less, // sqlite and MySQL: NULLs first ascending
        (_, Cell::Null) => Ordering::Greater,
        (Cell::Int(x), Cell::Int(y)) => x.cmp(&y),
        (Cell::Text(x), Cell::Text(y)) if collation == Collation::CaseInsensitive => {
            x.to_lowercase().cmp(&y.to_lowercase())
        }
        (Cell::Text(x), Cell::Text(y)) | (Cell::Time(x), Cell::Time(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

fn order_by<R: Row>(a: &R, b: &R, keys: &[(String, Dir)], collation: Collation) -> Ordering {
    for (k, dir) in keys {
        let o = cmp_cells(
            a.cell(k).unwrap_or(Cell::Null),
            b.cell(k).unwrap_or(Cell::Null),
            collation,
        );
        let o = if *dir == Dir::Desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// `paginate_query`'s marker criteria compare `COALESCE(column, default)` on both sides, the
/// default by column type (`sqlalchemyutils._get_default_column_value`).
fn coalesced<'a, R: Row>(row: &'a R, column: &str) -> Cell<'a> {
    match row.cell(column) {
        Some(Cell::Null) | None if R::KIND.int_columns.contains(&column) => Cell::Int(0),
        Some(Cell::Null) | None if R::KIND.time_columns.contains(&column) => {
            Cell::Time("1900-01-01T00:00:00.000000")
        }
        Some(Cell::Null) | None => Cell::Text(""),
        Some(value) => value,
    }
}

fn after_marker<R: Row>(row: &R, marker: &R, keys: &[(String, Dir)], collation: Collation) -> bool {
    let cmp = |k: &str| cmp_cells(coalesced(row, k), coalesced(marker, k), collation);
    for (i, (k, dir)) in keys.iter().enumerate() {
        if !keys[..i].iter().all(|(kj, _)| cmp(kj) == Ordering::Equal) {
            continue;
        }
        let o = cmp(k);
        let beyond = if *dir == Dir::Desc {
            o == Ordering::Less
        } else {
            o == Ordering::Greater
        };
        if beyond {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(id: &str, name: Option<&str>, created: &str) -> Backup {
        Backup {
            id: id.into(),
            project_id: "p".into(),
            user_id: "u".into(),
            status: "available".into(),
            size: 1,
            object_count: Some(1),
            availability_zone: Some("az1".into()),
            container: None,
            created_at: created.into(),
            updated_at: None,
            display_name: name.map(str::to_string),
            display_description: None,
            fail_reason: None,
            volume_id: "v".into(),
            parent_id: None,
            num_dependent_backups: 0,
            snapshot_id: None,
            data_timestamp: created.into(),
            metadata: BTreeMap::new(),
            deleted: false,
        }
    }

    fn ids(rows: &[Backup], query: &str, version: Version) -> Vec<String> {
        let ctx = Context {
            version,
            project: "p".into(),
            in_url: "p".into(),
            admin: true,
        };
        let page = list(rows, &SimConfig::default(), &ctx, Some(query)).unwrap();
        page.rows.iter().map(|b| b.id.clone()).collect()
    }

    #[test]
    fn default_order_and_ties() {
        let t = "2024-01-01T00:00:00.000000";
        let rows = vec![
            row("tie-a", None, t),
            row("tie-c", None, t),
            row("tie-b", None, t),
        ];
        assert_eq!(ids(&rows, "", Version::MIN), ["tie-c", "tie-b", "tie-a"]);
    }

    /// The simulated region reproduces Cinder's bug: walking `name asc` with a NULL and an
    /// empty name loses the empty one (docs/cinder-behaviour.md, "Walks over nullable sort
    /// keys").
    #[test]
    fn marker_walk_over_null_names_loses_a_row_like_cinder() {
        let rows = vec![
            row("a", None, "2024-01-01T00:00:00.000000"),
            row("b", None, "2024-01-03T00:00:00.000000"),
            row("c", Some(""), "2024-01-02T00:00:00.000000"),
            row("d", Some("x"), "2024-01-04T00:00:00.000000"),
        ];
        let v = Version::new(3, 37);
        assert_eq!(ids(&rows, "sort=name:asc", v), ["a", "b", "c", "d"]);
        // After marker b (NULL name → ''): '' rows need created_at > b's, so c is lost.
        assert_eq!(ids(&rows, "sort=name:asc&marker=b", v), ["d"]);
    }

    #[test]
    fn like_filter() {
        assert!(like("nightly-backup", "ly-b"));
        assert!(like("abc", "_"));
        assert!(!like("", "_"));
    }
}
