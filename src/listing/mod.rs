//! The listing, the heart of the proxy, free of HTTP: the request (`request.rs`, `sort.rs`),
//! its plan (`plan.rs`: where each region starts), the k-way merge and re-pagination over a
//! source (`merge.rs`, `item.rs`), the cursors (`cursor.rs`), the render (`render.rs`,
//! `links.rs`), and the service that runs them in that order (`service.rs`), for a request's
//! target worked out once (`target.rs`).

pub mod cursor;
pub mod item;
pub mod links;
pub mod merge;
pub mod plan;
pub mod positions;
pub mod render;
pub mod request;
pub mod resource;
pub mod service;
pub mod sort;
pub mod target;
