"""Events nested far deeper than any Kubernetes object (a bug or an attack)
must not stop the exporter, lose the events around them, or let a secret
through. JSON parsers accept 1023 levels (orjson), Python walks about 1000
before RecursionError, orjson writes 255: each limit is crossed here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.cli import main
from exporter.event import TRUNCATED_ANNOTATION, AuditEvent, Decoder, dumps_event
from exporter.redact import Redactor
from tests.test_event_fast_path import same_json
from tests.test_webhook import Factory, event_list, pki, webhook  # noqa: F401

SECRET = "c3VwZXItc2VjcmV0LXZhbHVl"  # base64 of a password that must never leave


def deep_secret_event(audit_id: str, depth: int) -> dict[str, Any]:
    """A Secret created by a human, with its data and a field nested ``depth`` levels."""
    junk: Any = []
    for _ in range(depth - 1):
        junk = [junk]
    body = {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "db", "namespace": "payments", "annotations": {"x": junk}},
        "data": {"password": SECRET},
    }
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/payments/secrets",
        "verb": "create",
        "user": {"username": "mallory@example.com"},
        "sourceIPs": ["203.0.113.66"],
        "objectRef": {"resource": "secrets", "namespace": "payments", "name": "db"},
        "responseStatus": {"code": 201},
        "requestObject": body,
        "requestReceivedTimestamp": "2024-05-01T10:00:00.000000Z",
        "stageTimestamp": "2024-05-01T10:00:00.100000Z",
    }


def good_event(audit_id: str) -> dict[str, Any]:
    ev = deep_secret_event(audit_id, 2)
    del ev["requestObject"]
    ev["verb"], ev["objectRef"] = "list", {"resource": "pods", "namespace": "payments"}
    return ev


def deep_line(audit_id: str, depth: int) -> bytes:
    """deep_secret_event as JSON, written without any encoder's depth limit."""
    ev = deep_secret_event(audit_id, 1)
    ev["requestObject"]["metadata"]["annotations"]["x"] = "JUNK"
    return orjson.dumps(ev).replace(b'"JUNK"', b"[" * (depth - 1) + b"]" * (depth - 1))


class Capture:
    """A sink that writes every event as the Loki sink would."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    keeps_marks = False

    def admit(self, events: Sequence[AuditEvent]) -> bool:
        return True

    def submit(self, events: Sequence[AuditEvent], mark: bytes | None = None) -> bool:
        self.lines.extend(ev.to_bytes() for ev in events)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        return True


@pytest.mark.parametrize("depth", [300, 900, 1015])
def test_webhook_takes_deep_events_and_redacts_them(webhook: Factory, depth: int) -> None:  # noqa: F811
    sink = Capture()
    h = webhook(sinks=[sink], processors=[Redactor()])
    items = [good_event("a"), {}, good_event("b")]
    body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[%s]}' % b",".join(
        [orjson.dumps(items[0]), deep_line("deep", depth), orjson.dumps(items[2])]
    )
    reply = h.post(body)
    assert reply.status == 200, reply.body
    assert reply.json() == {"accepted": 3, "duplicates": 0, "invalid": 0}
    assert h.value("kube_audit_sensitive_operations_total", category="secrets", verb="create",
                   resource="secrets", code_class="2xx", user_kind="human") == 1  # fmt: skip
    assert len(sink.lines) == 3
    for line in sink.lines:
        assert SECRET.encode() not in line
        assert orjson.loads(line)["auditID"] in ("a", "deep", "b")


@pytest.mark.parametrize("depth", [300, 990, 1020])
def test_log_lines_nested_deep_are_counted_and_redacted(depth: int) -> None:
    line = deep_line("deep", depth)
    ev = Decoder().decode_line(line)
    assert ev.audit_id == "deep" and ev.has_body
    assert Redactor().redact(ev)
    out = ev.to_bytes()
    assert SECRET.encode() not in out
    assert orjson.loads(out)["auditID"] == "deep"


def test_replay_goes_past_deep_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [orjson.dumps(good_event("g0"))]
    for n, depth in enumerate([300, 990, 1020, 5000]):
        lines.append(deep_line(f"deep{n}", depth))
        lines.append(orjson.dumps(good_event(f"g{n + 1}")))
    path = tmp_path / "audit.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["replay", "--output", "json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    # 5 good events and 3 deep ones; 5000 levels is more than JSON parsers take
    assert report["events"] == 8
    assert report["invalid"] == {"too_deep": 1}
    assert report["sensitive_operations"]["counts"] == {"secrets": 3}


def test_dumps_event_writes_what_orjson_cannot_and_says_what_it_dropped() -> None:
    obj = deep_secret_event("x", 300)
    out = dumps_event(obj)  # beyond orjson's 255 levels: written by msgspec
    assert same_json(orjson.loads(out), obj)

    def from_deep_stack(n: int) -> bytes:
        # msgspec's limit counts the caller's stack: from here it cannot write 900 levels
        return dumps_event(deep_secret_event("y", 900)) if n == 0 else from_deep_stack(n - 1)

    written = orjson.loads(from_deep_stack(400))
    assert written["auditID"] == "y" and "requestObject" not in written
    assert written["annotations"][TRUNCATED_ANNOTATION] == (
        "dropped requestObject: nested too deep to write"
    )
