"""A batch the Loki spool refuses for want of room has touched nothing: no
detection state, no rule counter, no notification, no event counter. Its
retry is the first time the processors see it, so it is counted once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.detect import DetectionSettings, Detector
from exporter.event import AuditEvent, InvalidEvent
from exporter.loki import LokiSettings, LokiSink
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from tests.detect_helpers import event, rules_from
from tests.loki_receiver import LokiReceiver, wait_for

RULES = """
rules:
  - id: delete-burst
    title: Many deletions by one user
    severity: critical
    description: Three deletions by one user within five minutes.
    kind: threshold
    match:
      verb: delete
    group_by: [user.username]
    window: 5m
    count: 3
  - id: any-delete
    title: A deletion
    severity: warning
    description: Any deletion.
    match:
      verb: delete
"""


class Collecting:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def send(self, alert: dict[str, Any]) -> bool:
        self.alerts.append(alert)
        return True


def small_spool(tmp_path: Path, loki: LokiReceiver, metrics: AuditMetrics) -> LokiSink:
    settings = LokiSettings(
        url=loki.url,
        spool_dir=str(tmp_path / "spool"),
        spool_max_bytes=1 << 16,
        batch_wait=0.01,
        backoff_min=0.01,
        backoff_max=0.05,
    )
    return LokiSink(settings, metrics, redact=False)


def deletion(at: float) -> AuditEvent:
    return event(
        at,
        verb="delete",
        user={"username": "alice"},
        objectRef={"resource": "configmaps", "namespace": "shop", "name": f"cm-{at}"},
    )


def matches(registry: CollectorRegistry, rule: str, severity: str) -> float:
    return (
        registry.get_sample_value(
            "kube_audit_rule_matches_total", {"rule": rule, "severity": severity}
        )
        or 0.0
    )


def test_a_spool_full_refusal_leaves_detection_untouched_and_the_retry_counts_once(
    tmp_path: Path, loki: LokiReceiver, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    sink = small_spool(tmp_path, loki, metrics)
    sinks.append(sink)
    notifier = Collecting()
    detector = Detector(
        rules_from(tmp_path, RULES),
        DetectionSettings(alert_min_severity="warning"),
        metrics,
        notifier,
    )
    burst = next(r for r in detector.rules if r.id == "delete-burst")
    assert burst.state is not None
    pipeline = Pipeline(metrics, processors=[detector], sinks=[sink])
    loki.default = 500  # Loki down: the spool only fills

    # Two deletions and enough other events to fill the spool (an empty
    # spool takes any batch).
    filler = [event(i / 100, verb="get", user={"username": "bob"}) for i in range(300)]
    first = pipeline.process([deletion(0), deletion(1), *filler], "logfile")
    assert not first.refused and first.accepted == 302
    assert (registry.get_sample_value("kube_audit_spool_bytes") or 0) > 1 << 16
    assert matches(registry, "any-delete", "warning") == 2
    assert matches(registry, "delete-burst", "critical") == 0
    assert burst.state.entries == 1
    assert len(notifier.alerts) == 2

    # The third deletion would fire the threshold, but the spool is full.
    third: list[AuditEvent | InvalidEvent] = [deletion(2)]
    refused = pipeline.process(third, "logfile")
    assert refused.refused
    assert registry.get_sample_value("kube_audit_spool_full_total") == 1
    assert matches(registry, "any-delete", "warning") == 2
    assert matches(registry, "delete-burst", "critical") == 0
    assert len(notifier.alerts) == 2
    assert burst.state.entries == 1
    assert third[0].rules == ()  # type: ignore[union-attr]
    assert registry.get_sample_value("kube_audit_events_total", {"source": "logfile"}) == 302

    loki.default = None
    assert sink.wait_for_room(timeout=30)
    retried = pipeline.process(third, "logfile")
    assert not retried.refused and retried.accepted == 1
    assert registry.get_sample_value("kube_audit_events_total", {"source": "logfile"}) == 303
    assert matches(registry, "any-delete", "warning") == 3
    assert matches(registry, "delete-burst", "critical") == 1
    assert len(notifier.alerts) == 4
    wait_for(lambda: loki.count() == 303)
    assert sink.close(timeout=5)
    assert loki.count() == 303
