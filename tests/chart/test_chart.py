"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk embeds Helm v4's
Go SDK), every manifest validated against the Kubernetes schemas (kubernetes-validate), the
rendered proxy configuration accepted by `vbs-proxy check-config`, and the optional alert rules
and Grafana dashboard checked by promtool and against a real scrape."""
import json
import os
import pathlib
import re
import subprocess
import tempfile
import urllib.error
import urllib.request

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "helm" / "vbs-proxy"
K8S = "1.33.0"
THREE = yaml.safe_load((CHART / "ci-three-regions.yaml").read_text())
ONE = {"regions": [{"name": "region-a", "url": "https://volume.example.com"}]}


def render(values):
    chart = helm_python.Chart.load(str(CHART))
    out = chart.render(values, name="vbs", namespace="storage", is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith(".yaml"):
            docs += [(path, d) for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", ["ONE", "THREE", "MONITORING", "FLEET"])
def test_lint_is_clean(values):
    values = globals()[values]
    result = helm_python.lint(str(CHART), values, strict=True)
    assert result["errors"] == [], result
    assert all(m["severity"] < 2 for m in result["messages"]), result


@pytest.mark.parametrize("values", [{}, ONE, THREE], ids=["defaults", "one-region", "three-regions-hpa-servicemonitor"])
def test_every_manifest_is_valid_kubernetes(values):
    docs = render(values)
    kinds = sorted(d["kind"] for _, d in docs)
    for path, doc in docs:
        if doc["kind"] == "ServiceMonitor":  # a CRD: not in the core schemas
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert doc["spec"]["endpoints"][0]["path"] == "/metrics"
            continue
        kubernetes_validate.validate(doc, K8S, strict=True)
    assert {"ConfigMap", "Deployment", "Service", "Secret", "PodDisruptionBudget"} <= set(kinds)
    if values is THREE:
        assert "HorizontalPodAutoscaler" in kinds and "ServiceMonitor" in kinds
        assert "replicas" not in by_kind(docs, "Deployment")[0]["spec"], "the HPA owns replicas"


def test_deployment_is_locked_down_and_probed():
    deployment = by_kind(render(THREE), "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "checksum/config" in deployment["spec"]["template"]["metadata"]["annotations"]
    env = {e["name"]: e for e in container["env"]}
    assert env["VBS_PROXY__SERVER__CURSOR_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "cursor-secret"
    assert env["VBS_PROXY__ADMIN__TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "admin-token"


def test_config_changes_roll_the_pods():
    a = by_kind(render(ONE), "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    changed = dict(ONE, config={"cache": {"ttl": "5s"}})
    b = by_kind(render(changed), "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert a != b


@pytest.mark.parametrize("values", [ONE, THREE], ids=["one-region", "three-regions"])
def test_rendered_config_is_accepted_by_the_proxy(values):
    config = by_kind(render(values), "ConfigMap")[0]["data"]["vbs-proxy.toml"]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    try:
        done = subprocess.run([os.environ["VBS_PROXY_BIN"], "check-config", f.name], capture_output=True, text=True)
        assert done.returncode == 0, f"{done.stderr}\n{config}"
        assert f"({len(values['regions'])} regions)" in done.stdout
    finally:
        os.unlink(f.name)


def test_existing_secret_is_used_instead_of_creating_one():
    docs = render(dict(ONE, secrets={"existingSecret": "vbs-keys"}))
    assert not by_kind(docs, "Secret")
    env = {e["name"]: e for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VBS_PROXY__SERVER__CURSOR_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "vbs-keys"


@pytest.mark.parametrize("bad", [
    {"config": {"merge": {"collation": "klingon"}}},
    {"regions": [{"name": "a"}]},
    {"config": {"cache": {"ttl": "soon"}}},
    {"service": {"port": 70000}},
], ids=["collation", "region-without-url", "ttl", "port"])
def test_schema_rejects_bad_values(bad):
    with pytest.raises(helm_python.HelmError):
        render(bad)


MONITORING = dict(THREE, prometheusRule={"enabled": True, "labels": {"release": "kube-prometheus"}},
                  grafanaDashboard={"enabled": True})


def rendered_rules():
    rules = by_kind(render(MONITORING), "PrometheusRule")
    assert len(rules) == 1 and rules[0]["apiVersion"] == "monitoring.coreos.com/v1"
    assert rules[0]["metadata"]["labels"]["release"] == "kube-prometheus"
    return {"groups": rules[0]["spec"]["groups"]}


def rendered_dashboard():
    maps = [d for d in by_kind(render(MONITORING), "ConfigMap") if "vbs-proxy.json" in d.get("data", {})]
    assert len(maps) == 1
    assert maps[0]["metadata"]["labels"]["grafana_dashboard"] == "1", "Grafana's sidecar label"
    return json.loads(maps[0]["data"]["vbs-proxy.json"])


def test_monitoring_is_off_unless_asked():
    docs = render(THREE)
    assert not by_kind(docs, "PrometheusRule")
    assert not [d for d in by_kind(docs, "ConfigMap") if "vbs-proxy.json" in d.get("data", {})]


def test_alert_rules_pass_promtool_check_and_their_unit_tests(tmp_path):
    """`promtool check rules` on the rules as the PrometheusRule carries them (Helm must not
    have touched their {{ $labels }} templates), and `promtool test rules`: each alert fires on
    the series that should raise it, and none fires on a healthy proxy."""
    rules = rendered_rules()
    text = yaml.safe_dump(rules)
    assert "{{ $labels.region }}" in text, "Prometheus's templates reach the rule unrendered"
    (tmp_path / "rules.yaml").write_text(text)
    (tmp_path / "test.yaml").write_text((pathlib.Path(__file__).parent / "rules_test.yaml").read_text())
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "test.yaml"]):
        done = subprocess.run(["promtool", *args], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {"VbsProxyRegionDown", "VbsProxyRegionRefusing", "VbsProxyRegionMisconfigured",
                      "VbsProxyBreakerOpen", "VbsProxyShedding", "VbsProxyCacheHitRatioCollapse",
                      "VbsProxyFleetStoreDown"}
    tested = (pathlib.Path(__file__).parent / "rules_test.yaml").read_text()
    assert all(f'alertname="{a}"' in tested for a in alerts), "every alert has a firing case"


def exported_metric_names():
    """Sample names a real `vbs-proxy serve` can write, from its scrape's TYPE lines."""
    with tempfile.TemporaryDirectory() as d:
        config = pathlib.Path(d) / "proxy.toml"
        config.write_text('[server]\nlisten = "127.0.0.1:0"\n[[regions]]\nname = "a"\nurl = "http://127.0.0.1:9"\n')
        proc = subprocess.Popen([os.environ["VBS_PROXY_BIN"], "serve", "--config", str(config)],
                                env=dict(os.environ, VBS_PROXY__LOG__FORMAT="json"),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:
                event = json.loads(line)
                if event["fields"].get("message") == "serving":
                    listen = event["fields"]["listen"]
                    break
            else:
                raise AssertionError("the proxy exited before serving")
            # A listing first: labelled families are written once they have a series.
            listing = urllib.request.Request(f"http://{listen}/v3/p/backups/detail", headers={"X-Auth-Token": "t"})
            try:
                urllib.request.urlopen(listing, timeout=30)
            except urllib.error.HTTPError as e:
                assert e.code == 503, e  # the one region is not there
            with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as r:
                scrape = r.read().decode()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name[:-len("_total")] if name.endswith("_total") else name
            names |= {base + s for s in suffixes[kind]}
    assert "vbs_http_requests_total" in names, scrape
    return names


# Fleet mode (issue 14's Redis store) is not built yet: its alert waits for its metric.
NOT_YET_EXPORTED = {"vbs_fleet_up"}


def test_rules_and_dashboard_name_only_metrics_the_proxy_exports():
    exported = exported_metric_names()
    dashboard = rendered_dashboard()
    assert dashboard["uid"] == "vbs-proxy" and dashboard["panels"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in rendered_rules()["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\bvbs_[a-z_]+", e)}
    assert used - exported - NOT_YET_EXPORTED == set(), f"not exported: {used - exported}"
    # The dashboard covers what an operator looks at first.
    for metric in ["vbs_http_requests_total", "vbs_cache_hits_total", "vbs_upstream_calls_total",
                   "vbs_upstream_breaker_state", "vbs_http_shed_total"]:
        assert any(metric in e for e in exprs), metric


FLEET = dict(THREE, fleet={"redisUrl": "redis://:s3cret-pass@redis-master.storage:6379/0"})


def test_fleet_mode_passes_redis_url_and_a_shared_cache_key_from_secrets():
    docs = render(FLEET)
    env = {e["name"]: e for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    url_ref = env["VBS_PROXY__FLEET__REDIS_URL"]["valueFrom"]["secretKeyRef"]
    key_ref = env["VBS_PROXY__CACHE__KEY_SECRET"]["valueFrom"]["secretKeyRef"]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in by_kind(docs, "Secret")}
    assert secrets[url_ref["name"]][url_ref["key"]] == FLEET["fleet"]["redisUrl"]
    assert len(secrets[key_ref["name"]][key_ref["key"]]) >= 16
    config = by_kind(docs, "ConfigMap")[0]["data"]["vbs-proxy.toml"]
    assert "s3cret-pass" not in config, "the URL stays in a Secret"
    # The configuration the pod sees (the ConfigMap plus the Secrets' environment) is valid.
    cursor_ref = env["VBS_PROXY__SERVER__CURSOR_SECRET"]["valueFrom"]["secretKeyRef"]
    pod_env = dict(os.environ,
                   VBS_PROXY__FLEET__REDIS_URL=secrets[url_ref["name"]][url_ref["key"]],
                   VBS_PROXY__CACHE__KEY_SECRET=secrets[key_ref["name"]][key_ref["key"]],
                   VBS_PROXY__SERVER__CURSOR_SECRET=secrets[cursor_ref["name"]][cursor_ref["key"]])
    with tempfile.TemporaryDirectory() as d:
        path = pathlib.Path(d) / "vbs-proxy.toml"
        path.write_text(config)
        done = subprocess.run([os.environ["VBS_PROXY_BIN"], "check-config", str(path)],
                              capture_output=True, text=True, env=pod_env)
        assert done.returncode == 0, done.stderr
        # Without the cache key the replicas could not share: the proxy refuses to start.
        del pod_env["VBS_PROXY__CACHE__KEY_SECRET"]
        done = subprocess.run([os.environ["VBS_PROXY_BIN"], "check-config", str(path)],
                              capture_output=True, text=True, env=pod_env)
        assert done.returncode == 64 and "cache.key_secret" in done.stderr, done.stderr
    for doc in [d for _, d in docs if d["kind"] not in ("ServiceMonitor",)]:
        kubernetes_validate.validate(doc, K8S, strict=True)


def test_fleet_mode_with_an_existing_secret_creates_no_redis_secret():
    docs = render(dict(THREE, fleet={"existingSecret": "my-redis"}))
    names = [d["metadata"]["name"] for d in by_kind(docs, "Secret")]
    assert not [n for n in names if n.endswith("-redis")]
    env = {e["name"]: e for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VBS_PROXY__FLEET__REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "redis-url"}


def test_no_fleet_settings_without_fleet_mode():
    env = {e["name"] for e in by_kind(render(THREE), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "VBS_PROXY__FLEET__REDIS_URL" not in env and "VBS_PROXY__CACHE__KEY_SECRET" not in env


def default_toml_keys():
    """section -> keys of config/default.toml, the commented-out ones too (`# key = ...`),
    `regions` for the `[[regions]]` example."""
    out, section = {}, None
    text = (CHART.parents[1] / "config" / "default.toml").read_text()
    for line in text.splitlines():
        m = re.match(r"^(?:# ?)?\[\[?([a-z_]+)\]\]?\s*$", line)
        if m:
            section = m.group(1)
            out.setdefault(section, set())
            continue
        m = re.match(r"^#? ?([a-z_0-9]+) = ", line)
        if m and section:
            out[section].add(m.group(1))
    return out


# Set by the chart itself, or given only through Secrets (never in the ConfigMap).
CHART_SET = {"server.listen"}
FROM_SECRETS = {"admin.token", "fleet.redis_url", "keystone_authtoken.password",
                "keystone_authtoken.application_credential_secret"}


def test_the_schema_admits_every_key_of_default_toml():
    """The schema cannot drift from the configuration again: every section and key of
    config/default.toml is admitted under `config` (or `regions`), but those the chart sets
    or takes from Secrets, which the schema refuses."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]["properties"]
    regions = schema["properties"]["regions"]["items"]["properties"]
    missing, leaked = [], []
    for section, keys in default_toml_keys().items():
        for key in keys:
            name = f"{section}.{key}"
            admitted = key in (regions if section == "regions" else config.get(section, {}).get("properties", {}))
            if name in CHART_SET | FROM_SECRETS:
                if admitted:
                    leaked.append(name)
            elif not admitted:
                missing.append(name)
    assert missing == [], f"config/default.toml keys the chart refuses: {missing}"
    assert leaked == [], f"secrets the chart would put in its ConfigMap: {leaked}"
    with pytest.raises(helm_python.HelmError):
        render(dict(ONE, config={"keystone_authtoken": {"password": "in-values"}}))


EVERYTHING = {
    "regions": [],
    "config": {
        "keystone_authtoken": {
            "auth_url": "https://keystone.example:5000/v3", "username": "vbs-proxy",
            "project_name": "service", "user_domain_name": "Default",
            "project_domain_name": "Default", "token_cache_time": "300s",
            "cafile": "/etc/vbs-proxy/ca/ca.pem",
        },
        "regions_from_catalog": {"service_type": "volumev3", "interface": "internal"},
        "upstream": {"ca_file": "/etc/vbs-proxy/ca/ca.pem"},
        "cache": {"scope": "project"},
        "admin": {"listen": "0.0.0.0:9091", "throttled_names": "named"},
        "tenants": {"rate": 2.5, "burst": 10, "max_concurrency": 8},
    },
    "fleet": {"existingSecret": "redis-url"},
    "tls": {"existingSecret": "vbs-proxy-tls"},
    "keystone": {"existingSecret": "keystone-service-user"},
    "secrets": {"existingSecret": "vbs-keys"},
    "extraVolumes": [{"name": "ca", "configMap": {"name": "internal-ca"}}],
    "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/vbs-proxy/ca", "readOnly": True}],
    "extraEnv": [{"name": "VBS_PROXY__UPSTREAM__RATE_LIMIT", "value": "50"}],
}


def test_a_keystone_catalog_fleet_and_tls_install_renders_and_its_config_is_valid(tmp_path):
    """Every feature at once, as an operator would deploy it: Keystone at the edge with the
    regions from its catalog, fleet mode, the proxy's own TLS, a private CA mounted from a
    ConfigMap, and the secrets from existing Secrets. The manifests are valid Kubernetes and
    the configuration the pod sees (the ConfigMap, the mounted files, the Secrets'
    environment) passes `check-config`."""
    assert helm_python.lint(str(CHART), EVERYTHING, strict=True)["errors"] == []
    docs = render(EVERYTHING)
    for doc in [d for _, d in docs if d["kind"] != "ServiceMonitor"]:
        kubernetes_validate.validate(doc, K8S, strict=True)
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["VBS_PROXY__KEYSTONE_AUTHTOKEN__PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "keystone-service-user", "key": "password"}
    assert env["VBS_PROXY__FLEET__REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "redis-url"
    assert env["VBS_PROXY__UPSTREAM__RATE_LIMIT"]["value"] == "50"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"config": "/etc/vbs-proxy", "tls": "/etc/vbs-proxy/tls", "ca": "/etc/vbs-proxy/ca"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "vbs-proxy-tls"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert not by_kind(docs, "Secret"), "every secret comes from an existing Secret"
    config = by_kind(docs, "ConfigMap")[0]["data"]["vbs-proxy.toml"]
    # The pod's files: the ConfigMap's TOML, the TLS Secret's pair and the CA bundle.
    root = tmp_path / "etc-vbs-proxy"
    (root / "tls").mkdir(parents=True)
    (root / "ca").mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=vbs-proxy.storage", "-keyout", str(root / "tls" / "tls.key"),
                    "-out", str(root / "tls" / "tls.crt")], check=True, capture_output=True)
    (root / "ca" / "ca.pem").write_text((root / "tls" / "tls.crt").read_text())
    path = root / "vbs-proxy.toml"
    path.write_text(config.replace("/etc/vbs-proxy/", f"{root}/"))
    pod_env = dict(os.environ, VBS_PROXY__KEYSTONE_AUTHTOKEN__PASSWORD="from-the-secret",
                   VBS_PROXY__FLEET__REDIS_URL="redis://redis-master.storage:6379/0",
                   VBS_PROXY__CACHE__KEY_SECRET="k" * 32, VBS_PROXY__SERVER__CURSOR_SECRET="c" * 32,
                   VBS_PROXY__UPSTREAM__RATE_LIMIT="50")
    done = subprocess.run([os.environ["VBS_PROXY_BIN"], "check-config", str(path)],
                          capture_output=True, text=True, env=pod_env)
    assert done.returncode == 0, f"{done.stderr}\n{config}"
    # Without the password Keystone could not be asked: refused, naming it.
    del pod_env["VBS_PROXY__KEYSTONE_AUTHTOKEN__PASSWORD"]
    done = subprocess.run([os.environ["VBS_PROXY_BIN"], "check-config", str(path)],
                          capture_output=True, text=True, env=pod_env)
    assert done.returncode == 64 and "password" in done.stderr, done.stderr
