"""The monitoring mixin (dashboards/): generated files up to date and
formatted, rule files valid for promtool, every alert unit-tested, alert and
dashboard conventions, LogQL that only names what the exporter writes.

The queries themselves run against a real Prometheus in
tests/integration/test_mixin_live.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import _jsonnet
import pytest
import yaml

from exporter.loki.entry import METADATA_FIELDS
from tests.conftest import ROOT

MIXIN = ROOT / "dashboards"
OUT = MIXIN / "out"
HELM_FILES = ROOT / "helm" / "kube-audit-exporter" / "files"
PROMTOOL_TESTS = MIXIN / "tests" / "alerts_test.yaml"
# Tests of the alerts that are off by default, run against a rendering with
# every alert on.
OPTIONAL_PROMTOOL_TESTS = MIXIN / "tests" / "optional_alerts_test.yaml"
# Every alert on: the override the optional tests and the runbook check use.
ALL_ALERTS_ON = (
    "{ _config+:: { alerts: std.mapWithKey(function(k, v) v { enabled: true }, super.alerts),"
    " lokiAlerts: std.mapWithKey(function(k, v) v { enabled: true }, super.lokiAlerts) } }"
)
SEVERITIES = {"critical", "warning", "info"}

# The exporter's Loki entries (DESIGN.md "Loki entries"): bounded stream
# labels, and the structured metadata of every entry.
STREAM_LABELS = {"service_name", "cluster", "verb"}
# Issue 19.5 renames the structured metadata field `severity` to
# `rule_severity` (Loki's level detection reads `severity`); the mixin uses
# the new name, and once the rename is in METADATA_FIELDS this maps nothing.
RENAMED_METADATA = {"severity": "rule_severity"}
STRUCTURED_METADATA = {RENAMED_METADATA.get(f, f) for f in METADATA_FIELDS}
# Grafana's own variables and the forms a dashboard may use.
GRAFANA_BUILTINS = {
    "__interval",
    "__rate_interval",
    "__range",
    "__auto",
    "__url_time_range",
    "__field",
    "__data",
    "__value",
}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mixin_generate", MIXIN / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def generated() -> dict[str, str]:
    files: dict[str, str] = load_generator().outputs()
    return files


@cache
def rendered() -> dict[str, Any]:
    mixin: dict[str, Any] = load_generator().render()
    return mixin


def alert_rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def prometheus_alerts() -> list[dict[str, Any]]:
    return alert_rules(yaml.safe_load((OUT / "prometheus" / "alerts.yaml").read_text()))


def loki_alerts() -> list[dict[str, Any]]:
    return alert_rules(yaml.safe_load((OUT / "loki" / "rules.yaml").read_text()))


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((OUT / "dashboards").glob("*.json"))}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed; `make test` installs it (Debian prometheus)")
    return path


# --- generation -------------------------------------------------------------------------


def test_regenerating_or_reformatting_changes_no_committed_file() -> None:
    if shutil.which("jsonnetfmt") is None:
        pytest.fail("jsonnetfmt is not installed; `make test` installs it (Debian jsonnet)")
    r = subprocess.run(
        [sys.executable, str(MIXIN / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr


def test_the_chart_carries_the_same_bytes_as_out() -> None:
    for rel in generated():
        assert (HELM_FILES / rel).read_bytes() == (OUT / rel).read_bytes(), rel


def test_every_generated_file_says_it_is_generated() -> None:
    files = generated()
    assert set(files) == {
        "prometheus/alerts.yaml",
        "prometheus/rules.yaml",
        "loki/rules.yaml",
        "alertmanager/inhibit-rules.yaml",
        "dashboards/kube-audit-overview.json",
        "dashboards/kube-audit-security.json",
        "dashboards/kube-audit-explorer.json",
        "dashboards/kube-audit-exporter-health.json",
    }
    for rel, text in files.items():
        if rel.endswith(".json"):
            assert "do not edit" in json.loads(text)["__comment"]
        else:
            assert text.startswith("# Generated") and "do not edit" in text.splitlines()[0]


def test_mixin_imports_only_config_alerts_and_dashboards() -> None:
    imports = re.findall(r"import\s+'([^']+)'", (MIXIN / "mixin.libsonnet").read_text())
    assert "config.libsonnet" in imports
    for path in imports:
        assert path == "config.libsonnet" or path.startswith(("alerts/", "dashboards/")), path


def test_every_tunable_in_config_is_commented() -> None:
    """Every _config field, and every alert's entry, follows a comment that
    says why (a run of fields may share one comment)."""
    lines = (MIXIN / "config.libsonnet").read_text().splitlines()
    top = re.compile(r"^ {4}('?[A-Za-z]\w*'?)\s*[:+]")
    alert = re.compile(r"^ {6}(KubeAudit\w+)\s*:")
    uncommented = []
    for i, line in enumerate(lines):
        kind = top if top.match(line) else alert if alert.match(line) else None
        if kind is None:
            continue
        j = i - 1
        while j >= 0 and kind.match(lines[j]):
            j -= 1
        if not lines[j].strip().startswith("//"):
            uncommented.append(line.strip())
    assert len([ln for ln in lines if top.match(ln)]) >= 15
    assert not uncommented, f"fields without a comment: {uncommented}"


# --- rule files -------------------------------------------------------------------------


def test_promtool_accepts_every_prometheus_rule_file() -> None:
    for rel in ("prometheus/alerts.yaml", "prometheus/rules.yaml"):
        r = subprocess.run(
            [promtool(), "check", "rules", str(OUT / rel)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stdout + r.stderr


def test_loki_rule_file_has_prometheus_rule_file_structure(tmp_path: Path) -> None:
    """Loki's ruler reads Prometheus-format rule files: promtool checks the
    structure (names, durations, labels, annotation templates) with every
    LogQL expression swapped for a PromQL one; LogQL is checked below."""
    doc = yaml.safe_load((OUT / "loki" / "rules.yaml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = "vector(1)"
    path = tmp_path / "loki-structure.yaml"
    path.write_text(yaml.safe_dump(doc))
    r = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_pass() -> None:
    r = subprocess.run(
        [promtool(), "test", "rules", str(PROMTOOL_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_of_the_alerts_off_by_default_pass(tmp_path: Path) -> None:
    files = load_generator().outputs(ALL_ALERTS_ON)
    (tmp_path / "rules.yaml").write_text(files["prometheus/rules.yaml"])
    (tmp_path / "alerts.yaml").write_text(files["prometheus/alerts.yaml"])
    shutil.copy(OPTIONAL_PROMTOOL_TESTS, tmp_path / OPTIONAL_PROMTOOL_TESTS.name)
    r = subprocess.run(
        [promtool(), "test", "rules", OPTIONAL_PROMTOOL_TESTS.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def all_prometheus_alert_names() -> set[str]:
    """Every Prometheus alert of the mixin, those off by default included."""
    doc = load_generator().render(ALL_ALERTS_ON)["prometheusAlerts"]
    return {r["alert"] for r in alert_rules(doc)}


def test_every_alert_has_a_firing_and_a_quiet_case_asserting_everything() -> None:
    tests = [
        t
        for path in (PROMTOOL_TESTS, OPTIONAL_PROMTOOL_TESTS)
        for t in yaml.safe_load(path.read_text())["tests"]
    ]
    firing: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for t in tests:
        for case in t.get("alert_rule_test", []):
            name = case["alertname"]
            if case.get("exp_alerts"):
                firing[name] = firing.get(name, 0) + 1
                for exp in case["exp_alerts"]:
                    assert "severity" in exp["exp_labels"], name
                    assert set(exp["exp_annotations"]) == {
                        "summary",
                        "description",
                        "runbook_url",
                    }, name
            else:
                quiet[name] = quiet.get(name, 0) + 1
    names = all_prometheus_alert_names()
    assert names > {r["alert"] for r in prometheus_alerts()}
    assert set(firing) == names, f"without a firing case: {names - set(firing)}"
    assert set(quiet) == names, f"without a quiet case: {names - set(quiet)}"


# --- alert conventions ------------------------------------------------------------------


def test_alert_conventions() -> None:
    cfg = rendered_config()
    pattern = cfg["runbookURLPattern"]
    alerts = prometheus_alerts() + loki_alerts()
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names))
    for a in alerts:
        name = a["alert"]
        assert re.fullmatch(r"KubeAudit[A-Z][A-Za-z0-9]+", name), name
        assert a["labels"]["severity"] in SEVERITIES, name
        assert re.fullmatch(r"\d+[smh]", a["for"]), name
        ann = a["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in ann["summary"] and ann["summary"].endswith("."), name
        assert "{{" in ann["description"], f"{name}: the description is not templated"
        assert ann["runbook_url"] == pattern % name.lower(), name


def test_severities_are_used_sparingly() -> None:
    by_severity: dict[str, list[str]] = {}
    for a in prometheus_alerts() + loki_alerts():
        by_severity.setdefault(a["labels"]["severity"], []).append(a["alert"])
    assert sorted(by_severity["critical"]) == [
        "KubeAuditCriticalDetectionUndelivered",
        "KubeAuditExporterAbsent",
        "KubeAuditOTLPSpoolFull",
        "KubeAuditSpoolFull",
        "KubeAuditTLSCertificateExpiryCritical",
    ]


def test_every_alert_has_a_runbook_section() -> None:
    headings = set(re.findall(r"^### (\w+)$", (MIXIN / "runbook.md").read_text(), re.M))
    names = all_prometheus_alert_names() | {a["alert"] for a in loki_alerts()}
    assert headings == names


def test_the_readme_lists_every_alert_with_its_meaning_and_what_to_do() -> None:
    """The metrics reference's alert table (name, severity, when it fires)
    and the troubleshooting table (what to do) name every alert, the ones
    off by default included."""
    readme = (ROOT / "README.md").read_text()
    metrics = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    trouble = readme.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    cfg = rendered_config()
    names = set(cfg["alerts"]) | set(cfg["lokiAlerts"])
    table = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(KubeAudit\w+)` \| ([a-z]+)[^|]* \| .+ \|$", metrics, re.M)
    }
    assert set(table) == names
    for name, severity in table.items():
        c = cfg["alerts"].get(name) or cfg["lokiAlerts"][name]
        assert severity == c["severity"], name
    todo = set()
    for line in trouble.splitlines():
        if line.startswith("| `KubeAudit"):
            todo.update(re.findall(r"`(KubeAudit\w+)`", line.split(" | ")[0]))
    assert todo == names


def rendered_config() -> dict[str, Any]:
    gen = load_generator()
    snippet = "(import 'mixin.libsonnet')._config"
    cfg: dict[str, Any] = json.loads(
        _jsonnet.evaluate_snippet(str(gen.HERE / "config.jsonnet"), snippet)
    )
    return cfg


def test_config_lists_exactly_the_alerts_emitted() -> None:
    cfg = rendered_config()
    assert {k for k, v in cfg["alerts"].items() if v["enabled"]} == {
        a["alert"] for a in prometheus_alerts()
    }
    assert set(cfg["alerts"]) == all_prometheus_alert_names()
    assert set(cfg["lokiAlerts"]) == {a["alert"] for a in loki_alerts()}
    # kubernetes-mixin pages on API latency and errors already
    assert not cfg["alerts"]["KubeAuditAPILatencyHigh"]["enabled"]
    assert not cfg["alerts"]["KubeAuditAPIServerErrorsHigh"]["enabled"]


# --- one naming scheme, one page per event ------------------------------------------------


def test_detection_notifications_and_mixin_alerts_never_share_a_name() -> None:
    from exporter.detect import load_rules
    from exporter.detect.alerts import ALERTNAME_PREFIX, alertname

    cfg = rendered_config()
    assert cfg["detectionAlertPrefix"] == ALERTNAME_PREFIX == "KubeAuditDetection"
    mixin = all_prometheus_alert_names() | {a["alert"] for a in loki_alerts()}
    assert not [n for n in mixin if n.startswith(ALERTNAME_PREFIX)]
    notifications = {alertname(r.id) for r in load_rules().rules}
    assert len(notifications) == len(load_rules().rules)
    assert notifications.isdisjoint(mixin)
    assert alertname("auth-failure-burst") == "KubeAuditDetectionAuthFailureBurst"
    assert "KubeAuditAuthFailureBurst" in mixin


def test_a_mixin_alert_named_like_a_notification_does_not_render() -> None:
    override = (
        "{ _config+:: { alerts+: { KubeAuditDetectionX: { enabled: true, severity: 'info',"
        " 'for': '0m' } } } }"
    )
    with pytest.raises(RuntimeError, match="detectionAlertPrefix"):
        load_generator().render(override)


def inhibit_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((OUT / "alertmanager" / "inhibit-rules.yaml").read_text())
    rules: list[dict[str, Any]] = doc["inhibit_rules"]
    return rules


def test_inhibit_rules_name_real_rules_and_alerts_that_share_the_equal_labels() -> None:
    from exporter.detect import load_rules

    rule_ids = {r.id for r in load_rules().rules}
    mixin = {a["alert"]: a for a in prometheus_alerts() + loki_alerts()}
    rules = inhibit_rules()
    assert len(rules) >= 4
    targets = set()
    for inhibit in rules:
        [prefix, rule] = inhibit["source_matchers"]
        assert prefix == 'alertname=~"KubeAuditDetection.+"'
        m = re.fullmatch(r'rule="([a-z0-9-]+)"', rule)
        assert m is not None and m.group(1) in rule_ids, rule
        [target] = inhibit["target_matchers"]
        m = re.fullmatch(r'alertname="(\w+)"', target)
        assert m is not None and m.group(1) in mixin, target
        targets.add(m.group(1))
        assert "cluster" in inhibit["equal"]
        # every other `equal` label is one the target alert keeps in its by()
        for label in set(inhibit["equal"]) - {"cluster"}:
            assert re.search(rf"by \([^)]*\b{label}\b", mixin[m.group(1)]["expr"]), (
                target,
                label,
            )
    assert {"KubeAuditAuthFailureBurst", "KubeAuditAnonymousAccessAllowed"} <= targets


def test_each_alert_can_be_disabled_and_its_for_changed() -> None:
    gen = load_generator()
    cfg = rendered_config()
    name = "KubeAuditWebhookFailedOpen"
    override = (
        "{ _config+:: { alerts+: { "
        + name
        + "+: { enabled: false }, KubeAuditExporterDown+: { 'for': '1s' } }, "
        + "lokiAlerts+: { KubeAuditLokiNoEvents+: { enabled: false } } } }"
    )
    mixin = gen.render(override)
    alerts = {a["alert"]: a for a in alert_rules(mixin["prometheusAlerts"])}
    enabled = {k for k, v in cfg["alerts"].items() if v["enabled"]}
    assert set(alerts) == enabled - {name}
    assert alerts["KubeAuditExporterDown"]["for"] == "1s"
    assert {a["alert"] for a in alert_rules(mixin["lokiRules"])} == set(cfg["lokiAlerts"]) - {
        "KubeAuditLokiNoEvents"
    }
    everything_off = (
        "{ _config+:: { alerts: { [k]: { enabled: false } for k in "
        + json.dumps(sorted(cfg["alerts"]))
        + " } } }"
    )
    assert alert_rules(gen.render(everything_off)["prometheusAlerts"]) == []


def test_thresholds_come_from_config() -> None:
    gen = load_generator()
    override = (
        "{ _config+:: { exporterSelector: 'job=\"audit\"', alerts+: { "
        "KubeAuditAuthFailureBurst+: { threshold: 99, window: '7m' }, "
        "KubeAuditTLSCertificateExpiring+: { thresholdDays: 30 }, "
        "KubeAuditTLSCertificateExpiryCritical+: { thresholdDays: 3 } } } }"
    )
    alerts = {a["alert"]: a for a in alert_rules(gen.render(override)["prometheusAlerts"])}
    expr = alerts["KubeAuditAuthFailureBurst"]["expr"]
    assert '{job="audit", reason="unauthenticated"}[7m])) > 99' in expr
    assert alerts["KubeAuditExporterDown"]["expr"] == 'up{job="audit"} == 0'
    expiring = alerts["KubeAuditTLSCertificateExpiring"]["expr"]
    assert 'expiry_timestamp_seconds{job="audit"}' in expiring
    assert expiring.endswith(f"< {30 * 86400}")
    assert alerts["KubeAuditTLSCertificateExpiryCritical"]["expr"].endswith(f"< {3 * 86400}")


# --- dashboards -------------------------------------------------------------------------


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def variables_of(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_four_dashboards_with_stable_uids_from_their_file_names() -> None:
    boards = dashboards()
    assert set(boards) == {
        "kube-audit-overview.json",
        "kube-audit-security.json",
        "kube-audit-explorer.json",
        "kube-audit-exporter-health.json",
    }
    for name, d in boards.items():
        assert d["uid"] == hashlib.md5(name.encode()).hexdigest(), name
        assert len(d["uid"]) <= 40
        assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
        assert d["title"] and d["tags"] == ["kube-audit"]
        assert "__inputs" not in d and "${DS_" not in json.dumps(d), name


def test_dashboard_hygiene() -> None:
    """Issue 18.11: every panel says what it shows; stat panels ask for one
    value (instant), not a range; counts show whole numbers; quantile
    legends read p99, not p0.99; a dashboard with Loki tables over the whole
    range is refreshed on demand, not every minute; detections are
    annotations on the Security dashboard's timelines."""
    boards = dashboards()
    for name, d in boards.items():
        for p in panels_of(d):
            if p["type"] == "row":
                continue
            where = f"{name}: {p['title']}"
            assert len(p.get("description", "")) > 20, where
            exprs = " ".join(t["expr"] for t in p["targets"])
            if p["type"] == "stat":
                for t in p["targets"]:
                    if t["datasource"]["type"] == "loki":
                        assert t["queryType"] == "instant", where
                    else:
                        assert t["instant"] is True and t["range"] is False, where
            counts = "clamp_min(" in exprs or "count_over_time(" in exprs
            if counts and p["type"] in ("timeseries", "table", "stat"):
                assert p["fieldConfig"]["defaults"].get("decimals") == 0, where
            for t in p["targets"]:
                assert not re.search(r"\bp0\.", t.get("legendFormat", "")), where
        loki_range = [
            t["expr"]
            for p in panels_of(d)
            for t in p.get("targets", [])
            if t["datasource"]["type"] == "loki" and "[$__range]" in t["expr"]
        ]
        if loki_range:
            assert d["refresh"] == "", name
    annotations = boards["kube-audit-security.json"]["annotations"]["list"]
    severities = {re.search(r'rule_severity="(\w+)"', a["expr"]).group(1) for a in annotations}  # type: ignore[union-attr]
    assert {"critical", "warning"} <= severities


def test_every_number_about_audit_events_links_to_the_events() -> None:
    """Issue 18: every number on the Overview and Security dashboards links
    to the events behind it in the Explorer (the Exporter health dashboard
    is about the exporter itself; the logs panels are the events)."""
    explorer_uid = dashboards()["kube-audit-explorer.json"]["uid"]
    for name in ("kube-audit-overview.json", "kube-audit-security.json"):
        for p in panels_of(dashboards()[name]):
            if p["type"] in ("row", "logs"):
                continue
            links = p["fieldConfig"]["defaults"].get("links", [])
            assert links, f"{name}: {p['title']} links to no events"
            for link in links:
                assert link["url"].startswith(f"/d/{explorer_uid}/"), (name, p["title"])


def test_panel_ids_are_unique_and_the_grid_has_no_overlap() -> None:
    for name, d in dashboards().items():
        panels = panels_of(d)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), name
        titles = [p["title"] for p in panels if p["type"] != "row"]
        assert len(titles) == len(set(titles)), name
        boxes = []
        for p in panels:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0, p["title"]
            assert g["x"] + g["w"] <= 24, p["title"]
            boxes.append((p["title"], g))
        for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{name}: {ta!r} overlaps {tb!r}"


def test_every_panel_datasource_is_a_template_variable() -> None:
    for name, d in dashboards().items():
        variables = variables_of(d)
        for vname, kind in (("datasource", "prometheus"), ("loki_datasource", "loki")):
            assert variables[vname]["type"] == "datasource"
            assert variables[vname]["query"] == kind
        assert "cluster" in variables, name
        # Loki has no job label: the Explorer has no job variable to ignore
        assert ("job" in variables) == (name != "kube-audit-explorer.json"), name
        for p in panels_of(d):
            if p["type"] == "row":
                continue
            sources = [p["datasource"], *(t["datasource"] for t in p["targets"])]
            for ds in sources:
                var = ds["uid"].strip("${}")
                assert var in variables, f"{name}: {p['title']}: {ds}"
                assert variables[var]["type"] == "datasource"
                assert variables[var]["query"] == ds["type"], f"{name}: {p['title']}"
        for v in variables.values():
            if v["type"] == "query":
                assert v["datasource"]["uid"].strip("${}") in variables, v["name"]


def test_every_variable_a_query_uses_is_defined() -> None:
    # ($1, $2: label_replace's capture groups, which Grafana leaves alone)
    ref = re.compile(r"\$\{?([A-Za-z_]\w*)")
    for name, d in dashboards().items():
        defined = set(variables_of(d)) | GRAFANA_BUILTINS
        texts = [t["expr"] for p in panels_of(d) for t in p.get("targets", [])]
        texts += [v.get("query", "") for v in variables_of(d).values() if v["type"] == "query"]
        texts += [
            link["url"]
            for p in panels_of(d)
            for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])
        ]
        for text in texts:
            for var in ref.findall(text):
                assert var in defined, f"{name}: ${var} in {text}"


def test_data_links_lead_to_the_explorer() -> None:
    boards = dashboards()
    explorer = boards["kube-audit-explorer.json"]
    explorer_vars = set(variables_of(explorer))
    links = 0
    for d in boards.values():
        for p in panels_of(d):
            for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", []):
                links += 1
                assert link["url"].startswith(f"/d/{explorer['uid']}/"), link
                for param in re.findall(r"var-(\w+)=", link["url"]):
                    assert param in explorer_vars, link
    assert links >= 10


# --- LogQL --------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_PARSER_PARAMS = re.compile(r"\|\s*(?:json|logfmt)\b([^|]*)")


def logql_problems(
    expr: str,
    service_name: str,
    stream_labels: set[str] = STREAM_LABELS,
    metadata: set[str] = STRUCTURED_METADATA,
) -> list[str]:
    """Syntax balance and label names of a LogQL expression: stream matchers
    may only use the exporter's stream labels; label filters, grouping and
    line_format templates only stream labels, structured metadata, or labels
    the expression itself extracts (``| json name="path"``)."""
    problems = []
    templates = re.findall(r"`([^`]*)`", expr)
    masked = _STRING.sub('""', expr)
    if '"' in masked.replace('""', "") or "`" in masked:
        problems.append("unbalanced quotes")
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in masked:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            problems.append(f"unbalanced {ch}")
            break
    if stack:
        problems.append(f"unclosed {stack}")
    extracted = set()
    for params in _PARSER_PARAMS.findall(masked):
        extracted.update(re.findall(r"(\w+)\s*=", params))
    allowed = stream_labels | metadata | extracted
    selectors = re.findall(r"\{([^{}]*)\}", masked)
    if not selectors:
        problems.append("no stream selector")
    for sel in selectors:
        names = re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", sel)
        for n in names:
            if n not in stream_labels:
                problems.append(f"stream selector on {n!r}, not a stream label")
        if "service_name" not in names:
            problems.append("stream selector without service_name")
    for m in re.finditer(r'service_name\s*=\s*"([^"]*)"', expr):
        if m.group(1) != service_name:
            problems.append(f"service_name={m.group(1)!r}")
    # label filters: `| name op value` (not line filters `|=`, `|~`)
    for name in re.findall(r"\|\s*(\w+)\s*(?:=~|!~|!=|==|=|>=|<=|>|<)", masked):
        if name not in allowed:
            problems.append(f"label filter on {name!r}")
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", masked):
        for name in re.findall(r"\w+", group):
            if name not in allowed:
                problems.append(f"grouping by {name!r}")
    for template in templates:
        for name in re.findall(r"\{\{-?\s*(?:with\s+|if\s+)?\.(\w+)", template):
            if name not in allowed:
                problems.append(f"line_format uses {name!r}")
    return problems


def loki_queries(root: Path, label: str) -> list[tuple[str, str]]:
    """(where, LogQL) of every Loki query under ``root`` (dashboards/out or
    the chart's files/): Loki rules, dashboards' Loki panel queries, and the
    stream selector of their Loki query variables."""
    out: list[tuple[str, str]] = []
    for path in sorted((root / "loki").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                out.append((f"{label}/loki/{path.name}: {name}", rule["expr"]))
    for path in sorted((root / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        where = f"{label}/dashboards/{path.name}"
        for p in panels_of(board):
            for t in p.get("targets", []):
                if t["datasource"]["type"] == "loki":
                    out.append((f"{where}: {p['title']} ({t.get('refId', '')})", t["expr"]))
        for a in board["annotations"]["list"]:
            if a["datasource"]["type"] == "loki":
                out.append((f"{where}: annotation {a['name']}", a["expr"]))
        for v in variables_of(board).values():
            if v["type"] == "query" and v["datasource"]["type"] == "loki":
                # Grafana's label_values(<stream selector>, <label>): the
                # selector is LogQL, the wrapper is Grafana's.
                inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["query"], re.S)
                assert inner is not None, f"{where}: variable {v['name']}: {v['query']}"
                assert inner.group(2) in STREAM_LABELS, v["query"]
                out.append((f"{where}: variable {v['name']}", inner.group(1)))
    return out


def logql_expressions() -> list[tuple[str, str]]:
    return loki_queries(OUT, "out")


def test_logql_is_balanced_and_names_only_what_the_exporter_writes() -> None:
    service_name = rendered_config()["lokiServiceName"]
    exprs = logql_expressions()
    assert len(exprs) >= 12
    problems = {where: p for where, e in exprs if (p := logql_problems(e, service_name))}
    assert not problems


def test_logql_checker_catches_mistakes() -> None:
    ok = '{service_name="kube-audit", cluster=~"$c"} | user=~"a" | json ua="userAgent" | ua="x"'
    assert logql_problems(ok, "kube-audit") == []
    bad = [
        '{service_name="kube-audit", user="a"}',  # metadata is not a stream label
        '{service_name="kube-audit"} | pod="a"',  # no such field
        'sum by (pod) (count_over_time({service_name="kube-audit"}[1m]))',
        'sum(count_over_time({service_name="kube-audit"}[1m])',  # unbalanced
        '{service_name="kube-audit"} |= "x',  # unbalanced quote
        '{service_name="other"}',
        '{cluster="x"}',
        '{service_name="kube-audit"} | line_format `{{.pod}}`',
    ]
    for expr in bad:
        assert logql_problems(expr, "kube-audit"), expr


# --- metric names -------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_expressions() -> list[tuple[str, str]]:
    out = []
    for rel in ("prometheus/alerts.yaml", "prometheus/rules.yaml"):
        for g in yaml.safe_load((OUT / rel).read_text())["groups"]:
            for r in g["rules"]:
                out.append((f"{rel}: {r.get('alert') or r.get('record')}", r["expr"]))
    for name, d in dashboards().items():
        for p in panels_of(d):
            for t in p.get("targets", []):
                if t["datasource"]["type"] == "prometheus":
                    out.append((f"{name}: {p['title']}", t["expr"]))
        for v in variables_of(d).values():
            if v["type"] == "query" and v["datasource"]["type"] == "prometheus":
                out.append((f"{name}: variable {v['name']}", v["query"]))
    return out


def documented_metrics() -> set[str]:
    """Metric names in the README's metrics table, and the Alertmanager
    notifier's (documented in exporter/alertmanager.py)."""
    names = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `kube_audit_"):
            names.update(re.findall(r"`(kube_audit_\w+)`", line.split("|")[1]))
    doc = (ROOT / "exporter" / "alertmanager.py").read_text().split('"""')[1]
    names.update(re.findall(r"``(kube_audit_alertmanager_\w+)", doc))
    return names


def test_queries_only_use_documented_metrics_and_recorded_series() -> None:
    documented = documented_metrics()
    assert "kube_audit_requests_total" in documented
    recorded = recording_names()
    unknown = {}
    for where, expr in promql_expressions():
        for name in _NAME.findall(_STRING.sub('""', expr)):
            if ":" in name:
                if name not in recorded:
                    unknown[name] = where
                continue
            if not name.startswith("kube_audit_"):
                continue
            base = name
            for suffix in _HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name.removesuffix(suffix) in documented:
                    base = name.removesuffix(suffix)
            if base not in documented:
                unknown[name] = where
    assert not unknown


def test_every_catalogued_metric_is_on_a_dashboard_or_in_an_alert() -> None:
    """Each metric of the README's tables (the exporter's, the supervisor's
    and the notifier's) is read by a panel, an alert or a recording rule
    that a panel or an alert reads: none is exported for nobody."""
    catalogue = documented_metrics()
    for must in (
        "kube_audit_requests_total",
        "kube_audit_worker_restarts_total",
        "kube_audit_state_fallbacks_total",
        "kube_audit_otlp_sender_up",
        "kube_audit_loki_entries_resent_without_metadata_total",
    ):
        assert must in catalogue, must
    read: set[str] = set()
    for _, expr in promql_expressions():
        for name in _NAME.findall(_STRING.sub('""', expr)):
            read.add(name)
            for suffix in _HISTOGRAM_SUFFIXES:
                read.add(name.removesuffix(suffix))
    unread = sorted(catalogue - read)
    assert not unread, f"on no dashboard and in no alert: {unread}"


def recording_names() -> set[str]:
    doc = yaml.safe_load((OUT / "prometheus" / "rules.yaml").read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"]}


def test_recording_rules_are_used_by_dashboards_or_alerts() -> None:
    used = " ".join(e for w, e in promql_expressions() if "rules.yaml" not in w)
    rules = yaml.safe_load((OUT / "prometheus" / "rules.yaml").read_text())
    inputs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    for name in recording_names():
        assert name in used or name in inputs, f"{name} is recorded but never read"
