"""Reading a ``.gz`` audit log up to its last recoverable byte.

:class:`gzip.GzipFile` raises EOFError at a cut, and read through its buffer
it drops what it had already decompressed in that call: a file cut at 90%
lost its last megabyte of events, one cut in half lost everything, and
neither said so. :class:`GzipStream` decompresses with zlib itself: every
byte before the cut or the damage comes out, then the end of the stream, and
:attr:`GzipStream.problem` says what ended it. Concatenated members (``cat
a.gz b.gz``) and trailing zero padding are read as gzip reads them.
"""

from __future__ import annotations

import zlib
from typing import IO

# The gzip magic number: a stream starting with it is compressed.
MAGIC = b"\x1f\x8b"
CHUNK = 1 << 16
# gzip's header and trailer around a deflate stream
_WBITS = 16 + zlib.MAX_WBITS
# what read(-1) asks of zlib at a time
_WHOLE = 1 << 20


class GzipStream:
    """A binary reader of the decompressed bytes of ``raw``.

    ``read(n)`` returns ``n`` bytes unless the stream ends first, and never
    raises for a cut or damaged input: it ends there and sets ``problem``.
    A compressed chunk never inflates to more than ``n`` bytes at once, so a
    gzip bomb costs what the caller reads, not what it holds.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0  # compressed bytes read, for progress
        self.problem: str | None = None
        self._zlib = zlib.decompressobj(_WBITS)
        self._in_member = False  # bytes of a member were fed, its end not seen
        self._held = b""  # compressed bytes read past the end of a member
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        want = -1 if n is None or n < 0 else n
        parts = []
        have = 0
        while want < 0 or have < want:
            data = self._some(_WHOLE if want < 0 else want - have)
            if not data:
                break
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def close(self) -> None:
        self.raw.close()

    def _feed(self) -> bytes:
        data = self.raw.read(CHUNK)
        self.count += len(data)
        return data

    def _some(self, limit: int) -> bytes:
        """Up to ``limit`` decompressed bytes; empty at the end."""
        while not self._done:
            z = self._zlib
            if z.eof:
                # the member is complete: another may follow
                self._held = z.unused_data
                self._zlib = zlib.decompressobj(_WBITS)
                self._in_member = False
                continue
            data = z.unconsumed_tail or self._held
            self._held = b""
            if not data:
                data = self._feed()
                if not data:
                    self._done = True
                    if self._in_member:
                        self.problem = "the file ends before its gzip end-of-stream marker"
                    return b""
            if not self._in_member:
                data = data.lstrip(b"\x00")  # padding after the last member
                if not data:
                    continue
            try:
                out = z.decompress(data, limit)
            except zlib.error as e:
                self._done = True
                self.problem = f"damaged gzip data: {e}"
                return b""
            self._in_member = not z.eof
            if out:
                return out
        return b""
