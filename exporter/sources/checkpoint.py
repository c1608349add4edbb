"""The log file source's checkpoint: which file, and how far into it.

A file is named by its identity, not its path: the path is reused at every
rotation, and an inode number is reused by the file system once the file
that had it is gone. So a checkpoint holds ``(dev, ino)`` *and* a
fingerprint, the SHA-256 of the file's first bytes (as many as the file had,
up to :data:`FINGERPRINT_BYTES`), which also survives compression: the
fingerprint of ``audit-...log.gz`` is taken over its decompressed stream.

The file is small JSON, replaced atomically (temporary file, fsync, rename,
fsync of the directory), so a crash leaves either the old checkpoint or the
new one, never half of one::

    {
      "version": 1,
      "path": "/var/log/kubernetes/audit/audit.log",
      "file": "/var/log/kubernetes/audit/audit.log",
      "dev": 2049,
      "ino": 1835021,
      "fingerprint": "sha256:9f2c...",
      "fingerprint_bytes": 1024,
      "offset": 5242880,
      "line": 10240,
      "rotated_done": "2024-05-01T10-00-00.000",
      "seq": 1042,
      "updated": "2024-05-01T10:00:07.250Z"
    }

``offset`` is in uncompressed bytes and always at a line boundary; ``line`` is
the number of lines before it (null when the source started at the end of a
file it had not read). ``seq`` counts the batches the pipeline took, across
restarts: of two checkpoints (this file, and the mark the Loki spool keeps
with each batch) the one with the higher ``seq`` is the later; it is 0 in a
file written before it existed. ``rotated_done`` is the timestamp of the newest rotated
file known to be finished: when the file itself cannot be found again, every
rotated file newer than that is still unread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import orjson

VERSION = 1
# Enough to cover the first event of any audit log (its auditID makes the
# prefix unique), small enough to re-read on every poll.
FINGERPRINT_BYTES = 1024


class CheckpointError(Exception):
    """A checkpoint file that exists but cannot be used."""


def fingerprint(head: bytes) -> str:
    return "sha256:" + hashlib.sha256(head).hexdigest()


@dataclass(frozen=True, slots=True)
class Position:
    """A place in one file: the identity of the file and an offset into it."""

    file: str
    dev: int
    ino: int
    fingerprint: str
    fingerprint_bytes: int
    offset: int
    line: int | None

    def matches_head(self, head: bytes) -> bool:
        """Whether a file starting with ``head`` starts like this one did."""
        if len(head) < self.fingerprint_bytes:
            return False
        return fingerprint(head[: self.fingerprint_bytes]) == self.fingerprint

    @property
    def strong(self) -> bool:
        """Whether the fingerprint alone tells files apart (a full prefix)."""
        return self.fingerprint_bytes >= FINGERPRINT_BYTES


@dataclass(frozen=True, slots=True)
class Checkpoint:
    path: str
    position: Position
    rotated_done: str | None
    seq: int = 0


def dump(ck: Checkpoint, now: float | None = None) -> bytes:
    p = ck.position
    wall = time.time() if now is None else now
    doc: dict[str, Any] = {
        "version": VERSION,
        "path": ck.path,
        "file": p.file,
        "dev": p.dev,
        "ino": p.ino,
        "fingerprint": p.fingerprint,
        "fingerprint_bytes": p.fingerprint_bytes,
        "offset": p.offset,
        "line": p.line,
        "rotated_done": ck.rotated_done,
        "seq": ck.seq,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
        + f".{int(wall * 1000) % 1000:03d}Z",
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def parse(data: bytes) -> Checkpoint:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CheckpointError(f"not JSON: {e}") from None
    if type(doc) is not dict:
        raise CheckpointError("not a JSON object")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"version: {doc.get('version')!r} is not {VERSION}")
    fp_bytes = _int(doc, "fingerprint_bytes")
    if fp_bytes > FINGERPRINT_BYTES:
        raise CheckpointError(f"fingerprint_bytes: must be <= {FINGERPRINT_BYTES}")
    fp = _str(doc, "fingerprint")
    if not fp.startswith("sha256:"):
        raise CheckpointError("fingerprint: must start with sha256:")
    position = Position(
        file=_str(doc, "file"),
        dev=_int(doc, "dev"),
        ino=_int(doc, "ino"),
        fingerprint=fp,
        fingerprint_bytes=fp_bytes,
        offset=_int(doc, "offset"),
        line=None if doc.get("line") is None else _int(doc, "line"),
    )
    rotated_done = doc.get("rotated_done")
    return Checkpoint(
        path=_str(doc, "path"),
        position=position,
        rotated_done=None if rotated_done is None else _str(doc, "rotated_done"),
        seq=0 if doc.get("seq") is None else _int(doc, "seq"),
    )


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if type(value) is not int or value < 0:
        raise CheckpointError(f"{name}: must be an integer >= 0")
    return value


def _str(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if type(value) is not str:
        raise CheckpointError(f"{name}: must be a string")
    return value


def load(filename: str) -> Checkpoint | None:
    """The checkpoint in ``filename``; None when there is none yet.

    Raises OSError when it cannot be read and CheckpointError when it is not
    a checkpoint of this version."""
    data = read_small(filename)
    return None if data is None else parse(data)


def save(filename: str, ck: Checkpoint) -> None:
    """Replace ``filename`` atomically and durably with ``ck``."""
    write_atomic(filename, dump(ck))


def read_small(filename: str, limit: int = 1 << 16) -> bytes | None:
    """The first ``limit`` bytes of ``filename``; None when it does not exist.
    Raises OSError when it cannot be read."""
    try:
        with open(filename, "rb") as f:
            return f.read(limit)
    except FileNotFoundError:
        return None


def write_atomic(filename: str, data: bytes) -> None:
    """Replace ``filename`` atomically and durably with ``data`` (temporary
    file, fsync, rename, fsync of the directory): any source's cursor file."""
    directory = os.path.dirname(os.path.abspath(filename))
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(filename)}.", suffix=".tmp", dir=directory
    )
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, filename)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
