"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk embeds Helm v4's
Go SDK), every manifest validated against the Kubernetes schemas (kubernetes-validate), and the
rendered proxy configuration accepted by `vbs-proxy check-config`."""
import os
import pathlib
import subprocess
import tempfile

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


@pytest.mark.parametrize("values", [ONE, THREE], ids=["one-region", "three-regions-hpa-servicemonitor"])
def test_lint_is_clean(values):
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
