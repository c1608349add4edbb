"""Backfill through replay: historical events, a small spool, old timestamps."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.event import Decoder
from exporter.loki import LokiSettings, LokiSink
from exporter.loki.backfill import AgeCheck, push
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from exporter.redact import Redactor
from exporter.sources.replay import read_batches
from tests.loki_receiver import LokiReceiver

PERFSPEC = Path("perfspec-kubernetes-event-dataset") / "reconstructed-audit.log"


def test_replay_through_a_small_spool_delivers_every_event_and_warns_about_age(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    settings = LokiSettings(
        url=loki.url,
        spool_dir=str(tmp_path / "spool"),
        spool_max_bytes=1 << 20,  # far less than the file: replay must wait for room
        spool_segment_bytes=64 << 10,
        batch_bytes=128 << 10,
        batch_wait=0.01,
        fsync="never",
        redact=False,
    )
    sink = LokiSink(settings, metrics)
    pipeline = Pipeline(metrics, sinks=[sink], processors=[Redactor()])
    age = AgeCheck()
    with open(corpora / PERFSPEC, "rb") as f:
        result = push(pipeline, sink, read_batches(f, Decoder()), age=age)
    assert sink.close(timeout=5)
    assert result.drained
    assert result.submitted == 16_563
    assert result.sent == loki.count() == 16_563
    assert registry.get_sample_value("kube_audit_spool_full_total")
    # 2023 events: all past a default Loki's 7-day window, said once.
    assert age.too_old == 16_563
    warnings = [r for r in caplog.records if "acceptance window" in r.getMessage()]
    assert len(warnings) == 1
    # Original timestamps, not the time of the replay.
    assert min(r.ts_ns for r in loki.received) < 1_700_000_000 * 10**9
