//! The listing, the heart of the proxy, free of HTTP: the request (`request.rs`, `sort.rs`),
//! its plan (`plan.rs`: where each region starts), the k-way merge and re-pagination over a
//! source (`merge.rs`; the regions as that source, through the region-page cache, in
//! `source.rs`), the cursors (`cursor.rs`), the plain-id markers' remembered positions
//! (`positions.rs`), the render (`render.rs`, `links.rs`), and the service that runs them in
//! that order (`service.rs`), for a request's target worked out once (`target.rs`). Items and
//! what is listed are Cinder's wire (`crate::cinder`).

pub mod cursor;
pub mod links;
pub mod merge;
pub mod plan;
pub mod positions;
pub mod render;
pub mod request;
pub mod service;
pub mod source;
pub mod sort;
pub mod target;
