"""Conditions: field paths through arrays, annotations and derived values;
every operator; and/or/not; what "absent" means."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from exporter.detect import DetectionSettings
from exporter.detect.engine import _WorkloadContext
from exporter.detect.located import Where
from exporter.detect.matchers import Context, Parser, compile_predicate
from exporter.detect.paths import compile_getter, csr_organizations, exec_command, parse
from exporter.detect.settings import CriticalWorkload, TimeWindow
from exporter.event import AuditEvent
from tests.detect_helpers import event

SETTINGS = DetectionSettings(
    trusted_networks=("10.20.0.0/16", "2001:db8::/32"),
    pod_cidrs=("10.244.0.0/16",),
    node_cidrs=("192.168.1.0/24",),
)


def cond(text: str, settings: DetectionSettings = SETTINGS) -> Callable[[AuditEvent], bool]:
    problems: list[str] = []
    node = Parser(problems).condition(yaml.safe_load(text), Where("test"))
    assert problems == []
    return compile_predicate(node, [], Context(settings.networks, _WorkloadContext(settings)))


POD = {
    "verb": "create",
    "user": {"username": "alice", "groups": ["devs", "system:authenticated"]},
    "sourceIPs": ["203.0.113.1", "10.20.3.4"],
    "objectRef": {"resource": "pods", "namespace": "shop", "name": "web"},
    "annotations": {"authorization.k8s.io/decision": "allow", "example.com/x.y": "1"},
    "requestObject": {
        "kind": "Pod",
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "a", "image": "nginx", "ports": [{"containerPort": 8080}]}],
            "initContainers": [{"name": "i", "securityContext": {"privileged": True}}],
            "ephemeralContainers": [
                {"name": "dbg", "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}}
            ],
            "volumes": [{"name": "v", "hostPath": {"path": "/etc"}}],
        },
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{'requestObject.spec.containers[*].securityContext.privileged': true}", False),
        ("{'requestObject.spec.initContainers[*].securityContext.privileged': true}", True),
        ("{$containers.securityContext.privileged: true}", True),
        ("{$containers.securityContext.capabilities.add: SYS_PTRACE}", True),
        ("{$containers.name: [x, dbg]}", True),
        ("{$containers.ports.containerPort: {gte: 8000, lt: 9000}}", True),
        ("{$containers.ports.containerPort: {gt: 8080}}", False),
        ("{'requestObject.spec.containers[0].image': nginx}", True),
        ("{'requestObject.spec.containers[-1].image': nginx}", True),
        ("{'requestObject.spec.containers[1].image': {exists: true}}", False),
        ("{'$pod_spec.volumes[*].hostPath.path': /etc}", True),
        ("{user.groups: devs}", True),
        ("{user.groups: {not: system:masters}}", True),
        ("{user.groups: {not: devs}}", False),
        ("{user.groups: {glob: 'system:*'}}", True),
        ("{'annotations[\"example.com/x.y\"]': '1'}", True),
        ("{annotations.@keys: {glob: 'example.com/*'}}", True),
        ("{'requestObject.metadata.labels.*': web}", True),
        ("{'sourceIPs[-1]': 10.20.3.4}", True),
        ("{sourceIPs: 203.0.113.1}", True),
        ("{$source_ip: {cidr: $trusted_networks}}", True),
        ("{$source_ip: {cidr: [203.0.113.0/24]}}", False),
        ("{$source_ip: {cidr: $cluster_networks}}", False),
        ("{'requestObject.{spec.containers,spec.initContainers}[*].name': i}", True),
        ("{requestObject.spec.hostNetwork: {exists: false}}", True),
        ("{requestObject.spec.hostNetwork: {absent: true}}", True),
        ("{requestObject.spec.hostNetwork: false}", False),
        ("{objectRef.subresource: {exists: false}}", True),
        ("{objectRef.name: {regex: '^we'}}", True),
        ("{objectRef.name: {regex: 'eb$', not: web}}", False),
        ("{userAgent: {exists: false}}", True),
        ("{responseStatus.code: 201}", True),
        ("{responseStatus.code: {gte: 200, lt: 300}}", True),
        ("{any: [{verb: delete}, {objectRef.namespace: shop}]}", True),
        ("{all: [{verb: create}, {objectRef.namespace: other}]}", False),
        ("{not: {verb: delete}}", True),
        ("{$user_kind: human, $control_plane: false}", True),
        ("{$resource: pods}", True),
    ],
)
def test_condition_on_a_pod_creation(text: str, expected: bool) -> None:
    assert cond(text)(event(**POD)) is expected


def test_equality_keeps_types_apart() -> None:
    ev = event(
        verb="get", objectRef={"resource": "pods"}, requestObject={"a": 1, "b": True, "c": "1"}
    )
    assert cond("{requestObject.a: 1}")(ev)
    assert cond("{requestObject.a: 1.0}")(ev)
    assert not cond("{requestObject.a: true}")(ev)
    assert cond("{requestObject.b: true}")(ev)
    assert not cond("{requestObject.b: 1}")(ev)
    assert not cond("{requestObject.c: 1}")(ev)
    assert cond("{requestObject.c: '1'}")(ev)
    assert not cond("{requestObject.c: {gt: 0}}")(ev)  # numbers only


def test_cidr_handles_ipv6_and_mapped_addresses() -> None:
    trusted = cond("{$source_ip: {cidr: $trusted_networks}}")
    assert trusted(event(verb="get", sourceIPs=["2001:db8::7"]))
    assert trusted(event(verb="get", sourceIPs=["::ffff:10.20.0.1"]))
    assert not trusted(event(verb="get", sourceIPs=["not an ip"]))
    assert not trusted(event(verb="get"))
    untrusted = cond("{$source_ip: {exists: true, not: {cidr: $trusted_networks}}}")
    assert untrusted(event(verb="get", sourceIPs=["198.51.100.1"]))
    assert not untrusted(event(verb="get"))


def test_paths_parse_and_reject() -> None:
    assert parse('annotations["a.b/c"]') == [("key", "annotations"), ("key", "a.b/c")]
    get = compile_getter(parse("a.{b,c.d}[*].e"))
    assert get({"a": {"b": [{"e": 1}], "c": {"d": [{"e": 2}, {"f": 3}]}}}) == [1, 2]
    for bad in ("", "a..b", "a[", "a[x]", "{a}", "[0]"):
        with pytest.raises(ValueError):
            parse(bad)


def test_exec_command_is_decoded_from_the_uri() -> None:
    ev = event(
        verb="create",
        objectRef={"resource": "pods", "subresource": "exec", "namespace": "x", "name": "p"},
        requestURI="/api/v1/namespaces/x/pods/p/exec?command=%2Fbin%2Fsh&command=-c&command=id&stdin=true",
    )
    assert exec_command(ev) == ["/bin/sh -c id"]


def _csr(organization: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "team"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, "someone"),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, SHA256())
    return base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()


def test_csr_organizations_are_read_from_a_real_request() -> None:
    ev = event(
        verb="create",
        objectRef={"resource": "certificatesigningrequests", "name": "x"},
        requestObject={
            "kind": "CertificateSigningRequest",
            "spec": {"request": _csr("system:masters")},
        },
    )
    assert csr_organizations(ev) == ["team", "system:masters"]
    broken = event(
        verb="create",
        objectRef={"resource": "certificatesigningrequests", "name": "x"},
        requestObject={"spec": {"request": "bm90IGEgY3Ny"}},
    )
    assert csr_organizations(broken) == []


def test_critical_access_by_principal_and_window() -> None:
    settings = DetectionSettings(
        critical_workloads=(
            CriticalWorkload(
                name="db",
                namespaces=("payments",),
                names=("postgres-*",),
                allowed_principals=("system:serviceaccount:payments:*", "group:dba"),
                allowed_windows=(TimeWindow.parse("Mon-Fri 08:00-18:00"),),
                timezone="Europe/Berlin",
            ),
        )
    )
    access = _WorkloadContext(settings).critical_access

    def ev(user: str, groups: list[str], ts: str, name: str = "postgres-0") -> AuditEvent:
        return event(
            verb="delete",
            user={"username": user, "groups": groups},
            stageTimestamp=ts,
            objectRef={"resource": "pods", "namespace": "payments", "name": name},
        )

    # Wednesday 10:00 UTC is 12:00 in Berlin
    assert access(ev("eve", ["devs"], "2024-05-01T10:00:00Z")) == ["principal_not_allowed"]
    assert access(ev("dave", ["dba"], "2024-05-01T10:00:00Z")) == ["allowed"]
    assert access(ev("system:serviceaccount:payments:op", [], "2024-05-01T10:00:00Z")) == [
        "allowed"
    ]
    # 17:30 UTC is 19:30 in Berlin: outside the window
    assert access(ev("dave", ["dba"], "2024-05-01T17:30:00Z")) == ["outside_window"]
    assert access(ev("dave", ["dba"], "2024-05-01T10:00:00Z", name="api-0")) == []


@pytest.mark.parametrize(
    ("text", "when", "inside"),
    [
        ("Mon-Fri 08:00-18:00", "2024-05-01T08:00:00", True),
        ("Mon-Fri 08:00-18:00", "2024-05-01T18:00:00", False),
        ("Mon-Fri 08:00-18:00", "2024-05-04T12:00:00", False),  # Saturday
        ("Sat,Sun", "2024-05-05T23:59:00", True),
        ("Fri-Mon 00:00-24:00", "2024-05-06T12:00:00", True),  # wraps over the week end
        ("Mon 22:00-06:00", "2024-05-07T05:59:00", True),  # Tuesday early: Monday's night
        ("Mon 22:00-06:00", "2024-05-07T22:30:00", False),
    ],
)
def test_time_windows(text: str, when: str, inside: bool) -> None:
    from datetime import datetime

    assert TimeWindow.parse(text).contains(datetime.fromisoformat(when)) is inside


def test_parser_reports_every_problem_with_its_path() -> None:
    problems: list[str] = []
    Parser(problems).condition(
        yaml.safe_load("{verb: [], a: {glob: 1}, b: {gt: x}, c: {exists: 1}, d: {x: 1}, e: {}}"),
        Where("f.yaml", "match"),
    )
    assert [p.split(": ", 2)[1] for p in problems] == [
        "match.verb",
        "match.a.glob",
        "match.b.gt",
        "match.c.exists",
        "match.d.x",
        "match.e",
    ]


def test_values_are_never_spliced_into_generated_code() -> None:
    nasty = "x') or True or ('"
    assert not cond(yaml.safe_dump({"verb": nasty}))(event(verb="get"))
    glob: Any = cond(yaml.safe_dump({"objectRef.name": {"glob": nasty}}))
    assert not glob(event(verb="get", objectRef={"resource": "pods", "name": "p"}))


def test_macro_paths_share_one_walk_per_event_and_answer_each_event() -> None:
    """$containers' walk is kept for the last event only: paths that start
    with it answer like the same path written out, event after event, also
    when two events alternate (the cache is per object, not per time)."""
    from exporter.detect.paths import _apply, _flatten, expand_macros

    def pod(image: str, privileged: bool) -> dict[str, Any]:
        c = {"image": image, "securityContext": {"privileged": privileged}}
        return {"verb": "create", "requestObject": {"spec": {"containers": [c]}}}

    def deploy(image: str) -> dict[str, Any]:
        spec = {"template": {"spec": {"initContainers": [{"image": image}]}}}
        return {"verb": "create", "requestObject": {"spec": spec}}

    texts = ["$containers.image", "$containers.securityContext.privileged", "$containers"]
    cached = {t: compile_getter(parse(t)) for t in texts}
    written = {t: parse(expand_macros(t)) for t in texts}
    events = [pod("a", True), deploy("b"), pod("c", False), {"verb": "get"}, deploy("d")]
    for ev in events + events[::-1] + [events[0], events[1], events[0]]:
        for t in texts:
            expect = _flatten(_apply(written[t][1:], [ev.get("requestObject")]))
            assert cached[t](ev) == expect, (t, ev)
    assert cached["$containers.image"](pod("x", True)) == ["x"]
    assert cached["$containers.image"](deploy("y")) == ["y"]


def test_compiled_paths_reach_what_the_interpreter_reaches() -> None:
    """Each path is compiled into one generated function: it yields the same
    values in the same order as the step-by-step walk, on random documents
    (dicts, lists, None, scalars, nesting) and on every path the default
    rules use."""
    import random

    from exporter.detect.paths import _apply, _compile_apply, _flatten, expand_macros
    from exporter.detect.rules import load_rules

    rng = random.Random(7)
    names = ["spec", "containers", "a", "b", "template", "image", "items"]

    def doc(depth: int) -> Any:
        r = rng.random()
        if depth == 0 or r < 0.2:
            return rng.choice([None, 0, "x", True, 1.5, "", []])
        if r < 0.6:
            return {rng.choice(names): doc(depth - 1) for _ in range(rng.randint(0, 4))}
        return [doc(depth - 1) for _ in range(rng.randint(0, 4))]

    paths = {
        "a", "a.b", "a[0]", "a[-1].b", "a[*]", "a[*].b", "*", "a.*", "a.@keys", "@keys",
        "{a,b}.image", "a.{b,spec.template}[*].{image,a}", "items[5]", "spec.containers.image",
    }  # fmt: skip
    for rule in load_rules(None).rules:
        for node in [rule.match, *rule.excepts, *(s.match for s in rule.steps)]:
            if node is not None:
                paths.update(f.path for f in _fields_of(node) if not f.path.startswith("$"))
    paths.update(["$containers.image", "$pod_spec.volumes[*].hostPath.path"])
    documents = [doc(5) for _ in range(300)]
    for text in sorted(paths):
        steps = parse(expand_macros(text))
        compiled = _compile_apply(steps)
        for d in documents:
            assert compiled([d]) == _apply(steps, [d]), text
            assert compiled([d, d]) == _apply(steps, [d, d]), text
            if steps[0] != ("key", "requestObject"):  # (that one reads patches as objects)
                assert compile_getter(steps)(d) == _flatten(_apply(steps, [d])), text


def _fields_of(node: Any) -> list[Any]:
    from exporter.detect.matchers import _fields

    return list(_fields([node]))


def test_annotation_and_request_body_tests_leave_the_event_unparsed() -> None:
    """A test of an annotation reads the decoder's annotations, and one of
    requestObject the request body alone: the event's JSON stays unparsed.
    Once something parsed it (redaction, which may change it), they read it."""
    import orjson

    from exporter.detect.examples import BASE_TIME, complete_event
    from exporter.event import Decoder
    from exporter.redact import Redactor

    fields = {
        "verb": "create",
        "objectRef": {"resource": "configmaps", "namespace": "shop", "name": "c"},
        "annotations": {"note": "keep"},
        "requestObject": {"kind": "ConfigMap", "data": {"token": "s3cr3t"}},
    }
    line = orjson.dumps(complete_event(fields, 1, BASE_TIME))
    note = cond(yaml.safe_dump({"annotations.note": "keep"}))
    data = cond(yaml.safe_dump({"requestObject.data.token": "s3cr3t"}))
    ev = Decoder().decode_line(line)
    assert note(ev) and data(ev)
    assert ev._obj is None
    # redaction of extra paths changes the event's JSON: the tests read it
    ev = Decoder().decode_line(line)
    Redactor({"configmaps": ["annotations.note", "requestObject.data"]})([ev])
    assert ev._obj is not None
    assert not note(ev) and not data(ev)
