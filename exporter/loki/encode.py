"""Push request bodies: protobuf + raw snappy (Loki's native format) or
JSON + gzip. Entries are grouped into streams by their label string; each
stream keeps its entries in the order given."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass

import cramjam
import orjson

from . import proto
from .entry import Entry


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes
    content_type: str
    content_encoding: str | None
    # Uncompressed size, for the logs and the 413 decision.
    raw_size: int


def group(entries: Sequence[Entry]) -> dict[str, list[Entry]]:
    streams: dict[str, list[Entry]] = {}
    for e in entries:
        s = streams.get(e.labels)
        if s is None:
            s = streams[e.labels] = []
        s.append(e)
    return streams


def encode_entry(e: Entry) -> bytes:
    return proto.entry(e.ts_ns, e.line, [(k.encode(), v.encode()) for k, v in e.metadata])


def protobuf_payload(entries: Sequence[Entry]) -> bytes:
    """The uncompressed logproto.PushRequest."""
    return proto.push_request(
        proto.stream(labels.encode(), [encode_entry(e) for e in stream])
        for labels, stream in group(entries).items()
    )


def json_payload(entries: Sequence[Entry]) -> bytes:
    """Loki's JSON push format; structured metadata as the third value."""
    streams = []
    for labels, stream in group(entries).items():
        values: list[list[object]] = []
        for e in stream:
            value: list[object] = [str(e.ts_ns), e.line.decode("utf-8", "replace")]
            if e.metadata:
                value.append(dict(e.metadata))
            values.append(value)
        streams.append({"stream": parse_labels(labels), "values": values})
    return orjson.dumps({"streams": streams})


def encode(entries: Sequence[Entry], fmt: str = "protobuf") -> Body:
    if fmt == "json":
        raw = json_payload(entries)
        return Body(gzip.compress(raw, compresslevel=1), "application/json", "gzip", len(raw))
    raw = protobuf_payload(entries)
    return Body(bytes(cramjam.snappy.compress_raw(raw)), "application/x-protobuf", None, len(raw))


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
