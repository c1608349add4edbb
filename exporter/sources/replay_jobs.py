"""``replay --jobs N``: the replay of JSON-lines inputs spread over N
processes, with the output of one.

The input is cut into chunks of whole lines: byte ranges of a plain file,
which each job reads itself, or bytes the parent read (a .gz, standard
input) sent through a pipe (see :mod:`.replay_chunks`). Each job (a forked process) decodes a chunk
and runs on it everything whose result does not depend on the events
before the chunk: redaction, the report, the request families as a
:class:`~exporter.metrics.RequestTally` (raw values in first-seen order),
the event and lag counters, and a scan for the events some rule's
condition holds for (:meth:`~exporter.detect.Detector.scan`), each
projected (:meth:`~exporter.detect.Detector.project`) to what the rules'
state needs of it: per rule, the group, the value, and the sequence steps
it matches (or only that it is no first step). The parent takes the
chunks' results in input order and does what does depend on the order, on
those compact records, never on whole events:

- deduplication: the jobs send every event's key (auditID, stage,
  stageTimestamp) as its 8-byte hash (the parent's Deduper holds hashes
  too, so one file read whole and one read in chunks share it); the
  parent cuts them into the batches ``read_batches`` would have made and
  runs the Deduper on them. A job takes an event for a duplicate when its
  key came earlier in its chunk; when the parent finds otherwise (a retry
  whose first copy was in an earlier chunk), it runs the chunk again
  itself with its own verdicts, so a duplicate across chunks is dropped as
  with one process;
- the label bounds and caps: it applies the tallies in order;
- detection: it feeds the projections to the Detector in order
  (:meth:`~exporter.detect.Detector.feed`), so every stateful rule sees
  each key's events in time order, and a rule that holds for no event of a
  chunk cannot change any state there. The projections that change nothing
  while no sequence is in progress (:meth:`~exporter.detect.Detector.idle`)
  travel packed apart (:func:`pack`), and the parent unpacks them only for a chunk in
  which a sequence may run. An event is read again in the parent (its line,
  from the file or the chunk) only when it is shown as an example, when a
  sequence's later steps must be tested for a group in progress, or when a
  rule failed on it in the job;
- the report: it merges the chunks' reports in order, and runs the part
  that depends on detection (sensitive rows' severity and rank, flagged
  stages) on the sensitive and the matching events, in order.

Sending to Loki and to Alertmanager needs every event in the parent: those
stay with ``--jobs 1``.
"""

from __future__ import annotations

import gc
import io
import marshal
import os
import pickle
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter
from typing import IO, cast

from ..accel import (
    ascii_cr,
    hashes_in,
    key_hashes,
    new_hash_table,
    seen_before,
    split_newlines,
    table_hashes,
    table_len,
    table_reserve,
)
from ..detect import Detector
from ..detect.engine import Projected
from ..event import AuditEvent, Decoder, InvalidEvent, fast_event, fast_lines
from ..metrics import AuditMetrics, RequestTally, counts_as_request
from ..pipeline import Deduper, Key, Pipeline, Processor
from ..refusals import Refusals
from ..report import Report
from ..report.significance import MATTERING_SEVERITIES, RANK_ROUTINE, rank
from .replay import BATCH_LINES, SNIFF_BYTES, _starts_document
from .replay_chunks import Jobs, Span, file_chunks, pread_exactly, stream_chunks

# Bytes per chunk (whole lines): large enough that a chunk's result costs
# little to send and merge (each costs the parent about a millisecond apart
# from its events), small enough to keep every job busy to the end. A job
# works through its chunk a batch of lines at a time, which stay in cache.
CHUNK_BYTES = 4 << 20
# Bytes of a chunk split into lines and processed as one batch at a time
# (see _windows): small enough that a window's lines and events stay in a
# core's cache while the job works on them. With two jobs on two CPUs,
# windows of 256 KiB took the jobs about 13% less CPU time than windows of
# 1 MiB on the simulator's events (5 runs each, medians 4.7 s and 5.4 s a
# million events), although they run more instructions; 64 and 128 KiB
# measured the same as 256.
WINDOW_BYTES = 256 << 10
# Chunks sent ahead of the one the parent waits for, per job.
AHEAD = 3
# A plain file's chunks (which the jobs read themselves) are up to this
# many times CHUNK_BYTES, while more than this many chunks per job are left:
# fewer chunks cost the parent less (per chunk it merges each key of the
# tallies and reports once), and the last chunks, of CHUNK_BYTES, still
# keep every job busy to the end.
LARGEST_CHUNK = 4
CHUNK_SHARE = 4


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# What the report reads of a sensitive event (Report.ordered: categories,
# rank, component, who_what), sent by the job so that the parent need not
# decode it.
FIELDS = (
    "audit_id",
    "stage",
    "code",
    "stage_ts",
    "username",
    "user_kind",
    "impersonated_user",
    "verb",
    "resource",
    "subresource",
    "resource_label",
    "api_group",
    "namespace",
    "name",
    "request_uri",
    "source_ip",
    "user_agent",
)


class Seen:
    """An event a job saw, in the parent: the fields the job sent, and the
    rest from the event itself, decoded again (from its line in the chunk)
    on the first read of any other field. Detection sets ``rules`` and
    ``severity`` here."""

    __slots__ = (*FIELDS, "_event", "_pending", "_start", "rules", "severity")

    def __init__(self, values: Sequence[object], pending: _Pending, start: int) -> None:
        """``values``: the first four FIELDS, or all of them (in their order);
        the event's line starts at ``start`` in ``pending``'s chunk."""
        if len(values) == 4:
            self.audit_id, self.stage, self.code, self.stage_ts = values
        else:
            (
                self.audit_id,
                self.stage,
                self.code,
                self.stage_ts,
                self.username,
                self.user_kind,
                self.impersonated_user,
                self.verb,
                self.resource,
                self.subresource,
                self.resource_label,
                self.api_group,
                self.namespace,
                self.name,
                self.request_uri,
                self.source_ip,
                self.user_agent,
            ) = values
        self.rules: tuple[str, ...] = ()
        self.severity = ""
        self._pending = pending
        self._start = start
        self._event: AuditEvent | None = None

    def __getattr__(self, name: str) -> object:
        ev = self._event
        if ev is None:
            ev = self._event = self._pending.event(self._start)
        return getattr(ev, name)


# The FIELDS of an event, for a Seen.
fields: Callable[[AuditEvent], tuple[object, ...]] = attrgetter(*FIELDS)


class HashedDeduper(Deduper):
    """The pipeline's Deduper, holding the 8-byte hashes of the keys
    (``hash((auditID, stage, stageTimestamp))``, which forked jobs compute
    as the parent does) in two generations of hash tables (see
    exporter.accel: in C, a lookup reads one slot of a table and makes no
    int object): files read whole (``Pipeline.process``, with keys) and
    files read in chunks (the jobs' hashes) share one window. Two keys of a
    window of n share a hash with a chance of about n**2 / 2**65 (one in a
    billion for the default window of 100,000)."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._current = new_hash_table()
        self._previous = new_hash_table()
        if capacity > 0:
            table_reserve(self._current, capacity)

    def _tables(self) -> tuple[object, object]:
        return self._current, self._previous

    def __contains__(self, key: Key) -> bool:
        return bool(hashes_in(self._tables(), array("q", [hash(key)])))

    def isdisjoint(self, keys: set[Key]) -> bool:
        return not hashes_in(self._tables(), array("q", [hash(k) for k in keys]))

    def update(self, keys: Iterable[Key]) -> None:
        if self.capacity <= 0:
            return  # remember nothing, as Deduper
        seen_before(self._current, array("q", [hash(k) for k in keys]), ())
        self._turn()

    def __len__(self) -> int:
        current, previous = (array("q", table_hashes(t)) for t in self._tables())
        return len(set(current).union(previous))

    def _turn(self) -> None:
        """A new generation when the current one holds ``capacity`` keys, as
        Deduper.update. The new table has room for them at once: grown from
        empty, it would rehash about twice as many keys as it takes."""
        if table_len(self._current) >= self.capacity:
            self._previous = self._current
            self._current = new_hash_table()
            table_reserve(self._current, self.capacity)

    def take_batch(self, hashes: array[int]) -> list[int]:
        """Deduplicate one batch given as its keys' hashes, as
        Pipeline.process does with keys: the positions of the duplicates
        (a hash in the window or earlier in the batch); the others are
        remembered. One pass in C over the batch (the parent runs this on
        every event of a replay with jobs)."""
        if self.capacity <= 0:
            return seen_before(new_hash_table(), hashes, ())
        repeated = seen_before(self._current, hashes, (self._previous,))
        self._turn()
        return repeated


@dataclass
class Partial:
    """A job's result for one chunk."""

    lines: int
    # every decoded event's dedupe key as its hash (see HashedDeduper), in
    # input order
    keys: array[int]
    # (line in the chunk, inputs, events) of the lines that are not exactly
    # one event (blank lines, refusals, documents written on one line)
    odd: list[tuple[int, int, int]]
    # positions (in keys) the job took as duplicates
    taken_as_duplicates: list[int]
    tally: RequestTally
    report: Report
    # the events some rule's condition holds for, in order, projected
    # (Detector.project), None for the idle ones (Detector.idle), which
    # are in ``idle`` (packed, with their positions: the parent reads them
    # only when a sequence may be in progress); where each starts in the
    # chunk (-1: in ``objects``, being redacted or out of a line that holds
    # several); the sensitive ones' FIELDS
    projected: list[Projected | None]
    idle: bytes | None
    # whether one of the projections may start a sequence (then the parent
    # reads the idle ones)
    starts_sequence: bool
    starts: array[int]
    objects: dict[int, AuditEvent]
    scanned_sensitive: dict[int, tuple[object, ...]]
    # the sensitive events among the others, each after how many scanned
    # ones, with its FIELDS and where it starts in the chunk (or itself)
    sensitive: list[tuple[int, tuple[object, ...], int | AuditEvent]]
    refusals: Refusals
    events: int
    future: int
    # event_lag_seconds' row: bucket counts, +Inf, sum
    lag: list[float] | None
    last_event: float | None


class _JobReport(Report):
    """A job's report: what does not depend on detection, and the sensitive
    requests whose row depends on it (their rank and severity: the ones
    Report.ordered ranks in the parent), collected in order instead. A
    sensitive request that no rule can give a severity that matters to its
    rank (significance.MATTERING_SEVERITIES: no rule of such a severity
    has its condition hold for it) keeps the rank it has here; a routine one
    (significance.RANK_ROUTINE) is counted here, as the parent would count
    it: in totals that do not depend on order. (Most of the sensitive
    requests a rule's condition holds for are of this kind: service
    accounts reading secrets, which an info-level rule describes.)"""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[AuditEvent] = []  # in the batch's order
        # the batch's events for which the condition of a rule of a
        # severity that matters held (Detector.scan), by id(): set before
        # the report sees the batch
        self.raisable: set[int] = set()

    def _sensitive(self, ev: AuditEvent, cats: tuple[str, ...]) -> None:
        if id(ev) not in self.raisable and rank(ev, cats) == RANK_ROUTINE:
            super()._sensitive(ev, cats)
        else:
            self.found.append(ev)


def _positions(events: list[AuditEvent], some: list[AuditEvent]) -> list[int]:
    """The positions in ``events`` of ``some`` of them, given in order:
    list.index from the last one found, which compares identities in C."""
    out: list[int] = []
    start = 0
    index = events.index
    for ev in some:
        start = index(ev, start)
        out.append(start)
        start += 1
    return out


@dataclass
class _Job:
    """What a job needs, made by the parent before it forks."""

    decoder: Decoder
    processors: list[Processor]  # redaction
    detector: Detector | None
    metrics_args: dict[str, object]
    # as the pipeline's observe_batches: False when nothing shows the
    # request families, the lag and the event counter (then only the
    # events stamped in the future are counted, as with --jobs 1)
    observe: bool = True
    # the positions (in the detector's rules) of the rules whose matches
    # have a severity that matters to a sensitive operation's rank
    mattering: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        rules = self.detector.rules if self.detector is not None else []
        self.mattering = frozenset(
            k for k, r in enumerate(rules) if r.rule.severity in MATTERING_SEVERITIES
        )


_JOB: _Job | None = None


def pack(records: list[tuple[int, Projected]]) -> bytes:
    """Idle projections (with their positions) as bytes: marshal's, which
    writes these tuples of strings and numbers several times faster than
    pickle does (a job packs a record for about a quarter of the
    simulator's events, and the parent seldom reads them), or pickle's for
    a record marshal cannot write (a group value of another type). The
    first byte says which."""
    try:
        return b"m" + marshal.dumps(records)
    except ValueError:
        return b"p" + pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> list[tuple[int, Projected]]:
    """What :func:`pack` packed."""
    body = memoryview(data)[1:]
    if data[:1] == b"m":
        return cast("list[tuple[int, Projected]]", marshal.loads(body))
    return cast("list[tuple[int, Projected]]", pickle.loads(body))


def _start(before: list[int], line: int, offset: int) -> int:
    """Where line ``line`` of a window that starts at ``offset`` starts in
    its chunk (-1 for -1: an event of a line that holds several)."""
    return offset + before[line] + line if line >= 0 else -1


def _windows(data: bytes, size: int) -> Iterator[tuple[int, int, list[bytes], bool | None, bool]]:
    """A chunk's lines, whole lines of about ``size`` bytes at a time: where
    the window starts in the chunk, the number of its first line, and its
    lines (split one window at a time, so that they are still in the cache
    when they are decoded: splitting a 16 MiB chunk at once cost the jobs a
    few percent more CPU time, and the windows are not copied out of the
    chunk first); then, as the reader's blocks (see replay._line_blocks),
    True when the window is ASCII (None: ask each line) and whether it
    holds a carriage return."""
    if not data:
        yield 0, 0, [b""], True, False
        return
    pos = number = 0
    total = len(data)
    while pos < total:
        end = data.find(b"\n", pos + size) + 1 if pos + size < total else 0
        if end <= 0:
            end = total
        # the window's last newline ends its last line
        lines = split_newlines(data, pos, end - 1 if data[end - 1] == 10 else end)
        ascii, cr = ascii_cr(data, pos, end)
        yield pos, number, lines, ascii or None, cr
        number += len(lines)
        pos = end


# Bytes read beyond a window's size to find the newline that ends it (the
# simulator's lines are about 900 bytes; a longer line reads on).
WINDOW_SLACK = 8 << 10


class _SpanChanged(Exception):
    """A span's file ended before the span did: it changed."""


def _span_windows(
    fd: int, span: Span, size: int
) -> Iterator[tuple[int, int, list[bytes], bool | None, bool]]:
    """What :func:`_windows` gives for the span's bytes, read from ``fd`` a
    window at a time (as the reader reads a file), so that a window's bytes
    are still in the cache when they are split and decoded; the whole
    chunk read first (up to 16 MiB) went through the cache before its first
    line was decoded. Raises _SpanChanged when the file is shorter."""
    total = span.length
    if not total:
        yield 0, 0, [b""], True, False
        return

    def read(size: int, at: int) -> bytes:
        try:
            data = pread_exactly(fd, size, span.offset + at)
        except OSError as e:
            raise _SpanChanged(span.path) from e
        if data is None:
            raise _SpanChanged(span.path)
        return data

    pos = number = 0
    while pos < total:
        block = read(min(total - pos, size + WINDOW_SLACK), pos)
        if pos + size < total:
            # the window ends after the first newline from ``size`` on
            look = size
            end = block.find(b"\n", look) + 1
            while end <= 0 and pos + len(block) < total:
                look = len(block)
                block += read(min(total - pos - look, 1 << 16), pos + look)
                end = block.find(b"\n", look) + 1
            if end <= 0:
                end = len(block)
        else:
            end = len(block)
        lines = split_newlines(block, 0, end - 1 if block[end - 1] == 10 else end)
        ascii, cr = ascii_cr(block, 0, end)
        yield pos, number, lines, ascii or None, cr
        number += len(lines)
        pos += end


def run_chunk(chunk: bytes | Span, duplicates: Sequence[int] | None = None) -> Partial | None:
    """Process one chunk (lines joined by newlines; refusals carry their
    line number in the chunk); None when a Span cannot be read (the parent
    reads it then). ``duplicates``: the positions to drop as duplicates,
    when the parent knows them; by default an event whose key came earlier
    in the chunk.

    The garbage collector does not run meanwhile: a chunk's events form
    next to no reference cycles (a few dozen in 250,000 of the simulator's
    events), and the collections' walks over the events in hand cost about
    3% of the jobs' CPU time. The first allocation after the chunk collects
    what it left."""
    if not gc.isenabled():
        return _run_chunk(chunk, duplicates)
    gc.disable()
    try:
        return _run_chunk(chunk, duplicates)
    finally:
        gc.enable()


def _run_chunk(chunk: bytes | Span, duplicates: Sequence[int] | None) -> Partial | None:
    if not isinstance(chunk, Span):
        return _run_windows(_windows(chunk, WINDOW_BYTES), duplicates)
    fd = chunk.open()
    if fd is None:
        return None  # the parent reads it
    try:
        return _run_windows(_span_windows(fd, chunk, WINDOW_BYTES), duplicates)
    except _SpanChanged:
        return None  # the parent reads it, and finds out
    finally:
        os.close(fd)


def _run_windows(
    windows: Iterator[tuple[int, int, list[bytes], bool | None, bool]],
    duplicates: Sequence[int] | None,
) -> Partial:
    job = _JOB
    assert job is not None, "run_chunk outside a replay with jobs"
    decode = job.decoder.decode_record
    limit = job.decoder.max_event_bytes
    refusals = Refusals()
    odd: list[tuple[int, int, int]] = []
    keys = array("q")
    seen = new_hash_table()  # the keys' hashes so far
    dropped: list[int] = []
    given = set(duplicates) if duplicates is not None else None
    metrics = AuditMetrics(None, **job.metrics_args)  # type: ignore[arg-type]
    tally = metrics.deferred = RequestTally()
    report = _JobReport()
    detector = job.detector
    projected: list[Projected | None] = []
    idle: list[tuple[int, Projected]] = []
    starts = array("q")
    objects: dict[int, AuditEvent] = {}
    scanned_sensitive: dict[int, tuple[object, ...]] = {}
    # the sensitive events no rule's condition held for, each with the
    # number of scanned events before it (the parent interleaves the two)
    sensitive: list[tuple[int, tuple[object, ...], int | AuditEvent]] = []
    starts_sequence = False
    mattering = job.mattering
    now = time.time()
    observe = metrics.observe_batch if job.observe else metrics.check_future
    fresh_count = 0
    number = 0  # lines before the window
    lines: list[bytes] = []
    # a window of lines at a time, decoded and processed as one batch while
    # its lines and events are still in the cache (how the parent batches
    # them for deduplication is the _Batcher's: nothing a job does depends
    # on where a batch ends)
    for offset, number, lines, ascii, cr in windows:
        # where the window's line i starts: offset + before[i] + i (the newlines)
        lengths = list(map(len, lines))
        before = list(accumulate(lengths, initial=0))
        # no line longer than the limit: the lines need not be measured one by one
        within = max(lengths, default=0) <= limit
        events: list[AuditEvent] = []
        at: list[int] = []  # each event's line in the window (-1: one of several)
        end = len(lines)
        i = 0
        while i < end:
            # the lines the fast path reads, a stretch at a time (as the
            # reader takes them), then the first it does not
            stop = fast_lines(lines, i, ascii, cr, within, limit, events, end - i)
            at.extend(range(i, stop))
            i = stop + 1
            if stop >= end:
                break
            line = lines[stop]
            if not line or line.isspace():
                odd.append((number + stop, 0, 0))
                continue
            if len(line) > limit:
                line = line[: limit + 1]  # as the reader cuts it (see _line_blocks)
            inputs = found = 0
            for item in decode(line):
                inputs += 1
                if type(item) is AuditEvent:
                    found += 1
                    events.append(item)
                    at.append(-1)
                else:
                    item.line = number + stop + 1  # type: ignore[union-attr]
                    refusals.add(item)  # type: ignore[arg-type]
            odd.append((number + stop, inputs, found))
        # duplicates: an event whose key came earlier in the chunk, or the
        # parent's verdicts
        base = len(keys)
        hashed = key_hashes(events)
        keys.frombytes(hashed)
        part = events
        if given is None:
            repeated = seen_before(seen, hashed, ())
            if repeated:
                dropped.extend(base + j for j in repeated)
                drop = set(repeated)
                keep = [j for j in range(len(events)) if j not in drop]
                part = [events[j] for j in keep]
                at = [at[j] for j in keep]
        elif given:
            keep = [j for j in range(len(events)) if base + j not in given]
            if len(keep) != len(events):
                part = [events[j] for j in keep]
                at = [at[j] for j in keep]
        if not part:
            continue
        fresh_count += len(part)
        for processor in job.processors:
            processor(part)
        scanned = detector.scan(part) if detector is not None else []
        report.raisable = {id(part[i]) for i, hits in scanned if not mattering.isdisjoint(hits)}
        report(part)
        # the events that a rule's condition held for and the sensitive
        # ones, in order: only these are visited, not the whole window
        marked = report.found
        sensitive_at: set[int] = set()
        visit: Sequence[tuple[int, tuple[int, ...] | None]] = scanned
        if marked:
            sensitive_at = set(_positions(part, marked))
            marked.clear()
            hit = dict(scanned)
            visit = [(i, hit.get(i)) for i in sorted(sensitive_at.union(hit))]
        for i, hits in visit:
            ev = part[i]
            if hits is not None:
                where = _start(before, at[i], offset) if ev.raw is not None else -1
                n = len(projected)
                record = detector.project(ev, hits)  # type: ignore[union-attr]
                if detector.idle(record):  # type: ignore[union-attr]
                    idle.append((n, record))
                    projected.append(None)
                else:
                    projected.append(record)
                    if not starts_sequence:
                        starts_sequence = detector.may_start_sequence(record)  # type: ignore[union-attr]
                starts.append(where)
                if where < 0:
                    objects[n] = ev
                if i in sensitive_at:
                    scanned_sensitive[n] = fields(ev)
            else:
                # a sensitive event no rule's condition held for (one
                # that is not counted as a request is nothing to
                # Report.ordered)
                where = _start(before, at[i], offset) if ev.raw is not None else -1
                sensitive.append((len(projected), fields(ev), ev if where < 0 else where))
        observe(part, "replay", now)
    if duplicates is not None:
        dropped = sorted(duplicates)
    lag = metrics.lag.values.get(("replay",))
    return Partial(
        lines=number + len(lines),
        keys=keys,
        odd=odd,
        taken_as_duplicates=dropped,
        tally=tally,
        report=report,
        projected=projected,
        idle=pack(idle) if idle else None,
        starts_sequence=starts_sequence,
        starts=starts,
        objects=objects,
        scanned_sensitive=scanned_sensitive,
        sensitive=sensitive,
        refusals=refusals,
        events=fresh_count,
        future=int(metrics.future.values.get(("replay",), 0)),
        lag=lag,
        last_event=metrics.last_event.get("replay"),
    )


@dataclass
class _Pending:
    """A chunk whose result came back and whose events' dedupe verdicts
    are not all known yet (its last batch may go on in the next chunks)."""

    chunk: bytes | Span
    partial: Partial
    fd: int | None
    # the decoder's decode_line, for the lines the fast path does not read
    decode: Callable[[bytes], AuditEvent]
    duplicates: list[int] = field(default_factory=list)
    _data: bytes | None = None

    @property
    def data(self) -> bytes:
        """The chunk's bytes (read again from the file for a Span)."""
        if isinstance(self.chunk, bytes):
            return self.chunk
        if self._data is None:
            data = self.chunk.read(self.fd)
            if data is None:
                raise OSError(f"{self.chunk.path}: changed while it was replayed")
            self._data = data
        return self._data

    def event(self, start: int) -> AuditEvent:
        """The event of the line that starts at ``start`` in the chunk,
        decoded again as the job decoded it (nothing in it was redacted)."""
        line = self.line(start)
        if line[-1:] == b"\r":
            line = line[:-1]
        return fast_event(line) or self.decode(line)

    def line(self, start: int) -> bytes:
        """The line that starts at ``start`` in the chunk."""
        chunk = self.chunk
        if isinstance(chunk, bytes) or self._data is not None:
            data = self.data
            end = data.find(b"\n", start)
            return data[start:] if end < 0 else data[start:end]
        assert self.fd is not None
        out = b""
        at, stop = chunk.offset + start, chunk.offset + chunk.length
        while at < stop:
            window = os.pread(self.fd, min(1 << 16, stop - at), at)
            if not window:
                break
            end = window.find(b"\n")
            if end >= 0:
                return out + window[:end]
            out += window
            at += len(window)
        return out


class _Batcher:
    """The batches read_batches would make (a batch ends after the line
    that brings it to ``batch_lines`` inputs), from the chunks' keys and
    odd lines; runs the Deduper on each as Pipeline.process does."""

    def __init__(self, dedupe: HashedDeduper, batch_lines: int) -> None:
        self.dedupe = dedupe
        self.batch_lines = batch_lines
        self.inputs = 0
        # the batch's keys, as runs (chunk, first position, count)
        self.runs: list[tuple[_Pending, int, int]] = []
        self.count = 0

    def feed(self, pending: _Pending) -> None:
        p = pending.partial
        at = 0  # next key
        line = 0  # next line
        for stop, inputs, events in [*p.odd, (p.lines, -1, 0)]:
            run = stop - line  # lines of one event each
            while run > 0:
                take = min(run, self.batch_lines - self.inputs)
                self.runs.append((pending, at, take))
                self.count += take
                at += take
                run -= take
                self.inputs += take
                if self.inputs >= self.batch_lines:
                    self.close()
            if inputs < 0:
                break
            if events:
                self.runs.append((pending, at, events))
                self.count += events
            at += events
            self.inputs += inputs
            if self.inputs >= self.batch_lines:
                self.close()
            line = stop + 1
        assert at == len(p.keys), "keys and lines disagree"

    def close(self) -> None:
        """End the batch: the Deduper's verdicts, as Pipeline.process gives them."""
        runs, count = self.runs, self.count
        self.runs, self.count, self.inputs = [], 0, 0
        if not count:
            return
        if len(runs) == 1:
            pending, at, n = runs[0]
            hashes = pending.partial.keys[at : at + n]
        else:
            hashes = array("q")
            for pending, at, n in runs:
                hashes += pending.partial.keys[at : at + n]
        repeated = self.dedupe.take_batch(hashes)
        if not repeated:
            return
        # each duplicate's run and position there
        k = 0
        base = 0  # of runs[k] in the batch
        for j in repeated:
            while j >= base + runs[k][2]:
                base += runs[k][2]
                k += 1
            pending, at, _ = runs[k]
            pending.duplicates.append(at + j - base)


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
        chunk_bytes: int | None = None,
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
        self.chunk_bytes = chunk_bytes or CHUNK_BYTES
        self.decoder = decoder
        self.batch_lines = batch_lines
        self.rechunked = 0  # chunks run again in the parent (duplicates across chunks)
        # the window every file shares, as hashes (what the jobs send)
        self.dedupe = HashedDeduper(pipeline.dedupe.capacity)
        pipeline.dedupe = self.dedupe
        self._lines = 0  # lines of the stream before the chunk merged next
        _JOB = _Job(decoder, before, self.detector, metrics_args, pipeline.observe_batches)
        self.pool: Jobs | None = Jobs(jobs, run_chunk)
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
        batcher = _Batcher(self.dedupe, self.batch_lines)
        inflight: deque[tuple[int, bytes | Span]] = deque()
        waiting: deque[_Pending] = deque()
        self._lines = 0
        fd: int | None = None
        chunks: Iterator[bytes | Span]
        if type(stream) is io.FileIO and isinstance(stream.name, str) and stream.seekable():
            # a plain file: the jobs read their spans of it themselves
            fd = stream.fileno()
            start = stream.tell() - len(head)
            chunks = file_chunks(
                stream,
                start,
                self.chunk_bytes,
                limit,
                largest=LARGEST_CHUNK * self.chunk_bytes,
                share=CHUNK_SHARE * self.jobs,
            )
        else:
            chunks = stream_chunks(head, stream, self.chunk_bytes, limit)
        ahead = self.jobs * AHEAD
        for number, chunk in enumerate(chunks):
            self.pool.send(number, chunk)
            inflight.append((number, chunk))
            while len(inflight) > ahead:
                self._next(inflight, batcher, waiting, fd, context, progress)
        while inflight:
            self._next(inflight, batcher, waiting, fd, context, progress)
        batcher.close()
        problem = getattr(stream, "problem", None)
        while waiting:
            self._merge(waiting.popleft(), context)
        if problem:
            extra = Refusals()
            extra.add(InvalidEvent("truncated_gzip", problem))
            self._count_refusals(extra, context)

    def _next(
        self,
        inflight: deque[tuple[int, bytes | Span]],
        batcher: _Batcher,
        waiting: deque[_Pending],
        fd: int | None,
        context: str,
        progress: Callable[[], None] | None,
    ) -> None:
        number, chunk = inflight.popleft()
        assert self.pool is not None
        partial = cast("Partial | None", self.pool.result(number))
        if partial is None:
            # the job could not open the file by its name: the parent reads
            # the span from its own descriptor and runs the chunk itself
            assert isinstance(chunk, Span)
            data = chunk.read(fd)
            if data is None:
                raise OSError(f"{chunk.path}: changed while it was replayed")
            chunk = data
            partial = run_chunk(data)
            assert partial is not None
        pending = _Pending(chunk, partial, fd, self.decoder.decode_line)
        batcher.feed(pending)
        waiting.append(pending)
        # the chunks before the batch still open (which may span several)
        # have every verdict
        still = batcher.runs[0][0] if batcher.runs else None
        while waiting and waiting[0] is not still:
            self._merge(waiting.popleft(), context)
        if progress is not None:
            progress()

    @staticmethod
    def _seen(values: Sequence[object], pending: _Pending, where: int | AuditEvent) -> AuditEvent:
        """An event a job saw: itself when it was sent, else a :class:`Seen`
        of ``values`` that decodes it again from where its line starts in
        the chunk."""
        if type(where) is not int:
            return where  # type: ignore[return-value]
        return Seen(values, pending, where)  # type: ignore[return-value]

    def _merge(self, pending: _Pending, context: str) -> None:
        """Take a chunk's result into the parent's pipeline and report."""
        p = pending.partial
        if sorted(pending.duplicates) != p.taken_as_duplicates:
            # a duplicate of an event in an earlier chunk (or not one after
            # all): this chunk again, with the parent's verdicts
            self.rechunked += 1
            again = run_chunk(pending.data, sorted(pending.duplicates))
            assert again is not None
            p = again
        metrics = self.metrics
        duplicates = len(p.taken_as_duplicates)
        projected, starts = p.projected, p.starts
        extra = p.scanned_sensitive
        detector = self.detector
        # the records to feed, and their positions among the scanned events
        records: list[Projected] = []
        positions: list[int] | None = None
        if detector is not None and projected:
            if p.idle is None:
                records = projected  # type: ignore[assignment]
            elif p.starts_sequence or detector.sequences_in_progress():
                full = list(projected)
                for i, record in unpack(p.idle):
                    full[i] = record
                records = full  # type: ignore[assignment]
            else:
                positions = [i for i, r in enumerate(projected) if r is not None]
                records = [projected[i] for i in positions]  # type: ignore[misc]
        made: dict[int, AuditEvent] = {}
        # a scanned event's record (an idle one is asked for only when read)
        by_position: Sequence[Projected | None] = records if positions is None else projected

        def scanned(i: int) -> AuditEvent:
            """The i-th scanned event as the parent needs it."""
            ev = made.get(i)
            if ev is not None:
                return ev
            where = starts[i]
            if where < 0:
                ev = made[i] = p.objects[i]
                return ev
            values = extra.get(i) or by_position[i][:4]  # type: ignore[index]
            seen = made[i] = Seen(values, pending, where)  # type: ignore[assignment]
            return seen  # type: ignore[return-value]

        report = self.report
        matched: list[int] = []
        if detector is not None and records:
            if positions is None:
                matched = detector.feed(records, scanned)
            else:
                at = positions
                matched = [at[j] for j in detector.feed(records, lambda j: scanned(at[j]))]
            for i in matched:
                report.detected(made[i])
        # the report's detection-dependent part, in input order, on the
        # events it does something with: the sensitive ones and the stages
        # a rule flagged that are not counted as requests (on any other
        # event Report.ordered does nothing)
        needed: Iterable[int] = extra
        if matched:
            needed = sorted({*extra, *(i for i in matched if not counts_as_request(made[i]))})
        k = 0
        for i in needed:
            while k < len(p.sensitive) and p.sensitive[k][0] <= i:
                _, values, where = p.sensitive[k]
                report.ordered(self._seen(values, pending, where))
                k += 1
            report.ordered(scanned(i))
        for _, values, where in p.sensitive[k:]:
            report.ordered(self._seen(values, pending, where))
        report.merge(p.report)
        report.duplicates += duplicates
        with metrics.lock:
            metrics.apply(p.tally)
            if p.events and self.pipeline.observe_batches:
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
        for sample in p.refusals.samples:
            if sample.line is not None:
                sample.line += self._lines
        self._lines += p.lines
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
            self.pool.close()
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
