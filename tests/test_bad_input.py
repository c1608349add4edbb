"""Bad input at volume and at depth: memory bounded by the body, never by the
number of bad items; nesting of any depth refused item by item (too_deep),
never raised out of a batch; documents written on one line read by replay.
Real events from the shared corpora sit beside the bad ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.badbodies import make_body, measure
from exporter.cli import main
from exporter.event import MAX_WRAPPERS, AuditEvent, Batch, Decoder
from tests.conftest import CORPORA
from tests.test_webhook import Factory, pki, webhook  # noqa: F401

PERFSPEC = CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"
MB = 1 << 20


def real_events(n: int) -> list[dict[str, Any]]:
    with open(PERFSPEC, "rb") as f:
        return [orjson.loads(next(f)) for _ in range(n)]


def items_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As the webhook backend sends them: without kind and apiVersion."""
    return [{k: v for k, v in ev.items() if k not in ("kind", "apiVersion")} for ev in events]


def event_list(items: list[Any]) -> bytes:
    doc = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}}
    return orjson.dumps({**doc, "items": items})


def wrapped(event: dict[str, Any], depth: int, kind: str | None) -> bytes:
    """``event`` inside ``depth`` AKS-style ``{"properties": {"log": ...}}``
    wrappers, written without any encoder's depth limit."""
    opening = b'{"properties":{"log":'
    if kind is not None:
        opening = b'{"kind":"' + kind.encode() + b'","properties":{"log":'
    return opening * depth + orjson.dumps(event) + b"}}" * depth


def replay(capsys: pytest.CaptureFixture[str], *files: Path) -> tuple[int, dict[str, Any]]:
    status = main(["replay", "--output", "json", *map(str, files)])
    return status, json.loads(capsys.readouterr().out)


# --- memory ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["webhook", "replay"])
@pytest.mark.parametrize("body", ["invalid-lines", "eventlist-ints", "array-ints", "deep-wrappers"])
def test_bad_bodies_cost_memory_bounded_by_the_body_not_by_the_bad_items(
    tmp_path: Path, body: str, path: str
) -> None:
    """1 MiB of bad items (half a million) in a child process: its peak RSS
    grows by less than 20 times the body plus 100 MB (the old decoder kept an
    object with its traceback per refused item: about 1 GB here)."""
    file = tmp_path / "body.json"
    data = make_body(body, MB)
    file.write_bytes(data)
    r = measure(path, body, str(file))
    assert "peak_mb" in r, r
    growth = r["peak_mb"] - r["rss_start_mb"]
    assert growth < 20 * len(data) / MB + 100, r
    if body == "deep-wrappers":
        want = (1, 1)
    elif body == "invalid-lines":
        want = (0, data.count(b"\n"))
    else:
        doc = orjson.loads(data)
        want = (0, len(doc if body == "array-ints" else doc["items"]))
    assert (r["accepted"], r["invalid"]) == want, r
    if path == "replay":
        assert r["rc"] == 0


def test_a_million_refusals_keep_five_samples_and_exact_counts() -> None:
    batch = Batch(Decoder().decode_document(b"x\n" * 1_000_000 + b"[1, 2]\n"))
    refusals = batch.refusals
    assert refusals.counts == {"invalid_json": 1_000_000, "wrong_type": 2}
    assert refusals.total == 1_000_002
    assert [e.line for e in refusals.samples] == [1, 2, 3, 4, 5]
    assert all(e.__traceback__ is None for e in refusals.samples)


# --- depth ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [None, "Event"])
@pytest.mark.parametrize("depth", [500, 5000])
def test_nested_wrappers_beside_a_valid_event_in_one_webhook_batch(
    webhook: Factory,  # noqa: F811
    depth: int,
    kind: str | None,
) -> None:
    good, inner = items_of(real_events(2))
    body = (
        event_list([good])[:-2]  # without the closing "]}"
        + b","
        + wrapped({**inner, "kind": "Event", "apiVersion": "audit.k8s.io/v1"}, depth, kind)
        + b"]}"
    )
    h = webhook()
    reply = h.post(body)
    assert reply.status == 200
    assert reply.json() == {"accepted": 1, "duplicates": 0, "invalid": 1}
    assert h.value("kube_audit_events_total", source="webhook") == 1
    assert h.value("kube_audit_events_invalid_total", source="webhook", reason="too_deep") == 1
    # the API server's retry is answered the same way, the event a duplicate
    assert h.post(body).status == 200
    assert h.value("kube_audit_events_duplicate_total", source="webhook") == 1


@pytest.mark.parametrize("depth", [500, 5000])
def test_nested_wrappers_between_valid_lines_in_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], depth: int
) -> None:
    events = real_events(3)
    lines = [orjson.dumps(events[0]), wrapped(events[1], depth, "Event"), orjson.dumps(events[2])]
    lines.append(wrapped(events[1], depth, None))
    path = tmp_path / "audit.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    status, report = replay(capsys, path)
    assert status == 0
    assert report["events"] == 2
    assert report["invalid"] == {"too_deep": 2}


def test_a_deep_item_in_a_one_line_eventlist_in_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """5000 levels is past every parser: the document is split into its
    items without parsing them whole, and the good ones are read."""
    events = items_of(real_events(4))
    deep = b"[" * 5000 + b"]" * 5000
    body = event_list([*events[:2], "DEEP", *events[2:]]).replace(b'"DEEP"', deep)
    path = tmp_path / "captured-body.json"
    path.write_bytes(body)
    status, report = replay(capsys, path)
    assert status == 0
    assert report["events"] == 4
    assert report["invalid"] == {"too_deep": 1}


def test_wrappers_are_unwrapped_up_to_the_bound_and_refused_beyond() -> None:
    event = real_events(1)[0]
    decoder = Decoder()
    ok = decoder.decode_line(wrapped(event, MAX_WRAPPERS, None))
    assert ok.audit_id == event["auditID"]
    (refused,) = decoder.decode_document(wrapped(event, MAX_WRAPPERS + 1, None))
    assert getattr(refused, "reason", None) == "too_deep"
    # a wrapped string (AKS properties.log), itself wrapped once
    aks = {"properties": {"log": orjson.dumps(event).decode()}}
    assert (
        decoder.decode_line(orjson.dumps({"properties": {"log": aks}})).audit_id
        == (event["auditID"])
    )


# --- documents on one line ---------------------------------------------------------


@pytest.mark.parametrize("shape", ["eventlist", "array", "single", "bodies-per-line"])
def test_replay_reads_documents_written_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str
) -> None:
    events = real_events(60)
    if shape == "eventlist":
        data, want = event_list(items_of(events)), 60
    elif shape == "array":
        data, want = orjson.dumps(events), 60
    elif shape == "single":
        data, want = orjson.dumps(events[0]), 1
    else:  # captured webhook bodies appended, one per line
        data = event_list(items_of(events[:30])) + b"\n" + event_list(items_of(events[30:]))
        want = 60
    path = tmp_path / "doc.json"
    path.write_bytes(data)
    status, report = replay(capsys, path)
    assert (status, report["events"], report["invalid"]) == (0, want, {})
    # the same, with a newline at the end
    path.write_bytes(data + b"\n")
    status, again = replay(capsys, path)
    assert again == report


def test_a_one_line_eventlist_among_event_lines() -> None:
    events = real_events(5)
    data = b"\n".join(
        [orjson.dumps(events[0]), event_list(items_of(events[1:4])), orjson.dumps(events[4])]
    )
    items = list(Decoder().decode_document(data))
    assert [i.audit_id for i in items if isinstance(i, AuditEvent)] == [
        e["auditID"] for e in events
    ]
