"""An expired token, against a real Keystone whose tokens live 4 s: the proxy keeps a verdict
only until the token's own expires_at (even with token_cache_time = 300 s), then Keystone
says 404 and the proxy 401."""
import time

import pytest

from conftest import Proxy, Region, login
from keystone_server import Keystone


@pytest.fixture(scope="module")
def short_lived():
    k = Keystone(token_expiration=4)
    service = k.project("service")
    k.user("vbs-proxy", "service-password", service, ["service"])
    p1 = k.project("p1")
    k.user("alice", "alice-password", p1, ["member"])
    try:
        yield k, p1
    finally:
        k.stop()


def test_an_expired_token_is_refused_although_its_verdict_was_cached(short_lived):
    keystone, p1 = short_lived
    regions = [Region()]
    proxy = Proxy(keystone, regions, 'token_cache_time = "300s"')
    try:
        url = f"/v3/{p1}/backups/detail"
        token = login(keystone, "alice")
        issued = time.monotonic()
        assert proxy.get(url, token)[0] == 200
        deadline = issued + 20
        while (status := proxy.get(url, token)[0]) == 200:
            assert time.monotonic() < deadline, "the expired token was still accepted"
            time.sleep(0.2)
        assert status == 401
        assert time.monotonic() - issued >= 2, "refused only once expired"
        # The proxy's own token lives 4 s too: it renews it and keeps validating.
        fresh = login(keystone, "alice")
        assert proxy.get(url, fresh)[0] == 200
    finally:
        proxy.stop()
