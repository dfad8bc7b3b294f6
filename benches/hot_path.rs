//! The pieces of a cache hit and of a page: cursor encode/decode, link rewriting of a
//! 1,000-item page, and the cache-hit path's key computation and lookup for a 50-item page.

use cinder_sim::Row;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vbs_proxy::cache::coalescing::{FetchOutcome, Lookup};
use vbs_proxy::cache::key::{Digest, Identity, ResponseKey};
use vbs_proxy::cache::{Caches, Owner, RenderedPage};
use vbs_proxy::cinder::microversion::Version;
use vbs_proxy::cinder::resource::BACKUPS;
use vbs_proxy::listing::cursor::{Cursor, CursorKey, Position};
use vbs_proxy::listing::links::Rewriter;
use vbs_proxy::listing::render::View;
use vbs_proxy::listing::request::ListQuery;
use vbs_proxy::listing::target::{Target, Targets};

fn page_json(items: usize) -> Vec<u8> {
    let rows = vbs_proxy::demo::sample_backups(0, items, 1);
    let items: Vec<_> = rows
        .iter()
        .map(|b| {
            b.detail(
                cinder_sim::Version::new(3, 45),
                "http://127.0.0.1:9001",
                "p",
                false,
            )
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "backups": items })).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path");
    group.measurement_time(Duration::from_secs(3));

    let key = CursorKey::new(b"0123456789abcdef0123");
    let cursor = Cursor {
        positions: (0..5)
            .map(|i| Position {
                marker: Some(format!("6f0e4c52-a9d8-4cc6-b1e2-f3a4b5c6d7e{i}")),
                skip: 0,
            })
            .collect(),
    };
    let encoded = cursor.encode(&key, b"binding");
    group.bench_function("cursor_encode_5_regions", |b| {
        b.iter(|| cursor.encode(&key, b"binding"))
    });
    group.bench_function("cursor_decode_5_regions", |b| {
        b.iter(|| Cursor::decode(&encoded, &key, b"binding", 5).unwrap())
    });

    let page = page_json(1000);
    let bases = vec!["http://127.0.0.1:9001".to_string()];
    let rewriter = Rewriter::new(&bases, "https://volume.example.com");
    group.bench_function("rewrite_links_1000_items", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(page.len() + 64 * 1000);
            rewriter.write_json(&page, &mut out);
            out
        })
    });

    // The cache-hit path for a 50-item page: parse the query, key it, look it up.
    let config = vbs_proxy::Config::from_toml(
        "[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:9001\"\n",
    )
    .unwrap();
    let caches = Caches::new(&config.cache, 1024);
    let body = bytes::Bytes::from(page_json(50));
    let produced = Arc::new(Ok(RenderedPage {
        etag: Some(RenderedPage::etag_for(&body, None, b"")),
        head: body,
        next_marker: None,
        tail: bytes::Bytes::new(),
        missing_regions: None,
        degraded: false,
        calls: 0,
    }));
    let raw = "limit=50&sort=created_at:desc&status=available";
    let token =
        b"gAAAAABk-a-realistic-length-keystone-fernet-token-0123456789abcdefghijklmnopqrstuvwxyz";
    // As the handler does it: the request's target found by its raw form (worked out the
    // first time only), the caller's HMAC, the response key.
    let targets = Targets::new(1 << 20);
    let version = Version::new(3, 45);
    let make_key = || {
        let path = format!("/v3/p/backups/detail?{raw}");
        let raw_key = Targets::raw_key(&BACKUPS, View::Detail, version, "http://h", &path);
        let target = targets
            .get_or_work_out::<()>(&raw_key, || {
                let query = ListQuery::parse(Some(raw), version, 1000, &BACKUPS).unwrap();
                Ok(Target::new(
                    &BACKUPS,
                    "/v3/p".into(),
                    "/v3/p/backups/detail",
                    query,
                    View::Detail,
                    version,
                    "http://h".into(),
                ))
            })
            .unwrap();
        target.response_key(caches.identity(token))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let p = produced.clone();
        caches
            .responses
            .get(make_key(), false, move |_: &_, _| async move {
                FetchOutcome {
                    value: p,
                    store: Some((1000, Owner::Project("/v3/p".into()))),
                    failed: false,
                    age: std::time::Duration::ZERO,
                }
            })
            .await;
    });
    group.bench_function("cache_hit_key_and_lookup_50_items", |b| {
        b.iter(|| {
            let key = make_key();
            let served = runtime.block_on(
                caches
                    .responses
                    .get(key, false, |_, _| async { unreachable!("a hit") }),
            );
            assert!(matches!(served, Lookup::Hit(_)));
        })
    });

    // What a write costs the caches: 30,000 entries of 10,000 projects and 20,000 callers'
    // project-less listings; the writer's project and its own project-less listings (two
    // entries each) are dropped, nobody else's are looked at.
    let roomy = vbs_proxy::Config::from_toml(
        "[[regions]]\nname = \"a\"\nurl = \"http://127.0.0.1:9001\"\n[cache]\nmax_bytes = \"1GiB\"\n",
    )
    .unwrap();
    let caches = Caches::new(&roomy.cache, 1024);
    let owner_of = |i: u32| match i % 3 {
        0 => Owner::Project(format!("/v3/p{}", i / 3).into()),
        _ => Owner::Caller(Identity([(i % 251) as u8; 32]).with_tail(i)),
    };
    let store = |i: u32, n: u32| {
        let mut target = [0u8; 32];
        target[..4].copy_from_slice(&i.to_be_bytes());
        target[4..8].copy_from_slice(&n.to_be_bytes());
        let key = ResponseKey {
            identity: Identity([0; 32]).with_tail(i),
            target: Digest(target),
        };
        let (p, owner) = (produced.clone(), owner_of(i));
        runtime.block_on(
            caches
                .responses
                .get(key, false, move |_: &_, _| async move {
                    FetchOutcome {
                        value: p,
                        store: Some((1000, owner)),
                        failed: false,
                        age: std::time::Duration::ZERO,
                    }
                }),
        );
    };
    for i in 0..30_000 {
        store(i, 0);
    }
    assert_eq!(caches.responses.entry_count(), 30_000);
    let writer = [owner_of(3), owner_of(4)];
    group.bench_function("purge_after_a_write_30000_entries", |b| {
        b.iter_batched(
            || {
                for n in 1..=2 {
                    store(3, n);
                    store(4, n);
                }
            },
            |()| {
                let n = caches.purge_owners(&writer);
                assert!(n >= 4, "{n}")
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Distinct identities for the bench's callers.
trait WithTail {
    fn with_tail(self, i: u32) -> Identity;
}

impl WithTail for Identity {
    fn with_tail(mut self, i: u32) -> Identity {
        self.0[28..].copy_from_slice(&i.to_be_bytes());
        self
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
