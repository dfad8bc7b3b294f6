"""The real chain: `openstack volume backup list` (python-openstackclient, password auth through
Keystone) → the catalog's volumev3 endpoint, which is the proxy → two real cinder-api
instances behind keystonemiddleware's authtoken, each validating the forwarded token with the
same Keystone. The listing is the union of both regions' rows."""
import json
import os
import pathlib
import subprocess

import pytest

from cinder_regions import CinderRegions, backup
from conftest import Proxy, login


@pytest.fixture(scope="module")
def chain(keystone, people):
    service = keystone.admin_call("GET", "/v3/projects?name=service")["projects"][0]["id"]
    keystone.user("cinder", "cinder-password", service, ["service", "admin"])
    rows = {"r0": [backup(i, people["p1"], "alice") for i in range(0, 6, 2)],
            "r1": [backup(i, people["p1"], "alice") for i in range(1, 6, 2)]}
    cinder = CinderRegions(keystone, "cinder-password", rows)
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
        yield keystone, proxy, cinder, rows
    finally:
        # The session's Keystone goes on serving other tests: its catalog as it was.
        for endpoint in endpoints:
            keystone.admin_call("DELETE", f"/v3/endpoints/{endpoint}")
        if proxy:
            proxy.stop()
        cinder.stop()


def test_the_proxy_lists_the_union_of_real_cinders_behind_authtoken(chain, people):
    keystone, proxy, cinder, rows = chain
    token = login(keystone, "alice")
    status, body, _ = proxy.get(f"/v3/{people['p1']}/backups/detail", token)
    assert status == 200, body
    expected = sorted(r["id"] for region in rows.values() for r in region)
    assert sorted(b["id"] for b in body["backups"]) == expected
    status, body, headers = proxy.get(f"/v3/{people['p1']}/backups/detail", "garbage")
    assert status == 401 and headers.get("WWW-Authenticate") == f'Keystone uri="{keystone.url}"'


def test_openstack_volume_backup_list_through_the_proxy(chain, people):
    keystone, proxy, cinder, rows = chain
    env = dict(os.environ, OS_AUTH_URL=keystone.url + "/v3", OS_USERNAME="alice", OS_PASSWORD="alice-password",
               OS_PROJECT_NAME="p1", OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default",
               OS_IDENTITY_API_VERSION="3", OS_REGION_NAME="ProxyRegion", OS_INTERFACE="public",
               PYTHONWARNINGS="ignore")
    cli = pathlib.Path(os.environ["VBS_CINDER_VENV"]) / "bin" / "openstack"
    done = subprocess.run([cli, "volume", "backup", "list", "-f", "json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = sorted(b["ID"] for b in json.loads(done.stdout))
    assert listed == sorted(r["id"] for region in rows.values() for r in region)
