"""The Detector's index: candidates worked out per class of keys and per
group of rules are exactly the rules whose constraint holds for the key."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.detect.engine import index_key, index_keys, py_index_keys
from exporter.detect.located import Where
from exporter.detect.matchers import KeyClasses, Parser
from exporter.detect.noise import corpus_sources
from exporter.detect.settings import CriticalWorkload
from exporter.event import AuditEvent, Decoder
from tests.conftest import CORPORA
from tests.detect_helpers import event, rules_from

# every setting filled, so that every default rule is active
SETTINGS = DetectionSettings(
    trusted_networks=("10.20.0.0/16",),
    pod_cidrs=("10.244.0.0/16",),
    node_cidrs=("10.0.0.0/24",),
    critical_workloads=(
        CriticalWorkload(name="db", namespaces=("payments",), allowed_principals=("x",)),
    ),
    allowed_users=("alice",),
    allowed_images=("registry.k8s.io/",),
    allowed_namespaces=("default",),
    allowed_nodes=("worker-*",),
)


def brute_force(det: Detector, key: tuple[object, ...]) -> list[str]:
    return [r.id for r in det.rules if r.applies(key)]  # type: ignore[arg-type]


def candidates(det: Detector, key: tuple[object, ...]) -> list[str]:
    return [r.id for _, r in det._candidates(key)]  # type: ignore[arg-type]


def test_candidates_equal_every_rule_tested_on_its_own() -> None:
    det = Detector(load_rules(None), SETTINGS)
    assert not det.inactive
    keys: set[tuple[object, ...]] = set()
    decoder = Decoder()
    for _, files in corpus_sources(CORPORA):
        for path in files:
            events = [
                item
                for item in decoder.decode_document(path.read_bytes())
                if isinstance(item, AuditEvent)
            ]
            one_by_one = [index_key(ev, det.atoms) for ev in events]
            # the batched keys the detector's loops use are the same, in C
            # (exporter._speedups, which the test environment builds) and
            # in Python
            assert index_keys(events, det.atoms) == one_by_one
            assert py_index_keys(events, det.atoms) == one_by_one
            keys.update(one_by_one)
    # and a grid of values rules name, compare with or never mention; each
    # with two random masks of the rules' tests on annotations and on the
    # principal (the last two dimensions: see IndexAtoms), seeded
    grid = itertools.product(
        ("ResponseStarted", "ResponseComplete"),
        ("get", "create", "patch", "delete", "connect"),
        ("pods", "secrets", "configmaps", "nodes", "widgets", "gadgets", ""),
        ("", "exec", "proxy"),
        ("human", "serviceaccount", "node", "system", "anonymous", "unauthenticated"),
        (0, 101, 200, 299, 300, 401, 403, 404, 409, 503),
        (False, True),
    )
    rng = random.Random(16)
    annotation_bits = len(det.atoms.annotation) + 1  # bit 0: any other annotation
    principal_bits = len(det.atoms.principal)

    def mask(bits: int) -> int:
        return sum(1 << n for n in range(bits) if rng.random() < 0.3)

    masked = [
        (*base, mask(annotation_bits), mask(principal_bits)) for base in grid for _ in range(2)
    ]
    # the point of it: a real log's keys come in far fewer classes
    for key in keys:
        det._candidates(key)
    assert len(det._by_class) < 0.6 * len(keys), (len(det._by_class), len(keys))
    keys.update(masked)
    assert len(keys) > 50_000
    assert len(det.atoms.principal) >= 5 and len(det.atoms.annotation) >= 3
    for key in keys:
        assert candidates(det, key) == brute_force(det, key), key


def test_key_classes_merge_only_what_no_rule_tells_apart() -> None:
    problems: list[str] = []
    parser = Parser(problems)
    node = parser.condition(
        {
            "objectRef.resource": {"glob": ["*bindings"]},
            "any": [
                {"objectRef.resource": "pods"},
                {"responseStatus.code": {"gte": 400, "lt": 500}},
                {"responseStatus.code": 404},
            ],
        },
        Where("test"),
    )
    assert not problems
    classes = KeyClasses([node])
    resource = classes.resource
    assert resource("widgets") == resource("gadgets")
    assert resource("rolebindings") == resource("clusterrolebindings") != resource("widgets")
    assert resource("pods") != resource("widgets")
    assert resource("") != resource("widgets")
    code = classes.code
    assert code(401) == code(403) != code(499)  # 404 lies between
    assert code(405) == code(499)
    assert code(404) != code(403) and code(404) != code(405)
    assert code(400) != code(401)  # 400 is named by gte
    assert code(501) == code(503) != code(499)
    assert code(500) != code(501)  # 500 is named by lt
    assert code(200) == code(201) != code(0)


def test_an_address_test_on_a_resource_keeps_every_resource_apart(tmp_path: Path) -> None:
    ruleset = rules_from(
        tmp_path,
        "rules:\n"
        "  - {id: odd, title: t, severity: info, description: d,\n"
        "     match: {objectRef.resource: {cidr: [10.0.0.0/8]}}}\n",
    )
    det = Detector(ruleset, DetectionSettings())
    assert det._classes.resource("10.1.2.3") != det._classes.resource("widgets")
    key = ("ResponseComplete", "get", "10.1.2.3", "", "human", 200, False, 0, 0)
    assert candidates(det, key) == ["odd"]
    other = ("ResponseComplete", "get", "widgets", "", "human", 200, False, 0, 0)
    assert candidates(det, other) == []


def corpus_and_simulated_events(simulated: int, seed: int) -> list[AuditEvent]:
    """Every event of the corpora, then ``simulated`` of the simulator's
    (with bodies, attacks, odd user agents)."""
    from exporter.simulate import Options, simulate_lines

    decoder = Decoder()
    events: list[AuditEvent] = []
    for _, files in corpus_sources(CORPORA):
        for path in files:
            events.extend(
                item
                for item in decoder.decode_document(path.read_bytes())
                if isinstance(item, AuditEvent)
            )
    for line in simulate_lines(Options(events=simulated, seed=seed)):
        events.extend(item for item in decoder.decode_record(line) if isinstance(item, AuditEvent))
    return events


def test_every_rule_whose_condition_holds_is_a_candidate() -> None:
    """The index's answer is a necessary condition: on the corpora and on
    simulated traffic (with bodies, attacks, odd user agents), no rule
    whose condition holds for an event at a stage it runs on is left out
    of its candidates."""
    det = Detector(load_rules(None), SETTINGS)
    events = corpus_and_simulated_events(40_000, seed=5)
    assert len(events) > 50_000
    plain = [r for r in det.rules if r.rule.kind != "sequence"]
    held = 0
    for ev in events:
        names = {r.id for _, r in det._candidates(index_key(ev, det.atoms))}
        for r in plain:
            if r.id not in names and ev.stage in r.stages and r.test(ev):
                raise AssertionError(f"{r.id} holds for {ev.audit_id} but is no candidate")
        held += len(names)
    # and it does prune: far fewer candidates than rules
    assert held < 3 * len(events)


@pytest.mark.parametrize("loop", ["c", "python"])
def test_scan_finds_the_candidates_whose_condition_holds(
    monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """Detector.scan (what replay --jobs runs in its jobs), with its loop in
    C and in Python, against each candidate rule's condition tested one
    event at a time, on the corpora and on simulated traffic, in batches."""
    from exporter import accel

    if loop == "python":
        monkeypatch.setattr(accel, "scan_hits", accel.py_scan_hits)
    else:
        assert accel.compiled is not None and accel.scan_hits is accel.compiled.scan_hits
    det = Detector(load_rules(None), SETTINGS)
    events = corpus_and_simulated_events(20_000, seed=9)
    position = {r: k for k, r in enumerate(det.rules)}
    found = 0
    for start in range(0, len(events), 777):
        batch = events[start : start + 777]
        want = []
        for i, ev in enumerate(batch):
            hits = tuple(
                position[r] for _, r in det._candidates(index_key(ev, det.atoms)) if r.test(ev)
            )
            if hits:
                want.append((i, hits))
        assert det.scan(batch) == want
        found += len(want)
    assert found > 1_000


@pytest.mark.parametrize("loop", ["c", "python"])
def test_scan_hits_counts_a_failing_test_and_asks_for_missing_keys(loop: str) -> None:
    from exporter import accel

    scan_hits = accel.compiled.scan_hits if loop == "c" else accel.py_scan_hits  # type: ignore[union-attr]

    def boom(ev: object) -> bool:
        raise ValueError("a rule's bug")

    def stop(ev: object) -> bool:
        raise KeyboardInterrupt

    asked: list[object] = []
    index: dict[object, Any] = {"a": ((bool, 0), (lambda ev: ev == 2, 1)), "b": ((boom, 4),)}

    def missing(key: object) -> Any:
        asked.append(key)
        index[key] = found = ((lambda ev: [1] if ev else [], 7),)
        return found

    events = [0, 1, 2, 3, 0]
    keys = ["a", "b", "a", "c", "c"]
    # a truthy answer holds, a test that raises holds (as ~position), a new
    # key is asked once
    assert scan_hits(events, keys, index, missing) == [(1, (~4,)), (2, (0, 1)), (3, (7,))]
    assert asked == ["c"]
    assert scan_hits([], [], index, missing) == []
    with pytest.raises(KeyboardInterrupt):  # not an Exception: it goes on up
        scan_hits([1], ["x"], {"x": ((stop, 0),)}, missing)
    with pytest.raises(ValueError):
        scan_hits([1, 2], ["a"], index, missing)
    if loop == "c":
        with pytest.raises(TypeError):
            scan_hits([1], ["x"], {"x": [(bool, 0)]}, missing)
        with pytest.raises(TypeError):
            scan_hits([1], ["x"], {"x": ((bool,),)}, missing)
        with pytest.raises(TypeError):
            scan_hits([1], ["x"], [], missing)
        with pytest.raises(ZeroDivisionError):  # missing() failing is an error
            scan_hits([1], ["y"], {}, lambda key: 1 / 0)


def test_a_condition_that_raises_is_counted_once_through_scan_project_and_feed(
    tmp_path: Path,
) -> None:
    """replay --jobs' path (scan in a job, project there without testing
    the conditions again, feed in the parent) against the processor on the
    same events: the same matches per event and the same failures per rule,
    with a stateless rule whose condition raises on some events (scan gives
    it as ~position) and a threshold rule beside it."""
    ruleset = rules_from(
        tmp_path,
        "rules:\n"
        "  - {id: boom, title: t, severity: info, description: d, match: {verb: get}}\n"
        "  - {id: burst, title: t, severity: warning, description: d, kind: threshold,\n"
        "     match: {verb: get}, group_by: [user.username], window: 10m, count: 3}\n",
    )

    def events() -> list[AuditEvent]:
        return [
            event(at=i, verb="get", user={"username": ("alice", "mallory")[i % 2]}, auditID=f"e{i}")
            for i in range(12)
        ]

    def flaky(det: Detector) -> Detector:
        rule = det.rules[0]
        assert rule.id == "boom"
        test = rule.test

        def raising(ev: AuditEvent) -> bool:
            if ev.username == "mallory":
                raise RuntimeError("a rule's bug")
            return bool(test(ev))

        rule.test = rule.run = raising
        det._index.clear()
        det._tests.clear()
        return det

    one = flaky(Detector(ruleset, DetectionSettings()))
    alone = events()
    one(alone)
    two = flaky(Detector(ruleset, DetectionSettings()))
    split = events()
    scanned = two.scan(split)
    assert [hits for i, hits in scanned if i % 2] == [(~0, 1)] * 6  # mallory's: boom raised
    records = [two.project(split[i], hits) for i, hits in scanned]
    assert [r[5] for r in records] == [i % 2 == 1 for i, _ in scanned]
    picked = [split[i] for i, _ in scanned]
    matched = two.feed(records, lambda j: picked[j])
    assert [split[i].rules for i in range(12)] == [ev.rules for ev in alone]
    assert [r.errors for r in two.rules] == [r.errors for r in one.rules] == [6, 0]
    assert {split[i].audit_id for i in (scanned[j][0] for j in matched)} == {
        ev.audit_id for ev in alone if ev.rules
    }
    assert [ev.rules for ev in alone][:6] == [
        ("boom",),
        (),
        ("boom",),
        (),
        ("boom", "burst"),
        ("burst",),
    ]


def test_principal_and_annotation_bits_are_exact(tmp_path: Path) -> None:
    ruleset = rules_from(
        tmp_path,
        "rules:\n"
        "  - {id: tool, title: t, severity: info, description: d,\n"
        '     match: {userAgent: {regex: "(?i)peirates"}}}\n'
        "  - {id: not-kubectl, title: t, severity: info, description: d,\n"
        '     match: {userAgent: {not: {glob: "kubectl/*"}}, user.username: alice}}\n'
        "  - {id: outside, title: t, severity: info, description: d,\n"
        "     match: {$source_ip: {exists: true, not: {cidr: [10.0.0.0/8]}}}}\n"
        "  - {id: authz-keys, title: t, severity: info, description: d,\n"
        '     match: {annotations.@keys: {glob: "authorization.k8s.io/*"}}}\n'
        "  - {id: psa, title: t, severity: info, description: d,\n"
        "     match: {'annotations[\"pod-security.kubernetes.io/enforce-policy\"]':\n"
        "               {exists: true}}}\n",
    )
    det = Detector(ruleset, DetectionSettings())
    # a test on the common annotations makes every event's keys matter
    assert det.atoms.common_matters

    def ids(agent: str, user: str, address: str, annotations: dict[str, str]) -> set[str]:
        ev = event(
            verb="get",
            objectRef={"resource": "pods"},
            userAgent=agent,
            user={"username": user},
            sourceIPs=[address],
            annotations=annotations,
        )
        return {r.id for _, r in det._candidates(index_key(ev, det.atoms))}

    common = {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
    psa = {"pod-security.kubernetes.io/enforce-policy": "baseline"}
    assert ids("kubectl/v1.30", "bob", "10.1.2.3", {}) == set()
    assert ids("Peirates/1.1", "bob", "10.1.2.3", {}) == {"tool"}
    assert ids("curl/8", "alice", "10.1.2.3", {}) == {"not-kubectl"}
    assert ids("kubectl/v1.30", "alice", "203.0.113.9", common) == {"outside", "authz-keys"}
    assert ids("kubectl/v1.30", "bob", "10.1.2.3", psa) == {"psa"}
    # the same triple or key set again comes from the cache, with the same answer
    assert ids("Peirates/1.1", "bob", "10.1.2.3", {}) == {"tool"}


def test_derived_values_the_user_name_tells_are_bits(tmp_path: Path) -> None:
    """$control_plane is decided by the user name (an exact bit, negation
    too); $user_allowed only when the name is allowed (the groups may allow
    the others): a necessary bit."""
    ruleset = rules_from(
        tmp_path,
        "rules:\n"
        "  - {id: people, title: t, severity: info, description: d,\n"
        "     match: {$control_plane: false}}\n"
        "  - {id: not-people, title: t, severity: info, description: d,\n"
        "     match: {not: {$control_plane: false}}}\n"
        "  - {id: stranger, title: t, severity: info, description: d,\n"
        "     match: {$user_allowed: false}}\n",
    )
    settings = DetectionSettings(allowed_users=("alice", "group:admins"))
    det = Detector(ruleset, settings)

    def ids(user: str, groups: list[str]) -> set[str]:
        ev = event(verb="get", user={"username": user, "groups": groups})
        found = {r.id for _, r in det._candidates(index_key(ev, det.atoms))}
        # necessary: every rule that holds is among them
        assert {r.id for r in det.rules if r.test(ev)} <= found
        return found

    assert ids("alice", []) == {"people"}
    assert ids("system:kube-scheduler", []) == {"not-people", "stranger"}
    assert ids("system:serviceaccount:kube-system:job-controller", []) == {"not-people", "stranger"}
    assert ids("bob", ["admins"]) == {"people", "stranger"}  # a candidate, which fails
    assert ids("bob", []) == {"people", "stranger"}


def test_the_principal_caches_stay_bounded_and_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.detect.matchers as matchers

    monkeypatch.setattr(matchers, "ATOM_CACHE_MAX", 16)
    ruleset = rules_from(
        tmp_path,
        "rules:\n"
        "  - {id: outside, title: t, severity: info, description: d,\n"
        "     match: {$source_ip: {cidr: [198.51.100.0/24]}}}\n",
    )
    det = Detector(ruleset, DetectionSettings())
    for n in range(200):
        address = f"198.51.100.{n}" if n % 2 else f"10.0.0.{n}"
        ev = event(verb="get", sourceIPs=[address], user={"username": f"user-{n % 40}"})
        found = [r.id for _, r in det._candidates(index_key(ev, det.atoms))]
        assert found == (["outside"] if n % 2 else []), address
        assert all(len(c) <= 16 for c in det.atoms.principals)
        assert len(det.atoms.triples) <= 16


def test_wrapped_runners_run_also_after_the_index_found_candidates() -> None:
    """Detector.wrap_runners (the report notes the events a stateful rule
    runs on): the wrapper runs for every event the rule is a candidate for,
    also when the index had found that rule's candidates before, and the
    rule's answers are the same."""
    from exporter.simulate import Options, simulate_lines

    det = Detector(load_rules(None), SETTINGS)
    decoder = Decoder()
    events = [
        item
        for line in simulate_lines(Options(events=20_000, seed=5))
        for item in decoder.decode_record(line)
        if isinstance(item, AuditEvent)
    ]
    half = len(events) // 2
    det(events[:half])  # the index holds candidates with the plain runners
    stateful = [r for r in det.rules if r.rule.kind != "match"]
    seen: dict[str, int] = {}

    def counting(r: object, run: object) -> object:
        rule_id = r.id  # type: ignore[attr-defined]

        def wrapped(ev: AuditEvent) -> object:
            seen[rule_id] = seen.get(rule_id, 0) + 1
            return run(ev)  # type: ignore[operator]

        return wrapped

    det.wrap_runners(stateful, counting)  # type: ignore[arg-type]
    rest = events[half:]
    det(rest)
    expected: dict[str, int] = {}
    for ev in rest:
        for _, r in det._candidates(index_key(ev, det.atoms)):
            if r in stateful:
                expected[r.id] = expected.get(r.id, 0) + 1
    assert seen == expected
    assert sum(seen.values()) > 100


def test_batched_keys_of_odd_events_are_the_single_ones() -> None:
    """index_keys in C on what the Python one also takes: an object that
    is not an AuditEvent (read through index_key), annotations that are
    not a dict, non-common annotation keys, impersonation; and errors of
    the atoms' callbacks come out of it."""
    from types import SimpleNamespace

    from exporter import _speedups
    from exporter.detect.engine import COMMON_ANNOTATIONS

    det = Detector(load_rules(None), SETTINGS)
    base = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a",
        "stage": "ResponseComplete", "verb": "get",
        "requestReceivedTimestamp": "2024-05-01T10:00:00.000000Z",
        "stageTimestamp": "2024-05-01T10:00:00.000000Z", "user": {"username": "kubernetes-admin"},
        "sourceIPs": ["10.0.0.1"], "objectRef": {"resource": "pods", "subresource": "exec"},
    }  # fmt: skip
    decoder = Decoder()
    events: list[Any] = [
        decoder.decode_line(json.dumps(base | extra).encode())
        for extra in (
            {},
            {"annotations": {"authorization.k8s.io/decision": "allow"}},
            {"annotations": {"pod-security.kubernetes.io/exempt": "namespace"}},
            {"impersonatedUser": {"username": "bob"}},
        )
    ]
    # an event whose annotations are a list of pairs (not a dict)
    odd = decoder.decode_line(json.dumps(base).encode())
    odd.annotations = sorted(COMMON_ANNOTATIONS)[:1]  # type: ignore[assignment]
    events.append(odd)
    # not an AuditEvent: the fields alone, as the jobs' Seen has them
    fields = {name: getattr(events[1], name) for name in AuditEvent.__slots__ if name[0] != "_"}
    events.append(SimpleNamespace(**fields))
    expected = [index_key(ev, det.atoms) for ev in events]
    assert index_keys(events, det.atoms) == expected == py_index_keys(events, det.atoms)
    assert expected[5] == expected[1]

    def broken(_: Any) -> int:
        raise LookupError("principal")

    with pytest.raises(LookupError):
        _speedups.index_keys(
            events[:1], {}, broken, det.atoms.annotation_class, COMMON_ANNOTATIONS, False, None
        )
    with pytest.raises(TypeError):
        _speedups.index_keys(events, [], broken, broken, COMMON_ANNOTATIONS, False, None)
