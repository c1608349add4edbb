"""The terminal summary that ``replay`` prints: who did what, auth failures,
sensitive operations that matter, detections with their verb and object,
slowest requests. (``report`` writes the full HTML report: see html.py.)"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..event import AuditEvent
from ..metrics import (
    CODE_LABEL,
    LONG_RUNNING_SUBRESOURCES,
    LONG_RUNNING_VERBS,
    counts_as_request,
)
from ..sensitive import categories
from .significance import RANK_ROUTINE, component, rank

FLAGGED_CAPACITY = 10_000


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Report:
    """What an auditor asks of a log, accumulated batch by batch with bounded
    memory (counters of distinct values; lists capped)."""

    max_rows: int = 1000
    files: int = 0
    events: int = 0
    requests: int = 0
    duplicates: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    first_ts: float | None = None
    last_ts: float | None = None
    # (verb, resource, subresource, code): labelled in to_dict
    by_request: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    users: Counter[str] = field(default_factory=Counter)
    user_agents: Counter[str] = field(default_factory=Counter)
    auth_failures_by_user: Counter[tuple[str, str]] = field(default_factory=Counter)
    auth_failures_by_ip: Counter[tuple[str, str]] = field(default_factory=Counter)
    sensitive_counts: Counter[str] = field(default_factory=Counter)
    # the operations that matter, people first (see significance.py), each
    # rank capped at max_rows; routine traffic as (component, category) counts
    sensitive_ranked: list[list[dict[str, Any]]] = field(
        default_factory=lambda: [[] for _ in range(RANK_ROUTINE)]
    )
    routine: Counter[tuple[str, str]] = field(default_factory=Counter)
    detections: Counter[tuple[str, str]] = field(default_factory=Counter)
    detection_examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # rule id -> its severity (an event's own severity is that of its worst match)
    rule_severity: dict[str, str] = field(default_factory=dict)
    # auditID -> severity of a request a rule flagged at an earlier stage (an
    # exec is flagged at ResponseStarted, counted at ResponseComplete)
    _flagged: dict[str, str] = field(default_factory=dict)
    # (duration, -position among the requests with a duration, who and what)
    _slowest: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    _seq: int = 0

    def __call__(self, events: list[AuditEvent]) -> None:
        """A pipeline processor: sees each accepted, non-duplicate batch.

        Each table is filled in a pass over the batch, in the batch's order
        (tables that depend on each other, the flagged stages and the
        sensitive rows, in the same pass), so the result is what one event
        after the other gives; the counters take their keys a batch at a time."""
        if not events:
            return
        self.events += len(events)
        stamps = [ev.stage_ts for ev in events]
        first = min(stamps)
        last = max(stamps)
        if self.first_ts is None or first < self.first_ts:
            self.first_ts = first
        if self.last_ts is None or last > self.last_ts:
            self.last_ts = last
        requests: list[AuditEvent] = []
        request = requests.append
        for ev in events:
            if ev.rules:
                self._detected(ev)
            stage = ev.stage
            # counts_as_request(ev), inline: this runs for every event
            if (
                stage == "ResponseComplete"
                or stage == "Panic"
                or (stage == "ResponseStarted" and ev.code == 401)
            ):
                request(ev)
                cats = categories(ev)
                if cats:
                    self._sensitive(ev, cats)
            elif ev.severity:
                self._flag(ev)
        if not requests:
            return
        self.requests += len(requests)
        # the three tables' keys counted together, a batch at a time (a batch
        # repeats a few dozen kinds of request), then added once per distinct
        # kind: each table's keys still come in their first-seen order, by
        # which most_common breaks ties
        by_request = self.by_request
        users = self.users
        agents = self.user_agents
        kinds = Counter(
            [
                (ev.verb, ev.resource, ev.subresource, ev.code, ev.username, ev.user_agent)
                for ev in requests
            ]
        )
        for (verb, resource, subresource, code, user, agent), n in kinds.items():
            by_request[(verb, resource, subresource, code)] += n
            users[user or "(unauthenticated)"] += n
            if agent:
                agents[agent] += n
        for ev in [ev for ev in requests if ev.code == 401 or ev.code == 403]:
            who = ev.username or "(unauthenticated)"
            reason = "unauthenticated" if ev.code == 401 else "forbidden"
            self.auth_failures_by_user[(who, reason)] += 1
            if ev.source_ip:
                self.auth_failures_by_ip[(ev.source_ip, reason)] += 1
        # the ten slowest, the earlier first among equals: an entry is
        # (duration, -position), the heap's first the one to go. Once ten are
        # kept, the shortest of them only grows: a request no longer than it
        # is now cannot get in, and only the others are looked at. A
        # request's position is its number among the requests.
        slowest = self._slowest
        floor = slowest[0][0] if len(slowest) >= 10 else -math.inf
        base = self._seq
        self._seq = base + len(requests)
        for i, ev in [
            (i, ev) for i, ev in enumerate(requests) if ev.stage_ts - ev.received_ts > floor
        ]:
            # is_long_running(ev), inline
            if ev.stage != "ResponseComplete":
                continue
            subresource = ev.subresource
            if (
                ev.verb in LONG_RUNNING_VERBS
                or subresource in LONG_RUNNING_SUBRESOURCES
                or (subresource == "log" and "follow=true" in ev.request_uri)
            ):
                continue
            took = ev.stage_ts - ev.received_ts
            if len(slowest) < 10:
                heapq.heappush(slowest, (took, -(base + i + 1), who_what(ev)))
            elif took > slowest[0][0]:
                heapq.heapreplace(slowest, (took, -(base + i + 1), who_what(ev)))

    def _sensitive(self, ev: AuditEvent, cats: tuple[str, ...]) -> None:
        for c in cats:
            self.sensitive_counts[c] += 1
        r = rank(ev, cats)
        if r == RANK_ROUTINE:
            who = component(ev)
            for c in cats:
                self.routine[(who, c)] += 1
            return
        rows = self.sensitive_ranked[r]
        if len(rows) < self.max_rows:
            earlier = self._flagged.pop(ev.audit_id, "") if self._flagged else ""
            severity = min(ev.severity, earlier, key=lambda s: SEVERITY_ORDER.get(s, 3))
            row = {"categories": list(cats), "rank": r, "severity": severity or None}
            row.update(who_what(ev))
            rows.append(row)

    @property
    def sensitive(self) -> list[dict[str, Any]]:
        """The sensitive operations that matter: people first, then unusual
        principals, then anonymous callers; within each, those a rule flagged
        (worst first), then by time."""
        out = []
        for rows in self.sensitive_ranked:
            out.extend(
                sorted(rows, key=lambda r: (SEVERITY_ORDER.get(r["severity"], 3), r["time"]))
            )
        return out

    def merge(self, other: Report) -> None:
        """Add what ``other`` saw on the events that came after this
        report's (``replay --jobs``: each job reports on its chunks, the
        parent merges them in input order; the result is the report of all
        the events in order). Detections are not merged: the parent sees
        the matches itself (see :meth:`detected`)."""
        self.events += other.events
        self.requests += other.requests
        for ts in (other.first_ts, other.last_ts):
            if ts is None:
                continue
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
        for mine, theirs in (
            (self.by_request, other.by_request),
            (self.users, other.users),
            (self.user_agents, other.user_agents),
            (self.auth_failures_by_user, other.auth_failures_by_user),
            (self.auth_failures_by_ip, other.auth_failures_by_ip),
            (self.sensitive_counts, other.sensitive_counts),
        ):
            # in their first-seen order: most_common breaks ties by it
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n  # type: ignore[index, arg-type]
        for key, n in other.routine.items():
            self.routine[key] += n
        for mine_rows, their_rows in zip(
            self.sensitive_ranked, other.sensitive_ranked, strict=True
        ):
            room = self.max_rows - len(mine_rows)
            if room > 0:
                mine_rows.extend(their_rows[:room])
        self._flagged.update(other._flagged)
        base = self._seq
        slowest = self._slowest
        for took, position, row in other._slowest:
            entry = (took, position - base, row)
            if len(slowest) < 10:
                heapq.heappush(slowest, entry)
            elif entry[:2] > slowest[0][:2]:
                heapq.heapreplace(slowest, entry)
        self._seq += other._seq

    def _flag(self, ev: AuditEvent) -> None:
        flagged = self._flagged
        flagged[ev.audit_id] = ev.severity
        if len(flagged) > FLAGGED_CAPACITY:
            del flagged[next(iter(flagged))]

    def ordered(self, ev: AuditEvent) -> None:
        """What a job's report (replay_jobs._JobReport) left to the parent, for
        one event that a rule's condition held for or that is sensitive, after
        detection and in input order (``replay --jobs``)."""
        if not counts_as_request(ev):
            if ev.severity:
                self._flag(ev)
            return
        cats = categories(ev)
        if cats:
            self._sensitive(ev, cats)

    def detected(self, ev: AuditEvent) -> None:
        """An event with rule matches (``ev.rules``), seen apart from the
        other events (``replay --jobs``)."""
        self._detected(ev)

    def _detected(self, ev: AuditEvent) -> None:
        # per rule: the count and the first few events as examples
        for rule in ev.rules:
            self.detections[(rule, self.rule_severity.get(rule, ev.severity))] += 1
            examples = self.detection_examples.setdefault(rule, [])
            if len(examples) < 5:
                examples.append(who_what(ev))

    def _by_label(self) -> Counter[tuple[str, str, str]]:
        """by_request with its labels: the resource with its subresource
        (``pods/exec``), the code as text (``unknown`` for none)."""
        out: Counter[tuple[str, str, str]] = Counter()
        for (verb, resource, subresource, code), n in self.by_request.items():
            label = f"{resource}/{subresource}" if subresource else resource
            out[(verb, label, CODE_LABEL.get(code) or str(code))] += n
        return out

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        return {
            "files": self.files,
            "events": self.events,
            "requests": self.requests,
            "duplicates": self.duplicates,
            "invalid": dict(sorted(self.invalid.items())),
            "first_event": iso(self.first_ts) if self.first_ts is not None else None,
            "last_event": iso(self.last_ts) if self.last_ts is not None else None,
            "requests_by_verb_resource_code": [
                {"verb": v, "resource": r, "code": c, "count": n}
                for (v, r, c), n in sorted(self._by_label().items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "top_users": [{"user": u, "count": n} for u, n in self.users.most_common(top)],
            "top_user_agents": [
                {"user_agent": u, "count": n} for u, n in self.user_agents.most_common(top)
            ],
            "auth_failures_by_user": [
                {"user": u, "reason": r, "count": n}
                for (u, r), n in self.auth_failures_by_user.most_common(top)
            ],
            "auth_failures_by_source_ip": [
                {"source_ip": ip, "reason": r, "count": n}
                for (ip, r), n in self.auth_failures_by_ip.most_common(top)
            ],
            "sensitive_operations": {
                "counts": dict(sorted(self.sensitive_counts.items())),
                "events": self.sensitive,
                "routine": [
                    {"component": who, "category": c, "count": n}
                    for (who, c), n in sorted(self.routine.items(), key=lambda kv: (-kv[1], kv[0]))
                ],
            },
            "detections": [
                {"rule": r, "severity": sev, "count": n, "examples": self.detection_examples[r]}
                for (r, sev), n in sorted(
                    self.detections.items(),
                    key=lambda kv: (SEVERITY_ORDER.get(kv[0][1], 9), -kv[1]),
                )
            ],
            "slowest_requests": [
                {"duration_seconds": round(d, 6), **row}
                for d, _, row in sorted(self._slowest, key=lambda t: (-t[0], -t[1]))
            ],
        }


SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def who_what(ev: AuditEvent) -> dict[str, Any]:
    return {
        "time": iso(ev.stage_ts),
        "user": ev.username or "(unauthenticated)",
        "impersonated_user": ev.impersonated_user or None,
        "verb": ev.verb,
        "resource": ev.resource_label,
        "namespace": ev.namespace or None,
        "name": ev.name or None,
        "code": ev.code,
        "source_ip": ev.source_ip or None,
        "user_agent": ev.user_agent or None,
        "audit_id": ev.audit_id,
    }


def render_text(d: dict[str, Any], top: int = 10) -> str:
    out: list[str] = []
    add = out.append
    add(
        f"{d['events']:,} events ({d['requests']:,} requests) from {d['files']} file(s), "
        f"{d['first_event'] or '-'} .. {d['last_event'] or '-'}"
    )
    invalid = d["invalid"]
    add(
        f"invalid inputs: {sum(invalid.values()):,}"
        + (" (" + ", ".join(f"{k} {v:,}" for k, v in invalid.items()) + ")" if invalid else "")
        + f"; duplicates dropped: {d['duplicates']:,}"
    )

    def table(title: str, rows: list[dict[str, Any]], cols: list[str]) -> None:
        add("")
        add(title)
        if not rows:
            add("  (none)")
            return
        last = len(cols) - 1
        cells = [[_cell(r.get(c), whole=i == last) for i, c in enumerate(cols)] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        header = "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))
        add(("  " + header).rstrip())
        for row in cells:
            add("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

    table(
        f"Requests by verb, resource and code (top {top * 2})",
        d["requests_by_verb_resource_code"][: top * 2],
        ["count", "verb", "resource", "code"],
    )
    table("Top users", d["top_users"], ["count", "user"])
    table("Top user agents", d["top_user_agents"], ["count", "user_agent"])
    table("Auth failures by user", d["auth_failures_by_user"], ["count", "reason", "user"])
    table(
        "Auth failures by source IP",
        d["auth_failures_by_source_ip"],
        ["count", "reason", "source_ip"],
    )
    sens = d["sensitive_operations"]
    counts = sens["counts"]
    add("")
    add(
        "Sensitive operations: "
        + (", ".join(f"{k} {v:,}" for k, v in counts.items()) if counts else "none")
    )
    # People first, then unusual principals, then anonymous callers; each
    # category shown up to ``top`` times so that one cannot hide the others.
    shown: Counter[tuple[int, str]] = Counter()
    rows = []
    for r in sens["events"]:
        kinds = [(r.get("rank", 0), c) for c in r["categories"]]
        if all(shown[k] >= top for k in kinds):
            continue
        shown.update(kinds)
        rows.append({**r, "categories": ",".join(r["categories"]), "object": _object(r),
                     "as": r.get("impersonated_user")})  # fmt: skip
    table(
        f"Sensitive operations that matter (people first; up to {top} of each kind; "
        "--output json lists more)",
        rows,
        ["time", "categories", "user", "as", "verb", "object", "code", "source_ip", "audit_id"],
    )
    routine = sens.get("routine", [])
    if routine:
        table(
            "Routine controller traffic (summarised)",
            routine[: top * 2],
            ["count", "category", "component"],
        )
    rows = []
    for det in d["detections"][: top * 3]:
        ex = det["examples"][0] if det["examples"] else {}
        rows.append({"count": det["count"], "severity": det["severity"], "rule": det["rule"],
                     "first": ex.get("time"), "user": ex.get("user"),
                     "as": ex.get("impersonated_user"), "verb": ex.get("verb"),
                     "object": _object(ex) if ex else None, "source_ip": ex.get("source_ip"),
                     "audit_id": ex.get("audit_id")})  # fmt: skip
    table("Detections (rule matches, first occurrence; --output json has more examples)", rows,
          ["count", "severity", "rule", "first", "user", "as", "verb", "object", "source_ip",
           "audit_id"])  # fmt: skip
    table(
        "Slowest requests",
        d["slowest_requests"],
        ["duration_seconds", "time", "user", "verb", "resource", "namespace", "name", "code"],
    )
    return "\n".join(out) + "\n"


def _object(row: dict[str, Any]) -> str:
    """``resource namespace/name`` of a row, as kubectl would name it."""
    resource = row.get("resource") or ""
    where = "/".join(x for x in (row.get("namespace"), row.get("name")) if x)
    return f"{resource} {where}".strip() or "-"


def _cell(value: Any, whole: bool = False) -> str:
    """A table cell: long values lose their middle, not their end (user agents
    differ in their last part); the last column is kept whole."""
    if value is None or value == "":
        return "-"
    text = str(value)
    if whole or len(text) <= 60:
        return text
    return text[:28] + "..." + text[-29:]
