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

from collections.abc import Iterable

VARINT = 0
LEN = 2

# Precomputed encodings of the small numbers that make up most lengths.
_SMALL = [bytes([n]) for n in range(128)]


def varint(n: int) -> bytes:
    """Base-128 varint; negative numbers as their 64-bit two's complement."""
    if 0 <= n < 128:
        return _SMALL[n]
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
