"""The SHA-256 of each input file, computed on another thread while the
report reads its events (hashlib releases the GIL while it hashes).

A plain file is hashed from the blocks its reader reads (:meth:`Hasher.reading`):
no second read of the file. Any other regular file (a ``.gz``: its digest is
that of its compressed bytes), and a plain file whose reading did not pass
every byte through that stream, is read again whole (:meth:`Hasher.whole`).
A stream (``-``, a FIFO) is never opened here and has no digest.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
from collections.abc import Callable
from functools import partial

# path -> (hex digest, size in bytes); ("", None) when not hashed
Digests = dict[str, tuple[str, int | None]]


class Hasher:
    """One thread that runs the hashing tasks in order; :meth:`close` waits
    for them."""

    def __init__(self) -> None:
        self.digests: Digests = {}
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            task()

    def whole(self, path: str) -> None:
        """Hash ``path`` by reading it again (a regular file only)."""
        self._tasks.put(partial(self._whole, path))

    def _whole(self, path: str) -> None:
        self.digests[path] = file_digest(path)

    def reading(self, raw: io.FileIO) -> Reading:
        """A stream over ``raw`` that hashes what is read through it; call
        :meth:`done` with it once the file is read."""
        return Reading(raw, self._tasks.put)

    def done(self, path: str, reading: Reading) -> None:
        """The digest of ``path`` from what ``reading`` read: when that is
        the whole file, else from the file read again. Before it is closed."""
        if not reading.whole():
            self.whole(path)
            return
        sha = reading.sha
        size = reading.hashed
        self._tasks.put(lambda: self.digests.__setitem__(path, (sha.hexdigest(), size)))

    def close(self) -> Digests:
        self._tasks.put(None)
        self._thread.join()
        return self.digests


class Reading(io.RawIOBase):
    """A plain file's stream that hands each block read to the hasher."""

    def __init__(self, raw: io.FileIO, put: Callable[[Callable[[], None]], None]) -> None:
        super().__init__()
        self.raw = raw
        self.sha = hashlib.sha256()
        self.hashed = 0
        self._put = put

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.raw.fileno()

    def read(self, size: int = -1, /) -> bytes:
        data = self.raw.read(size)
        if data:
            self._put(partial(self.sha.update, data))
            self.hashed += len(data)
        return data or b""

    def readinto(self, buffer: bytearray | memoryview, /) -> int:  # type: ignore[override]
        n = self.raw.readinto(buffer) or 0
        if n:
            # the caller reuses its buffer: hash a copy
            self._put(partial(self.sha.update, bytes(memoryview(buffer)[:n])))
            self.hashed += n
        return n

    def whole(self) -> bool:
        """Every byte of the file, as it is now, went through this stream."""
        raw = self.raw
        try:
            return self.hashed == raw.tell() == os.fstat(raw.fileno()).st_size
        except (OSError, ValueError):  # closed, or gone
            return False

    def close(self) -> None:
        self.raw.close()
        super().close()


def file_digest(path: str) -> tuple[str, int | None]:
    """SHA-256 and size of a regular file ("" and None for a stream)."""
    # never open a FIFO or a device here: that would take the reader's data
    if path == "-" or not os.path.isfile(path):
        return "", None
    try:
        with open(path, "rb") as fh:
            h = hashlib.file_digest(fh, "sha256")
            return h.hexdigest(), fh.tell()
    except OSError:
        return "", None
