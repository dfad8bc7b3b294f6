//! The regions: one client per regional Cinder behind its protection (`protection.rs`: breaker,
//! retry budget, rate and concurrency limits, `Retry-After`), and the regions as the merge's
//! source (`source.rs`).

pub mod client;
pub mod protection;
pub mod source;
pub mod versions;

use crate::config::{Config, FailurePolicy};

pub use client::{
    encode_segment, is_path_segment, CallContext, ListPage, RegionError, Upstream,
};

/// The regions as the rest of the proxy sees them: their clients (behind their protection),
/// what their version documents said, their endpoint roots (for href rewriting), and what to
/// do when some fail.
pub struct Regions {
    pub client: Upstream,
    pub versions: versions::VersionBook,
    /// Endpoint roots, for href rewriting.
    pub bases: Vec<String>,
    pub on_failure: FailurePolicy,
}

impl Regions {
    pub fn new(config: &Config) -> Regions {
        let client = Upstream::new(config);
        Regions {
            versions: versions::VersionBook::new(client.regions.len()),
            bases: client.regions.iter().map(|r| r.base.clone()).collect(),
            on_failure: config.upstream.on_region_failure,
            client,
        }
    }

    pub fn len(&self) -> usize {
        self.client.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.client.regions.is_empty()
    }

    pub fn name(&self, region: usize) -> &str {
        &self.client.regions[region].name
    }
}
