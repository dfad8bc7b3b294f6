"""The proxy as one Cinder endpoint, against real cinder-api regions (issue 24): a creation
reaches the region holding its sources, and only it; delete, restore and update of items held
by the second and third regions get the answer the union instance gives to the same request,
and reach only the owner; an id no region holds gets the union's 404; a restore into a volume
of another region is refused naming both, and no region is asked to act.

Calls per region are counted in each instance's own request log (eventlet's access lines).
These tests change rows (the union instance's alike), so they run after every comparison
(conftest.py, the `writes` marker)."""
import json

import pytest
import requests

import data
from conftest import USER
from differential import holder, normalised

pytestmark = pytest.mark.writes
P1 = data.P1
VERSION = "3.9"  # backup update


def send(base, method, path, body=None):
    headers = {"X-Auth-Token": USER, "OpenStack-API-Version": f"volume {VERSION}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return requests.request(method, base + path, headers=headers, timeout=60,
                            data=json.dumps(body) if body is not None else None)


def calls(world, name, method, path):
    """Requests `method path` (path without query) the instance `name` answered."""
    log = (world.workdir / name / "cinder-api.log").read_text()
    line = f'"{method} {path} HTTP/1.1"'
    return sum(1 for l in log.splitlines() if "eventlet.wsgi.server" in l and line in l)


def reached_only(world, owner, method, path):
    got = {name: calls(world, name, method, path) for name in data.REGIONS}
    assert got == {name: int(name == owner) for name in data.REGIONS}, f"{method} {path}: {got}"


def live_backups(region, **columns):
    """The region's live backups of P1 with these values, leaving out parents of incremental
    backups: the seeds put some children in another region than their parent, which Cinder
    never does, so a delete would be judged differently there and in the union."""
    parents = {r["parent_id"] for r in data.rows()}
    rows = data.tables()[region]["backups"]
    return [r for r in rows if r["project_id"] == P1 and not r.get("deleted") and r["id"] not in parents
            and all(r[k] == v for k, v in columns.items())]


def test_a_backup_of_a_volume_of_region_2_is_made_there_alone(world):
    volume = data.VOLUMES[2]
    assert holder("volumes", volume) == "r1"
    body = {"backup": {"volume_id": volume, "name": "routed"}}
    proxy = send(world.proxy_url, "POST", f"/v3/{P1}/backups", body)
    union = send(world.urls["union"], "POST", f"/v3/{P1}/backups", body)
    assert (proxy.status_code, union.status_code) == (202, 202), f"{proxy.text} / {union.text}"
    assert proxy.json()["backup"]["name"] == union.json()["backup"]["name"] == "routed"
    reached_only(world, "r1", "POST", f"/v3/{P1}/backups")
    made = proxy.json()["backup"]["id"]
    found = {name: send(world.urls[name], "GET", f"/v3/{P1}/backups/{made}").status_code for name in data.REGIONS}
    assert found == {"r0": 404, "r1": 200, "r2": 404}
    # And it is listed through the proxy, which links it to itself.
    listed = send(world.proxy_url, "GET", f"/v3/{P1}/backups/{made}")
    assert listed.status_code == 200 and world.proxy_url in listed.text


@pytest.mark.parametrize("region", ["r1", "r2"])
def test_actions_on_items_of_other_regions_answer_like_the_union(world, region):
    available = live_backups(region, status="available")[0]["id"]
    creating = live_backups(region, status="creating")[0]["id"]
    error = live_backups(region, status="error")[0]["id"]
    # Restores go into an existing volume of the region, big enough: without one Cinder makes
    # a volume and waits for a volume service this cluster does not run.
    volumes = sorted((r for r in data.tables()[region]["volumes"]
                      if r["project_id"] == P1 and not r.get("deleted") and r["status"] == "available"
                      and r["id"] not in data.VOLUMES), key=lambda r: r["size"])
    into = {"restore": {"volume_id": volumes[-1]["id"]}}
    b = "/v3/" + P1 + "/backups/"
    actions = [
        ("PUT", b + available, {"backup": {"name": "renamed", "description": "by the proxy"}}),
        ("POST", b + error + "/restore", into),
        ("DELETE", b + creating, None),
        ("POST", b + available + "/restore", into),
        ("DELETE", b + available, None),  # now restoring
        ("DELETE", b + error, None),
    ]
    statuses = set()
    for method, path, body in actions:
        proxy = send(world.proxy_url, method, path, body)
        statuses.add(proxy.status_code)
        union = send(world.urls["union"], method, path, body)
        what = f"{method} {path}"
        assert proxy.status_code == union.status_code, f"{what}: {proxy.text} vs {union.text}"
        assert normalised(proxy, "backups") == normalised(union, "backups"), what
        reached_only(world, region, method, path)
    # Accepted, updated and refused for the state the item is in, as the union judged.
    assert {200, 202, 400} <= statuses, statuses
    # A volume of that region: an action and an update.
    v = f"/v3/{P1}/volumes/{volumes[0]['id']}"
    for method, path, body in [("POST", v + "/action", {"os-set_bootable": {"bootable": True}}),
                               ("PUT", v, {"volume": {"name": "renamed-volume"}})]:
        proxy = send(world.proxy_url, method, path, body)
        union = send(world.urls["union"], method, path, body)
        assert proxy.status_code == union.status_code == 200, f"{path}: {proxy.text} vs {union.text}"
        got, want = normalised(proxy, "volumes"), normalised(union, "volumes")
        if got:
            # The update's time is each instance's own.
            got["volume"].pop("updated_at"), want["volume"].pop("updated_at")
        assert got == want, path
        reached_only(world, region, method, path)


def test_an_id_no_region_holds_gets_the_unions_404(world):
    path = f"/v3/{P1}/backups/does-not-exist"
    for method, suffix, body in [("DELETE", "", None), ("PUT", "", {"backup": {"name": "x"}}),
                                 ("POST", "/restore", {"restore": {}})]:
        proxy = send(world.proxy_url, method, path + suffix, body)
        union = send(world.urls["union"], method, path + suffix, body)
        assert (proxy.status_code, union.status_code) == (404, 404), f"{proxy.text} / {union.text}"
        assert proxy.json() == union.json()
        reached_only(world, None, method, path + suffix)


def test_a_restore_into_a_volume_of_another_region_is_refused_naming_both(world):
    backup = live_backups("r1", status="available")[-1]
    volume = data.VOLUMES[1]
    assert holder("volumes", volume) == "r2"
    path = f"/v3/{P1}/backups/{backup['id']}/restore"
    proxy = send(world.proxy_url, "POST", path, {"restore": {"volume_id": volume}})
    assert proxy.status_code == 400, proxy.text
    message = proxy.json()["badRequest"]["message"]
    assert f"backup {backup['id']} in r1, volume_id {volume} in r2" in message, message
    reached_only(world, None, "POST", path)
