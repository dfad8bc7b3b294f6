//! Cinder's wire, below everything that uses it: what the proxy lists (`resource.rs`: the
//! collections, their columns and views), a listing's items and their parsing (`item.rs`),
//! the microversion (`microversion.rs`), and how a query and a path are spelled
//! (`query.rs`, `path.rs`). It knows neither the regions nor the HTTP front.

pub mod item;
pub mod microversion;
pub mod path;
pub mod query;
pub mod resource;
