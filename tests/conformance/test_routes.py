"""Routes other than the listing: show, version documents, microversion errors, the native
alias, authentication and policy refusals — against the union instance, and where the proxy
deliberately differs, what it does instead."""
import pytest

import data
from conftest import ADMIN, USER
from differential import assert_same, exact_walk, get, ids, normalised, walk
from test_differential import DETAIL

P1 = data.P1


@pytest.fixture(scope="module")
def some_ids(world):
    union = world.urls["union"]
    own = ids(get(union, DETAIL, ADMIN, None, "limit=3"), "backups")
    other = ids(get(union, f"/v3/{data.P2}/backups/detail", f"admin:{data.P2}", None, "limit=1"), "backups")[0]
    deleted = next(r["id"] for r in data.rows() if r.get("deleted"))
    return {"own": own, "other": other, "deleted": deleted}


@pytest.mark.parametrize("version", [None, "3.45", "3.71"])
@pytest.mark.parametrize("ctx", ["admin", "user"])
@pytest.mark.parametrize("which", ["own0", "own2", "other", "deleted", "missing"])
def test_show_matches_union(world, some_ids, ctx, version, which):
    token = {"admin": ADMIN, "user": USER}[ctx]
    backup = {"own0": some_ids["own"][0], "own2": some_ids["own"][2], "other": some_ids["other"],
              "deleted": some_ids["deleted"], "missing": "does-not-exist"}[which]
    path = f"/v3/{P1}/backups/{backup}"
    assert_same(get(world.proxy_url, path, token, version), get(world.urls["union"], path, token, version), path, "backups")


@pytest.mark.parametrize("header", ["volume 3.99", "volume 3.72", "volume 2.0", "volume abc", "volume 3",
                                    "compute 2.1", "", "VOLUME 3.45", "compute 2.1, volume 3.45", "volume latest"])
def test_version_header_matches_union(world, header):
    headers = {"X-Auth-Token": ADMIN, "OpenStack-API-Version": header}
    import requests
    proxy = requests.get(world.proxy_url + DETAIL + "?limit=2", headers=headers)
    union = requests.get(world.urls["union"] + DETAIL + "?limit=2", headers=headers)
    assert proxy.status_code == union.status_code, f"{header!r}: {proxy.text} vs {union.text}"
    assert normalised(proxy, "backups") == normalised(union, "backups"), header


@pytest.mark.parametrize("header", ["volume", "volume 3.0 extra"])
def test_malformed_version_is_400_not_500(world, header):
    """Deviation: Cinder answers these with a 500 (an unhandled ValueError); the proxy, 400."""
    import requests
    headers = {"X-Auth-Token": ADMIN, "OpenStack-API-Version": header}
    assert requests.get(world.urls["union"] + DETAIL, headers=headers).status_code == 500
    proxy = requests.get(world.proxy_url + DETAIL, headers=headers)
    assert proxy.status_code == 400
    assert "is of invalid format" in proxy.json()["badRequest"]["message"]


def test_version_documents(world):
    import requests
    proxy, union = requests.get(world.proxy_url + "/"), requests.get(world.urls["union"] + "/")
    assert proxy.status_code == union.status_code == 300
    assert normalised(proxy, "backups") == normalised(union, "backups")
    proxy = get(world.proxy_url, "/v3/", ADMIN, None)
    union = get(world.urls["union"], "/v3/", ADMIN, None)
    assert proxy.status_code == union.status_code == 200
    assert normalised(proxy, "backups") == normalised(union, "backups")
    assert proxy.json()["versions"][0]["links"][1]["href"] == world.proxy_url + "/v3/"


def test_native_alias(world):
    """Upstream Cinder has no `native` route (404); the proxy serves it as the detail list,
    with links on the path the client used."""
    native = f"/v3/{P1}/native/backups/detail"
    assert get(world.urls["union"], native, ADMIN, "3.45", "limit=3").status_code == 404
    proxy = get(world.proxy_url, native, ADMIN, "3.45", "limit=3&with_count=true")
    union = get(world.urls["union"], DETAIL, ADMIN, "3.45", "limit=3&with_count=true")
    assert proxy.status_code == 200
    assert proxy.json()["backups"] == normalised(union, "backups")["backups"] or \
        normalised(proxy, "backups")["backups"] == normalised(union, "backups")["backups"]
    assert proxy.json()["count"] == union.json()["count"]
    assert proxy.json()["backups_links"][0]["href"].startswith(f"{world.proxy_url}{native}?limit=3&with_count=true&marker=")


def test_authentication_and_policy(world):
    # No token: the proxy answers 401 itself.
    proxy = get(world.proxy_url, DETAIL, None, None)
    assert proxy.status_code == 401
    # A member without the reader role: Cinder's policy refuses, the proxy returns that.
    member = f"user1:{P1}:member"
    proxy, union = get(world.proxy_url, DETAIL, member, None), get(world.urls["union"], DETAIL, member, None)
    assert union.status_code == 403
    assert_same(proxy, union, "member only", "backups")
    # Another project's token on this project's URL: Cinder's "Malformed request url".
    foreign = f"user1:{data.P2}:member,reader"
    assert_same(get(world.proxy_url, DETAIL, foreign, None), get(world.urls["union"], DETAIL, foreign, None), "foreign", "backups")


def test_nullable_sort_walk_is_exact_where_cinder_is_not(world):
    """docs/cinder-behaviour.md, "Walks over nullable sort keys": walking name asc over NULL
    and empty names, Cinder loses the empty one; the proxy returns every row once, in order."""
    query = "sort=name:asc&limit=4"
    union = walk(get(world.urls["union"], DETAIL, ADMIN, "3.37", query), ADMIN, "3.37", "backups")
    proxy = walk(get(world.proxy_url, DETAIL, ADMIN, "3.37", query), ADMIN, "3.37", "backups")
    exact = exact_walk(world, DETAIL, ADMIN, "3.37", query, "backups")
    assert proxy == exact
    assert len(set(proxy)) == len(proxy)
    assert union != exact, "Cinder's walk is expected to be broken here; the data set no longer shows it"
