"""The Detector: a pipeline processor that runs the compiled rules over each
batch, keeps the stateful rules' state, and reports matches (event fields for
Loki, rule_matches_total, Alertmanager notifications).

Stateful rules keep their state in this process's memory, each event applied
as it comes; or, with a shared store (exporter.state, ``state.url``), the
batch's observations are collected and sent in one round trip after the
stateless rules ran, and the memory states serve only while the store is
unreachable.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .. import accel
from ..event import COMMON_ANNOTATIONS, AuditEvent
from ..logs import RateLimitedLog
from ..metrics import AuditMetrics
from ..state import Observation, RuleSpec, SharedState
from ..state.persist import FirstSeenFile
from .alerts import build_alert
from .matchers import (
    And,
    Constraint,
    Context,
    IndexAtoms,
    KeyClasses,
    compile_predicate,
    constraint_dims,
    constraints,
    merge_and,
    merge_union,
)
from .paths import ATTRIBUTE_FIELDS, DERIVED, compile_getter, parse
from .rules import Rule, RuleSet
from .settings import SEVERITY_RANK, DetectionSettings, config_keys
from .state import (
    DistinctThresholdState,
    FirstSeenState,
    Key,
    SequenceState,
    ThresholdState,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

# Requests remembered per rule between their ResponseStarted and
# ResponseComplete events, so that a long-running request matches once.
STARTED_CAPACITY = 10_000
# Index keys (see index_key) whose candidate rules are cached; the cache starts
# afresh when full.
INDEX_CAPACITY = 50_000


class Notifier(Protocol):
    def send(self, alert: dict[str, Any]) -> bool: ...


@dataclass(frozen=True)
class Match:
    """One firing of a rule on an event (for stateful rules, the event that
    completed the threshold, sequence or first sighting)."""

    rule: Rule
    event: AuditEvent
    group: Key = ()
    value: str = ""


class _WorkloadContext:
    """Derived values that depend on the settings (critical workloads; the
    site allow-lists read ``settings``)."""

    def __init__(self, settings: DetectionSettings) -> None:
        self.settings = settings
        self.workloads = settings.critical_workloads
        # namespaces named without wildcards let most events out at once
        exact: set[str] = set()
        for w in self.workloads:
            if not w.namespaces or any(c in p for p in w.namespaces for c in "*?["):
                exact = set()
                break
            exact.update(w.namespaces)
        self.namespaces = frozenset(exact) if exact else None
        self._last: tuple[AuditEvent | None, Any] = (None, None)

    def _find(self, ev: AuditEvent) -> Any:
        last_ev, last = self._last
        if last_ev is ev:
            return last
        found = None
        if self.namespaces is None or ev.namespace in self.namespaces:
            for w in self.workloads:
                if w.touches(ev.namespace, ev.resource, ev.subresource, ev.name):
                    found = w
                    break
        self._last = (ev, found)
        return found

    def critical_workload(self, ev: AuditEvent) -> list[Any]:
        w = self._find(ev)
        return [w.name] if w is not None else []

    def critical_access(self, ev: AuditEvent) -> list[Any]:
        w = self._find(ev)
        if w is None:
            return []
        user = ev.obj.get("user")
        groups = user.get("groups") if type(user) is dict else None
        if not w.allows(ev.username, groups if type(groups) is list else ()):
            return ["principal_not_allowed"]
        if not w.in_window(ev.stage_ts):
            return ["outside_window"]
        return ["allowed"]


def _key_getter(path: str, ctx: Any) -> Callable[[AuditEvent], str]:
    """The first value a path yields, as a string ("" when none)."""
    attr = ATTRIBUTE_FIELDS.get(path)
    if attr is not None:
        get_attr = attrgetter(attr[0])
        if attr[1] is int:
            return lambda ev: str(get_attr(ev) or "")
        return get_attr
    if path in DERIVED:
        fn = DERIVED[path].make(ctx)

        def derived(ev: AuditEvent) -> str:
            values = fn(ev)
            return str(values[0]) if values else ""

        return derived
    get = compile_getter(parse(path))

    def generic(ev: AuditEvent) -> str:
        values = get(ev.obj)
        return str(values[0]) if values else ""

    return generic


def _tuple_of(getters: list[Callable[[AuditEvent], str]]) -> Callable[[AuditEvent], Key]:
    """The tuple of the getters' values for an event (a group, distinct
    values), without a generator for the usual one or two getters."""
    if len(getters) == 1:
        (first,) = getters
        return lambda ev: (first(ev),)
    if len(getters) == 2:
        first, second = getters
        return lambda ev: (first(ev), second(ev))
    return lambda ev: tuple(g(ev) for g in getters)


IndexKey = tuple[str, str, str, str, str, int, bool, int, int]
# What a stateful rule takes from a matching event: its group, its value (the
# distinct values or the first_seen value) and the sequence steps it matches.
Extracted = tuple[Key, Any, int]
# An observation waiting for the batch's round trip to the shared store.
Pending = tuple["CompiledRule", AuditEvent, Key, Any, int]
# A stateless rule's test (True on a match) or a stateful rule's check.
Runner = Callable[[AuditEvent], "bool | Match | None"]


# replay --jobs: a rule's part of an event's projection (its position, group,
# value, sequence step mask), and the event's (auditID, stage, code,
# stageTimestamp, the rules' parts, whether a rule failed on it).
Projection = tuple[int, Key, Any, int]
# In a sequence's mask: the event is no first step, and the later steps were
# not tested (they count only in a group whose sequence is in progress).
LATER_STEPS_UNKNOWN = 1 << 62
Projected = tuple[str, str, int, float, tuple[Projection, ...], bool]


class _Seen:
    """The fields of a projected event that again() and a failure's log read."""

    __slots__ = ("audit_id", "code", "stage", "stage_ts")

    def __init__(self) -> None:
        self.audit_id = self.stage = ""
        self.code = 0
        self.stage_ts = 0.0


def index_key(ev: AuditEvent, atoms: IndexAtoms) -> IndexKey:
    """The attributes the rules are indexed by (see matchers.DIMS), with
    ``atoms`` the Detector's (``Detector.atoms``): see py_index_keys."""
    return py_index_keys((ev,), atoms)[0]


def index_keys(events: Sequence[AuditEvent], atoms: IndexAtoms) -> list[IndexKey]:
    """index_key of each event, a batch at a time (the detector's and
    ``scan``'s loops run it for every event): in C where exporter._speedups
    was built (the same keys, see tests/test_detect_index.py), else
    py_index_keys."""
    if _c_index_keys is None:
        return py_index_keys(events, atoms)
    return _c_index_keys(
        events,
        atoms.triples,
        atoms.principal_class,
        atoms.annotation_class,
        COMMON_ANNOTATIONS,
        atoms.common_matters,
        lambda ev: index_key(ev, atoms),
    )


_c_index_keys: Callable[..., list[IndexKey]] | None = (
    accel.compiled.index_keys if accel.compiled is not None else None
)


def py_index_keys(events: Iterable[AuditEvent], atoms: IndexAtoms) -> list[IndexKey]:
    """index_keys in Python, the definition of the key: (stage, verb,
    resource, subresource, user kind, code, impersonated, the annotation
    keys' class, the principal's class). The principal's class is looked up
    in the atoms' cache before principal_class works it out."""
    annotation_class = atoms.annotation_class
    all_annotations = atoms.common_matters
    triples = atoms.triples
    principal_class = atoms.principal_class
    common = COMMON_ANNOTATIONS
    keys: list[IndexKey] = []
    append = keys.append
    for ev in events:
        ann = ev.annotations
        triple = (ev.username, ev.user_agent, ev.source_ip)
        who = triples.get(triple)
        if who is None:
            who = principal_class(triple)
        append(
            (
                ev.stage,
                ev.verb,
                ev.resource,
                ev.subresource,
                ev.user_kind,
                ev.code,
                ev.impersonated_user != "",
                annotation_class(ann) if all_annotations or not common.issuperset(ann) else 0,
                who,
            )
        )
    return keys


def _notify_once(rule: Rule, ctx: Context, limit: int) -> Callable[[Match], Match]:
    """A rule's notify_once (see rules.py): the first match per group and
    window keeps the rule's severity, the others are its info copy."""
    getters = [_key_getter(p, ctx.derived) for p in rule.notify_per]
    window = rule.notify_window
    quiet_rule = dataclasses.replace(rule, severity="info")
    notified: dict[Key, float] = {}  # group -> event time of its notified match

    def quiet(m: Match) -> Match:
        ev = m.event
        key = tuple(g(ev) for g in getters)
        t = ev.stage_ts
        last = notified.get(key)
        if last is not None and abs(t - last) < window:
            return Match(quiet_rule, ev, m.group, m.value)
        notified.pop(key, None)
        notified[key] = t
        if len(notified) > limit:
            del notified[next(iter(notified))]
        return m

    return quiet


class CompiledRule:
    """A rule ready to run: its predicate (match and not except), its index
    constraint and, for stateful kinds, its state."""

    __slots__ = (
        "apply",
        "check",
        "constraint",
        "defer",
        "errors",
        "extract",
        "group",
        "held",
        "id",
        "quiet",
        "rank",
        "rule",
        "run",
        "severity",
        "spec",
        "stages",
        "started",
        "state",
        "test",
    )

    def __init__(
        self,
        rule: Rule,
        ctx: Context,
        settings: DetectionSettings,
        pending: list[Pending] | None = None,
    ) -> None:
        self.rule = rule
        self.id = rule.id
        self.severity = rule.severity
        self.rank = SEVERITY_RANK[rule.severity]
        self.stages = rule.stages
        self.errors = 0
        # auditIDs of long-running requests this rule saw at ResponseStarted
        self.started: dict[str, None] = {}
        self.state: (
            ThresholdState | DistinctThresholdState | SequenceState | FirstSeenState | None
        ) = None
        self.spec: RuleSpec | None = None
        # stateful kinds: what an event gives the state (None: nothing), and
        # that applied to this process's memory (True: the rule fired)
        extract: Callable[[AuditEvent], Extracted | None] | None = None
        held: Callable[[AuditEvent], Extracted | None] | None = None
        apply: Callable[[Key, Any, int, float], bool] | None = None
        test = compile_predicate(rule.match, rule.excepts, ctx, rule.id)
        # the rule's condition alone (no state read or changed): the report
        # shows which events met it, and `replay --jobs` scans chunks with it
        self.test = test
        base = constraints(rule.match, ctx) if rule.match is not None else None
        group = _tuple_of([_key_getter(p, ctx.derived) for p in rule.group_by])
        self.group = group
        again = self.again
        limit = settings.max_state_entries
        self.constraint: Constraint = base
        check: Callable[[AuditEvent], Match | None]
        if rule.kind == "sequence":
            steps = [compile_predicate(s.match, [], ctx, f"{rule.id}-{s.name}") for s in rule.steps]
            self.constraint = merge_and(
                base, merge_union([constraints(s.match, ctx) for s in rule.steps])
            )
            sstate = SequenceState([s.count for s in rule.steps], rule.window, limit)
            self.state = sstate
            self.spec = RuleSpec(
                rule.id, "sequence", rule.window, counts=tuple(s.count for s in rule.steps)
            )
            # the rule's condition and its first step in one test: while no
            # sequence is in progress, nothing else can matter
            parts = (
                [rule.steps[0].match] if rule.match is None else [rule.match, rule.steps[0].match]
            )
            starts = compile_predicate(And(parts), rule.excepts, ctx, f"{rule.id}-start")

            def check(ev: AuditEvent) -> Match | None:
                if not sstate.groups:
                    if not starts(ev):
                        return None
                elif not test(ev):
                    return None
                if again(ev):
                    return None
                key = group(ev)
                if sstate.observe(key, ev.stage_ts, lambda i: steps[i](ev)):
                    return Match(rule, ev, key)
                return None

            def held(ev: AuditEvent) -> Extracted | None:
                # every step's test: which one counts depends on shared state
                mask = 0
                for i, step in enumerate(steps):
                    if step(ev):
                        mask |= 1 << i
                return (group(ev), "", mask) if mask else None

            def apply(key: Key, value: Any, mask: int, t: float) -> bool:
                return sstate.observe(key, t, lambda i: bool(mask >> i & 1))

        elif rule.kind == "threshold" and rule.distinct:
            dstate = DistinctThresholdState(rule.window, rule.count, limit)
            self.state = dstate
            self.spec = RuleSpec(rule.id, "distinct", rule.window, rule.count)
            values_of = _tuple_of([_key_getter(p, ctx.derived) for p in rule.distinct])

            def check(ev: AuditEvent) -> Match | None:
                if not test(ev) or again(ev):
                    return None
                key = group(ev)
                if dstate.observe(key, values_of(ev), ev.stage_ts):
                    return Match(rule, ev, key)
                return None

            def held(ev: AuditEvent) -> Extracted | None:
                return group(ev), values_of(ev), 0

            def apply(key: Key, value: Any, mask: int, t: float) -> bool:
                return dstate.observe(key, value, t)

        elif rule.kind == "threshold":
            tstate = ThresholdState(rule.window, rule.count, limit)
            self.state = tstate
            self.spec = RuleSpec(rule.id, "threshold", rule.window, rule.count)

            def check(ev: AuditEvent) -> Match | None:
                if not test(ev) or again(ev):
                    return None
                key = group(ev)
                if tstate.observe(key, ev.stage_ts):
                    return Match(rule, ev, key)
                return None

            def held(ev: AuditEvent) -> Extracted | None:
                return group(ev), "", 0

            def apply(key: Key, value: Any, mask: int, t: float) -> bool:
                return tstate.observe(key, t)

        elif rule.kind == "first_seen":
            fstate = FirstSeenState(rule.ttl, rule.learning, limit)
            self.state = fstate
            self.spec = RuleSpec(rule.id, "first_seen", rule.ttl, learning=rule.learning)
            value_of = _key_getter(rule.value, ctx.derived)

            def check(ev: AuditEvent) -> Match | None:
                if not test(ev) or again(ev):
                    return None
                value = value_of(ev)
                if not value:
                    return None
                key = group(ev)
                if fstate.observe(key, value, ev.stage_ts):
                    return Match(rule, ev, key, value)
                return None

            def held(ev: AuditEvent) -> Extracted | None:
                value = value_of(ev)
                return (group(ev), value, 0) if value else None

            def apply(key: Key, value: Any, mask: int, t: float) -> bool:
                return fstate.observe(key, value, t)

        else:

            def check(ev: AuditEvent) -> Match | None:
                return Match(rule, ev) if test(ev) else None

        if held is not None:
            given = held

            def extract(ev: AuditEvent) -> Extracted | None:
                if not test(ev) or again(ev):
                    return None
                return given(ev)

        self.check = check
        # what a stateful rule takes of an event its condition holds for
        # (and that is not again() a request it took): Detector.project's
        self.held = held
        self.extract = extract
        self.apply = apply
        queue: list[Pending] = [] if pending is None else pending

        def defer(ev: AuditEvent) -> None:
            got = extract(ev) if extract is not None else None
            if got is not None:
                queue.append((self, ev, got[0], got[1], got[2]))

        self.defer = defer
        # stateless rules run their test directly (True: a match); stateful
        # ones their check, which feeds the state and returns the Match (or,
        # with a shared store, defer, which queues the observation for the
        # batch's round trip)
        self.run: Runner = test if rule.kind == "match" else check
        # notify_once: a match passes through, or comes back at info when its
        # group was notified within the window
        self.quiet: Callable[[Match], Match] | None = None
        if rule.notify_window > 0:
            self.quiet = _notify_once(rule, ctx, limit)

    def again(self, ev: AuditEvent) -> bool:
        """True for the ResponseComplete (or Panic) of a long-running request
        this rule already took at its ResponseStarted: one request, one match
        or one count. Called once the rule's condition holds."""
        started = self.started
        if ev.stage == "ResponseStarted":
            if ev.code != 401:  # a 401 is the request's only event
                started[ev.audit_id] = None
                if len(started) > STARTED_CAPACITY:
                    del started[next(iter(started))]
            return False
        if started and ev.audit_id in started:
            del started[ev.audit_id]
            return True
        return False

    def applies(self, key: IndexKey) -> bool:
        if key[0] not in self.stages:
            return False
        return self.constraint is None or self.constraint(key)


def _no_dimensions(ckey: tuple[Any, ...]) -> tuple[()]:
    return ()


class Detector:
    """A pipeline processor: ``Pipeline(processors=[detector])``.

    For each fresh event, sets ``event.rules`` (ids of the rules it matched)
    and ``event.severity`` (the highest of their severities), counts
    ``kube_audit_rule_matches_total{rule,severity}``, and hands a notification
    to ``notifier`` for matches at or above ``settings.alert_min_severity``.
    Rules whose settings are missing (no trusted networks configured, ...)
    and rules listed in ``settings.disabled_rules`` are inactive.
    """

    def __init__(
        self,
        ruleset: RuleSet,
        settings: DetectionSettings,
        metrics: AuditMetrics | None = None,
        notifier: Notifier | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_match: Callable[[Match], None] | None = None,
        shared: SharedState | None = None,
        first_seen_file: FirstSeenFile | None = None,
        save_interval: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.notifier = notifier
        # wall time, only for the alerts' endsAt; rules run on event time
        self.clock = clock
        self.on_match = on_match
        self.min_rank = SEVERITY_RANK[settings.alert_min_severity]
        self.inactive: dict[str, str] = {}
        ctx = Context(settings.networks, _WorkloadContext(settings))
        # the index's tests on the principal and the annotations, which the
        # rules' constraints register as they compile
        self.atoms = ctx.atoms
        compiled: list[CompiledRule] = []
        # stateful observations of the batch in hand, for the shared store
        self.shared = shared
        self._pending: list[Pending] = []
        disabled = set(settings.disabled_rules)
        for rule in ruleset.rules:
            if not rule.enabled:
                self.inactive[rule.id] = "disabled in its rule file"
                continue
            if rule.id in disabled:
                self.inactive[rule.id] = "listed in detect.disabled_rules"
                continue
            missing = rule.missing(settings)
            if missing:
                self.inactive[rule.id] = "needs " + ", ".join(config_keys(m) for m in missing)
                continue
            compiled.append(CompiledRule(rule, ctx, settings, self._pending))
        self.rules = compiled
        if shared is not None:
            for r in compiled:
                if r.spec is not None:
                    r.run = r.defer
        self.first_seen_file = first_seen_file if shared is None else None
        self.save_interval = save_interval
        self.monotonic = monotonic
        self._saved_at = monotonic()
        self._saved_changes = 0
        if self.first_seen_file is not None:
            self._restore(self.first_seen_file)
        self._positions = {r: k for k, r in enumerate(compiled)}
        # index key -> (the rule's test or check, the rule) for each candidate
        self._index: dict[IndexKey, tuple[tuple[Runner, CompiledRule], ...]] = {}
        # index key -> (the rule's condition, its position) for each
        # candidate: what scan() tests
        self._tests: dict[IndexKey, tuple[tuple[Callable[[AuditEvent], object], int], ...]] = {}
        self._classes = KeyClasses(
            [
                node
                for r in compiled
                for node in ([r.rule.match] if r.rule.match is not None else [])
                + [s.match for s in r.rule.steps]
            ]
        )
        self._by_class: dict[tuple[Any, ...], tuple[CompiledRule, ...]] = {}
        # rules grouped by the index dimensions their constraint reads (the
        # stage always: see applies), each group's answers by those values
        grouped: dict[tuple[int, ...], list[CompiledRule]] = {}
        for r in compiled:
            nodes = [r.rule.match] if r.rule.match is not None else []
            nodes += [s.match for s in r.rule.steps]
            dims = tuple(sorted(constraint_dims(nodes) | {0}))
            grouped.setdefault(dims, []).append(r)
        # per group: its dimensions' values in a key's classes (a value, a
        # tuple of them, or () when it reads none), its rules, and their
        # answers by those values
        self._groups: list[
            tuple[
                Callable[[tuple[Any, ...]], Any],
                tuple[CompiledRule, ...],
                dict[Any, tuple[CompiledRule, ...]],
            ]
        ] = [
            (itemgetter(*dims) if dims else _no_dimensions, tuple(group), {})
            for dims, group in grouped.items()
        ]
        self._errors_log = RateLimitedLog(log)
        self.alerts_built = 0
        if metrics is not None:
            with metrics.lock:
                for r in compiled:
                    metrics.rule_matches.init((r.id, r.severity))
                    if r.quiet is not None:
                        metrics.rule_matches.init((r.id, "info"))
            metrics.add_state(self.collect)

    # --- the processor ---------------------------------------------------------

    def wrap_runners(
        self, rules: Iterable[CompiledRule], wrap: Callable[[CompiledRule, Runner], Runner]
    ) -> None:
        """Have each of ``rules`` run through ``wrap(rule, its runner)`` from
        now on: the report notes the events the Detector runs a stateful rule
        on. The index's candidates, which hold the runners they were found
        with, are worked out again."""
        for r in rules:
            r.run = wrap(r, r.run)
        self._index.clear()
        self._tests.clear()

    def _candidates(self, key: IndexKey) -> tuple[tuple[Runner, CompiledRule], ...]:
        # keys that no rule tells apart (see KeyClasses) share their rules
        ckey = self._classes(key)
        rules = self._by_class.get(ckey)
        if rules is None:
            # each group's answer depends only on the dimensions its rules read
            picked: list[CompiledRule] = []
            for values_of, group, answers in self._groups:
                part = values_of(ckey)
                got = answers.get(part)
                if got is None:
                    got = answers[part] = tuple(r for r in group if r.applies(key))
                picked.extend(got)
            position = self._positions
            rules = tuple(sorted(picked, key=position.__getitem__))
            if len(self._by_class) >= INDEX_CAPACITY:
                self._by_class.clear()
                for _, _, answers in self._groups:
                    answers.clear()
                self._by_class.clear()
            self._by_class[ckey] = rules
        found = tuple((r.run, r) for r in rules)
        if len(self._index) >= INDEX_CAPACITY:
            self._index.clear()
        self._index[key] = found
        return found

    def __call__(
        self, events: list[AuditEvent], only: Sequence[Sequence[int]] | None = None
    ) -> None:
        """Run the rules on ``events``; ``only``: per event, the positions
        (in :attr:`rules`) of the rules to run, the others known to do
        nothing on it (see :meth:`scan`)."""
        index = self._index
        matches: list[Match] = []
        rules = self.rules
        onlies = iter(only) if only is not None else None
        for ev, key in zip(events, index_keys(events, self.atoms), strict=True):
            cands = index.get(key)
            if cands is None:
                cands = self._candidates(key)
            if onlies is not None:
                keep = {rules[k] for k in next(onlies)}
                cands = tuple(c for c in cands if c[1] in keep)
            if not cands:
                continue
            found: list[Match] | None = None
            for run, r in cands:
                try:
                    res = run(ev)
                except Exception as e:  # a rule must never stop the pipeline
                    self._failed(r, ev, e)
                    continue
                if not res:
                    continue
                if res is True:  # a stateless rule: stateful ones call again() themselves
                    if r.again(ev):
                        continue
                    m = Match(r.rule, ev)
                else:
                    m = res
                if r.quiet is not None:
                    m = r.quiet(m)
                if found is None:
                    found = []
                found.append(m)
            if found:
                self._mark(ev, found)
                matches.extend(found)
            elif ev.has_body:
                ev.release_request_body()
        if self._pending:
            for m in self._settle():
                self._mark(m.event, (m,))
                matches.append(m)
        if matches:
            self._report(matches)
        if self.first_seen_file is not None:
            self._maybe_save()

    # --- state in the shared store, or kept across restarts ----------------------

    def _settle(self) -> list[Match]:
        """The batch's stateful observations, in one round trip to the shared
        store, or applied to this process's memory when it is unreachable."""
        pending = self._pending
        try:
            fired: list[bool] | None = None
            if self.shared is not None:
                fired = self.shared.observe(
                    [
                        Observation(
                            r.spec,  # type: ignore[arg-type]  # set for every stateful rule
                            key,
                            ev.stage_ts,
                            value if type(value) is str else orjson.dumps(value).decode(),
                            mask,
                            f"{ev.audit_id}|{ev.stage}|{ev.stage_ts!r}",
                        )
                        for r, ev, key, value, mask in pending
                    ]
                )
            if fired is None:
                fired = []
                for r, ev, key, value, mask in pending:
                    try:
                        fired.append(r.apply(key, value, mask, ev.stage_ts))  # type: ignore[misc]
                    except Exception as e:  # a rule must never stop the pipeline
                        self._failed(r, ev, e)
                        fired.append(False)
            out: list[Match] = []
            for (r, ev, key, value, _), hit in zip(pending, fired, strict=True):
                if hit:
                    m = Match(r.rule, ev, key, value if r.rule.kind == "first_seen" else "")
                    out.append(m if r.quiet is None else r.quiet(m))
            return out
        finally:
            pending.clear()

    def _first_seen_states(self) -> list[tuple[str, FirstSeenState]]:
        return [(r.id, r.state) for r in self.rules if isinstance(r.state, FirstSeenState)]

    def _restore(self, store: FirstSeenFile) -> None:
        data = store.load()
        restored = 0
        for rule_id, state in self._first_seen_states():
            restored += state.restore(data.get(rule_id))
        self._saved_changes = sum(s.changes for _, s in self._first_seen_states())
        if data:
            log.info("first_seen state restored", extra={"path": store.path, "entries": restored})

    def _maybe_save(self) -> None:
        if self.monotonic() - self._saved_at >= self.save_interval:
            self.save_state()

    def save_state(self) -> None:
        """Writes the first_seen rules' memory (when kept in a file and
        changed since the last save)."""
        store = self.first_seen_file
        self._saved_at = self.monotonic()
        if store is None:
            return
        states = self._first_seen_states()
        changes = sum(s.changes for _, s in states)
        if changes == self._saved_changes:
            return
        if store.save({rule_id: s.dump() for rule_id, s in states}):
            self._saved_changes = changes

    def scan(self, events: Sequence[AuditEvent]) -> list[tuple[int, tuple[int, ...]]]:
        """The positions of the events that some active rule's condition
        holds for (or fails on), each with the positions (in :attr:`rules`)
        of those rules (``~position`` for one whose condition raised),
        found without reading or changing any state: a rule whose
        condition does not hold does nothing on an event. ``replay
        --jobs`` scans chunks in parallel and runs the processor on these
        events and rules alone, in input order (``only``), which matches,
        counts and changes state exactly as running it on every event
        would. The loop is exporter._speedups' where it was built."""
        return accel.scan_hits(events, index_keys(events, self.atoms), self._tests, self._tests_of)

    def _tests_of(self, key: IndexKey) -> tuple[tuple[Callable[[AuditEvent], object], int], ...]:
        """The candidates' conditions for ``key`` (see :meth:`scan`), each
        with its rule's position, remembered."""
        cands = self._index.get(key)
        if cands is None:
            cands = self._candidates(key)
        position = self._positions
        found = tuple((r.test, position[r]) for _, r in cands)
        if len(self._tests) >= INDEX_CAPACITY:
            self._tests.clear()
        self._tests[key] = found
        return found

    def _failed(self, r: CompiledRule, ev: AuditEvent, e: Exception) -> None:
        r.errors += 1
        self._errors_log.warning(
            "rule failed on an event",
            rule=r.id,
            audit_id=ev.audit_id,
            error=f"{type(e).__name__}: {e}"[:200],
        )

    def _mark(self, ev: AuditEvent, found: Sequence[Match]) -> None:
        ids = list(ev.rules)
        top = SEVERITY_RANK.get(ev.severity, -1)
        for m in found:
            if m.rule.id not in ids:
                ids.append(m.rule.id)
            rank = SEVERITY_RANK[m.rule.severity]
            if rank > top:
                top = rank
                ev.severity = m.rule.severity
        ev.rules = tuple(ids)

    def _report(self, matches: list[Match]) -> None:
        metrics = self.metrics
        if metrics is not None:
            with metrics.lock:
                inc = metrics.rule_matches.inc
                for m in matches:
                    inc((m.rule.id, m.rule.severity))
        if self.on_match is not None:
            for m in matches:
                self.on_match(m)
        notifier = self.notifier
        if notifier is None:
            return
        now = self.clock()
        for m in matches:
            if SEVERITY_RANK[m.rule.severity] >= self.min_rank:
                notifier.send(build_alert(m, self.settings, now))
                self.alerts_built += 1

    # --- replay --jobs: the ordered part on compact records -----------------------

    def project(self, ev: AuditEvent, hits: Sequence[int]) -> Projected:
        """What :meth:`feed` needs of one event that :meth:`scan` found with
        the rules at ``hits``: per rule, its position and, for the stateful
        kinds, the group, the value and the mask of the sequence steps the
        event matches, computed without reading or changing any state (a
        ``replay --jobs`` job projects; the parent feeds). The rules'
        conditions are not tested again: scan found that they hold, or
        raised (``~position``). The last field is True when a rule failed on
        the event: the parent then runs the processor on the event itself,
        which counts the failure."""
        rules = self.rules
        first_steps = self._first_steps()
        if len(hits) == 1:
            # the usual case, a sequence's condition alone: no first step
            k = hits[0]
            first = first_steps.get(k)
            try:
                if first is not None and not first(ev):
                    entry = (k, rules[k].group(ev), None, LATER_STEPS_UNKNOWN)
                    return ev.audit_id, ev.stage, ev.code, ev.stage_ts, (entry,), False
            except Exception:  # the general path below counts it
                pass
        entries: list[Projection] = []
        failed = False
        for k in hits:
            if k < 0:  # its condition raised: the parent's processor counts it
                entries.append((~k, (), None, 0))
                failed = True
                continue
            r = rules[k]
            first = first_steps.get(k)
            if first is not None:
                # a sequence: while no sequence of its group is in
                # progress, only the first step counts (see feed)
                try:
                    if not first(ev):
                        entries.append((k, r.group(ev), None, LATER_STEPS_UNKNOWN))
                        continue
                except Exception:  # the parent's processor counts it
                    entries.append((k, (), None, 0))
                    failed = True
                    continue
            held = r.held
            if held is None:  # a stateless rule: its condition is its match
                entries.append((k, (), None, 0))
                continue
            # again() is the ordered part's, which the parent runs
            try:
                got = held(ev)
                if got is None:
                    # no sequence step matches (the state's clock still
                    # moves), or a first_seen event without a value
                    entries.append((k, r.group(ev), None, 0))
                else:
                    entries.append((k, got[0], got[1], got[2]))
            except Exception:  # the parent's processor counts it
                entries.append((k, (), None, 0))
                failed = True
        return ev.audit_id, ev.stage, ev.code, ev.stage_ts, tuple(entries), failed

    def _first_steps(self) -> dict[int, Callable[[AuditEvent], bool]]:
        """The first step's test of each sequence rule, by position."""
        found: dict[int, Callable[[AuditEvent], bool]] | None = self.__dict__.get("_first")
        if found is None:
            ctx = Context(self.settings.networks, _WorkloadContext(self.settings))
            found = self._first = {
                k: compile_predicate(r.rule.steps[0].match, [], ctx, f"{r.id}-first")
                for k, r in enumerate(self.rules)
                if r.rule.kind == "sequence"
            }
        return found

    def idle(self, p: Projected) -> bool:
        """True when feeding ``p`` (see :meth:`project`) changes nothing while
        no sequence is in progress: each of its rules is a sequence whose
        first step it does not match, which check() looks no further at."""
        # project() marks a sequence's entry for an event that is no first step
        entries = p[4]
        if len(entries) == 1:
            return not p[5] and entries[0][3] & LATER_STEPS_UNKNOWN != 0
        return not p[5] and all(e[3] & LATER_STEPS_UNKNOWN for e in entries)

    def sequences_in_progress(self) -> bool:
        """True when a sequence rule has a sequence in progress: then the
        idle projections (:meth:`idle`) may change something."""
        return any(r.rule.kind == "sequence" and r.state.groups for r in self.rules)  # type: ignore[union-attr]

    def may_start_sequence(self, p: Projected) -> bool:
        """True when feeding ``p`` may start a sequence (it matches a first
        step, or a rule failed on it in the job): after it, the idle
        projections may change something. It reads no state (a job asks)."""
        rules = self.rules
        return p[5] or any(mask & 1 and rules[k].rule.kind == "sequence" for k, _, _, mask in p[4])

    def feed(self, projected: Sequence[Projected], event: Callable[[int], AuditEvent]) -> list[int]:
        """The processor on the events projected (:meth:`project`), in
        order, as :meth:`__call__` with ``only`` runs it: ``again``, the
        stateful rules' state, and the matches, their events marked,
        counted and reported. ``event(i)`` gives the i-th event itself (the
        same object each time), asked only for those that match or on which
        a rule failed. Returns the positions of the events that matched."""
        rules = self.rules
        matched: list[int] = []
        matches: list[Match] = []
        seen = _Seen()
        for i, p in enumerate(projected):
            entries = p[4]
            if p[5]:
                ev = event(i)
                self([ev], [tuple(e[0] for e in entries)])
                if ev.rules:
                    matched.append(i)
                continue
            seen.audit_id, seen.stage, seen.code, seen.stage_ts = p[0], p[1], p[2], p[3]
            found: list[tuple[CompiledRule, Key, Any]] | None = None
            for k, key, value, mask in entries:
                r = rules[k]
                kind = r.rule.kind
                if kind == "sequence":
                    groups = r.state.groups  # type: ignore[union-attr]
                    if not groups and not mask & 1:
                        continue  # as check(): no sequence in progress, no first step
                    if mask & LATER_STEPS_UNKNOWN and key in groups:
                        # its group's sequence is in progress: the rule on
                        # the event itself, as one process runs it
                        ev = event(i)
                        try:
                            m = r.check(ev)
                        except Exception as e:  # a rule must never stop the pipeline
                            self._failed(r, ev, e)
                            continue
                        if m is not None:
                            found = found or []
                            found.append((r, m.group, ""))
                        continue
                if r.again(seen):  # type: ignore[arg-type]
                    continue
                apply = r.apply
                if apply is not None:
                    if value is None and kind == "first_seen":
                        continue  # no value
                    try:
                        if not apply(key, "" if value is None else value, mask, seen.stage_ts):
                            continue
                    except Exception as e:  # a rule must never stop the pipeline
                        self._failed(r, seen, e)  # type: ignore[arg-type]
                        continue
                if found is None:
                    found = []
                found.append((r, key, value if kind == "first_seen" else ""))
            if found:
                ev = event(i)
                marked = []
                for r, key, value in found:
                    m = Match(r.rule, ev, key, value)
                    # the rule's notify_once, as __call__ applies it
                    notify_once = r.quiet
                    marked.append(m if notify_once is None else notify_once(m))
                self._mark(ev, marked)
                matches.extend(marked)
                matched.append(i)
        if matches:
            self._report(matches)
        return matched

    # --- metrics read at scrape time --------------------------------------------

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        entries = GaugeMetricFamily(
            "kube_audit_detect_state_entries",
            "Groups, sequences or key/value pairs held by stateful rules in this process "
            "(bounded by detect.max_state_entries per rule; with state.url, what it holds "
            "while the shared store is unreachable).",
            labels=("rule",),
        )
        evictions = CounterMetricFamily(
            "kube_audit_detect_state_evictions",
            "State entries evicted because a stateful rule reached its bound.",
            labels=("rule",),
        )
        errors = CounterMetricFamily(
            "kube_audit_detect_errors",
            "Rule evaluations that failed on an event (the event went on).",
            labels=("rule",),
        )
        active = GaugeMetricFamily(
            "kube_audit_detect_rule_active",
            "1 for each loaded rule that runs, 0 for rules disabled or missing settings.",
            labels=("rule",),
        )
        for r in self.rules:
            active.add_metric((r.id,), 1.0)
            errors.add_metric((r.id,), float(r.errors))
            if r.state is not None:
                entries.add_metric((r.id,), float(r.state.entries))
                evictions.add_metric((r.id,), float(r.state.evictions))
        for rule_id in self.inactive:
            active.add_metric((rule_id,), 0.0)
        return [entries, evictions, errors, active]
