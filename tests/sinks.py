"""Sinks for tests.

:class:`Spool` is a pipeline sink that can be full, as the Loki spool is
when its disk is: while ``full``, every batch is refused before the
processors see it. :func:`sink_settings` and :func:`open_sink` make real
Loki (or OTLP) sinks against the in-test receivers (tests/loki_receiver.py),
closed by the ``sinks`` fixture (tests/conftest.py) whatever the test did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.event import AuditEvent
from exporter.loki import LokiSettings, LokiSink
from exporter.metrics import AuditMetrics

CLUSTER = "test-cluster"


class Spool:
    keeps_marks = False

    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.taken: list[AuditEvent] = []

    def admit(self, events: Sequence[AuditEvent]) -> bool:
        return not self.full

    def submit(self, events: Sequence[AuditEvent], mark: bytes | None = None) -> bool:
        self.taken.extend(events)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        return True


def sink_settings(
    tmp_path: Path, receiver_url: str, spool: str = "spool", **kw: Any
) -> LokiSettings:
    """Settings for a sink pushing to ``receiver_url``, spooling in
    ``tmp_path/spool``, quick to batch and to retry; ``kw`` overrides any
    field (``url`` too)."""
    base: dict[str, Any] = {
        "url": receiver_url,
        "spool_dir": str(tmp_path / spool),
        "cluster": CLUSTER,
        "batch_wait": 0.02,
        "backoff_min": 0.01,
        "backoff_max": 0.05,
    }
    base.update(kw)
    return LokiSettings(**base)


def open_sink(
    sinks: list[LokiSink],
    settings: LokiSettings,
    registry: CollectorRegistry | None = None,
    **kw: Any,
) -> LokiSink:
    """A started LokiSink with its metrics on ``registry`` when given (``kw``
    as LokiSink takes them), closed at the end of the test."""
    if registry is not None:
        kw["metrics"] = AuditMetrics(registry)
    sink = LokiSink(settings, **kw)
    sinks.append(sink)
    return sink


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0 when the series does not exist."""
    v = registry.get_sample_value(name, labels or None)
    return 0.0 if v is None else v
