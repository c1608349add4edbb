"""The Loki ruler alerts (dashboards/out/loki/rules.yaml) on the entries the
exporter really pushes (its EntryBuilder: stream labels, structured metadata
and the event as the line).

No Loki runs on these machines, so a small evaluator runs the forms the
shipped rules use: ``sum by (...) (count_over_time(<query> [w])) > n``,
optionally wrapped in ``count by (...)``, branches joined by ``or``; a query
is a stream selector, then label filters (``a="x"``, ``a=~"re"``, joined by
``or``) and ``json name="field"``. Every entry given counts as within the
window. A form it does not know fails the test rather than being skipped.

What issue 18.10 asked of the rules, tested on real label sets: an exec is
counted once (its ResponseStarted event), per pod, for people and service
accounts; mass deletion counts distinct objects, not requests, and a whole
collection; anonymous access leaves out the health URLs and the
`cluster-info` read of every kubeadm node join.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from exporter.event import AuditEvent
from exporter.loki.entry import EntryBuilder
from exporter.loki.settings import LokiSettings
from tests.conftest import ROOT
from tests.detect_helpers import event

RULES = ROOT / "dashboards" / "out" / "loki" / "rules.yaml"
CLUSTER = "lab"
_ids = itertools.count(1)


@dataclass
class Pushed:
    fields: dict[str, str]  # stream labels and structured metadata
    line: dict[str, Any]


def push(events: list[AuditEvent], cluster: str = CLUSTER) -> list[Pushed]:
    builder = EntryBuilder(LokiSettings(cluster=cluster))
    out = []
    for ev in events:
        entry = builder.build(ev)
        fields = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', entry.labels))
        fields.update(dict(entry.metadata))
        out.append(Pushed(fields, json.loads(entry.line)))
    return out


# --- the evaluator ------------------------------------------------------------------------

_COND = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside parentheses, braces and quotes."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in '"`':
            quote = c
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _holds(actual: str, op: str, value: str) -> bool:
    value = re.sub(r"\\(.)", r"\1", value)
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    matched = re.fullmatch(value, actual) is not None
    return matched if op == "=~" else not matched


def select(query: str, entries: list[Pushed]) -> list[dict[str, str]]:
    """The label sets of the entries ``query`` keeps."""
    m = re.fullmatch(r"\{([^}]*)\}(.*)", query.strip(), re.S)
    assert m is not None, query
    selector = _COND.findall(m.group(1))
    stages = _split_top(m.group(2), "|")
    assert stages[0] == "", query
    out = []
    for e in entries:
        fields = dict(e.fields)
        if not all(_holds(fields.get(n, ""), o, v) for n, o, v in selector):
            continue
        keep = True
        for stage in stages[1:]:
            if stage.startswith("json "):
                for name, path in re.findall(r'(\w+)="(\w+)"', stage):
                    fields[name] = str(e.line.get(path, ""))
                continue
            alternatives = _split_top(stage, " or ")
            conds = [_COND.fullmatch(a) for a in alternatives]
            assert all(conds), f"a stage this evaluator does not know: {stage}"
            if not any(_holds(fields.get(c[1], ""), c[2], c[3]) for c in conds if c):
                keep = False
                break
        if keep:
            out.append(fields)
    return out


_BRANCH = re.compile(
    r"(?:count by \((?P<outer>[^)]*)\) \(\s*)?"
    r"sum by \((?P<by>[^)]*)\) \(\s*count_over_time\((?P<query>.*)\[\w+\]\)\s*\)"
    r"(?:\s*\))?\s*>\s*(?P<n>\d+)",
    re.S,
)


def evaluate(expr: str, entries: list[Pushed]) -> dict[tuple[tuple[str, str], ...], float]:
    """Alert label sets (labels without a value left out, as Loki does) ->
    value, for every branch's series over its threshold."""
    result: dict[tuple[tuple[str, str], ...], float] = {}
    for branch in _split_top(expr, "\nor\n") if "\nor\n" in expr else [expr]:
        m = _BRANCH.fullmatch(branch.strip())
        assert m is not None, f"a form this evaluator does not know: {branch}"
        by = [x.strip() for x in m["by"].split(",")]
        series: dict[tuple[tuple[str, str], ...], float] = {}
        for fields in select(m["query"], entries):
            key = tuple((k, fields[k]) for k in by if fields.get(k))
            series[key] = series.get(key, 0) + 1
        if m["outer"]:
            outer = [x.strip() for x in m["outer"].split(",")]
            counted: dict[tuple[tuple[str, str], ...], float] = {}
            for key in series:
                d = dict(key)
                okey = tuple((k, d[k]) for k in outer if d.get(k))
                counted[okey] = counted.get(okey, 0) + 1
            series = counted
        for key, v in series.items():
            if v > int(m["n"]) and key not in result:
                result[key] = v
    return result


def rule(name: str) -> str:
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            if r.get("alert") == name:
                expr: str = r["expr"]
                # the branches' `or` stands on a line of its own
                return re.sub(r"\n\s*or\s*\n", "\nor\n", expr.strip())
    raise AssertionError(f"no Loki rule {name}")


def fired(name: str, events: list[AuditEvent]) -> dict[tuple[tuple[str, str], ...], float]:
    return evaluate(rule(name), push(events))


# --- events -----------------------------------------------------------------------------


def exec_session(
    user: str, namespace: str, pod: str, at: float = 0.0, code: int = 101
) -> list[AuditEvent]:
    """An exec as the API server audits it: ResponseStarted (101) when the
    stream opens, ResponseComplete when it ends, one auditID."""
    audit_id = f"00000000-0000-4000-9000-{next(_ids):012d}"
    fields: dict[str, Any] = {
        "auditID": audit_id,
        "verb": "create",
        "user": {"username": user},
        "objectRef": {
            "resource": "pods",
            "subresource": "exec",
            "namespace": namespace,
            "name": pod,
        },
        "requestURI": f"/api/v1/namespaces/{namespace}/pods/{pod}/exec?command=sh&stdin=true",
        "responseStatus": {"code": code},
    }
    return [
        event(at=at, stage="ResponseStarted", **fields),
        event(at=at + 300, stage="ResponseComplete", **fields),
    ]


def anonymous(verb: str, code: int = 200, **fields: Any) -> AuditEvent:
    return event(
        verb=verb,
        user={"username": "system:anonymous", "groups": ["system:unauthenticated"]},
        responseStatus={"code": code},
        **fields,
    )


def delete(user: str, namespace: str, name: str, verb: str = "delete") -> AuditEvent:
    return event(
        verb=verb,
        user={"username": user},
        objectRef={"resource": "pods", "namespace": namespace, "name": name},
    )


# --- the rules --------------------------------------------------------------------------


def test_an_exec_into_a_system_pod_counts_once_per_pod_for_people_and_service_accounts() -> None:
    sa = "system:serviceaccount:ci:deployer"
    events = [
        *exec_session("mallory", "kube-system", "kube-proxy-x7k2p"),
        *exec_session("mallory", "kube-system", "coredns-1"),
        *exec_session(sa, "kube-system", "kube-proxy-x7k2p"),
        *exec_session("alice", "shop", "web-0"),  # not a system namespace
        *exec_session("system:node:node-1", "kube-system", "etcd-0"),  # a node
    ]
    got = fired("KubeAuditExecIntoSystemNamespace", events)
    base = (("cluster", CLUSTER), ("namespace", "kube-system"))
    assert got == {
        (*base, ("name", "kube-proxy-x7k2p"), ("user", "mallory")): 1,
        (*base, ("name", "coredns-1"), ("user", "mallory")): 1,
        (*base, ("name", "kube-proxy-x7k2p"), ("user", sa)): 1,
    }
    # the end of a long session alone is not a new exec
    ended = [
        e for e in exec_session("mallory", "kube-system", "x") if e.stage == "ResponseComplete"
    ]
    assert fired("KubeAuditExecIntoSystemNamespace", ended) == {}
    # a refused exec is not one
    refused = exec_session("mallory", "kube-system", "y", code=403)
    assert fired("KubeAuditExecIntoSystemNamespace", refused) == {}


def test_anonymous_access_leaves_out_health_urls_and_the_kubeadm_join_read() -> None:
    join = anonymous(
        "get",
        objectRef={"resource": "configmaps", "namespace": "kube-public", "name": "cluster-info"},
    )
    health = anonymous("get", requestURI="/healthz")
    version = anonymous("get", requestURI="/version?timeout=32s")
    refused = anonymous("list", 403, objectRef={"resource": "secrets", "namespace": "shop"})
    assert fired("KubeAuditAnonymousAccessAllowed", [join, health, version, refused]) == {}

    secrets = anonymous("list", objectRef={"resource": "secrets", "namespace": "shop"})
    other_cm = anonymous(
        "get", objectRef={"resource": "configmaps", "namespace": "kube-public", "name": "other"}
    )
    metrics_url = anonymous("get", requestURI="/metrics")
    got = fired("KubeAuditAnonymousAccessAllowed", [join, health, secrets, other_cm, metrics_url])
    assert got == {
        (("cluster", CLUSTER), ("verb", "list"), ("resource", "secrets"), ("namespace", "shop")): 1,
        (
            ("cluster", CLUSTER),
            ("verb", "get"),
            ("resource", "configmaps"),
            ("namespace", "kube-public"),
            ("name", "other"),
        ): 1,
        (("cluster", CLUSTER), ("verb", "get"), ("uri", "/metrics")): 1,
    }


@pytest.mark.parametrize("objects", [50, 51])
def test_mass_deletion_counts_distinct_objects_not_requests(objects: int) -> None:
    events = [delete("bob", "shop", f"web-{i}") for i in range(objects)]
    # a retried delete of the same objects does not count again
    events += [delete("bob", "shop", f"web-{i}") for i in range(10)] * 3
    # a service account (a controller) deleting many is routine
    events += [delete("system:serviceaccount:kube-system:gc", "shop", f"p-{i}") for i in range(80)]
    got = fired("KubeAuditMassDeletionByUser", events)
    if objects > 50:
        assert got == {(("cluster", CLUSTER), ("user", "bob")): objects}
    else:
        assert got == {}


def test_mass_deletion_fires_on_a_whole_collection() -> None:
    ev = event(
        verb="deletecollection",
        user={"username": "carol"},
        objectRef={"resource": "pods", "namespace": "shop"},
    )
    assert fired("KubeAuditMassDeletionByUser", [ev]) == {
        (("cluster", CLUSTER), ("user", "carol")): 1
    }


def test_one_person_from_many_addresses_fires_and_service_accounts_do_not() -> None:
    def req(user: str, ip: str) -> AuditEvent:
        return event(verb="get", user={"username": user}, sourceIPs=[ip],
                     objectRef={"resource": "pods", "namespace": "shop"})  # fmt: skip

    events = [req("dave", f"203.0.113.{i}") for i in range(1, 7)]  # six addresses
    events += [req("erin", f"198.51.100.{i}") for i in range(1, 6)] * 2  # five, twice
    events += [req("system:serviceaccount:ci:runner", f"10.1.0.{i}") for i in range(1, 20)]
    assert fired("KubeAuditUserFromManySourceIPs", events) == {
        (("cluster", CLUSTER), ("user", "dave")): 6
    }


def test_the_evaluator_refuses_forms_it_does_not_know() -> None:
    with pytest.raises(AssertionError):
        evaluate('sum by (user) (rate({service_name="kube-audit"} [5m])) > 0', [])
    with pytest.raises(AssertionError):
        select('{service_name="kube-audit"} | logfmt', push([event(verb="get")]))
