//! The merge on its own: k regions × 1,000 backups each merged into one 1,000-item page, with
//! the regions' answers either already parsed (merge only) or parsed from their JSON bytes on
//! each call (what a cache miss pays after the network).

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use vbs_proxy::config::Collation;
use vbs_proxy::item::{parse_list, Item};
use vbs_proxy::merge::{self, PageRequest, Source, Start};
use vbs_proxy::microversion::Version;
use vbs_proxy::sort::{Comparator, SortSpec};
use vbs_proxy::upstream::{ListPage, RegionError};

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
            parse_list(self.bytes[region].clone(), &self.fields)
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

fn memory(regions: usize, parse: bool, fields: Vec<&'static str>) -> Memory {
    let bytes: Vec<Bytes> = (0..regions)
        .map(|r| {
            let mut rows = vbs_proxy::demo::sample_backups(r, 1000, 7);
            rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
            let items: Vec<_> = rows
                .iter()
                .map(|b| b.detail(Version::new(3, 45), "http://127.0.0.1:9000", "p", true))
                .collect();
            Bytes::from(serde_json::to_vec(&serde_json::json!({ "backups": items })).unwrap())
        })
        .collect();
    let rows = bytes
        .iter()
        .map(|b| parse_list(b.clone(), &fields).unwrap().items)
        .collect();
    Memory {
        regions: rows,
        bytes,
        fields,
        parse,
    }
}

fn bench(c: &mut Criterion) {
    let spec = SortSpec::parse(None, None, None, Version::MIN).unwrap();
    let comparator = Comparator {
        keys: spec.resolve().unwrap(),
        collation: Collation::Binary,
    };
    let mut group = c.benchmark_group("merge_1000_item_page");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    for regions in [5usize, 10] {
        for parse in [false, true] {
            let source = memory(regions, parse, comparator.fields());
            let name = if parse {
                "parse_and_merge"
            } else {
                "merge_only"
            };
            group.bench_with_input(BenchmarkId::new(name, regions), &source, |b, source| {
                b.iter(|| {
                    let req = PageRequest {
                        filters: &[],
                        sort_param: spec.to_param(),
                        comparator: &comparator,
                        limit: 1000,
                        offset: 0,
                        with_count: false,
                        chunk: 1000,
                    };
                    let page = futures::executor::block_on(merge::paginate(
                        source,
                        req,
                        vec![Start::default(); regions],
                    ));
                    assert_eq!(page.items.len(), 1000);
                    page
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
