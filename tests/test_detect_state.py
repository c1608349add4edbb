"""The stateful kinds on event time: each fires exactly at the threshold, the
last step or the first sighting, not before, forgets after its window or TTL,
and keeps its memory within the configured bound."""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter.detect import DetectionSettings
from exporter.detect.state import (
    DistinctThresholdState,
    FirstSeenState,
    SequenceState,
    ThresholdState,
)
from tests.detect_helpers import detector, event, fires, rules_from

THRESHOLD = """
rules:
  - id: burst
    title: t
    severity: warning
    description: d
    kind: threshold
    match: {responseStatus.code: 401}
    group_by: [$source_ip]
    window: 60s
    count: 3
"""


def fail(at: float, ip: str = "203.0.113.5") -> dict[str, object]:
    return {"at": at, "verb": "get", "stage": "ResponseStarted", "user": {},
            "responseStatus": {"code": 401}, "sourceIPs": ["10.9.9.9", ip]}  # fmt: skip


def test_threshold_fires_exactly_at_the_count(tmp_path: Path) -> None:
    det, _, registry = detector(rules_from(tmp_path, THRESHOLD))
    assert not fires(det, event(**fail(0)), "burst")
    assert not fires(det, event(**fail(10)), "burst")
    assert fires(det, event(**fail(20)), "burst")
    # it starts counting afresh after firing
    assert not fires(det, event(**fail(21)), "burst")
    assert not fires(det, event(**fail(22)), "burst")
    assert fires(det, event(**fail(23)), "burst")
    assert (
        registry.get_sample_value(
            "kube_audit_rule_matches_total", {"rule": "burst", "severity": "warning"}
        )
        == 2.0
    )


def test_threshold_window_is_inclusive_and_forgets(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, THRESHOLD))
    assert not fires(det, event(**fail(0)), "burst")
    assert not fires(det, event(**fail(30)), "burst")
    assert fires(det, event(**fail(60)), "burst")  # 0, 30, 60: within 60s inclusive

    det, _, _ = detector(rules_from(tmp_path, THRESHOLD))
    assert not fires(det, event(**fail(0)), "burst")
    assert not fires(det, event(**fail(30)), "burst")
    assert not fires(det, event(**fail(61)), "burst")  # the first fell out of the window
    assert fires(det, event(**fail(62)), "burst")  # 30, 61, 62


def test_threshold_groups_by_the_trustworthy_source_address(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, THRESHOLD))
    # the same claimed X-Forwarded-For, different peers: different groups
    assert not fires(det, event(**fail(0, "203.0.113.5")), "burst")
    assert not fires(det, event(**fail(1, "203.0.113.6")), "burst")
    assert not fires(det, event(**fail(2, "203.0.113.7")), "burst")
    assert not fires(det, event(**fail(3, "203.0.113.5")), "burst")
    assert fires(det, event(**fail(4, "203.0.113.5")), "burst")


def test_threshold_ignores_events_older_than_its_window(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, THRESHOLD))
    assert not fires(det, event(**fail(1000)), "burst")
    assert not fires(det, event(**fail(1001)), "burst")
    assert not fires(det, event(**fail(100)), "burst")  # a late event of long ago
    assert fires(det, event(**fail(1002)), "burst")


SEQUENCE = """
rules:
  - id: seq
    title: t
    severity: critical
    description: d
    kind: sequence
    match: {$user_kind: human}
    group_by: [user.username]
    window: 10m
    steps:
      - name: outside
        count: 2
        match: {responseStatus.code: 403, $source_ip: {not: {cidr: $trusted_networks}}}
      - name: inside
        match: {responseStatus.code: 403, $source_ip: {cidr: $trusted_networks}}
      - name: success
        match: {responseStatus.code: {lt: 400}, $source_ip: {cidr: $trusted_networks}}
"""
TRUSTED = DetectionSettings(trusted_networks=("10.20.0.0/16",))


def req(at: float, ip: str, code: int, user: str = "carol") -> dict[str, object]:
    return {"at": at, "verb": "get", "user": {"username": user}, "sourceIPs": [ip],
            "responseStatus": {"code": code},
            "objectRef": {"resource": "pods", "namespace": "x"}}  # fmt: skip


def test_sequence_fires_exactly_at_the_last_step(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, SEQUENCE), TRUSTED)
    steps = [
        req(0, "198.51.100.1", 403),
        req(10, "10.20.0.5", 200),  # a success before its step: ignored
        req(20, "198.51.100.1", 403),
        req(30, "10.20.0.5", 403),
    ]
    for s in steps:
        assert not fires(det, event(**s), "seq")
    assert det.rules[0].state is not None and det.rules[0].state.entries == 1
    assert fires(det, event(**req(40, "10.20.0.5", 200)), "seq")
    assert det.rules[0].state.entries == 0
    # done: another success alone does not fire again
    assert not fires(det, event(**req(50, "10.20.0.5", 200)), "seq")


def test_sequence_keeps_users_apart_and_needs_the_order(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, SEQUENCE), TRUSTED)
    assert not fires(det, event(**req(0, "198.51.100.1", 403, "carol")), "seq")
    assert not fires(det, event(**req(1, "198.51.100.1", 403, "dave")), "seq")
    assert not fires(det, event(**req(2, "10.20.0.5", 403, "carol")), "seq")  # too early
    assert not fires(det, event(**req(3, "10.20.0.5", 200, "carol")), "seq")
    assert not fires(det, event(**req(4, "198.51.100.1", 403, "carol")), "seq")
    assert not fires(det, event(**req(5, "10.20.0.5", 200, "dave")), "seq")
    assert not fires(det, event(**req(6, "10.20.0.5", 403, "carol")), "seq")
    assert fires(det, event(**req(7, "10.20.0.5", 200, "carol")), "seq")


def test_sequence_forgets_after_its_window(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, SEQUENCE), TRUSTED)
    assert not fires(det, event(**req(0, "198.51.100.1", 403)), "seq")
    assert not fires(det, event(**req(60, "198.51.100.1", 403)), "seq")
    assert not fires(det, event(**req(120, "10.20.0.5", 403)), "seq")
    # 600.001 s after the first step: the sequence has expired
    assert not fires(det, event(**req(600.001, "10.20.0.5", 200)), "seq")
    # and it starts again from the first step
    assert not fires(det, event(**req(700, "10.20.0.5", 403)), "seq")
    assert not fires(det, event(**req(710, "10.20.0.5", 200)), "seq")


def test_sequence_rule_needing_trusted_networks_is_inactive_without_them(
    tmp_path: Path,
) -> None:
    det, _, registry = detector(rules_from(tmp_path, SEQUENCE))
    assert det.rules == [] and "detect.trusted_networks" in det.inactive["seq"]
    assert registry.get_sample_value("kube_audit_detect_rule_active", {"rule": "seq"}) == 0.0


FIRST_SEEN = """
rules:
  - id: new-ip
    title: t
    severity: warning
    description: d
    kind: first_seen
    match: {$user_kind: human}
    group_by: [user.username]
    value: $source_ip
    ttl: 1h
    learning: LEARN
"""


def seen(at: float, ip: str, user: str = "alice") -> dict[str, object]:
    return {"at": at, "verb": "patch", "user": {"username": user}, "sourceIPs": [ip],
            "objectRef": {"resource": "configmaps", "namespace": "x", "name": "y"}}  # fmt: skip


def test_first_seen_fires_at_first_sighting_and_forgets_after_ttl(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, FIRST_SEEN.replace("LEARN", "0s")))
    assert fires(det, event(**seen(0, "192.0.2.1")), "new-ip")
    assert not fires(det, event(**seen(1800, "192.0.2.1")), "new-ip")
    # remembered for an hour after it was last seen (1800 s), not after the first sighting
    assert not fires(det, event(**seen(5400, "192.0.2.1")), "new-ip")
    assert fires(det, event(**seen(5400, "192.0.2.2")), "new-ip")  # another address
    assert fires(det, event(**seen(5400, "192.0.2.1", user="bob")), "new-ip")  # another key
    assert fires(det, event(**seen(9000.5, "192.0.2.1")), "new-ip")  # 3600.5 s later: new again


def test_first_seen_only_learns_during_the_learning_period(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, FIRST_SEEN.replace("LEARN", "10m")))
    assert not fires(det, event(**seen(0, "192.0.2.1")), "new-ip")
    assert not fires(det, event(**seen(599, "192.0.2.2")), "new-ip")
    assert not fires(det, event(**seen(600, "192.0.2.2")), "new-ip")  # learnt
    assert fires(det, event(**seen(600, "192.0.2.3")), "new-ip")


def test_state_memory_is_bounded_and_evictions_counted(tmp_path: Path) -> None:
    settings = DetectionSettings(max_state_entries=100)
    det, _, registry = detector(rules_from(tmp_path, THRESHOLD), settings)
    for i in range(1000):
        det([event(**fail(i * 0.01, f"198.51.{i // 250}.{i % 250}"))])
    state = det.rules[0].state
    assert state is not None and state.entries == 100
    assert registry.get_sample_value("kube_audit_detect_state_entries", {"rule": "burst"}) == 100.0
    assert (
        registry.get_sample_value("kube_audit_detect_state_evictions_total", {"rule": "burst"})
        == 900.0
    )


def test_state_classes_hold_their_bounds() -> None:
    t = ThresholdState(window=60, count=1000, max_entries=10)
    for i in range(500):
        t.observe((str(i),), float(i) / 100)
    assert t.entries == 10 and t.evictions == 490
    d = DistinctThresholdState(window=60, count=1000, max_entries=10)
    for i in range(50):
        d.observe((str(i % 20),), (str(i),), float(i))
    assert d.entries == 10
    s = SequenceState([1, 1, 1], window=60, max_entries=5)
    for i in range(50):
        s.observe((str(i),), float(i) / 100, lambda step: step == 0)
    assert s.entries == 5 and s.evictions == 45
    f = FirstSeenState(ttl=3600, learning=0, max_entries=7)
    for i in range(30):
        f.observe(("k",), str(i), float(i))
    assert f.entries == 7 and f.evictions == 23


def test_expired_state_is_dropped_as_event_time_advances() -> None:
    t = ThresholdState(window=60, count=5, max_entries=1000)
    for i in range(100):
        t.observe((str(i),), 0.0)
    assert t.entries == 100
    t.observe(("late",), 61.0)
    assert t.entries == 1
    f = FirstSeenState(ttl=60, learning=0, max_entries=1000)
    for i in range(100):
        f.observe(("k",), str(i), 0.0)
    f.observe(("k",), "new", 61.0)
    assert f.entries == 1


DISTINCT = """
rules:
  - id: harvest
    title: t
    severity: warning
    description: d
    kind: threshold
    match: {verb: get, objectRef.resource: secrets}
    group_by: [user.username]
    distinct: [objectRef.namespace, objectRef.name]
    window: 10m
    count: 3
"""


def secret_get(at: float, ns: str, name: str) -> dict[str, object]:
    return {"at": at, "verb": "get", "user": {"username": "mallory"},
            "objectRef": {"resource": "secrets", "namespace": ns, "name": name}}  # fmt: skip


def test_distinct_threshold_counts_values_not_events(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, DISTINCT))
    for i in range(10):
        assert not fires(det, event(**secret_get(i, "a", "same")), "harvest")
    assert not fires(det, event(**secret_get(20, "a", "other")), "harvest")
    assert fires(det, event(**secret_get(21, "b", "other")), "harvest")  # the third distinct
    det2, _, _ = detector(rules_from(tmp_path, DISTINCT))
    assert not fires(det2, event(**secret_get(0, "a", "s1")), "harvest")
    assert not fires(det2, event(**secret_get(1, "a", "s1")), "harvest")
    assert not fires(det2, event(**secret_get(2, "b", "s1")), "harvest")
    assert fires(det2, event(**secret_get(3, "a", "s2")), "harvest")


WATCHES = """
rules:
  - id: watches
    title: t
    severity: info
    description: d
    kind: threshold
    match: {verb: watch, objectRef.resource: secrets}
    group_by: [user.username]
    window: 10m
    count: 2
"""


def test_a_long_running_request_counts_once(tmp_path: Path) -> None:
    det, _, _ = detector(rules_from(tmp_path, WATCHES))

    def watch(at: float, stage: str, audit_id: str) -> dict[str, object]:
        return {"at": at, "verb": "watch", "stage": stage, "auditID": audit_id,
                "user": {"username": "mallory"}, "objectRef": {"resource": "secrets"}}  # fmt: skip

    # one watch: its ResponseStarted and, minutes later, its ResponseComplete
    assert not fires(det, event(**watch(0, "ResponseStarted", "w1")), "watches")
    assert not fires(det, event(**watch(300, "ResponseComplete", "w1")), "watches")
    # a second watch is the second request
    assert fires(det, event(**watch(301, "ResponseStarted", "w2")), "watches")


class _PlainDistinct:
    """DistinctThresholdState as it first was, looking at every value of
    the group on every event: the reference for the one that keeps bounds."""

    def __init__(self, window: float, count: int, max_entries: int) -> None:
        self.window, self.count, self.max_entries = window, count, max_entries
        self.groups: dict[tuple[str, ...], dict[tuple[str, ...], float]] = {}
        self.watermark = float("-inf")
        self.evictions = 0

    def observe(self, key: tuple[str, ...], value: tuple[str, ...], t: float) -> bool:
        self.watermark = max(self.watermark, t)
        horizon = self.watermark - self.window
        if t < horizon:
            return False
        groups = self.groups
        while groups:
            first = next(iter(groups))
            if max(groups[first].values()) >= horizon:
                break
            del groups[first]
        seen = groups.pop(key, None) or {}
        for v in [v for v, ts in seen.items() if ts < horizon]:
            del seen[v]
        seen[value] = max(t, seen.get(value, t))
        if len(seen) >= self.count:
            return True
        groups[key] = seen
        while len(groups) > self.max_entries:
            del groups[next(iter(groups))]
            self.evictions += 1
        return False


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-3, 40), st.integers(0, 3), st.integers(0, 6)),
        max_size=120,
    ),
    st.integers(1, 5),
    st.integers(1, 4),
)
# a group's oldest value expires while a newer one keeps the group
@example([(0, 0, 0), (8, 0, 1), (4, 0, 2)], 5, 4)
def test_distinct_threshold_keeps_the_answers_of_looking_at_every_value(
    stream: list[tuple[int, int, int]], count: int, bound: int
) -> None:
    """The groups' time bounds change no answer, no eviction and no group
    kept: late events, values seen again later, groups expiring from the
    front and the bound reached, against the version that looks at every
    value each time."""
    fast = DistinctThresholdState(window=10, count=count, max_entries=bound)
    plain = _PlainDistinct(10, count, bound)
    t = 0.0
    for step, group, value in stream:
        t += step  # a negative step: an event that comes late
        key, v = (f"g{group}",), (f"v{value}",)
        assert fast.observe(key, v, t) == plain.observe(key, v, t)
        assert list(fast.groups) == list(plain.groups)
        assert {k: g.seen for k, g in fast.groups.items()} == plain.groups
        assert fast.evictions == plain.evictions
