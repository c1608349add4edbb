"""The audit log file source: follow the API server's ``--audit-log-path``.

The API server writes one JSON event per line and rotates with lumberjack:
it closes the file, renames it to ``audit-2006-01-02T15-04-05.000.log`` in
the same directory, creates a new file at the path and, with
``--audit-log-compress``, later gzips the renamed file (``...log.gz``) and
removes the uncompressed one. The log is the durable buffer (see DESIGN.md):
the checkpoint moves only past batches the pipeline took, so after a crash
or a refused batch the same lines are read again, never skipped.

Exactly once across kill -9: each batch goes to the pipeline with a mark,
the checkpoint just after it. The Loki spool appends the mark in the same
write as the batch; without Loki, the pipeline has the checkpoint file
saved (fsync, rename) before the metrics count the batch. On restart the
tailer resumes from the later (higher ``seq``) of the checkpoint file and
the spool's last mark, so no batch that was counted is read again.

Following it:

- The open file is known by ``(st_dev, st_ino)`` and the first bytes it holds
  (see :mod:`.checkpoint`). When the path names another file, the old one is
  read to its end from the descriptor still open (which works after the
  rename and after deletion) and its final line is complete even without a
  newline; then come any rotated files newer than it (two rotations between
  polls), then the new file from its start.
- After a restart, the checkpointed file is looked for at the path, then
  among the rotated files (also inside ``.gz``), and finished from the saved
  offset before the newer files are read.
- The same file growing shorter than what was read, or its first bytes
  changing, is a copytruncate: read it again from 0.
- A line is handed on only once its newline is there; a line longer than the
  decoder's limit is skipped to its newline (never held in memory) and
  counted as ``too_large``.

:meth:`LogFileSource.poll_once` is one deterministic step; :meth:`start` runs
it on a thread every ``poll_interval`` seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..event import AuditEvent, Batch, Decoder, InvalidEvent
from ..gzstream import GzipStream
from ..logs import RateLimitedLog
from ..metrics import PREFIX, AuditMetrics
from ..pipeline import Mark, Pipeline
from . import checkpoint as ckpt
from .checkpoint import FINGERPRINT_BYTES, Checkpoint, CheckpointError, Position, fingerprint

log = logging.getLogger(__name__)

SOURCE = "logfile"
START_AT = ("checkpoint", "beginning", "end")
READ_BYTES = 256 * 1024
# Files finished and opened in one poll at most; more waits for the next poll.
MAX_FILES_PER_POLL = 32
ERROR_OPERATIONS = ("open", "read", "checkpoint", "process")

Item = AuditEvent | InvalidEvent

# lumberjack's backupTimeFormat, "2006-01-02T15-04-05.000".
_BACKUP_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}"


# --- rotated files -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rotated:
    """A rotated audit log next to the path, as lumberjack names it.

    ``key`` is the rotation time in the name; keys sort in rotation order.
    ``plain`` and ``gz`` are the uncompressed and compressed names, either
    of which may exist (both, while lumberjack is compressing)."""

    key: str
    plain: str | None
    gz: str | None


def rotated_files(path: str) -> list[Rotated]:
    """The rotated siblings of ``path``, oldest first.

    ``/a/audit.log`` rotates to ``/a/audit-<time>.log`` (and ``.log.gz``);
    a path without an extension to ``/a/audit-<time>``."""
    directory, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    pattern = re.compile(
        re.escape(stem) + "-(" + _BACKUP_TIME + ")" + re.escape(ext) + r"(\.gz)?\Z"
    )
    plain: dict[str, str] = {}
    gz: dict[str, str] = {}
    with os.scandir(directory or ".") as entries:
        for entry in entries:
            m = pattern.match(entry.name)
            if m is None:
                continue
            full = os.path.join(directory, entry.name)
            (gz if m.group(2) else plain)[m.group(1)] = full
    return [Rotated(key, plain.get(key), gz.get(key)) for key in sorted(plain.keys() | gz.keys())]


def _gz_head(name: str) -> bytes:
    """The first decompressed bytes of a .gz file; empty when unreadable."""
    try:
        with open(name, "rb") as f:
            return GzipStream(f).read(FINGERPRINT_BYTES)
    except OSError:
        return b""


def _plain_identity(name: str) -> tuple[int, int, bytes] | None:
    """(dev, ino, first bytes) of a regular file; None when it cannot be read."""
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        return st.st_dev, st.st_ino, os.pread(fd, FINGERPRINT_BYTES, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


# --- one open file -------------------------------------------------------------


class _File:
    """An open audit log file and the reader's place in it.

    ``buf[pos:]`` are bytes read but not yet handed on (a partial line);
    ``buf[0]`` is at file offset ``buf_start``. ``skip_from`` is set while a
    line over the size limit is being skipped (its bytes are not kept).
    ``committed`` is how far the pipeline has taken the file."""

    def __init__(
        self,
        name: str,
        *,
        fd: int | None,
        gz: GzipStream | None,
        raw: io.BufferedReader | None,
        st: os.stat_result,
        live: bool,
        key: str | None,
    ) -> None:
        self.name = name
        self.fd = fd
        self.gz = gz
        self._raw = raw
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.size: int | None = st.st_size if gz is None else None
        self.live = live
        # A rotated file gets nothing more: its end is the end.
        self.final = not live
        self.key = key
        self.head = b""
        self.buf = b""
        self.buf_start = 0
        self.pos = 0
        self.line: int | None = 0
        self.skip_from: int | None = None
        self.skip_silent = False
        self.corrupt: str | None = None
        self.committed = 0
        self.committed_line: int | None = 0
        if fd is not None:
            self.head = os.pread(fd, FINGERPRINT_BYTES, 0)

    @classmethod
    def open_plain(cls, name: str, *, live: bool, key: str | None = None) -> _File:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{name} is not a regular file")
            return cls(name, fd=fd, gz=None, raw=None, st=st, live=live, key=key)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open_gz(cls, name: str, *, key: str | None) -> _File:
        raw = open(name, "rb")  # noqa: SIM115 - closed by close()
        try:
            st = os.fstat(raw.fileno())
            gz = GzipStream(raw)
            return cls(name, fd=None, gz=gz, raw=raw, st=st, live=False, key=key)
        except BaseException:
            raw.close()
            raise

    @property
    def read_pos(self) -> int:
        return self.buf_start + len(self.buf)

    @property
    def consumed(self) -> int:
        """The offset up to which lines are handed on (or being skipped)."""
        return self.skip_from if self.skip_from is not None else self.buf_start + self.pos

    def _read_raw(self, n: int) -> bytes:
        if self.gz is not None:
            try:
                data = self.gz.read(n)
            except OSError as e:
                self.corrupt = str(e) or type(e).__name__
                return b""
            if not data and self.gz.problem:
                # A damaged or cut .gz: every byte before it was read.
                self.corrupt = self.gz.problem
        else:
            assert self.fd is not None
            data = os.pread(self.fd, n, self.read_pos)
        if len(self.head) < FINGERPRINT_BYTES and len(self.head) == self.read_pos:
            self.head += data[: FINGERPRINT_BYTES - len(self.head)]
        return data

    def read(self, n: int = READ_BYTES) -> bytes:
        """Append up to ``n`` more bytes to the buffer, dropping what is consumed."""
        if self.pos:
            self.buf = self.buf[self.pos :]
            self.buf_start += self.pos
            self.pos = 0
        data = self._read_raw(n)
        if data:
            self.buf += data
        return data

    def seek(self, offset: int, line: int | None) -> None:
        """Continue at ``offset`` (a line boundary), ``line`` lines into the file."""
        if self.gz is None:
            self.buf_start = offset
        else:
            while self.buf_start < offset:
                data = self._read_raw(min(READ_BYTES, offset - self.buf_start))
                if not data:
                    break
                self.buf_start += len(data)
        self.buf = b""
        self.pos = 0
        self.line = line if self.buf_start == offset else None
        self.committed = self.buf_start
        self.committed_line = self.line

    def seek_end(self, max_line: int) -> None:
        """Continue after the last complete line (the one being written, if
        any, is read once it is complete)."""
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        window = min(size, max_line + 1)
        tail = os.pread(self.fd, window, size - window) if window else b""
        newline = tail.rfind(b"\n")
        if newline >= 0 or size == 0:
            self.seek(size - window + newline + 1 if size else 0, None)
        else:
            # Inside a line too long to keep: skip it, and say nothing.
            self.seek(size, None)
            self.skip_from = size
            self.skip_silent = True
            self.committed = size

    def head_unchanged(self) -> bool:
        """For a live file: whether it still starts as it did (and grow the
        known head while the file is shorter than the fingerprint)."""
        if self.fd is None:
            return True
        now = os.pread(self.fd, FINGERPRINT_BYTES, 0)
        if not now.startswith(self.head):
            return False
        self.head = now
        return True

    def reset(self) -> None:
        """Start again at 0 (the file was truncated in place)."""
        self.buf = b""
        self.buf_start = self.pos = 0
        self.line = 0
        self.skip_from = None
        self.skip_silent = False
        self.head = os.pread(self.fd, FINGERPRINT_BYTES, 0) if self.fd is not None else b""

    def position(self, offset: int | None = None, line: int | None = None) -> Position:
        """Where the pipeline's taking stands, or ``offset`` and ``line``."""
        if offset is None:
            offset, line = self.committed, self.committed_line
        return Position(
            file=self.name,
            dev=self.dev,
            ino=self.ino,
            fingerprint=fingerprint(self.head),
            fingerprint_bytes=len(self.head),
            offset=offset,
            line=line,
        )

    def close(self) -> None:
        try:
            if self.fd is not None:
                os.close(self.fd)
            if self.gz is not None:
                self.gz.close()
            if self._raw is not None:
                self._raw.close()
        except OSError:
            pass
        self.fd = self.gz = self._raw = None


@dataclass(slots=True)
class _Pending:
    """A batch the pipeline refused: retried as is before anything is read."""

    file: _File
    items: Batch
    offset: int
    line: int | None


# --- the source -------------------------------------------------------------------


class LogFileSource:
    """Tails one audit log with its rotations and hands batches to the pipeline."""

    def __init__(
        self,
        *,
        path: str,
        checkpoint_file: str | None,
        start_at: str = "checkpoint",
        pipeline: Pipeline,
        decoder: Decoder,
        metrics: AuditMetrics,
        poll_interval: float = 0.25,
        checkpoint_interval: float = 5.0,
        batch_lines: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        resume_mark: bytes | None = None,
    ) -> None:
        """``resume_mark`` is the last mark the pipeline's sinks kept (the
        Loki spool's), resumed from when it is later than the checkpoint."""
        if start_at not in START_AT:
            raise ValueError(f"start_at: must be one of {', '.join(START_AT)}, not {start_at!r}")
        if batch_lines < 1:
            raise ValueError("batch_lines: must be > 0")
        if poll_interval <= 0:
            raise ValueError("poll_interval: must be > 0")
        if checkpoint_interval <= 0:
            raise ValueError("checkpoint_interval: must be > 0")
        self.path = os.path.abspath(path)
        self.checkpoint_file = checkpoint_file
        self.start_at = start_at
        self.pipeline = pipeline
        self.decoder = decoder
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.checkpoint_interval = checkpoint_interval
        self.batch_lines = batch_lines
        self.clock = clock

        self._lock = threading.Lock()  # one poll at a time
        self._checkpoint_lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._io_log = RateLimitedLog(log)

        self._resolved = False
        self._resume_from: Checkpoint | None = None
        self._file: _File | None = None
        self._pending: _Pending | None = None
        # Key of the newest rotated file known to be read (or older than
        # the file being read); rotated files newer than it are unread.
        self._done_key: str | None = None
        self._waiting_logged = False

        # What the pipeline has taken, as it would be checkpointed; replaced
        # whole so other threads (checkpoint(), scrapes) see a consistent one.
        self._committed: Checkpoint | None = None
        self._written: Checkpoint | None = None
        self._written_at = 0.0
        # Batches the pipeline took, across restarts (Checkpoint.seq).
        self._seq = 0
        self._last_checkpoint = clock()
        self._errors = dict.fromkeys(ERROR_OPERATIONS, 0)
        self._errors_lock = threading.Lock()
        self._read_failed = False
        if start_at == "checkpoint" and checkpoint_file:
            self._resume_from = self._later(self._load_checkpoint(checkpoint_file), resume_mark)
            if self._resume_from is not None:
                self._seq = self._resume_from.seq
        metrics.add_state(self._collect)

    # --- public API -------------------------------------------------------

    def poll_once(self) -> int:
        """Read what is there now and hand it to the pipeline in batches.

        Returns the number of lines the pipeline took. Never raises: errors
        are logged and the next poll starts again from the same place."""
        with self._lock:
            if self._closed:
                return 0
            try:
                handled = self._poll()
            except Exception as e:
                self._error("read")
                self._io_log.warning(
                    "reading the audit log failed", path=self.path, error=_describe(e)
                )
                handled = 0
            if self.clock() - self._last_checkpoint >= self.checkpoint_interval:
                self._last_checkpoint = self.clock()
                self._write_checkpoint(force=False)
            return handled

    def start(self) -> None:
        """Poll on a background thread until :meth:`stop`."""
        if self._closed:
            raise RuntimeError("the log file source is stopped")
        if self._thread is not None:
            raise RuntimeError("the log file source is already started")
        self._thread = threading.Thread(target=self._run, name="logfile-source", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Finish the current step, write the checkpoint and close the files."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                # Stuck in the pipeline: what it took is checkpointed below;
                # the files stay open for the thread, which dies with the process.
                log.warning("the log file source did not stop in time", extra={"path": self.path})
                self._write_checkpoint(force=True)
                return
        with self._lock:
            self._closed = True
            self._write_checkpoint(force=True)
            if self._file is not None:
                self._file.close()
                self._file = None

    def checkpoint(self) -> bool:
        """Write the checkpoint now. False when there is nothing to write yet
        (no file found, or none configured) or writing failed (logged)."""
        return self._write_checkpoint(force=True)

    # --- polling -----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_interval)

    def _poll(self) -> int:
        handled = 0
        if self._pending is not None:
            taken = self._retry()
            if taken is None:
                return 0
            handled += taken
        if not self._resolved and not self._resolve():
            return handled
        for _ in range(MAX_FILES_PER_POLL):
            f = self._file
            if f is None:
                f = self._file = self._next_file()
                if f is None:
                    return handled
            if f.live and not f.final:
                self._check_live(f)
                if self._pending is not None:
                    return handled
            taken, at_end = self._drain(f)
            handled += taken
            if not (at_end and f.final) or self._stop.is_set():
                return handled
            self._finish(f)
        return handled

    def _check_live(self, f: _File) -> None:
        """Has the path moved on to another file, or was this one truncated?"""
        try:
            st: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            st = None  # renamed, and the new file is not there yet
        except OSError as e:
            st = None
            self._io_log.warning("cannot stat the audit log", path=self.path, error=_describe(e))
        if st is not None and (st.st_dev, st.st_ino) != (f.dev, f.ino):
            # Rotated: the writer has closed it, so what it holds now is all.
            f.final = True
            log.info(
                "audit log rotated, finishing the old file",
                extra={"file": f.name, "offset": f.read_pos},
            )
            return
        assert f.fd is not None
        f.size = size = os.fstat(f.fd).st_size
        if size < f.read_pos or not f.head_unchanged():
            self._truncated(f, size)

    def _truncated(self, f: _File, size: int) -> None:
        log.warning(
            "audit log truncated in place (copytruncate), reading it again from the start",
            extra={"file": f.name, "offset": f.read_pos, "size": size},
        )
        with self.metrics.lock:
            self.metrics.logfile_rotations.inc(("truncate",))
        # A held partial line belongs to the content that is gone: it is as
        # complete as it will ever be.
        held = self._flush_held(f)
        f.reset()
        self._submit(f, Batch([held] if held is not None else []))

    def _drain(self, f: _File) -> tuple[int, bool]:
        """Hand on f's complete lines up to its current end.

        Returns (lines taken, whether the end was reached with all of it
        taken). Stops early on a refused batch, a read error or stop()."""
        handled = 0
        items = Batch()
        batch_lines = self.batch_lines
        scan = self._scan(f)
        for item in scan:
            if item is None:
                continue
            items.add(item)
            if items.inputs >= batch_lines:
                taken = self._submit(f, items)
                if taken is None:
                    return handled, False
                handled += taken
                items = Batch()
                if self._stop.is_set():
                    return handled, False
        taken = self._submit(f, items)
        if taken is None:
            return handled, False
        handled += taken
        if f.corrupt is not None:
            self._error("read")
            self.metrics.invalid_input(SOURCE, "truncated_gzip")
            self._io_log.warning(
                "compressed audit log is damaged, read up to the damage",
                file=f.name,
                offset=f.read_pos,
                error=f.corrupt,
            )
            f.corrupt = None
        return handled, not self._read_failed

    def _scan(self, f: _File) -> Iterator[Item | None]:
        """An item for each complete line of f, reading more as needed; None
        for a line that is no item (blank, or skipped silently). f's place is
        past a line before it is yielded, so a caller may stop at any item."""
        self._read_failed = False
        max_bytes = self.decoder.max_event_bytes
        while True:
            buf = f.buf
            while True:
                start = f.pos
                newline = buf.find(b"\n", start)
                if newline < 0:
                    break
                f.pos = newline + 1
                yield self._line(f, buf, start, newline)
            if f.skip_from is None and len(buf) - f.pos > max_bytes:
                f.skip_from = f.buf_start + f.pos
            if f.skip_from is not None:
                f.pos = len(buf)  # never keep an oversized line
            try:
                data = f.read()
            except OSError as e:
                self._read_failed = True
                self._error("read")
                self._io_log.warning(
                    "reading the audit log failed", file=f.name, error=_describe(e)
                )
                return
            if not data:
                if f.final and (f.pos < len(f.buf) or f.skip_from is not None):
                    yield self._flush_held(f)
                return

    def _flush_held(self, f: _File) -> Item | None:
        """The held partial line as a complete one (its file has ended)."""
        if f.pos >= len(f.buf) and f.skip_from is None:
            return None
        start, end = f.pos, len(f.buf)
        f.pos = end
        return self._line(f, f.buf, start, end)

    def _line(self, f: _File, buf: bytes, start: int, end: int) -> Item | None:
        if f.line is not None:
            f.line += 1
        if f.skip_from is not None:
            size = f.buf_start + end - f.skip_from
            f.skip_from = None
            if f.skip_silent:
                f.skip_silent = False
                return None
            limit = self.decoder.max_event_bytes
            return InvalidEvent(
                "too_large", f"{size} bytes is over the {limit} byte limit", line=f.line
            )
        line = buf[start:end]
        if not line or line.isspace():
            return None
        try:
            return self.decoder.decode_line(line)
        except InvalidEvent as e:
            e.line = f.line
            return e
        except Exception as e:  # a decoder bug must not stop the log
            return InvalidEvent("invalid_value", f"undecodable: {_describe(e)}", line=f.line)

    def _submit(self, f: _File, items: Batch) -> int | None:
        """Hand ``items`` (the lines up to f's current place) to the pipeline;
        on success the checkpoint moves there. None when refused."""
        offset, line = f.consumed, f.line
        if not items.inputs:
            self._commit(f, offset, line)
            return 0
        if not self._process(items, f, offset, line):
            self._pending = _Pending(f, items, offset, line)
            return None
        self._commit(f, offset, line)
        return items.inputs

    def _retry(self) -> int | None:
        pending = self._pending
        assert pending is not None
        if not self._process(pending.items, pending.file, pending.offset, pending.line):
            return None
        self._pending = None
        self._commit(pending.file, pending.offset, pending.line)
        return pending.items.inputs

    def _process(self, items: Batch, f: _File, offset: int, line: int | None) -> bool:
        """Hand ``items``, the lines of f before ``offset``, to the pipeline
        with the checkpoint after them as the batch's mark."""
        context = f.name
        mark = None
        if self.checkpoint_file:
            after = Checkpoint(self.path, f.position(offset, line), self._done_key, self._seq + 1)
            mark = Mark(ckpt.dump(after), lambda: self._save(after))
        try:
            taken = not self.pipeline.process(items, SOURCE, context=context, mark=mark).refused
        except Exception as e:
            # Retried as a refusal: the log keeps the events until it works.
            self._error("process")
            self._io_log.warning(
                "the pipeline failed on a batch, retrying it", file=context, error=_describe(e)
            )
            return False
        if taken:
            self._seq += 1
        return taken

    def _commit(self, f: _File, offset: int, line: int | None) -> None:
        f.committed = offset
        f.committed_line = line
        if f.fd is not None and len(f.head) < FINGERPRINT_BYTES and f.live and not f.final:
            with contextlib.suppress(OSError):
                f.head_unchanged()  # grow the fingerprint with the file
        self._committed = Checkpoint(self.path, f.position(), self._done_key, self._seq)

    # --- moving between files ---------------------------------------------------

    def _finish(self, f: _File) -> None:
        """f, a rotated file, is read to its end: move past it."""
        key = f.key if f.key is not None else self._find_key(f)
        if key is not None and (self._done_key is None or key > self._done_key):
            self._done_key = key
        with self.metrics.lock:
            self.metrics.logfile_rotations.inc(("rename",))
        log.info(
            "finished rotated audit log",
            extra={"file": f.name, "offset": f.read_pos, "lines": f.line},
        )
        f.close()
        self._file = None
        if self._committed is not None:
            self._committed = dataclasses.replace(self._committed, rotated_done=self._done_key)

    def _find_key(self, f: _File) -> str | None:
        """The rotated name of what was the live file f."""
        try:
            rotated = rotated_files(self.path)
        except OSError:
            return None
        for r in reversed(rotated):
            if r.plain is not None:
                ident = _plain_identity(r.plain)
                if ident is not None and ident[:2] == (f.dev, f.ino):
                    return r.key
            elif r.gz is not None and f.head and _gz_head(r.gz).startswith(f.head):
                return r.key
        return None

    def _unread_rotated(self, live: _File | None) -> list[Rotated]:
        """Rotated files newer than the last one finished, oldest first."""
        if self._done_key is None:
            return []
        return self._rotated_after(self._done_key, live)

    def _newest_rotated(self, live: _File | None) -> str | None:
        """The newest rotated file: older than the live one, so never read."""
        older = self._rotated_after("", live)
        return older[-1].key if older else None

    def _rotated_after(self, after: str, live: _File | None) -> list[Rotated]:
        """Rotated files newer than ``after``, oldest first, leaving out
        ``live`` if it has been rotated in the meantime."""
        try:
            newer = [r for r in rotated_files(self.path) if r.key > after]
        except FileNotFoundError:
            return []  # no directory yet: waited for like the file
        except OSError as e:
            self._io_log.warning("cannot list rotated audit logs", path=self.path, error=str(e))
            return []
        if live is None or not newer:
            return newer
        kept = []
        for r in newer:
            if r.plain is not None:
                ident = _plain_identity(r.plain)
                if ident is not None and ident[:2] == (live.dev, live.ino):
                    continue
            elif (
                r.gz is not None
                and len(live.head) == FINGERPRINT_BYTES
                and _gz_head(r.gz) == live.head
            ):
                continue
            kept.append(r)
        return kept

    def _next_file(self) -> _File | None:
        """The next file to read: unread rotated files, then the path."""
        for _ in range(MAX_FILES_PER_POLL):
            unread = self._unread_rotated(None)
            if unread:
                f = self._open_rotated(unread[0])
                if f is not None:
                    self._commit(f, 0, 0)
                    return f
                continue
            try:
                live = self._open_live()
            except OSError:
                return None
            if live is None:
                return None
            if self._unread_rotated(live):
                live.close()  # rotated again meanwhile: the older ones first
                continue
            log.info("reading audit log", extra={"file": live.name})
            self._commit(live, 0, 0)
            return live
        return None

    def _open_live(self) -> _File | None:
        """The file at the path; None while there is none. Other errors are
        logged (rate-limited) and raised."""
        try:
            f = _File.open_plain(self.path, live=True)
        except FileNotFoundError:
            if not self._waiting_logged:
                self._waiting_logged = True
                log.info("waiting for the audit log to appear", extra={"path": self.path})
            return None
        except OSError as e:
            self._error("open")
            self._io_log.warning("cannot open the audit log", path=self.path, error=_describe(e))
            raise
        self._waiting_logged = False
        return f

    def _open_rotated(self, r: Rotated) -> _File | None:
        """Open a rotated file, the uncompressed one when it is still there.
        None (and the file counted as done) when neither can be read."""
        error: OSError | None = None
        for name, gz in ((r.plain, False), (r.gz, True)):
            if name is None:
                continue
            try:
                if gz:
                    return _File.open_gz(name, key=r.key)
                return _File.open_plain(name, live=False, key=r.key)
            except FileNotFoundError:
                continue  # compressed meanwhile: try the .gz
            except OSError as e:
                error = e
        if error is not None:
            self._error("open")
            log.error(
                "cannot open a rotated audit log, skipping it",
                extra={"file": r.plain or r.gz, "error": _describe(error)},
            )
        else:
            log.warning("a rotated audit log vanished before it was read", extra={"key": r.key})
        self._done_key = r.key
        return None

    # --- where to start -------------------------------------------------------------

    def _resolve(self) -> bool:
        """Find where to start; False to try again on the next poll."""
        if self._resume_from is not None:
            return self._resume(self._resume_from)
        return self._start_fresh(at_end=self.start_at == "end")

    def _load_checkpoint(self, filename: str) -> Checkpoint | None:
        """The checkpoint to resume from. One that cannot be read fails the
        start-up (starting over would count the whole file again); one that
        is damaged or for another path is ignored, with a warning."""
        try:
            ck = ckpt.load(filename)
        except CheckpointError as e:
            log.warning(
                "ignoring a damaged log file checkpoint, starting at the beginning",
                extra={"checkpoint": filename, "error": str(e)},
            )
            return None
        except OSError as e:
            raise OSError(
                e.errno, f"logfile.checkpoint_file: cannot read {filename}: {e.strerror or e}"
            ) from e
        if ck is None:
            log.info("no log file checkpoint yet, starting at the beginning")
        elif os.path.abspath(ck.path) != self.path:
            log.warning(
                "the log file checkpoint is for another path, starting at the beginning",
                extra={"checkpoint": filename, "checkpoint_path": ck.path, "path": self.path},
            )
            return None
        return ck

    def _later(self, ck: Checkpoint | None, mark: bytes | None) -> Checkpoint | None:
        """The later of the checkpoint file's ``ck`` and the sinks' ``mark``."""
        if mark is None:
            return ck
        try:
            kept = ckpt.parse(mark)
        except CheckpointError as e:
            log.warning("ignoring a damaged mark in the spool", extra={"error": str(e)})
            return ck
        if os.path.abspath(kept.path) != self.path:
            return ck  # the spool's mark is from another log file
        if ck is not None and ck.seq >= kept.seq:
            return ck
        log.info(
            "resuming from the spool's mark, later than the checkpoint file",
            extra={"seq": kept.seq, "checkpoint_seq": ck.seq if ck is not None else None},
        )
        return kept

    def _start_fresh(self, *, at_end: bool) -> bool:
        try:
            live = self._open_live()
        except OSError:
            return False  # unreadable for now: keep "end" meaning the end
        self._done_key = self._newest_rotated(live)
        self._resolved = True
        if live is None:
            return True  # a file that appears later is read from its start
        if at_end:
            live.seek_end(self.decoder.max_event_bytes)
        self._start(live)
        return True

    def _resume(self, ck: Checkpoint) -> bool:
        pos = ck.position
        try:
            live = self._open_live()
        except OSError:
            return False
        if live is not None:
            same_inode = (live.dev, live.ino) == (pos.dev, pos.ino)
            if pos.matches_head(live.head) and (same_inode or pos.strong):
                size = live.size or 0
                if size < pos.offset:
                    log.warning(
                        "audit log truncated while stopped, reading it from the start",
                        extra={"file": live.name, "offset": pos.offset, "size": size},
                    )
                    with self.metrics.lock:
                        self.metrics.logfile_rotations.inc(("truncate",))
                else:
                    live.seek(pos.offset, pos.line)
                self._done_key = self._newest_rotated(live)
                self._resolved = True
                self._start(live)
                return True
        match = self._find_rotated(pos)
        if match is not None:
            f = self._open_rotated(match)
            if f is not None:
                if live is not None:
                    live.close()
                f.seek(pos.offset, pos.line)
                done = ck.rotated_done
                self._done_key = done if done is not None and done < match.key else None
                self._resolved = True
                log.info(
                    "resuming in a rotated audit log",
                    extra={"file": f.name, "offset": f.committed},
                )
                self._start(f)
                return True
        if ck.rotated_done is not None:
            log.warning(
                "the checkpointed audit log is gone, reading the rotated files after it",
                extra={"file": pos.file, "after": ck.rotated_done},
            )
            if live is not None:
                live.close()
            self._done_key = ck.rotated_done
            self._resolved = True
            return True
        if live is None:
            return False  # it may still appear
        log.warning(
            "the checkpoint matches no audit log file, starting at the beginning",
            extra={"file": pos.file},
        )
        self._done_key = self._newest_rotated(live)
        self._resolved = True
        self._start(live)
        return True

    def _start(self, f: _File) -> None:
        self._file = f
        self._commit(f, f.committed, f.committed_line)
        log.info(
            "reading audit log",
            extra={"file": f.name, "offset": f.committed, "start_at": self.start_at},
        )

    def _find_rotated(self, pos: Position) -> Rotated | None:
        """The rotated file the checkpoint is in: same inode and first bytes,
        else the same first bytes (a .gz, or a long enough prefix); the
        newest when several match."""
        try:
            rotated = rotated_files(self.path)
        except OSError as e:
            self._io_log.warning("cannot list rotated audit logs", path=self.path, error=str(e))
            return None
        best: Rotated | None = None
        best_score = 0
        for r in reversed(rotated):
            score = 0
            if r.plain is not None:
                ident = _plain_identity(r.plain)
                if ident is not None and pos.matches_head(ident[2]):
                    score = 3 if ident[:2] == (pos.dev, pos.ino) else 2 if pos.strong else 0
            if score == 0 and r.gz is not None and pos.matches_head(_gz_head(r.gz)):
                score = 2 if pos.strong else 1
            if score > best_score:
                best, best_score = r, score
        return best

    # --- checkpoint and metrics -----------------------------------------------------

    def _write_checkpoint(self, *, force: bool) -> bool:
        if not self.checkpoint_file:
            return False
        with self._checkpoint_lock:
            ck = self._committed
            if ck is None:
                return False  # nothing found yet: keep what is there
            if not force and ck == self._written:
                return True
            return self._save(ck)

    def _save(self, ck: Checkpoint) -> bool:
        """Write ``ck`` to the checkpoint file, durably; False (counted and
        logged) when that failed."""
        assert self.checkpoint_file
        with self._checkpoint_lock:
            try:
                ckpt.save(self.checkpoint_file, ck)
            except OSError as e:
                self._error("checkpoint")
                self._io_log.warning(
                    "cannot write the log file checkpoint",
                    checkpoint=self.checkpoint_file,
                    error=_describe(e),
                )
                return False
            self._written = ck
            self._written_at = time.time()
            return True

    def _error(self, operation: str) -> None:
        with self._errors_lock:
            self._errors[operation] += 1

    def _collect(self) -> Iterator[Metric]:
        ck = self._committed
        f = self._file
        yield GaugeMetricFamily(
            PREFIX + "logfile_offset_bytes",
            "Offset in the audit log file being read up to which the pipeline took its events.",
            value=ck.position.offset if ck is not None else 0,
        )
        size = GaugeMetricFamily(
            PREFIX + "logfile_size_bytes",
            "Size of the audit log file being read, at the last poll (absent for a .gz).",
        )
        if f is not None and f.size is not None:
            size.add_metric((), f.size)
        yield size
        yield GaugeMetricFamily(
            PREFIX + "logfile_checkpoint_timestamp_seconds",
            "When the log file checkpoint was last written (Unix time; 0 before the first).",
            value=self._written_at,
        )
        errors = CounterMetricFamily(
            PREFIX + "logfile_errors",
            "Log file source errors, by operation (open, read, checkpoint, process).",
            labels=("operation",),
        )
        with self._errors_lock:
            counts = dict(self._errors)
        for operation, count in counts.items():
            errors.add_metric((operation,), count)
        yield errors


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"
