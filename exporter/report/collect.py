"""What the HTML report needs, aggregated while the events stream through the
pipeline: a processor placed after detection (so it sees redacted events and
the rules they matched), with memory bounded whatever the input's size.

Every collection is a counter of bounded keys or a list with a cap; what
falls past a cap is counted, never kept. The terminal summary's aggregates
(:class:`~exporter.report.summary.Report`) are reused, not computed twice.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter, le
from typing import Any

from ..detect.alerts import render_link
from ..detect.engine import CompiledRule, Detector, Match, Runner
from ..detect.settings import CriticalWorkload, DetectionSettings
from ..duration import parse_go_duration
from ..event import COMMON_ANNOTATIONS, AuditEvent, code_class
from ..metrics import LATENCY_PREFIX
from .significance import is_reported_principal
from .summary import Report, iso, who_what
from .timeline import Coverage, Timeline

OTHER = "__other__"
# Timeline slots: requests by class, auth failures, detections by severity.
CLASSES = ("2xx", "3xx", "4xx", "5xx", "unknown")
SLOT_401 = 5
SLOT_403 = 6
SEVERITY_SLOT = {"critical": 7, "warning": 8, "info": 9}
SLOTS = 10

MAX_PRINCIPALS = 300
MAX_IMPERSONATIONS = 500
MAX_CRITICAL_ROWS = 2000
MAX_EVIDENCE_GROUPS = 2000
MAX_EVIDENCE = 10
MAX_SKIPPED = 10_000
# Detections kept in full per rule, by severity; the rest are counted.
KEEP_PER_RULE = {"critical": 100, "warning": 50, "info": 5}


def bump(counter: dict[Any, int], key: Any, cap: int) -> None:
    """counter[key] += 1, folding new keys past ``cap`` into OTHER."""
    if key in counter or len(counter) < cap:
        counter[key] = counter.get(key, 0) + 1
    else:
        counter[OTHER] = counter.get(OTHER, 0) + 1


@dataclass
class Principal:
    """What one person or service account did."""

    kind: str
    requests: int = 0
    denied: int = 0
    first: float = 0.0
    last: float = 0.0
    # (verb, resource, subresource) or, for a non-resource request, (verb, path, "")
    actions: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (resource, subresource, namespace, name)
    objects: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    agents: dict[str, int] = field(default_factory=dict)


@dataclass
class RuleDetections:
    rule_id: str
    title: str
    severity: str
    description: str
    mitre: tuple[str, ...]
    kind: str
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    kept: list[dict[str, Any]] = field(default_factory=list)


class Collector:
    """A pipeline processor (after the Detector) and the Detector's
    ``on_match`` callback; made before the Detector runs, it wraps the
    stateful rules' runners so that the Detector notes the events it runs
    them on (see _noting). ``since``/``until`` are only recorded here: the
    caller filters the events."""

    def __init__(
        self,
        settings: DetectionSettings,
        detector: Detector | None = None,
        *,
        gap: float = 300.0,
    ) -> None:
        self.settings = settings
        self.summary = Report()
        if detector is not None:
            self.summary.rule_severity = {r.id: r.severity for r in detector.rules}
            self.inactive_rules = dict(detector.inactive)
            self.active_rules = len(detector.rules)
        else:
            self.inactive_rules = {}
            self.active_rules = 0
        self.gap = gap
        self.coverage = Coverage(gap)
        self.timeline = Timeline(SLOTS)
        self.outside_period = 0
        self.principals: dict[str, Principal] = {}
        self.principals_overflow = 0
        self.impersonations: dict[tuple[str, str], list[Any]] = {}
        self.impersonations_overflow = 0
        # (resource, subresource, level) -> requests; see levels
        self._levels: Counter[tuple[str, str, str]] = Counter()
        self.stages: Counter[str] = Counter()
        self.phases: dict[str, list[float]] = {}
        self.phase_slowest: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = 0
        self.critical: list[dict[str, Any]] = []
        self.critical_counts: Counter[tuple[str, str]] = Counter()
        self.detections: dict[str, RuleDetections] = {}
        self._pending: dict[int, list[Match]] = {}
        # stateful rules: the recent events of each group that met the rule's
        # condition, to show what made it fire
        self._stateful = [
            r
            for r in (detector.rules if detector else ())
            if r.rule.kind in ("threshold", "sequence")
        ]
        self._evidence: dict[str, OrderedDict[tuple[str, ...], deque[tuple[Any, ...]]]] = {
            r.id: OrderedDict() for r in self._stateful
        }
        # (event, stateful rule) for each time the Detector ran a stateful
        # rule on an event (its index found the rule a candidate), in the
        # order it did: see _noting. The evidence is worked out from these in
        # the event's turn, so only events a stateful rule may take are
        # looked at; and only until the rule's detections kept are complete
        # (see _detected): no later one shows evidence.
        self._noted: list[tuple[AuditEvent, CompiledRule]] = []
        # stateful rule id -> how many of its detections are kept at most
        self._keep = {r.id: KEEP_PER_RULE.get(r.severity, 5) for r in self._stateful}
        # a sequence rule's state: its groups in progress
        self._sequences = {r: r.state for r in self._stateful if r.rule.kind == "sequence"}
        if detector is not None and self._stateful:
            detector.wrap_runners(self._stateful, self._noting)
        self._code_slots: dict[int, int] = {}
        # username -> its Principal, or None when it is not itemised (nodes,
        # the control plane, ...; at most MAX_SKIPPED of those)
        self._who: dict[str, Principal | None] = {}
        self._skipped = 0
        # (namespace, resource, subresource, name) -> the critical workload
        # it touches (the first listed), or None
        self._touches: dict[tuple[str, str, str, str], CriticalWorkload | None] = {}
        ns: set[str] | None = set()
        for w in settings.critical_workloads:
            if not w.namespaces or any(c in p for p in w.namespaces for c in "*?["):
                ns = None
                break
            ns.update(w.namespaces)  # type: ignore[union-attr]
        self._critical_ns = ns

    @property
    def levels(self) -> Counter[tuple[str, str]]:
        """Requests per (resource or resource/subresource, audit level)."""
        out: Counter[tuple[str, str]] = Counter()
        for (res, sub, level), n in self._levels.items():
            label = (f"{res}/{sub}" if sub else res) or "(non-resource)"
            out[(label, level or "(none)")] += n
        return out

    # --- the Detector's callback -------------------------------------------

    def on_match(self, m: Match) -> None:
        self._pending.setdefault(id(m.event), []).append(m)

    # --- the processor --------------------------------------------------------

    def __call__(self, events: list[AuditEvent]) -> None:
        if not events:
            return
        self.summary(events)
        span = self.coverage.add(list(map(_stamp, events)))
        timeline = self.timeline
        pending = self._pending
        workloads = self.settings.critical_workloads
        critical_ns = self._critical_ns
        who = self._who
        only_common = COMMON_ANNOTATIONS.issuperset
        # the events a stateful rule ran on, in order: the next one is ``taken``
        noted = self._noted
        j = 0
        taken = noted[0][0] if noted else None
        requests: list[AuditEvent] = []
        request = requests.append
        # events by stage
        stages = self.stages
        received = started = complete = panic = 0
        for ev in events:
            if ev is taken:
                j = self._feed_evidence(ev, noted, j)
                taken = noted[j][0] if j < len(noted) else None
            if ev.rules and pending:
                for m in pending.pop(id(ev), ()):
                    self._detected(m)
            # counts_as_request(ev), inlined
            stage = ev.stage
            if stage == "ResponseComplete":
                complete += 1
            elif stage == "RequestReceived":
                received += 1
                continue
            elif stage == "ResponseStarted":
                started += 1
                if ev.code != 401:
                    continue
            elif stage == "Panic":
                panic += 1
            else:  # no other stage decodes; counted all the same
                stages[stage] += 1
                continue
            request(ev)
            username = ev.username
            try:
                p = who[username]
            except KeyError:
                p = self._new_principal(ev, ev.stage_ts)
            if p is not None:
                ts = ev.stage_ts
                self._principal(p, ev, ts)
                if ev.user_kind == "human":
                    timeline.add_keyed(username, ts)
            if ev.impersonated_user:
                self._impersonation(ev, ev.stage_ts)
            if workloads and (critical_ns is None or ev.namespace in critical_ns):
                self._critical(ev)
            if not only_common(ev.annotations):
                # annotations beyond the authorizer's: maybe latency phases
                self._phases(ev)
        if noted:
            # events a stateful rule ran on that this processor did not see
            # (cannot happen in one pipeline, but never keep them)
            noted.clear()
        if pending:
            # matches on events this processor did not see (likewise)
            for ms in pending.values():
                for m in ms:
                    self._detected(m)
            pending.clear()
        for name, n in (
            ("RequestReceived", received),
            ("ResponseStarted", started),
            ("ResponseComplete", complete),
            ("Panic", panic),
        ):
            if n:
                stages[name] += n
        # the other counts, each in one pass over the batch's requests
        if requests:
            self._levels.update(map(_level_key, requests))
            self._add_requests(requests, span)

    def _add_requests(self, requests: list[AuditEvent], span: tuple[float, float] | None) -> None:
        """A batch's requests into the timeline, by time bucket and code;
        ``span``: the batch's earliest and latest times."""
        timeline = self.timeline
        code_slots = self._code_slots
        # the bucket at this width (a detection may have widened the
        # timeline meanwhile; row() may widen it again): a bucket's start is
        # in the same bucket at any later width, since each width divides the
        # next
        width = timeline.width
        # a time's bucket number, as a float: ts // width
        bucket = float(width).__rfloordiv__
        counts: dict[tuple[float, int], int]
        if span is not None and span[0] // width == span[1] // width:
            # the whole batch in one bucket (the usual case once the
            # buckets are wide): its requests by code alone
            b = span[0] // width
            counts = {(b, code): n for code, n in Counter(map(_code, requests)).items()}
        else:
            stamps = list(map(_stamp, requests))
            if all(map(le, stamps, islice(stamps, 1, None))):
                # in time order (stops at the first that is not): each
                # bucket's requests are a slice, counted by code alone
                counts = {}
                start = 0
                end = len(stamps)
                while start < end:
                    b = bucket(stamps[start])
                    stop = bisect_left(stamps, b + 1.0, start, end, key=bucket)
                    for code, n in Counter(map(_code, requests[start:stop])).items():
                        counts[(b, code)] = n
                    start = stop
            else:
                counts = Counter(zip(map(bucket, stamps), map(_code, requests), strict=True))
        for (b, code), n in counts.items():
            row = timeline.row(b * width)
            slot = code_slots.get(code)
            if slot is None:
                slot = code_slots[code] = CLASSES.index(code_class(code))
            row[slot] += n
            if code == 401:
                row[SLOT_401] += n
            elif code == 403:
                row[SLOT_403] += n

    def _new_principal(self, ev: AuditEvent, ts: float) -> Principal | None:
        """The Principal of a username not met yet (None when it is not
        itemised, or past MAX_PRINCIPALS: counted)."""
        username = ev.username
        kind = ev.user_kind
        if not is_reported_principal(username, kind):
            if self._skipped < MAX_SKIPPED:
                self._skipped += 1
                self._who[username] = None
            return None
        if len(self.principals) >= MAX_PRINCIPALS:
            self.principals_overflow += 1
            return None
        p = self.principals[username] = self._who[username] = Principal(kind, first=ts, last=ts)
        return p

    def _principal(self, p: Principal, ev: AuditEvent, ts: float) -> None:
        p.requests += 1
        if ev.code == 401 or ev.code == 403:
            p.denied += 1
        if ts < p.first:
            p.first = ts
        if ts > p.last:
            p.last = ts
        # bump(), inlined for the common case: a key already counted (get,
        # not a KeyError: past a cap, new keys are common)
        resource = ev.resource
        sub = ev.subresource
        action = (
            (ev.verb, resource, sub) if resource else (ev.verb, ev.request_uri.split("?", 1)[0], "")
        )
        actions = p.actions
        n = actions.get(action)
        if n is not None:
            actions[action] = n + 1
        else:
            bump(actions, action, 60)
        namespace = ev.namespace
        name = ev.name
        if name or namespace:
            obj = (resource, sub, namespace, name)
            objects = p.objects
            n = objects.get(obj)
            if n is not None:
                objects[obj] = n + 1
            else:
                bump(objects, obj, 30)
        source = ev.source_ip
        if source:
            sources = p.sources
            n = sources.get(source)
            if n is not None:
                sources[source] = n + 1
            else:
                bump(sources, source, 20)
        agent = ev.user_agent
        if agent:
            agents = p.agents
            n = agents.get(agent)
            if n is not None:
                agents[agent] = n + 1
            else:
                bump(agents, agent, 10)

    def _impersonation(self, ev: AuditEvent, ts: float) -> None:
        key = (ev.username or "(unauthenticated)", ev.impersonated_user)
        rec = self.impersonations.get(key)
        if rec is None:
            if len(self.impersonations) >= MAX_IMPERSONATIONS:
                self.impersonations_overflow += 1
                return
            # count, allowed, denied, first, last, first audit ID
            rec = self.impersonations[key] = [0, 0, 0, ts, ts, ev.audit_id]
        rec[0] += 1
        if ev.code == 401 or ev.code == 403:
            rec[2] += 1
        else:
            rec[1] += 1
        rec[3] = min(rec[3], ts)
        rec[4] = max(rec[4], ts)

    def _critical(self, ev: AuditEvent) -> None:
        obj = (ev.namespace, ev.resource, ev.subresource, ev.name)
        try:
            w = self._touches[obj]
        except KeyError:
            w = next((w for w in self.settings.critical_workloads if w.touches(*obj)), None)
            if len(self._touches) >= MAX_SKIPPED:
                self._touches.clear()
            self._touches[obj] = w
        if w is not None:
            user = ev.obj.get("user")
            groups = user.get("groups") if type(user) is dict else None
            if not w.allows(ev.username, groups if type(groups) is list else ()):
                verdict = "principal not allowed"
            elif not w.in_window(ev.stage_ts):
                verdict = "outside its window"
            else:
                verdict = "allowed"
            self.critical_counts[(w.name, verdict)] += 1
            if len(self.critical) < MAX_CRITICAL_ROWS:
                self.critical.append({"workload": w.name, "verdict": verdict, **who_what(ev)})

    def _phases(self, ev: AuditEvent) -> None:
        worst = 0.0
        worst_phase = ""
        for key, value in ev.annotations.items():
            if type(value) is not str or not key.startswith(LATENCY_PREFIX):
                continue
            seconds = parse_go_duration(value)
            if seconds is None:
                continue
            phase = key[len(LATENCY_PREFIX) :]
            stat = self.phases.get(phase)
            if stat is None:
                if len(self.phases) >= 30:
                    phase = OTHER
                    stat = self.phases.setdefault(OTHER, [0, 0.0, 0.0])
                else:
                    stat = self.phases[phase] = [0, 0.0, 0.0]
            stat[0] += 1
            stat[1] += seconds
            if seconds > stat[2]:
                stat[2] = seconds
            if phase != "total" and seconds > worst:
                worst, worst_phase = seconds, phase
        if worst_phase:
            self._seq += 1
            slowest = self.phase_slowest
            # the row is made only when it is kept
            if len(slowest) < 10:
                heapq.heappush(slowest, (worst, self._seq, {"phase": worst_phase, **who_what(ev)}))
            elif worst > slowest[0][0]:
                heapq.heapreplace(
                    slowest, (worst, self._seq, {"phase": worst_phase, **who_what(ev)})
                )

    # --- detections -------------------------------------------------------------

    def _noting(self, r: CompiledRule, run: Runner) -> Runner:
        """The stateful rule ``r``'s runner ``run``, noting each event the
        Detector runs it on: the events its index finds ``r`` a candidate
        for, the only ones whose evidence may count (see _feed_evidence);
        while the rule's evidence is kept."""
        note = self._noted.append
        evidence = self._evidence
        rule_id = r.id

        def noted(ev: AuditEvent) -> bool | Match | None:
            if rule_id in evidence:
                note((ev, r))
            return run(ev)

        return noted

    def _feed_evidence(
        self, ev: AuditEvent, noted: list[tuple[AuditEvent, CompiledRule]], j: int
    ) -> int:
        """The evidence of ``ev`` for the stateful rules noted for it from
        ``noted[j]`` on; returns the position of the next event's."""
        sequences = self._sequences
        evidence = self._evidence
        end = len(noted)
        while j < end:
            seen_ev, r = noted[j]
            if seen_ev is not ev:
                break
            j += 1
            groups = evidence.get(r.id)
            if groups is None:  # the rule's detections kept are complete
                continue
            state = sequences.get(r)
            try:
                if state is not None and r.id not in ev.rules:
                    # a sequence that did not fire here: only the events of
                    # a sequence in progress are shown later (the group
                    # first: cheaper than the test, and rarely in progress)
                    progress = state.groups  # type: ignore[union-attr]
                    if not progress:
                        continue
                    group = r.group(ev)
                    if group not in progress or not r.test(ev):
                        continue
                else:
                    if not r.test(ev):
                        continue
                    group = r.group(ev)
            except Exception:  # the Detector counts and logs rule failures
                continue
            seen = groups.get(group)
            if seen is None:
                if len(groups) >= MAX_EVIDENCE_GROUPS:
                    groups.popitem(last=False)
                size = min(MAX_EVIDENCE, max(r.rule.count, 2 * len(r.rule.steps), 2))
                seen = groups[group] = deque(maxlen=size)
            else:
                groups.move_to_end(group)
            seen.append(
                (
                    ev.stage_ts,
                    ev.username,
                    ev.verb,
                    ev.resource,
                    ev.subresource,
                    ev.namespace,
                    ev.name,
                    ev.code,
                    ev.source_ip,
                    ev.audit_id,
                    ev.stage,
                )
            )
        return j

    def _detected(self, m: Match) -> None:
        rule = m.rule
        rec = self.detections.get(rule.id)
        ev = m.event
        ts = ev.stage_ts
        if rec is None:
            rec = self.detections[rule.id] = RuleDetections(
                rule.id,
                rule.title,
                rule.severity,
                rule.description,
                rule.mitre,
                rule.kind,
                first=ts,
                last=ts,
            )
        rec.count += 1
        rec.first = min(rec.first, ts)
        rec.last = max(rec.last, ts)
        slot = SEVERITY_SLOT.get(rule.severity)
        if slot is not None:
            self.timeline.row(ts)[slot] += 1
        if len(rec.kept) >= KEEP_PER_RULE.get(rule.severity, 5):
            return
        row = who_what(ev)
        row["link"] = render_link(self.settings.alert_link_template, m, self.settings)
        if rule.group_by:
            row["group"] = dict(zip(rule.group_by, m.group, strict=False))
        if m.value:
            row["value"] = m.value
        if rule.kind in ("threshold", "sequence"):
            groups = self._evidence.get(rule.id)
            seen = groups.get(m.group) if groups is not None else None
            window = rule.window
            row["evidence"] = [
                _brief(x) for x in (seen or ()) if not window or ts - window <= x[0] <= ts
            ]
        rec.kept.append(row)
        # no match of the rule (at its own severity or at info, see
        # notify_once) is kept after this many: nor is more evidence needed
        if rule.id in self._evidence and len(rec.kept) >= self._keep[rule.id]:
            del self._evidence[rule.id]


_stamp = attrgetter("stage_ts")
_code = attrgetter("code")
_level_key = attrgetter("resource", "subresource", "level")


def _brief(x: tuple[Any, ...]) -> dict[str, Any]:
    """An evidence tuple (see _feed_evidence) as a row."""
    ts, user, verb, resource, sub, namespace, name, code, source_ip, audit_id, stage = x
    return {
        "ts": ts,
        "time": iso(ts),
        "user": user or "(unauthenticated)",
        "verb": verb,
        "resource": f"{resource}/{sub}" if sub else resource,
        "namespace": namespace,
        "name": name,
        "code": code,
        "source_ip": source_ip,
        "audit_id": audit_id,
        "stage": stage,
    }


def top(counter: dict[Any, int], n: int) -> Sequence[tuple[Any, int]]:
    """The ``n`` largest entries, then "(others)" with the rest."""
    items = sorted(
        ((k, v) for k, v in counter.items() if k != OTHER), key=lambda kv: (-kv[1], str(kv[0]))
    )
    out = items[:n]
    rest = sum(v for _, v in items[n:]) + counter.get(OTHER, 0)
    if rest:
        out.append(("(others)", rest))
    return out
