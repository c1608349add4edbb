"""``replay --jobs N``: the replay of JSON-lines inputs spread over N
processes, with the output of one.

The input is cut into chunks of whole lines. Each job (a forked process)
decodes a chunk and runs on it everything whose result does not depend on
the events before the chunk: redaction, the report, the request families
as a :class:`~exporter.metrics.RequestTally` (raw values in first-seen
order), the event and lag counters, and a scan for the events some rule's
condition holds for (:meth:`~exporter.detect.Detector.scan`). The parent
takes the chunks' results in input order and does what does depend on the
order, on compact records:

- deduplication: the jobs send every event's key (auditID, stage,
  stageTimestamp); the parent cuts them into the batches ``read_batches``
  would have made and runs the pipeline's Deduper on them. A job takes an
  event for a duplicate when its key came earlier in its chunk; when the
  parent finds otherwise (a retry whose first copy was in an earlier chunk),
  it runs the chunk again itself with its own verdicts, so a duplicate
  across chunks is dropped as with one process;
- the label bounds and caps: it applies the tallies in order;
- detection: it runs the Detector on the scanned events alone, in order, so
  every stateful rule sees each key's events in time order, and a rule that
  holds for no event of a chunk cannot change any state there;
- the report: it merges the chunks' reports in order.

Sending to Loki and to Alertmanager needs every event in the parent: those
stay with ``--jobs 1``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult, Pool
from typing import IO

from ..detect import Detector
from ..event import AuditEvent, Decoder, InvalidEvent, fast_event
from ..metrics import AuditMetrics, RequestTally
from ..pipeline import Deduper, Pipeline, Processor
from ..refusals import Refusals
from ..report import Report
from ..sensitive import categories
from .replay import BATCH_LINES, SNIFF_BYTES, _starts_document

# Bytes per chunk (whole lines): large enough that a chunk's result costs
# little to send and merge, small enough to keep every job busy to the end.
CHUNK_BYTES = 4 << 20
# Chunks sent ahead of the one the parent waits for, per job.
AHEAD = 3

Key = tuple[str, str, float]


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Partial:
    """A job's result for one chunk."""

    lines: int
    # every decoded event's dedupe key, in input order
    keys: list[Key]
    # (line in the chunk, inputs, events) of the lines that are not exactly
    # one event (blank lines, refusals, documents written on one line)
    odd: list[tuple[int, int, int]]
    # positions (in keys) the job took as duplicates
    taken_as_duplicates: list[int]
    tally: RequestTally
    report: Report
    # the events some rule's condition holds for, redacted, in order (as
    # their line when it is still theirs: cheaper to send and decode again
    # than the object), and the positions of those rules
    scanned: list[AuditEvent | bytes]
    rules: list[tuple[int, ...]]
    # the sensitive events among the others, each after how many scanned ones
    sensitive: list[tuple[int, AuditEvent | bytes]]
    refusals: Refusals
    events: int
    future: int
    # event_lag_seconds' row: bucket counts, +Inf, sum
    lag: list[float] | None
    last_event: float | None


@dataclass
class _Job:
    """What a job needs, made by the parent before it forks."""

    decoder: Decoder
    processors: list[Processor]  # redaction
    detector: Detector | None
    metrics_args: dict[str, object]
    batch_lines: int = BATCH_LINES


_JOB: _Job | None = None


def _job_signals() -> None:
    """A job ends as its parent tells it (the pool's terminate), quietly;
    Ctrl-C is for the parent, which ends the jobs."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_chunk(data: bytes, first_line: int, duplicates: Sequence[int] | None = None) -> Partial:
    """Process one chunk (lines joined by newlines, ``first_line`` the
    number of the line before it). ``duplicates``: the positions to drop as
    duplicates, when the parent knows them; by default an event whose key
    came earlier in the chunk."""
    job = _JOB
    assert job is not None, "run_chunk outside a replay with jobs"
    decode = job.decoder.decode_record
    limit = job.decoder.max_event_bytes
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()  # the chunk's last newline ends its last line
    events: list[AuditEvent] = []
    refusals = Refusals()
    odd: list[tuple[int, int, int]] = []
    for i, line in enumerate(lines):
        if line[:1] == b"{" and len(line) <= limit:
            ev = fast_event(line.rstrip(b"\r") if line[-1:] == b"\r" else line)
            if ev is not None:
                events.append(ev)
                continue
        elif not line or line.isspace():
            odd.append((i, 0, 0))
            continue
        if len(line) > limit:
            line = line[: limit + 1]  # as the reader cuts it (see _line_blocks)
        inputs = found = 0
        for item in decode(line):
            inputs += 1
            if type(item) is AuditEvent:
                found += 1
                events.append(item)
            else:
                item.line = first_line + i + 1  # type: ignore[union-attr]
                refusals.add(item)  # type: ignore[arg-type]
        odd.append((i, inputs, found))
    keys = [(ev.audit_id, ev.stage, ev.stage_ts) for ev in events]
    if duplicates is None:
        seen: set[Key] = set()
        dropped: list[int] = []
        for i, key in enumerate(keys):
            if key in seen:
                dropped.append(i)
            else:
                seen.add(key)
    else:
        dropped = list(duplicates)
    fresh = events
    if dropped:
        skip = set(dropped)
        fresh = [ev for i, ev in enumerate(events) if i not in skip]
    from prometheus_client import CollectorRegistry

    metrics = AuditMetrics(CollectorRegistry(), **job.metrics_args)  # type: ignore[arg-type]
    tally = metrics.deferred = RequestTally()
    report = Report(defer_sensitive=True)
    scanned: list[AuditEvent | bytes] = []
    rules: list[tuple[int, ...]] = []
    # the sensitive events no rule's condition held for, each with the
    # number of scanned events before it (the parent interleaves the two)
    sensitive: list[tuple[int, AuditEvent | bytes]] = []
    now = time.time()
    step = job.batch_lines
    for start in range(0, len(fresh), step):
        part = fresh[start : start + step]
        for processor in job.processors:
            processor(part)
        hit: dict[int, tuple[int, ...]] = {}
        if job.detector is not None:
            hit = dict(job.detector.scan(part))
        for i, ev in enumerate(part):
            hits = hit.get(i)
            if hits is not None:
                scanned.append(ev if ev.raw is None else ev.raw)
                rules.append(hits)
            elif categories(ev):
                sensitive.append((len(scanned), ev if ev.raw is None else ev.raw))
        report(part)
        metrics.observe_batch(part, "replay", now)
    lag = metrics.lag.values.get(("replay",))
    return Partial(
        lines=len(lines),
        keys=keys,
        odd=odd,
        taken_as_duplicates=dropped,
        tally=tally,
        report=report,
        scanned=scanned,
        rules=rules,
        sensitive=sensitive,
        refusals=refusals,
        events=len(fresh),
        future=int(metrics.future.values.get(("replay",), 0)),
        lag=lag,
        last_event=metrics.last_event.get("replay"),
    )


def _chunks(head: bytes, stream: IO[bytes], size: int, limit: int) -> Iterator[tuple[bytes, int]]:
    """(whole lines, number of the line before them) of about ``size``
    bytes. Bytes without a newline beyond ``limit + 1`` are dropped as they
    are read (the line is refused as too large either way), as
    ``_line_blocks`` does, so garbage without newlines cannot fill the
    memory."""
    pending = head
    lines = 0
    while True:
        block = stream.read(size)
        if not block:
            break
        if pending:
            block = pending + block
        end = block.rfind(b"\n")
        if end < 0:
            pending = block if len(block) <= limit else block[: limit + 1]
            continue
        data = block[: end + 1]
        pending = block[end + 1 :]
        if len(pending) > limit:
            pending = pending[: limit + 1]
        yield data, lines
        lines += data.count(b"\n")
    if pending:
        yield pending, lines


@dataclass
class _Pending:
    """A chunk whose result came back and whose events' dedupe verdicts
    are not all known yet (its last batch goes on in the next chunk)."""

    data: bytes
    first_line: int
    partial: Partial
    duplicates: list[int] = field(default_factory=list)


class _Batcher:
    """The batches read_batches would make (a batch ends after the line
    that brings it to ``batch_lines`` inputs), from the chunks' keys and
    odd lines; runs the Deduper on each as Pipeline.process does."""

    def __init__(self, dedupe: Deduper, batch_lines: int) -> None:
        self.dedupe = dedupe
        self.batch_lines = batch_lines
        self.inputs = 0
        self.keys: list[Key] = []
        self.owners: list[tuple[_Pending, int]] = []

    def feed(self, pending: _Pending) -> None:
        p = pending.partial
        keys = p.keys
        at = 0  # next key
        line = 0  # next line
        for stop, inputs, events in [*p.odd, (p.lines, -1, 0)]:
            run = stop - line  # lines of one event each
            while run > 0:
                take = min(run, self.batch_lines - self.inputs)
                self._add(pending, keys, at, take)
                at += take
                run -= take
                self.inputs += take
                if self.inputs >= self.batch_lines:
                    self.close()
            if inputs < 0:
                break
            self._add(pending, keys, at, events)
            at += events
            self.inputs += inputs
            if self.inputs >= self.batch_lines:
                self.close()
            line = stop + 1
        assert at == len(keys), "keys and lines disagree"

    def _add(self, pending: _Pending, keys: list[Key], at: int, n: int) -> None:
        if n:
            self.keys.extend(keys[at : at + n])
            self.owners.extend((pending, i) for i in range(at, at + n))

    def close(self) -> None:
        """End the batch: the Deduper's verdicts, as Pipeline.process gives them."""
        keys, owners = self.keys, self.owners
        self.keys, self.owners, self.inputs = [], [], 0
        if not keys:
            return
        dedupe = self.dedupe
        batch_keys = set(keys)
        if len(batch_keys) != len(keys) or not dedupe.isdisjoint(batch_keys):
            batch_keys = set()
            for key, (pending, i) in zip(keys, owners, strict=True):
                if key in dedupe or key in batch_keys:
                    pending.duplicates.append(i)
                    continue
                batch_keys.add(key)
        dedupe.update(batch_keys)


class ParallelReplay:
    """Replays JSON-lines streams with ``jobs`` processes into the
    parent's pipeline (its Deduper, metrics and Detector) and report."""

    def __init__(
        self,
        jobs: int,
        pipeline: Pipeline,
        report: Report,
        decoder: Decoder,
        metrics_args: dict[str, object],
        *,
        chunk_bytes: int = CHUNK_BYTES,
        batch_lines: int = BATCH_LINES,
    ) -> None:
        global _JOB
        self.pipeline = pipeline
        self.report = report
        self.metrics = pipeline.metrics
        self.detector = next((p for p in pipeline.processors if isinstance(p, Detector)), None)
        # what the jobs run: the processors before detection (redaction)
        before = []
        for p in pipeline.processors:
            if p is self.detector or p is report:
                break
            before.append(p)
        self.chunk_bytes = chunk_bytes
        self.decoder = decoder
        self.batch_lines = batch_lines
        self.rechunked = 0  # chunks run again in the parent (duplicates across chunks)
        _JOB = _Job(decoder, before, self.detector, metrics_args, batch_lines)
        self.pool: Pool | None = multiprocessing.get_context("fork").Pool(
            jobs, initializer=_job_signals
        )
        self.jobs = jobs

    def starts_lines(self, stream: IO[bytes]) -> tuple[bytes, bool]:
        """The head of ``stream`` and whether it is JSON lines (rather than
        one document, which --jobs 1 reads)."""
        head = stream.read(SNIFF_BYTES)
        return head, bool(head) and not _starts_document(head)

    def run(
        self,
        head: bytes,
        stream: IO[bytes],
        context: str,
        progress: Callable[[], None] | None = None,
    ) -> None:
        """Replay the rest of a JSON-lines stream whose first bytes were
        ``head``."""
        assert self.pool is not None
        limit = _JOB.decoder.max_event_bytes if _JOB else 0
        batcher = _Batcher(self.pipeline.dedupe, self.batch_lines)
        inflight: deque[tuple[bytes, int, AsyncResult[Partial]]] = deque()
        waiting: _Pending | None = None
        chunks = _chunks(head, stream, self.chunk_bytes, limit)
        ahead = self.jobs * AHEAD
        for data, first in chunks:
            inflight.append((data, first, self.pool.apply_async(run_chunk, (data, first))))
            while len(inflight) > ahead:
                waiting = self._next(inflight, batcher, waiting, context, progress)
        while inflight:
            waiting = self._next(inflight, batcher, waiting, context, progress)
        batcher.close()
        problem = getattr(stream, "problem", None)
        if waiting is not None:
            self._merge(waiting, context)
        if problem:
            extra = Refusals()
            extra.add(InvalidEvent("truncated_gzip", problem))
            self._count_refusals(extra, context)

    def _next(
        self,
        inflight: deque[tuple[bytes, int, AsyncResult[Partial]]],
        batcher: _Batcher,
        waiting: _Pending | None,
        context: str,
        progress: Callable[[], None] | None,
    ) -> _Pending:
        data, first, result = inflight.popleft()
        pending = _Pending(data, first, result.get())
        batcher.feed(pending)
        # the chunk before is complete: its last batch ended in this one
        if waiting is not None:
            self._merge(waiting, context)
        if progress is not None:
            progress()
        return pending

    def _merge(self, pending: _Pending, context: str) -> None:
        """Take a chunk's result into the parent's pipeline and report."""
        p = pending.partial
        if sorted(pending.duplicates) != p.taken_as_duplicates:
            # a duplicate of an event in an earlier chunk (or not one after
            # all): this chunk again, with the parent's verdicts
            self.rechunked += 1
            p = run_chunk(pending.data, pending.first_line, sorted(pending.duplicates))
        metrics = self.metrics
        duplicates = len(p.taken_as_duplicates)
        decode = self.decoder.decode_line
        scanned: list[AuditEvent] = []
        if self.detector is not None and p.scanned:
            scanned = [
                x if type(x) is AuditEvent else fast_event(x) or decode(x)  # type: ignore[arg-type]
                for x in p.scanned
            ]
            self.detector(scanned, p.rules)
            for ev in scanned:
                if ev.rules:
                    self.report.detected(ev)
        # the report's detection-dependent part, in input order
        report = self.report
        k = 0
        for before, x in p.sensitive:
            while k < before:
                report.ordered(scanned[k])
                k += 1
            report.ordered(x if type(x) is AuditEvent else fast_event(x) or decode(x))  # type: ignore[arg-type]
        while k < len(scanned):
            report.ordered(scanned[k])
            k += 1
        self.report.merge(p.report)
        self.report.duplicates += duplicates
        with metrics.lock:
            metrics.apply(p.tally)
            if p.events:
                metrics.events.inc(("replay",), p.events)
            if p.future:
                metrics.future.inc(("replay",), p.future)
            if p.lag is not None:
                row = metrics.lag.values.get(("replay",))
                if row is None:
                    metrics.lag.values[("replay",)] = list(p.lag)
                else:
                    for i, n in enumerate(p.lag):
                        row[i] += n
            if p.last_event is not None and p.last_event > metrics.last_event.get("replay", 0.0):
                metrics.last_event["replay"] = p.last_event
            if duplicates:
                metrics.duplicate("replay", duplicates)
        self._count_refusals(p.refusals, context)

    def _count_refusals(self, refusals: Refusals, context: str) -> None:
        if not refusals:
            return
        metrics = self.metrics
        with metrics.lock:
            for reason, count in refusals:
                metrics.invalid.inc(("replay", reason), count)
        for reason, count in refusals:
            self.report.invalid[reason] += count
        self.pipeline.log_refusals(refusals, "replay", context)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


class Prepended:
    """A stream whose first bytes were read already (to sniff it)."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self.head = head
        self.stream = stream

    def read(self, size: int = -1) -> bytes:
        head = self.head
        if not head:
            return self.stream.read(size)
        if size < 0:
            self.head = b""
            return head + self.stream.read()
        self.head = head[size:]
        return head[:size]

    @property
    def problem(self) -> str | None:
        return getattr(self.stream, "problem", None)
