"""The README's reference tables stay true to the code."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.app import build_pipeline
from exporter.cli import build_parser
from exporter.config import OPTIONS, load
from exporter.event import Decoder
from exporter.metrics import AuditMetrics
from exporter.sources.logfile import LogFileSource
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_option_is_documented() -> None:
    missing = [o.key for o in OPTIONS if f"| `{o.key}` |" not in README]
    assert not missing, f"README configuration table lacks {missing}"


def test_every_metric_is_documented(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    # Everything `run` builds registers its families on the same registry.
    cfg = load(
        build_parser().parse_args(
            ["run", "--logfile.path", str(tmp_path / "audit.log"),
             "--loki.url", "http://127.0.0.1:9/", "--spool.dir", str(tmp_path / "spool"),
             "--alertmanager.url", "http://127.0.0.1:9/"]
        ),
        {},
    )  # fmt: skip
    pipeline, _notifier = build_pipeline(cfg, metrics)
    LogFileSource(
        path=cfg.logfile.path,
        checkpoint_file=None,
        pipeline=pipeline,
        decoder=Decoder(),
        metrics=metrics,
    )
    names = {m.name for m in registry.collect()}
    pipeline.close(0.1)
    missing = [n for n in sorted(names) if n.startswith("kube_audit_") and n not in README]
    assert not missing, f"README metrics table lacks {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_every_default_rule_is_in_the_readme_with_its_severity() -> None:
    from exporter.detect import load_rules

    missing = [r.id for r in load_rules(None).rules if f"| `{r.id}` | {r.severity} |" not in README]
    assert not missing, f"README rules table lacks or misstates {missing}"
