"""Write backup rows into one Cinder instance's database through Cinder's own DB API.

    python seed.py <cinder.conf> <rows.json>
"""
import json
import sys

from oslo_utils import timeutils  # noqa: F401  (imported by cinder anyway; keeps import order)

from cinder.common import config  # noqa: F401  (registers the options)
from cinder import context
from cinder.db import api as db
from cinder import objects
from oslo_config import cfg


def main(conf_path, rows_path):
    cfg.CONF(["--config-file", conf_path], project="cinder")
    objects.register_all()
    # "yes": backup_create reads the row back, and soft-deleted rows must be found too.
    ctxt = context.get_admin_context(read_deleted="yes")
    with open(rows_path) as f:
        rows = json.load(f)
    for row in rows:
        values = dict(row)
        for key in ("created_at", "updated_at", "data_timestamp", "deleted_at"):
            if values.get(key):
                values[key] = timeutils.parse_isotime(values[key]).replace(tzinfo=None)
        # The model turns a None fail_reason into "" while the API writes NULL: only set it
        # when there is one (NOTES.md, "Seeding backups").
        if values.get("fail_reason") is None:
            values.pop("fail_reason", None)
        db.backup_create(ctxt, values)
    print(f"seeded {len(rows)} rows")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
