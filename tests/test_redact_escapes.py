"""Redaction's byte test (exporter.redact._no_secret_kind) and JSON escapes:
a kind spelled with ASCII escapes is still found; an event whose only
escapes stand for other characters keeps its bytes and its body unparsed."""

from __future__ import annotations

from exporter.event import AuditEvent, Decoder
from exporter.redact import REDACTED, Redactor

HEAD = (
    b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse",'
    b'"auditID":"id-1","stage":"ResponseComplete","verb":"create",'
    b'"objectRef":{"resource":"configmaps","namespace":"ns","name":"x"},'
    b'"requestReceivedTimestamp":"2024-01-01T00:00:00.000001Z",'
    b'"stageTimestamp":"2024-01-01T00:00:00.000002Z",'
)


def decode(body: bytes) -> AuditEvent:
    return Decoder().decode_line(HEAD + b'"requestObject":' + body + b"}")


def test_a_kind_spelled_with_ascii_escapes_is_redacted() -> None:
    # "Secret" as \u0053ecret, "kind" as \u006bind, "TokenReview" as Token\u0052eview
    for body in (
        b'{"kind":"\\u0053ecret","data":{"k":"c2VjcmV0"}}',
        b'{"\\u006bind":"Secret","data":{"k":"c2VjcmV0"}}',
        b'{"items":[{"kind":"Secr\\u0065t","stringData":{"k":"secret"}}]}',
    ):
        ev = decode(body)
        assert Redactor().redact(ev), body
        assert b"c2VjcmV0" not in ev.to_bytes() and b'"secret"' not in ev.to_bytes()
    ev = decode(b'{"kind":"Token\\u0052eview","spec":{"token":"eyJhbGciOi"}}')
    assert Redactor().redact(ev)
    assert ev.obj["requestObject"]["spec"]["token"] == REDACTED


def test_escapes_of_other_characters_leave_the_event_alone() -> None:
    # \u2028 (line separator) and a surrogate pair: no kind name can hold them
    line = HEAD + b'"requestObject":{"kind":"ConfigMap","data":{"k":"a\\u2028b \\ud83d\\ude00"}}}'
    ev = Decoder().decode_line(line)
    assert not Redactor().redact(ev)
    assert ev.raw == line
    assert ev._obj is None  # the body was never parsed
    # an ASCII escape in the same place makes redaction look, and find nothing
    line = HEAD + b'"requestObject":{"kind":"ConfigMap","data":{"k":"\\u003cb\\u003e"}}}'
    ev = Decoder().decode_line(line)
    assert not Redactor().redact(ev)
    assert ev.raw == line
    assert ev._obj is not None


def test_a_kind_after_near_misses_is_still_found() -> None:
    """The byte test looks for each name from its first byte on: a name that
    comes after partial copies of the names (and of an escape) is found."""
    misses = b'"SSecreSecrTTokenTokenR\\\\u0\\\\u\\\\"'
    ev = decode(b'{"metadata":{"name":' + misses + b'},"kind":"Secret","data":{"k":"c2VjcmV0"}}')
    assert Redactor().redact(ev)
    assert b"c2VjcmV0" not in ev.to_bytes()
    ev = decode(
        b'{"metadata":{"name":' + misses + b'},"kind":"TokenRequest","status":{"token":"eyJh"}}'
    )
    assert Redactor().redact(ev)
    assert ev.obj["requestObject"]["status"]["token"] == REDACTED
    ev = decode(
        b'{"metadata":{"name":' + misses + b'},"kind":"Secr\\u0065t","data":{"k":"c2VjcmV0"}}'
    )
    assert Redactor().redact(ev)
    assert b"c2VjcmV0" not in ev.to_bytes()
    # only the near misses: nothing to look at, the body stays unparsed
    ev = decode(b'{"metadata":{"name":' + misses + b'},"kind":"ConfigMap"}')
    assert not Redactor().redact(ev)
    assert ev._obj is None
