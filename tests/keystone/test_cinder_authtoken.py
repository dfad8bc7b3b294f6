"""The real chain: `openstack volume backup list` (python-openstackclient, password auth through
Keystone) → the catalog's volumev3 endpoint, which is the proxy → two real cinder-api
instances behind keystonemiddleware's authtoken, each validating the forwarded token with the
same Keystone. The listing is the union of both regions' rows; `backup create`, `show` and
`delete` act on the region that holds the volume or backup, and on no other."""
import json
import os
import pathlib
import subprocess

import pytest

from cinder_regions import CinderRegions, backup, volume
from conftest import Proxy, login
from keystone_server import call


@pytest.fixture(scope="module")
def chain(keystone, people):
    service = keystone.admin_call("GET", "/v3/projects?name=service")["projects"][0]["id"]
    keystone.user("cinder", "cinder-password", service, ["service", "admin"])
    rows = {"r0": [backup(i, people["p1"], "alice") for i in range(0, 6, 2)],
            "r1": [backup(i, people["p1"], "alice") for i in range(1, 6, 2)]}
    # One volume, held by the second region only.
    volumes = {"r1": [volume(1, people["p1"], "alice")]}
    cinder = CinderRegions(keystone, "cinder-password", rows, volumes)
    proxy, endpoints = None, []
    try:
        proxy = Proxy(keystone, [type("R", (), {"url": cinder.urls[n]}) for n in ("r0", "r1")])
        # The proxy is the volumev3 endpoint of a Keystone region of its own, as a client's
        # catalog would name it; the region needs an identity endpoint too (openstacksdk).
        keystone.admin_call("POST", "/v3/regions", {"region": {"id": "ProxyRegion"}})
        services = {s["type"]: s["id"] for s in keystone.admin_call("GET", "/v3/services")["services"]}
        if "volumev3" not in services:
            services["volumev3"] = keystone.admin_call("POST", "/v3/services", {"service": {
                "type": "volumev3", "name": "cinderv3"}})["service"]["id"]
        for kind, url in (("volumev3", proxy.url + "/v3/%(project_id)s"), ("identity", keystone.url)):
            for interface in ("public", "internal"):
                endpoints.append(keystone.admin_call("POST", "/v3/endpoints", {"endpoint": {
                    "service_id": services[kind], "interface": interface, "region_id": "ProxyRegion",
                    "url": url}})["endpoint"]["id"])
        yield keystone, proxy, cinder, rows, volumes
    finally:
        # The session's Keystone goes on serving other tests: its catalog as it was.
        for endpoint in endpoints:
            keystone.admin_call("DELETE", f"/v3/endpoints/{endpoint}")
        if proxy:
            proxy.stop()
        cinder.stop()


def test_the_proxy_lists_the_union_of_real_cinders_behind_authtoken(chain, people):
    keystone, proxy, cinder, rows, _ = chain
    token = login(keystone, "alice")
    status, body, _ = proxy.get(f"/v3/{people['p1']}/backups/detail", token)
    assert status == 200, body
    expected = sorted(r["id"] for region in rows.values() for r in region)
    assert sorted(b["id"] for b in body["backups"]) == expected
    status, body, headers = proxy.get(f"/v3/{people['p1']}/backups/detail", "garbage")
    assert status == 401 and headers.get("WWW-Authenticate") == f'Keystone uri="{keystone.url}"'


def openstack(keystone, *args):
    """`openstack <args>` as alice of p1, with the proxy as the catalog's volume endpoint."""
    env = dict(os.environ, OS_AUTH_URL=keystone.url + "/v3", OS_USERNAME="alice", OS_PASSWORD="alice-password",
               OS_PROJECT_NAME="p1", OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default",
               OS_IDENTITY_API_VERSION="3", OS_REGION_NAME="ProxyRegion", OS_INTERFACE="public",
               PYTHONWARNINGS="ignore")
    cli = pathlib.Path(os.environ["VBS_CINDER_VENV"]) / "bin" / "openstack"
    done = subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_openstack_volume_backup_list_through_the_proxy(chain, people):
    keystone, proxy, cinder, rows, _ = chain
    listed = sorted(b["ID"] for b in json.loads(openstack(keystone, "volume", "backup", "list", "-f", "json")))
    assert listed == sorted(r["id"] for region in rows.values() for r in region)


def test_openstack_volume_backup_create_show_delete_act_on_the_owning_region(chain, people):
    """Runs after the listing test: it adds a backup."""
    keystone, proxy, cinder, rows, volumes = chain
    token = login(keystone, "alice")
    p1 = people["p1"]

    def held(region, backup_id):
        """The backup as the region itself has it (its own API, alice's token), or None."""
        status, body, _ = call("GET", f"{cinder.urls[region]}/v3/{p1}/backups/{backup_id}",
                               headers={"X-Auth-Token": token}, expect=(200, 404))
        return body["backup"] if status == 200 else None

    made = json.loads(openstack(keystone, "volume", "backup", "create", "--name", "made-by-cli", "-f", "json",
                                volumes["r1"][0]["id"]))
    assert held("r1", made["id"]) is not None and held("r0", made["id"]) is None
    shown = json.loads(openstack(keystone, "volume", "backup", "show", "-f", "json", made["id"]))
    assert (shown["id"], shown["name"], shown["volume_id"]) == (made["id"], "made-by-cli", volumes["r1"][0]["id"])
    # A backup of the first region, deleted through the proxy: gone there (deleting), untouched
    # in the other.
    doomed = rows["r0"][0]["id"]
    openstack(keystone, "volume", "backup", "delete", doomed)
    assert held("r0", doomed)["status"] == "deleting"
    assert held("r1", rows["r1"][0]["id"])["status"] == "available"
