//! Where each region starts for a page: from the start, from a cursor's positions, or after
//! a client's plain backup id (the region holding it continues from it; the others are read
//! past its sort values).

use super::cursor::{Cursor, Position};
use super::item::Item;
use super::merge::Start;
use super::sort::Comparator;

/// The page's `marker`, resolved.
pub enum Marker {
    None,
    /// One of the proxy's own cursors.
    Cursor(Cursor),
    /// A backup id, found in this region.
    Backup(usize, Item),
}

pub fn starts(marker: Marker, regions: usize, comparator: &Comparator) -> Vec<Start> {
    match marker {
        Marker::None => vec![Start::default(); regions],
        Marker::Cursor(c) => c
            .positions
            .into_iter()
            .map(|position| Start {
                position,
                after: None,
            })
            .collect(),
        Marker::Backup(holder, item) => (0..regions)
            .map(|i| {
                if i == holder && comparator.safe_marker(&item) {
                    let position = Position {
                        marker: Some(item.id().to_string()),
                        skip: 0,
                    };
                    Start {
                        position,
                        after: None,
                    }
                } else {
                    // Other regions do not know this id: read them past its sort values.
                    Start {
                        position: Position::default(),
                        after: Some(item.clone()),
                    }
                }
            })
            .collect(),
    }
}
