//! What the proxy lists, described once: the collection's names (routes, upstream paths,
//! envelopes, cache keys, cursor bindings, error messages), the columns it can merge on and
//! their types, the summary view's fields and the microversion-gated sort alias. A new
//! resource is a new descriptor (see ARCHITECTURE.md).

use crate::microversion::Version;

/// How a column's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int,
    /// Cinder renders times as `YYYY-MM-DDTHH:MM:SS.ffffff`: fixed width, so byte order is
    /// time order, and collation never applies.
    Time,
}

/// A listed resource.
#[derive(Debug)]
pub struct Resource {
    /// The collection in paths and envelopes: `backups` (`{"backups": [...]}`,
    /// `backups_links`, `.../backups/detail`).
    pub collection: &'static str,
    /// One item's envelope key (`{"backup": {...}}`) and its name in messages.
    pub member: &'static str,
    /// As Cinder's not-found message names it ("Backup x could not be found.").
    pub title: &'static str,
    /// Columns the proxy can merge on: rendered in every detail item.
    pub columns: &'static [Column],
    /// Real columns the detail view does not show (a sort on them cannot be merged).
    pub hidden_columns: &'static [&'static str],
    /// From this microversion, a sort on `name` means `display_name`.
    pub name_sort_since: Option<Version>,
    /// The summary view's fields, in Cinder's order.
    pub summary_fields: &'static [&'static str],
    /// VBS also serves the detail listing at `/native/{collection}/detail`.
    pub native_alias: bool,
}

impl Resource {
    /// Cinder's answer for an unknown id or marker.
    pub fn not_found(&self, id: &str) -> String {
        format!("{} {id} could not be found.", self.title)
    }
}

/// Cinder's backups (`cinder/db/sqlalchemy/models.py` `Backup`, `api/views/backups.py`).
pub static BACKUPS: Resource = Resource {
    collection: "backups",
    member: "backup",
    title: "Backup",
    columns: BACKUP_COLUMNS,
    hidden_columns: BACKUP_HIDDEN_COLUMNS,
    // api/v3/backups.py _convert_sort_name (BACKUP_SORT_NAME).
    name_sort_since: Some(Version::new(3, 37)),
    summary_fields: &["id", "name", "links"],
    native_alias: true,
};

/// Every resource the proxy lists.
pub static RESOURCES: [&Resource; 1] = [&BACKUPS];

/// A Backup column the proxy can merge on: it is rendered in every detail item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// The detail view's field for this column.
    pub field: &'static str,
    pub kind: ColumnType,
}

const BACKUP_COLUMNS: &[Column] = &[
    Column {
        name: "id",
        field: "id",
        kind: ColumnType::Text,
    },
    Column {
        name: "created_at",
        field: "created_at",
        kind: ColumnType::Time,
    },
    Column {
        name: "updated_at",
        field: "updated_at",
        kind: ColumnType::Time,
    },
    Column {
        name: "data_timestamp",
        field: "data_timestamp",
        kind: ColumnType::Time,
    },
    Column {
        name: "status",
        field: "status",
        kind: ColumnType::Text,
    },
    Column {
        name: "size",
        field: "size",
        kind: ColumnType::Int,
    },
    Column {
        name: "object_count",
        field: "object_count",
        kind: ColumnType::Int,
    },
    Column {
        name: "availability_zone",
        field: "availability_zone",
        kind: ColumnType::Text,
    },
    Column {
        name: "container",
        field: "container",
        kind: ColumnType::Text,
    },
    Column {
        name: "display_name",
        field: "name",
        kind: ColumnType::Text,
    },
    Column {
        name: "display_description",
        field: "description",
        kind: ColumnType::Text,
    },
    Column {
        name: "fail_reason",
        field: "fail_reason",
        kind: ColumnType::Text,
    },
    Column {
        name: "volume_id",
        field: "volume_id",
        kind: ColumnType::Text,
    },
    Column {
        name: "snapshot_id",
        field: "snapshot_id",
        kind: ColumnType::Text,
    },
];

/// Real Backup columns (`cinder/db/models.py`) that the detail view does not show, so the
/// proxy has no value to merge on.
const BACKUP_HIDDEN_COLUMNS: &[&str] = &[
    "user_id",
    "project_id",
    "host",
    "parent_id",
    "service_metadata",
    "service",
    "temp_volume_id",
    "temp_snapshot_id",
    "num_dependent_backups",
    "restore_volume_id",
    "encryption_key_id",
    "deleted_at",
    "deleted",
];
