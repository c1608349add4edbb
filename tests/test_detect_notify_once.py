"""notify_once: one notification per group and window; the group's other
matches are still matched and counted, at info."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.detect.errors import RuleError
from exporter.event import AuditEvent, Decoder
from exporter.state import StateSettings
from exporter.state.redis_store import RedisStore
from tests.conftest import CORPORA
from tests.detect_helpers import detector, event, rules_from
from tests.redis_server import RedisServer, running_redis

WEBHOOKS = """
rules:
  - id: webhook-changed
    title: t
    severity: warning
    description: d
    match:
      verb: [create, update, delete]
      objectRef.resource: [mutatingwebhookconfigurations, validatingwebhookconfigurations]
    notify_once: {per: [user.username], window: 1h}
"""


class Notifier:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def send(self, alert: dict[str, Any]) -> bool:
        self.alerts.append(alert)
        return True


def change(at: float, user: str, resource: str = "mutatingwebhookconfigurations") -> AuditEvent:
    return event(at, verb="create", user={"username": user}, objectRef={"resource": resource})


def test_one_notification_per_principal_and_window(tmp_path: Path) -> None:
    notifier = Notifier()
    det, _, registry = detector(rules_from(tmp_path, WEBHOOKS), notifier=notifier)
    events = [
        change(0, "alice"),
        change(5, "alice", "validatingwebhookconfigurations"),
        change(30, "bob"),
        change(60, "alice"),
        change(3599, "alice"),
        change(3601, "alice"),  # an hour after alice's notified change
    ]
    det(events)
    # every change is still a match, marked on its event
    assert all(ev.rules == ("webhook-changed",) for ev in events)
    assert [ev.severity for ev in events] == [
        "warning",
        "info",
        "warning",
        "info",
        "info",
        "warning",
    ]
    users = [a["labels"]["user"] for a in notifier.alerts]
    assert users == ["alice", "bob", "alice"]
    assert "user.username within" in notifier.alerts[0]["annotations"]["description"]
    assert "counted at info, not notified" in notifier.alerts[0]["annotations"]["description"]

    def matches(severity: str) -> float | None:
        return registry.get_sample_value(
            "kube_audit_rule_matches_total", {"rule": "webhook-changed", "severity": severity}
        )

    assert matches("warning") == 3.0
    assert matches("info") == 3.0


def test_the_group_is_every_per_path(tmp_path: Path) -> None:
    text = WEBHOOKS.replace("per: [user.username]", "per: [user.username, objectRef.resource]")
    det, _, _ = detector(rules_from(tmp_path, text))
    events = [
        change(0, "alice"),
        change(1, "alice", "validatingwebhookconfigurations"),
        change(2, "alice"),
    ]
    det(events)
    assert [ev.severity for ev in events] == ["warning", "warning", "info"]


def test_stateful_rules_take_it_too(tmp_path: Path) -> None:
    text = """
rules:
  - id: burst
    title: t
    severity: critical
    description: d
    kind: threshold
    match: {verb: get, objectRef.resource: secrets}
    group_by: [user.username, objectRef.namespace]
    window: 1m
    count: 2
    notify_once: {per: [user.username], window: 10m}
"""
    det, _, _ = detector(rules_from(tmp_path, text))

    def read(at: float, ns: str) -> AuditEvent:
        return event(
            at,
            verb="get",
            user={"username": "eve"},
            objectRef={"resource": "secrets", "namespace": ns},
        )

    events = [read(0, "a"), read(1, "a"), read(2, "b"), read(3, "b")]
    det(events)
    assert [ev.rules for ev in events] == [(), ("burst",), (), ("burst",)]
    assert [events[1].severity, events[3].severity] == ["critical", "info"]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


def test_with_shared_state_too(tmp_path: Path, redis_server: RedisServer) -> None:
    text = """
rules:
  - id: new-address
    title: t
    severity: warning
    description: d
    kind: first_seen
    match: {verb: create}
    group_by: [user.username]
    value: $source_ip
    ttl: 1d
    notify_once: {per: [user.username], window: 1h}
"""
    store = RedisStore(StateSettings(url=redis_server.url, prefix="n1:", timeout=1.0))
    notifier = Notifier()
    det = Detector(rules_from(tmp_path, text), DetectionSettings(), None, notifier, shared=store)
    events = [
        event(i, verb="create", user={"username": "ann"}, sourceIPs=[f"192.0.2.{i + 1}"])
        for i in range(3)
    ]
    det(events)
    assert [ev.rules for ev in events] == [("new-address",)] * 3
    assert [ev.severity for ev in events] == ["warning", "info", "info"]
    assert len(notifier.alerts) == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("notify_once: {per: [user.username]}", "must be {per: [field paths], window: DURATION}"),
        ("notify_once: 1h", "must be {per: [field paths], window: DURATION}"),
        ("notify_once: {per: [], window: 1h}", "must name at least one field path"),
        ("notify_once: {per: [user.username], window: 0s}", "must be > 0"),
        ("notify_once: {per: ['a..b'], window: 1h}", "expected a field name"),
        ("notify_once: {per: [user.username], window: 1h, by: x}", "unknown key"),
    ],
)
def test_bad_notify_once_is_refused_with_its_place(tmp_path: Path, body: str, problem: str) -> None:
    text = WEBHOOKS.replace("notify_once: {per: [user.username], window: 1h}", body)
    with pytest.raises(RuleError) as e:
        rules_from(tmp_path, text)
    assert problem in str(e.value)
    assert "webhook-changed" in str(e.value)


def test_info_rules_do_not_take_it_and_info_variants_drop_it(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="an info rule notifies nobody"):
        rules_from(tmp_path, WEBHOOKS.replace("severity: warning", "severity: info"))
    text = WEBHOOKS + "    refused: {severity: info, repeated: {count: 3, window: 10m}}\n"
    ruleset = rules_from(tmp_path, text)
    windows = {r.id: r.notify_window for r in ruleset.rules}
    assert windows == {
        "webhook-changed": 3600.0,
        "webhook-changed-refused": 0.0,
        "webhook-changed-refused-repeated": 3600.0,
    }


def test_perfspec_chart_installs_are_one_notification() -> None:
    """The real kubeadm cluster: kubernetes-admin installs three charts that
    bring five webhook configurations within a minute."""
    path = CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"
    events = [e for e in Decoder().decode_document(path.read_bytes()) if isinstance(e, AuditEvent)]
    notifier = Notifier()
    det = Detector(load_rules(None), DetectionSettings(), None, notifier)
    for i in range(0, len(events), 1000):
        det(events[i : i + 1000])
    changed = [ev for ev in events if "admission-webhook-changed" in ev.rules]
    assert len(changed) == 5
    assert {ev.username for ev in changed} == {"kubernetes-admin"}
    sent = [a for a in notifier.alerts if a["labels"]["rule"] == "admission-webhook-changed"]
    assert len(sent) == 1
    assert len(notifier.alerts) == 1  # nothing else in that cluster is notified


def test_rules_list_shows_it(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from exporter.cli import main

    assert main(["rules", "list", "--output", "json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["admission-webhook-changed"]["notify_once"] == {
        "per": ["user.username"],
        "window_seconds": 3600.0,
    }
    assert rows["cluster-admin-binding"]["notify_once"] is None
