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
