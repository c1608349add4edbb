"""Helpers for the detection tests: rules from YAML text, events from a few
fields at a given event time."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.detect.examples import BASE_TIME, complete_event
from exporter.detect.rules import RuleSet
from exporter.event import AuditEvent, Decoder
from exporter.metrics import AuditMetrics

_seq = itertools.count(1)
T0 = BASE_TIME  # 2024-05-01T10:00:00Z, a Wednesday


def rules_from(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / f"rules-{next(_seq)}.yaml"
    path.write_text(text)
    return load_rules([str(path)])


def event(at: float = 0.0, **fields: Any) -> AuditEvent:
    """An audit event ``at`` seconds after T0 (the stageTimestamp)."""
    return Decoder().decode_object(complete_event(fields, next(_seq), T0 + at))


def detector(
    ruleset: RuleSet,
    settings: DetectionSettings | None = None,
    *,
    notifier: Any = None,
    registry: CollectorRegistry | None = None,
) -> tuple[Detector, AuditMetrics, CollectorRegistry]:
    registry = registry or CollectorRegistry()
    metrics = AuditMetrics(registry)
    det = Detector(ruleset, settings or DetectionSettings(), metrics, notifier)
    return det, metrics, registry


def fires(det: Detector, ev: AuditEvent, rule_id: str) -> bool:
    det([ev])
    return rule_id in ev.rules
