import os

import pytest

import cluster
import data

ADMIN = f"admin:{data.P1}"                 # no roles: admin (fakeauth.py)
USER = f"user1:{data.P1}:member,reader"    # what Keystone gives a normal user


@pytest.fixture(scope="session")
def world():
    """Three region instances holding a split of the data, a union instance holding all of it,
    and the proxy over the three regions. Region r1 caps its pages at 5 (osapi_max_limit)."""
    c = cluster.Cluster()
    try:
        instances = {name: (tables, 5 if name == "r1" else 1000) for name, tables in data.tables().items()}
        c.start_cinder(instances)
        c.start_proxy(data.REGIONS, extra=os.environ.get("VBS_CONFORMANCE_PROXY_EXTRA", ""))
        yield c
    finally:
        c.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "writes: changes the regions' rows (runs after every comparison)")


def pytest_collection_modifyitems(items):
    """Tests that change rows (test_routing.py) run last, so every differential comparison sees
    the seeded data; they change the union instance alike, so it stays the union."""
    items.sort(key=lambda item: item.get_closest_marker("writes") is not None)
