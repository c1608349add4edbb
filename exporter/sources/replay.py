"""The replay source: historical audit logs (files, ``.gz``, stdin) read as
fast as possible, as JSON lines or as one JSON document."""

from __future__ import annotations

import io
import os
import stat
import sys
import time
from collections.abc import Iterator
from typing import IO, cast

import orjson

from ..accel import split_newlines
from ..event import AuditEvent, Batch, Decoder, InvalidEvent, fast_lines, is_document, loads
from ..gzstream import MAGIC, GzipStream

# Lines per batch and bytes per read: small enough that a batch's lines
# and events (each stage walks them all in turn: decode, redaction,
# detection, the report, the metrics) stay in a core's cache. On the
# simulator's million events, batches of 250 lines read 256 KiB at a time
# took a median 5.4 s of CPU time over 5 runs, and 1,000 lines read a
# megabyte at a time 7.2 s (5.5 to 8.7 s: the larger batches also
# suffered most from other processes' use of the shared cache).
BATCH_LINES = 250
SNIFF_BYTES = 1 << 16
READ_BYTES = 256 << 10


class ReplayJobFailed(Exception):
    """A job of ``replay --jobs`` failed or ended: the replay's result would
    be incomplete, so there is none."""


class Progress:
    """A one-line progress indicator on stderr, only when it is a terminal."""

    def __init__(self, total_bytes: int | None, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.total = total_bytes
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, done_bytes: int, events: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        rate = events / max(now - self.start, 1e-9)
        size = f"{done_bytes / 1e6:,.1f} MB"
        if self.total:
            pct = min(100.0, 100.0 * done_bytes / self.total)
            width = 30
            filled = int(width * pct / 100)
            size = f"[{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}% {size}"
        self.stream.write(f"\r{size}  {events:,} events  {rate:,.0f}/s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class _Position:
    """The bytes read so far from a plain file: its position."""

    def __init__(self, raw: io.FileIO) -> None:
        self.raw = raw
        self.done = 0

    @property
    def count(self) -> int:
        if not self.raw.closed:
            self.done = self.raw.tell()
        return self.done


def open_input(path: str) -> tuple[IO[bytes], GzipStream | _Position | None, int | None]:
    """(binary stream, byte counter, total size) for a path, ``.gz`` or ``-``.

    A compressed input (named ``.gz`` or starting with gzip's magic number)
    is read up to its last recoverable byte (see :class:`GzipStream`). A FIFO,
    a pipe (``/dev/stdin``, ``<(...)``) or any other file that cannot seek is
    read as a stream: no size, no position."""
    if path == "-":
        stdin = sys.stdin.buffer
        if isinstance(stdin, io.BufferedReader) and stdin.peek(len(MAGIC))[: len(MAGIC)] == MAGIC:
            gz = GzipStream(stdin)
            return cast(IO[bytes], gz), gz, None
        return stdin, None, None
    raw = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the caller
    try:
        st = os.fstat(raw.fileno())
        regular = stat.S_ISREG(st.st_mode) and raw.seekable()
        stream: IO[bytes] = raw if regular else io.BufferedReader(raw, READ_BYTES)
        if regular:
            magic = os.pread(raw.fileno(), len(MAGIC), 0)
        else:
            magic = cast(io.BufferedReader, stream).peek(len(MAGIC))[: len(MAGIC)]
    except BaseException:
        raw.close()
        raise
    size = st.st_size if regular else None
    if path.endswith(".gz") or magic == MAGIC:
        gz = GzipStream(stream)
        return cast(IO[bytes], gz), gz, size
    # read_batches reads READ_BYTES at a time: no buffer needed in between
    return stream, _Position(raw) if regular else None, size


def read_batches(
    stream: IO[bytes], decoder: Decoder, batch_lines: int = BATCH_LINES
) -> Iterator[Batch]:
    """Batches of decoded items from JSON lines, or from one JSON document
    (an Event, an EventList, an array, pretty-printed or on one line) when
    the input starts with one. A batch holds at most ``batch_lines`` inputs,
    its refusals as a tally."""
    batch = Batch()
    head = stream.read(SNIFF_BYTES)
    if head and _starts_document(head):
        body = head + stream.read()
        for item in decoder.decode_document(body):
            batch.add(item)
            if batch.inputs >= batch_lines:
                yield batch
                batch = Batch()
        head = b""
    decode = decoder.decode_record
    limit = decoder.max_event_bytes
    lineno = 0
    # inputs in ``batch`` (events and refusals), kept here: cheaper than asking
    inputs = 0
    for lines, ascii, cr, within in _line_blocks(head, stream, limit) if head else ():
        i = 0
        count = len(lines)
        while i < count:
            # the common case, as decode_record would take it, without its
            # generator: the lines the fast path reads, an event each, up
            # to the first it does not (told when the whole block is ASCII)
            room = batch_lines - inputs
            stop = fast_lines(lines, i, ascii, cr, within, limit, batch, room)
            lineno += stop - i
            inputs += stop - i
            full = stop - i == room
            i = stop
            if not full and i < count:
                # a line the fast path does not read: empty, or the general
                # decoder's (which yields its refusal, its event, or the
                # events of a document written on one line)
                line = lines[i]
                lineno += 1
                i += 1
                if not line or line.isspace():
                    continue
                for item in decode(line):
                    if type(item) is not AuditEvent:
                        item.line = lineno  # type: ignore[union-attr]
                    batch.add(item)
                    inputs += 1
            if inputs >= batch_lines:
                yield batch
                batch = Batch()
                inputs = 0
    problem = getattr(stream, "problem", None)
    if problem:
        # a cut or damaged .gz: everything before it was read; the cut counts
        batch.add(InvalidEvent("truncated_gzip", problem))
    if batch.inputs:
        yield batch


def _line_blocks(
    head: bytes, stream: IO[bytes], limit: int
) -> Iterator[tuple[list[bytes], bool | None, bool, bool]]:
    """The input's lines, without their newlines, a block at a time: one
    split of a large read costs far less than a readline per line. Each read
    is split where it is, without a copy: only a line that spans two reads
    is joined. With each block: True when all its lines are ASCII (None:
    each line must be asked), whether a carriage return is in it (when
    not, no line ends with one), and whether every line is within the
    limit: the block is asked once, which costs far less than asking each
    line.

    A line longer than ``limit`` is cut to ``limit + 1`` bytes while it is
    read (the decoder refuses it as too large either way), so garbage
    without newlines cannot fill the memory."""
    # the start of a line whose end has not been read yet
    parts: list[bytes] = []
    size = 0
    chunk = head
    while chunk:
        if chunk.find(b"\n") < 0:
            # no line ends in this read
            if size <= limit:
                parts.append(chunk)
                size += len(chunk)
        else:
            lines = split_newlines(chunk)
            tail = lines.pop()
            ascii: bool | None = chunk.isascii() or None
            cr = b"\r" in chunk
            if parts:
                parts.append(lines[0])
                lines[0] = b"".join(parts)
                if ascii and not lines[0].isascii():
                    ascii = None
                cr = cr or b"\r" in lines[0]
            parts = [tail] if tail else []
            size = len(tail)
            if max(map(len, lines)) <= limit:
                yield lines, ascii, cr, True
            else:
                yield _cut(lines, limit), ascii, cr, False
        chunk = stream.read(READ_BYTES)
    rest = b"".join(parts)
    if rest:
        yield _cut(split_newlines(rest), limit), rest.isascii() or None, b"\r" in rest, False


def _cut(lines: list[bytes], limit: int) -> list[bytes]:
    return [line if len(line) <= limit else line[: limit + 1] for line in lines]


def _starts_document(head: bytes) -> bool:
    """Does the input start with one JSON document (rather than an event
    per line)? Yes when its first line is a document by itself (an EventList
    or an array written on one line) or no complete value at all (the start
    of a pretty-printed one)."""
    text = head.lstrip()
    if not text or text[:1] not in (b"{", b"["):
        return False
    first = text.split(b"\n", 1)[0]
    try:
        doc = loads(first)
    except orjson.JSONDecodeError:
        return True  # the first line is not a value by itself
    return is_document(doc)
