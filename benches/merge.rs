//! The merge on its own: k regions × 1,000 backups each merged into one 1,000-item page, with
//! the regions' answers either already parsed (merge only) or parsed from their JSON bytes on
//! each call (what a cache miss pays after the network).

use cinder_sim::Row;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use vbs_proxy::cinder::item::ListPage;
use vbs_proxy::cinder::item::{parse_list, Item};
use vbs_proxy::cinder::microversion::Version;
use vbs_proxy::cinder::resource::BACKUPS;
use vbs_proxy::config::Collation;
use vbs_proxy::listing::merge::{self, PageRequest, Source, Start};
use vbs_proxy::listing::sort::{Comparator, SortSpec};
use vbs_proxy::regions::RegionError;

/// Each region's rows, already in the default order, served like Cinder would.
struct Memory {
    regions: Vec<Vec<Item>>,
    bytes: Vec<Bytes>,
    fields: Vec<&'static str>,
    parse: bool,
}

impl Source for Memory {
    async fn list(
        &self,
        region: usize,
        params: Vec<(String, String)>,
    ) -> Result<ListPage, RegionError> {
        let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
        let limit: usize = get("limit").map_or(1000, |l| l.parse().unwrap());
        // These benches start every region from the top.
        assert!(get("marker").is_none());
        let items: Vec<Item> = if self.parse {
            parse_list(self.bytes[region].clone(), &self.fields, &BACKUPS)
                .unwrap()
                .items
                .into_iter()
                .take(limit)
                .collect()
        } else {
            self.regions[region].iter().take(limit).cloned().collect()
        };
        Ok(ListPage {
            has_next: items.len() == limit,
            items,
            count: None,
        })
    }
}

/// The regions' own order for the sort the fields came from (they come in key order).
fn sort_rows(
    a: &cinder_sim::Backup,
    b: &cinder_sim::Backup,
    fields: &[&str],
) -> std::cmp::Ordering {
    let key =
        |x: &cinder_sim::Backup| (x.status.clone(), x.size, x.created_at.clone(), x.id.clone());
    if fields.first() == Some(&"status") {
        // status asc, size desc, created_at asc, id asc
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(kb.1.cmp(&ka.1))
            .then(ka.2.cmp(&kb.2))
            .then(ka.3.cmp(&kb.3))
    } else {
        b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id))
    }
}

fn memory(regions: usize, parse: bool, fields: Vec<&'static str>) -> Memory {
    let bytes: Vec<Bytes> = (0..regions)
        .map(|r| {
            let mut rows = vbs_proxy::demo::sample_backups(r, 1000, 7);
            rows.retain(|b| !b.deleted);
            while rows.len() < 1000 {
                let mut extra = rows[rows.len() % 900].clone();
                extra.id = format!("{}-{}", extra.id, rows.len());
                rows.push(extra);
            }
            rows.sort_by(|a, b| sort_rows(a, b, &fields));
            let items: Vec<_> = rows
                .iter()
                .map(|b| {
                    b.detail(
                        cinder_sim::Version::new(3, 45),
                        "http://127.0.0.1:9000",
                        "p",
                        true,
                    )
                })
                .collect();
            Bytes::from(serde_json::to_vec(&serde_json::json!({ "backups": items })).unwrap())
        })
        .collect();
    let rows = bytes
        .iter()
        .map(|b| parse_list(b.clone(), &fields, &BACKUPS).unwrap().items)
        .collect();
    Memory {
        regions: rows,
        bytes,
        fields,
        parse,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    for (sort_name, sort) in [
        ("default_sort", None),
        ("multi_key_sort", Some("status:asc,size:desc")),
    ] {
        let spec = SortSpec::parse(sort, None, None, Version::MIN, &BACKUPS).unwrap();
        let comparator = Comparator {
            keys: spec.resolve(&BACKUPS, Version::new(3, 45)).unwrap(),
            collation: Collation::Binary,
        };
        for regions in [2usize, 5, 10] {
            for limit in [50usize, 1000] {
                for parse in [false, true] {
                    let source = memory(regions, parse, comparator.fields());
                    let what = if parse { "parse_and_merge" } else { "merge" };
                    let id = BenchmarkId::new(
                        format!("{what}/{sort_name}/limit_{limit}"),
                        format!("{regions}x1000"),
                    );
                    group.bench_with_input(id, &source, |b, source| {
                        b.iter(|| {
                            let req = PageRequest {
                                filters: &[],
                                sort_param: spec.to_param(),
                                comparator: &comparator,
                                limit,
                                offset: 0,
                                with_count: false,
                                chunk: 1000,
                                graces: Default::default(),
                                record_positions: false,
                                max_rows: u64::MAX,
                            };
                            let page = futures::executor::block_on(merge::paginate(
                                source,
                                req,
                                vec![Start::default(); regions],
                            ));
                            assert_eq!(page.items.len(), limit);
                            page
                        })
                    });
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
