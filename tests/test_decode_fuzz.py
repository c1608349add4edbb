"""Property-based fuzzing of the decoders: whatever the bytes or the JSON,
nothing raises past them and every item is accounted for, accepted or
refused. Real events from the shared corpora are mutated and wrapped."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.event import MAX_WRAPPERS, AuditEvent, Batch, Decoder, InvalidEvent
from exporter.jsonsplit import split_items
from exporter.refusals import INVALID_REASONS
from tests.conftest import CORPORA

PERFSPEC = CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"
with open(PERFSPEC, "rb") as _f:
    REAL = [next(_f).rstrip(b"\n") for _ in range(50)]


def dumps(value: Any, indent: int | None = None) -> bytes:
    """JSON of any value (orjson refuses integers past 64 bits)."""
    return json.dumps(value, indent=indent).encode()


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["kind", "auditID", "stage", "verb", "items", "properties", "log", "x"])
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


def check_items(items: list[Any]) -> tuple[int, int]:
    """(accepted, refused); every item is one or the other, refusals have a
    known reason."""
    accepted = refused = 0
    for item in items:
        if type(item) is AuditEvent:
            accepted += 1
        else:
            assert isinstance(item, InvalidEvent)
            assert item.reason in INVALID_REASONS
            refused += 1
    return accepted, refused


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    decoder = Decoder(max_event_bytes=200)
    check_items(list(decoder.decode_document(data)))
    check_items(list(decoder.decode_record(data)))
    try:
        decoder.decode_line(data)
    except InvalidEvent as e:
        assert e.reason in INVALID_REASONS


@FUZZ
@given(st.sampled_from(REAL), st.integers(0, 10_000), st.binary(min_size=1, max_size=8))
def test_mutated_real_events_never_raise(line: bytes, at: int, junk: bytes) -> None:
    at %= len(line)
    for mutated in (line[:at] + junk + line[at + len(junk) :], line[:at], line[:at] + junk):
        check_items(list(Decoder().decode_document(mutated)))


@FUZZ
@given(st.lists(json_values, max_size=12), st.booleans())
def test_every_item_of_a_document_is_accepted_or_refused(items: list[Any], wrap: bool) -> None:
    body = dumps({"kind": "EventList", "items": items} if wrap else items)
    accepted, refused = check_items(list(Decoder().decode_document(body)))
    assert accepted + refused == len(items)
    batch = Batch(Decoder().decode_document(body))
    assert (len(batch), batch.refusals.total) == (accepted, refused)


def not_a_document(value: Any) -> bool:
    return not (
        type(value) is list
        or (type(value) is dict and ("items" in value or value.get("kind") == "EventList"))
    )


@FUZZ
@given(st.lists(st.sampled_from(REAL) | json_values.filter(not_a_document).map(dumps), max_size=12))
def test_every_line_of_json_lines_is_accepted_or_refused(lines: list[bytes]) -> None:
    body = b"\n".join(lines)
    accepted, refused = check_items(list(Decoder().decode_document(body)))
    assert accepted + refused == len(lines)
    assert accepted >= sum(1 for line in lines if line in REAL)


@FUZZ
@given(st.integers(0, 3000), st.booleans(), st.sampled_from(REAL))
def test_wrappers_of_any_depth_beside_a_real_event(depth: int, kind: bool, line: bytes) -> None:
    opening = b'{"kind":"Event","properties":{"log":' if kind else b'{"properties":{"log":'
    nested = opening * depth + line + b"}}" * depth
    body = b'{"kind":"EventList","items":[' + REAL[0] + b"," + nested + b"]}"
    items = list(Decoder().decode_document(body))
    assert check_items(items) == ((2, 0) if depth <= MAX_WRAPPERS else (1, 1))
    if depth > MAX_WRAPPERS:
        assert getattr(items[1], "reason", None) == "too_deep"


@FUZZ
@given(st.lists(json_values, max_size=8), st.booleans())
def test_split_items_finds_exactly_the_items(items: list[Any], wrap: bool) -> None:
    doc = {"kind": "EventList", "items": items, "z": [1, {"items": [2]}]} if wrap else items
    split = split_items(dumps(doc, indent=2))
    assert split is not None
    skeleton, raw = split
    assert [json.loads(r) for r in raw] == items
    if wrap:
        assert skeleton is not None and json.loads(skeleton) == {**doc, "items": []}


@FUZZ
@given(st.binary(max_size=300))
def test_split_items_never_raises(data: bytes) -> None:
    split_items(data)
    split_items(b"[" + data + b"]")
