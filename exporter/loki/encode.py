"""Push request bodies: protobuf + raw snappy (Loki's native format) or
JSON + gzip, from spool records. Entries are grouped into streams by their
label string; each stream keeps its entries in the order given."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass

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

    This runs once per entry sent: the entries are not copied out of their
    records, and the request is one join of the pieces."""
    varint = proto.varint
    # label string -> [StreamAdapter pieces, their size]
    streams: dict[bytes, tuple[list[bytes | memoryview], list[int]]] = {}
    for record in records:
        n = record[0] if record else 0x80
        if n < 0x80:  # a one-byte length: every label string we write
            start = n + 1
            if start > len(record):
                raise ValueError("record shorter than its labels")
            labels = record[1:start]
        else:
            labels, entry = split_record(record)
            start = len(record) - len(entry)
        s = streams.get(labels)
        if s is None:
            head = _T_LABELS + varint(len(labels)) + labels
            s = streams[labels] = ([head], [len(head)])
        size = len(record) - start
        length = varint(size)
        s[0].extend((_T_ENTRIES, length, memoryview(record)[start:]))
        s[1][0] += 1 + len(length) + size
    parts: list[bytes | memoryview] = []
    for pieces, (size,) in streams.values():
        parts += (_T_STREAMS, varint(size))
        parts += pieces
    return b"".join(parts)


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
