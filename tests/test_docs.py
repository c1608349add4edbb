"""The README's reference tables stay true to the code."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.config import OPTIONS
from exporter.event import Decoder
from exporter.loki.settings import LokiSettings
from exporter.loki.sink import LokiSink
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from exporter.sources.logfile import LogFileSource
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_option_is_documented() -> None:
    missing = [o.key for o in OPTIONS if f"| `{o.key}` |" not in README]
    assert not missing, f"README configuration table lacks {missing}"


def test_every_metric_is_documented(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    # Sources and sinks register their scrape-time families on the same registry.
    LokiSink(
        LokiSettings(url="http://127.0.0.1:9/", spool_dir=str(tmp_path / "spool")),
        metrics,
        start=False,
    )
    LogFileSource(
        path=str(tmp_path / "audit.log"),
        checkpoint_file=None,
        pipeline=Pipeline(metrics),
        decoder=Decoder(),
        metrics=metrics,
    )
    names = {m.name for m in registry.collect()}
    missing = [n for n in sorted(names) if n not in README]
    assert not missing, f"README metrics table lacks {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
