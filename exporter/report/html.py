"""The auditor's report as one self-contained HTML page.

No script at all, no external font, style sheet or image: a Content Security
Policy (``default-src 'none'``, the one style element allowed by its hash)
makes the browser refuse anything else. Every value that comes from an event
(user names, user agents, object names: attacker-controlled) goes through
:func:`e`. Charts are inline SVG, each followed by the same numbers as a
table. The output depends only on the input, so a committed report can be
checked for drift.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any

from ..cliparser import version_text
from .collect import CLASSES, SEVERITY_SLOT, SLOT_401, SLOT_403, Collector, Principal, top
from .judge import LEVELS, judge, level_table
from .summary import SEVERITY_ORDER, iso
from .svg import activity_strip, stacked_bars

SECTIONS = (
    ("scope", "Scope and evidence"),
    ("who", "Who did what"),
    ("sensitive", "Sensitive operations that matter"),
    ("detections", "Detections in full context"),
    ("auth", "Authentication and authorization failures"),
    ("critical", "Critical workloads"),
    ("policy", "The audit policy, judged from the evidence"),
    ("performance", "Performance questions"),
)

CLASS_COLORS = ["#3b7d3b", "#6a8fc7", "#d9a21b", "#c0392b", "#888888"]
AUTH_COLORS = ["#c0392b", "#d9a21b"]
SEVERITY_COLORS = ["#8e1b1b", "#d9a21b", "#6a8fc7"]
MAX_ROWS = 200


@dataclass(frozen=True)
class InputFile:
    path: str
    sha256: str  # "" when it could not be hashed (stdin)
    size: int | None
    problem: str = ""


@dataclass
class Scope:
    title: str = "Kubernetes audit report"
    cluster: str = ""
    since: float | None = None
    until: float | None = None
    files: list[InputFile] = field(default_factory=list)


def e(value: Any) -> str:
    """Escape for HTML text and attribute values (quotes included)."""
    if value is None or value == "":
        return "-"
    return escape(str(value), quote=True)


STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: #1b1b1b; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 24px 48px; }
header.top { border-bottom: 3px solid #1f5fa8; margin-bottom: 12px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
nav ol { columns: 2; margin: 4px 0 12px; }
table { border-collapse: collapse; margin: 6px 0 12px; width: 100%; font-size: 12.5px; }
th, td { border: 1px solid #d4d4d4; padding: 3px 6px; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }
.nw, .badge, .problem, .ok, .unknown { white-space: nowrap; }
td code { font-size: 11px; }
th { background: #eef2f7; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
.muted { color: #666; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 12px;
  font-weight: 600; color: #fff; }
.critical { background: #8e1b1b; } .warning { background: #b7830f; } .info { background: #5a7fb5; }
.problem { color: #8e1b1b; font-weight: 600; } .ok { color: #2e6b2e; font-weight: 600; }
.unknown { color: #6b5a12; font-weight: 600; }
tr.denied td { background: #fbeaea; } tr.allowed td { background: #edf7ed; }
.chart { width: 100%; height: auto; display: block; }
.chart .axis { stroke: #888; } .chart .tick { font-size: 11px; fill: #444; }
.scroll { max-height: 260px; overflow: auto; border: 1px solid #eee; }
.principal { border-left: 3px solid #1f5fa8; padding-left: 10px; margin: 14px 0; }
.detection { border-left: 3px solid #aaa; padding-left: 10px; margin: 16px 0; }
.detection.sev-critical { border-color: #8e1b1b; } .detection.sev-warning { border-color: #b7830f; }
.evidence { margin-left: 18px; }
.occ td:nth-child(3), .occ td:nth-child(5), .occ th:nth-child(3), .occ th:nth-child(5),
.occ td:nth-child(6) { white-space: nowrap; }
figure { margin: 12px 0; }
footer { margin-top: 40px; font-size: 12px; color: #666; }
@media print {
  body { font-size: 11px; } main { max-width: none; padding: 0; }
  .scroll { max-height: none; overflow: visible; border: 0; }
  section { break-before: page; } section#scope { break-before: auto; }
  tr, .principal, .detection, svg { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
  nav { display: none; }
}
@page { size: A4; margin: 14mm 12mm; }
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; form-action 'none'"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: Iterable[int] = (),
    classes: Sequence[str] | None = None,
    caption: str = "",
) -> str:
    """A table; ``rows`` cells are escaped unless wrapped in :class:`Raw`."""
    nums = set(numeric)
    out = ["<table>"]
    if caption:
        out.append(f'<caption class="muted">{e(caption)}</caption>')
    out.append(
        "<thead><tr>"
        + "".join(
            f"<th{' class=n' if i in nums else ''}>{e(h)}</th>" for i, h in enumerate(headers)
        )
        + "</tr></thead><tbody>"
    )
    any_row = False
    for r, row in enumerate(rows):
        any_row = True
        cls = f' class="{e(classes[r])}"' if classes and classes[r] else ""
        cells = []
        for i, v in enumerate(row):
            text = v.html if isinstance(v, Raw) else _cell(v)
            cells.append(f"<td{' class=n' if i in nums else ''}>{text}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    if not any_row:
        out.append(f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _cell(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.3f}"
    text = e(v)
    # long values may break anywhere (narrow columns, long names); short
    # ones (a verb, a code, a verdict) never
    return f'<span class="nw">{text}</span>' if len(text) <= 14 else text


class Raw:
    """Already-escaped HTML for a table cell."""

    __slots__ = ("html",)

    def __init__(self, html: str) -> None:
        self.html = html


def _who(row: dict[str, Any]) -> Raw:
    user = e(row.get("user"))
    imp = row.get("impersonated_user")
    return Raw(f"{user} <span class=muted>acting as</span> {e(imp)}" if imp else user)


def _object(row: dict[str, Any]) -> str:
    resource = row.get("resource") or ""
    where = "/".join(x for x in (row.get("namespace"), row.get("name")) if x)
    return f"{resource} {where}".strip() or "-"


def _when(ts: float | None) -> str:
    return iso(ts) if ts is not None else "-"


def _badge(severity: str) -> str:
    return f'<span class="badge {e(severity)}">{e(severity)}</span>'


def _link(url: str) -> Raw:
    if url.startswith(("https://", "http://")):
        return Raw(f'<a href="{e(url)}" rel="noreferrer noopener">open</a>')
    return Raw(e(url) if url else "-")


def _chart_table(
    series: list[tuple[float, list[int]]], names: Sequence[str], slots: Sequence[int]
) -> str:
    rows = [
        [_bucket(start), *[values[s] for s in slots]]
        for start, values in series
        if any(values[s] for s in slots)
    ]
    return (
        '<div class="scroll">'
        + table(["bucket start (UTC)", *names], rows, numeric=range(1, len(names) + 1))
        + "</div>"
    )


def _chart(
    chart_id: str, title: str, c: Collector, slots: list[int], names: list[str], colors: list[str]
) -> str:
    tl = c.timeline
    series = [(start, [values[s] for s in slots]) for start, values in tl.series()]
    svg = stacked_bars(chart_id, title, series, names, colors, tl.width)
    return (
        f"<figure><figcaption><strong>{e(title)}</strong> "
        f'<span class="muted">(one bar per {_duration(tl.width)})</span></figcaption>'
        + svg
        + _chart_table(tl.series(), names, slots)
        + "</figure>"
    )


def _bucket(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s % 86400 == 0:
        return f"{s // 86400} d"
    if s % 3600 == 0:
        return f"{s // 3600} h"
    if s % 60 == 0:
        return f"{s // 60} min"
    return f"{s} s"


# --- sections -----------------------------------------------------------------


def _scope(c: Collector, scope: Scope) -> str:
    s = c.summary
    out = []
    files = [
        [
            f.path,
            Raw(f"<code>{e(f.sha256)}</code>") if f.sha256 else "(not hashed: a stream)",
            f.size if f.size is not None else "-",
            f.problem or "read whole",
        ]
        for f in scope.files
    ]
    out.append("<h3>Input files</h3>")
    out.append(table(["file", "SHA-256", "bytes", "read"], files, numeric=[2]))
    period: list[list[Any]] = []
    if scope.since is not None or scope.until is not None:
        period.append(["period asked for", f"{_when(scope.since)} .. {_when(scope.until)}"])
        period.append(["events outside it (left out)", c.outside_period])
    period += [
        ["first event", _when(s.first_ts)],
        ["last event", _when(s.last_ts)],
        ["events", s.events],
        ["requests (each counted once)", s.requests],
        ["duplicates dropped", s.duplicates],
        ["invalid inputs", sum(s.invalid.values())],
    ]
    for reason, n in sorted(s.invalid.items()):
        period.append([f"  invalid: {reason}", n])
    out.append("<h3>Coverage</h3>")
    out.append(table(["", "count or time"], period, numeric=[1]))
    gaps = c.coverage.gaps()
    out.append(f"<h3>Gaps in the record (no event for more than {_duration(c.gap)})</h3>")
    if gaps:
        out.append(
            "<p>No event at all for these periods: an outage of the API server or of the "
            "audit pipeline, or records removed.</p>"
        )
    out.append(
        table(
            ["last event before", "first event after", "silence (s)"],
            [[iso(a), iso(b), round(b - a, 3)] for a, b in gaps[:MAX_ROWS]],
            numeric=[2],
        )
    )
    out.append(
        _chart(
            "chart-requests",
            "Requests over time by class",
            c,
            list(range(len(CLASSES))),
            list(CLASSES),
            CLASS_COLORS,
        )
    )
    version = version_text("kube-audit-exporter").splitlines()
    rows: list[list[Any]] = [
        ["exporter", version[0]],
        *[[line.split(":", 1)[0], line.split(":", 1)[1].strip()] for line in version[1:]],
    ]
    rows.append(["rules active", c.active_rules])
    for rule_id, why in sorted(c.inactive_rules.items()):
        rows.append([f"rule {rule_id} inactive", why])
    out.append("<h3>Versions</h3>")
    out.append(table(["component", "version"], rows))
    return "".join(out)


def _who_did_what(c: Collector) -> str:
    out = []
    people = sorted(
        c.principals.items(), key=lambda kv: (kv[1].kind != "human", -kv[1].requests, kv[0])
    )
    humans = [
        (name, c.timeline.keyed_series(name)) for name, p in people if name in c.timeline.keyed
    ]
    if humans:
        starts = [start for start, _ in c.timeline.series()]
        out.append(
            "<figure><figcaption><strong>Activity of each person</strong> "
            f'<span class="muted">(requests per {_duration(c.timeline.width)}; darker is '
            "more)</span></figcaption>"
        )
        out.append(
            activity_strip(
                "chart-people", "Activity of each person", humans, starts, c.timeline.width
            )
        )
        rows = [[name, sum(v), sum(1 for x in v if x)] for name, v in humans]
        out.append(
            '<div class="scroll">'
            + table(["person", "requests", "active buckets"], rows, numeric=[1, 2])
            + "</div></figure>"
        )
    out.append("<h3>Impersonation</h3>")
    imps = sorted(c.impersonations.items(), key=lambda kv: (kv[1][3], kv[0]))
    out.append(
        table(
            ["who", "requests", "allowed", "denied", "first", "last", "first audit ID"],
            [
                [
                    Raw(f"{e(a)} <span class=muted>acting as</span> {e(b)}"),
                    r[0],
                    r[1],
                    r[2],
                    iso(r[3]),
                    iso(r[4]),
                    Raw(f"<code>{e(r[5])}</code>"),
                ]
                for (a, b), r in imps
            ],
            numeric=[1, 2, 3],
        )
    )
    if c.impersonations_overflow:
        out.append(f"<p class=muted>{c.impersonations_overflow:,} more not listed.</p>")
    out.append(
        "<h3>People and service accounts</h3><p class=muted>Each person, and each service "
        "account outside kube-system (the control plane's are left out), with what it did.</p>"
    )
    for name, p in people:
        out.append(_principal(name, p))
    if c.principals_overflow:
        out.append(
            f"<p class=muted>{c.principals_overflow:,} requests by principals past the first "
            f"{len(c.principals)} are not itemised.</p>"
        )
    return "".join(out)


def _principal(name: str, p: Principal) -> str:
    kind = "person" if p.kind == "human" else "service account"
    out = [
        f'<div class="principal"><h3>{e(name)} <span class="muted">({kind})</span></h3>',
        f"<p>{p.requests:,} requests, {p.denied:,} refused (401/403); first seen "
        f"{iso(p.first)}, last seen {iso(p.last)}.</p>",
        table(["verb", "resource", "requests"], _actions(p), numeric=[2]),
        table(["objects touched", "requests"], _objects(p), numeric=[1]),
        table(["source address", "requests"], top(p.sources, 10), numeric=[1]),
        table(["user agent", "requests"], top(p.agents, 10), numeric=[1]),
        "</div>",
    ]
    return "".join(out)


def _actions(p: Principal) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for key, n in top(p.actions, 15):
        if isinstance(key, tuple):
            verb, resource, sub = key
            rows.append([verb, f"{resource}/{sub}" if sub else resource, n])
        else:
            rows.append([key, "", n])
    return rows


def _objects(p: Principal) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for key, n in top(p.objects, 10):
        if isinstance(key, tuple):
            resource, sub, namespace, name = key
            label = f"{resource}/{sub}" if sub else resource
            rows.append([f"{label} {'/'.join(x for x in (namespace, name) if x)}".strip(), n])
        else:
            rows.append([key, n])
    return rows


def _sensitive(c: Collector) -> str:
    s = c.summary
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(s.sensitive_counts.items())) or "none"
    out = [f"<p>Sensitive requests by kind: {e(counts)}.</p>"]
    out.append(
        "<h3>Operations that matter</h3><p class=muted>People first, then unusual principals "
        "(a service account doing more than reading or minting credentials, or flagged by a "
        "rule), then anonymous and unauthenticated callers; flagged operations first within "
        "each.</p>"
    )
    rows = s.sensitive
    shown = rows[:MAX_ROWS]
    out.append(
        table(
            ["when", "flagged", "kind", "who", "verb", "object", "code", "source", "audit ID"],
            [
                [
                    r["time"],
                    Raw(_badge(r["severity"])) if r.get("severity") else "-",
                    ",".join(r["categories"]),
                    _who(r),
                    r["verb"],
                    _object(r),
                    r["code"],
                    r.get("source_ip"),
                    Raw(f"<code>{e(r['audit_id'])}</code>"),
                ]
                for r in shown
            ],
        )
    )
    if len(rows) > len(shown):
        out.append(f"<p class=muted>{len(rows) - len(shown):,} more not shown.</p>")
    out.append("<h3>Routine controller traffic</h3>")
    out.append(
        table(
            ["component", "kind", "requests"],
            [
                [who, cat, n]
                for (who, cat), n in sorted(s.routine.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            numeric=[2],
        )
    )
    return "".join(out)


def _detections(c: Collector) -> str:
    out = [
        _chart(
            "chart-detections",
            "Detections over time by severity",
            c,
            [SEVERITY_SLOT[s] for s in ("critical", "warning", "info")],
            ["critical", "warning", "info"],
            SEVERITY_COLORS,
        )
    ]
    recs = sorted(
        c.detections.values(),
        key=lambda r: (SEVERITY_ORDER.get(r.severity, 9), -r.count, r.rule_id),
    )
    out.append(
        table(
            ["severity", "rule", "matches", "first", "last"],
            [
                [Raw(_badge(r.severity)), r.rule_id, r.count, iso(r.first), iso(r.last)]
                for r in recs
            ],
            numeric=[2],
        )
    )
    for r in recs:
        out.append(
            f'<div class="detection sev-{e(r.severity)}" id="rule-{e(r.rule_id)}">'
            f"<h3>{_badge(r.severity)} {e(r.title)} <span class=muted>({e(r.rule_id)}, "
            f"{r.count:,} match{'es' if r.count != 1 else ''})</span></h3>"
            f"<p>{e(r.description)}</p>"
        )
        if r.mitre:
            out.append(f"<p class=muted>MITRE ATT&amp;CK: {e(', '.join(r.mitre))}</p>")
        out.append(_occurrences(r.kept))
        if r.count > len(r.kept):
            out.append(f"<p class=muted>{r.count - len(r.kept):,} more matches not shown.</p>")
        out.append("</div>")
    return "".join(out)


OCCURRENCE_HEADERS = (
    "when",
    "who",
    "verb",
    "object",
    "code",
    "source",
    "user agent",
    "audit ID",
    "link",
)


def _occurrences(kept: list[dict[str, Any]]) -> str:
    """One row per match; a stateful rule's match is followed by the events
    that made it fire, and its group or new value."""
    out = ['<table class="occ"><thead><tr>']
    out.extend(f"<th>{_cell(h)}</th>" for h in OCCURRENCE_HEADERS)
    out.append("</tr></thead><tbody>")
    span = len(OCCURRENCE_HEADERS)
    for m in kept:
        cells = [
            m["time"],
            _who(m),
            m["verb"],
            _object(m),
            m["code"],
            m.get("source_ip"),
            m.get("user_agent"),
            Raw(f"<code>{e(m['audit_id'])}</code>"),
            _link(m.get("link", "")),
        ]
        out.append(
            "<tr>"
            + "".join(f"<td>{v.html if isinstance(v, Raw) else _cell(v)}</td>" for v in cells)
            + "</tr>"
        )
        extra = []
        if m.get("group"):
            extra.append("grouped by " + ", ".join(f"{k} = {v}" for k, v in m["group"].items()))
        if m.get("value"):
            extra.append(f"new value: {m['value']}")
        evidence = m.get("evidence")
        if not extra and not evidence:
            continue
        inner = f"<p class=muted>{e('; '.join(extra))}</p>" if extra else ""
        if evidence:
            inner += (
                "<p class=muted>The events that made it fire (the group's latest within "
                "the rule's window):</p>"
                + table(
                    ["when", "stage", "who", "verb", "object", "code", "source", "audit ID"],
                    [
                        [
                            x["time"],
                            x["stage"],
                            x["user"],
                            x["verb"],
                            _object(x),
                            x["code"],
                            x["source_ip"],
                            Raw(f"<code>{e(x['audit_id'])}</code>"),
                        ]
                        for x in evidence
                    ],
                )
            )
        out.append(f'<tr><td colspan="{span}"><div class="evidence">{inner}</div></td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _auth(c: Collector) -> str:
    s = c.summary
    out = [
        _chart(
            "chart-auth",
            "Authentication and authorization failures over time",
            c,
            [SLOT_401, SLOT_403],
            ["401 unauthenticated", "403 forbidden"],
            AUTH_COLORS,
        )
    ]
    out.append("<h3>By principal</h3>")
    out.append(
        table(
            ["principal", "reason", "requests"],
            [[u, r, n] for (u, r), n in s.auth_failures_by_user.most_common(50)],
            numeric=[2],
        )
    )
    out.append("<h3>By source address</h3>")
    out.append(
        table(
            ["source address", "reason", "requests"],
            [[ip, r, n] for (ip, r), n in s.auth_failures_by_ip.most_common(50)],
            numeric=[2],
        )
    )
    return "".join(out)


def _critical(c: Collector) -> str:
    workloads = c.settings.critical_workloads
    if not workloads:
        return (
            "<p>No critical workloads are configured (<code>detect.critical_workloads</code> in "
            "the file given with <code>--config.file</code>).</p>"
        )
    out = ["<h3>Configured</h3>"]
    out.append(
        table(
            [
                "workload",
                "namespaces",
                "resources",
                "names",
                "allowed principals",
                "allowed windows",
            ],
            [
                [
                    w.name,
                    ", ".join(w.namespaces) or "any",
                    ", ".join(w.resources) or "any",
                    ", ".join(w.names) or "any",
                    ", ".join(w.allowed_principals) or "nobody",
                    ", ".join(x.text for x in w.allowed_windows) or "any time",
                ]
                for w in workloads
            ],
        )
    )
    out.append("<h3>Every access</h3>")
    out.append(
        table(
            ["workload", "verdict", "requests"],
            [[w, v, n] for (w, v), n in sorted(c.critical_counts.items())],
            numeric=[2],
        )
    )
    rows = sorted(c.critical, key=lambda r: r["time"])
    out.append(
        table(
            ["when", "workload", "verdict", "who", "verb", "object", "code", "source", "audit ID"],
            [
                [
                    r["time"],
                    r["workload"],
                    r["verdict"],
                    _who(r),
                    r["verb"],
                    _object(r),
                    r["code"],
                    r.get("source_ip"),
                    Raw(f"<code>{e(r['audit_id'])}</code>"),
                ]
                for r in rows
            ],
            classes=["allowed" if r["verdict"] == "allowed" else "denied" for r in rows],
        )
    )
    return "".join(out)


def _policy(c: Collector) -> str:
    findings, cis, never = judge(c.levels, c.stages)
    out = ["<h3>What the events show</h3>"]
    out.append(
        table(
            ["finding (policy lint code)", "verdict", "what the record shows", "advice"],
            [
                [
                    f.code,
                    Raw(f'<span class="{e(f.verdict)}">{e(f.verdict)}</span>'),
                    f.text,
                    f.advice or "-",
                ]
                for f in findings
            ],
        )
    )
    out.append(
        "<p class=muted>Run <code>kube-audit-exporter policy lint POLICY.yaml</code> on the "
        "cluster's policy file: its findings use the same codes.</p>"
    )
    out.append("<h3>Level seen per resource</h3>")
    rows = level_table(c.levels)
    extra = sorted({lv for _, per in rows for lv in per if lv not in LEVELS})
    cols = [*LEVELS[1:], *extra]
    out.append(
        '<div class="scroll">'
        + table(
            ["resource", *cols],
            [[r, *[per.get(lv, 0) for lv in cols]] for r, per in rows],
            numeric=range(1, len(cols) + 1),
        )
        + "</div>"
    )
    out.append("<h3>Stages seen</h3>")
    out.append(table(["stage", "events"], sorted(c.stages.items()), numeric=[1]))
    out.append("<h3>Resources never seen</h3>")
    out.append(
        "<p>"
        + (e(", ".join(never)) if never else "none: every resource an auditor expects appears")
        + "</p><p class=muted>Either nothing touched them in this period, or the policy drops "
        "them (level None).</p>"
    )
    out.append("<h3>CIS Kubernetes Benchmark audit items</h3>")
    out.append(
        table(
            ["item", "recommendation", "verdict from the evidence", "why"],
            [[i.ref, i.title, i.verdict, i.why] for i in cis],
        )
    )
    return "".join(out)


def _performance(c: Collector) -> str:
    s = c.summary
    out = [
        "<h3>Slowest requests</h3><p class=muted>stageTimestamp minus "
        "requestReceivedTimestamp; watches, exec, attach, port-forward and proxy are left "
        "out.</p>"
    ]
    slow = sorted(s._slowest, key=lambda t: (-t[0], t[1]))
    out.append(
        table(
            ["seconds", "when", "who", "verb", "object", "code", "audit ID"],
            [
                [
                    round(d, 6),
                    r["time"],
                    _who(r),
                    r["verb"],
                    _object(r),
                    r["code"],
                    Raw(f"<code>{e(r['audit_id'])}</code>"),
                ]
                for d, _, r in slow
            ],
            numeric=[0],
        )
    )
    out.append("<h3>Latency phases (apiserver.latency.k8s.io annotations)</h3>")
    out.append(
        table(
            ["phase", "requests", "mean (s)", "max (s)"],
            [
                [ph, int(st[0]), st[1] / st[0] if st[0] else 0.0, st[2]]
                for ph, st in sorted(c.phases.items(), key=lambda kv: -kv[1][1])
            ],
            numeric=[1, 2, 3],
        )
    )
    worst = sorted(c.phase_slowest, key=lambda t: (-t[0], t[1]))
    out.append("<h3>Requests with the longest single phase</h3>")
    out.append(
        table(
            ["phase", "seconds", "when", "who", "verb", "object", "audit ID"],
            [
                [
                    r["phase"],
                    round(d, 6),
                    r["time"],
                    _who(r),
                    r["verb"],
                    _object(r),
                    Raw(f"<code>{e(r['audit_id'])}</code>"),
                ]
                for d, _, r in worst
            ],
            numeric=[1],
        )
    )
    return "".join(out)


RENDERERS = {
    "scope": lambda c, scope: _scope(c, scope),
    "who": lambda c, scope: _who_did_what(c),
    "sensitive": lambda c, scope: _sensitive(c),
    "detections": lambda c, scope: _detections(c),
    "auth": lambda c, scope: _auth(c),
    "critical": lambda c, scope: _critical(c),
    "policy": lambda c, scope: _policy(c),
    "performance": lambda c, scope: _performance(c),
}


def render(c: Collector, scope: Scope, only: Sequence[str] | None = None) -> str:
    """The page; ``only`` renders some sections alone (for screenshots)."""
    s = c.summary
    crit = sum(r.count for r in c.detections.values() if r.severity == "critical")
    warn = sum(r.count for r in c.detections.values() if r.severity == "warning")
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(scope.title)}</title><style>{STYLE}</style></head><body><main>"
    )
    cluster = f" &middot; cluster <strong>{e(scope.cluster)}</strong>" if scope.cluster else ""
    intro = (
        f'<header class="top"><h1>{e(scope.title)}</h1><p>{_when(s.first_ts)} .. '
        f"{_when(s.last_ts)}{cluster} &middot; {s.events:,} events, {s.requests:,} requests "
        f"&middot; {crit:,} critical and {warn:,} warning detections</p></header>"
    )
    nav = (
        "<nav><ol>"
        + "".join(f'<li><a href="#{sid}">{e(title)}</a></li>' for sid, title in SECTIONS)
        + "</ol></nav>"
    )
    body = []
    for n, (sid, title) in enumerate(SECTIONS, 1):
        if only is not None and sid not in only:
            continue
        body.append(
            f'<section id="{sid}"><h2>{n}. {e(title)}</h2>{RENDERERS[sid](c, scope)}</section>'
        )
    foot = (
        "<footer>Written by kube-audit-exporter report. Secret values are redacted before "
        "anything is counted or shown. Times are UTC.</footer>"
    )
    parts = [head, intro if only is None else "", nav if only is None else "", *body, foot]
    return "".join(parts) + "</main></body></html>\n"


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
