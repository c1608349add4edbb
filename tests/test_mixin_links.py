"""Every data link of the dashboards, followed to the Explorer, returns the
events it claims, and only those.

The events: the shared corpora, through the detection rules and the Loki
entry builder the exporter really uses (so the stream labels and structured
metadata are what it pushes). For every data link of every dashboard and
every event, the link's URL template is filled as Grafana fills it from the
series or table row that event produces (a metric's ``resource`` label,
``pods/exec``, split by the panel's own label_replace regexes), the
Explorer's query is filled from the URL as Grafana does (``${var:regex}``
escapes a value, "All" is ``.*``), and its stream selector and label filters
are evaluated on every entry: the event must be in the result, and every
event in the result must have the same values in the linked fields.
A link to ``alice`` does not show ``alice-admin``; a link to ``pods/exec``
shows exec events, not all pod traffic.

Grammar and label names of the same queries: tests/test_logql_grammar.py and
tests/test_mixin.py; the PromQL behind the links against a real Prometheus:
tests/integration/test_mixin_live.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from urllib.parse import parse_qsl, unquote

import pytest
from prometheus_client import CollectorRegistry

from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.event import AuditEvent
from exporter.loki.entry import EntryBuilder
from exporter.loki.settings import LokiSettings
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from tests.conftest import CORPORA
from tests.loki_corpus import corpus_events
from tests.test_mixin import RENAMED_METADATA, dashboards, panels_of, variables_of

EXPLORER = "kube-audit-explorer.json"


@dataclass(frozen=True)
class Pushed:
    """One entry as the exporter pushes it, and the event behind it."""

    labels: dict[str, str]
    metadata: dict[str, str]
    line: str
    event: AuditEvent

    def field(self, name: str) -> str:
        return self.labels.get(name) or self.metadata.get(name, "")


@cache
def pushed() -> list[Pushed]:
    events = [c.event for c in corpus_events(CORPORA)]
    metrics = AuditMetrics(CollectorRegistry())
    detector = Detector(load_rules(None), DetectionSettings(cluster="lab"), metrics)
    Pipeline(metrics, processors=[detector]).process(events, "webhook")
    builder = EntryBuilder(LokiSettings(cluster="lab"))
    out = []
    for ev in events:
        entry = builder.build(ev)
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', entry.labels))
        metadata = {RENAMED_METADATA.get(k, k): v for k, v in entry.metadata}
        out.append(Pushed(labels, metadata, entry.line.decode("utf-8", "replace"), ev))
    assert len(out) > 1000
    return out


# --- Grafana: URL -> variables -> query -------------------------------------------------

_ESCAPE = re.compile(r"[\\^$*+?.()|[\]{}/]")


def grafana_escape_regex(value: str) -> str:
    """Grafana's `regex` format of one value (escapeRegex)."""
    return _ESCAPE.sub(lambda m: "\\" + m.group(0), value)


def explorer_query(params: dict[str, str]) -> str:
    """The Explorer's logs query as Grafana runs it for a URL's ``var-*``
    parameters; the other variables at their defaults."""
    board = dashboards()[EXPLORER]
    [target] = next(p for p in panels_of(board) if p["type"] == "logs")["targets"]
    expr: str = target["expr"]
    for name, var in variables_of(board).items():
        value = params.get(name)
        if var["type"] == "datasource":
            continue
        if value is None:
            current = var["current"]["value"]
            assert current == "$__all" or var["type"] == "custom", (name, var["current"])
            raw = var.get("allValue") if current == "$__all" else current
            assert raw is not None, name
            formatted = plain = raw
        else:
            formatted, plain = grafana_escape_regex(value), value
        expr = expr.replace(f"${{{name}:regex}}", formatted)
        expr = expr.replace(f"${{{name}}}", plain).replace(f"${name}", plain)
    assert "$" not in expr, expr
    return expr


_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def _unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _holds(actual: str, op: str, value: str) -> bool:
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    matched = re.fullmatch(value, actual) is not None  # Loki anchors regexes
    return matched if op == "=~" else not matched


def select(query: str, entries: list[Pushed]) -> list[Pushed]:
    """Evaluate a log query of the forms the Explorer uses: a stream
    selector, then ``| name op "value"`` label filters (each on one stage)."""
    m = re.fullmatch(r"\s*\{([^}]*)\}(.*)", query, re.S)
    assert m is not None, query
    selector = [(n, o, _unquote(v)) for n, o, v in _MATCHER.findall(m.group(1))]
    stages = [s.strip() for s in m.group(2).split("\n") if s.strip()]
    filters = []
    for stage in stages:
        fm = re.fullmatch(r'\|\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', stage)
        assert fm is not None, f"a stage this evaluator does not know: {stage}"
        filters.append((fm.group(1), fm.group(2), _unquote(fm.group(3))))
    return [
        e
        for e in entries
        if all(_holds(e.labels.get(n, ""), o, v) for n, o, v in selector)
        and all(_holds(e.field(n), o, v) for n, o, v in filters)
    ]


# --- the links --------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    board: str
    panel: str
    query: str
    params: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return f"{self.board}: {self.panel}: {dict(self.params)}"


def links() -> list[Link]:
    explorer_uid = dashboards()[EXPLORER]["uid"]
    out = []
    for name, board in dashboards().items():
        for p in panels_of(board):
            for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", []):
                url = link["url"]
                assert url.startswith(f"/d/{explorer_uid}/"), url
                params = tuple(
                    (k.removeprefix("var-"), unquote(v))
                    for k, v in parse_qsl(url.split("?", 1)[1], keep_blank_values=True)
                    if k.startswith("var-")
                )
                query = " ".join(t["expr"] for t in p["targets"])
                out.append(Link(name, p["title"], query, params))
    return out


def split_regexes(query: str) -> tuple[str, str] | None:
    """The panel's label_replace regexes that split `resource` into
    resource and subresource, or None when the panel does not split."""
    sub = re.search(r'"subresource", "\$2", "resource", "([^"]+)"', query)
    res = re.search(r'"resource", "\$1", "resource", "([^"]+)"', query)
    if sub is None and res is None:
        return None
    assert sub is not None and res is not None, query
    return sub.group(1), res.group(1)


def row_of(link: Link, e: Pushed) -> dict[str, str] | None:
    """The labels of the series or table row that ``e`` lands in, for the
    fields the link passes; None when the event is not on that panel."""
    ev = e.event
    values = {
        "user": ev.username,
        "verb": ev.verb,
        "code": str(ev.code) if ev.code else "",
        "user_kind": ev.user_kind,
        "source_ip": ev.source_ip,
        "namespace": ev.namespace,
        "name": ev.name,
        "audit_id": ev.audit_id,
        "rule": ev.rules[0] if ev.rules else "",
        "stage": ev.stage,
        # rule_matches_total's severity: an event is on the series of its
        # highest one, the Explorer's rule_severity
        "severity": ev.severity,
    }
    if "kube_audit_" in link.query or ":kube_audit_" in link.query:
        # a metric: resource is resource/subresource until the panel splits it
        label = ev.resource_label
        regexes = split_regexes(link.query)
        if regexes is None:
            values["resource"] = label
        else:
            sub_re, res_re = regexes
            sm = re.fullmatch(sub_re, label)
            rm = re.fullmatch(res_re, label)
            values["resource"] = rm.group(1) if rm else label
            if sm:
                values["subresource"] = sm.group(2)
            else:
                values["subresource"] = ""  # the label is absent: the link passes ""
    else:
        values["resource"] = ev.resource
        values["subresource"] = ev.subresource
    row = {}
    for _var, template in link.params:
        m = re.fullmatch(r"\$\{__(?:field\.labels|data\.fields)\.(\w+)\}", template)
        if m is None:
            continue
        field = m.group(1)
        row[field] = values.get(field, "")
        if not row[field] and field not in ("subresource", "namespace", "name"):
            return None
    return row


def fill(link: Link, row: dict[str, str]) -> dict[str, str]:
    out = {}
    for var, template in link.params:
        m = re.fullmatch(r"\$\{__(?:field\.labels|data\.fields)\.(\w+)\}", template)
        out[var] = row[m.group(1)] if m else template
    return out


def _matches_fixed(e: Pushed, var: str, value: str) -> bool:
    if var == "code_class":
        return re.fullmatch(value, e.field("code")) is not None
    if var == "rule":
        return value in e.field("rules").split(",")
    return e.field(var) == value


def test_every_link_passes_only_explorer_filters_and_splits_resource() -> None:
    explorer_vars = set(variables_of(dashboards()[EXPLORER]))
    found = links()
    assert len(found) >= 20
    for link in found:
        names = [v for v, _ in link.params]
        assert set(names) <= explorer_vars, link
        if any(v == "resource" and "${" in t for v, t in link.params):
            # a resource from a panel always comes with its subresource
            assert "subresource" in names, link
            if "kube_audit_" in link.query:
                assert split_regexes(link.query) is not None, link


@pytest.mark.parametrize("link", links(), ids=str)
def test_following_the_link_returns_the_event_and_only_its_kind(link: Link) -> None:
    entries = pushed()
    # every distinct row the corpora put on this panel, one event each
    rows: dict[tuple[tuple[str, str], ...], Pushed] = {}
    for e in entries:
        row = row_of(link, e)
        if row is None:
            continue
        params = fill(link, row)
        if not all(_matches_fixed(e, v, x) for v, x in params.items() if v not in row):
            continue
        rows.setdefault(tuple(sorted(params.items())), e)
    if not rows:
        # links with only fixed parameters (var-code=403) or on panels the
        # corpora never fill: the filter must still return what it names
        params = fill(link, {})
        result = select(explorer_query(params), entries)
        claimed = [e for e in entries if all(_matches_fixed(e, v, x) for v, x in params.items())]
        assert result == claimed, f"{link}: {len(result)} events, {len(claimed)} claimed"
        for e in result:
            assert all(_matches_fixed(e, v, x) for v, x in params.items()), (link, e.metadata)
        return
    for key, e in list(rows.items())[:40]:
        params = dict(key)
        result = select(explorer_query(params), entries)
        assert e in result, f"{link}: {params} does not return {e.metadata}"
        for other in result:
            for var, value in params.items():
                assert _matches_fixed(other, var, value), (
                    f"{link}: {params} also returns {other.metadata}"
                )


def test_subresource_links_open_exactly_their_events() -> None:
    """pods/exec from a metric opens exec events, not all pod traffic; the
    object itself (no subresource) opens no exec events."""
    entries = pushed()
    execs = [e for e in entries if e.event.resource_label == "pods/exec"]
    pods = [e for e in entries if e.event.resource_label == "pods"]
    assert execs and pods
    link = next(
        lk
        for lk in links()
        if lk.panel.startswith("Requests by resource") and split_regexes(lk.query)
    )
    exec_row = row_of(link, execs[0])
    assert exec_row == {"resource": "pods", "subresource": "exec"}
    got = select(explorer_query(fill(link, exec_row)), entries)
    assert {e.event.resource_label for e in got} == {"pods/exec"}
    assert len(got) == len(execs)
    pod_row = row_of(link, pods[0])
    assert pod_row == {"resource": "pods", "subresource": ""}
    got = select(explorer_query(fill(link, pod_row)), entries)
    assert {e.event.resource_label for e in got} == {"pods"}


def test_filters_are_exact_not_substrings() -> None:
    entries = pushed()
    users = sorted({e.field("user") for e in entries if e.field("user")})
    pairs = [(a, b) for a in users for b in users if a != b and b.startswith(a)]
    assert pairs, "the corpora have a user name that is the start of another"
    short, longer = pairs[0]
    got = select(explorer_query({"user": short}), entries)
    assert got and {e.field("user") for e in got} == {short}
    assert longer not in {e.field("user") for e in got}


def test_each_explorer_filter_selects_exactly_its_value() -> None:
    """Issue 18: the Explorer filters by user, verb, resource, subresource,
    namespace, name, code, user kind, source, rule, audit ID and stage; each
    one, set to a value an entry really carries, returns that entry and only
    entries with the value."""
    entries = pushed()
    wanted = {
        "user", "verb", "resource", "subresource", "namespace", "name", "code",
        "user_kind", "source_ip", "rule", "audit_id", "stage",
    }  # fmt: skip
    assert wanted <= set(variables_of(dashboards()[EXPLORER]))
    for var in sorted(wanted):
        if var == "rule":
            e = next(e for e in entries if e.field("rules"))
            value = e.field("rules").split(",")[-1]
        elif var == "stage":
            e = next(e for e in entries if e.field("stage") == "ResponseStarted")
            value = "ResponseStarted"
        else:
            e = next(e for e in entries if e.field(var))
            value = e.field(var)
        got = select(explorer_query({var: value}), entries)
        assert e in got, (var, value)
        assert all(_matches_fixed(o, var, value) for o in got), (var, value)
        others = [o for o in entries if not _matches_fixed(o, var, value)]
        assert others, var  # the filter had something to leave out


def test_the_evaluator_and_the_substitution_catch_mistakes() -> None:
    entries = pushed()
    # a value with regex characters is escaped, as Grafana does
    ip = next(e.field("source_ip") for e in entries if "." in e.field("source_ip"))
    assert grafana_escape_regex(ip) == ip.replace(".", "\\.")
    # the old substring filter would have been caught
    sub = select('{service_name="kube-audit"}\n| user=~".*admin.*"', entries)
    assert {e.field("user") for e in sub} != {"admin"}
    with pytest.raises(AssertionError):
        select('{service_name="kube-audit"} | json | user="a"', entries)


def test_the_explorer_shows_the_whole_event() -> None:
    board = dashboards()[EXPLORER]
    logs = [p for p in panels_of(board) if p["type"] == "logs"]
    assert logs
    for p in panels_of(board) + [
        p for d in dashboards().values() for p in panels_of(d) if p["type"] == "logs"
    ]:
        for t in p.get("targets", []):
            assert "line_format" not in t["expr"], p["title"]
    # the line is the event itself: requestURI is there to read
    e = next(e for e in pushed() if e.event.subresource == "exec")
    assert '"requestURI"' in e.line and e.event.request_uri in e.line.replace("\\u0026", "&")
