"""The few protobuf wire-format primitives Loki's push request needs.

Hand-written so that no protoc or generated code is needed at run time. Only
two wire types occur: varint (0) and length-delimited (2). Field numbers are
those of Loki's ``pkg/push/push.proto`` (package ``logproto``)::

    PushRequest      { repeated StreamAdapter streams = 1; }
    StreamAdapter    { string labels = 1; repeated EntryAdapter entries = 2; }
    EntryAdapter     { google.protobuf.Timestamp timestamp = 1; string line = 2;
                       repeated LabelPairAdapter structuredMetadata = 3; }
    LabelPairAdapter { string name = 1; string value = 2; }
    Timestamp        { int64 seconds = 1; int32 nanos = 2; }
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

VARINT = 0
LEN = 2

# Precomputed encodings of the small numbers that make up most lengths.
_SMALL = [bytes([n]) for n in range(128)]


def varint(n: int) -> bytes:
    """Base-128 varint; negative numbers as their 64-bit two's complement."""
    if 0 <= n < 128:
        return _SMALL[n]
    # Lengths and nanoseconds: up to five bytes, without a loop.
    if 0 < n < 1 << 14:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if 0 < n < 1 << 21:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if 0 < n < 1 << 28:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if 0 < n < 1 << 35:
        return bytes(
            (
                n & 0x7F | 0x80,
                n >> 7 & 0x7F | 0x80,
                n >> 14 & 0x7F | 0x80,
                n >> 21 & 0x7F | 0x80,
                n >> 28,
            )
        )
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def len_field(field: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message)."""
    return tag(field, LEN) + varint(len(data)) + data


def varint_field(field: int, n: int) -> bytes:
    return tag(field, VARINT) + varint(n)


# Tags used on the hot path, computed once.
_T_STREAMS = tag(1, LEN)
_T_LABELS = tag(1, LEN)
_T_ENTRIES = tag(2, LEN)
_T_TIMESTAMP = tag(1, LEN)
_T_LINE = tag(2, LEN)
_T_METADATA = tag(3, LEN)
_T_NAME = tag(1, LEN)
_T_VALUE = tag(2, LEN)
_T_SECONDS = tag(1, VARINT)
_T_NANOS = tag(2, VARINT)


def timestamp(ts_ns: int) -> bytes:
    """google.protobuf.Timestamp for nanoseconds since the epoch (zero
    fields omitted, as proto3 encoders do)."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    out = b""
    if seconds:
        out += _T_SECONDS + varint(seconds)
    if nanos:
        out += _T_NANOS + varint(nanos)
    return out


def label_pair(name: bytes, value: bytes) -> bytes:
    out = b""
    if name:
        out += _T_NAME + varint(len(name)) + name
    if value:
        out += _T_VALUE + varint(len(value)) + value
    return out


def entry(ts_ns: int, line: bytes, metadata: Iterable[tuple[bytes, bytes]]) -> bytes:
    """One EntryAdapter. The timestamp is always written: Loki declares it
    non-nullable, so an absent one would read as the zero time."""
    ts = timestamp(ts_ns)
    parts = [_T_TIMESTAMP, varint(len(ts)), ts]
    if line:
        parts += (_T_LINE, varint(len(line)), line)
    for name, value in metadata:
        pair = label_pair(name, value)
        parts += (_T_METADATA, varint(len(pair)), pair)
    return b"".join(parts)


def stream(labels: bytes, entries: Iterable[bytes]) -> bytes:
    """One StreamAdapter from a label string and encoded EntryAdapters."""
    parts = [_T_LABELS, varint(len(labels)), labels]
    for e in entries:
        parts += (_T_ENTRIES, varint(len(e)), e)
    return b"".join(parts)


def push_request(streams: Iterable[bytes]) -> bytes:
    """A PushRequest from encoded StreamAdapters."""
    parts: list[bytes] = []
    for s in streams:
        parts += (_T_STREAMS, varint(len(s)), s)
    return b"".join(parts)


# --- decoding (the spool's own records, the JSON format) ----------------------------


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next position); ValueError on a truncated or overlong varint."""
    result = 0
    shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a message with varint and length-delimited
    fields only; ValueError on anything else or on truncation."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            yield number, value
        elif wire == LEN:
            size, pos = read_varint(buf, pos)
            if pos + size > n:
                raise ValueError("truncated field")
            yield number, buf[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unexpected wire type {wire}")


def decode_entry(buf: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """An EntryAdapter as (ts_ns, line, structured metadata)."""
    seconds = nanos = 0
    line = b""
    meta: list[tuple[bytes, bytes]] = []
    for number, value in fields(buf):
        if number == 1 and isinstance(value, bytes):
            for n, v in fields(value):
                if n == 1 and isinstance(v, int):
                    seconds = v - (1 << 64) if v >= 1 << 63 else v
                elif n == 2 and isinstance(v, int):
                    nanos = v
        elif number == 2 and isinstance(value, bytes):
            line = value
        elif number == 3 and isinstance(value, bytes):
            name = val = b""
            for n, v in fields(value):
                if n == 1 and isinstance(v, bytes):
                    name = v
                elif n == 2 and isinstance(v, bytes):
                    val = v
            meta.append((name, val))
    return seconds * 1_000_000_000 + nanos, line, meta
