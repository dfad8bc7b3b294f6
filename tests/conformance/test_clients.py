"""Real OpenStack clients pointed at the proxy get what they get from the union instance:
python-cinderclient (Python API for backups, snapshots and volumes, and the `cinder backup-list`
command) and openstacksdk, each following next links on its own."""
import os
import subprocess
import sys

import pytest
from cinderclient import client as cinder_client
from cinderclient.contrib.noauth import CinderNoAuthPlugin
from keystoneauth1 import session, token_endpoint

import data

P1 = data.P1


def cinder(base, version="3.45"):
    auth = CinderNoAuthPlugin("admin", P1, endpoint=base + "/v3")
    return cinder_client.Client(version, session=session.Session(auth=auth))


def bases(world):
    return world.proxy_url, world.urls["union"]


@pytest.mark.parametrize("kwargs", [
    {},
    {"search_opts": {"status": "error"}},
    {"sort": "name:asc"},
    {"sort": "size:desc,created_at:asc"},
    {"limit": 4},
    {"limit": 4, "sort": "name:desc"},
    {"search_opts": {"name~": "a"}},
], ids=str)
@pytest.mark.parametrize("detailed", [True, False])
def test_cinderclient_python_api(world, kwargs, detailed):
    proxy, union = (cinder(b).backups.list(detailed=detailed, **kwargs) for b in bases(world))
    assert [b.id for b in proxy] == [b.id for b in union]
    assert [b.name for b in proxy] == [b.name for b in union]
    if detailed:
        assert [b.status for b in proxy] == [b.status for b in union]


def test_cinderclient_follows_every_link(world):
    """Without a limit cinderclient walks the links itself; with the proxy capped at 7 rows a
    page (VBS_PROXY__SERVER__MAX_LIMIT is not used here), region r1 capped at 5: all rows."""
    proxy, union = (cinder(b).backups.list(detailed=True) for b in bases(world))
    visible = [r for r in data.rows() if r["project_id"] == P1 and not r.get("deleted")]
    assert len(proxy) == len(union) == len(visible)


@pytest.mark.parametrize("args", [[], ["--status", "available"], ["--sort", "name:asc"], ["--limit", "5"]], ids=str)
def test_cinder_backup_list_command(world, args):
    def run(base):
        command = [os.path.join(sys.prefix, "bin", "cinder"), "--os-auth-type", "noauth", "--os-user-id", "admin",
                   "--os-project-id", P1, "--os-endpoint", base + "/v3", "--os-volume-api-version", "3.45",
                   "backup-list", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
        assert done.returncode == 0, done.stderr
        return done.stdout

    proxy, union = (run(b) for b in bases(world))
    assert proxy == union


@pytest.mark.parametrize("query", [{}, {"limit": 4}, {"limit": 3, "status": "error"}, {"sort_key": "size", "sort_dir": "asc", "limit": 5}],
                         ids=str)
def test_openstacksdk_paginates_like_the_union(world, query):
    def ids(base):
        return [(b.id, b.name, b.status) for b in sdk(base).block_storage.backups(details=True, **query)]

    proxy, union = (ids(b) for b in bases(world))
    assert proxy == union
    assert len(proxy) > 0


@pytest.mark.parametrize("kwargs", [
    {},
    {"search_opts": {"status": "error"}},
    {"sort": "name:asc"},
    {"limit": 4, "sort": "status:asc"},
], ids=str)
@pytest.mark.parametrize("detailed", [True, False])
def test_cinderclient_lists_snapshots_like_the_union(world, kwargs, detailed):
    """cinderclient's snapshot listing through the proxy gives the union's snapshots, in its
    order."""
    proxy, union = (cinder(b).volume_snapshots.list(detailed=detailed, **kwargs) for b in bases(world))
    assert [(s.id, s.name, s.status, s.size) for s in proxy] == [(s.id, s.name, s.status, s.size) for s in union]
    assert len(union) > 0


@pytest.mark.parametrize("kwargs", [
    {},
    {"search_opts": {"status": "error"}},
    {"sort": "name:asc"},
    {"limit": 4, "sort": "bootable:desc"},
], ids=str)
@pytest.mark.parametrize("detailed", [True, False])
def test_cinderclient_lists_volumes_like_the_union(world, kwargs, detailed):
    """cinderclient's volume listing through the proxy gives the union's volumes, in its order."""
    proxy, union = (cinder(b).volumes.list(detailed=detailed, **kwargs) for b in bases(world))
    assert [(v.id, v.name) for v in proxy] == [(v.id, v.name) for v in union]
    if detailed:
        assert [(v.status, v.size, v.bootable) for v in proxy] == [(v.status, v.size, v.bootable) for v in union]
    assert len(union) > 0


def sdk(base):
    import openstack
    endpoint = f"{base}/v3/{P1}"
    sess = session.Session(auth=token_endpoint.Token(endpoint, f"admin:{P1}"))
    return openstack.connection.Connection(session=sess, block_storage_api_version="3",
                                           block_storage_endpoint_override=endpoint)


def test_openstacksdk_lists_snapshots_and_volumes_like_the_union(world):
    def listed(base):
        conn = sdk(base)
        snapshots = [(s.id, s.name, s.size) for s in conn.block_storage.snapshots(details=True, limit=4)]
        volumes = [(v.id, v.name, v.size, v.is_bootable) for v in conn.block_storage.volumes(details=True, limit=4)]
        return snapshots, volumes

    proxy, union = (listed(b) for b in bases(world))
    assert proxy == union
    assert len(proxy[0]) > 0 and len(proxy[1]) > 0
