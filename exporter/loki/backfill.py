"""Backfill: historical audit logs into Loki through ``replay --loki.url``.

Replay runs the same pipeline as the live exporter with a :class:`LokiSink`
as its sink; the entries keep their own stageTimestamp, so replaying a file
twice stores nothing twice (Loki drops an entry with the same stream,
timestamp and line). What this module adds is what only a backfill needs:

- :class:`AgeCheck`, which counts events older than
  Loki's acceptance window (``reject_old_samples_max_age``, 168h by
  default) and warns once, before Loki refuses them one by one;
- :func:`push`, which feeds batches to the pipeline and, instead of failing
  when the spool is full, waits for the sender to make room; then waits
  until Loki has acknowledged everything.

The caller (the replay command) decides the spool directory: a configured
one, or a temporary directory for a one-off replay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..event import AuditEvent, InvalidEvent
from ..pipeline import Pipeline
from .settings import DEFAULT_MAX_AGE_SECONDS
from .sink import LokiSink

log = logging.getLogger(__name__)


class AgeCheck:
    """Counts events older than ``max_age`` seconds; warns once."""

    def __init__(
        self, max_age: float = DEFAULT_MAX_AGE_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_age = max_age
        self.clock = clock
        self.too_old = 0
        self.oldest: float | None = None
        self._warned = False

    def __call__(self, events: list[AuditEvent]) -> None:
        cutoff = self.clock() - self.max_age
        for ev in events:
            ts = ev.stage_ts
            if ts < cutoff:
                self.too_old += 1
                if self.oldest is None or ts < self.oldest:
                    self.oldest = ts
        if self.too_old and not self._warned:
            self._warned = True
            log.warning(
                "events older than Loki's default acceptance window: Loki refuses them "
                "unless reject_old_samples_max_age allows it (they are counted as "
                "rejected, reason greater_than_max_sample_age)",
                extra={"max_age_hours": round(self.max_age / 3600, 1), "oldest": _iso(self.oldest)},
            )


@dataclass
class BackfillResult:
    submitted: int = 0
    invalid: int = 0
    drained: bool = False
    # Entries Loki refused, by reason (a copy of the sink's counters).
    rejected: dict[str, float] = field(default_factory=dict)
    sent: float = 0.0


def push(
    pipeline: Pipeline,
    sink: LokiSink,
    batches: Iterable[list[AuditEvent | InvalidEvent]],
    *,
    age: AgeCheck | None = None,
    source: str = "replay",
    context: str = "",
    room_timeout: float = 3600.0,
) -> BackfillResult:
    """Run ``batches`` through ``pipeline`` (whose sinks include ``sink``),
    waiting for room whenever the spool is full, then wait until Loki has
    every entry. ``age`` sees each batch once, before the pipeline. Returns
    what happened; nothing is dropped silently."""
    result = BackfillResult()
    for batch in batches:
        if age is not None:
            age([item for item in batch if isinstance(item, AuditEvent)])
        while True:
            r = pipeline.process(batch, source, context)
            if not r.refused:
                result.submitted += r.accepted
                result.invalid += r.invalid
                break
            if not sink.wait_for_room(room_timeout):
                log.error("backfill: Loki made no room in the spool; stopping")
                return _finish(sink, result)
    result.drained = sink.drain()
    return _finish(sink, result)


def _finish(sink: LokiSink, result: BackfillResult) -> BackfillResult:
    with sink.stats.lock:
        result.sent = sink.stats.entries_sent
        result.rejected = {k: v for k, v in sink.stats.entries_rejected.items() if v}
    return result


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
