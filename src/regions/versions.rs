//! What the regions said in their version documents: the proxy's maximum microversion is the
//! lowest maximum over the regions that answered, so a request the proxy accepts is one every
//! region accepts; and whether any region answered at all (readiness).

use std::sync::RwLock;

use serde_json::Value;

use super::Regions;
use crate::cinder::microversion::Version;

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

    /// The lowest maximum over regions that reported one; 3.0 until any has (requests are
    /// then negotiated conservatively; the version documents say it is unknown).
    pub fn max(&self) -> Version {
        self.known_max().unwrap_or(Version::MIN)
    }

    /// The lowest maximum over regions that reported one; `None` until any has.
    pub(crate) fn known_max(&self) -> Option<Version> {
        let regions = self.regions.read().expect("not poisoned");
        regions.iter().filter_map(|r| r.max).min()
    }

    pub(crate) fn any_reachable(&self) -> bool {
        self.regions
            .read()
            .expect("not poisoned")
            .iter()
            .any(|r| r.reachable)
    }

    pub fn updated(&self) -> String {
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
pub async fn refresh(regions: &Regions) {
    let calls = regions
        .iter()
        .enumerate()
        .map(|(i, region)| async move { (i, region.versions().await) });
    for (i, result) in futures::future::join_all(calls).await {
        match result {
            Ok(doc) => regions.versions.record(i, Some(&doc)),
            Err(e) => {
                tracing::warn!(region = %regions.name(i), kind = e.kind(), error = %e, "version document unavailable");
                regions.versions.record(i, None);
            }
        }
    }
}
