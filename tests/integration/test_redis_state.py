"""Two replicas, one truth: pipelines sharing Debian's redis-server.

Each replica is a whole pipeline (redaction, detection, a spool, its own
registry) with its own client of one real redis-server on loopback. The
stream is the simulator's demo log with a held-back attack woven into it:
each attack's events are spaced out over minutes, among thousands of
others, and the batches alternate between the replicas, so that neither
replica alone sees enough of it to fire.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.detect.examples import complete_event, example_events
from exporter.detect.rules import RuleFile, RuleSet
from exporter.event import AuditEvent, Decoder
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from exporter.redact import Redactor
from exporter.state import Observation, RuleSpec, StateSettings
from exporter.state.redis_store import RedisStore
from tests.redis_server import RedisServer, running_redis
from tests.sinks import Spool

ROOT = Path(__file__).resolve().parents[2]
DEMO_LOG = ROOT / "demo" / "audit.log.gz"
# The demo log's networks (demo/config.yaml): 10.8.0.0/16 is the VPN.
SETTINGS = DetectionSettings.from_config(
    {
        "trusted_networks": ["192.0.2.0/24", "10.8.0.0/16"],
        "pod_cidrs": ["10.244.0.0/16"],
        "node_cidrs": ["10.0.0.0/16"],
    },
    {},
    cluster="demo",
    source="test",
)
START = 1714550400.0  # 2024-05-01T08:00:00Z, where the demo log begins
BATCH = 50
ATTACK_RULES = ("auth-failure-burst", "untrusted-then-trusted-access", "forbidden-burst")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


def store(server: RedisServer, prefix: str = "t:", clock: Any = None) -> RedisStore:
    settings = StateSettings(url=server.url, prefix=prefix, timeout=0.5)
    return RedisStore(settings) if clock is None else RedisStore(settings, clock=clock)


class Replica:
    """One exporter's pipeline; ``shared`` is its client of the store."""

    def __init__(self, shared: RedisStore | None, spool: Spool | None = None) -> None:
        self.registry = CollectorRegistry()
        self.metrics = AuditMetrics(self.registry)
        self.detector = Detector(load_rules(None), SETTINGS, self.metrics, shared=shared)
        if shared is not None:
            self.metrics.add_state(shared.collect)
        self.spool = spool or Spool()
        self.pipeline = Pipeline(
            self.metrics,
            processors=[Redactor(), self.detector],
            sinks=[self.spool],
            state=shared,
        )

    def matches(self, rule_id: str) -> float:
        return sum(
            self.registry.get_sample_value(
                "kube_audit_rule_matches_total", {"rule": rule_id, "severity": sev}
            )
            or 0.0
            for sev in ("info", "warning", "critical")
        )

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def burst_objects(start: float, ip: str = "198.18.7.7", tag: str = "burst") -> list[dict[str, Any]]:
    """20 failed logins from ``ip``, 15 s apart from ``start``: a threshold of
    20 in 5 minutes (auth-failure-burst)."""
    return [
        complete_event({"verb": "list", "stage": "ResponseStarted", "user": {},
                        "responseStatus": {"code": 401}, "sourceIPs": [ip],
                        "requestURI": "/api/v1/secrets", "auditID": f"{tag}-{i:04d}"},
                       i + 1, start + 15 * i)
        for i in range(20)
    ]  # fmt: skip


def attack_objects() -> list[dict[str, Any]]:
    """The held-back attack, as raw audit events: 20 failed logins from one
    address 15 s apart (a threshold of 20 in 5 minutes); a service account
    refused for 10 different things 25 s apart (distinct values); a person
    refused three times from outside, then from the VPN, then admitted
    (a sequence)."""
    out: list[dict[str, Any]] = []

    def add(at: float, fields: dict[str, Any]) -> None:
        out.append(complete_event(fields, len(out) + 1, START + at))

    out += burst_objects(START + 60)
    for i in range(10):
        add(70 + 25 * i, {"verb": "list", "user": {"username": "system:serviceaccount:shop:web"},
                          "responseStatus": {"code": 403},
                          "annotations": {"authorization.k8s.io/decision": "forbid"},
                          "objectRef": {"resource": f"crd{i}s",
                                        "namespace": "default"}})  # fmt: skip
    for i in range(3):
        add(80 + 30 * i, {"verb": "get", "user": {"username": "carol"},
                          "sourceIPs": ["198.51.100.23"], "responseStatus": {"code": 403},
                          "annotations": {"authorization.k8s.io/decision": "forbid"},
                          "objectRef": {"resource": "secrets",
                                        "namespace": "payments"}})  # fmt: skip
    add(200, {"verb": "get", "user": {"username": "carol"}, "sourceIPs": ["10.8.4.7"],
              "responseStatus": {"code": 403},
              "annotations": {"authorization.k8s.io/decision": "forbid"},
              "objectRef": {"resource": "secrets", "namespace": "payments"}})  # fmt: skip
    add(230, {"verb": "list", "user": {"username": "carol"}, "sourceIPs": ["10.8.4.7"],
              "objectRef": {"resource": "pods", "namespace": "payments"}})  # fmt: skip
    for i, obj in enumerate(out):
        obj["auditID"] = f"attack-{i:04d}"
    return out


def stream(limit: int = 12_000) -> list[AuditEvent]:
    """The demo log's first ``limit`` events and the attack, in event time
    order, decoded afresh (a pipeline marks the events it sees)."""
    decoder = Decoder()
    with gzip.open(DEMO_LOG) as f:
        lines = f.read().splitlines()[:limit]
    events = [decoder.decode_line(ln) for ln in lines]
    events += [decoder.decode_object(obj) for obj in attack_objects()]
    return sorted(events, key=lambda ev: ev.stage_ts)


def batches(events: Sequence[AuditEvent], size: int = BATCH) -> list[list[AuditEvent]]:
    return [list(events[i : i + size]) for i in range(0, len(events), size)]


def alternate(replicas: Sequence[Replica], events: Sequence[AuditEvent]) -> None:
    for i, batch in enumerate(batches(events)):
        result = replicas[i % len(replicas)].pipeline.process(batch, "webhook")
        assert not result.refused and result.accepted == len(batch)


def stateful_ids() -> list[str]:
    return [r.id for r in Detector(load_rules(None), SETTINGS).rules if r.spec is not None]


def test_a_held_back_attack_split_across_replicas_fires_exactly_once(
    redis_server: RedisServer,
) -> None:
    events = stream()
    one = Replica(None)
    for batch in batches(stream()):
        one.pipeline.process(batch, "webhook")
    alone = [Replica(None), Replica(None)]
    alternate(alone, stream())
    pair = [Replica(store(redis_server)), Replica(store(redis_server))]
    alternate(pair, events)

    for rule_id in ATTACK_RULES:
        assert one.matches(rule_id) >= 1, rule_id
        # in memory, each replica sees half of the attack and misses it
        assert sum(r.matches(rule_id) for r in alone) < one.matches(rule_id), rule_id
    for rule_id in stateful_ids():
        # sharing the state, the two fire exactly as one process does
        assert sum(r.matches(rule_id) for r in pair) == one.matches(rule_id), rule_id
    # the attack's last events carry their rules, on whichever replica took them
    fired = {r for ev in events for r in ev.rules if ev.audit_id.startswith("attack-")}
    assert set(ATTACK_RULES) <= fired
    for r in pair:
        assert r.value("kube_audit_state_backend_up") == 1.0
        assert r.value("kube_audit_state_operations_failed_total", op="detect") == 0.0


def test_every_stateful_rule_example_behaves_the_same_split_across_replicas(
    redis_server: RedisServer,
) -> None:
    """The shipped rules' own examples (what `rules test` runs), one event
    per batch, alternating between two replicas: each fires where the
    example says, and only there."""
    ruleset = load_rules(None)
    checked = 0
    for rf in ruleset.files:
        for rule in rf.rules:
            if rule.kind == "match" or rule.missing(rf.example_settings):
                continue
            for n, example in enumerate(rule.examples):
                prefix = f"ex:{rule.id}:{n}:"
                solo = RuleSet([RuleFile(rule.source, [rule], rf.example_settings)])
                replicas = [
                    Detector(solo, rf.example_settings, shared=store(redis_server, prefix))
                    for _ in range(2)
                ]
                events = example_events(example)
                fired = []
                for i, ev in enumerate(events):
                    replicas[i % 2]([ev])
                    if rule.id in ev.rules:
                        fired.append(i + 1)
                expected = [len(events)] if example.expect else []
                assert fired == expected, f"{rule.id} example {n}"
                checked += 1
    assert checked >= 15


def test_events_both_replicas_take_at_once_count_once_in_every_example(
    redis_server: RedisServer,
) -> None:
    """The race the dedupe window cannot close: the API server retried a
    batch while the first replica was still working on it, so both take
    it. Every event of each shipped stateful rule's examples is taken by
    both replicas, one after the other: each example still fires where it
    says and only there (a sequence whose first step needs three refusals
    is not completed by two refusals taken twice)."""
    ruleset = load_rules(None)
    checked = 0
    for rf in ruleset.files:
        for rule in rf.rules:
            if rule.kind == "match" or rule.missing(rf.example_settings):
                continue
            for n, example in enumerate(rule.examples):
                prefix = f"twice:{rule.id}:{n}:"
                solo = RuleSet([RuleFile(rule.source, [rule], rf.example_settings)])
                a, b = (
                    Detector(solo, rf.example_settings, shared=store(redis_server, prefix))
                    for _ in range(2)
                )
                fired = []
                for i, (ev, copy) in enumerate(
                    zip(example_events(example), example_events(example), strict=True)
                ):
                    a([ev])
                    b([copy])
                    hits = (rule.id in ev.rules) + (rule.id in copy.rules)
                    fired += [i + 1] * hits
                events = len(example_events(example))
                expected = [events] if example.expect else []
                assert fired == expected, f"{rule.id} example {n}"
                checked += 1
    assert checked >= 15


def test_a_batch_retried_on_the_other_replica_is_counted_once(
    redis_server: RedisServer,
) -> None:
    events = stream(2_000)
    a, b = Replica(store(redis_server)), Replica(store(redis_server))
    first, second = batches(events, 400)[:2]

    taken = a.pipeline.process(first, "webhook")
    assert taken.accepted == 400
    # A's answer was lost: the API server retries on B
    retried = b.pipeline.process(first, "webhook")
    assert retried.accepted == 0 and retried.duplicates == 400
    assert b.spool.taken == []

    # A refuses a batch (its spool is full): the retry on B is not a duplicate
    a.spool.full = True
    assert a.pipeline.process(second, "webhook").refused
    assert b.pipeline.process(second, "webhook").accepted == 400

    total = sum(r.value("kube_audit_events_total", source="webhook") for r in (a, b))
    assert total == 800
    requests = sum(
        s.value
        for r in (a, b)
        for m in r.registry.collect()
        if m.name == "kube_audit_requests"
        for s in m.samples
        if s.name == "kube_audit_requests_total"
    )
    single = Replica(None)
    single.pipeline.process(first, "webhook")
    single.pipeline.process(second, "webhook")
    expected = sum(
        s.value
        for m in single.registry.collect()
        if m.name == "kube_audit_requests"
        for s in m.samples
        if s.name == "kube_audit_requests_total"
    )
    assert requests == expected > 0
    assert b.value("kube_audit_events_duplicate_total", source="webhook") == 400


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_redis_killed_and_restarted_mid_stream(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    a, b = Replica(store(redis_server, clock=clock)), Replica(store(redis_server, clock=clock))
    events = stream(6_000)
    parts = batches(events, 500)
    before, during, after = parts[:4], parts[4:8], parts[8:]

    alternate_batches([a, b], before)
    assert a.value("kube_audit_state_backend_up") == 1.0

    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="exporter.state.redis_store"):
        alternate_batches([a, b], during)
        # a retry on the same replica is still a duplicate (the local window)
        again = a.pipeline.process(during[0], "webhook")
        assert again.accepted == 0 and again.duplicates == len(during[0])
    for r in (a, b):
        assert r.value("kube_audit_state_backend_up") == 0.0
        assert r.value("kube_audit_state_operations_failed_total", op="dedupe_check") == 1.0
        # backing off: later batches do not wait for the dead server
        assert r.value("kube_audit_state_fallbacks_total", op="detect") >= 2.0
    down = [m for m in caplog.messages if m.startswith("shared state unreachable")]
    assert len(down) == 2  # one line per replica, not one per batch

    caplog.clear()
    redis_server.start()
    clock.now += 60  # past the longest backoff
    with caplog.at_level(logging.WARNING, logger="exporter.state.redis_store"):
        alternate_batches([a, b], after)
    for r in (a, b):
        assert r.value("kube_audit_state_backend_up") == 1.0
    back = [m for m in caplog.messages if m.startswith("shared state reachable again")]
    assert len(back) == 2
    every = sum(r.value("kube_audit_events_total", source="webhook") for r in (a, b))
    assert every == len(events)

    # shared again (the restarted server forgot the scripts; they are loaded
    # again): a new burst split across the two fires exactly once
    burst = [Decoder().decode_object(obj) for obj in burst_objects(START + 3600, "203.0.113.99")]
    before_burst = sum(r.matches("auth-failure-burst") for r in (a, b))
    for i, ev in enumerate(burst):
        (a, b)[i % 2].pipeline.process([ev], "webhook")
    assert sum(r.matches("auth-failure-burst") for r in (a, b)) == before_burst + 1


def alternate_batches(replicas: Sequence[Replica], parts: Sequence[list[AuditEvent]]) -> None:
    for i, batch in enumerate(parts):
        result = replicas[i % len(replicas)].pipeline.process(batch, "webhook")
        assert not result.refused and result.accepted == len(batch)


def test_replicas_racing_on_one_group_fire_once_per_count(redis_server: RedisServer) -> None:
    """Four threads, each its own client, hit one threshold group with 500
    distinct events each (all within the window): the count of 10 is
    reached exactly 200 times, whatever the interleaving, because each
    transition runs atomically in the server."""
    spec = RuleSpec("race", "threshold", 3600.0, count=10)
    fired: list[int] = []
    lock = threading.Lock()

    def replica(n: int) -> None:
        s = store(redis_server, "race:")
        mine = 0
        for i in range(0, 500, 25):
            obs = [
                Observation(spec, ("203.0.113.7",), START + (j % 600), member=f"{n}-{j}")
                for j in range(i, i + 25)
            ]
            answers = s.observe(obs)
            assert answers is not None
            mine += sum(answers)
        with lock:
            fired.append(mine)

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(fired) == 200


def test_a_rule_changed_in_a_rolling_update_starts_afresh(redis_server: RedisServer) -> None:
    """Old and new replicas run different parameters under one rule id: the
    new one neither reads the old one's progress (two steps done of three)
    nor fails on it."""
    old = RuleSpec("seq", "sequence", 300.0, counts=(1, 1, 1))
    new = RuleSpec("seq", "sequence", 300.0, counts=(1,))
    s = store(redis_server, "roll:")
    assert s.observe([Observation(old, ("u",), START, steps=1, member="1")]) == [False]
    assert s.observe([Observation(old, ("u",), START + 1, steps=2, member="2")]) == [False]
    # the new rule's single step fires on its own first event
    assert s.observe([Observation(new, ("u",), START + 2, steps=1, member="3")]) == [True]
    # the old one's progress is intact: its third step completes it
    assert s.observe([Observation(old, ("u",), START + 3, steps=4, member="4")]) == [True]
    assert s.up and s.failed["detect"] == 0
