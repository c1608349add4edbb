"""The Lua transitions against the in-memory states they port, on random
streams: for any sequence of observations in event-time order (ties
included), sent in batches of any size, Redis fires exactly where this
process's memory fires. Event time runs forward here; late events are
where the two may differ (the in-memory states forget in touch order, the
scripts per key), as the README says."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.detect.state import (
    DistinctThresholdState,
    FirstSeenState,
    SequenceState,
    ThresholdState,
)
from exporter.state import Observation, RuleSpec, StateSettings
from exporter.state.redis_store import RedisStore
from tests.redis_server import RedisServer

T0 = 1714550400.0
_run = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    s = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    s.start()
    yield s
    s.kill()


# one observation: a gap after the previous one, a group, a value, the steps
steps = st.tuples(
    st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, 5.0, 5.0, 10.0, 20.0, 40.0, 60.0, 100.0, 130.0]),
    st.sampled_from(["a", "b"]),
    st.sampled_from(["x", "y", "z", "w"]),
    st.integers(min_value=0, max_value=7),
)
streams = st.lists(steps, min_size=1, max_size=80)
cuts = st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=20)

SPECS = {
    "threshold": RuleSpec("r", "threshold", 60.0, count=3),
    "distinct": RuleSpec("r", "distinct", 60.0, count=3),
    "sequence": RuleSpec("r", "sequence", 120.0, counts=(2, 1, 1)),
    "first_seen": RuleSpec("r", "first_seen", 100.0, learning=30.0),
}


def memory(kind: str, stream: list[tuple[float, str, str, int]]) -> list[bool]:
    spec = SPECS[kind]
    out = []
    t = T0
    if kind == "threshold":
        ts = ThresholdState(spec.window, spec.count, 10_000)
        for gap, g, _, _ in stream:
            t += gap
            out.append(ts.observe((g,), t))
    elif kind == "distinct":
        ds = DistinctThresholdState(spec.window, spec.count, 10_000)
        for gap, g, v, _ in stream:
            t += gap
            out.append(ds.observe((g,), (v,), t))
    elif kind == "sequence":
        ss = SequenceState(list(spec.counts), spec.window, 10_000)
        for gap, g, _, mask in stream:
            t += gap
            out.append(ss.observe((g,), t, lambda i, m=mask: bool(m >> i & 1)))
    else:
        fs = FirstSeenState(spec.window, spec.learning, 10_000)
        for gap, g, v, _ in stream:
            t += gap
            out.append(fs.observe((g,), v, t))
    return out


def shared(
    server: RedisServer, kind: str, stream: list[tuple[float, str, str, int]], cut: list[int]
) -> list[bool]:
    store = RedisStore(StateSettings(url=server.url, prefix=f"p{next(_run)}:", timeout=2.0))
    spec = SPECS[kind]
    obs = []
    t = T0
    for i, (gap, g, v, mask) in enumerate(stream):
        t += gap
        # the in-memory distinct state keys on the value tuple; the store on its text
        value = f'["{v}"]' if kind == "distinct" else v
        obs.append(Observation(spec, (g,), t, value, mask, member=str(i)))
    out: list[bool] = []
    sizes = itertools.cycle(cut)
    while len(out) < len(obs):
        batch = obs[len(out) : len(out) + next(sizes)]
        answers = store.observe(batch)
        assert answers is not None
        out += answers
    store.close()
    return out


@pytest.mark.parametrize("kind", sorted(SPECS))
@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(stream=streams, cut=cuts)
def test_redis_fires_where_memory_fires(
    server: RedisServer, kind: str, stream: list[tuple[float, str, str, int]], cut: list[int]
) -> None:
    assert shared(server, kind, stream, cut) == memory(kind, stream)
