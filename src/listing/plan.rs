//! Where each region starts for a page: from the start, from a cursor's positions, or after
//! a client's plain id (remembered positions resume every region just before it; otherwise
//! the region holding it continues from it and the others are read past its sort values).

use std::sync::Arc;

use super::cursor::{Cursor, Position};
use crate::cinder::item::Item;
use super::merge::Start;
use super::sort::Comparator;

/// The page's `marker`, resolved.
pub enum Marker {
    None,
    /// One of the proxy's own cursors.
    Cursor(Cursor),
    /// A client's plain id, found in this region.
    Id(usize, Item),
    /// A client's plain id, found in region `holder`, with where each region stood just after
    /// it when the proxy last showed it (see `positions.rs`).
    Remembered {
        holder: usize,
        item: Item,
        positions: Arc<[Position]>,
    },
}

pub fn starts(marker: &Marker, regions: usize, comparator: &Comparator) -> Vec<Start> {
    match marker {
        Marker::None => vec![Start::default(); regions],
        Marker::Cursor(c) => c
            .positions
            .iter()
            .map(|position| Start {
                position: position.clone(),
                ..Start::default()
            })
            .collect(),
        Marker::Id(holder, item) => (0..regions)
            .map(|i| {
                if i == *holder && comparator.safe_marker(item) {
                    let position = Position {
                        marker: Some(item.id().to_string()),
                        skip: 0,
                    };
                    Start {
                        position,
                        ..Start::default()
                    }
                } else {
                    // Other regions do not know this id: read them past its sort values.
                    Start {
                        after: Some(item.clone()),
                        ..Start::default()
                    }
                }
            })
            .collect(),
        // Resume where each region stood, but one row earlier when rows unsafe as markers
        // were counted past its last safe row: that row is read again and must still sort at
        // or before the marker, or rows were deleted since and the offset would skip a row
        // (the merge then marks the page stale and the caller takes the cold path). Rows
        // added since sort at or before the marker, or after it; the bound passes the first.
        Marker::Remembered {
            item, positions, ..
        } => positions
            .iter()
            .map(|p| {
                let reread = u64::from(p.skip > 0);
                Start {
                    position: Position {
                        marker: p.marker.clone(),
                        skip: p.skip - reread,
                    },
                    after: Some(item.clone()),
                    reread: Some(reread),
                }
            })
            .collect(),
    }
}
