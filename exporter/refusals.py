"""Refused inputs: the :class:`InvalidEvent` that says why one input is not an
audit event, the :class:`Refusals` tally that every source keeps instead of a
list of them, and the :class:`Batch` of decoded events that carries one.

A body or a file can hold millions of bad items (64 MiB of ``x`` lines is 32
million). A tally costs the same whatever their number: a count per reason
and the first few refusals, with their context, for the log. Nothing else of
a refused item is kept, and never its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .event import AuditEvent

# Every reason an input can be refused for. Metrics pre-initialise these so the
# series exist at zero; keep the list in sync with the raises in event.py.
INVALID_REASONS = (
    "invalid_json",  # not JSON at all, or truncated
    "wrong_type",  # JSON, but a field has the wrong type (e.g. {"kind": 0})
    "missing_field",  # auditID, stage, verb or the timestamps are absent
    "invalid_value",  # unknown stage, unparseable timestamp
    "unknown_api_version",  # apiVersion is not audit.k8s.io/v1 or v1beta1
    "not_an_event",  # valid JSON of another kind (a GKE LogEntry, a Status, ...)
    "too_large",  # over the configured per-event size limit
    "too_deep",  # nested deeper than the parsers go, or wrappers inside wrappers
    "truncated_gzip",  # a .gz file that ends before its end-of-stream marker
    "invalid_encoding",  # a provider's record that is not the base64 it must be
)

# Refusals kept whole per tally, for the log; the rest are only counted.
SAMPLES = 5


class InvalidEvent(Exception):
    """An input that is not a usable audit event; ``reason`` is one of INVALID_REASONS."""

    def __init__(self, reason: str, detail: str, *, line: int | None = None) -> None:
        # no message formatted here: millions are made, few are ever printed
        self.reason = reason
        self.detail = detail
        self.line = line

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class Refusals:
    """Refused inputs counted by reason, with the first ``samples`` kept
    (without their tracebacks) to be logged with their context."""

    __slots__ = ("counts", "samples", "total")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.samples: list[InvalidEvent] = []
        self.total = 0

    def add(self, err: InvalidEvent) -> None:
        counts = self.counts
        counts[err.reason] = counts.get(err.reason, 0) + 1
        self.total += 1
        if len(self.samples) < SAMPLES:
            # a raised error's traceback holds its frames, and they the input
            err.__traceback__ = None
            self.samples.append(err)

    def update(self, other: Refusals) -> None:
        """Add every refusal counted in ``other``."""
        counts = self.counts
        for reason, n in other.counts.items():
            counts[reason] = counts.get(reason, 0) + n
        self.total += other.total
        room = SAMPLES - len(self.samples)
        if room > 0:
            self.samples.extend(other.samples[:room])

    @property
    def first(self) -> InvalidEvent | None:
        return self.samples[0] if self.samples else None

    @property
    def unsampled(self) -> int:
        """Refusals counted but not kept as samples."""
        return self.total - len(self.samples)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        """(reason, count) pairs."""
        return iter(self.counts.items())

    def __bool__(self) -> bool:
        return self.total > 0

    def __repr__(self) -> str:
        return f"Refusals({self.counts})"


_TYPE_NAMES: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}


def not_an_object(obj: Any) -> InvalidEvent:
    """The refusal of a JSON value that is not an object."""
    kind = _TYPE_NAMES.get(type(obj)) or type(obj).__name__
    return InvalidEvent("wrong_type", f"an event must be a JSON object, not {kind}")


class Batch(list["AuditEvent"]):
    """Decoded events in input order, and a tally of the inputs refused among
    them: a flood of bad input costs a counter, not an object per item."""

    __slots__ = ("refusals",)

    def __init__(self, items: Iterable[AuditEvent | InvalidEvent] = ()) -> None:
        super().__init__()
        self.refusals = Refusals()
        self.add_all(items)

    def add(self, item: AuditEvent | InvalidEvent) -> None:
        if type(item) is InvalidEvent:
            self.refusals.add(item)
        else:
            self.append(item)  # type: ignore[arg-type]

    def add_all(self, items: Iterable[AuditEvent | InvalidEvent]) -> None:
        append, refuse = self.append, self.refusals.add
        for item in items:
            if type(item) is InvalidEvent:
                refuse(item)
            else:
                append(item)  # type: ignore[arg-type]

    @property
    def inputs(self) -> int:
        """Events and refusals: the inputs this batch stands for."""
        return len(self) + self.refusals.total
