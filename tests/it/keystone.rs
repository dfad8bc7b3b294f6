//! Tokens checked at the edge, against a Keystone double on loopback that answers as
//! Keystone 30 does (`POST /v3/auth/tokens` → 201 with `X-Subject-Token`; `GET
//! /v3/auth/tokens` with the service token and `X-Subject-Token` → 200 with the token, 404 when
//! unknown, 401 for a bad service token) and counts its validations. Its client tokens are
//! `user:project` strings, which the simulated regions accept as noauth tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use cinder_sim::SimConfig;
use serde_json::json;

use crate::support::{rows, Harness};

const SERVICE_TOKEN: &str = "the-proxys-own-token";

#[derive(Default)]
struct FakeKeystone {
    /// Client token → role names.
    tokens: RwLock<HashMap<String, Vec<&'static str>>>,
    /// Client token → when it expires (RFC 3339), when not far in the future.
    expiry: RwLock<HashMap<String, std::time::SystemTime>>,
    validations: AtomicUsize,
    authentications: AtomicUsize,
    down: std::sync::atomic::AtomicBool,
    /// Validations being answered now, and the most at once.
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// When set, validations wait here.
    gate: RwLock<Option<Arc<tokio::sync::Semaphore>>>,
}

/// A validation being answered: counted in `in_flight` until it is dropped.
struct Answering<'a>(&'a FakeKeystone);

impl<'a> Answering<'a> {
    fn start(k: &'a FakeKeystone) -> Answering<'a> {
        let now = k.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        k.peak.fetch_max(now, Ordering::SeqCst);
        Answering(k)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeKeystone {
    /// Keystone knows `token` (`user:project`), with these roles.
    fn grant(&self, token: &str, roles: &[&'static str]) {
        self.tokens
            .write()
            .unwrap()
            .insert(token.to_string(), roles.to_vec());
    }
}

async fn issue(State(k): State<Arc<FakeKeystone>>) -> impl IntoResponse {
    k.authentications.fetch_add(1, Ordering::SeqCst);
    let body =
        json!({"token": {"expires_at": "2099-01-01T00:00:00.000000Z", "user": {"id": "proxy"}}});
    (
        StatusCode::CREATED,
        [("X-Subject-Token", SERVICE_TOKEN)],
        body.to_string(),
    )
}

async fn validate(State(k): State<Arc<FakeKeystone>>, headers: HeaderMap) -> impl IntoResponse {
    if k.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    if headers.get("x-auth-token").and_then(|v| v.to_str().ok()) != Some(SERVICE_TOKEN) {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    k.validations.fetch_add(1, Ordering::SeqCst);
    let _answering = Answering::start(&k);
    let gate = k.gate.read().unwrap().clone();
    if let Some(gate) = gate {
        let _pass = gate.acquire().await;
    }
    let subject = headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(roles) = k.tokens.read().unwrap().get(subject).cloned() else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    let expires = k.expiry.read().unwrap().get(subject).copied();
    // Keystone does not know an expired token any more.
    if expires.is_some_and(|at| at <= std::time::SystemTime::now()) {
        return (StatusCode::NOT_FOUND, String::new());
    }
    let expires_at = match expires {
        Some(at) => humantime::format_rfc3339_micros(at).to_string(),
        None => "2099-01-01T00:00:00.000000Z".to_string(),
    };
    let (user, project) = subject.split_once(':').unwrap_or((subject, ""));
    let roles: Vec<_> = roles.iter().map(|r| json!({"name": r, "id": r})).collect();
    let body = json!({"token": {
        "expires_at": expires_at,
        "user": {"id": user, "name": user},
        "project": {"id": project, "domain": {"id": "default"}},
        "roles": roles,
    }});
    (StatusCode::OK, body.to_string())
}

async fn keystone() -> (Arc<FakeKeystone>, String) {
    let k = Arc::new(FakeKeystone::default());
    let app = axum::Router::new()
        .route("/v3/auth/tokens", get(validate).post(issue))
        .with_state(k.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (k, url)
}

async fn proxy(k: &str, extra: &str, rows_per_region: usize) -> Harness {
    Harness::start(
        vec![
            (SimConfig::default(), rows("a", rows_per_region)),
            (SimConfig::default(), rows("b", rows_per_region)),
        ],
        &format!(
            "[keystone_authtoken]\nauth_url = \"{k}/v3\"\nusername = \"vbs\"\npassword = \"pw\"\nproject_name = \"service\"\nwww_authenticate_uri = \"https://keystone.example:5000\"\n{extra}"
        ),
    )
    .await
}

const DETAIL: &str = "/v3/abc123/backups/detail";

/// The status of a listing asked with `token`.
async fn status(h: &Harness, token: &str) -> u16 {
    h.get_with(DETAIL, &[("X-Auth-Token", token)]).await.status
}

/// Asks with `token` until the proxy refuses it (401), which must happen within 10 s; every
/// answer before that is a 200.
async fn until_refused(h: &Harness, token: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = status(h, token).await;
        if status == 401 {
            return;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "{token} was never refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tokens_keystone_does_not_know_are_refused_at_the_edge_as_authtoken_does() {
    let (k, url) = keystone().await;
    k.grant("alice:abc123", &["member", "reader"]);
    let h = proxy(&url, "", 2).await;
    for headers in [vec![], vec![("X-Auth-Token", "garbage")]] {
        let r = h.get_with(DETAIL, &headers).await;
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Keystone uri=\"https://keystone.example:5000\"")
        );
        assert_eq!(
            r.json(),
            json!({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}})
        );
    }
    assert_eq!(h.total_calls(), 0, "no region saw them");
    // The version list needs no token; the proxy's own routes neither.
    assert_eq!(h.get_with("/", &[]).await.status, 300);
    assert_eq!(h.get_with("/healthz", &[]).await.status, 200);

    let ok = h
        .get_with(DETAIL, &[("X-Auth-Token", "alice:abc123")])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.ids().len(), 4);
    // A token of another project on this project's URL: Cinder's 400, no region call.
    k.grant("mallory:other", &["admin", "member", "reader"]);
    let calls = h.total_calls();
    let r = h
        .get_with(DETAIL, &[("X-Auth-Token", "mallory:other")])
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["badRequest"]["message"], "Malformed request url");
    assert_eq!(h.total_calls(), calls);
    // The project-less route takes the project from the token.
    let r = h
        .get_with("/v3/backups/detail", &[("X-Auth-Token", "mallory:other")])
        .await;
    assert_ne!(r.status, 400, "{}", r.text);
    assert_eq!(
        k.authentications.load(Ordering::SeqCst),
        1,
        "one service token, kept"
    );
}

/// Round two (issue 23): a flood of tokens never seen before costs Keystone a bounded number of
/// validations at once (2,000 random tokens made 1,996 at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_validations_towards_keystone_are_bounded() {
    let (k, url) = keystone().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *k.gate.write().unwrap() = Some(gate.clone());
    let h = Arc::new(proxy(&url, "", 1).await);
    const TOKENS: usize = 200;
    let clients: Vec<_> = (0..TOKENS)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                let token = format!("random{i}:abc123");
                h.get_with(DETAIL, &[("X-Auth-Token", token.as_str())])
                    .await
                    .status
            })
        })
        .collect();
    let max = vbs_proxy::identity::MAX_VALIDATIONS;
    let inside = || h.state.metrics.http.in_flight.get() as usize;
    crate::support::until("every request inside the proxy", || inside() == TOKENS).await;
    crate::support::until("the first validations at Keystone", || {
        k.in_flight.load(Ordering::SeqCst) == max
    })
    .await;
    gate.add_permits(TOKENS);
    for client in clients {
        assert_eq!(client.await.unwrap(), 401, "unknown tokens");
    }
    assert!(
        k.peak.load(Ordering::SeqCst) <= max,
        "{}",
        k.peak.load(Ordering::SeqCst)
    );
    assert_eq!(k.validations.load(Ordering::SeqCst), TOKENS);
}

/// Round two (issue 23): the VBS alias's project-less route is served under Keystone like the
/// other project-less routes (it was taken for a project named `native`: 400).
#[tokio::test]
async fn the_project_less_native_alias_is_served_under_keystone() {
    let (k, url) = keystone().await;
    k.grant("alice:abc123", &["member", "reader"]);
    let h = proxy(&url, "", 2).await;
    let headers = [
        ("X-Auth-Token", "alice:abc123"),
        ("OpenStack-API-Version", "volume 3.67"),
    ];
    let plain = h.get_with("/v3/backups/detail", &headers).await;
    let alias = h.get_with("/v3/native/backups/detail", &headers).await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    assert_eq!(alias.status, 200, "{}", alias.text);
    assert_eq!(alias.ids(), plain.ids());
    assert_eq!(alias.ids().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_a_new_token_cost_keystone_one_validation() {
    let (k, url) = keystone().await;
    k.grant("bob:abc123", &["member", "reader"]);
    let h = Arc::new(proxy(&url, "", 2).await);
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { status(&h, "bob:abc123").await })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(k.validations.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn project_scope_shares_entries_between_users_with_the_same_roles_only() {
    let (k, url) = keystone().await;
    k.grant("alice:abc123", &["member", "reader"]);
    k.grant("bob:abc123", &["reader", "member"]);
    k.grant("carol:abc123", &["admin", "member", "reader"]);
    let h = proxy(&url, "[cache]\nscope = \"project\"\nttl = \"60s\"\n", 2).await;
    assert_eq!(status(&h, "alice:abc123").await, 200);
    let after_alice = h.total_calls();
    assert_eq!(after_alice, 2);
    let bob = h.get_with(DETAIL, &[("X-Auth-Token", "bob:abc123")]).await;
    assert_eq!(bob.status, 200);
    assert_eq!(
        h.total_calls(),
        after_alice,
        "bob (same roles, same project) shares alice's entry"
    );
    assert_eq!(
        bob.header("cache-status").map(|s| s.contains("hit")),
        Some(true),
        "{:?}",
        bob.header("cache-status")
    );
    // Another role set never shares: an admin's listing may hold fields a member's must not.
    assert_eq!(status(&h, "carol:abc123").await, 200);
    assert_eq!(h.total_calls(), after_alice + 2);

    // With the default scope (token), even the same roles do not share.
    let h = proxy(&url, "[cache]\nttl = \"60s\"\n", 2).await;
    h.get_with(DETAIL, &[("X-Auth-Token", "alice:abc123")])
        .await;
    h.get_with(DETAIL, &[("X-Auth-Token", "bob:abc123")]).await;
    assert_eq!(h.total_calls(), 4);
}

#[tokio::test]
async fn keystone_down_keeps_validated_tokens_and_refuses_new_ones_with_503() {
    let (k, url) = keystone().await;
    k.grant("alice:abc123", &["member", "reader"]);
    k.grant("bob:abc123", &["member", "reader"]);
    let h = proxy(&url, "", 1).await;
    assert_eq!(status(&h, "alice:abc123").await, 200);
    k.down.store(true, Ordering::SeqCst);
    assert_eq!(status(&h, "alice:abc123").await, 200, "validated before");
    let calls = h.total_calls();
    let r = h.get_with(DETAIL, &[("X-Auth-Token", "bob:abc123")]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.header("retry-after").is_some());
    assert_eq!(h.total_calls(), calls, "never let through unchecked");
    k.down.store(false, Ordering::SeqCst);
    assert_eq!(status(&h, "bob:abc123").await, 200, "not cached as invalid");
}

#[tokio::test]
async fn a_revoked_token_is_refused_once_its_validation_expires() {
    let (k, url) = keystone().await;
    k.grant("alice:abc123", &["member", "reader"]);
    let h = proxy(&url, "token_cache_time = \"300ms\"\n", 1).await;
    assert_eq!(status(&h, "alice:abc123").await, 200);
    k.tokens.write().unwrap().clear();
    // Within token_cache_time it may still pass (as authtoken); after it, never.
    until_refused(&h, "alice:abc123").await;
}

#[test]
fn project_scope_needs_keystone() {
    let e = vbs_proxy::Config::from_toml(
        "[cache]\nscope = \"project\"\n[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\n",
    )
    .expect_err("refused")
    .to_string();
    assert!(
        e.contains("`cache.scope`") && e.contains("keystone_authtoken"),
        "{e}"
    );
    let e = vbs_proxy::Config::from_toml(
        "[keystone_authtoken]\nauth_url = \"http://127.0.0.1:5000/v3\"\nusername = \"u\"\n[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\n",
    )
    .expect_err("refused")
    .to_string();
    assert!(e.contains("`keystone_authtoken.password`"), "{e}");
    let e = vbs_proxy::Config::from_toml("[regions_from_catalog]\nservice_type = \"volumev3\"\n")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("`regions_from_catalog.service_type`") && e.contains("keystone_authtoken"),
        "{e}"
    );
    let e = vbs_proxy::Config::from_toml("")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("at least one [[regions]]"), "{e}");
}

#[tokio::test]
async fn a_regions_401_keeps_its_www_authenticate() {
    // No [keystone_authtoken]: the regions judge tokens, and the client learns where to
    // authenticate from them, as it would from Cinder.
    let h = Harness::start(vec![(SimConfig::default(), rows("a", 1))], "").await;
    let mut fault = cinder_sim::Fault::new(
        401,
        r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#,
    )
    .expect("fault");
    fault.headers.push((
        "WWW-Authenticate",
        "Keystone uri=\"https://keystone.region.example\"".into(),
    ));
    *h.regions[0].fault.write().unwrap() = Some(fault);
    let r = h.get(DETAIL, None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Keystone uri=\"https://keystone.region.example\"")
    );
}

#[tokio::test]
async fn an_expired_token_is_refused_even_within_token_cache_time() {
    let (k, url) = keystone().await;
    k.grant("alice:abc123", &["member", "reader"]);
    let soon = std::time::SystemTime::now() + std::time::Duration::from_millis(500);
    k.expiry
        .write()
        .unwrap()
        .insert("alice:abc123".into(), soon);
    // token_cache_time is 300 s: the verdict is kept only until the token expires.
    let h = proxy(&url, "", 1).await;
    assert_eq!(status(&h, "alice:abc123").await, 200);
    until_refused(&h, "alice:abc123").await;
    assert!(
        std::time::SystemTime::now() >= soon,
        "refused only once expired"
    );
}
