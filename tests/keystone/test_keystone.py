"""vbs-proxy's [keystone_authtoken] against a real Keystone 30.0.0 (sqlite, fernet): tokens
checked at the edge, cache.scope = "project", Keystone down. The regions are stand-ins that
take any token and count calls (conftest.py)."""
import time

import pytest

from conftest import Proxy, Region, login

DETAIL = "/v3/{}/backups/detail"


@pytest.fixture
def regions():
    return [Region(), Region()]


def calls(regions):
    return sum(r.calls for r in regions)


def test_garbage_and_missing_tokens_get_authtokens_401_and_reach_no_region(keystone, people, regions):
    proxy = Proxy(keystone, regions)
    try:
        for token in (None, "garbage", "gAAAAABn" + "x" * 175):
            status, body, headers = proxy.get(DETAIL.format(people["p1"]), token)
            assert status == 401, body
            assert body == {"error": {"code": 401, "title": "Unauthorized",
                                      "message": "The request you have made requires authentication."}}
            assert headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}"'
        assert calls(regions) == 0
        status, body, _ = proxy.get(DETAIL.format(people["p1"]), login(keystone, "alice"))
        assert status == 200, body
        assert calls(regions) == 2
    finally:
        proxy.stop()


def test_another_projects_token_gets_cinders_400_without_a_region_call(keystone, people, regions):
    proxy = Proxy(keystone, regions)
    try:
        status, body, _ = proxy.get(DETAIL.format(people["p1"]), login(keystone, "dave", "p2"))
        assert status == 400 and body["badRequest"]["message"] == "Malformed request url", body
        assert calls(regions) == 0
    finally:
        proxy.stop()


def test_a_revoked_token_is_refused_within_token_cache_time(keystone, people, regions):
    proxy = Proxy(keystone, regions, 'token_cache_time = "1s"')
    try:
        token = login(keystone, "alice")
        assert proxy.get(DETAIL.format(people["p1"]), token)[0] == 200
        keystone.revoke(token)
        deadline = time.monotonic() + 15
        while proxy.get(DETAIL.format(people["p1"]), token)[0] != 401:
            assert time.monotonic() < deadline, "the revoked token was still accepted"
            time.sleep(0.1)
    finally:
        proxy.stop()


def test_project_scope_shares_between_same_roles_and_never_with_an_admin(keystone, people, regions):
    proxy = Proxy(keystone, regions, '[cache]\nscope = "project"\nttl = "60s"')
    try:
        url = DETAIL.format(people["p1"])
        assert proxy.get(url, login(keystone, "alice"))[0] == 200
        assert calls(regions) == 2
        # Another user, and a new token of the same user: the same project and roles.
        status, _, headers = proxy.get(url, login(keystone, "bob"))
        assert status == 200 and "hit" in (headers.get("Cache-Status") or ""), dict(headers)
        assert proxy.get(url, login(keystone, "alice"))[0] == 200
        assert calls(regions) == 2
        # An admin of the project has other roles: its own entries, here and with all_tenants.
        admin = login(keystone, "carol")
        assert proxy.get(url, admin)[0] == 200
        assert calls(regions) == 4
        assert proxy.get(url + "?all_tenants=1", admin)[0] == 200
        assert calls(regions) == 6
        assert proxy.get(url + "?all_tenants=1", login(keystone, "bob"))[0] == 200
        assert calls(regions) == 8, "a member's all_tenants listing is never the admin's"
    finally:
        proxy.stop()


def test_keystone_down_keeps_validated_tokens_and_refuses_new_ones(keystone, people, regions):
    proxy = Proxy(keystone, regions)
    try:
        url = DETAIL.format(people["p1"])
        known, new = login(keystone, "alice"), login(keystone, "bob")
        assert proxy.get(url, known)[0] == 200
        keystone.stop()
        try:
            assert proxy.get(url, known)[0] == 200, "validated before: still good"
            before = calls(regions)
            status, body, headers = proxy.get(url, new)
            assert status == 503 and headers.get("Retry-After"), body
            assert calls(regions) == before, "never let through unchecked"
        finally:
            keystone.start()
        assert proxy.get(url, new)[0] == 200
    finally:
        proxy.stop()


def test_regions_come_from_the_catalog(keystone, people, regions):
    keystone.volume_endpoints({"RegionOne": regions[0].url, "RegionTwo": regions[1].url})
    proxy = Proxy(keystone, [], '[regions_from_catalog]\nservice_type = "volumev3"\ninterface = "internal"')
    try:
        url = DETAIL.format(people["p1"])
        status, body, headers = proxy.get(url, login(keystone, "alice"))
        assert status == 200, body
        asked = [[p.split("?")[0] for p in r.paths] for r in regions]
        assert asked == [[url], [url]], "each catalog region asked once, at its root"
        assert headers.get("X-Aggregate-Missing-Regions") is None
    finally:
        proxy.stop()
    # A filter on the Keystone regions keeps the others out.
    proxy = Proxy(keystone, [], '[regions_from_catalog]\nservice_type = "volumev3"\nregions = ["RegionTwo"]')
    try:
        assert proxy.get(DETAIL.format(people["p1"]), login(keystone, "alice"))[0] == 200
        assert [len(r.paths) for r in regions] == [1, 2]
    finally:
        proxy.stop()


def test_the_catalog_is_read_again_on_version_refresh(keystone, people):
    """Regions added to and removed from the catalog are taken up on version_refresh; a
    catalog that cannot be read leaves the regions as they were."""
    first, second = Region(), Region()
    keystone.volume_endpoints({"RefreshA": first.url})
    proxy = Proxy(keystone, [], '[regions_from_catalog]\nservice_type = "volumev3"\n'
                  'regions = ["RefreshA", "RefreshB"]\n[upstream]\nversion_refresh = "1s"')
    reads = "vbs_catalog_reads_total"
    try:
        token = login(keystone, "alice")
        url = DETAIL.format(people["p1"])
        assert proxy.get(url, token)[0] == 200
        assert (first.calls, second.calls) == (1, 0)
        keystone.volume_endpoints({"RefreshB": second.url})
        proxy.until_counted(reads, 'outcome="changed"', 1)
        status, body, headers = proxy.get(url, token)
        assert status == 200 and headers.get("X-Aggregate-Missing-Regions") is None, body
        assert (first.calls, second.calls) == (2, 1), "a new set of regions starts a new cache"
        keystone.remove_endpoints("RefreshA")
        proxy.until_counted(reads, 'outcome="changed"', 2)
        assert proxy.get(url + "?limit=5", token)[0] == 200
        assert (first.calls, second.calls) == (2, 2), "the region left the catalog"
        # Keystone away: the regions stay as they are (and the token, validated, still works).
        keystone.stop()
        try:
            proxy.until_counted(reads, 'outcome="failed"', 1)
            assert proxy.get(url + "?limit=6", token)[0] == 200
            assert (first.calls, second.calls) == (2, 3)
        finally:
            keystone.start()
    finally:
        proxy.stop()
        keystone.remove_endpoints("RefreshA")
        keystone.remove_endpoints("RefreshB")
