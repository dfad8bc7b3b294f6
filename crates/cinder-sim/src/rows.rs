//! The simulated tables: a backup row, a snapshot row and a volume row, each with the columns the database
//! orders and filters on and the detail view Cinder renders from it, and [`Kind`], what the
//! listing code needs to know about a table (names, filters, defaults of its columns).

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::Version;
use crate::SimRegion;

/// A column value as the database sees it.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Time(&'a str),
}

fn text(s: &Option<String>) -> Cell<'_> {
    s.as_deref().map_or(Cell::Null, Cell::Text)
}

/// What differs between the listed tables.
#[derive(Debug)]
pub struct Kind {
    /// `backups`: the path segment and the list envelope.
    pub collection: &'static str,
    /// `backup`: the show envelope.
    pub member: &'static str,
    /// `Backup`: as the not-found message names it.
    pub title: &'static str,
    /// From this microversion a sort on `name` means `display_name`.
    pub name_sort_since: Version,
    /// `resource_filters.json`: the filters a non-admin may give from 3.31 on.
    pub filters: &'static [&'static str],
    /// Of those, the ones the controller keeps for a non-admin (others are dropped).
    pub kept_filters: &'static [&'static str],
    /// `all_tenants` parsed strictly (backups: 400 on a non-boolean) or not (snapshots:
    /// `volume/api.py get_all_snapshots` uses the lenient `bool_from_string`).
    pub strict_all_tenants: bool,
    /// The summary view's fields.
    pub summary: &'static [&'static str],
    /// Integer and time columns: `COALESCE` defaults in the marker filter.
    pub int_columns: &'static [&'static str],
    pub time_columns: &'static [&'static str],
}

/// A row of a listed table.
pub trait Row: Clone + Default + Send + Sync + 'static {
    const KIND: &'static Kind;
    fn id(&self) -> &str;
    fn project_id(&self) -> &str;
    fn deleted(&self) -> bool;
    /// `None`: not a column of the model (an invalid sort key / a filter matching nothing).
    fn cell(&self, column: &str) -> Option<Cell<'_>>;
    /// The detail view at `version`, links on `base`; `project_in_url` is "" on the
    /// project-less routes.
    fn detail(
        &self,
        version: Version,
        base: &str,
        project_in_url: &str,
        admin: bool,
    ) -> Map<String, Value>;
    fn table(sim: &SimRegion) -> &RwLock<Vec<Self>>;
    /// May it be deleted in its status (Cinder: available or error)?
    fn deletable(&self) -> bool;
    fn mark_deleted(&mut self);

    fn is_column(column: &str) -> bool {
        Self::default().cell(column).is_some()
    }
}

/// One row of the backups table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub status: String,
    pub size: i64,
    pub object_count: Option<i64>,
    pub availability_zone: Option<String>,
    pub container: Option<String>,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    pub fail_reason: Option<String>,
    pub volume_id: String,
    pub parent_id: Option<String>,
    pub num_dependent_backups: i64,
    pub snapshot_id: Option<String>,
    pub data_timestamp: String,
    pub metadata: BTreeMap<String, String>,
    pub deleted: bool,
}

const BACKUPS: Kind = Kind {
    collection: "backups",
    member: "backup",
    title: "Backup",
    name_sort_since: Version::new(3, 37),
    filters: &["name", "status", "volume_id"],
    kept_filters: &["name", "status", "volume_id"],
    strict_all_tenants: true,
    summary: &["id", "name", "links"],
    int_columns: &["size", "object_count", "num_dependent_backups"],
    time_columns: &["created_at", "updated_at", "data_timestamp", "deleted_at"],
};

impl Row for Backup {
    const KIND: &'static Kind = &BACKUPS;

    fn id(&self) -> &str {
        &self.id
    }
    fn project_id(&self) -> &str {
        &self.project_id
    }
    fn deleted(&self) -> bool {
        self.deleted
    }

    fn cell(&self, column: &str) -> Option<Cell<'_>> {
        Some(match column {
            "id" => Cell::Text(&self.id),
            "project_id" => Cell::Text(&self.project_id),
            "user_id" => Cell::Text(&self.user_id),
            "status" => Cell::Text(&self.status),
            "size" => Cell::Int(self.size),
            "object_count" => self.object_count.map_or(Cell::Null, Cell::Int),
            "availability_zone" => text(&self.availability_zone),
            "container" => text(&self.container),
            "created_at" => Cell::Time(&self.created_at),
            "updated_at" => self.updated_at.as_deref().map_or(Cell::Null, Cell::Time),
            "display_name" => text(&self.display_name),
            "display_description" => text(&self.display_description),
            "fail_reason" => text(&self.fail_reason),
            "volume_id" => Cell::Text(&self.volume_id),
            "parent_id" => text(&self.parent_id),
            "num_dependent_backups" => Cell::Int(self.num_dependent_backups),
            "snapshot_id" => text(&self.snapshot_id),
            "data_timestamp" => Cell::Time(&self.data_timestamp),
            "host" | "service" | "service_metadata" | "temp_volume_id" | "temp_snapshot_id"
            | "restore_volume_id" | "encryption_key_id" | "deleted_at" => Cell::Null,
            _ => return None,
        })
    }

    /// `api/views/backups.py`, `api/v3/views/backups.py`, `api/v3/backups.py`.
    fn detail(
        &self,
        version: Version,
        base: &str,
        project_in_url: &str,
        admin: bool,
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("status".into(), json!(self.status));
        m.insert("size".into(), json!(self.size));
        m.insert("object_count".into(), json!(self.object_count));
        m.insert("availability_zone".into(), json!(self.availability_zone));
        m.insert("container".into(), json!(self.container));
        m.insert("created_at".into(), json!(self.created_at));
        m.insert("updated_at".into(), json!(self.updated_at));
        m.insert("name".into(), json!(self.display_name));
        m.insert("description".into(), json!(self.display_description));
        m.insert("fail_reason".into(), json!(self.fail_reason));
        m.insert("volume_id".into(), json!(self.volume_id));
        m.insert(
            "links".into(),
            links("backups", &self.id, base, project_in_url),
        );
        m.insert("is_incremental".into(), json!(self.parent_id.is_some()));
        m.insert(
            "has_dependent_backups".into(),
            json!(self.num_dependent_backups > 0),
        );
        m.insert("snapshot_id".into(), json!(self.snapshot_id));
        m.insert("data_timestamp".into(), json!(self.data_timestamp));
        if version >= Version::new(3, 43) {
            m.insert("metadata".into(), json!(self.metadata));
        }
        if admin && version >= Version::new(3, 18) {
            m.insert(
                "os-backup-project-attr:project_id".into(),
                json!(self.project_id),
            );
        }
        if admin && version >= Version::new(3, 56) {
            m.insert("user_id".into(), json!(self.user_id));
        }
        m
    }

    fn table(sim: &SimRegion) -> &RwLock<Vec<Self>> {
        &sim.backups
    }

    fn deletable(&self) -> bool {
        matches!(self.status.as_str(), "available" | "error")
    }

    fn mark_deleted(&mut self) {
        self.deleted = true;
    }
}

/// One row of the snapshots table. Metadata filters and `availability_zone` (a join on the
/// volume in Cinder) are not modelled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub volume_id: String,
    pub status: String,
    pub progress: Option<String>,
    pub volume_size: i64,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub group_snapshot_id: Option<String>,
    pub use_quota: bool,
    pub metadata: BTreeMap<String, String>,
    pub deleted: bool,
}

const SNAPSHOTS: Kind = Kind {
    collection: "snapshots",
    member: "snapshot",
    title: "Snapshot",
    name_sort_since: Version::new(3, 30),
    filters: &[
        "name",
        "status",
        "volume_id",
        "metadata",
        "availability_zone",
        "consumes_quota",
    ],
    // api/v3/snapshots.py _get_snapshot_filter_options.
    kept_filters: &["status", "volume_id", "name", "metadata"],
    strict_all_tenants: false,
    summary: &[
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
    int_columns: &["volume_size", "use_quota"],
    time_columns: &["created_at", "updated_at", "scheduled_at", "deleted_at"],
};

impl Row for Snapshot {
    const KIND: &'static Kind = &SNAPSHOTS;

    fn id(&self) -> &str {
        &self.id
    }
    fn project_id(&self) -> &str {
        &self.project_id
    }
    fn deleted(&self) -> bool {
        self.deleted
    }

    fn cell(&self, column: &str) -> Option<Cell<'_>> {
        Some(match column {
            "id" => Cell::Text(&self.id),
            "project_id" => Cell::Text(&self.project_id),
            "user_id" => Cell::Text(&self.user_id),
            "volume_id" => Cell::Text(&self.volume_id),
            "status" => Cell::Text(&self.status),
            "progress" => text(&self.progress),
            "volume_size" => Cell::Int(self.volume_size),
            "display_name" => text(&self.display_name),
            "display_description" => text(&self.display_description),
            "created_at" => Cell::Time(&self.created_at),
            "updated_at" => self.updated_at.as_deref().map_or(Cell::Null, Cell::Time),
            "group_snapshot_id" => text(&self.group_snapshot_id),
            "use_quota" => Cell::Int(self.use_quota as i64),
            "cgsnapshot_id" | "scheduled_at" | "encryption_key_id" | "volume_type_id"
            | "provider_location" | "provider_id" | "provider_auth" | "deleted_at" => Cell::Null,
            _ => return None,
        })
    }

    /// `api/views/snapshots.py summary`, the fields `api/v3/views/snapshots.py detail` adds
    /// by microversion, then `api/contrib/extended_snapshot_attributes.py` (default policy:
    /// admin or owner, so always here).
    fn detail(&self, version: Version, _: &str, _: &str, _: bool) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("created_at".into(), json!(self.created_at));
        m.insert("updated_at".into(), json!(self.updated_at));
        m.insert("name".into(), json!(self.display_name));
        m.insert("description".into(), json!(self.display_description));
        m.insert("volume_id".into(), json!(self.volume_id));
        m.insert("status".into(), json!(self.status));
        m.insert("size".into(), json!(self.volume_size));
        m.insert("metadata".into(), json!(self.metadata));
        if version >= Version::new(3, 14) {
            m.insert("group_snapshot_id".into(), json!(self.group_snapshot_id));
        }
        if version >= Version::new(3, 41) {
            m.insert("user_id".into(), json!(self.user_id));
        }
        if version >= Version::new(3, 65) {
            m.insert("consumes_quota".into(), json!(self.use_quota));
        }
        m.insert(
            "os-extended-snapshot-attributes:project_id".into(),
            json!(self.project_id),
        );
        m.insert(
            "os-extended-snapshot-attributes:progress".into(),
            json!(self.progress),
        );
        m
    }

    fn table(sim: &SimRegion) -> &RwLock<Vec<Self>> {
        &sim.snapshots
    }

    fn deletable(&self) -> bool {
        matches!(self.status.as_str(), "available" | "error")
    }

    fn mark_deleted(&mut self) {
        self.deleted = true;
    }
}

/// One row of the volumes table, with its type's name (a join in Cinder). Attachments,
/// metadata filters and groups converted from consistency groups are not modelled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub status: String,
    pub size: i64,
    pub availability_zone: Option<String>,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    pub volume_type_id: String,
    pub volume_type_name: String,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub bootable: Option<bool>,
    pub multiattach: bool,
    pub replication_status: Option<String>,
    pub group_id: Option<String>,
    pub service_uuid: Option<String>,
    pub shared_targets: Option<bool>,
    pub use_quota: bool,
    pub migration_status: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub deleted: bool,
}

const VOLUMES: Kind = Kind {
    collection: "volumes",
    member: "volume",
    title: "Volume",
    name_sort_since: Version::new(3, 0),
    filters: &[
        "name",
        "status",
        "metadata",
        "bootable",
        "migration_status",
        "availability_zone",
        "group_id",
        "size",
        "created_at",
        "updated_at",
        "consumes_quota",
    ],
    // cinder.conf query_volume_filters' default.
    kept_filters: &[
        "name",
        "status",
        "metadata",
        "availability_zone",
        "bootable",
        "group_id",
    ],
    strict_all_tenants: false,
    summary: &["id", "name", "links"],
    int_columns: &[
        "size",
        "bootable",
        "multiattach",
        "shared_targets",
        "use_quota",
    ],
    time_columns: &[
        "created_at",
        "updated_at",
        "scheduled_at",
        "launched_at",
        "terminated_at",
        "deleted_at",
    ],
};

fn flag(b: Option<bool>) -> Cell<'static> {
    b.map_or(Cell::Null, |b| Cell::Int(b as i64))
}

impl Row for Volume {
    const KIND: &'static Kind = &VOLUMES;

    fn id(&self) -> &str {
        &self.id
    }
    fn project_id(&self) -> &str {
        &self.project_id
    }
    fn deleted(&self) -> bool {
        self.deleted
    }

    fn cell(&self, column: &str) -> Option<Cell<'_>> {
        Some(match column {
            "id" => Cell::Text(&self.id),
            "project_id" => Cell::Text(&self.project_id),
            "user_id" => Cell::Text(&self.user_id),
            "status" => Cell::Text(&self.status),
            "size" => Cell::Int(self.size),
            "availability_zone" => text(&self.availability_zone),
            "created_at" => Cell::Time(&self.created_at),
            "updated_at" => self.updated_at.as_deref().map_or(Cell::Null, Cell::Time),
            "display_name" => text(&self.display_name),
            "display_description" => text(&self.display_description),
            "volume_type_id" => Cell::Text(&self.volume_type_id),
            "snapshot_id" => text(&self.snapshot_id),
            "source_volid" => text(&self.source_volid),
            "bootable" => flag(self.bootable),
            "multiattach" => Cell::Int(self.multiattach as i64),
            "replication_status" => text(&self.replication_status),
            "group_id" => text(&self.group_id),
            "service_uuid" => text(&self.service_uuid),
            "shared_targets" => flag(self.shared_targets),
            "use_quota" => Cell::Int(self.use_quota as i64),
            "migration_status" => text(&self.migration_status),
            "provider_id"
            | "cluster_name"
            | "encryption_key_id"
            | "consistencygroup_id"
            | "ec2_id"
            | "host"
            | "attach_status"
            | "scheduled_at"
            | "launched_at"
            | "terminated_at"
            | "provider_location"
            | "provider_auth"
            | "provider_geometry"
            | "replication_extended_status"
            | "replication_driver_data"
            | "previous_status"
            | "deleted_at" => Cell::Null,
            _ => return None,
        })
    }

    /// `api/v3/views/volumes.py` `legacy_detail` and `detail`.
    fn detail(
        &self,
        version: Version,
        base: &str,
        project_in_url: &str,
        admin: bool,
    ) -> Map<String, Value> {
        let status = match self.status.as_str() {
            "managing" => "creating",
            "error_managing" => "error",
            "error_managing_deleting" => "deleting",
            s => s,
        };
        let volume_type = if version >= Version::new(3, 63) || !self.volume_type_name.is_empty() {
            json!(self.volume_type_name)
        } else {
            json!(self.volume_type_id)
        };
        let bootable = self
            .bootable
            .map_or("none", |b| if b { "true" } else { "false" });
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("status".into(), json!(status));
        m.insert("size".into(), json!(self.size));
        m.insert("availability_zone".into(), json!(self.availability_zone));
        m.insert("created_at".into(), json!(self.created_at));
        m.insert("updated_at".into(), json!(self.updated_at));
        m.insert("name".into(), json!(self.display_name));
        m.insert("description".into(), json!(self.display_description));
        m.insert("volume_type".into(), volume_type);
        m.insert("snapshot_id".into(), json!(self.snapshot_id));
        m.insert("source_volid".into(), json!(self.source_volid));
        m.insert("metadata".into(), json!(self.metadata));
        m.insert(
            "links".into(),
            links("volumes", &self.id, base, project_in_url),
        );
        m.insert("user_id".into(), json!(self.user_id));
        m.insert("bootable".into(), json!(bootable));
        m.insert("encrypted".into(), json!(false));
        m.insert("replication_status".into(), json!(self.replication_status));
        m.insert("consistencygroup_id".into(), Value::Null);
        m.insert("multiattach".into(), json!(self.multiattach));
        m.insert("attachments".into(), json!([]));
        if admin {
            m.insert("migration_status".into(), json!(self.migration_status));
        }
        if version >= Version::new(3, 13) {
            m.insert("group_id".into(), json!(self.group_id));
        }
        if admin && version >= Version::new(3, 21) {
            m.insert("provider_id".into(), Value::Null);
        }
        if version >= Version::new(3, 48) {
            let shared = match self.shared_targets {
                None if version < Version::new(3, 69) => Some(true),
                s => s,
            };
            m.insert("shared_targets".into(), json!(shared));
            m.insert("service_uuid".into(), json!(self.service_uuid));
        }
        if admin && version >= Version::new(3, 61) {
            m.insert("cluster_name".into(), Value::Null);
        }
        if version >= Version::new(3, 63) {
            m.insert("volume_type_id".into(), json!(self.volume_type_id));
        }
        if version >= Version::new(3, 65) {
            m.insert("consumes_quota".into(), json!(self.use_quota));
        }
        m
    }

    fn table(sim: &SimRegion) -> &RwLock<Vec<Self>> {
        &sim.volumes
    }

    fn deletable(&self) -> bool {
        matches!(
            self.status.as_str(),
            "available" | "error" | "error_restoring" | "error_extending" | "error_managing"
        )
    }

    fn mark_deleted(&mut self) {
        self.deleted = true;
    }
}

impl Volume {
    /// An available volume of `project` with only an id of note (routing tests).
    pub fn held(id: &str, project: &str) -> Volume {
        Volume {
            id: id.into(),
            project_id: project.into(),
            user_id: "u".into(),
            status: "available".into(),
            size: 1,
            created_at: "2024-01-01T00:00:00.000000".into(),
            volume_type_id: "vt".into(),
            volume_type_name: "__DEFAULT__".into(),
            bootable: Some(false),
            use_quota: true,
            ..Volume::default()
        }
    }
}

/// A member's `self` and `bookmark` links (`api/common.py` `_get_links`); `project` is ""
/// on the project-less routes: Python's os.path.join drops it.
fn links(collection: &str, id: &str, base: &str, project: &str) -> Value {
    let p = if project.is_empty() {
        String::new()
    } else {
        format!("/{project}")
    };
    json!([
        {"rel": "self", "href": format!("{base}/v3{p}/{collection}/{id}")},
        {"rel": "bookmark", "href": format!("{base}{p}/{collection}/{id}")},
    ])
}
