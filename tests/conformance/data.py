"""The conformance data set, backups, snapshots and volumes: ties in created_at, NULL and empty names,
mixed case, every status, two projects, soft-deleted rows, split over three regions."""
import datetime

P1 = "6f0e4c52a9d84cc6b1e2f3a4b5c6d7e8"
P2 = "9a8b7c6d5e4f40318293a4b5c6d7e8f9"
STATUSES = ["available", "error", "creating", "deleting", "restoring", "error_deleting"]
NAMES = [None, "Nightly-Upper", "nightly-lower", "", "broken-archive", "Alpha", None, "alpha", "beta",
         "Beta", "gamma", "zeta", None, "Gamma"]
VOLUMES = [f"{v:08x}-1111-4222-8333-000000000000" for v in (0xA1, 0xB2, 0xC3, 0xD4)]
BASE = datetime.datetime(2024, 3, 1, 12, 0, 0)
REGIONS = ["r0", "r1", "r2"]


def backup_id(i):
    # Ids whose order is unrelated to creation order.
    h = (i * 2654435761) % 2**32
    return f"{h:08x}-{i:04x}-4abc-8def-{i * 7919 % 10**12:012d}"


def rows():
    out = []
    for i in range(54):
        created = BASE + datetime.timedelta(minutes=(i // 3) * 17)  # ties of three
        status = STATUSES[i % 6]
        row = {
            "id": backup_id(i),
            "user_id": "user1",
            "project_id": P2 if i % 9 == 8 else P1,
            "volume_id": VOLUMES[i % 4],
            "status": status,
            "size": [1, 5, 10, 0, 2][i % 5],
            "object_count": None if status == "creating" else i % 4,
            "availability_zone": ["az1", "az2"][i % 2],
            "container": "volumebackups",
            "display_name": NAMES[i % len(NAMES)],
            "display_description": None if i % 3 else f"backup {i}",
            "fail_reason": "driver error" if status == "error" else None,
            "created_at": created.isoformat(),
            "updated_at": (created + datetime.timedelta(minutes=5)).isoformat() if i % 4 else None,
            "data_timestamp": created.isoformat(),
            "parent_id": backup_id(i - 1) if i % 5 == 4 else None,
            "num_dependent_backups": 1 if i % 5 == 3 else 0,
            "metadata": {"tier": ["gold", "silver"][i % 2]} if i % 2 else {},
        }
        out.append(soft_deleted(row, created) if i % 11 == 10 else row)
    return out


SNAPSHOT_STATUSES = ["available", "error", "creating", "deleting", "error_deleting", "backing-up"]
VOLUME_TYPE = "5e1f0c3a-7b7d-4c55-9d3e-0a1b2c3d4e5f"
GROUP_SNAPSHOT = "7d0c6a52-1a2b-4c3d-8e4f-5a6b7c8d9e0f"


def snapshot_id(i):
    h = (i * 2246822519) % 2**32
    return f"{h:08x}-{i:04x}-4def-9abc-{i * 104729 % 10**12:012d}"


def snapshots():
    """Snapshot rows, with the columns the snapshot view shows only from a microversion on
    (group_snapshot_id 3.14, user_id 3.41, use_quota 3.65) varied, NULLs included."""
    out = []
    for i in range(45):
        created = BASE + datetime.timedelta(minutes=(i // 3) * 13)  # ties of three
        row = {
            "id": snapshot_id(i),
            "user_id": ["user1", "user2", "user3"][i % 3],
            "project_id": P2 if i % 9 == 4 else P1,
            "volume_id": VOLUMES[i % 4],
            "volume_type_id": VOLUME_TYPE,
            "status": SNAPSHOT_STATUSES[i % 6],
            "progress": "100%" if i % 2 else None,
            "volume_size": [1, 5, 10, 2][i % 4],
            "display_name": NAMES[i % len(NAMES)],
            "display_description": None if i % 3 else f"snapshot {i}",
            "created_at": created.isoformat(),
            "updated_at": (created + datetime.timedelta(minutes=3)).isoformat() if i % 4 else None,
            "group_snapshot_id": GROUP_SNAPSHOT if i % 5 == 0 else None,
            "use_quota": i % 7 != 0,
            "metadata": {"tier": ["gold", "silver"][i % 2]} if i % 2 else {},
        }
        out.append(soft_deleted(row, created) if i % 11 == 10 else row)
    return out


VOLUME_STATUSES = ["available", "error", "in-use", "creating", "deleting", "error_restoring"]
# (id, name): two volume types every instance holds; the volume view shows the name (a join).
VOLUME_TYPES = [("3b0c1d2e-0f1a-4b2c-8d3e-4f5a6b7c8d9e", "fast"),
                ("4c1d2e3f-1a2b-4c3d-9e4f-5a6b7c8d9e0f", "slow")]


def volume_id(i):
    """The first four are the volumes the backups and snapshots name."""
    if i < len(VOLUMES):
        return VOLUMES[i]
    h = (i * 3266489917) % 2**32
    return f"{h:08x}-{i:04x}-4aaa-8bbb-{i * 7907 % 10**12:012d}"


def volumes():
    """Volume rows, with the columns the volume view shows only from a microversion on
    (service_uuid 3.48, volume_type_id 3.63, use_quota 3.65, shared_targets as stored from
    3.69) varied, NULLs included, and bootable true, false and NULL (shown as a string)."""
    out = []
    for i in range(48):
        created = BASE + datetime.timedelta(minutes=(i // 3) * 11)  # ties of three
        row = {
            "id": volume_id(i),
            "user_id": ["user1", "user2", "user3"][i % 3],
            "project_id": P2 if i % 9 == 5 else P1,
            # The backups' volumes are available, so a backup of them can be made.
            "status": "available" if i < len(VOLUMES) else VOLUME_STATUSES[i % 6],
            "attach_status": "detached",
            "size": [1, 5, 10, 2][i % 4],
            "availability_zone": ["az1", "az2"][i % 2],
            "display_name": NAMES[i % len(NAMES)],
            "display_description": None if i % 3 else f"volume {i}",
            "created_at": created.isoformat(),
            "updated_at": (created + datetime.timedelta(minutes=2)).isoformat() if i % 4 else None,
            "volume_type_id": VOLUME_TYPES[i % 2][0],
            "snapshot_id": snapshot_id(i % 7) if i % 5 == 0 else None,
            "source_volid": volume_id(i % 3) if i % 7 == 3 else None,
            "bootable": [True, False, None][i % 3],
            "multiattach": i % 4 == 1,
            "replication_status": "disabled" if i % 2 else None,
            "service_uuid": f"svc-{i % 2}" if i % 3 != 2 else None,
            "shared_targets": [True, False, None][(i // 2) % 3],
            "use_quota": i % 7 != 0,
            "metadata": {"tier": ["gold", "silver"][i % 2]} if i % 2 else {},
        }
        out.append(soft_deleted(row, created) if i % 11 == 10 else row)
    return out


def soft_deleted(row, created):
    """The row as Cinder leaves it after a delete: kept, flagged, an hour later."""
    return dict(row, deleted=True, deleted_at=(created + datetime.timedelta(hours=1)).isoformat())


def split(rows):
    """{region name: rows}; every row in exactly one region."""
    regions = {name: [] for name in REGIONS}
    for i, row in enumerate(rows):
        regions[REGIONS[(i * 5 + i // 7) % 3]].append(row)
    return regions


def tables():
    """{region name: {"backups": rows, "snapshots": rows, "volumes": rows}}, and the union
    under "union"."""
    backups, snaps, vols = split(rows()), split(snapshots()), split(volumes())
    out = {name: {"backups": backups[name], "snapshots": snaps[name], "volumes": vols[name]}
           for name in REGIONS}
    out["union"] = {"backups": rows(), "snapshots": snapshots(), "volumes": volumes()}
    return out
