"""decode -> deduplicate -> (redact, enrich, detect) -> sinks -> metrics.

Every source hands its decoded batches to :meth:`Pipeline.process`. A batch is
either taken whole (the sinks hold it durably, the metrics count it once) or
refused whole (a sink is full): the caller then keeps the data where it is
(the webhook answers 503 so the API server retries; the log tailer does not
advance its checkpoint) and nothing is counted, so the retry is not a
duplicate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .event import AuditEvent, InvalidEvent
from .logs import RateLimitedLog
from .metrics import AuditMetrics

log = logging.getLogger(__name__)

DEFAULT_DEDUPE_CAPACITY = 100_000


class Sink(Protocol):
    """Where accepted events go after the metrics (the Loki spool, ...)."""

    def submit(self, events: Sequence[AuditEvent]) -> bool:
        """Take ``events`` durably and return True, or take none and return False."""
        ...

    def close(self, timeout: float = 10.0) -> bool:
        """Flush within ``timeout``; True when everything was delivered."""
        ...


# A processor sees each accepted batch before the sinks (redaction, detection).
Processor = Callable[[list[AuditEvent]], None]


@dataclass(frozen=True, slots=True)
class BatchResult:
    accepted: int = 0
    duplicates: int = 0
    invalid: int = 0
    refused: bool = False
    # The first refusal, for an HTTP answer that says what was wrong.
    first_error: InvalidEvent | None = None


class Deduper:
    """Remembers the last ``capacity`` event keys.

    The API server retries a webhook batch that was not answered 2xx, so the
    same events can arrive twice. The key is (auditID, stage, stageTimestamp):
    a retry repeats all three, while a client that reuses an ``Audit-ID``
    header for a new request cannot make that request vanish as a "duplicate".
    """

    def __init__(self, capacity: int = DEFAULT_DEDUPE_CAPACITY) -> None:
        self.capacity = capacity
        self._keys: set[tuple[str, str, float]] = set()
        # Insertion order, to forget the oldest. (Evicting the first key of a
        # dict is O(n) once many keys were deleted from its front.)
        self._order: deque[tuple[str, str, float]] = deque()

    def __contains__(self, key: tuple[str, str, float]) -> bool:
        return key in self._keys

    def add(self, key: tuple[str, str, float]) -> None:
        if key in self._keys:
            return
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._keys.discard(self._order.popleft())

    def __len__(self) -> int:
        return len(self._keys)


class Pipeline:
    def __init__(
        self,
        metrics: AuditMetrics,
        *,
        sinks: Sequence[Sink] = (),
        processors: Sequence[Processor] = (),
        dedupe_capacity: int = DEFAULT_DEDUPE_CAPACITY,
        clock: Callable[[], float] = time.time,
        invalid_log: RateLimitedLog | None = None,
    ) -> None:
        self.metrics = metrics
        self.sinks = list(sinks)
        self.processors = list(processors)
        self.dedupe = Deduper(dedupe_capacity)
        self.clock = clock
        self.invalid_log = invalid_log or RateLimitedLog(log)
        self._lock = threading.Lock()

    def process(
        self, items: Iterable[AuditEvent | InvalidEvent], source: str, context: str = ""
    ) -> BatchResult:
        """Take one batch from ``source``; ``context`` locates it in logs
        (a file name, a peer address)."""
        events: list[AuditEvent] = []
        errors: list[InvalidEvent] = []
        for item in items:
            if type(item) is AuditEvent:
                events.append(item)
            else:
                errors.append(item)  # type: ignore[arg-type]
        with self._lock:
            dedupe = self.dedupe
            fresh: list[AuditEvent] = []
            batch_keys: set[tuple[str, str, float]] = set()
            for ev in events:
                key = (ev.audit_id, ev.stage, ev.stage_ts)
                if key in dedupe or key in batch_keys:
                    continue
                batch_keys.add(key)
                fresh.append(ev)
            duplicates = len(events) - len(fresh)
            for processor in self.processors:
                processor(fresh)
            for sink in self.sinks:
                if not sink.submit(fresh):
                    return BatchResult(refused=True)
            now = self.clock()
            metrics = self.metrics
            with metrics.lock:
                metrics.observe_batch(fresh, source, now)
                add = dedupe.add
                for ev in fresh:
                    add((ev.audit_id, ev.stage, ev.stage_ts))
                if duplicates:
                    metrics.duplicate(source, duplicates)
                for err in errors:
                    metrics.invalid.inc((source, err.reason))
        for err in errors:
            where = f"{context}:{err.line}" if err.line is not None and context else context
            self.invalid_log.warning(
                "invalid audit event",
                source=source,
                where=where,
                reason=err.reason,
                detail=err.detail[:200],
            )
        return BatchResult(
            accepted=len(fresh),
            duplicates=duplicates,
            invalid=len(errors),
            first_error=errors[0] if errors else None,
        )

    def close(self, timeout: float = 10.0) -> bool:
        """Close the sinks; True when each delivered everything it held."""
        ok = True
        for sink in self.sinks:
            ok = sink.close(timeout) and ok
        return ok
