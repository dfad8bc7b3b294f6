#!/usr/bin/env python3
"""Macro benchmark of vbs-proxy against what a user would otherwise run (bench/run.sh).

Loopback only; every load run is bounded in time (BENCH_SECONDS, default 5 s). The load generator
(wrk) and the fake regions are pinned to core 0, every other server to core 1. Targets are
measured interleaved, ROUNDS rounds each (default 3), and medians reported. CPU per request comes
from the server process's /proc/PID/stat (utime + stime) before and after each run.
"""
import datetime
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The release code with line tables (Cargo.toml, [profile.profiling]).
RELEASE = ROOT / "target" / "profiling"
EXAMPLES = RELEASE / "examples"
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
LOAD_CORE, SERVER_CORE = "0", "1"
TICK = os.sysconf("SC_CLK_TCK")
TOKEN = "bench:p"
PROCS = []
DIRS = []  # removed at exit (nginx's cache lives in memory, on /dev/shm)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, core=SERVER_CORE, **kw):
    p = subprocess.Popen(["taskset", "-c", core, *map(str, cmd)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, **kw)
    PROCS.append(p)
    return p


def get(url, token=True):
    req = urllib.request.Request(url, headers={"X-Auth-Token": TOKEN} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def wait_up(url, token=False):
    for _ in range(200):
        try:
            get(url, token)
            return
        except urllib.error.HTTPError as e:
            if e.code < 500:  # the version document answers 300
                return
            time.sleep(0.05)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def ticks(pids):
    total = 0
    for pid in pids:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total


def peak_rss_mib(pids):
    kb = 0
    for pid in pids:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                kb += int(line.split()[1])
    return kb / 1024


def to_ms(value):
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# A caller of its own for every request ("bench<n>:p"): identical misses are not coalesced.
DISTINCT_CALLERS = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", nil, {["X-Auth-Token"] = "bench" .. n .. ":p"})
end
"""


def wrk(url, conns, script=None):
    extra = []
    if script:
        path = pathlib.Path(tempfile.mkdtemp()) / "wrk.lua"
        path.write_text(script)
        DIRS.append(path.parent)
        extra = ["-s", str(path)]
    out = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{SECONDS}s", "--latency",
                          "-H", f"X-Auth-Token: {TOKEN}", *extra, url], capture_output=True, text=True,
                         check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} errors\n{out}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "requests": requests,
            "p50": to_ms(latency["50"]), "p99": to_ms(latency["99"])}


def measure(url, pids, conns, script=None):
    before = ticks(pids)
    r = wrk(url, conns, script)
    r["cpu_us"] = (ticks(pids) - before) / TICK / r["requests"] * 1e6
    return r


def proxy_config(regions, ttl, port, cache="", server="", extra=""):
    if "public_url" not in server:
        server += f'public_url = "http://127.0.0.1:{port}"\n'
    text = f'[server]\nlisten = "127.0.0.1:{port}"\n{server}'
    text += f'[cache]\nttl = "{ttl}"\n{cache}[log]\nlevel = "warn"\n{extra}'
    for i, url in enumerate(regions):
        text += f'[[regions]]\nname = "r{i}"\nurl = "{url}"\n'
    path = pathlib.Path(tempfile.mkdtemp()) / "bench.toml"
    path.write_text(text)
    return path


def start_proxy(regions, ttl, cache="", binary=None, server="", extra=""):
    port = free_port()
    binary = binary or RELEASE / "vbs-proxy"
    p = start([binary, "serve", "--config", proxy_config(regions, ttl, port, cache, server, extra)])
    base = f"http://127.0.0.1:{port}"
    wait_up(base + "/healthz")
    return p, base


def start_region(seed):
    """A fake region (examples/bench_server.rs) on the load generator's core: on the proxy's,
    each request the proxy sends it would wake a process that preempts the proxy, and the
    switches would be counted in the proxy's CPU (perf put 14 % of a real miss over three
    regions in the proxy's writes to its regions, most of it there)."""
    port = free_port()
    p = start([EXAMPLES / "bench_server", "region", port, seed], core=LOAD_CORE)
    base = f"http://127.0.0.1:{port}"
    wait_up(base + "/")
    return p, base


def nginx(region):
    """nginx proxy_cache as an operator would tune it: one worker (pinned like the proxy),
    hits sent with sendfile from a cache directory on tmpfs, client connections kept alive for
    the whole run, keep-alive to the region, one fetch per key (proxy_cache_lock)."""
    shm = pathlib.Path("/dev/shm")
    work = pathlib.Path(tempfile.mkdtemp(prefix="vbs-bench-nginx-", dir=shm if shm.is_dir() else None))
    DIRS.append(work)
    work.chmod(0o755)  # nginx's workers run unprivileged
    port = free_port()
    (work / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  open_file_cache max=1000 inactive=60s;
  proxy_cache_path {work}/cache levels=1:2 keys_zone=pages:64m max_size=1g inactive=1h use_temp_path=off;
  upstream region {{ server {region.split('//')[1]}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://region;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache pages;
      proxy_cache_key $request_uri$http_x_auth_token;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
    }}
  }}
}}
""")
    p = start(["nginx", "-c", work / "nginx.conf", "-p", work])
    base = f"http://127.0.0.1:{port}"
    wait_up(base + "/", token=False)
    time.sleep(0.2)
    children = [int(x) for x in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()]
    # The worker serves; the cache loader exits on its own and the manager only sweeps.
    workers = [c for c in children if b"worker process" in pathlib.Path(f"/proc/{c}/cmdline").read_bytes()]
    return p, base, [p.pid, *workers]


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def rss_kib(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", pathlib.Path(f"/proc/{pid}/status").read_text()).group(1))


def large_keys(requests=12_000, key_bytes=12_000, max_mib=16):
    """RSS growth when clients make distinct large keys (12 KB filters of one-item listings):
    bounded by cache.max_bytes, since keys are weighed (bench/run.py keys)."""
    region, region_url = start_region(0)
    proxy, url = start_proxy([region_url], "1h", f'max_bytes = "{max_mib}MiB"\n')
    get(url + "/v3/p/backups/detail?limit=1")
    before = rss_kib(proxy.pid)
    for i in range(requests):
        get(url + f"/v3/p/backups/detail?limit=1&name={i:05d}{'x' * key_bytes}")
    grown = (rss_kib(proxy.pid) - before) / 1024
    print(f"- large keys: {requests:,} distinct {key_bytes:,}-byte keys with cache.max_bytes = {max_mib} MiB: "
          f"RSS grew {grown:.0f} MiB ({grown / max_mib:.2f}x max_bytes)")
    return grown / max_mib


def compare(proxies, page, conns, script=None):
    """Each of `proxies` ({name: (process, url)}) under the same load, interleaved, ROUNDS
    rounds: a table of medians."""
    results = {name: [] for name in proxies}
    for _ in range(ROUNDS):
        for name, (proxy, url) in proxies.items():
            results[name].append(measure(url + page, [proxy.pid], conns, script))
    print("| binary | req/s | p50 ms | p99 ms | server CPU µs/req |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {median(runs, 'rps'):,.0f} | {median(runs, 'p50'):.3f} | "
              f"{median(runs, 'p99'):.3f} | {median(runs, 'cpu_us'):.1f} |")


def misses(binaries):
    """`run.py miss [BINARY...]`: server CPU per 50-item miss over three regions, for this
    tree's binary or for each binary given (an A/B of the miss path), interleaved."""
    three = [start_region(seed) for seed in (1, 2, 3)]
    proxies = {str(b): start_proxy([u for _, u in three], "0s", binary=b) for b in binaries}
    compare(proxies, "/v3/p/backups/detail?limit=50", 4)


def contended_misses(binaries):
    """`run.py miss-contended [BINARY...]`: server CPU per 50-item miss over three regions, a
    caller of its own per request (nothing coalesced), 8 connections, for each binary given,
    interleaved: first uncontended, then with the regions' concurrency contended
    (`upstream.max_concurrency = 1`: most region calls wait their turn at the limiter and are
    handed their slot). The cost of fair sharing with and without contention."""
    three = [start_region(seed) for seed in (1, 2, 3)]
    urls = [u for _, u in three]
    contended = "[upstream]\nmax_concurrency = 1\nqueue_timeout = \"2s\"\n"
    for name, extra in (("uncontended", ""), ("max_concurrency = 1", contended)):
        print(f"{name}:")
        proxies = {str(b): start_proxy(urls, "0s", binary=b, extra=extra) for b in binaries}
        compare(proxies, "/v3/p/backups/detail?limit=50", 8, DISTINCT_CALLERS)


def misses_by_regions(binaries, counts=(1, 3, 10, 30)):
    """`run.py miss-regions [BINARY...]`: server CPU per 50-item miss over 1, 3, 10 and 30
    regions, each a bench_server answering from memory (a process of its own: its CPU is not
    the proxy's), 8 connections, ttl = 0. A real miss: every request a caller of its own, so
    every one is its own fetch. A coalesced miss: one caller, so concurrent identical requests
    share a fetch (what the README's table used to call a miss). Per region-row: the real
    miss's CPU over the rows the regions sent (50 each)."""
    print("| binary | regions | real miss µs/req | coalesced miss µs/req | real miss µs per region-row |")
    print("|---|---|---|---|---|")
    page = "/v3/p/backups/detail?limit=50"
    for n in counts:
        regions = [start_region(seed) for seed in range(1, n + 1)]
        urls = [u for _, u in regions]
        proxies = {str(b): start_proxy(urls, "0s", binary=b) for b in binaries}
        real = {name: [] for name in proxies}
        shared = {name: [] for name in proxies}
        for _ in range(ROUNDS):
            for name, (proxy, url) in proxies.items():
                real[name].append(measure(url + page, [proxy.pid], 8, DISTINCT_CALLERS))
                shared[name].append(measure(url + page, [proxy.pid], 8))
        for name in proxies:
            r, c = median(real[name], "cpu_us"), median(shared[name], "cpu_us")
            print(f"| {name} | {n} | {r:,.0f} | {c:,.0f} | {r / (50 * n):.2f} |")
        for p, _ in list(proxies.values()) + regions:
            p.terminate()
            p.wait()


def churn(binaries, seconds=int(os.environ.get("CHURN_SECONDS", "60")),
          max_bytes=int(os.environ.get("CHURN_MAX_MIB", "64"))):
    """`run.py churn [BINARY...]`: memory under a churn of distinct pages. Three regions, every
    request a caller of its own (a real miss, stored: the caches fill and evict), 8
    connections for CHURN_SECONDS (60) per binary, `cache.max_bytes` = CHURN_MAX_MIB (64) MiB.
    RSS when idle, then every 10 s, against the bound the issue sets: 1.25 x max_bytes + the
    idle RSS."""
    import threading
    three = [start_region(seed) for seed in (1, 2, 3)]
    urls = [u for _, u in three]
    page = "/v3/p/backups/detail?limit=50"
    print("| binary | idle MiB | RSS MiB every 10 s | requests | bound MiB |")
    print("|---|---|---|---|---|")
    global SECONDS
    for b in binaries:
        proxy, url = start_proxy(urls, "1h", cache=f'max_bytes = "{max_bytes}MiB"\n', binary=b)
        get(url + page)
        idle = rss_kib(proxy.pid) / 1024
        result = {}
        saved, SECONDS = SECONDS, seconds
        load = threading.Thread(target=lambda: result.update(wrk(url + page, 8, DISTINCT_CALLERS)))
        load.start()
        samples = []
        while load.is_alive():
            load.join(10)
            samples.append(rss_kib(proxy.pid) / 1024)
        SECONDS = saved
        bound = 1.25 * max_bytes + idle
        print(f"| {b} | {idle:.0f} | {', '.join(f'{m:.0f}' for m in samples)} | "
              f"{result.get('requests', 0):,} | {bound:.0f} |")
        proxy.terminate()
        proxy.wait()


def hits(binaries):
    """`run.py hit [BINARY...]`: server CPU per 50-item cache hit (one region, 64 connections),
    for this tree's binary or each binary given (an A/B of the hit path), interleaved."""
    region, region_url = start_region(0)
    page = "/v3/p/backups/detail?limit=50"
    proxies = {str(b): start_proxy([region_url], "1h", binary=b) for b in binaries}
    for _, url in proxies.values():
        get(url + page)
    compare(proxies, page, 64)


def sequential(url, requests):
    """Each (path, token) once over one keep-alive connection: client-side latencies in ms."""
    import http.client
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    took = []
    for path, token in requests:
        start = time.perf_counter()
        conn.request("GET", path, headers={"X-Auth-Token": token})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status}")
        took.append((time.perf_counter() - start) * 1000)
    conn.close()
    return took


def fleet(n=1500):
    """`run.py fleet`: the cost of a page by where it comes from, in fleet mode (a real
    redis-server): a local hit (L1), a hit in Redis (L2: another replica produced the page),
    and a miss over three regions; and a local hit without fleet mode, for comparison. Each of
    `n` 50-item pages of distinct callers once, in sequence over one connection: server CPU per request
    (from /proc) and the client's median and p99 latency."""
    redis_port = free_port()
    redis = subprocess.Popen(["taskset", "-c", LOAD_CORE, "redis-server", "--port", str(redis_port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    PROCS.append(redis)
    time.sleep(0.5)
    three = [start_region(seed) for seed in (1, 2, 3)]
    urls = [u for _, u in three]
    shared = f'key_secret = "bench-cache-key-secret"\n[fleet]\nredis_url = "redis://127.0.0.1:{redis_port}/0"\n'
    # The same public URL on both replicas, as behind one Service: the same keys.
    server = 'public_url = "http://vbs.bench"\ncursor_secret = "bench-cursor-secret-0123"\n'
    a, a_url = start_proxy(urls, "1h", shared, server=server)
    b, b_url = start_proxy(urls, "1h", shared, server=server)
    alone, alone_url = start_proxy(urls, "1h")
    # Distinct callers (tokens), so distinct keys for the same work per page.
    paths = [("/v3/p/backups/detail?limit=50", f"bench{i}:p") for i in range(n)]
    rows = []

    def row(name, url, pid, passes=1):
        before = ticks([pid])
        took = sorted(t for _ in range(passes) for t in sequential(url, paths))
        cpu = (ticks([pid]) - before) / TICK / len(took) * 1e6
        rows.append((name, cpu, took[len(took) // 2], took[int(len(took) * 0.99)]))

    # n pages fit in the response cache (3/8 of 256 MiB): the second visits are hits.
    row("miss (3 regions), fleet mode: lock, fetch, store in Redis", a_url, a.pid)
    row("L2 hit: another replica's page from Redis", b_url, b.pid)
    row("L1 hit, fleet mode", b_url, b.pid, passes=4)
    row("miss (3 regions), single process", alone_url, alone.pid)
    row("L1 hit, single process", alone_url, alone.pid, passes=4)
    print(f"{n} 50-item pages (distinct callers) each, in sequence over one connection (server CPU from /proc, "
          f"tick {1e6 / TICK:.0f} µs):")
    print("| page from | server CPU µs/req | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, cpu, p50, p99 in rows:
        print(f"| {name} | {cpu:.0f} | {p50:.3f} | {p99:.3f} |")


def main():
    subprocess.run(["cargo", "build", "--profile", "profiling", "--bin", "vbs-proxy", "--examples"], cwd=ROOT,
                   check=True)
    if sys.argv[1:] == ["keys"]:
        large_keys()
        return
    if sys.argv[1:] == ["fleet"]:
        fleet()
        return
    if sys.argv[1:2] == ["hit"]:
        hits(sys.argv[2:] or [RELEASE / "vbs-proxy"])
        return
    if sys.argv[1:2] == ["miss-contended"]:
        contended_misses(sys.argv[2:] or [RELEASE / "vbs-proxy"])
        return
    if sys.argv[1:2] == ["churn"]:
        churn(sys.argv[2:] or [RELEASE / "vbs-proxy"])
        return
    if sys.argv[1:2] == ["miss-regions"]:
        misses_by_regions(sys.argv[2:] or [RELEASE / "vbs-proxy"])
        return
    if sys.argv[1:2] == ["miss"]:
        misses(sys.argv[2:] or [RELEASE / "vbs-proxy"])
        return
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: bench/run.sh installs it")
    page = "/v3/p/backups/detail?limit={}"
    region, region_url = start_region(0)
    proxy, proxy_url = start_proxy([region_url], "1h")
    ng, ng_url, ng_pids = nginx(region_url)
    bodies = {n: get(proxy_url + page.format(n)) for n in (50, 1000)}
    ceilings = {}
    for n, body in bodies.items():
        f = pathlib.Path(tempfile.mkdtemp()) / f"page{n}.json"
        f.write_bytes(body)
        port = free_port()
        p = start([EXAMPLES / "bench_server", "ceiling", port, f])
        ceilings[n] = (p, f"http://127.0.0.1:{port}")
        wait_up(ceilings[n][1] + "/")
    for n in bodies:
        get(ng_url + page.format(n))  # warm nginx's cache

    targets = []
    for n in (50, 1000):
        targets += [(f"vbs-proxy hit, {n} items", proxy_url + page.format(n), [proxy.pid], 64),
                    (f"nginx proxy_cache hit, {n} items", ng_url + page.format(n), ng_pids, 64),
                    (f"ceiling (bytes from memory), {n} items", ceilings[n][1] + page.format(n), [ceilings[n][0].pid], 64)]
    results = {name: [] for name, *_ in targets}
    for _ in range(ROUNDS):
        for name, url, pids, conns in targets:
            results[name].append(measure(url, pids, conns))
    rss = {f"vbs-proxy hit, {n} items": peak_rss_mib([proxy.pid]) for n in (50, 1000)}
    rss.update({f"nginx proxy_cache hit, {n} items": peak_rss_mib(ng_pids) for n in (50, 1000)})
    rss.update({f"ceiling (bytes from memory), {n} items": peak_rss_mib([ceilings[n][0].pid]) for n in (50, 1000)})

    # The price of aggregation: misses over three regions against one region directly.
    three = [start_region(seed) for seed in (1, 2, 3)]
    miss_proxy, miss_url = start_proxy([u for _, u in three], "0s")
    miss_targets = [("vbs-proxy coalesced miss over 3 regions (one URL, 4 conns), 50 items", miss_url + page.format(50), [miss_proxy.pid], 4),
                    ("one region directly, 50 items", three[0][1] + page.format(50), [three[0][0].pid], 4)]
    for name, *_ in miss_targets:
        results[name] = []
    for _ in range(ROUNDS):
        for name, url, pids, conns in miss_targets:
            results[name].append(measure(url, pids, conns))
    rss[miss_targets[0][0]] = peak_rss_mib([miss_proxy.pid])
    rss[miss_targets[1][0]] = peak_rss_mib([three[0][0].pid])

    # Coalescing: 500 identical cold requests at once.
    burst_regions = [start_region(seed) for seed in (4, 5, 6)]
    burst_proxy, burst_url = start_proxy([u for _, u in burst_regions], "30s")
    before = [int(get(u + "/__calls", token=False)) for _, u in burst_regions]
    ok = subprocess.run(["taskset", "-c", LOAD_CORE, EXAMPLES / "bench_burst", burst_url + page.format(50), "500"],
                        capture_output=True, text=True, check=True).stdout.strip()
    calls = [int(get(u + "/__calls", token=False)) - b for (_, u), b in zip(burst_regions, before)]

    # Memory per cached 50-item page: RSS growth over 2,000 distinct cached pages.
    mem_regions = [start_region(7)]
    mem_proxy, mem_url = start_proxy([u for _, u in mem_regions], "1h")
    get(mem_url + page.format(50))
    rss_before = int(re.search(r"VmRSS:\s+(\d+)", pathlib.Path(f"/proc/{mem_proxy.pid}/status").read_text()).group(1))
    for i in range(2000):
        get(mem_url + page.format(50) + f"&status=s{i}")
    rss_after = int(re.search(r"VmRSS:\s+(\d+)", pathlib.Path(f"/proc/{mem_proxy.pid}/status").read_text()).group(1))
    per_page = (rss_after - rss_before) * 1024 / 2000

    print(f"\n## Macro benchmark, {datetime.date.today()}, {os.cpu_count()} cores; wrk -t1 pinned to core "
          f"{LOAD_CORE}, servers pinned to core {SERVER_CORE}; {SECONDS} s runs, {ROUNDS} rounds, medians\n")
    print("| target | conns | req/s | p50 ms | p99 ms | server CPU µs/req | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        conns = 4 if "miss" in name or "directly" in name else 64
        print(f"| {name} | {conns} | {median(runs, 'rps'):,.0f} | {median(runs, 'p50'):.3f} | {median(runs, 'p99'):.3f} | "
              f"{median(runs, 'cpu_us'):.1f} | {rss[name]:.0f} |")
    print()
    for n in (50, 1000):
        p, ng_, c = (median(results[f"{k}, {n} items"], "cpu_us") for k in
                     ("vbs-proxy hit", "nginx proxy_cache hit", "ceiling (bytes from memory)"))
        rp, rn = (median(results[f"{k}, {n} items"], "rps") for k in ("vbs-proxy hit", "nginx proxy_cache hit"))
        print(f"- {n} items: CPU/request vbs-proxy/nginx = {p / ng_:.2f}, vbs-proxy/ceiling = {p / c:.2f}; "
              f"throughput vbs-proxy/nginx = {rp / rn:.2f}; body {len(bodies[n]):,} bytes")
    added = median(results[miss_targets[0][0]], "p50") - median(results[miss_targets[1][0]], "p50")
    print(f"- aggregation over 3 regions adds {added:.3f} ms at p50 over one direct region call (4 connections)")
    print(f"- coalescing: 500 identical cold requests, {ok} answered 200; upstream calls per region: {calls}")
    print(f"- memory: RSS grew {per_page:,.0f} bytes per cached 50-item page (2,000 pages; "
          f"body {len(bodies[50]):,} bytes: {per_page / len(bodies[50]):.2f}x; the response held, its region pages dropped)")
    large_keys()


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in PROCS:
            p.terminate()
        for p in PROCS:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for d in DIRS:
            shutil.rmtree(d, ignore_errors=True)
