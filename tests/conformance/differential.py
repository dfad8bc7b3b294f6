"""What the differential suites share: requests to a proxy or a Cinder, the comparison of two
answers (link hosts and the proxy's cursor markers normalised), and walks over next links.
Every helper takes the collection (`backups`, `snapshots`) it looks at."""
import json
import re
import urllib.parse

import requests

import data

HOST = re.compile(r"http://127\.0\.0\.1:\d+")


def get(base, path, token, version, query=""):
    headers = {}
    if token:
        headers["X-Auth-Token"] = token
    if version:
        headers["OpenStack-API-Version"] = f"volume {version}"
    url = base + path + (f"?{query}" if query else "")
    return requests.get(url, headers=headers, allow_redirects=False, timeout=60)


def follow(href, token, version):
    headers = {"X-Auth-Token": token}
    if version:
        headers["OpenStack-API-Version"] = f"volume {version}"
    return requests.get(href, headers=headers, timeout=60)


def without_marker(href):
    """A next link with its host and marker value normalised: the proxy's marker is a cursor."""
    parts = urllib.parse.urlsplit(HOST.sub("BASE", href))
    query = [(k, "M" if k == "marker" else v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def normalised(response, collection):
    """The body as JSON with link hosts replaced and next-link markers blanked."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    text = HOST.sub("BASE", response.text)
    body = json.loads(text)
    for link in body.get(f"{collection}_links", []) if isinstance(body, dict) else []:
        link["href"] = without_marker(link["href"])
    return body


def ids(response, collection):
    return [b["id"] for b in response.json()[collection]]


def next_href(response, collection):
    links = response.json().get(f"{collection}_links") or []
    return links[0]["href"] if links else None


def assert_same(proxy, union, what, collection):
    assert proxy.status_code == union.status_code, f"{what}: {proxy.status_code} {proxy.text[:300]} vs {union.status_code} {union.text[:300]}"
    assert normalised(proxy, collection) == normalised(union, collection), what
    if union.headers.get("OpenStack-API-Version"):
        assert proxy.headers.get("OpenStack-API-Version") == union.headers["OpenStack-API-Version"], what
        assert proxy.headers.get("Vary") == "X-Auth-Token, OpenStack-API-Version", what


def walk(first, token, version, collection, limit=100):
    """Every id from `first` on, following next links."""
    seen, response = [], first
    for _ in range(limit):
        seen += ids(response, collection)
        href = next_href(response, collection)
        if not href:
            return seen
        response = follow(href, token, version)
        assert response.status_code == 200, response.text
    raise AssertionError("walk did not end")


def exact_walk(world, path, token, version, query, collection):
    """Cinder's walk computed over the union's full order, with exact marker semantics."""
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    get_param = dict(params).get
    rest = "&".join(f"{k}={v}" for k, v in params if k not in ("limit", "offset", "marker"))
    full = ids(get(world.urls["union"], path, token, version, (rest + "&" if rest else "") + "limit=1000"), collection)
    limit, offset = int(get_param("limit", 1000)), int(get_param("offset", 0))
    pos = full.index(get_param("marker")) + 1 if get_param("marker") else 0
    seq = []
    while True:
        page = full[pos + offset:pos + offset + limit]
        seq += page
        if len(page) < limit or not page:
            return seq
        pos = full.index(page[-1]) + 1


def holder(table, id):
    """The region whose seeded rows of `table` include `id`."""
    tables = data.tables()
    return next(name for name in data.REGIONS if any(r["id"] == id for r in tables[name][table]))


def markers_of(world, collection):
    """`{m}`: an item of P1 (the 7th in the default order); `{other}`: one of the other project."""
    union = world.urls["union"]
    first = get(union, f"/v3/{data.P1}/{collection}/detail", f"admin:{data.P1}", None, "limit=10")
    other = get(union, f"/v3/{data.P2}/{collection}/detail", f"admin:{data.P2}", None, "limit=1")
    return {"m": ids(first, collection)[6], "other": ids(other, collection)[0]}


def check_shows(world, collection, token, version, ids):
    """Showing each of `ids` through the proxy gives the union's answer (links normalised)."""
    for id in ids:
        path = f"/v3/{data.P1}/{collection}/{id}"
        proxy, union = get(world.proxy_url, path, token, version), get(world.urls["union"], path, token, version)
        assert proxy.status_code == union.status_code, f"{path}: {proxy.text[:300]} vs {union.text[:300]}"
        assert normalised(proxy, collection) == normalised(union, collection), path


def below(version, minor):
    return version is None or (version != "latest" and int(version.split(".")[1]) < minor)


def gated(gates, version, query):
    """The minor version a sort in `query` needs to be mergeable ({column: minor} `gates`), if
    `version` is below it."""
    for column, minor in gates.items():
        if f"sort={column}" in query and below(version, minor):
            return minor
    return None


def check_gated(world, path, token, version, query, minor):
    """docs/api.md, "Deliberate differences from Cinder": Cinder sorts on a column its view does
    not show at this version; the proxy has no value to merge on and says so."""
    proxy = get(world.proxy_url, path, token, version, query)
    assert proxy.status_code == 400, proxy.text
    assert f"not supported by vbs-proxy below microversion 3.{minor}" in proxy.json()["badRequest"]["message"]




def check_against_union(world, path, token, version, query, collection):
    """The proxy's answer to `path?query` equals the union's; and walking both to the end gives
    the same ids, or, where Cinder's own walk is broken by NULL sort values
    (docs/cinder-behaviour.md, "Walks over nullable sort keys"), the proxy gives what an exact
    walk over the union's order gives."""
    proxy = get(world.proxy_url, path, token, version, query)
    union = get(world.urls["union"], path, token, version, query)
    assert_same(proxy, union, query, collection)
    if union.status_code != 200 or not next_href(union, collection):
        return
    got, want = walk(proxy, token, version, collection), walk(union, token, version, collection)
    if got == want:
        return
    exact = exact_walk(world, path, token, version, query, collection)
    assert want != exact, f"{query}: the walks differ, and the union's walk is not broken"
    assert got == exact, f"{query}: the proxy's walk is not exact"
