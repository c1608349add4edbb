"""What the spooled sender needs to know about a wire protocol: how an event
becomes a spool record, how records become a request body, and which
records must stay in order (one stream's).

The sender (exporter/loki/sink.py) is the same for every protocol: the
spool, batching, parallel pushes, retries and counting. Loki's push API is
:class:`LokiCodec`; OTLP/HTTP logs is exporter/otlp/codec.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..event import AuditEvent
from .encode import Body, encode
from .entry import EntryBuilder, decode_record, without_metadata


class Codec(Protocol):
    # Names the output in metric names (kube_audit_<name>_...) and logs.
    name: str

    def record(self, ev: AuditEvent) -> bytes:
        """The spool record for ``ev`` (already redacted)."""
        ...

    def encode(self, records: Sequence[bytes], fmt: str) -> Body:
        """A request body; ValueError when a record does not decode."""
        ...

    def decodes(self, record: bytes) -> bool: ...

    def stream(self, record: bytes) -> bytes:
        """The key of the records that must be pushed in order (a stream)."""
        ...

    def without_metadata(self, record: bytes) -> bytes:
        """The record without structured metadata (for a Loki refusing it)."""
        ...


class LokiCodec:
    """Loki's push API: records are stream labels and an EntryAdapter."""

    name = "loki"

    def __init__(self, builder: EntryBuilder) -> None:
        self.builder = builder

    def record(self, ev: AuditEvent) -> bytes:
        return self.builder.record(ev)

    def encode(self, records: Sequence[bytes], fmt: str) -> Body:
        return encode(records, fmt)

    def decodes(self, record: bytes) -> bool:
        try:
            decode_record(record)
        except ValueError:
            return False
        return True

    def stream(self, record: bytes) -> bytes:
        n = record[0] if record else 0
        if n < 0x80:
            return record[1 : n + 1]
        return record  # a label string this long is not ours: its own shard

    def without_metadata(self, record: bytes) -> bytes:
        return without_metadata(record)
