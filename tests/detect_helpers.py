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


class Receiver:
    """An in-test HTTP server that records JSON bodies POSTed to it and
    answers with the status codes queued in ``statuses`` (then 200)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[Any] = []
        self.paths: list[str] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                with outer.lock:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    outer.paths.append(self.path)
                    if status == 200:
                        outer.bodies.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list[Any]:
        with self.lock:
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
