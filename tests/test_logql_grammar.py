"""Every LogQL query the project ships parses with Grafana's own LogQL
grammar (@grafana/lezer-logql, the one Grafana's query editor uses).

The queries: every rule of the generated Loki rule files and every Loki
panel query and Loki query variable of the generated dashboards, both in
dashboards/out and in the chart's files/ (which the chart wraps). The
grammar runs in node (tests/logql/parse.mjs), installed by `make test`
(`npm ci` in tests/logql); test_mixin.py checks the label names.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.test_mixin import HELM_FILES, OUT, loki_queries, panels_of

LOGQL = ROOT / "tests" / "logql"
PARSER = LOGQL / "parse.mjs"
ROOTS = {"dashboards/out": OUT, "chart files": HELM_FILES}


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed; `make test` installs it (Debian nodejs)")
    if not (LOGQL / "node_modules" / "@grafana" / "lezer-logql").is_dir():
        pytest.fail("the LogQL grammar is not installed: run `make test` (npm ci in tests/logql)")
    return path


def parse(queries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """What the grammar says of each (where, expr): the same order, each with
    ``errors`` (from, to, line, column, near)."""
    r = subprocess.run(
        [node(), str(PARSER)],
        input=json.dumps([{"where": w, "expr": e} for w, e in queries]),
        capture_output=True,
        text=True,
        check=False,
        cwd=LOGQL,
    )
    assert r.returncode == 0, r.stderr
    results: list[dict[str, Any]] = json.loads(r.stdout)
    assert [x["where"] for x in results] == [w for w, _ in queries]
    return results


@cache
def shipped() -> list[tuple[str, str]]:
    return [q for label, root in ROOTS.items() for q in loki_queries(root, label)]


def describe(result: dict[str, Any]) -> str:
    spots = ", ".join(f"{e['line']}:{e['column']} near {e['near']!r}" for e in result["errors"])
    return f"{result['where']}: {spots}\n    {result['parsed']}"


def test_every_shipped_loki_query_parses_with_the_logql_grammar() -> None:
    queries = shipped()
    # Loki rules and panels in both places, each kind present.
    for label in ROOTS:
        mine = [w for w, _ in queries if w.startswith(label)]
        assert any("/loki/" in w for w in mine), label
        assert any("/dashboards/" in w and "variable" not in w for w in mine), label
        assert any("variable" in w for w in mine), label
    assert len(queries) >= 24
    bad = [describe(r) for r in parse(queries) if r["errors"]]
    assert not bad, "LogQL that Loki would refuse:\n" + "\n".join(bad)


BROKEN = [
    # (query, where the grammar must first complain: line, column)
    # the missing parenthesis is noticed at the end of the input
    ('sum(count_over_time({service_name="kube-audit"}[5m])', (1, 53)),
    ('{service_name="kube-audit"} |= "unterminated', (1, 32)),
    ('{service_name="kube-audit"} | json | code >= ', (1, 46)),
    ('count_over_time({service_name="kube-audit"} | logfmt)', (1, 53)),
    ('sum by (user (count_over_time({service_name="kube-audit"}[5m]))', (1, 14)),
    ('{service_name="kube-audit"}\n  | user=~"a"\n  | line_format {{.user}}', (3, 17)),
    ('{service_name="kube-audit" cluster="c"}', (1, 28)),
]


def test_the_grammar_reports_each_broken_query_with_its_position() -> None:
    results = parse([(f"broken {i}", q) for i, (q, _) in enumerate(BROKEN)])
    for (query, (line, column)), result in zip(BROKEN, results, strict=True):
        assert result["errors"], f"not reported: {query}"
        first = result["errors"][0]
        assert (first["line"], first["column"]) == (line, column), (query, result["errors"])


def test_the_grammar_accepts_the_forms_the_dashboards_use() -> None:
    """The other side of the test above: a checker that refused everything
    would pass it. Grafana's interval variables stand for a duration."""
    good = [
        '{service_name="kube-audit", cluster=~"$cluster"} | user=~"(?i).*${user}.*"',
        'sum by (code) (count_over_time({service_name="kube-audit"} | code!="" [$__interval]))',
        'topk(10, sum by (user) (count_over_time({service_name="kube-audit"} [$__range])))',
        '{service_name="kube-audit"} | json ua="userAgent" | line_format `{{.user}} {{.ua}}`',
        'absent_over_time({service_name="kube-audit"}[15m])',
    ]
    results = parse([(f"good {i}", q) for i, q in enumerate(good)])
    assert [r["errors"] for r in results] == [[]] * len(good), [describe(r) for r in results]


def test_a_broken_panel_query_in_a_shipped_file_is_reported_where_it_is(tmp_path: Path) -> None:
    shutil.copytree(OUT, tmp_path / "out")
    path = tmp_path / "out" / "dashboards" / "kube-audit-overview.json"
    board = json.loads(path.read_text())
    panel, target = next(
        (p, t)
        for p in panels_of(board)
        for t in p.get("targets", [])
        if t["datasource"]["type"] == "loki" and t["expr"].startswith("sum by (")
    )
    target["expr"] = target["expr"].replace("sum by (", "sum by ", 1)
    path.write_text(json.dumps(board))
    results = parse(loki_queries(tmp_path / "out", "copy"))
    bad = [r["where"] for r in results if r["errors"]]
    assert bad == [
        f"copy/dashboards/kube-audit-overview.json: {panel['title']} ({target['refId']})"
    ]
