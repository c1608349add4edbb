"""The C helpers of exporter._speedups where they were built, and their
Python equivalents where not (no C compiler at install time) or when the
environment turns them off (PURE_PYTHON_ENV). Both give the same results:
tests/test_speedups.py holds them to it.

exporter.event sets up the decoder's fast path from ``compiled``; the
helpers below are the ones that need nothing set up."""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

# Set to anything but "" or "0" to run the Python code even where
# exporter._speedups was built (to compare the two, or to rule it out).
PURE_PYTHON_ENV = "KUBE_AUDIT_PURE_PYTHON"


def _load() -> ModuleType | None:
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:  # built without a C compiler
        return None
    return _speedups


compiled = _load()


def py_split_newlines(data: bytes, start: int = 0, end: int | None = None) -> list[bytes]:
    return data[start:end].split(b"\n")


def py_ascii_cr(data: bytes, start: int = 0, end: int | None = None) -> tuple[bool, bool]:
    part = data[start:end]
    return part.isascii(), b"\r" in part


def py_scan_hits(
    events: Sequence[Any],
    keys: Sequence[Any],
    index: dict[Any, tuple[tuple[Callable[[Any], object], int], ...]],
    missing: Callable[[Any], tuple[tuple[Callable[[Any], object], int], ...]],
) -> list[tuple[int, tuple[int, ...]]]:
    """For each event, the positions of the tests of ``index[key]`` (pairs
    (test, position); ``missing(key)`` gives, and remembers, those of a key
    not in it) that hold for it, a test that raises counting as one that
    holds, given as ``~position``; the events with at least one, with their
    positions."""
    if len(keys) != len(events):
        raise ValueError("scan_hits(): as many keys as events")
    found: list[tuple[int, tuple[int, ...]]] = []
    for i, key in enumerate(keys):
        ev = events[i]
        cands = index.get(key)
        if cands is None:
            cands = missing(key)
        hits: list[int] | None = None
        for test, position in cands:
            try:
                hit = test(ev)
            except Exception:  # the processor counts it
                if hits is None:
                    hits = []
                hits.append(~position)
                continue
            if hit:
                if hits is None:
                    hits = []
                hits.append(position)
        if hits is not None:
            found.append((i, tuple(hits)))
    return found


def py_key_hashes(events: Sequence[Any]) -> bytes:
    return array("q", [hash((ev.audit_id, ev.stage, ev.stage_ts)) for ev in events]).tobytes()


def _hash_values(hashes: Any) -> Sequence[int]:
    view = memoryview(hashes).cast("B")
    if len(view) % 8:
        raise ValueError("hashes: a whole number of 8-byte integers")
    return view.cast("q")


def py_new_hash_table() -> Any:
    return set()


def py_seen_before(table: set[int], hashes: Any, others: tuple[set[int], ...]) -> list[int]:
    found: list[int] = []
    for i, h in enumerate(_hash_values(hashes)):
        if h in table or any(h in other for other in others):
            found.append(i)
        else:
            table.add(h)
    return found


def py_hashes_in(tables: tuple[set[int], ...], hashes: Any) -> list[int]:
    return [i for i, h in enumerate(_hash_values(hashes)) if any(h in t for t in tables)]


def py_table_reserve(table: set[int], n: int) -> None:
    if n < 0:
        raise ValueError("table_reserve: n < 0")


def py_table_len(table: set[int]) -> int:
    return len(table)


def py_table_hashes(table: set[int]) -> bytes:
    return array("q", table).tobytes()


def py_contains_any(data: bytes, needles: tuple[bytes, ...]) -> bool:
    return any(needle in data for needle in needles)


# data.split(b"\n"): CPython's split compares byte by byte, the C one
# finds each newline with memchr (a tenth of replay's work on long lines)
split_newlines = compiled.split_newlines if compiled is not None else py_split_newlines
# does one of ``needles`` occur in ``data``? (memmem in C)
contains_any = compiled.contains_any if compiled is not None else py_contains_any
# the tests that hold for each event (Detector.scan's loop)
scan_hits = compiled.scan_hits if compiled is not None else py_scan_hits
# sets of 64-bit hashes (the dedupe keys' of replay --jobs): in C, an
# open-addressing table in a bytearray (a lookup reads one slot and makes
# no int object); in Python, a set of ints. A table is what
# new_hash_table() makes; hashes come as a buffer of int64 (bytes,
# array("q")). seen_before(table, hashes, others): the positions of the
# hashes in table, in one of others or earlier in hashes, the rest added to
# table; hashes_in(tables, hashes): the positions of those in one of tables
if compiled is not None:
    new_hash_table: Callable[[], Any] = bytearray
    seen_before: Callable[[Any, Any, tuple[Any, ...]], list[int]] = compiled.seen_before
    hashes_in: Callable[[tuple[Any, ...], Any], list[int]] = compiled.hashes_in
    table_reserve: Callable[[Any, int], None] = compiled.table_reserve
    table_len: Callable[[Any], int] = compiled.table_len
    table_hashes: Callable[[Any], bytes] = compiled.table_hashes
else:
    new_hash_table = py_new_hash_table
    seen_before = py_seen_before
    hashes_in = py_hashes_in
    table_reserve = py_table_reserve
    table_len = py_table_len
    table_hashes = py_table_hashes
# is a range of bytes ASCII, does it hold a carriage return? (no copy in C)
ascii_cr = compiled.ascii_cr if compiled is not None else py_ascii_cr


def _same_hashes(fn: Any) -> bool:
    """Does ``fn`` give hash((audit_id, stage, stage_ts)) as this Python
    does? The C one repeats CPython's tuple hash, which a later version
    may change."""
    from types import SimpleNamespace

    samples = [
        SimpleNamespace(audit_id=a, stage=s, stage_ts=t)
        for a in ("", "0b5c5f3a-0c3e-4ba1-9d5e-6f7e5c2b9a11", "\u00e9\U0001f600")
        for s in ("RequestReceived", "ResponseComplete")
        for t in (0.0, -1.0, 1.7e9 + 0.123456, float("inf"))
    ]
    want = [hash((e.audit_id, e.stage, e.stage_ts)) for e in samples]
    return bool(array("q", fn(samples)).tolist() == want)


# the dedupe keys' hashes of a batch of events, as the bytes of an
# array("q"): what replay --jobs sends the parent
key_hashes = (
    compiled.key_hashes
    if compiled is not None and _same_hashes(compiled.key_hashes)
    else py_key_hashes
)
