"""The spool's small state files, beside its segments (exporter/loki/spool.py).

- ``ack``: the position up to which Loki acknowledged everything:
  ``segment(8) | offset(8) | crc32 of the 16 bytes before (4)``.
- ``acked``: the start positions of records after that position that Loki
  acknowledged out of order (parallel pushes):
  ``crc32 of the rest (4) | count (4) | count x (segment(8) | offset(8))``.
- ``mark``: the newest mark, once the segment holding it is gone:
  ``crc32 of the mark (4) | mark``.

Each is replaced whole: written to ``NAME.tmp``, fsynced (unless the
policy is ``never``), renamed over the old one, and the directory fsynced,
so a crash leaves the old file or the new one. A file that fails its
check (a torn write on a file system without atomic rename, a flipped bit)
is logged and read as absent: the spool then resends rather than loses.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (segment id, byte offset)

_ACK = struct.Struct("<QQI")
_CRC = struct.Struct("<I")
_COUNT = struct.Struct("<I")
_POS = struct.Struct("<QQ")


class StateFiles:
    def __init__(self, directory: str, fsync: str) -> None:
        self.directory = directory
        self.fsync = fsync

    def sync_dir(self) -> None:
        """Make renames and new files in the directory durable (per the policy)."""
        if self.fsync == "never":
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.directory, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _replace(self, name: str, data: bytes) -> None:
        path = os.path.join(self.directory, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync != "never":
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        self.sync_dir()

    # --- ack -------------------------------------------------------------------

    def read_ack(self) -> Position | None:
        data = self._read("ack")
        if data is None:
            return None
        if len(data) == _ACK.size:
            seg, off, crc = _ACK.unpack(data)
            if zlib.crc32(data[:16]) == crc:
                return seg, off
        log.warning(
            "spool ack file is damaged; resending everything", extra={"dir": self.directory}
        )
        return None

    def write_ack(self, pos: Position) -> None:
        head = struct.pack("<QQ", *pos)
        self._replace("ack", head + _CRC.pack(zlib.crc32(head)))

    # --- acked -----------------------------------------------------------------

    def read_acked(self) -> set[Position]:
        data = self._read("acked")
        if data is None:
            return set()
        start = _CRC.size + _COUNT.size
        if len(data) >= start:
            (crc,) = _CRC.unpack_from(data)
            (n,) = _COUNT.unpack_from(data, _CRC.size)
            if len(data) - start == n * _POS.size and zlib.crc32(data[_CRC.size :]) == crc:
                return {_POS.unpack_from(data, start + i * _POS.size) for i in range(n)}
        log.warning(
            "spool acked file is damaged; resending the records it named",
            extra={"dir": self.directory},
        )
        return set()

    def write_acked(self, positions: set[Position]) -> None:
        flat = [x for pos in sorted(positions) for x in pos]
        rest = _COUNT.pack(len(positions)) + struct.pack(f"<{len(flat)}Q", *flat)
        self._replace("acked", _CRC.pack(zlib.crc32(rest)) + rest)

    # --- mark ------------------------------------------------------------------

    def read_mark(self) -> bytes | None:
        data = self._read("mark")
        if data is None:
            return None
        if len(data) >= _CRC.size and zlib.crc32(data[_CRC.size :]) == _CRC.unpack_from(data)[0]:
            return data[_CRC.size :]
        log.warning("spool mark file is damaged; ignoring it", extra={"dir": self.directory})
        return None

    def write_mark(self, mark: bytes) -> None:
        self._replace("mark", _CRC.pack(zlib.crc32(mark)) + mark)
