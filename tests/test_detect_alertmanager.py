"""The Alertmanager client against an in-test HTTP server: delivery to every
URL, retries with backoff, no retry of refused alerts, bounded queues, and
the metrics that say so."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from exporter.alertmanager import Alertmanager
from exporter.metrics import AuditMetrics
from tests.detect_helpers import Receiver
from tests.integration.conftest import poll


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def alert(n: int) -> dict[str, object]:
    return {"labels": {"alertname": "KubeAuditTest", "n": str(n)}, "annotations": {}}


def client(urls: list[str], registry: CollectorRegistry, **kw: object) -> Alertmanager:
    am = Alertmanager(urls, AuditMetrics(registry), backoff_base=0.01, backoff_max=0.05, **kw)  # type: ignore[arg-type]
    am.start()
    return am


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_every_alertmanager_gets_every_alert(receiver: Receiver) -> None:
    other = Receiver()
    registry = CollectorRegistry()
    am = client([receiver.url, other.url + "/api/v2/alerts"], registry)
    try:
        for i in range(3):
            am.send(alert(i))
        for r in (receiver, other):
            poll(lambda r=r: sum(len(b) for b in r.received()) == 3, timeout=10, what="3 alerts")
        assert set(receiver.paths) == {"/api/v2/alerts"} == set(other.paths)
        poll(lambda: value(registry, "kube_audit_alertmanager_alerts_sent_total") == 6.0)
    finally:
        am.close(2.0)
        other.close()


def test_server_errors_are_retried_until_accepted(receiver: Receiver) -> None:
    receiver.statuses = [500, 503, 429]
    registry = CollectorRegistry()
    am = client([receiver.url], registry)
    try:
        am.send(alert(1))
        poll(lambda: receiver.received(), timeout=10, what="delivery after retries")
        assert receiver.received() == [[alert(1)]]
        assert len(receiver.paths) == 4
        assert value(registry, "kube_audit_alertmanager_failures_total", reason="http_5xx") == 2.0
        assert value(registry, "kube_audit_alertmanager_failures_total", reason="http_4xx") == 1.0
        assert value(registry, "kube_audit_alertmanager_alerts_sent_total") == 1.0
    finally:
        am.close(2.0)


def test_refused_alerts_are_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400]
    registry = CollectorRegistry()
    am = client([receiver.url], registry)
    try:
        am.send(alert(1))
        poll(
            lambda: (
                value(
                    registry, "kube_audit_alertmanager_failures_total", reason="retries_exhausted"
                )
                == 1.0
            ),
            timeout=10,
        )
        am.send(alert(2))
        poll(lambda: receiver.received(), timeout=10)
        assert receiver.received() == [[alert(2)]]
        assert len(receiver.paths) == 2
    finally:
        am.close(2.0)


def test_unreachable_alertmanager_gives_up_after_max_attempts() -> None:
    registry = CollectorRegistry()
    am = client(["http://127.0.0.1:9"], registry, max_attempts=3, timeout=1.0)
    try:
        am.send(alert(1))
        poll(
            lambda: (
                value(
                    registry, "kube_audit_alertmanager_failures_total", reason="retries_exhausted"
                )
                == 1.0
            ),
            timeout=15,
        )
        assert value(registry, "kube_audit_alertmanager_failures_total", reason="connection") == 3.0
    finally:
        am.close(1.0)


def test_full_queue_drops_the_oldest_and_counts_it() -> None:
    registry = CollectorRegistry()
    # not started: nothing drains the queue
    am = Alertmanager(["http://127.0.0.1:9"], AuditMetrics(registry), queue_size=5)
    for i in range(8):
        am.send(alert(i))
    assert [a["labels"]["n"] for a in am.targets[0].queue] == ["3", "4", "5", "6", "7"]  # type: ignore[index]
    assert value(registry, "kube_audit_alertmanager_failures_total", reason="queue_full") == 3.0
    assert value(registry, "kube_audit_alertmanager_queue_length") == 5.0
    am.close(0.0)
    assert value(registry, "kube_audit_alertmanager_failures_total", reason="shutdown") == 5.0
    assert am.send(alert(9)) is False


def test_close_delivers_what_is_queued(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    am = Alertmanager([receiver.url], AuditMetrics(registry), batch_size=2)
    for i in range(5):
        am.send(alert(i))
    am.start()
    am.close(5.0)
    assert sum(len(b) for b in receiver.received()) == 5
    assert max(len(b) for b in receiver.received()) == 2
    assert value(registry, "kube_audit_alertmanager_queue_length") == 0.0
