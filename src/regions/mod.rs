//! The regions: one client per regional Cinder behind its protection (`protection.rs`: breaker,
//! retry budget, rate and concurrency limits, `Retry-After`), and the regions as the merge's
//! source (`source.rs`).

pub mod client;
pub mod protection;
pub mod source;

pub use client::{
    encode_segment, is_path_segment, CallContext, ListPage, Region, RegionError, Upstream,
};
