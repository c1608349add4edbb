"""The C helpers of exporter._speedups where they were built, and their
Python equivalents where not (no C compiler at install time) or when the
environment turns them off (PURE_PYTHON_ENV). Both give the same results:
tests/test_speedups.py holds them to it.

exporter.event sets up the decoder's fast path from ``compiled``; the
helpers below are the ones that need nothing set up."""

from __future__ import annotations

import os
from types import ModuleType

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


def py_split_newlines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def py_contains_any(data: bytes, needles: tuple[bytes, ...]) -> bool:
    return any(needle in data for needle in needles)


# data.split(b"\n"): CPython's split compares byte by byte, the C one
# finds each newline with memchr (a tenth of replay's work on long lines)
split_newlines = compiled.split_newlines if compiled is not None else py_split_newlines
# does one of ``needles`` occur in ``data``? (memmem in C)
contains_any = compiled.contains_any if compiled is not None else py_contains_any
