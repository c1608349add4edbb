"""exporter._speedups, the decoder's fast path in C, against the Python
fast path it mirrors (exporter.event._fast_event): the same event, slot by
slot and type by type, or None from both, on every real line, on the
simulator's output and on generated events built to hit each branch (odd
timestamps, missing and null fields, non-ASCII text, invalid UTF-8). Also
that it holds no reference it should not, and that it can be turned off.

The test environment builds the extension (`make test` installs the
package, which compiles it): these tests fail, rather than skip, when it
is missing, because then the decoder runs slower than documented.
tests/test_event_fast_path.py runs its hand-written cases against both."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
from array import array
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporter.event as event_module
from exporter import _speedups, accel
from exporter.event import PURE_PYTHON_ENV, AuditEvent
from exporter.simulate import Options, simulate_lines
from tests.test_event_fast_path import corpus_lines

C = _speedups.fast_event
PY = event_module._fast_event


def same(line: bytes, ascii: bool | None = None) -> AuditEvent | None:
    """Both paths' events of ``line``, asserted equal; the C one."""
    c = C(line, ascii)
    py = PY(line, ascii)
    if c is None or py is None:
        assert c is None and py is None, (line[:300], c, py)
        return None
    for name in AuditEvent.__slots__:
        a, b = getattr(c, name), getattr(py, name)
        assert type(a) is type(b), (name, a, b, line[:300])
        if name == "_request_raw":
            assert bytes(a) == bytes(b), line[:300]
        elif name == "_request":
            assert a is b is event_module._UNPARSED
        else:
            # floats bit for bit: the same arithmetic, not merely close
            assert a == b, (name, a, b, line[:300])
    return c


def test_the_extension_is_what_the_decoder_uses() -> None:
    assert event_module.SPEEDUPS is (os.environ.get(PURE_PYTHON_ENV, "") in ("", "0"))
    if event_module.SPEEDUPS:
        assert event_module.fast_event is C


def test_every_corpus_line_decodes_the_same(corpora: Any) -> None:
    events = 0
    for where, raw in corpus_lines():
        line = raw.rstrip(b"\r")
        ev = same(line)
        if line.isascii():
            same(line, True)
        same(line, False)
        if ev is not None:
            events += 1
            assert ev.obj == orjson.loads(line), where
    # the fast path carries the real logs (the other lines are documents,
    # v1beta1 and items without kind/apiVersion: the general path's)
    assert events > 15_000


def test_the_simulators_output_decodes_the_same() -> None:
    events = 0
    for line in simulate_lines(Options(events=5_000, seed=3)):
        events += same(line.rstrip(b"\n")) is not None
    assert events > 4_000


BASE: dict[str, Any] = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "Metadata",
    "auditID": "a-1",
    "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/db/secrets",
    "verb": "list",
    "userAgent": "kubectl/v1.30.0",
    "user": {"username": "alice"},
    "sourceIPs": ["10.0.0.1"],
    "objectRef": {"resource": "secrets", "namespace": "db"},
    "responseStatus": {"code": 200},
    "requestReceivedTimestamp": "2024-05-01T10:00:00.100000Z",
    "stageTimestamp": "2024-05-01T10:00:00.200000Z",
}

digits = st.text("0123456789", min_size=1, max_size=2)
# times near and beyond the edges of the calendar, and not quite the
# API server's form
timestamps = st.one_of(
    st.datetimes(timezones=st.none()).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    st.builds(
        "{:04d}-{}-{}T{}:{}:{}.{}Z".format,
        st.integers(0, 9999),
        digits.map(lambda d: d.zfill(2)),
        digits.map(lambda d: d.zfill(2)),
        digits.map(lambda d: d.zfill(2)),
        digits.map(lambda d: d.zfill(2)),
        digits.map(lambda d: d.zfill(2)),
        st.text("0123456789", min_size=6, max_size=6),
    ),
    st.sampled_from(
        [
            "2024-02-29T23:59:59.999999Z",
            "2023-02-29T00:00:00.000000Z",
            "2024-04-31T00:00:00.000000Z",
            "2024-05-01T24:00:00.000000Z",
            "2024-05-01T10:60:00.000000Z",
            "2024-05-01T10:00:60.000000Z",
            "0000-01-01T00:00:00.000000Z",
            "0001-01-01T00:00:00.000000Z",
            "9999-12-31T23:59:59.999999Z",
            "1969-12-31T23:59:59.999999Z",
            "2024-05-01t10:00:00.100000Z",
            "2024-05-01 10:00:00.100000Z",
            "2024-05-01T10:00:00.100000z",
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00.1Z",
            "2024-05-01T10:00:00.1000000Z",
            "2024-05-01T10:00:00.100000+02:00",
            "2024-05-01T10:00:00.\u0661\u0660\u0660\u0660\u0660\u0660Z",
            "\u0662024-05-01T10:00:00.100000Z",
            "2024-05-01T10:00:00.+10000Z",
            "",
            "yesterday",
        ]
    ),
)
texts = st.text(max_size=12)
names = st.one_of(st.none(), texts, st.sampled_from(["system:anonymous", "system:node:n1"]))


@st.composite
def events(draw: st.DrawFn) -> bytes:
    obj = dict(BASE)
    obj["requestReceivedTimestamp"] = draw(timestamps)
    obj["stageTimestamp"] = draw(st.one_of(timestamps, st.just(obj["requestReceivedTimestamp"])))
    user = draw(names)
    obj["user"] = None if user is None else {"username": user}
    if draw(st.booleans()):
        imp = draw(names)
        obj["impersonatedUser"] = None if imp is None else {"username": imp}
    obj["sourceIPs"] = draw(st.one_of(st.none(), st.lists(texts, max_size=3)))
    ref = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(
        ["resource", "subresource", "namespace", "name", "apiGroup"]), texts)))  # fmt: skip
    obj["objectRef"] = ref
    obj["responseStatus"] = draw(
        st.one_of(st.none(), st.just({}), st.builds(dict, code=st.integers(-(2**70), 2**70)))
    )
    obj["annotations"] = draw(st.one_of(st.none(), st.dictionaries(texts, texts, max_size=3)))
    for body in ("requestObject", "responseObject"):
        if draw(st.booleans()):
            obj[body] = draw(st.one_of(st.none(), st.just({}), st.just({"k": "v\u00e9"})))
    for key in ("kind", "apiVersion", "level", "userAgent", "requestURI"):
        if draw(st.integers(0, 4)) == 0:
            del obj[key]
    # big integers and non-ASCII text as they are, or escaped
    line = json.dumps(obj, ensure_ascii=draw(st.booleans()), separators=(",", ":")).encode()
    if draw(st.integers(0, 9)) == 0:
        # invalid UTF-8 where the typed decode does not look
        line = line.replace(b'"verb"', b'"x":"\xff\xfe","verb"', 1)
    return line


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_generated_events_decode_the_same(line: bytes) -> None:
    same(line)
    same(line, False)
    if line.isascii():
        same(line, True)


def test_timestamps_are_bit_for_bit_those_of_parse_time() -> None:
    """Every second of a leap day, and microseconds whose products round
    differently: the C arithmetic is Python's, no fused multiply-add."""
    for micros in (0, 1, 3, 7, 100_000, 333_333, 500_001, 999_999):
        for stamp in (
            f"2024-02-29T{h:02d}:{m:02d}:{s:02d}.{micros:06d}Z"
            for h in range(24)
            for m in (0, 59)
            for s in (0, 1, 59)
        ):
            line = orjson.dumps(dict(BASE, requestReceivedTimestamp=stamp))
            ev = same(line)
            assert ev is not None
            assert ev.received_ts == event_module.parse_time(stamp)


def test_no_reference_is_kept_or_lost() -> None:
    """Building and dropping events leaves every object it touched with
    the references it had: nothing leaks, nothing is freed twice."""
    line = orjson.dumps(
        dict(BASE, annotations={"a": "b"}, requestObject={"k": 1}, user={"username": "zed"})
    )
    C(line)  # the user's kind is remembered once, on the first event
    # (not "" or (): everything shares those)
    shared = [line, event_module._UNPARSED, event_module.AuditEvent]
    gc.collect()  # events of earlier tests in cycles go now, not during the count
    before = [sys.getrefcount(o) for o in shared]
    lines = sys.getrefcount(line)
    kept = [C(line) for _ in range(1000)]
    assert all(ev is not None for ev in kept)
    # each event's raw, and its request body's bytes (a view of the line)
    assert sys.getrefcount(line) == lines + 2000
    del kept
    gc.collect()
    assert [sys.getrefcount(o) for o in shared] == before
    tracemalloc.start()
    try:
        for _ in range(2000):
            C(line)
        gc.collect()
        first, _ = tracemalloc.get_traced_memory()
        for _ in range(20_000):
            C(line)
        gc.collect()
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert second - first < 20_000  # not a byte an event


def test_the_batch_helpers_keep_and_lose_no_reference() -> None:
    """key_hashes, scan_hits and the range splitters, on their good paths
    and their error paths: every object they touch keeps its references."""
    events = [C(orjson.dumps(dict(BASE, auditID=f"id-{i}"))) for i in range(50)]
    key, position = ("some", "key"), 3

    def test(ev: object) -> bool:
        return bool(ev is events[2])

    def boom(ev: object) -> bool:
        raise ValueError("x")

    pairs = ((test, position), (boom, position))
    index = {key: pairs}
    data = b"a\nbb\r\nccc\n" * 10
    watched = [*events[:3], key, position, test, boom, pairs, data]
    for _ in range(2):  # the first round may cache (interned names, hashes)
        before = [sys.getrefcount(o) for o in watched]
        for _ in range(200):
            _speedups.key_hashes(events)
            found = _speedups.scan_hits(events, [key] * len(events), index, lambda k: pairs)
            assert found[2] == (2, (3, ~3)) and len(found) == 50
            del found
            with pytest.raises(TypeError):
                _speedups.scan_hits(events, [key] * 50, {key: ((test,),)}, lambda k: pairs)
            with pytest.raises(ZeroDivisionError):
                _speedups.scan_hits(events, [object()] * 50, index, lambda k: 1 / 0)
            _speedups.split_newlines(data, 3, 20)
            _speedups.ascii_cr(data, 3, 20)
        gc.collect()
    assert [sys.getrefcount(o) for o in watched] == before


def test_bad_arguments_are_refused_not_crashed() -> None:
    with pytest.raises(TypeError):
        C("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        C(memoryview(orjson.dumps(BASE)))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        C()  # type: ignore[call-arg]
    # a class whose slots are not AuditEvent's is refused by setup
    with pytest.raises(TypeError, match="slots"):
        _speedups.setup(
            type("Other", (), {"__slots__": ("a",)}), *([object] * 9), {}, object
        )  # fmt: skip
    assert C(b"") is None and C(b"{") is None and C(b"[]") is None
    assert C(orjson.dumps(BASE)) is not None  # still set up as before
    # setting up again is checked, and keeps the first set-up without
    # taking references it would never give back
    again = (
        event_module.AuditEvent, event_module._Fast, event_module._User, event_module._Ref,
        event_module._Status, event_module._decode_fast, (msgspec.DecodeError, RecursionError),
        event_module._api_time, event_module.InvalidEvent, event_module._user_kind,
        event_module._USER_KINDS, event_module._UNPARSED,
    )  # fmt: skip
    held = [sys.getrefcount(o) for o in again]
    _speedups.setup(*again)
    assert [sys.getrefcount(o) for o in again] == held


def test_a_failing_helper_raises_through() -> None:
    """An error that is not a refusal (here, one raised by the user-kind
    helper) comes out of the call, not swallowed into a None."""
    line = orjson.dumps(dict(BASE, user={"username": "never-seen-before-\u00e9"}))
    real = event_module.classify_user

    def broken(username: str) -> str:
        raise MemoryError("test")

    event_module.classify_user = broken  # type: ignore[assignment]
    try:
        with pytest.raises(MemoryError):
            C(line)
    finally:
        event_module.classify_user = real
    assert C(line) is not None


def test_it_can_be_turned_off() -> None:
    code = "import exporter.event as e; print(e.SPEEDUPS, e.fast_event.__module__)"
    env = dict(os.environ, **{PURE_PYTHON_ENV: "1"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "exporter.event"], out.stderr
    env[PURE_PYTHON_ENV] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split()[0] == "True", out.stderr


def test_msgspec_refusals_are_answered_none() -> None:
    # a field of the wrong type (ValidationError) and bad JSON (DecodeError)
    assert C(orjson.dumps(dict(BASE, verb=1))) is None
    assert C(b'{"kind": "Event",') is None
    assert issubclass(msgspec.ValidationError, msgspec.DecodeError)


def lines_both_ways(
    lines: list[bytes], ascii: bool | None, cr: bool, within: bool, limit: int, room: int
) -> tuple[int, list[AuditEvent]]:
    """fast_lines in C and in Python from every start: the same stop, the
    same events; the C one's."""
    for start in range(len(lines) + 1):
        c_out: list[AuditEvent] = []
        py_out: list[AuditEvent] = []
        c_stop = _speedups.fast_lines(lines, start, ascii, cr, within, limit, c_out, room)
        py_stop = event_module._fast_lines(lines, start, ascii, cr, within, limit, py_out, room)
        assert c_stop == py_stop, (start, lines)
        assert len(c_out) == len(py_out) == c_stop - start
        for c, py in zip(c_out, py_out, strict=True):
            assert c.raw == py.raw and c.received_ts == py.received_ts
    out: list[AuditEvent] = []
    return _speedups.fast_lines(lines, 0, ascii, cr, within, limit, out, room), out


def test_fast_lines_stop_where_the_python_loop_stops() -> None:
    good = orjson.dumps(BASE)
    other = orjson.dumps(dict(BASE, auditID="a-2"))
    v1beta1 = orjson.dumps({k: v for k, v in BASE.items() if k != "kind"})
    cases: list[list[bytes]] = [
        [],
        [good, other],
        [good, b"", other],
        [good, b"  ", other],
        [good, b"[1]", other],
        [good, v1beta1, other],  # the general decoder's
        [good + b"\r", other + b"\r\r", good],  # carriage returns left out
        [good, b"{" + b" " * 5000 + b"}", other],  # over the limit below
        [good, b"not json", other, other],
    ]
    for lines in cases:
        for cr in (False, True):
            for within, limit in ((True, 1 << 20), (False, 4096)):
                for room in (1, 2, 100):
                    lines_both_ways(lines, None, cr, within, limit, room)
                    if all(line.isascii() for line in lines):
                        lines_both_ways(lines, True, cr, within, limit, room)
    stop, out = lines_both_ways([good, other, b"", good], None, False, True, 1 << 20, 100)
    assert stop == 2 and [ev.audit_id for ev in out] == ["a-1", "a-2"]
    # a carriage return is only left out when the block says it may be there
    stop, out = lines_both_ways([good + b"\r"], None, True, True, 1 << 20, 100)
    assert stop == 1 and out[0].raw == good
    stop, out = lines_both_ways([good, b"{" + b" " * 5000 + b"}"], None, False, False, 4096, 100)
    assert stop == 1
    # room: the batch is full after two
    stop, out = lines_both_ways([good, other, good], True, False, True, 1 << 20, 2)
    assert stop == 2 and len(out) == 2


def test_fast_lines_refuse_what_is_not_a_list_of_bytes() -> None:
    out: list[AuditEvent] = []
    with pytest.raises(TypeError):
        _speedups.fast_lines((b"{}",), 0, None, False, True, 10, out, 1)  # type: ignore[arg-type]
    # an item that is not bytes: the caller's Python decides it
    assert _speedups.fast_lines(["{}"], 0, None, False, True, 10, out, 1) == 0  # type: ignore[list-item]
    assert out == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"\n", b"\r", b"{}", b"\xff", b""]), max_size=40),
    st.integers(0, 45),
    st.integers(0, 45),
)
def test_split_newlines_is_bytes_split(parts: list[bytes], start: int, end: int) -> None:
    data = b"".join(parts)
    assert _speedups.split_newlines(data) == data.split(b"\n")
    # a range of it, as a slice takes it (clamped), without the copy
    want = data[start:end].split(b"\n")
    assert _speedups.split_newlines(data, start, end) == want
    assert accel.py_split_newlines(data, start, end) == want
    assert _speedups.split_newlines(data, start) == data[start:].split(b"\n")
    # is the range ASCII, does it hold a carriage return
    want_flags = (data[start:end].isascii(), b"\r" in data[start:end])
    assert _speedups.ascii_cr(data, start, end) == want_flags
    assert accel.py_ascii_cr(data, start, end) == want_flags
    assert _speedups.ascii_cr(data) == (data.isascii(), b"\r" in data)


def test_ranges_refuse_what_is_not_one() -> None:
    for fn in (_speedups.split_newlines, _speedups.ascii_cr):
        with pytest.raises(TypeError):
            fn("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            fn(b"a", "1")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            fn(b"a", -1)
        with pytest.raises(TypeError):
            fn(b"a", 0, 1, 2)  # type: ignore[call-arg]


def test_key_hashes_are_pythons_tuple_hashes(tmp_path: Any) -> None:
    """The dedupe keys' hashes that replay --jobs sends its parent: what
    hash((audit_id, stage, stage_ts)) gives, on real and simulated events,
    on odd values and on objects that are not AuditEvents."""
    from types import SimpleNamespace

    events = [ev for _, line in corpus_lines() if (ev := C(line)) is not None]
    events += [C(line) or PY(line) for line in simulate_lines(Options(events=500, seed=3))]
    odd = [
        SimpleNamespace(audit_id=a, stage=s, stage_ts=t)
        for a in ("", "x" * 100, "\u00e9\U0001f600")
        for s in ("RequestReceived", "")
        for t in (0.0, -0.0, -1.0, float("inf"), float("nan"), 1e300, 2**62)
    ]
    for sample in (events, odd, []):
        want = [hash((e.audit_id, e.stage, e.stage_ts)) for e in sample]
        assert array("q", _speedups.key_hashes(sample)).tolist() == want
        assert array("q", accel.py_key_hashes(sample)).tolist() == want
    # the C one is what replay uses when it agrees with hash() here
    assert accel.key_hashes is _speedups.key_hashes
    # an event without the attributes, or with an unhashable one: an error
    with pytest.raises(AttributeError):
        _speedups.key_hashes([SimpleNamespace(audit_id="a", stage="b")])
    with pytest.raises(TypeError):
        _speedups.key_hashes([SimpleNamespace(audit_id="a", stage=[], stage_ts=1.0)])
    with pytest.raises(TypeError):
        _speedups.key_hashes(3)  # type: ignore[arg-type]
    # an AuditEvent whose slot is unset reads it as an attribute: an error
    bare = AuditEvent.__new__(AuditEvent)
    with pytest.raises(AttributeError):
        _speedups.key_hashes([bare])


def test_a_tuple_hash_that_differs_is_not_used() -> None:
    """exporter.accel checks the C hashes against hash() before it takes
    them: a function that gives other numbers is refused."""
    assert accel._same_hashes(_speedups.key_hashes)
    assert accel._same_hashes(accel.py_key_hashes)

    def off_by_one(events: Any) -> bytes:
        return array("q", [x + 1 for x in array("q", accel.py_key_hashes(events))]).tobytes()

    assert not accel._same_hashes(off_by_one)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200),
    st.lists(st.sampled_from([b"Secret", b"TokenRe", b"\\u00", b"a", b"\x00"]), max_size=4),
)
def test_contains_any_is_pythons_in(data: bytes, needles: list[bytes]) -> None:
    data = data + b"".join(needles[:1])  # sometimes there, sometimes not
    assert _speedups.contains_any(data, tuple(needles)) == any(n in data for n in needles)
    assert accel_py_contains_any(data, tuple(needles)) == any(n in data for n in needles)


def accel_py_contains_any(data: bytes, needles: tuple[bytes, ...]) -> bool:
    from exporter.accel import py_contains_any

    return py_contains_any(data, needles)


def test_replay_says_the_same_with_and_without_the_extension(corpora: Any, tmp_path: Any) -> None:
    """The whole of replay (reader, detector, summary) over real logs and
    the simulator's, with the C helpers and with their Python twins: the
    same JSON summary."""
    simulated = tmp_path / "simulated.log"
    simulated.write_bytes(b"".join(simulate_lines(Options(events=3_000, seed=5))))
    # odd lines between the events: refusals, blank lines, carriage returns
    mixed = tmp_path / "mixed.log"
    real = (corpora / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log").read_bytes()
    head = real.splitlines()[:2_000]
    mixed.write_bytes(
        b"\n".join(line + (b"\r" if i % 7 == 0 else b"") for i, line in enumerate(head))
        + b"\n\n  \nnot json\n[1]\n"
        + b"\n".join(head[:50])
    )
    files = [str(p) for p in sorted(corpora.rglob("*.log"))] + [str(simulated), str(mixed)]
    outputs = []
    for pure in ("0", "1"):
        env = dict(os.environ, **{PURE_PYTHON_ENV: pure})
        out = subprocess.run(
            [sys.executable, "-m", "exporter", "replay", "--output", "json", *files],
            env=env,
            capture_output=True,
            check=False,
        )
        assert out.returncode in (0, 1), out.stderr[-2000:]
        outputs.append(orjson.loads(out.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0]["events"] > 10_000


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 1, 2**62]), max_size=60),
    st.lists(st.lists(st.integers(0, 80), max_size=300), max_size=6),
)
def test_hash_tables_are_sets_of_hashes(pool: list[int], batches: list[list[int]]) -> None:
    """seen_before, hashes_in, table_len, table_hashes and table_reserve
    in C against their Python twins over sets, batch after batch: the same
    positions, the same members, through the tables' growth (and room made
    beforehand), with the hash 0, with repeats within a batch and with the
    table among the others."""
    pool = pool or [5]
    c_table, py_table = bytearray(), accel.py_new_hash_table()
    c_other, py_other = bytearray(), accel.py_new_hash_table()
    half = array("q", pool[::2])
    assert _speedups.seen_before(c_other, half, ()) == accel.py_seen_before(py_other, half, ())
    for picks in batches:
        batch = array("q", [pool[i % len(pool)] for i in picks])
        if len(picks) % 2:  # room made beforehand changes no answer
            _speedups.table_reserve(c_table, 3 * len(picks))
            accel.py_table_reserve(py_table, 3 * len(picks))
        tables = (c_other, c_table)  # the table itself among the others
        want = accel.py_seen_before(py_table, batch.tobytes(), (py_other, py_table))
        assert _speedups.seen_before(c_table, batch, tables) == want
        assert _speedups.table_len(c_table) == len(py_table)
        assert sorted(array("q", _speedups.table_hashes(c_table))) == sorted(py_table)
        probe = array("q", pool)
        assert _speedups.hashes_in((c_table, c_other), probe) == accel.py_hashes_in(
            (py_table, py_other), probe
        )


def test_hash_tables_refuse_what_is_not_one() -> None:
    table = bytearray()
    _speedups.seen_before(table, array("q", [1, 2, 3]), ())
    with pytest.raises(TypeError):
        _speedups.seen_before(bytes(table), array("q", [1]), ())  # type: ignore[arg-type]
    for foreign in (b"x" * 40, b"x" * 24, array("q", [-1, 0, 0, 0]).tobytes()):
        with pytest.raises(ValueError, match="not a hash table"):
            _speedups.table_len(bytearray(foreign))
    # a table written by something else, full: refused, never a hang
    full = bytearray(array("q", [0, 0, 5, 6]).tobytes())
    assert _speedups.hashes_in((full,), array("q", [7, 5])) == [1]
    assert array("q", _speedups.table_hashes(full)).tolist() == []
    with pytest.raises(ValueError, match="full"):
        _speedups.seen_before(full, array("q", [7]), ())
    with pytest.raises(ValueError, match="8-byte"):
        _speedups.seen_before(table, b"1234567", ())
    with pytest.raises(ValueError, match="8-byte"):
        accel.py_seen_before(set(), b"1234567", ())
    with pytest.raises(TypeError):
        _speedups.hashes_in((table,) * 5, array("q", [1]))
    with pytest.raises(TypeError):
        _speedups.hashes_in([table], array("q", [1]))  # type: ignore[arg-type]
    # a table whose buffer is held cannot grow: an error, the table unchanged
    held = memoryview(table)
    with pytest.raises(BufferError):
        _speedups.seen_before(table, array("q", range(10, 1000)), ())
    with pytest.raises(BufferError):
        _speedups.table_reserve(table, 1000)
    held.release()
    assert _speedups.table_len(table) == 3
    for twin, t in ((_speedups.table_reserve, table), (accel.py_table_reserve, set())):
        with pytest.raises(ValueError, match="n < 0"):
            twin(t, -1)  # type: ignore[arg-type]
    with pytest.raises((MemoryError, OverflowError)):
        _speedups.table_reserve(table, 2**62)
    with pytest.raises(ValueError, match="not a hash table"):
        _speedups.table_reserve(bytearray(b"x" * 24), 10)
    before = len(table)
    _speedups.table_reserve(table, 2)  # room already: the table stays as it is
    assert len(table) == before
    _speedups.table_reserve(table, 5000)  # the slots for 5,000 more, at once
    assert len(table) >= 8 * 2 * 5003
    assert sorted(array("q", _speedups.table_hashes(table))) == [1, 2, 3]
    assert _speedups.hashes_in((table,), array("q", [3, 4, 1])) == [0, 2]


def test_hash_tables_keep_and_lose_no_reference() -> None:
    table, other = bytearray(), bytearray()
    hashes = array("q", range(-500, 500))
    watched = [table, other, hashes]
    for _ in range(2):
        before = [sys.getrefcount(o) for o in watched]
        for _ in range(100):
            _speedups.seen_before(table, hashes, (other,))
            _speedups.hashes_in((table, other), hashes)
            _speedups.table_len(table)
            _speedups.table_hashes(table)
            _speedups.table_reserve(table, 10)
            with pytest.raises(ValueError):
                _speedups.seen_before(table, b"123", (other,))
        gc.collect()
    assert [sys.getrefcount(o) for o in watched] == before
