"""The replay reader's line splitting (exporter.sources.replay._line_blocks),
with reads far smaller than lines, so that lines span reads."""

from __future__ import annotations

import io

import pytest

from exporter.event import Decoder
from exporter.sources import replay
from exporter.sources.replay import read_batches


def refusals(data: bytes, limit: int) -> list[tuple[str, int | None]]:
    out = []
    for batch in read_batches(io.BytesIO(data), Decoder(limit)):
        out += [(r.reason, r.line) for r in batch.refusals.samples]
    return out


@pytest.mark.parametrize("read", [1, 3, 16, 64])
def test_a_line_over_the_limit_after_short_lines_is_too_large(
    monkeypatch: pytest.MonkeyPatch, read: int
) -> None:
    """A line longer than the limit is refused as too_large wherever it
    starts (the first read used to count the lines before it towards its
    size, and cut it short of the limit), and the lines around it count."""
    monkeypatch.setattr(replay, "SNIFF_BYTES", 8)
    monkeypatch.setattr(replay, "READ_BYTES", read)
    long = b'{"a":"' + b"x" * 200 + b'"}'
    data = b"{}\n" + long + b"\n{}\n" + long
    assert refusals(data, 100) == [
        ("not_an_event", 1),
        ("too_large", 2),
        ("not_an_event", 3),
        ("too_large", 4),
    ]


@pytest.mark.parametrize("read", [1, 2, 5, 1 << 20])
def test_lines_spanning_reads_are_whole(monkeypatch: pytest.MonkeyPatch, read: int) -> None:
    monkeypatch.setattr(replay, "SNIFF_BYTES", 3)
    monkeypatch.setattr(replay, "READ_BYTES", read)
    data = b"{}\n\n[1]\r\n" + b'{"x":1}' * 3 + b"\n  \n{}"
    assert refusals(data, 1000) == [
        ("not_an_event", 1),
        ("wrong_type", 3),
        ("invalid_json", 4),
        ("not_an_event", 6),
    ]


EVENT = (
    b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"@ID@",'
    b'"stage":"ResponseComplete","requestURI":"/api/v1/pods","verb":"list",'
    b'"user":{"username":"@NAME@"},"sourceIPs":["10.0.0.1"],'
    b'"requestReceivedTimestamp":"2026-12-07T01:00:00.000000Z",'
    b'"stageTimestamp":"2026-12-07T01:00:00.100000Z","x":"@VALUE@"}'
)


def event(n: int, name: bytes = b"alice", value: bytes = b"v") -> bytes:
    line = EVENT.replace(b"@ID@", str(n).encode())
    return line.replace(b"@NAME@", name).replace(b"@VALUE@", value)


@pytest.mark.parametrize("read", [7, 100, 1 << 20])
def test_blocks_asked_at_once_keep_each_lines_verdict(
    monkeypatch: pytest.MonkeyPatch, read: int
) -> None:
    """The reader asks a whole block whether it is ASCII and holds a
    carriage return: a line of invalid UTF-8 (in a value the fast path
    skips) among ASCII lines, in whichever block or across reads, is still
    refused; valid UTF-8 and CRLF lines are still read, with their names."""
    monkeypatch.setattr(replay, "SNIFF_BYTES", 16)
    monkeypatch.setattr(replay, "READ_BYTES", read)
    lines = [
        event(1),
        event(2, value=b"\xff\xfe"),  # not UTF-8, in a skipped value
        event(3, name="zoë".encode()),
        event(4) + b"\r",
        event(5, value=b"\xc3"),  # cut UTF-8
        event(6),
    ]
    batches = list(read_batches(io.BytesIO(b"\n".join(lines) + b"\n"), Decoder()))
    events = [ev for b in batches for ev in b]
    assert [ev.audit_id for ev in events] == ["1", "3", "4", "6"]
    assert events[1].username == "zoë"
    assert events[2].raw == event(4)  # the carriage return is not the event's
    reasons = [(r.reason, r.line) for b in batches for r in b.refusals.samples]
    assert [line for _, line in reasons] == [2, 5]
