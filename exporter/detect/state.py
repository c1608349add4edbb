"""In-memory state of the stateful rule kinds, on event time, with bounded memory.

This is the state of one process (the default, and the fallback while a
shared store is unreachable); the shared store (exporter.state, with
``state.url``) runs the same transitions in Redis/Valkey.

Each state keeps at most ``max_entries`` groups (or key/value pairs). Entries
are kept in least-recently-touched order; expired ones are dropped from the
front as time (the newest event time seen, the watermark) advances, and when
the bound is reached the least recently touched entry is evicted and counted.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Hashable
from typing import Any

Key = tuple[str, ...]


class _Bounded:
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.evictions = 0
        self.watermark = float("-inf")

    def _evict(self, d: dict[Hashable, object]) -> None:
        while len(d) > self.max_entries:
            del d[next(iter(d))]
            self.evictions += 1


class ThresholdState(_Bounded):
    """Fires when ``count`` events of one group fall within ``window`` seconds
    (inclusive), then forgets that group's events and counts afresh."""

    def __init__(self, window: float, count: int, max_entries: int) -> None:
        super().__init__(max_entries)
        self.window = window
        self.count = count
        self.groups: dict[Key, list[float]] = {}

    @property
    def entries(self) -> int:
        return len(self.groups)

    def observe(self, key: Key, t: float) -> bool:
        if t > self.watermark:
            self.watermark = t
        horizon = self.watermark - self.window
        if t < horizon:
            return False  # too late to count: its window has passed
        groups = self.groups
        # drop groups whose newest event is out of the window
        while groups:
            first = next(iter(groups))
            if groups[first][-1] >= horizon:
                break
            del groups[first]
        times = groups.pop(key, None)
        if times is None:
            times = [t]
        else:
            insort(times, t)
            cut = 0
            while cut < len(times) and times[cut] < horizon:
                cut += 1
            if cut:
                del times[:cut]
        if len(times) >= self.count:
            return True  # fired: the group starts again from nothing
        groups[key] = times
        self._evict(groups)  # type: ignore[arg-type]
        return False


class _Values:
    """One group of a DistinctThresholdState: each value's newest time, and
    bounds that spare a look at every value on every event: the newest time
    of all (exact) and one no later than the oldest."""

    __slots__ = ("newest", "oldest", "seen")

    def __init__(self) -> None:
        self.seen: dict[Key, float] = {}
        self.newest = float("-inf")
        self.oldest = float("inf")


class DistinctThresholdState(_Bounded):
    """Fires when ``count`` distinct values show up in one group within
    ``window`` seconds (inclusive), then forgets that group."""

    def __init__(self, window: float, count: int, max_entries: int) -> None:
        super().__init__(max_entries)
        self.window = window
        self.count = count
        self.groups: dict[Key, _Values] = {}

    @property
    def entries(self) -> int:
        return len(self.groups)

    def observe(self, key: Key, value: Key, t: float) -> bool:
        if t > self.watermark:
            self.watermark = t
        horizon = self.watermark - self.window
        if t < horizon:
            return False
        groups = self.groups
        while groups:
            first = next(iter(groups))
            if groups[first].newest >= horizon:
                break
            del groups[first]
        group = groups.pop(key, None)
        if group is None:
            group = _Values()
        elif group.oldest < horizon:
            seen = group.seen
            for v in [v for v, ts in seen.items() if ts < horizon]:
                del seen[v]
            group.oldest = min(seen.values(), default=float("inf"))
            group.newest = max(seen.values(), default=float("-inf"))
        seen = group.seen
        last = seen.get(value)
        if last is None or t > last:
            seen[value] = t
            if t > group.newest:
                group.newest = t
            if t < group.oldest:
                group.oldest = t
        if len(seen) >= self.count:
            return True
        # a group holds at most count - 1 values: memory stays bounded
        groups[key] = group
        self._evict(groups)  # type: ignore[arg-type]
        return False


class _Progress:
    __slots__ = ("n", "start", "step")

    def __init__(self, start: float) -> None:
        self.start = start
        self.step = 0
        self.n = 0


class SequenceState(_Bounded):
    """Ordered steps per group: fires when every step has been seen (each
    ``counts[i]`` times), in order, within ``window`` of the first one."""

    def __init__(self, counts: list[int], window: float, max_entries: int) -> None:
        super().__init__(max_entries)
        self.counts = counts
        self.window = window
        self.groups: dict[Key, _Progress] = {}

    @property
    def entries(self) -> int:
        return len(self.groups)

    def observe(self, key: Key, t: float, step_matches: Callable[[int], bool]) -> bool:
        if t > self.watermark:
            self.watermark = t
        horizon = self.watermark - self.window
        groups = self.groups
        while groups:
            first = next(iter(groups))
            if groups[first].start >= horizon:
                break
            del groups[first]
        p = groups.get(key)
        if p is not None and t - p.start > self.window:
            del groups[key]
            p = None
        if p is None:
            if t < horizon or not step_matches(0):
                return False
            p = _Progress(t)
        elif step_matches(p.step):
            del groups[key]  # re-inserted below: most recently touched last
        else:
            return False
        p.n += 1
        if p.n >= self.counts[p.step]:
            p.step += 1
            p.n = 0
            if p.step == len(self.counts):
                return True
        groups[key] = p
        self._evict(groups)  # type: ignore[arg-type]
        return False

    def step_of(self, key: Key) -> int | None:
        p = self.groups.get(key)
        return None if p is None else p.step


class FirstSeenState(_Bounded):
    """Remembers (key, value) pairs for ``ttl`` seconds after they were last
    seen; a pair not remembered is new. During ``learning`` seconds from the
    first event, new pairs are remembered but not reported."""

    def __init__(self, ttl: float, learning: float, max_entries: int) -> None:
        super().__init__(max_entries)
        self.ttl = ttl
        self.learning = learning
        self.started: float | None = None
        self.seen: dict[tuple[Key, str], float] = {}
        # observations so far: a saver can tell whether anything changed
        self.changes = 0

    @property
    def entries(self) -> int:
        return len(self.seen)

    def observe(self, key: Key, value: str, t: float) -> bool:
        self.changes += 1
        if self.started is None:
            self.started = t
        if t > self.watermark:
            self.watermark = t
        horizon = self.watermark - self.ttl
        seen = self.seen
        while seen:
            first = next(iter(seen))
            if seen[first] >= horizon:
                break
            del seen[first]
        pair = (key, value)
        last = seen.pop(pair, None)
        new = last is None or t - last > self.ttl
        seen[pair] = t if last is None or t > last else last
        if len(seen) > self.max_entries:
            self._evict(seen)  # type: ignore[arg-type]
        return new and t >= self.started + self.learning

    # --- kept across restarts (exporter.state.persist) --------------------------

    def dump(self) -> dict[str, Any]:
        """What a restart needs, as JSON-ready data (oldest entry first)."""
        watermark = None if self.watermark == float("-inf") else self.watermark
        return {
            "started": self.started,
            "watermark": watermark,
            "seen": [[list(key), value, t] for (key, value), t in self.seen.items()],
        }

    def restore(self, data: Any) -> int:
        """Takes back what :meth:`dump` gave (skipping malformed entries,
        keeping the bound); returns the entries restored."""
        if not isinstance(data, dict):
            return 0
        started, watermark = data.get("started"), data.get("watermark")
        if isinstance(started, int | float) and not isinstance(started, bool):
            self.started = float(started)
        if isinstance(watermark, int | float) and not isinstance(watermark, bool):
            self.watermark = max(self.watermark, float(watermark))
        seen = data.get("seen")
        restored = 0
        for item in seen if isinstance(seen, list) else ():
            if not (isinstance(item, list) and len(item) == 3):
                continue
            key, value, t = item
            if (
                not isinstance(key, list)
                or not all(isinstance(k, str) for k in key)
                or not isinstance(value, str)
                or not isinstance(t, int | float)
                or isinstance(t, bool)
            ):
                continue
            pair = (tuple(key), value)
            self.seen.pop(pair, None)
            self.seen[pair] = float(t)
            restored += 1
        before = self.evictions
        self._evict(self.seen)  # type: ignore[arg-type]
        self.evictions = before  # a smaller bound than last time is not an eviction
        return min(restored, len(self.seen))
