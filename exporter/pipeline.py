"""decode -> deduplicate -> admit -> (redact, enrich, detect) -> sinks -> mark -> metrics.

Every source hands its decoded batches to :meth:`Pipeline.process`. A batch is
either taken whole (the sinks hold it durably, the metrics count it once) or
refused whole (a sink is full): the caller then keeps the data where it is
(the webhook answers 503 so the API server retries; the log tailer does not
advance its checkpoint) and nothing is counted, so the retry is not a
duplicate.

Each sink first *admits* the batch (has room for it) before any processor
runs: a batch refused for want of room has touched no detection state, no
rule counter and sent no notification, so its retry is the first time the
processors see it. Only a sink failing to write after admitting it (a disk
error) refuses a batch the processors have seen.

A source that resumes from a position after a crash (the log tailer) passes a
:class:`Mark`: the position just after the batch. A sink that keeps marks
(the Loki spool) stores it in the same write as the batch; without one, the
pipeline has the source save it (durably) before the metrics count the batch.
Either way, what is counted is never read again after a kill -9.

With a shared store (``state``, exporter.state: Redis/Valkey for several
replicas or workers) the dedupe window is also shared: a batch's keys are
looked up there in one round trip before anything else, and recorded there
after the sinks took the batch, so a batch one replica stored is a
duplicate on every other. The local window is kept as well; it alone
decides while the store is unreachable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .event import AuditEvent, Batch, InvalidEvent
from .logs import RateLimitedLog
from .metrics import AuditMetrics
from .refusals import Refusals
from .state import SharedState

log = logging.getLogger(__name__)

DEFAULT_DEDUPE_CAPACITY = 100_000


class Sink(Protocol):
    """Where accepted events go after the processors (the Loki spool, ...)."""

    # Whether submit() stores a mark in the same write as the events.
    keeps_marks: bool

    def admit(self, events: Sequence[AuditEvent]) -> bool:
        """Whether there is room for ``events`` now (before any processor
        has seen them). Refusing is counted and logged by the sink."""
        ...

    def submit(self, events: Sequence[AuditEvent], mark: bytes | None = None) -> bool:
        """Take admitted ``events`` durably (with ``mark``, when the sink
        keeps marks, even if ``events`` is empty) and return True, or take
        none and return False (only when writing fails)."""
        ...

    def close(self, timeout: float = 10.0) -> bool:
        """Flush within ``timeout``; True when everything was delivered."""
        ...


# A processor sees each admitted batch before the sinks (redaction, detection).
Processor = Callable[[list[AuditEvent]], None]


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a source resumes after the batch it comes with.

    ``data`` is opaque to the pipeline; a sink that keeps marks stores it with
    the batch and gives the last one back after a restart. ``save`` stores it
    on its own, durably; it is called, when no sink keeps marks, after the
    sinks took the batch and before the metrics count it. It handles (counts
    and logs) its own errors: by then the processors have seen the batch,
    so it is counted whatever happens to the mark."""

    data: bytes
    save: Callable[[], object]


@dataclass(frozen=True, slots=True)
class BatchResult:
    accepted: int = 0
    duplicates: int = 0
    invalid: int = 0
    refused: bool = False
    # The first refusal, for an HTTP answer that says what was wrong.
    first_error: InvalidEvent | None = None


Key = tuple[str, str, float]  # exporter.state.DedupeKey


class Deduper:
    """Remembers recent event keys: at least the last ``capacity``, at most
    about twice as many.

    The API server retries a webhook batch that was not answered 2xx, so the
    same events can arrive twice. The key is (auditID, stage, stageTimestamp):
    a retry repeats all three, while a client that reuses an ``Audit-ID``
    header for a new request cannot make that request vanish as a "duplicate".

    Two generations of keys: when the current one holds ``capacity`` keys it
    becomes the previous one, and the previous one is dropped whole. Batches
    are checked and added with set operations, so there is no per-event
    bookkeeping in Python.
    """

    def __init__(self, capacity: int = DEFAULT_DEDUPE_CAPACITY) -> None:
        self.capacity = capacity
        self._current: set[Key] = set()
        self._previous: set[Key] = set()

    def __contains__(self, key: Key) -> bool:
        return key in self._current or key in self._previous

    def isdisjoint(self, keys: set[Key]) -> bool:
        """True when none of ``keys`` was seen."""
        return self._current.isdisjoint(keys) and self._previous.isdisjoint(keys)

    def update(self, keys: Iterable[Key]) -> None:
        if self.capacity <= 0:
            return  # remember nothing: duplicates are found within a batch only
        current = self._current
        current.update(keys)
        if len(current) >= self.capacity:
            self._previous = current
            self._current = set()

    def __len__(self) -> int:
        """Distinct keys remembered."""
        return len(self._current | self._previous)


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
        state: SharedState | None = None,
    ) -> None:
        self.metrics = metrics
        self.state = state
        self.sinks = list(sinks)
        self.processors = list(processors)
        self.dedupe = Deduper(dedupe_capacity)
        self.clock = clock
        self.invalid_log = invalid_log or RateLimitedLog(log)
        # False: the events' own families (requests, latency, lag) are not
        # counted, for a caller that shows none of them (the report, a
        # replay without --metrics-out); duplicates, invalid inputs and
        # events stamped in the future still are
        self.observe_batches = True
        self._lock = threading.Lock()

    def process(
        self,
        items: Iterable[AuditEvent | InvalidEvent],
        source: str,
        context: str = "",
        *,
        mark: Mark | None = None,
    ) -> BatchResult:
        """Take one batch from ``source``; ``context`` locates it in logs
        (a file name, a peer address); ``mark`` is where ``source`` resumes
        after it."""
        # refusals are counted as they come, never kept one by one
        batch = items if isinstance(items, Batch) else Batch(items)
        events: list[AuditEvent] = batch
        refusals = batch.refusals
        with self._lock:
            dedupe = self.dedupe
            keys = [(ev.audit_id, ev.stage, ev.stage_ts) for ev in events]
            batch_keys = set(keys)
            # taken by some replica (None: the store is unreachable)
            shared = self.state.seen(list(batch_keys)) if self.state is not None else None
            fresh = events
            if len(batch_keys) != len(keys) or not dedupe.isdisjoint(batch_keys) or shared:
                # a retry or an overlap: keep the first of each key
                fresh = []
                batch_keys = set()
                for ev, key in zip(events, keys, strict=True):
                    if key in dedupe or key in batch_keys or (shared and key in shared):
                        continue
                    batch_keys.add(key)
                    fresh.append(ev)
            duplicates = len(events) - len(fresh)
            for sink in self.sinks:
                if not sink.admit(fresh):
                    return BatchResult(refused=True)
            for processor in self.processors:
                processor(fresh)
            data = mark.data if mark is not None else None
            kept = False
            for sink in self.sinks:
                keeps = sink.keeps_marks
                if not sink.submit(fresh, data if keeps else None):
                    return BatchResult(refused=True)
                kept = kept or keeps
            if mark is not None and not kept:
                mark.save()
            if self.state is not None:
                self.state.remember(list(batch_keys))
            now = self.clock()
            metrics = self.metrics
            with metrics.lock:
                if self.observe_batches:
                    metrics.observe_batch(fresh, source, now)
                else:
                    metrics.check_future(fresh, source, now)
                dedupe.update(batch_keys)
                if duplicates:
                    metrics.duplicate(source, duplicates)
                for reason, count in refusals:
                    metrics.invalid.inc((source, reason), count)
        self._log_refusals(refusals, source, context)
        return BatchResult(
            accepted=len(fresh),
            duplicates=duplicates,
            invalid=refusals.total,
            first_error=refusals.first,
        )

    def log_refusals(self, refusals: Refusals, source: str, context: str) -> None:
        """Log refusals counted apart (replay's jobs) as process() logs its own."""
        self._log_refusals(refusals, source, context)

    def _log_refusals(self, refusals: Refusals, source: str, context: str) -> None:
        """The first few refusals with their place, then how many more."""
        for err in refusals.samples:
            where = f"{context}:{err.line}" if err.line is not None and context else context
            self.invalid_log.warning(
                "invalid audit event",
                source=source,
                where=where,
                reason=err.reason,
                detail=err.detail[:200],
            )
        if refusals.unsampled:
            self.invalid_log.warning(
                "more invalid audit events in the batch",
                source=source,
                where=context,
                count=refusals.unsampled,
                reasons=",".join(f"{r}={n}" for r, n in refusals),
            )

    def close(self, timeout: float = 10.0) -> bool:
        """Close the sinks; True when each delivered everything it held."""
        ok = True
        for sink in self.sinks:
            ok = sink.close(timeout) and ok
        return ok
