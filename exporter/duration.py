"""Go ``time.Duration`` strings, as Kubernetes writes them and as our config reads them."""

from __future__ import annotations

import re
from typing import Any

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip


def parse_go_duration(text: str) -> float | None:
    """Seconds in "1.5s", "250ms", "1m2.5s", "100µs"; None when not a duration."""
    text = text.strip()
    if not text:
        return None
    if text == "0":
        return 0.0
    total = 0.0
    pos = 0
    for m in _PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        return None
    return total


_DAYS = re.compile(r"(\d+(?:\.\d+)?)d")


def parse_duration(value: Any) -> float:
    """Seconds in a configured duration: Go syntax (30s, 250ms, 1h30m), a
    number of seconds, or days (7d); ValueError otherwise."""
    if type(value) in (int, float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        days = _DAYS.fullmatch(text)
        if days:
            return float(days.group(1)) * 86400.0
        try:
            return float(text)
        except ValueError:
            seconds = parse_go_duration(text)
            if seconds is not None:
                return seconds
    raise ValueError(f"{value!r} is not a duration (e.g. 30s, 250ms, 5m, 7d)")
