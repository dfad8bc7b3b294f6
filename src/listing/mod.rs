//! The listing: the request (`request.rs`, `sort.rs`), the k-way merge and re-pagination over
//! a source (`merge.rs`, `item.rs`), the cursors (`cursor.rs`) and the links (`links.rs`).

pub mod cursor;
pub mod item;
pub mod links;
pub mod merge;
pub mod request;
pub mod sort;
