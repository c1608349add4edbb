"""A durable, bounded, append-only disk queue for Loki entries.

Layout of the spool directory::

    0000000000000001.seg   segment files, records appended in order
    0000000000000002.seg
    ack                    position up to which Loki acknowledged everything
    acked                  records after that position Loki acknowledged too
    mark                   the last mark, once the segment holding it is gone

(the last three: exporter/loki/spoolstate.py)

A record is ``magic(2) | length(4) | crc32(4) | body`` with
``body = append time in ms (8) | payload``; the CRC covers the length and the
body, so a torn write, a zeroed block or a bit flip is detected. After a bad
record the reader looks for the next magic that starts a valid record, so one
damaged record costs only itself (counted in ``corrupt_records``). A torn
tail of the last segment (power loss mid-append) is cut off at start-up so
appends continue on a clean end.

A *mark* is a record whose append time has its top bit set: a source's
resume position (the log tailer's checkpoint), appended in the same write as
the batch it follows, so that after a kill -9 the batch and the position
are both there or neither is: the batch's entries carry the next bit, and
such entries at the end of the spool without their mark (a write cut
short, in one segment or over several) are cut off at start-up like a torn
record. Marks are not entries: readers skip them and
:meth:`Spool.last_mark` gives the newest back. Before the segment holding
the newest mark is deleted, the mark is written to ``mark`` (write, fsync,
rename), so acknowledging everything does not lose it.

Entries leave the spool only through :meth:`Spool.ack`, after Loki answered
for their batch: the ack position is written to ``ack`` (write, fsync,
rename) before whole segments behind it are deleted. Parallel pushes
answer records out of order: the positions of records after the ack
position that Loki answered for already are written to ``acked`` (write,
fsync, rename; after ``ack``, so that a crash between the two costs only
resending those records). On the next start the reader skips them, and
everything else after the ack position is read again: a record is resent
only when Loki answered for it after the last ack was written. A damaged
``acked`` file is ignored (its records are resent); positions in it that
are not the start of a record in the spool (the spool was cut, or
emptied and started again) are dropped at start-up, before any append.

Thread safety: writers (the pipeline), one reader (the sender thread), and
scrapes reading :meth:`stats`. The spool's state is under one lock; the
disk I/O of an append (writing, fsync) and of an ack (the ack file,
deleting segments) runs outside it, appends one at a time and acks one at
a time, so that the sender does not wait for an append's fsync nor an
append for an ack's. Records become visible to the reader, and count, only
once written (and synced, per the policy).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .spoolstate import Position, StateFiles

log = logging.getLogger(__name__)

MAGIC = b"\xa7\x5d"
_HEADER = struct.Struct("<2sII")  # magic, body length, crc32(length bytes + body)
_STAMP = struct.Struct("<Q")  # append time, milliseconds since the epoch
# Set in the append time of a mark record (a time in ms never reaches it),
# and of the entries of a batch that a mark ends.
MARK_FLAG = 1 << 63
MARKED_FLAG = 1 << 62
_TIME = MARKED_FLAG - 1
_LENGTH = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _STAMP.size
MAX_RECORD = 64 << 20
_SEGMENT_NAME = re.compile(r"^(\d{16})\.seg$")
_READ_CHUNK = 1 << 20


class Record(NamedTuple):
    payload: bytes
    append_ts: float
    # The position just after this record: acknowledging it acknowledges
    # this record and all before it.
    end: Position
    # Where it starts: what :meth:`Spool.ack` takes to acknowledge this
    # record alone, ahead of the records before it.
    start: Position


class Chunk(NamedTuple):
    """Records read for a batch, without a Record per entry (the sender's
    read): their payloads and start positions, when the first was appended,
    the position just after the last record read or skipped (None when
    there was none), the position to read on from, and how many records
    were skipped because Loki had answered for them before a restart."""

    payloads: list[bytes]
    starts: list[Position]
    first_ts: float | None
    end: Position | None
    cursor: Position
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class SpoolStats:
    bytes: int  # unacknowledged record bytes on disk
    disk_bytes: int  # segment files, acknowledged head included
    entries: int
    oldest_append_ts: float | None
    corrupt_records: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class _Good:
    start: int
    end: int
    ts: float
    payload: bytes
    flags: int


@dataclass(frozen=True, slots=True)
class _Bad:
    start: int
    end: int
    torn: bool  # runs to the end of the data: an interrupted write


def _record_ok(data: bytes | memoryview, pos: int) -> int:
    """The end of a valid record at ``pos``, or -1."""
    if len(data) - pos < HEADER_SIZE:
        return -1
    magic: bytes
    length: int
    crc: int
    magic, length, crc = _HEADER.unpack_from(data, pos)
    if magic != MAGIC or length < _STAMP.size or length > MAX_RECORD:
        return -1
    end = pos + _HEADER.size + length
    if end > len(data):
        return -1
    check = zlib.crc32(bytes(data[pos + 2 : pos + 6]))
    if zlib.crc32(data[pos + _HEADER.size : end], check) != crc:
        return -1
    return end


@dataclass(slots=True)
class _Run:
    """While the segments are read in order at start-up: the entries of a
    marked batch whose mark has not come (yet), from ``seg``/``start`` to
    ``end``."""

    seg: int = 0
    start: int = 0
    entries: int = 0
    end: Position = (0, -1)

    def see(self, seg: int, item: _Good) -> None:
        if item.flags & MARK_FLAG or not item.flags & MARKED_FLAG:
            self.entries = 0
            return
        if not self.entries:
            self.seg, self.start = seg, item.start
        self.entries += 1
        self.end = (seg, item.end)


def _parse(data: bytes, start: int) -> Iterator[_Good | _Bad]:
    pos = start
    n = len(data)
    while pos < n:
        end = _record_ok(data, pos)
        if end >= 0:
            (ms,) = _STAMP.unpack_from(data, pos + _HEADER.size)
            yield _Good(pos, end, (ms & _TIME) / 1000.0, data[pos + HEADER_SIZE : end], ms & ~_TIME)
            pos = end
            continue
        # Resynchronise on the next magic that starts a valid record.
        nxt = data.find(MAGIC, pos + 1)
        while nxt >= 0 and _record_ok(data, nxt) < 0:
            nxt = data.find(MAGIC, nxt + 1)
        if nxt < 0:
            yield _Bad(pos, n, True)
            return
        yield _Bad(pos, nxt, False)
        pos = nxt


def encode(payload: bytes, append_ts: float) -> bytes:
    stamp = _STAMP.pack(int(append_ts * 1000))
    return _head(payload, stamp) + payload


def _head(payload: bytes, stamp: bytes) -> bytes:
    """A record up to its payload: header and append time."""
    length = len(payload) + _STAMP.size
    crc = zlib.crc32(payload, zlib.crc32(stamp, zlib.crc32(_LENGTH.pack(length))))
    return _HEADER.pack(MAGIC, length, crc) + stamp


class Spool:
    def __init__(
        self,
        directory: str,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
        fsync: str = "always",
        fsync_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.clock = clock
        self._lock = threading.RLock()
        # Notified on every append and ack; the sender waits on it.
        self.changed = threading.Condition(self._lock)
        self._sizes: dict[int, int] = {}  # segment id -> committed size, in id order
        self._ack: Position = (0, 0)
        # Starts of records after _ack that Loki answered for (the acked file).
        self._acked: set[Position] = set()
        # Those of them found at start-up: the reader skips them. Replaced,
        # never changed in place, so a reader may use the one it took.
        self._skip: frozenset[Position] = frozenset()
        self._entries = 0
        self._corrupt = 0
        self._known_bad: dict[Position, int] = {}  # start -> end of damage already counted
        self._oldest: float | None = None
        # The newest mark, and whether the mark file holds it.
        self._mark: bytes | None = None
        self._mark_saved = True
        # False when _oldest must be read from the head record (after an
        # ack), which stats() does when asked rather than every ack.
        self._oldest_known = True
        # Serialises acks: their file writes run outside _lock.
        self._ack_lock = threading.Lock()
        # Serialises appends and guards the active segment's descriptor: an
        # append writes (and fsyncs) outside _lock, so that the sender's
        # reads and acks do not wait for the disk. Taken before _lock.
        self._append_lock = threading.Lock()
        self._active = 0
        self._fd: int | None = None
        self._dirty = False
        self._last_sync = clock()
        self._closed = False
        # The segment the sender reads, kept open between reads: (path, fd).
        self._reading: tuple[str, int] | None = None
        self._read_lock = threading.Lock()
        os.makedirs(directory, exist_ok=True)
        self._files = StateFiles(directory, fsync)
        self._recover()

    # --- paths ---------------------------------------------------------------

    def _path(self, seg: int) -> str:
        return os.path.join(self.directory, f"{seg:016d}.seg")

    def _sync_dir(self) -> None:
        self._files.sync_dir()

    def _write_ack(self, pos: Position) -> None:
        self._files.write_ack(pos)

    def _write_acked(self, positions: set[Position]) -> None:
        self._files.write_acked(positions)

    # --- start-up -----------------------------------------------------------

    def _recover(self) -> None:
        segs = sorted(
            int(m.group(1))
            for name in os.listdir(self.directory)
            if (m := _SEGMENT_NAME.match(name)) is not None
        )
        ack = self._files.read_ack()
        answered = self._files.read_acked()
        skip: set[Position] = set()
        if ack is not None:
            for seg in [s for s in segs if s < ack[0]]:
                os.unlink(self._path(seg))
            segs = [s for s in segs if s >= ack[0]]
        run = _Run()
        for i, seg in enumerate(segs):
            with open(self._path(seg), "rb") as f:
                data = f.read()
            start = 0
            if ack is not None and seg == ack[0]:
                start = ack[1] if ack[1] <= len(data) else 0
            size = len(data)
            last = i == len(segs) - 1
            for item in _parse(data, start):
                if type(item) is _Good:
                    run.see(seg, item)
                    if item.flags & MARK_FLAG:
                        self._mark = item.payload
                        self._mark_saved = False
                        continue
                    if (seg, item.start) in answered:
                        skip.add((seg, item.start))
                        continue
                    self._entries += 1
                    if self._oldest is None:
                        self._oldest = item.ts
                    continue
                assert type(item) is _Bad
                self._corrupt += 1
                if item.torn and last:
                    size = item.start
                    log.warning(
                        "spool: cut a torn record off the end of the last segment",
                        extra={
                            "segment": seg,
                            "offset": item.start,
                            "bytes": item.end - item.start,
                        },
                    )
                else:
                    self._known_bad[(seg, item.start)] = item.end
                    log.warning(
                        "spool: skipping a damaged region",
                        extra={
                            "segment": seg,
                            "offset": item.start,
                            "bytes": item.end - item.start,
                        },
                    )
            if size != len(data):
                with open(self._path(seg), "r+b") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())
            self._sizes[seg] = size
        if run.entries and segs and run.end == (segs[-1], self._sizes[segs[-1]]):
            segs = self._cut(run, segs, skip)
        self._recover_acked(answered, skip)
        if self._mark is None:
            self._mark = self._files.read_mark()
            self._mark_saved = True
        if segs:
            first = segs[0]
            self._ack = (first, ack[1] if ack is not None and ack[0] == first else 0)
            if self._ack[1] > self._sizes[first]:
                self._ack = (first, 0)
            self._active = segs[-1]
        else:
            self._active = ack[0] if ack is not None else 0
            self._ack = (self._active, 0)
        if self._entries or self._corrupt:
            log.info(
                "spool recovered",
                extra={
                    "dir": self.directory,
                    "entries": self._entries,
                    "segments": len(segs),
                    "corrupt_records": self._corrupt,
                },
            )

    def _recover_acked(self, answered: set[Position], skip: set[Position]) -> None:
        """Keep of the acked file's positions those that start a record
        after the ack position (``skip``), and rewrite the file when it held
        others: stale positions could name records appended later."""
        self._acked = set(skip)
        self._skip = frozenset(skip)
        if answered != skip:
            self._write_acked(skip)
        if skip:
            log.info(
                "spool: records Loki answered for before the restart are not sent again",
                extra={"dir": self.directory, "entries": len(skip)},
            )

    def _cut(self, run: _Run, segs: list[int], skip: set[Position]) -> list[int]:
        """Cut off ``run``, entries at the end of the spool without their
        mark (kill -9 in the middle of a marked batch's write): their source
        reads them again from the mark before them. The segments left.
        ``skip`` (the answered records, not counted as entries) loses the
        ones cut off."""
        for seg in [s for s in segs if s > run.seg]:
            os.unlink(self._path(seg))
            del self._sizes[seg]
        with open(self._path(run.seg), "r+b") as f:
            f.truncate(run.start)
            os.fsync(f.fileno())
        self._sizes[run.seg] = run.start
        gone = {p for p in skip if p >= (run.seg, run.start)}
        skip -= gone
        self._entries -= run.entries - len(gone)
        if not self._entries:
            self._oldest = None
        self._known_bad = {k: v for k, v in self._known_bad.items() if k < (run.seg, run.start)}
        log.warning(
            "spool: cut a batch whose mark was never written off the end",
            extra={"segment": run.seg, "offset": run.start, "entries": run.entries},
        )
        self._sync_dir()
        return [s for s in segs if s <= run.seg]

    # --- writing --------------------------------------------------------------

    def _open_active(self) -> int:
        if self._fd is not None:
            return self._fd
        if self._active not in self._sizes or self._sizes[self._active] >= self.segment_bytes:
            if self._active in self._sizes:
                self._active += 1
            self._fd = os.open(
                self._path(self._active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
            self._sizes[self._active] = os.fstat(self._fd).st_size
            self._sync_dir()
        else:
            self._fd = os.open(self._path(self._active), os.O_WRONLY | os.O_APPEND)
        return self._fd

    def _close_active(self) -> None:
        if self._fd is not None:
            if self._dirty and self.fsync != "never":
                os.fdatasync(self._fd)
            self._dirty = False
            os.close(self._fd)
            self._fd = None

    def append(
        self, payloads: Sequence[bytes], mark: bytes | None = None, *, check_room: bool = True
    ) -> bool:
        """Store all of ``payloads``, then ``mark`` if given, in one write,
        durably (per the fsync policy) and return True, or store none and
        return False when they do not fit (see :meth:`admits`; not checked
        when ``check_room`` is False: the caller admitted them already) or
        the write fails."""
        if not payloads and mark is None:
            return True
        now = self.clock()
        ms = int(now * 1000)
        stamp = _STAMP.pack(ms if mark is None else ms | MARKED_FLAG)
        heads = [_head(p, stamp) for p in payloads]
        entries = len(payloads)
        if mark is not None:
            heads.append(_head(mark, _STAMP.pack(ms | MARK_FLAG)))
            payloads = [*payloads, mark]
        total = sum(map(len, payloads)) + HEADER_SIZE * len(payloads)
        with self._append_lock:
            with self._lock:
                if self._closed:
                    return False
                if check_room and not self._admits(total):
                    return False
            try:
                self._write(heads, payloads, total, now, entries)
            except OSError as e:
                log.error("spool write failed", extra={"dir": self.directory, "error": str(e)})
                return False
            if mark is not None:
                with self._lock:
                    self._mark = mark
                    self._mark_saved = False
        return True

    def admits(self, nbytes: int) -> bool:
        """Whether a batch of ``nbytes`` (records included) fits now."""
        with self._lock:
            return self._admits(nbytes)

    def _admits(self, nbytes: int) -> bool:
        # A batch larger than the whole spool could never fit: take it when
        # nothing is waiting, or its source would wait forever (the tailer
        # hands over up to 1000 lines at once). The overshoot is bounded by
        # one batch.
        return sum(self._sizes.values()) + nbytes <= self.max_bytes or not self._entries

    def last_mark(self) -> bytes | None:
        """The newest mark appended (in this or an earlier run), or None."""
        with self._lock:
            return self._mark

    def _write(
        self,
        heads: list[bytes],
        payloads: Sequence[bytes],
        total: int,
        now: float,
        entries: int,
    ) -> None:
        """Records made of ``heads[i] + payloads[i]``, ``total`` bytes in all,
        the first ``entries`` of them entries (the rest marks), with
        _append_lock held. Each segment's part is written (and synced, per
        the policy) outside _lock, then published under it: its size, so
        readers see it, and its count."""
        i = 0
        n = len(payloads)
        while i < n:
            with self._lock:
                fd = self._open_active()
                seg = self._active
                size = self._sizes[seg]
            if size + total <= self.segment_bytes:
                j = n  # the rest fits this segment (the common case)
            else:
                # Fill this segment up to its size (at least one record per segment).
                j = i
                chunk = 0
                while j < n and (
                    j == i or size + chunk + HEADER_SIZE + len(payloads[j]) <= self.segment_bytes
                ):
                    chunk += HEADER_SIZE + len(payloads[j])
                    j += 1
            parts: list[bytes] = [b""] * (2 * (j - i))
            parts[0::2] = heads[i:j]
            parts[1::2] = payloads[i:j]
            data = b"".join(parts)
            total -= len(data)
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                if self.fsync == "always":
                    os.fdatasync(fd)
                else:
                    self._dirty = True
            except OSError:
                # Leave no partial record behind: the next start would count it.
                os.ftruncate(fd, size)
                raise
            with self._lock:
                self._sizes[seg] = size + len(data)
                self._entries += min(j, entries) - min(i, entries)
                if self._oldest is None and self._oldest_known and i < entries:
                    self._oldest = now
                self.changed.notify_all()
            if size + len(data) >= self.segment_bytes:
                self._close_active()
            i = j
        if self.fsync == "interval":
            self._sync_due()

    def sync_if_due(self) -> None:
        """For the ``interval`` policy: fsync when the interval has passed
        (unless an append is writing: it syncs when due itself)."""
        if self.fsync != "interval" or not self._dirty:
            return
        if not self._append_lock.acquire(blocking=False):
            return
        try:
            self._sync_due()
        finally:
            self._append_lock.release()

    def _sync_due(self) -> None:
        """sync_if_due with _append_lock held."""
        if not self._dirty or self._fd is None:
            return
        now = self.clock()
        if now - self._last_sync >= self.fsync_interval:
            os.fdatasync(self._fd)
            self._dirty = False
            self._last_sync = now

    # --- reading -------------------------------------------------------------------

    def head(self) -> Position:
        """The first unacknowledged position."""
        with self._lock:
            return self._ack

    def available(self, pos: Position) -> bool:
        """Whether anything was written after ``pos``."""
        with self._lock:
            seg, off = pos
            if off < self._sizes.get(seg, 0):
                return True
            return any(size > 0 for s, size in self._sizes.items() if s > seg)

    def _next_segment(self, seg: int) -> int | None:
        later = [s for s in self._sizes if s > seg]
        return min(later) if later else None

    def read(self, pos: Position, max_bytes: int) -> tuple[list[Record], Position]:
        """Records from ``pos`` on, about ``max_bytes`` of payload (at least
        one record when there is one), and the position after them."""
        out: list[bytes] = []
        starts: list[Position] = []
        marks: list[tuple[float, Position]] = []
        pos, _, _ = self._read(pos, max_bytes, out, starts, marks, True)
        return [
            Record(p, ts, end, start)
            for p, start, (ts, end) in zip(out, starts, marks, strict=True)
        ], pos

    def read_chunk(self, pos: Position, max_bytes: int) -> Chunk:
        """What :meth:`read` reads, as a :class:`Chunk`."""
        out: list[bytes] = []
        starts: list[Position] = []
        marks: list[tuple[float, Position]] = []
        pos, end, skipped = self._read(pos, max_bytes, out, starts, marks, False)
        return Chunk(out, starts, marks[0][0] if marks else None, end, pos, skipped)

    def _read(
        self,
        pos: Position,
        max_bytes: int,
        out: list[bytes],
        starts: list[Position],
        marks: list[tuple[float, Position]],
        every: bool,
    ) -> tuple[Position, Position | None, int]:
        """Payloads into ``out``, their positions into ``starts``, (append
        time, end) into ``marks`` for each (``every``) or for the first
        only; (next position, end of the last record read or skipped,
        records skipped as answered before a restart)."""
        last: Position | None = None
        budget = max_bytes
        skipped = 0
        while budget > 0:
            with self._lock:
                seg, off = pos
                if seg not in self._sizes:
                    nxt = self._next_segment(seg)
                    if nxt is None:
                        return pos, last, skipped
                    pos = (nxt, 0)
                    continue
                size = self._sizes[seg]
                if off >= size:
                    nxt = self._next_segment(seg)
                    if nxt is None:
                        return pos, last, skipped
                    pos = (nxt, 0)
                    continue
                path = self._path(seg)
                known = dict(self._known_bad)
                skip = self._skip
            want = min(size - off, max(budget + HEADER_SIZE * 64, _READ_CHUNK))
            data = self._pread(path, off, want)
            got, consumed, end, n = self._records(
                seg, off, data, size, out, starts, marks, every, budget, known, skip
            )
            skipped += n
            if consumed == 0 and not got and out:
                break  # the next record does not fit this read
            if consumed == 0 and not got:
                # A single record larger than the chunk: read exactly it.
                if len(data) >= _HEADER.size:
                    _, length, _ = _HEADER.unpack_from(data, 0)
                    need = _HEADER.size + length
                    if length <= MAX_RECORD and off + need <= size:
                        data = self._pread(path, off, need)
                        got, consumed, end, n = self._records(
                            seg, off, data, size, out, starts, marks, every, budget, known, skip
                        )
                        skipped += n
                if consumed == 0:
                    # Damage up to the end of what was written: skip it all.
                    self._count_bad(seg, off, size, known)
                    consumed = size - off
            if end >= 0:
                last = (seg, off + end)
            pos = (seg, off + consumed)
            budget -= got
            if got == 0 and consumed == 0:
                break
        return pos, last, skipped

    def _pread(self, path: str, off: int, n: int) -> bytes:
        with self._read_lock:
            if self._reading is None or self._reading[0] != path:
                self._close_reading()
                self._reading = (path, os.open(path, os.O_RDONLY))
            return os.pread(self._reading[1], n, off)

    def _close_reading(self, path: str | None = None) -> None:
        """Close the segment kept open for reading (only if it is ``path``)."""
        if self._reading is not None and path in (None, self._reading[0]):
            fd = self._reading[1]
            self._reading = None
            os.close(fd)

    def _records(
        self,
        seg: int,
        base: int,
        data: bytes,
        size: int,
        out: list[bytes],
        starts: list[Position],
        marks: list[tuple[float, Position]],
        every: bool,
        budget: int,
        known: dict[Position, int],
        skip: frozenset[Position],
    ) -> tuple[int, int, int, int]:
        """Append the payloads of whole records from ``data`` (at ``base``)
        to ``out``, their positions to ``starts`` and their (append time,
        end) to ``marks``, for every record or for the first; pass over
        those in ``skip``. Return (payload bytes taken, bytes consumed, end
        of the last record taken or skipped or -1, records skipped), offsets
        relative to ``base``."""
        got = 0
        skipped = 0
        pos = 0
        last = -1
        n = len(data)
        view = memoryview(data)
        unpack = _HEADER.unpack_from
        stamp = _STAMP.unpack_from
        crc32 = zlib.crc32
        hsize = _HEADER.size
        while pos < n and got < budget:
            # The common case inline (this loop runs once per entry sent).
            if n - pos >= HEADER_SIZE:
                magic, length, crc = unpack(data, pos)
                end = pos + hsize + length
                if (
                    magic == MAGIC
                    and _STAMP.size <= length <= MAX_RECORD
                    and end <= n
                    and crc32(view[pos + hsize : end], crc32(view[pos + 2 : pos + 6])) == crc
                ):
                    ms = stamp(data, pos + hsize)[0]
                    if ms & MARK_FLAG:
                        pos = last = end  # a mark: acknowledged with the entries around it
                        continue
                    if skip and (seg, base + pos) in skip:
                        skipped += 1  # Loki answered for it before a restart
                        pos = last = end
                        continue
                    out.append(data[pos + HEADER_SIZE : end])
                    starts.append((seg, base + pos))
                    if every or not marks:
                        marks.append(((ms & _TIME) / 1000.0, (seg, base + end)))
                    got += end - pos - HEADER_SIZE
                    pos = last = end
                    continue
            # Incomplete at the end of this chunk (but not of the file): stop here.
            if base + n < size and n - pos >= _HEADER.size:
                magic, length, _ = _HEADER.unpack_from(data, pos)
                if magic == MAGIC and pos + _HEADER.size + length > n and length <= MAX_RECORD:
                    break
            if base + n < size and n - pos < _HEADER.size:
                break
            bad_end = known.get((seg, base + pos))
            if bad_end is None:
                nxt = data.find(MAGIC, pos + 1)
                while nxt >= 0 and _record_ok(data, nxt) < 0:
                    nxt = data.find(MAGIC, nxt + 1)
                if nxt < 0:
                    if base + n < size:
                        break  # maybe the next chunk holds the resync point
                    nxt = n
                self._count_bad(seg, base + pos, base + nxt, known)
                bad_end = base + nxt
            pos = bad_end - base
        return got, pos, last, skipped

    def _count_bad(self, seg: int, start: int, end: int, known: dict[Position, int]) -> None:
        if (seg, start) in known:
            return
        with self._lock:
            self._known_bad[(seg, start)] = end
            self._corrupt += 1
        known[(seg, start)] = end
        log.warning(
            "spool: skipping a damaged record",
            extra={"segment": seg, "offset": start, "bytes": end - start},
        )

    # --- acknowledging -------------------------------------------------------

    def ack(self, pos: Position | None, count: int, acked: Iterable[Position] = ()) -> None:
        """Loki has everything before ``pos`` (None: the head stays where it
        is) and the records starting at the positions ``acked`` after it;
        ``count`` records were answered for since the last ack.

        The ack file (and then the acked file, when ``acked`` adds records
        after the head) is written and the segments behind it deleted
        outside the lock, so appends do not wait for that I/O; the records
        count as gone (:meth:`empty`) only once the files are written."""
        with self._ack_lock:
            with self._lock:
                before = self._ack
                if pos is None:
                    pos = before
                ahead = [p for p in acked if p >= pos]
                seg, off = pos
                left = max(0, self._entries - count)
                if self._next_segment(seg) is None and off >= self._sizes.get(seg, 0):
                    # Nothing is left (records found damaged while reading were
                    # never handed out, so the count may still hold them).
                    left = 0
                # Taken off once the ack is written; appends may come meanwhile.
                drop = self._entries - left
                if (
                    seg == self._active
                    and off >= self._sizes.get(seg, 0)
                    and off > 0
                    and self._append_lock.acquire(blocking=False)
                ):
                    # Everything is acknowledged: start the next append on a new
                    # segment so this one can go (not while an append is
                    # writing: then it is not everything for long).
                    try:
                        self._close_active()
                        self._active += 1
                        pos = (self._active, 0)
                    finally:
                        self._append_lock.release()
                self._ack = pos
                moved = pos != before
                done = [s for s in self._sizes if s < pos[0]]
                for s in done:
                    del self._sizes[s]
                self._known_bad = {k: v for k, v in self._known_bad.items() if k[0] >= pos[0]}
                if moved and self._acked:
                    # Behind the head now: a stale copy in the file is harmless.
                    self._acked = {p for p in self._acked if p >= pos}
                    if self._skip:
                        self._skip = frozenset(p for p in self._skip if p >= pos)
                snapshot: set[Position] | None = None
                if ahead:
                    self._acked.update(ahead)
                    snapshot = set(self._acked)
            if done:
                with self._lock:
                    mark = None if self._mark_saved else self._mark
                if mark is not None:
                    # The newest mark may be in a segment about to go; saved
                    # before the ack file, whose start-up deletes them unread.
                    self._files.write_mark(mark)
                    with self._lock:
                        if self._mark is mark:
                            self._mark_saved = True
            if moved:
                self._write_ack(pos)
            if snapshot is not None:
                self._write_acked(snapshot)
            for s in done:
                with self._read_lock:
                    self._close_reading(self._path(s))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(s))
            with self._lock:
                self._entries = max(0, self._entries - drop)
                self._oldest = None
                self._oldest_known = self._entries == 0
                self.changed.notify_all()

    def _peek_ts(self, pos: Position) -> float | None:
        seg, off = pos
        while True:
            if seg not in self._sizes or off >= self._sizes[seg]:
                nxt = self._next_segment(seg)
                if nxt is None:
                    return None
                seg, off = nxt, 0
                continue
            data = self._pread(self._path(seg), off, HEADER_SIZE)
            if len(data) == HEADER_SIZE and data[:2] == MAGIC:
                (ms,) = _STAMP.unpack_from(data, _HEADER.size)
                return float(ms & _TIME) / 1000.0
            return None

    # --- state ------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        with self._lock:
            if not self._oldest_known:
                self._oldest = self._peek_ts(self._ack) if self._entries else None
                self._oldest_known = True
            disk = sum(self._sizes.values())
            head = self._ack[1] if self._ack[0] in self._sizes else 0
            return SpoolStats(
                bytes=disk - head,
                disk_bytes=disk,
                entries=self._entries,
                oldest_append_ts=self._oldest,
                corrupt_records=self._corrupt,
                max_bytes=self.max_bytes,
            )

    def has_room(self, nbytes: int) -> bool:
        with self._lock:
            return sum(self._sizes.values()) + nbytes <= self.max_bytes

    def empty(self) -> bool:
        with self._lock:
            return self._entries == 0

    def close(self) -> None:
        with self._append_lock, self._lock:
            self._close_active()
            with self._read_lock:
                self._close_reading()
            self._closed = True
            self.changed.notify_all()
