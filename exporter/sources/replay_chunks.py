"""The chunks of a ``replay --jobs`` input and the processes that take them.

A chunk is whole lines: a byte range of a plain file (:class:`Span`), which
the job reads itself, or bytes the parent read from a stream (a .gz,
standard input). :class:`Jobs` forks N processes that take numbered chunks
from one pipe, each when it is free, run a function on them and send back
its result; what the function does is ``replay_jobs``'s.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import queue
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import IO, Any

from .replay import ReplayJobFailed

JOB_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _job_signals() -> None:
    """A job ends as its parent tells it (SIGTERM), quietly; Ctrl-C is for
    the parent, which ends the jobs."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Jobs:
    """N forked processes that take numbered chunks from one pipe, each
    when it is free, and put their results on another. The parent receives
    the results itself (a job that dies is an error, not a wait for ever);
    one thread writes the chunks, so that a chunk of bytes waiting for a
    free job never stops the parent's merging."""

    def __init__(self, n: int, run: Callable[[bytes | Span], object]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.tasks_out, self.tasks_in = ctx.Pipe(duplex=False)  # (reader, writer)
        self.results_out, self.results_in = ctx.Pipe(duplex=False)
        take, give = ctx.Lock(), ctx.Lock()
        self.procs: list[BaseProcess] = []
        # a job takes its own signal handlers first thing; until then the
        # parent's (which raise) must not run in it: they wait, blocked
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, JOB_SIGNALS)
        try:
            for _ in range(n):
                proc = ctx.Process(
                    target=_work,
                    args=(run, self.tasks_out, take, self.results_in, give),
                    daemon=True,
                )
                proc.start()
                self.procs.append(proc)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        # the jobs' ends: once the jobs are gone, the pipes say so
        self.tasks_out.close()
        self.results_in.close()
        self.done: dict[int, object] = {}
        self.queue: queue.SimpleQueue[tuple[int, bytes | Span] | None] = queue.SimpleQueue()
        self.sender = threading.Thread(target=self._send, name="replay-jobs-send", daemon=True)
        self.sender.start()

    def _send(self) -> None:
        while True:
            task = self.queue.get()
            if task is None:
                return
            try:
                self.tasks_in.send(task)
            except OSError:  # the jobs ended
                return

    def send(self, number: int, chunk: bytes | Span) -> None:
        self.queue.put((number, chunk))

    def result(self, number: int) -> object:
        """The result of chunk ``number``, waiting for it."""
        done = self.done
        while number not in done:
            ready = wait([self.results_out, *(p.sentinel for p in self.procs)])
            if self.results_out in ready:
                try:
                    got, ok, result = self.results_out.recv()
                except EOFError:  # every job is gone (or going)
                    pass
                else:
                    if not ok:
                        raise ReplayJobFailed(f"a replay job failed: {result}")
                    done[got] = result
                    continue
            if any(not p.is_alive() for p in self.procs):
                codes = [p.exitcode for p in self.procs]
                raise ReplayJobFailed(f"a replay job ended (exit codes {codes})")
        return done.pop(number)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.join()
        self.queue.put(None)
        self.sender.join(5.0)  # a write the ended jobs left is an error now
        self.tasks_in.close()
        self.results_out.close()


def _work(
    run: Callable[[bytes | Span], object],
    tasks: Connection,
    take: Any,
    results: Connection,
    give: Any,
) -> None:
    """A job: chunks in, ``run``'s results out, until the parent ends it."""
    _job_signals()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, JOB_SIGNALS)
    while True:
        with take:
            number, chunk = tasks.recv()
        try:
            answer = (number, True, run(chunk))
        except Exception as e:
            # where it failed, never its message: that may quote an event
            where = traceback.extract_tb(e.__traceback__)[-1]
            answer = (number, False, f"{type(e).__name__} at {where.filename}:{where.lineno}")
        with give:
            results.send(answer)


@dataclass(frozen=True)
class Span:
    """A chunk of a plain file, which the job reads itself (nothing of it
    goes through the pipe)."""

    path: str
    device: int
    inode: int
    offset: int
    length: int

    def _same(self, fd: int) -> bool:
        """Is ``fd`` still the file the span was cut from?"""
        try:
            st = os.fstat(fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self.device, self.inode)

    def open(self) -> int | None:
        """A descriptor of ``path`` (the caller closes it), None when that
        is no longer the same file."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        if not self._same(fd):
            os.close(fd)
            return None
        return fd

    def read(self, fd: int | None = None) -> bytes | None:
        """The chunk, from ``fd`` or else from ``path`` (None when that is
        no longer the same file, or shorter)."""
        own = fd is None
        if fd is None:
            fd = self.open()
            if fd is None:
                return None
        elif not self._same(fd):
            return None
        try:
            return pread_exactly(fd, self.length, self.offset)
        except OSError:
            return None
        finally:
            if own:
                os.close(fd)


def pread_exactly(fd: int, size: int, offset: int) -> bytes | None:
    """``size`` bytes of ``fd`` at ``offset``; None when it ends before."""
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            return None
        data += more
    return data


def stream_chunks(head: bytes, stream: IO[bytes], size: int, limit: int) -> Iterator[bytes]:
    """Whole lines, about ``size`` bytes at a time. Bytes without a newline
    beyond ``limit + 1`` are dropped as they are read (the line is refused
    as too large either way), as ``_line_blocks`` does, so garbage without
    newlines cannot fill the memory."""
    pending = head
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
        yield data
    if pending:
        yield pending


def file_chunks(
    raw: io.FileIO, start: int, size: int, limit: int, largest: int = 0, share: int = 1
) -> Iterator[bytes | Span]:
    """Spans of whole lines of a plain file from ``start``, about ``size``
    bytes each, cut at the first newline after ``size`` bytes. With
    ``largest``, a span is the ``share``-th part of what is left of the file,
    at least ``size`` and at most ``largest`` bytes: large spans while there
    is much to do (each costs the parent a little, whatever its size), spans
    of ``size`` at the end, so that every job stays busy to the end (as in
    guided scheduling). When there is no newline within ``limit + 1`` bytes
    after the cut (a line too large either way), the rest is read by the
    parent as a stream (stream_chunks), whose memory is bounded. The file's
    position follows the spans (the progress line reads it)."""
    fd = raw.fileno()
    st = os.fstat(fd)
    path = raw.name
    assert isinstance(path, str)
    pos = start
    while True:
        total = os.fstat(fd).st_size
        if pos >= total:
            return
        step = min(max((total - pos) // share, size), largest) if largest > size else size
        cut = pos + step
        if cut >= total:
            cut = total
        else:
            look = cut - 1  # a newline there ends the span at ``cut``
            while True:
                window = os.pread(fd, 1 << 16, look)
                found = window.find(b"\n")
                if found >= 0:
                    cut = look + found + 1
                    break
                look += len(window)
                if not window:
                    cut = look
                    break
                if look - pos > step + limit + 1:
                    raw.seek(pos)
                    yield from stream_chunks(b"", raw, size, limit)
                    return
        yield Span(path, st.st_dev, st.st_ino, pos, cut - pos)
        pos = cut
        raw.seek(pos)
