"""Push request bodies: protobuf + raw snappy (Loki's native format) or
JSON + gzip, from spool records. Entries are grouped into streams by their
label string; each stream keeps its entries in the order given."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import cramjam
import orjson

from . import proto
from .entry import Entry, decode_record, encode_record, split_record

_T_STREAMS = proto.tag(1, proto.LEN)
_T_LABELS = proto.tag(1, proto.LEN)
_T_ENTRIES = proto.tag(2, proto.LEN)


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes
    content_type: str
    content_encoding: str | None
    # Uncompressed size, for the logs.
    raw_size: int


def records_payload(records: Sequence[bytes]) -> bytes:
    """The uncompressed logproto.PushRequest for spool records.

    This runs once per entry sent: the request is one join of the pieces."""
    streams: dict[bytes, list[bytes]] = {}
    for record in records:
        # A one-byte length, as every label string we write has; else the
        # general path, which raises ValueError on a damaged record.
        n = record[0] if record else 0x80
        labels = record[1 : n + 1] if n < 0x80 and n < len(record) else split_record(record)[0]
        group = streams.get(labels)
        if group is None:
            streams[labels] = [record]
        else:
            group.append(record)
    varint = proto.varint
    parts: list[bytes] = []
    for labels, group in streams.items():
        head = _T_LABELS + varint(len(labels)) + labels
        start = len(head) - 1  # the labels' length and the labels
        entries = [r[start:] for r in group]
        lengths = [_length(len(e)) for e in entries]
        size = len(head) + len(entries) + sum(map(len, lengths)) + sum(map(len, entries))
        parts += (_T_STREAMS, varint(size), head)
        parts += chain.from_iterable(zip(repeat(_T_ENTRIES), lengths, entries))
    return b"".join(parts)


_LENGTHS: dict[int, bytes] = {}


def _length(n: int) -> bytes:
    """varint(n), remembered for the sizes entries have (under 16 KiB)."""
    out = _LENGTHS.get(n)
    if out is None:
        out = proto.varint(n)
        if n < 1 << 14:
            _LENGTHS[n] = out
    return out


def protobuf_payload(entries: Sequence[Entry]) -> bytes:
    return records_payload([encode_record(e) for e in entries])


def json_payload(records: Sequence[bytes]) -> bytes:
    """Loki's JSON push format; structured metadata as the third value."""
    streams: dict[str, list[list[object]]] = {}
    for record in records:
        e = decode_record(record)
        value: list[object] = [str(e.ts_ns), e.line.decode("utf-8", "replace")]
        if e.metadata:
            value.append(dict(e.metadata))
        streams.setdefault(e.labels, []).append(value)
    return orjson.dumps(
        {
            "streams": [
                {"stream": parse_labels(labels), "values": values}
                for labels, values in streams.items()
            ]
        }
    )


def encode(records: Sequence[bytes], fmt: str = "protobuf") -> Body:
    if fmt == "json":
        raw = json_payload(records)
        return Body(gzip.compress(raw, compresslevel=1), "application/json", "gzip", len(raw))
    raw = records_payload(records)
    return Body(bytes(cramjam.snappy.compress_raw(raw)), "application/x-protobuf", None, len(raw))


def encode_entries(entries: Sequence[Entry], fmt: str = "protobuf") -> Body:
    return encode([encode_record(e) for e in entries], fmt)


def parse_labels(text: str) -> dict[str, str]:
    """Our own rendered label string back to a mapping (for the JSON format,
    whose streams are objects)."""
    out: dict[str, str] = {}
    i = 1
    n = len(text) - 1  # the closing brace
    while i < n:
        eq = text.index("=", i)
        name = text[i:eq].strip(" ,")
        j = eq + 2  # past ="
        chars: list[str] = []
        while text[j] != '"':
            ch = text[j]
            if ch == "\\":
                j += 1
                esc = text[j]
                if esc == "x":
                    chars.append(chr(int(text[j + 1 : j + 3], 16)))
                    j += 2
                else:
                    chars.append({"n": "\n", "r": "\r", "t": "\t"}.get(esc, esc))
            else:
                chars.append(ch)
            j += 1
        out[name] = "".join(chars)
        i = j + 1
    return out
