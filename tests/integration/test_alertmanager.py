"""A real Alertmanager on loopback routes the exporter's direct alerts to a
webhook receiver in the test: a secret deleted by a person, and refusals from
an unknown network followed by access from a trusted one, each reach it as
exactly one notification saying who did what, where and when."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from exporter.alertmanager import Alertmanager
from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.event import AuditEvent, Decoder
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from tests.conftest import CORPORA
from tests.detect_helpers import Receiver, event
from tests.integration.conftest import Process, poll, run_alertmanager

LINK = "https://grafana.example/explore?audit_id=${audit_id}&cluster=${cluster}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def start_alertmanager(
    tmp_path: Path, spawn: Callable[..., Process], webhook: str
) -> tuple[str, Process]:
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        f"""\
route:
  receiver: test
  group_by: ['...']        # every alert is its own notification
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: {webhook}/hook
        send_resolved: false
"""
    )
    return run_alertmanager(spawn, config, tmp_path / "am-data")


def notifications(receiver: Receiver) -> list[dict[str, Any]]:
    """Alerts delivered by Alertmanager, one per webhook notification."""
    out = []
    for body in receiver.received():
        assert len(body["alerts"]) == 1, body
        out.append(body["alerts"][0])
    return out


def test_secret_deletion_and_login_sequence_each_notify_once(
    tmp_path: Path, spawn: Callable[..., Process], receiver: Receiver
) -> None:
    am_url, am_proc = start_alertmanager(tmp_path, spawn, receiver.url)
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    notifier = Alertmanager([am_url], metrics, backoff_base=0.1)
    notifier.start()
    settings = DetectionSettings(
        trusted_networks=("10.20.0.0/16",),
        cluster="integration",
        alert_link_template=LINK,
    )
    detector = Detector(load_rules(None), settings, metrics, notifier)
    pipeline = Pipeline(metrics, processors=[detector])
    try:
        # 1. A person deletes a secret: a real event from the falco corpus.
        delete = CORPORA / "falco-k8s-audit-trace-files" / "delete_secret.json"
        batch: list[AuditEvent] = list(Decoder().decode_document(delete.read_bytes()))  # type: ignore[arg-type]
        pipeline.process(batch, "webhook")
        deleted = batch[0]

        # 2. carol is refused three times from outside, once from inside, then
        #    gets in from inside: within minutes, on event time.
        def req(at: float, ip: str, code: int, verb: str = "get") -> AuditEvent:
            return event(
                at=at,
                verb=verb,
                user={"username": "carol", "groups": ["system:authenticated"]},
                sourceIPs=[ip],
                userAgent="kubectl/v1.30.1 (linux/amd64) kubernetes/6911225",
                responseStatus={"code": code},
                annotations={"authorization.k8s.io/decision": "forbid" if code == 403 else "allow"},
                objectRef={"resource": "secrets", "namespace": "payments", "name": "db"},
            )

        sequence = [
            req(0, "198.51.100.23", 403),
            req(20, "198.51.100.23", 403),
            req(40, "198.51.100.23", 403),
            req(160, "10.20.4.7", 403),
            req(220, "10.20.4.7", 200, "list"),
        ]
        pipeline.process(sequence, "webhook")
        admitted = sequence[-1]
        assert "untrusted-then-trusted-access" in admitted.rules

        def two() -> list[dict[str, Any]] | None:
            n = notifications(receiver)
            return n if len(n) >= 2 else None

        got = poll(two, timeout=30, what=f"two notifications\n{am_proc.output()}")
        by_rule = {a["labels"]["rule"]: a for a in got}
        assert sorted(by_rule) == ["secret-deleted-by-human", "untrusted-then-trusted-access"]

        secret = by_rule["secret-deleted-by-human"]
        assert secret["labels"] == {
            "alertname": "KubeAuditDetectionSecretDeletedByHuman",
            "rule": "secret-deleted-by-human",
            "severity": "warning",
            "cluster": "integration",
            "namespace": "default",
            "resource": "secrets",
            "user": "minikube-user",
        }
        ann = secret["annotations"]
        assert ann["summary"] == (
            "Secret deleted by a person: minikube-user (human) did delete on secrets "
            "default/example-secret."
        )
        assert ann["description"].startswith(
            "minikube-user (human) did delete on secrets default/example-secret "
            "from 192.168.64.1 at 2020-04-21T17:58:49.696Z (answered 200"
        )
        assert ann["audit_id"] == deleted.audit_id
        link = f"https://grafana.example/explore?audit_id={deleted.audit_id}&cluster=integration"
        assert ann["link"] == link and secret["generatorURL"] == link

        seq = by_rule["untrusted-then-trusted-access"]
        assert seq["labels"] == {
            "alertname": "KubeAuditDetectionUntrustedThenTrustedAccess",
            "rule": "untrusted-then-trusted-access",
            "severity": "critical",
            "cluster": "integration",
            "namespace": "payments",
            "resource": "secrets",
            "user": "carol",
        }
        ann = seq["annotations"]
        assert ann["summary"].startswith(
            "Refused from an unknown network, then refused and admitted from a trusted one: "
            "carol (human) did list on secrets payments/db."
        )
        assert "from 10.20.4.7 at 2024-05-01T10:03:40.000Z" in ann["description"]
        assert (
            "The steps refused-untrusted -> refused-trusted -> admitted-trusted happened in "
            "order for user.username=carol within 15m." in ann["description"]
        )
        assert ann["audit_id"] == admitted.audit_id
        assert ann["mitre"] == "T1078, T1110"

        # Exactly one each: the exporter sent two alerts, Alertmanager holds two.
        assert registry.get_sample_value("kube_audit_alertmanager_alerts_sent_total") == 2.0
        active = requests.get(f"{am_url}/api/v2/alerts", timeout=5).json()
        assert sorted(a["labels"]["rule"] for a in active) == sorted(by_rule)
        assert len(notifications(receiver)) == 2
    finally:
        notifier.close(5.0)
