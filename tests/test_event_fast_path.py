"""The fast decoding path (msgspec, typed fields, bodies skipped) and the
general one (orjson, every check in Python) must agree on every input: the
same attributes for an event, the same reason for a refusal."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import exporter.event as event_module
from exporter.event import AuditEvent, Decoder, InvalidEvent
from tests.conftest import CORPORA

ATTRIBUTES = [name for name in AuditEvent.__slots__ if name != "_obj"]


def general_path(line: bytes, monkeypatch: pytest.MonkeyPatch) -> AuditEvent | str:
    with monkeypatch.context() as m:
        m.setattr(event_module, "_fast_event", lambda _line: None)
        return outcome(line)


def outcome(line: bytes) -> AuditEvent | str:
    try:
        return Decoder().decode_line(line)
    except InvalidEvent as e:
        return e.reason


def assert_same(fast: AuditEvent | str, general: AuditEvent | str, where: str) -> None:
    if isinstance(general, str) or isinstance(fast, str):
        assert fast == general, where
        return
    for name in ATTRIBUTES:
        assert getattr(fast, name) == getattr(general, name), f"{where}: {name}"
    assert same_json(fast.obj, general.obj), where
    assert fast.to_bytes() == general.to_bytes(), where


def same_json(a: Any, b: Any) -> bool:
    """a == b for decoded JSON, without recursion (bodies may nest deeply)."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if type(x) is dict:
            if x.keys() != y.keys():
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif type(x) is list:
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


def corpus_lines() -> Iterator[tuple[str, bytes]]:
    for path in sorted(CORPORA.rglob("*")):
        if not path.is_file() or path.suffix == ".md":
            continue
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        for n, raw in enumerate(data.split(b"\n"), 1):
            if raw.strip():
                yield f"{path.relative_to(CORPORA)}:{n}", raw


def test_fast_path_agrees_with_general_path_on_every_corpus_line(
    corpora: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = fast_events = 0
    for where, raw in corpus_lines():
        fast = outcome(raw)
        if isinstance(fast, AuditEvent):
            events += 1
            fast_events += fast._obj is None
        assert_same(fast, general_path(raw, monkeypatch), where)
    # The fast path must carry the real logs, not fall back every time: only
    # v1beta1 lines and items without kind/apiVersion are left to the other.
    assert events > 10_000
    assert fast_events > 0.9 * events


def good() -> dict[str, Any]:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": "f-1",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/db/secrets/root",
        "verb": "get",
        "user": {"username": "alice", "groups": ["dev"]},
        "impersonatedUser": {"username": "bob"},
        "sourceIPs": ["198.51.100.7", "10.0.0.9"],
        "userAgent": "kubectl/v1.30.0",
        "objectRef": {
            "resource": "secrets",
            "namespace": "db",
            "name": "root",
            "apiGroup": "",
            "apiVersion": "v1",
        },
        "responseStatus": {"metadata": {}, "code": 200},
        "responseObject": {"kind": "Secret", "data": {"password": "aHVudGVyMg=="}},
        "requestReceivedTimestamp": "2024-05-01T10:00:00.100000Z",
        "stageTimestamp": "2024-05-01T10:00:00.350000Z",
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }


def variant(path: str, value: Any) -> dict[str, Any]:
    obj = good()
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


DELETE = object()

VARIANTS = [
    ("kind", DELETE),
    ("level", DELETE),
    ("level", 5),
    ("kind", "EventList"),
    ("kind", 0),
    ("apiVersion", DELETE),
    ("apiVersion", "audit.k8s.io/v2"),
    ("apiVersion", "audit.k8s.io/v1beta1"),
    ("auditID", DELETE),
    ("auditID", 7),
    ("stage", "Done"),
    ("verb", None),
    ("requestURI", 5),
    ("requestURI", None),
    ("userAgent", ["x"]),
    ("user", None),
    ("user", "alice"),
    ("user.username", 1),
    ("user.username", DELETE),
    ("impersonatedUser", None),
    ("impersonatedUser.username", 3),
    ("sourceIPs", []),
    ("sourceIPs", None),
    ("sourceIPs", "10.0.0.1"),
    ("sourceIPs", ["10.0.0.1", 4]),
    ("objectRef", None),
    ("objectRef.name", None),
    ("objectRef.resource", 1),
    ("objectRef.subresource", "exec"),
    ("responseStatus", None),
    ("responseStatus", []),
    ("responseStatus.code", "200"),
    ("responseStatus.code", 200.0),
    ("responseStatus.code", True),
    ("responseStatus.code", DELETE),
    ("annotations", None),
    ("annotations", {"n": 1}),
    ("annotations", "x"),
    ("requestReceivedTimestamp", DELETE),
    ("requestReceivedTimestamp", "yesterday"),
    ("stageTimestamp", "2024-05-01T12:00:00.350000+02:00"),
    ("stageTimestamp", "2024-05-01T10:00:00.100000Z"),
    ("stageTimestamp", 17),
    ("responseObject", None),
    ("responseObject", DELETE),
    ("requestObject", {"kind": "Secret", "stringData": {"k": "v"}}),
]


@pytest.mark.parametrize(("path", "value"), VARIANTS, ids=[f"{p}={v!r}" for p, v in VARIANTS])
def test_fast_path_agrees_on_each_field_variant(
    path: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = orjson.dumps(variant(path, value))
    assert_same(outcome(raw), general_path(raw, monkeypatch), path)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"x"',
        b"not json",
        b"[1, 2]",
        b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"x","stage":"Panic",'
        b'"verb":"get","requestReceivedTimestamp":"2024-05-01T10:00:00Z",'
        b'"stageTimestamp":"2024-05-01T10:00:00Z","requestObject":{"a":[1,2,{"b":null}]},'
        b'"\\u0072esponseObject":{"kind":"Secret","data":{"k":"djE="}}}',
        orjson.dumps({"properties": {"log": orjson.dumps(good()).decode()}}),
        # valid JSON that orjson alone refuses: read as infinity by both paths
        orjson.dumps(good()).replace(b'"aHVudGVyMg=="', b"1e400"),
        # invalid UTF-8 inside a body the fast path skips: refused by both
        orjson.dumps(good()).replace(b"aHVudGVyMg==", b"\xff\xfe"),
        orjson.dumps(good()).replace(b"aHVudGVyMg==", b"caf\xc3\xa9"),
    ],
    ids=[
        "truncated",
        "garbage",
        "array",
        "escaped-key",
        "aks-wrapper",
        "number-beyond-float",
        "bad-utf8",
        "good-utf8",
    ],
)
def test_fast_path_agrees_on_malformed_and_unusual_lines(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_same(outcome(raw), general_path(raw, monkeypatch), repr(raw[:40]))


def test_fast_path_parses_the_body_only_when_asked() -> None:
    raw = orjson.dumps(good())
    ev = Decoder().decode_line(raw + b"\n")
    assert ev._obj is None and ev.has_body and ev.raw == raw
    assert ev.obj["responseObject"]["data"] == {"password": "aHVudGVyMg=="}
    assert ev._obj is not None


def test_a_body_spelled_with_an_escaped_key_is_still_seen() -> None:
    # "\u0072equestObject" is "requestObject": a byte search would miss it,
    # and redaction relies on has_body to decide whether to look inside.
    raw = orjson.dumps(variant("responseObject", DELETE)).replace(
        b'"responseStatus"', b'"\\u0072equestObject":{"kind":"Secret"},"responseStatus"'
    )
    ev = Decoder().decode_line(raw)
    assert ev.has_body
    assert ev.obj["requestObject"] == {"kind": "Secret"}


def test_loki_records_do_not_parse_the_whole_event() -> None:
    """The log tailer feeds Loki from the fast path: the record (labels incl.
    audit_level, nanosecond timestamp, line) comes from the typed fields and
    the original bytes, and equals the one built from a fully parsed event."""
    from exporter.loki.entry import EntryBuilder
    from exporter.loki.settings import LokiSettings

    obj = variant("responseObject", DELETE)
    obj["stageTimestamp"] = "2024-05-01T10:00:00.350000123Z"
    raw = orjson.dumps(obj)
    builder = EntryBuilder(LokiSettings(cluster="c", labels=("audit_level", "stage")))
    fast = Decoder().decode_line(raw)
    record = builder.record(fast)
    assert fast._obj is None
    assert record == builder.record(AuditEvent(orjson.loads(raw), raw))
    assert builder.build(fast).ts_ns % 1_000_000_000 == 350_000_123


def nested(depth: int) -> bytes:
    return orjson.dumps(good()).replace(b'"aHVudGVyMg=="', b"[" * depth + b"]" * depth)


@pytest.mark.parametrize("depth", [10, 900, 990, 1000, 1023, 1024, 5000])
def test_deep_bodies_never_raise_and_both_paths_agree(
    depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = nested(depth)
    fast = outcome(raw)
    assert_same(fast, general_path(raw, monkeypatch), f"depth {depth}")
    if isinstance(fast, AuditEvent):
        fresh = Decoder().decode_line(raw)

        def deep(n: int) -> Any:
            # read the whole event from far down the stack, as a rule might
            return fresh.obj if n == 0 else deep(n - 1)

        body = deep(400)["responseObject"]["data"]["password"]
        for _ in range(depth - 1):
            assert body and type(body) is list
            body = body[0]
        assert body == []
    else:
        assert fast == "too_deep"


def test_number_beyond_float_range_is_read_as_infinity_everywhere() -> None:
    raw = orjson.dumps(good()).replace(b'"aHVudGVyMg=="', b"-1e400")
    ev = Decoder().decode_line(raw)
    assert ev.obj["responseObject"]["data"]["password"] == float("-inf")
    body = b'{"kind":"EventList","items":[' + raw + b"]}"
    (item,) = Decoder().decode_document(body)
    assert isinstance(item, AuditEvent) and item.audit_id == "f-1"
