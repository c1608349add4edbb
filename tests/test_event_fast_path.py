"""The fast decoding path (msgspec, typed fields, bodies skipped) and the
general one (orjson, every check in Python).

Each hand-made case says which path must decide it and what it must decode
to (a refusal reason, or attribute values written here), so a case that the
fast path hands over is checked against expectations, not against the
general path itself. Where the fast path decides, it must also agree with
the general path; the corpus test checks that agreement on every real line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import exporter.event as event_module
from exporter.event import AuditEvent, Decoder, InvalidEvent
from tests.conftest import CORPORA

# the public attributes (the private ones hold what is parsed lazily)
ATTRIBUTES = [name for name in AuditEvent.__slots__ if not name.startswith("_")]


@pytest.fixture(autouse=True, params=["c", "python"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs against both fast paths: exporter._speedups (C,
    which the test environment builds: its import failing fails the test)
    and the Python one it mirrors."""
    if request.param == "c":
        from exporter import _speedups

        monkeypatch.setattr(event_module, "fast_event", _speedups.fast_event)
    else:
        monkeypatch.setattr(event_module, "fast_event", event_module._fast_event)
    return str(request.param)


def general_path(line: bytes, monkeypatch: pytest.MonkeyPatch) -> AuditEvent | str:
    with monkeypatch.context() as m:
        m.setattr(event_module, "fast_event", lambda _line: None)
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
    # the request body parsed alone (before the event is) is the event's
    assert same_json(fast.request_body, general.request_body), where
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

# 2024-05-01T10:00:00Z, the second good()'s timestamps fall in.
T0 = 1_714_557_600

# What good() decodes to, written out (not computed by either path).
EXPECTED: dict[str, Any] = {
    "audit_id": "f-1",
    "stage": "ResponseComplete",
    "verb": "get",
    "level": "RequestResponse",
    "request_uri": "/api/v1/namespaces/db/secrets/root",
    "user_agent": "kubectl/v1.30.0",
    "username": "alice",
    "user_kind": "human",
    "impersonated_user": "bob",
    "source_ip": "10.0.0.9",  # the last entry: the peer the API server saw
    "resource": "secrets",
    "subresource": "",
    "namespace": "db",
    "name": "root",
    "api_group": "",
    "code": 200,
    "annotations": {"authorization.k8s.io/decision": "allow"},
    "received_ts": T0 + 0.1,
    "stage_ts": T0 + 0.35,
    "stage_time": "2024-05-01T10:00:00.350000Z",
    "has_body": True,
    "rules": (),
    "severity": "",
}
assert set(EXPECTED) == set(ATTRIBUTES) - {"raw"}

FAST = "fast"
GENERAL = "general"


def case(path: str, value: Any, taken: str, expected: str | dict[str, Any]) -> Any:
    """One field variant of good(): the path that must decide it and what it
    must decode to, a refusal reason or the attributes that differ from
    EXPECTED."""
    shown = "DELETE" if value is DELETE else repr(value)
    return pytest.param(path, value, taken, expected, id=f"{path}={shown}")


VARIANTS = [
    # webhook EventList items carry no kind/apiVersion: the general path
    case("kind", DELETE, GENERAL, {}),
    case("level", DELETE, FAST, {"level": ""}),
    case("level", 5, GENERAL, {"level": ""}),
    case("kind", "EventList", GENERAL, "not_an_event"),
    case("kind", 0, GENERAL, "wrong_type"),
    case("apiVersion", DELETE, GENERAL, {}),
    case("apiVersion", "audit.k8s.io/v2", GENERAL, "unknown_api_version"),
    case("apiVersion", "audit.k8s.io/v1beta1", FAST, {}),
    case("auditID", DELETE, GENERAL, "missing_field"),
    case("auditID", 7, GENERAL, "wrong_type"),
    case("stage", "Done", GENERAL, "invalid_value"),
    case("verb", None, GENERAL, "missing_field"),
    # optional strings of the wrong type are read as empty, not refused
    case("requestURI", 5, GENERAL, {"request_uri": ""}),
    case("requestURI", None, GENERAL, {"request_uri": ""}),
    case("userAgent", ["x"], GENERAL, {"user_agent": ""}),
    case("user", None, FAST, {"username": "", "user_kind": "unauthenticated"}),
    case("user", "alice", GENERAL, "wrong_type"),
    case("user.username", 1, GENERAL, "wrong_type"),
    case("user.username", DELETE, FAST, {"username": "", "user_kind": "unauthenticated"}),
    case("impersonatedUser", None, FAST, {"impersonated_user": ""}),
    case("impersonatedUser.username", 3, GENERAL, {"impersonated_user": ""}),
    case("sourceIPs", [], FAST, {"source_ip": ""}),
    case("sourceIPs", None, FAST, {"source_ip": ""}),
    case("sourceIPs", "10.0.0.1", GENERAL, "wrong_type"),
    # the peer address (last) is not a string: no source address
    case("sourceIPs", ["10.0.0.1", 4], GENERAL, {"source_ip": ""}),
    case("objectRef", None, FAST, {"resource": "", "namespace": "", "name": ""}),
    case("objectRef.name", None, GENERAL, "wrong_type"),
    case("objectRef.resource", 1, GENERAL, "wrong_type"),
    case("objectRef.subresource", "exec", FAST, {"subresource": "exec"}),
    case("responseStatus", None, FAST, {"code": 0}),
    case("responseStatus", [], GENERAL, "wrong_type"),
    case("responseStatus.code", "200", GENERAL, "wrong_type"),
    case("responseStatus.code", 200.0, GENERAL, "wrong_type"),
    case("responseStatus.code", True, GENERAL, "wrong_type"),
    case("responseStatus.code", DELETE, FAST, {"code": 0}),
    case("annotations", None, FAST, {"annotations": {}}),
    # the fast path types annotations as strings; other values are kept as they are
    case("annotations", {"n": 1}, GENERAL, {"annotations": {"n": 1}}),
    case("annotations", "x", GENERAL, "wrong_type"),
    case("requestReceivedTimestamp", DELETE, GENERAL, "missing_field"),
    case("requestReceivedTimestamp", "yesterday", GENERAL, "invalid_value"),
    # the same instant written with an offset: the same stage_ts, the text kept
    case(
        "stageTimestamp",
        "2024-05-01T12:00:00.350000+02:00",
        FAST,
        {"stage_time": "2024-05-01T12:00:00.350000+02:00"},
    ),
    case(
        "stageTimestamp",
        "2024-05-01T10:00:00.100000Z",
        FAST,
        {"stage_time": "2024-05-01T10:00:00.100000Z", "stage_ts": T0 + 0.1},
    ),
    case("stageTimestamp", 17, GENERAL, "wrong_type"),
    # the API server's shape, but not six ASCII digits of microseconds
    case(
        "stageTimestamp",
        "2024-05-01T10:00:00.\u0663\u0665\u0660\u0660\u0660\u0660Z",
        GENERAL,
        "invalid_value",
    ),
    case("stageTimestamp", "2024-05-01T10:00:00.35_000Z", GENERAL, "invalid_value"),
    case("requestReceivedTimestamp", "2024-05-01T10:00:00.+10000Z", GENERAL, "invalid_value"),
    # before 1970: a negative epoch time
    case(
        "stageTimestamp",
        "1969-12-31T23:59:59.500000Z",
        FAST,
        {"stage_time": "1969-12-31T23:59:59.500000Z", "stage_ts": -0.5},
    ),
    # a null body is still a body key: redaction looks (and finds nothing)
    case("responseObject", None, FAST, {}),
    case("responseObject", DELETE, FAST, {"has_body": False}),
    case("requestObject", {"kind": "Secret", "stringData": {"k": "v"}}, FAST, {}),
]


def decode_watching_paths(
    line: bytes, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], AuditEvent | str]:
    """What Decoder().decode_line makes of ``line``, and the path that
    decided each line it decoded (a wrapper's inner line is a second one)."""
    taken: list[str] = []
    real = event_module.fast_event

    def watched(raw: bytes) -> AuditEvent | None:
        ev = real(raw)
        taken.append(GENERAL if ev is None else FAST)
        return ev

    with monkeypatch.context() as m:
        m.setattr(event_module, "fast_event", watched)
        return taken, outcome(line)


def assert_decoded(ev: AuditEvent | str, expected: dict[str, Any], raw: bytes, where: str) -> None:
    assert isinstance(ev, AuditEvent), f"{where}: refused ({ev})"
    for name, value in expected.items():
        got = getattr(ev, name)
        if name.endswith("_ts"):
            assert got == pytest.approx(value, abs=1e-6), f"{where}: {name}"
        else:
            assert got == value, f"{where}: {name}"
            assert type(got) is type(value), f"{where}: {name}"
    assert ev.raw == raw and ev.to_bytes() == raw, where
    # the whole object, as an independent parser (the standard library's) reads it
    assert same_json(ev.obj, json.loads(raw)), where


@pytest.mark.parametrize(("path", "value", "taken", "expected"), VARIANTS)
def test_each_field_variant_takes_the_expected_path_and_decodes_as_written(
    path: str,
    value: Any,
    taken: str,
    expected: str | dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = orjson.dumps(variant(path, value))
    paths, got = decode_watching_paths(raw, monkeypatch)
    assert paths == [taken], path
    if isinstance(expected, str):
        assert got == expected, path
        return
    # only the fast path leaves the body unparsed until asked
    assert isinstance(got, AuditEvent) and (got._obj is None) == (taken == FAST)
    assert_decoded(got, EXPECTED | expected, raw, path)
    if taken == FAST:
        # and it reads what the general path reads
        assert_same(got, general_path(raw, monkeypatch), path)


GOOD = orjson.dumps(good())
# A line wrapped by AKS diagnostic settings: the event is a string inside.
AKS = orjson.dumps({"properties": {"log": GOOD.decode()}})
ESCAPED_KEY = (
    b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"x","stage":"Panic",'
    b'"verb":"get","requestReceivedTimestamp":"2024-05-01T10:00:00Z",'
    b'"stageTimestamp":"2024-05-01T10:00:00Z","requestObject":{"a":[1,2,{"b":null}]},'
    b'"\\u0072esponseObject":{"kind":"Secret","data":{"k":"djE="}}}'
)
NO_EVENT: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("raw", "taken", "expected", "line", "password"),
    [
        pytest.param(
            b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"x"',
            [GENERAL],
            "invalid_json",
            b"",
            None,
            id="truncated",
        ),
        pytest.param(b"not json", [GENERAL], "invalid_json", b"", None, id="garbage"),
        # an ASCII line whose microseconds are other digits, written as
        # escapes: refused whether or not their second was seen before
        # (the received time, parsed first, has just made sure it was)
        pytest.param(
            GOOD.replace(
                b'"stageTimestamp":"2024-05-01T10:00:00.350000Z"',
                b'"stageTimestamp":"2024-05-01T10:00:00.\\u0663\\u0665\\u0660\\u0660\\u0660\\u0660Z"',
            ),
            [GENERAL],
            "invalid_value",
            b"",
            None,
            id="escaped-digits",
        ),
        pytest.param(b"[1, 2]", [GENERAL], "wrong_type", b"", None, id="array"),
        pytest.param(
            ESCAPED_KEY,
            [FAST],
            {
                "audit_id": "x",
                "stage": "Panic",
                "verb": "get",
                "level": "",
                "request_uri": "",
                "user_agent": "",
                "username": "",
                "user_kind": "unauthenticated",
                "impersonated_user": "",
                "source_ip": "",
                "resource": "",
                "namespace": "",
                "name": "",
                "code": 0,
                "annotations": {},
                "received_ts": T0,
                "stage_ts": T0,
                "stage_time": "2024-05-01T10:00:00Z",
                "has_body": True,
            },
            ESCAPED_KEY,
            "djE=",
            id="escaped-key",
        ),
        # the wrapper goes the general way, the line inside it the fast one
        pytest.param(AKS, [GENERAL, FAST], NO_EVENT, GOOD, "aHVudGVyMg==", id="aks-wrapper"),
        # valid JSON that orjson alone refuses: read as infinity
        pytest.param(
            GOOD.replace(b'"aHVudGVyMg=="', b"1e400"),
            [FAST],
            NO_EVENT,
            GOOD.replace(b'"aHVudGVyMg=="', b"1e400"),
            float("inf"),
            id="number-beyond-float",
        ),
        # invalid UTF-8 inside a body the fast path skips: refused
        pytest.param(
            GOOD.replace(b"aHVudGVyMg==", b"\xff\xfe"),
            [GENERAL],
            "invalid_json",
            b"",
            None,
            id="bad-utf8",
        ),
        pytest.param(
            GOOD.replace(b"aHVudGVyMg==", b"caf\xc3\xa9"),
            [FAST],
            NO_EVENT,
            GOOD.replace(b"aHVudGVyMg==", b"caf\xc3\xa9"),
            "caf\u00e9",
            id="good-utf8",
        ),
    ],
)
def test_malformed_and_unusual_lines_take_the_expected_path(
    raw: bytes,
    taken: list[str],
    expected: str | dict[str, Any],
    line: bytes,
    password: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paths, got = decode_watching_paths(raw, monkeypatch)
    assert paths == taken
    if isinstance(expected, str):
        assert got == expected
        return
    assert_decoded(got, EXPECTED | expected, line, repr(raw[:40]))
    assert isinstance(got, AuditEvent)
    assert got.obj["responseObject"]["data"] == {
        "password" if line != ESCAPED_KEY else "k": password
    }


def test_fast_path_parses_the_body_only_when_asked() -> None:
    raw = orjson.dumps(good())
    ev = Decoder().decode_line(raw + b"\n")
    assert ev._obj is None and ev.has_body and ev.raw == raw
    assert ev.obj["responseObject"]["data"] == {"password": "aHVudGVyMg=="}
    assert ev._obj is not None


def test_the_request_body_is_parsed_alone_until_the_event_is() -> None:
    """request_body parses the fast path's bytes of requestObject alone; once
    the event is parsed (redaction parses it when it may change something)
    it is the event's own requestObject, redacted values included."""
    from exporter.redact import Redactor

    pod = {"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "nginx"}]}}
    body = dict(good(), verb="create", requestObject=pod, responseObject={"kind": "Pod"})
    ev = Decoder().decode_line(orjson.dumps(body))
    assert ev.request_body == pod
    assert ev._obj is None  # the rest of the event (responseObject) is not parsed
    assert ev.request_body is ev.request_body  # parsed once
    # the detector releases it after an event that matched nothing: asked
    # again, it is parsed again, equal
    ev.release_request_body()
    assert ev.request_body == pod and ev._obj is None
    none = Decoder().decode_line(orjson.dumps(dict(good(), requestObject=None)))
    assert none.request_body is None and none._obj is None
    secret = {"kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}}
    ev = Decoder().decode_line(orjson.dumps(dict(good(), verb="create", requestObject=secret)))
    Redactor()([ev])
    assert ev._obj is not None
    assert ev.request_body is ev.obj["requestObject"]
    assert ev.request_body["data"]["password"] != "aHVudGVyMg=="


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


@pytest.mark.parametrize(
    ("depth", "taken", "accepted"),
    [
        (10, FAST, True),
        (900, FAST, True),
        # msgspec (the fast path) reads up to 1000 levels, the event's own and
        # (in effect) some of the caller's stack included, so near the limit
        # either path may decide; orjson (the general path) reads 1024:
        # deeper still is refused, not a crash
        (990, None, True),
        (1000, GENERAL, True),
        (1023, GENERAL, False),
        (1024, GENERAL, False),
        (5000, GENERAL, False),
    ],
)
def test_deep_bodies_never_raise_and_take_the_expected_path(
    depth: int, taken: str | None, accepted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = nested(depth)
    paths, got = decode_watching_paths(raw, monkeypatch)
    if taken is not None:
        assert paths == [taken]
    if not accepted:
        assert got == "too_deep"
        return
    assert isinstance(got, AuditEvent)
    if paths == [FAST]:
        assert_same(got, general_path(raw, monkeypatch), f"depth {depth}")
    fresh = Decoder().decode_line(raw)

    def deep(n: int) -> Any:
        # read the whole event from far down the stack, as a rule might
        return fresh.obj if n == 0 else deep(n - 1)

    body = deep(400)["responseObject"]["data"]["password"]
    for _ in range(depth - 1):
        assert body and type(body) is list
        body = body[0]
    assert body == []


def test_number_beyond_float_range_is_read_as_infinity_everywhere() -> None:
    raw = orjson.dumps(good()).replace(b'"aHVudGVyMg=="', b"-1e400")
    ev = Decoder().decode_line(raw)
    assert ev.obj["responseObject"]["data"]["password"] == float("-inf")
    body = b'{"kind":"EventList","items":[' + raw + b"]}"
    (item,) = Decoder().decode_document(body)
    assert isinstance(item, AuditEvent) and item.audit_id == "f-1"
