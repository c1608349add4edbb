"""The mixin's Alertmanager inhibit rules (dashboards/out/alertmanager/
inhibit-rules.yaml, loaded as generated) in a real Alertmanager.

The exporter's own notifications come from its code: the default rules'
positive examples run through the pipeline, the detector and the notifier,
which POSTs them to Alertmanager. The mixin alerts that say the same thing
are posted with the labels Prometheus or the Loki ruler would give them: the
`by (...)` labels of the shipped expression, valued from the series the same
events produced in the exporter's registry (Prometheus alerts), or the
shipped Loki rule evaluated on the entries the exporter's EntryBuilder
writes for those events (Loki alerts, tests/test_mixin_loki_rules.py),
plus the rule's own labels. Alertmanager's /api/v2/alerts then says which
are inhibited and by what.

So the test fails when the inhibit rules stop matching what really arrives:
a renamed alertname or `rule` label in exporter/detect/alerts.py, an `equal`
label the notification does not carry or carries with another value, a
target alert that was renamed or lost the label from its `by (...)`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry

from exporter.alertmanager import Alertmanager
from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.detect.alerts import alertname
from exporter.detect.examples import example_events
from exporter.event import AuditEvent
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from tests.conftest import ROOT
from tests.integration.conftest import Process, poll, run_alertmanager

OUT = ROOT / "dashboards" / "out"
INHIBIT_RULES = OUT / "alertmanager" / "inhibit-rules.yaml"
CLUSTER = "prod-a"  # --cluster, and Prometheus's cluster label (the same, as documented)
JOB = "kube-audit-exporter"


def inhibitions() -> list[tuple[str, str, list[str]]]:
    """(rule id, target alert, equal labels) of each shipped inhibit rule."""
    out = []
    for r in yaml.safe_load(INHIBIT_RULES.read_text())["inhibit_rules"]:
        rule = next(m for m in r["source_matchers"] if m.startswith("rule="))
        [target] = r["target_matchers"]
        out.append((json.loads(rule[5:]), json.loads(target.split("=", 1)[1]), r["equal"]))
    return out


def mixin_rules() -> dict[str, tuple[str, dict[str, Any]]]:
    """Alert name -> ("prometheus" or "loki", its rule) from the generated files."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for kind, rel in (("prometheus", "prometheus/alerts.yaml"), ("loki", "loki/rules.yaml")):
        for g in yaml.safe_load((OUT / rel).read_text())["groups"]:
            for r in g["rules"]:
                if "alert" in r:
                    out[r["alert"]] = (kind, r)
    return out


_BY = re.compile(r"sum by \(([^)]*)\) \(\s*(?:increase|count_over_time)\((\w+)?(\{[^}]*\})?")


def by_labels(expr: str) -> tuple[list[str], str, dict[str, str]]:
    """The first aggregation's labels, the metric it reads (Prometheus) and
    that selector's equality matchers."""
    m = _BY.search(expr)
    assert m is not None, expr
    labels = [x.strip() for x in m.group(1).split(",")]
    matchers = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
    return labels, m.group(2) or "", matchers


def prometheus_alert_labels(
    name: str, rule: dict[str, Any], registry: CollectorRegistry
) -> list[dict[str, str]]:
    """The label sets Prometheus gives ``name`` from the exporter's series
    (scraped with job and cluster labels)."""
    labels, metric, matchers = by_labels(rule["expr"])
    assert metric.startswith("kube_audit_"), rule["expr"]
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name != metric or s.value <= 0:
                continue
            if any(s.labels.get(k) != v for k, v in matchers.items() if k != "job"):
                continue
            scraped = {**s.labels, "cluster": CLUSTER, "job": JOB}
            key = tuple((k, scraped.get(k, "")) for k in labels)
            found[key] = found.get(key, 0.0) + s.value
    assert found, f"{metric} has no series for {name}"
    return [
        {"alertname": name, **rule.get("labels", {}), **{k: v for k, v in key if v}}
        for key in found
    ]


def loki_alert_labels(
    name: str, rule: dict[str, Any], events: list[AuditEvent]
) -> list[dict[str, str]]:
    """The label sets the Loki ruler gives ``name`` over the entries the
    exporter writes for ``events`` (stream labels and structured metadata):
    the shipped rule evaluated on them (tests/test_mixin_loki_rules.py)."""
    from tests.test_mixin_loki_rules import evaluate, push
    from tests.test_mixin_loki_rules import rule as loki_rule

    out = []
    for key in evaluate(loki_rule(name), push(events, CLUSTER)):
        values = dict(key)
        assert values.get("cluster") == CLUSTER
        out.append({"alertname": name, **rule.get("labels", {}), **values})
    return out


def start_alertmanager(tmp_path: Path, spawn: Callable[..., Process]) -> tuple[str, Path]:
    config = {
        "route": {"receiver": "null", "group_by": ["..."]},
        "receivers": [{"name": "null"}],
        # the generated file as it is
        **yaml.safe_load(INHIBIT_RULES.read_text()),
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    url, _ = run_alertmanager(spawn, path, tmp_path / "am-data")
    return url, path


def post(url: str, labels: list[dict[str, str]]) -> None:
    now = datetime.now(UTC)
    alerts = [
        {
            "labels": lab,
            "annotations": {"summary": "from the mixin"},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
        }
        for lab in labels
    ]
    r = requests.post(f"{url}/api/v2/alerts", json=alerts, timeout=5)
    assert r.status_code == 200, r.text


def alerts(url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = requests.get(f"{url}/api/v2/alerts", timeout=5).json()
    return got


@pytest.fixture
def notifier_and_registry() -> Iterator[tuple[CollectorRegistry, list[Alertmanager]]]:
    holder: list[Alertmanager] = []
    yield CollectorRegistry(), holder
    for n in holder:
        n.close(5.0)


def test_amtool_accepts_the_config_with_the_shipped_inhibit_rules(tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail(
            "amtool is not installed; `make test` installs it (Debian prometheus-alertmanager)"
        )
    config = {
        "route": {"receiver": "null"},
        "receivers": [{"name": "null"}],
        **yaml.safe_load(INHIBIT_RULES.read_text()),
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"- {len(config['inhibit_rules'])} inhibit rules" in done.stdout, done.stdout
    # and it is not a checker that accepts anything
    config["inhibit_rules"][0]["source_matchers"] = ['alertname=~"(unclosed"']
    path.write_text(yaml.safe_dump(config))
    bad = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0


def test_notifications_inhibit_the_mixin_alerts_that_say_the_same(
    tmp_path: Path,
    spawn: Callable[..., Process],
    notifier_and_registry: tuple[CollectorRegistry, list[Alertmanager]],
) -> None:
    am_url, _ = start_alertmanager(tmp_path, spawn)
    registry, holder = notifier_and_registry
    metrics = AuditMetrics(registry)
    notifier = Alertmanager([am_url], metrics, backoff_base=0.1)
    holder.append(notifier)
    notifier.start()
    ruleset = load_rules(None)
    by_id = {r.id: r for r in ruleset.rules}
    shipped = inhibitions()
    assert len(shipped) >= 4
    # info-level rules (exec-into-system-pod) notify when asked to
    settings = DetectionSettings(cluster=CLUSTER, alert_min_severity="info")
    detector = Detector(ruleset, settings, metrics, notifier)

    # 1. Each inhibited rule's positive example, through the exporter (a
    #    pipeline each: the examples reuse audit IDs, which would be dropped
    #    as retries).
    sent: dict[str, list[AuditEvent]] = {}
    for rule_id, _, _ in shipped:
        pipeline = Pipeline(metrics, processors=[detector])
        example = next(e for e in by_id[rule_id].examples if e.expect)
        events = example_events(example)
        pipeline.process(events, "webhook")
        assert rule_id in events[-1].rules, rule_id
        sent[rule_id] = events
    names = {alertname(rule_id) for rule_id, _, _ in shipped}
    poll(
        lambda: names <= {a["labels"]["alertname"] for a in alerts(am_url)},
        timeout=30,
        what=f"the notifications {sorted(names)} in Alertmanager",
    )

    # 2. The mixin alerts, labelled as Prometheus and the Loki ruler would
    #    label them for the same events; and each once more for another
    #    cluster, which no notification covers.
    rules = mixin_rules()
    # a target alert -> the notifications that may mute it (several rules can
    # say the same: Alertmanager names one of them)
    sources: dict[str, set[str]] = {}
    for rule_id, target, _ in shipped:
        sources.setdefault(target, set()).add(alertname(rule_id))
    expected: dict[str, set[str]] = {}  # label set (as a key) -> notifications that may mute it
    posted = []
    for rule_id, target, _equal in shipped:
        kind, rule = rules[target]
        if kind == "prometheus":
            sets = prometheus_alert_labels(target, rule, registry)
        else:
            sets = loki_alert_labels(target, rule, sent[rule_id])
        for lab in sets:
            posted.append(lab)
            expected[_key(lab)] = sources[target]
            elsewhere = {**lab, "cluster": "prod-b"}
            posted.append(elsewhere)
            expected[_key(elsewhere)] = set()
    # every target alert is posted, for the events its rule really fires on
    assert {_key_name(k) for k, v in expected.items() if v} == set(sources)
    # the exec alert for another person in the same namespace: not the same exec
    exec_target = "KubeAuditExecIntoSystemNamespace"
    [exec_labels] = loki_alert_labels(
        exec_target, rules[exec_target][1], sent["exec-into-system-pod"]
    )
    other = {**exec_labels, "user": "someone-else"}
    posted.append(other)
    expected[_key(other)] = set()
    # a mixin alert no inhibit rule names
    unrelated = {"alertname": "KubeAuditForbiddenRatioHigh", "severity": "warning",
                 "cluster": CLUSTER, "job": JOB}  # fmt: skip
    posted.append(unrelated)
    expected[_key(unrelated)] = set()
    post(am_url, posted)

    def settled() -> dict[str, dict[str, Any]] | None:
        got = {_key(a["labels"]): a for a in alerts(am_url)}
        if not set(expected) <= set(got):
            return None
        muted = [k for k, v in expected.items() if v]
        if not all(got[k]["status"]["inhibitedBy"] for k in muted):
            return None
        return got

    def show() -> str:
        return "\n".join(
            f"{a['labels']} {a['status']['state']} {a['status']['inhibitedBy']}"
            for a in alerts(am_url)
        )

    got = poll(settled, timeout=30, what="the inhibitions to settle", on_timeout=show)
    by_fp = {a["fingerprint"]: a["labels"] for a in got.values()}
    for key, source in expected.items():
        status = got[key]["status"]
        if source:
            assert status["state"] == "suppressed", (key, status)
            names_by = {by_fp[fp]["alertname"] for fp in status["inhibitedBy"]}
            assert names_by and names_by <= source, (key, names_by)
        else:
            assert status["state"] == "active" and status["inhibitedBy"] == [], (key, status)
    # the notifications themselves are never muted
    for a in got.values():
        if a["labels"]["alertname"] in names:
            assert a["status"]["state"] == "active", a
            assert a["labels"]["cluster"] == CLUSTER


def _key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True)


def _key_name(key: str) -> str:
    name: str = json.loads(key)["alertname"]
    return name
