"""The Detector's index: candidates worked out per class of keys and per
group of rules are exactly the rules whose constraint holds for the key."""

from __future__ import annotations

import itertools
from pathlib import Path

from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.detect.engine import index_key
from exporter.detect.located import Where
from exporter.detect.matchers import KeyClasses, Parser
from exporter.detect.noise import corpus_sources
from exporter.detect.settings import CriticalWorkload
from exporter.event import AuditEvent, Decoder
from tests.conftest import CORPORA
from tests.detect_helpers import rules_from

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
            for item in decoder.decode_document(path.read_bytes()):
                if isinstance(item, AuditEvent):
                    keys.add(index_key(item))
    # and a grid of values rules name, compare with or never mention
    grid = itertools.product(
        ("ResponseStarted", "ResponseComplete"),
        ("get", "create", "patch", "delete", "connect"),
        ("pods", "secrets", "configmaps", "nodes", "widgets", "gadgets", ""),
        ("", "exec", "proxy"),
        ("human", "serviceaccount", "node", "system", "anonymous", "unauthenticated"),
        (0, 101, 200, 299, 300, 401, 403, 404, 409, 503),
        (False, True),
        (False, True),
    )
    # the point of it: a real log's keys come in far fewer classes
    for key in keys:
        det._candidates(key)
    assert len(det._by_class) < 0.6 * len(keys), (len(det._by_class), len(keys))
    keys.update(grid)
    assert len(keys) > 50_000
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
    key = ("ResponseComplete", "get", "10.1.2.3", "", "human", 200, False, False)
    assert candidates(det, key) == ["odd"]
    other = ("ResponseComplete", "get", "widgets", "", "human", 200, False, False)
    assert candidates(det, other) == []
