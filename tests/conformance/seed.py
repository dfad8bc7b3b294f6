"""Write backup, snapshot and volume rows into one Cinder instance's database through
Cinder's own DB API.

    python seed.py <cinder.conf> <rows.json>   ({"backups": [...], "snapshots": [...], "volumes": [...]})
"""
import json
import sys

from oslo_utils import timeutils  # noqa: F401  (imported by cinder anyway; keeps import order)

from cinder.common import config  # noqa: F401  (registers the options)
from cinder import context
from cinder.backup import rpcapi as backup_rpcapi
from cinder.db import api as db
from cinder import objects
from oslo_config import cfg

import data


def main(conf_path, rows_path):
    cfg.CONF(["--config-file", conf_path], project="cinder")
    objects.register_all()
    # "yes": backup_create reads the row back, and soft-deleted rows must be found too.
    ctxt = context.get_admin_context(read_deleted="yes")
    with open(rows_path) as f:
        tables = json.load(f)
    for row in tables["backups"]:
        values = times(row, ("created_at", "updated_at", "data_timestamp", "deleted_at"))
        # The model turns a None fail_reason into "" while the API writes NULL: only set it
        # when there is one (docs/cinder-behaviour.md, "Seeding rows").
        if values.get("fail_reason") is None:
            values.pop("fail_reason", None)
        db.backup_create(ctxt, values)
    for row in tables["snapshots"]:
        # No volume rows: the listing does not join them (db/api.py _snaps_get_query).
        db.snapshot_create(ctxt, times(row, ("created_at", "updated_at", "deleted_at")))
    # A cinder-backup service in each zone the backups name, so that Cinder accepts deletes
    # and restores (backup/api.py _get_available_backup_service_host); nothing runs behind it:
    # the casts go to the fake transport.
    for zone in ("az1", "az2"):
        db.service_create(ctxt, {"host": f"backup-{zone}", "binary": "cinder-backup",
                                 "topic": "cinder-backup", "availability_zone": zone,
                                 # Versions as a running service reports them (else the API
                                 # refuses to start: "Service cinder-backup is in Liberty").
                                 "rpc_current_version": backup_rpcapi.BackupAPI.RPC_API_VERSION,
                                 "object_current_version": objects.base.OBJ_VERSIONS.get_current()})
    # Every instance holds the same volume types: the volume view joins its row's type.
    for type_id, name in data.VOLUME_TYPES:
        db.volume_type_create(ctxt, {"id": type_id, "name": name})
    for row in tables.get("volumes", []):
        db.volume_create(ctxt, times(row, ("created_at", "updated_at", "deleted_at")))
    print(f"seeded {len(tables['backups'])} backups, {len(tables['snapshots'])} snapshots, "
          f"{len(tables.get('volumes', []))} volumes")


def times(row, keys):
    values = dict(row)
    for key in keys:
        if values.get(key):
            values[key] = timeutils.parse_isotime(values[key]).replace(tzinfo=None)
    return values

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
