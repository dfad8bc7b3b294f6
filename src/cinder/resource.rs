//! What the proxy lists, described once: the collection's names (routes, upstream paths,
//! envelopes, cache keys, cursor bindings, error messages), the columns it can merge on and
//! their types, the summary view's fields and the microversion-gated sort alias. A new
//! resource is a new descriptor (see ARCHITECTURE.md).

use crate::cinder::microversion::Version;

/// How a column's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int,
    /// Cinder renders times as `YYYY-MM-DDTHH:MM:SS.ffffff`: fixed width, so byte order is
    /// time order, and collation never applies.
    Time,
    /// A boolean the view renders as the string `"true"`/`"false"` (a volume's `bootable`:
    /// `api/v3/views/volumes.py` `str(volume.get('bootable')).lower()`, so NULL is `"none"`):
    /// compared as the database orders the boolean, NULL first.
    Flag,
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
    pub(crate) hidden_columns: &'static [&'static str],
    /// From this microversion, a sort on `name` means `display_name`.
    pub name_sort_since: Option<Version>,
    /// The summary view's fields, in Cinder's order.
    pub(crate) summary_fields: &'static [&'static str],
    /// VBS also serves the detail listing at `/native/{collection}/detail`.
    pub(crate) native_alias: bool,
    /// Paths right under the collection that are not an item: the detail listing and the
    /// collection's actions (`cinder/api/v3/router.py`, the resource's `collection=`).
    pub collection_paths: &'static [&'static str],
}

impl Resource {
    /// Cinder's answer for an unknown id or marker.
    pub fn not_found(&self, id: &str) -> String {
        format!("{} {id} could not be found.", self.title)
    }
}

/// Cinder's backups (`cinder/db/models.py` `Backup`, `api/views/backups.py`).
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
    // router.py: collection={'detail': 'GET', 'import_record': 'POST'}.
    collection_paths: &["detail", "import_record"],
};

/// Cinder's snapshots (`cinder/db/models.py` `Snapshot`, `api/views/snapshots.py`,
/// `api/v3/views/snapshots.py`).
pub static SNAPSHOTS: Resource = Resource {
    collection: "snapshots",
    member: "snapshot",
    title: "Snapshot",
    columns: SNAPSHOT_COLUMNS,
    hidden_columns: SNAPSHOT_HIDDEN_COLUMNS,
    // api/v3/snapshots.py _items (SNAPSHOT_SORT).
    name_sort_since: Some(Version::new(3, 30)),
    // api/views/snapshots.py summary: no per-item links, unlike backups.
    summary_fields: &[
        "id",
        "created_at",
        "updated_at",
        "name",
        "description",
        "volume_id",
        "status",
        "size",
        "metadata",
    ],
    native_alias: false,
    // router.py: collection={'detail': 'GET'}.
    collection_paths: &["detail"],
};

/// Cinder's volumes (`cinder/db/models.py` `Volume`, `api/v3/views/volumes.py`,
/// `api/v3/volumes.py`).
pub static VOLUMES: Resource = Resource {
    collection: "volumes",
    member: "volume",
    title: "Volume",
    columns: VOLUME_COLUMNS,
    hidden_columns: VOLUME_HIDDEN_COLUMNS,
    // api/v3/volumes.py _get_volumes: `name` is `display_name` at every version.
    name_sort_since: Some(Version::new(3, 0)),
    summary_fields: &["id", "name", "links"],
    native_alias: false,
    // router.py: collection={'detail': 'GET', 'summary': 'GET'}.
    collection_paths: &["detail", "summary"],
};

/// VBS's alias before a collection (`/v3/{p}/native/backups/detail`): a path segment that is
/// neither a project nor a resource.
pub const NATIVE_ALIAS: &str = "native";

/// Whether the segment right after `/v3` names a collection or the alias (a project-less
/// route, Cinder >= 3.67), not a project.
pub fn names_collection(segment: &str) -> bool {
    segment == NATIVE_ALIAS || RESOURCES.iter().any(|r| r.collection == segment)
}

/// Every resource the proxy lists.
pub(crate) static RESOURCES: [&Resource; 3] = [&BACKUPS, &SNAPSHOTS, &VOLUMES];

/// A column the proxy can merge on: it is rendered in every detail item (from `since` on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// The detail view's field for this column.
    pub field: &'static str,
    pub kind: ColumnType,
    /// The microversion from which the detail view shows the field; below it the column is
    /// hidden (a sort on it cannot be merged).
    pub since: Option<Version>,
    /// Set when the row is created and never changed (ids, creation times, sizes): a walk's
    /// position in a sort on such columns cannot move, so it may be remembered
    /// (`listing/positions.rs`).
    pub stable: bool,
}

const fn column(name: &'static str, field: &'static str, kind: ColumnType) -> Column {
    Column {
        name,
        field,
        kind,
        since: None,
        stable: false,
    }
}

const fn stable(name: &'static str, field: &'static str, kind: ColumnType) -> Column {
    Column {
        stable: true,
        ..column(name, field, kind)
    }
}

const BACKUP_COLUMNS: &[Column] = &[
    stable("id", "id", ColumnType::Text),
    stable("created_at", "created_at", ColumnType::Time),
    column("updated_at", "updated_at", ColumnType::Time),
    stable("data_timestamp", "data_timestamp", ColumnType::Time),
    column("status", "status", ColumnType::Text),
    stable("size", "size", ColumnType::Int),
    column("object_count", "object_count", ColumnType::Int),
    stable("availability_zone", "availability_zone", ColumnType::Text),
    column("container", "container", ColumnType::Text),
    column("display_name", "name", ColumnType::Text),
    column("display_description", "description", ColumnType::Text),
    column("fail_reason", "fail_reason", ColumnType::Text),
    stable("volume_id", "volume_id", ColumnType::Text),
    stable("snapshot_id", "snapshot_id", ColumnType::Text),
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

/// The snapshot detail view's columns: `api/views/snapshots.py summary` for all versions, then
/// the fields `api/v3/views/snapshots.py detail` adds from a microversion on.
const SNAPSHOT_COLUMNS: &[Column] = &[
    stable("id", "id", ColumnType::Text),
    stable("created_at", "created_at", ColumnType::Time),
    column("updated_at", "updated_at", ColumnType::Time),
    column("display_name", "name", ColumnType::Text),
    column("display_description", "description", ColumnType::Text),
    stable("volume_id", "volume_id", ColumnType::Text),
    column("status", "status", ColumnType::Text),
    stable("volume_size", "size", ColumnType::Int),
    Column {
        since: Some(Version::new(3, 14)), // GROUP_SNAPSHOTS
        ..stable("group_snapshot_id", "group_snapshot_id", ColumnType::Text)
    },
    Column {
        since: Some(Version::new(3, 41)), // SNAPSHOT_LIST_USER_ID
        ..stable("user_id", "user_id", ColumnType::Text)
    },
    Column {
        since: Some(Version::new(3, 65)), // USE_QUOTA; a boolean, compared as 0/1 like SQL
        ..column("use_quota", "consumes_quota", ColumnType::Int)
    },
];

/// Real Snapshot columns the detail view does not show. `project_id` and `progress` are
/// shown only where policy allows (`api/contrib/extended_snapshot_attributes.py`), so the
/// proxy cannot count on them either.
const SNAPSHOT_HIDDEN_COLUMNS: &[&str] = &[
    "project_id",
    "progress",
    "cgsnapshot_id",
    "scheduled_at",
    "encryption_key_id",
    "volume_type_id",
    "provider_location",
    "provider_id",
    "provider_auth",
    "deleted_at",
    "deleted",
];

/// The volume detail view's columns that show the row's own value in every item
/// (`api/v3/views/volumes.py` `legacy_detail` for all versions, then `detail`'s additions by
/// microversion). `status` is shown with three internal states under their public name
/// (`_get_volume_status`: `managing` as `creating`, ...): rows in those states sort as shown
/// (docs/api.md, "Deliberate differences"). A volume's size, zone and flags can change
/// (extend, retype, migration), so only what is fixed at creation is stable.
const VOLUME_COLUMNS: &[Column] = &[
    stable("id", "id", ColumnType::Text),
    column("status", "status", ColumnType::Text),
    column("size", "size", ColumnType::Int),
    column("availability_zone", "availability_zone", ColumnType::Text),
    stable("created_at", "created_at", ColumnType::Time),
    column("updated_at", "updated_at", ColumnType::Time),
    column("display_name", "name", ColumnType::Text),
    column("display_description", "description", ColumnType::Text),
    stable("snapshot_id", "snapshot_id", ColumnType::Text),
    stable("source_volid", "source_volid", ColumnType::Text),
    stable("user_id", "user_id", ColumnType::Text),
    column("bootable", "bootable", ColumnType::Flag),
    column("replication_status", "replication_status", ColumnType::Text),
    // A boolean, compared as 0/1 like SQL.
    column("multiattach", "multiattach", ColumnType::Int),
    Column {
        since: Some(Version::new(3, 13)), // GROUP_VOLUME
        ..column("group_id", "group_id", ColumnType::Text)
    },
    Column {
        since: Some(Version::new(3, 48)), // VOLUME_SHARED_TARGETS_AND_SERVICE_FIELDS
        ..column("service_uuid", "service_uuid", ColumnType::Text)
    },
    Column {
        // Shown from 3.48, but NULL is shown as true below SHARED_TARGETS_TRISTATE.
        since: Some(Version::new(3, 69)),
        ..column("shared_targets", "shared_targets", ColumnType::Int)
    },
    Column {
        // Below VOLUME_TYPE_ID_IN_VOLUME_DETAIL, `volume_type` shows the type's name.
        since: Some(Version::new(3, 63)),
        ..column("volume_type_id", "volume_type_id", ColumnType::Text)
    },
    Column {
        since: Some(Version::new(3, 65)), // USE_QUOTA
        ..column("use_quota", "consumes_quota", ColumnType::Int)
    },
];

/// Real Volume columns the detail view does not show the same way to every caller:
/// admin-only ones (`migration_status`, `provider_id`, `cluster_name`), one omitted when
/// NULL (`encryption_key_id`), one that may show another column (`consistencygroup_id`
/// shows `group_id` for a group converted from a consistency group), and the never shown.
const VOLUME_HIDDEN_COLUMNS: &[&str] = &[
    "migration_status",
    "provider_id",
    "cluster_name",
    "encryption_key_id",
    "consistencygroup_id",
    "ec2_id",
    "project_id",
    "host",
    "attach_status",
    "scheduled_at",
    "launched_at",
    "terminated_at",
    "provider_location",
    "provider_auth",
    "provider_geometry",
    "replication_extended_status",
    "replication_driver_data",
    "previous_status",
    "deleted_at",
    "deleted",
];
