"""Differential conformance for volumes, the third listed resource: the proxy over three real
Cinder regions answers what one real Cinder holding the union answers, walks included, at the
microversions that change Cinder's volume listing: 3.45 (with_count), 3.48 (service_uuid,
shared_targets shown with NULL as true), 3.63 (volume_type_id), 3.65 (consumes_quota), 3.69
(shared_targets as stored); a sort on group_id (3.13) is checked below its version. `name` sorts as display_name at every
version, and `bootable` is shown as a string but sorted as the boolean it is."""
import urllib.parse

import pytest

import data
from conftest import ADMIN, USER
from differential import check_against_union, check_gated, check_shows, gated, get, holder, markers_of

P1 = data.P1
DETAIL = f"/v3/{P1}/volumes/detail"
SUMMARY = f"/v3/{P1}/volumes"
VERSIONS = [None, "3.45", "3.48", "3.63", "3.69", "latest"]
CONTEXTS = {"admin": ADMIN, "user": USER}
TIER = urllib.parse.quote("{'tier': 'gold'}")

# `{m}` is a volume of P1 (the 7th in the default order), `{other}` one of the other project.
QUERIES = [
    "",
    "limit=5",
    "limit=5&offset=3",
    "offset=100",
    "limit=0",
    "sort=size:asc",
    "sort=status:asc,size:desc",
    "sort=created_at:asc&limit=4",
    "sort=id:asc&limit=6",
    "sort=name:asc&limit=4",
    "sort=display_name:desc&limit=4",
    "sort=bootable:asc&limit=5",
    "sort=bootable:desc,size:asc&limit=7",
    "sort=multiattach:asc,id:desc&limit=5",
    "sort=availability_zone:asc,user_id:desc&limit=6",
    "sort=source_volid:asc&limit=5",
    "sort=updated_at:desc&limit=6",
    "sort_key=size&sort_dir=asc&limit=7",
    "sort=group_id:asc&limit=5",
    "sort=service_uuid:desc&limit=5",
    "sort=volume_type_id:asc&limit=5",
    "sort=use_quota:asc&limit=5",
    "sort=shared_targets:asc&limit=5",
    "status=error",
    "status=available&limit=3",
    "name=alpha",
    "availability_zone=az2&limit=4",
    "bootable=true&limit=4",
    f"metadata={TIER}&limit=3",
    "name~=alp",
    "with_count=true&limit=4",
    "with_count=true&status=error",
    "marker={m}&limit=4",
    "marker={m}&offset=2&limit=3",
    "marker={other}&limit=3",
    "all_tenants=1&limit=6",
    # Bad input.
    "limit=-1",
    "offset=abc",
    "marker=does-not-exist",
    "sort=bogus:asc",
    "sort=size:up",
]

# Columns the volume detail view shows (as stored) only from a microversion on.
GATED = {"group_id": 13, "service_uuid": 48, "volume_type_id": 63, "use_quota": 65,
         "shared_targets": 69}


@pytest.fixture(scope="module")
def markers(world):
    return markers_of(world, "volumes")


@pytest.mark.parametrize("ctx,version,query", [
    pytest.param(ctx, version, query, id=f"{ctx}-{version or 'none'}-{query or 'plain'}")
    for ctx in CONTEXTS for version in VERSIONS for query in QUERIES])
def test_volume_detail_list_matches_union(world, markers, ctx, version, query):
    token = CONTEXTS[ctx]
    foreign_marker = ctx == "user" and "{other}" in query
    query = query.format(**markers)
    minor = gated(GATED, version, query)
    if minor:
        check_gated(world, DETAIL, token, version, query, minor)
        return
    if foreign_marker:
        # docs/api.md, "Deliberate differences from Cinder": Cinder looks a volume marker up
        # with an elevated context (volume/api.py get_all, viewable_admin_meta), so a user may
        # page from another project's volume; the proxy finds markers as the caller, as
        # Cinder does for backups and snapshots, and answers Cinder's 404.
        union = get(world.urls["union"], DETAIL, token, version, query)
        proxy = get(world.proxy_url, DETAIL, token, version, query)
        assert union.status_code == 200, union.text
        assert proxy.status_code == 404, proxy.text
        assert proxy.json()["itemNotFound"]["message"] == f"Volume {markers['other']} could not be found."
        return
    check_against_union(world, DETAIL, token, version, query, "volumes")


@pytest.mark.parametrize("version", [None, "3.45", "latest"])
@pytest.mark.parametrize("query", ["", "limit=4", "with_count=true&limit=3&sort=name:asc", "status=error", "limit=-1"])
@pytest.mark.parametrize("ctx", list(CONTEXTS))
def test_volume_summary_list_matches_union(world, ctx, version, query):
    check_against_union(world, SUMMARY, CONTEXTS[ctx], version, query, "volumes")


@pytest.mark.parametrize("version", [None, "3.63"])
@pytest.mark.parametrize("ctx", list(CONTEXTS))
def test_volume_show_matches_union(world, markers, ctx, version):
    check_shows(world, "volumes", CONTEXTS[ctx], version, (markers["m"], markers["other"], "does-not-exist"))


def test_the_comparison_is_not_vacuous(world):
    """The union lists every seeded live volume of P1, with the microversion-gated fields and
    both bootable values, and the proxy lists the same ones."""
    want = {r["id"] for r in data.volumes() if r["project_id"] == P1 and not r.get("deleted")}
    for base in (world.urls["union"], world.proxy_url):
        body = get(base, DETAIL, USER, "latest", "limit=1000").json()
        assert {v["id"] for v in body["volumes"]} == want
        assert {v["bootable"] for v in body["volumes"]} == {"true", "false"}
        assert {"group_id", "service_uuid", "volume_type_id", "consumes_quota"} <= body["volumes"][0].keys()


@pytest.mark.parametrize("ctx", list(CONTEXTS))
def test_a_dashboard_resolves_every_backups_volume(world, ctx):
    """Horizon's backups panel: backup pages of `limit=N+1` with the N-th row's id as the next
    marker, beside the volume and snapshot lists it names each backup's volume from. Through
    the proxy: every live backup of P1 once, in the union's order, and every one's volume
    listed (the backups of every region name volumes that other regions hold)."""
    token, n = CONTEXTS[ctx], 4
    paged, marker = [], None
    for _ in range(50):
        query = f"limit={n + 1}" + (f"&marker={marker}" if marker else "")
        page = get(world.proxy_url, f"/v3/{P1}/backups/detail", token, None, query)
        assert page.status_code == 200, page.text
        rows = page.json()["backups"]
        paged += rows[:n]
        if len(rows) <= n:
            break
        marker = rows[n - 1]["id"]
    union = get(world.urls["union"], f"/v3/{P1}/backups/detail", token, None, "limit=1000").json()["backups"]
    assert [b["id"] for b in paged] == [b["id"] for b in union]
    volumes = get(world.proxy_url, DETAIL, token, None).json()["volumes"]
    snapshots = get(world.proxy_url, f"/v3/{P1}/snapshots/detail", token, None)
    assert snapshots.status_code == 200
    names = {v["id"]: v["name"] for v in volumes}
    assert all(b["volume_id"] in names for b in paged), "a backup's volume is not listed"
    assert len({holder("volumes", b["volume_id"]) for b in paged}) > 1, "the volumes are in one region"
