"""Counts over time with a bounded number of buckets, and the gaps in a record.

A :class:`Timeline` starts with one-second buckets and widens them (each
width a multiple of the last, so counts merge exactly) whenever the span
would need more than ``max_buckets``: a log of any length costs the same
memory. :class:`Coverage` keeps the periods that have events, merged when
closer than the gap threshold, so what is left between them are the gaps.
"""

from __future__ import annotations

from collections.abc import Sequence

# Bucket widths in seconds; each divides the next.
WIDTHS = (1, 2, 10, 20, 60, 120, 600, 1200, 3600, 7200, 21600, 43200, 86400)
MAX_BUCKETS = 240


class Timeline:
    """``slots`` counters per bucket (requests by class, failures, ...), and
    per-key rows (one per person) capped at ``max_keys``."""

    def __init__(self, slots: int, max_keys: int = 40, max_buckets: int = MAX_BUCKETS) -> None:
        self.slots = slots
        self.max_keys = max_keys
        self.max_buckets = max_buckets
        self.width = WIDTHS[0]
        self.buckets: dict[int, list[int]] = {}
        self.keyed: dict[str, dict[int, int]] = {}
        self.low: int | None = None
        self.high: int | None = None

    def row(self, ts: float) -> list[int]:
        """The counters of the bucket holding ``ts``, created when new."""
        b = int(ts // self.width)
        row = self.buckets.get(b)
        if row is None:
            if self.low is None or self.high is None:
                self.low = self.high = b
            elif b < self.low:
                self.low = b
            elif b > self.high:
                self.high = b
            if self.high - self.low >= self.max_buckets:
                self._widen()
                return self.row(ts)
            row = self.buckets[b] = [0] * self.slots
        return row

    def add_keyed(self, key: str, ts: float) -> None:
        """One more for ``key`` (a person) at ``ts``; keys past the cap are
        not drawn (the tables list everyone)."""
        self.row(ts)  # keeps the span and the width right
        per = self.keyed.get(key)
        if per is None:
            if len(self.keyed) >= self.max_keys:
                return
            per = self.keyed[key] = {}
        b = int(ts // self.width)
        per[b] = per.get(b, 0) + 1

    def _widen(self) -> None:
        assert self.low is not None and self.high is not None
        old = self.width
        new = next((w for w in WIDTHS if w > old), old * 2)
        while (self.high * old) // new - (self.low * old) // new >= self.max_buckets:
            new = next((w for w in WIDTHS if w > new), new * 2)
        factor = new // old
        merged: dict[int, list[int]] = {}
        for b, row in self.buckets.items():
            nb = b // factor
            into = merged.get(nb)
            if into is None:
                merged[nb] = list(row)
            else:
                for i, v in enumerate(row):
                    into[i] += v
        # in place: callers may hold the dict
        self.buckets.clear()
        self.buckets.update(merged)
        for key, per in self.keyed.items():
            m: dict[int, int] = {}
            for b, v in per.items():
                m[b // factor] = m.get(b // factor, 0) + v
            self.keyed[key] = m
        self.width = new
        self.low //= factor
        self.high //= factor

    def series(self) -> list[tuple[float, list[int]]]:
        """Every bucket from the first to the last (empty ones as zeros), as
        (start time, counters)."""
        if self.low is None or self.high is None:
            return []
        zero = [0] * self.slots
        return [
            (float(b * self.width), self.buckets.get(b, zero))
            for b in range(self.low, self.high + 1)
        ]

    def keyed_series(self, key: str) -> list[int]:
        per = self.keyed.get(key, {})
        if self.low is None or self.high is None:
            return []
        return [per.get(b, 0) for b in range(self.low, self.high + 1)]


class Coverage:
    """The periods that hold events: sorted, disjoint intervals, two merged
    when they are less than ``gap`` seconds apart."""

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.spans: list[list[float]] = []

    def add(self, stamps: Sequence[float]) -> tuple[float, float] | None:
        """One batch's timestamps, in any order; returns their earliest and
        latest (None when there are none)."""
        if not stamps:
            return None
        gap = self.gap
        low = min(stamps)
        high = max(stamps)
        if high - low <= gap:
            # no silence inside the batch can be longer (the usual case)
            self.spans = _merge(self.spans, [[low, high]], gap)
            return low, high
        ordered = sorted(stamps)
        local: list[list[float]] = []
        start = end = ordered[0]
        for t in ordered[1:]:
            if t - end > gap:
                local.append([start, end])
                start = t
            end = t
        local.append([start, end])
        self.spans = _merge(self.spans, local, gap)
        return low, high

    def gaps(self) -> list[tuple[float, float]]:
        """(last event before, first event after) for each silence longer
        than the threshold."""
        return [(a[1], b[0]) for a, b in zip(self.spans, self.spans[1:], strict=False)]


def _merge(a: list[list[float]], b: list[list[float]], gap: float) -> list[list[float]]:
    out: list[list[float]] = []
    for span in sorted(a + b):
        if out and span[0] - out[-1][1] <= gap:
            if span[1] > out[-1][1]:
                out[-1][1] = span[1]
        else:
            out.append(list(span))
    return out
