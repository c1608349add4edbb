"""Every metric the exporter exposes, built in one place on an injected registry.

The hot path (one call per audit event) must stay well under ten
microseconds, so the request families are plain dictionaries keyed by label
tuples and rendered by a custom collector at scrape time, instead of
``prometheus_client`` children with a lock per increment. Callers hold
:attr:`AuditMetrics.lock` while they update a batch; scrapes take it only to
copy the dictionaries.

Every label value a client can choose (verb, resource, code, webhook name)
goes through the process's one :class:`~exporter.labels.LabelBounds`, which
the Loki stream labels share; what it folds is counted in
``series_overflow_total{metric,label}``. An event stamped further in the
future than ``max_future_skew`` is counted in ``events_future_total`` and
leaves ``last_event_timestamp_seconds`` alone, so that one bad clock cannot
silence the freshness alert for good.
"""

from __future__ import annotations

import logging
import re
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from functools import reduce
from operator import add
from typing import TYPE_CHECKING, Any, cast

import orjson

from . import package_version
from .duration import parse_go_duration
from .event import COMMON_ANNOTATIONS, INVALID_REASONS, AuditEvent
from .labels import FOLDED_CODES, OTHER, OTHER_VALUE, LabelBounds, permitted
from .logs import RateLimitedLog
from .sensitive import categories as sensitive_categories

if TYPE_CHECKING:
    # imported where the families are rendered: replay without
    # --metrics-out never imports prometheus_client (about a sixth of its
    # start-up)
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry

PREFIX = "kube_audit_"
DEFAULT_MAX_FUTURE_SKEW = 300.0

REQUEST_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
PHASE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)

# Requests that stay open by design; their duration says nothing about latency.
LONG_RUNNING_VERBS = frozenset({"watch", "watchList"})
LONG_RUNNING_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})

# apiserver.latency.k8s.io/<phase> annotations (added to slow requests). Phases
# outside this list are folded into "other" so the label stays bounded.
LATENCY_PREFIX = "apiserver.latency.k8s.io/"
KNOWN_PHASES = frozenset(
    {
        "apf-queue-wait",
        "authentication",
        "authorization",
        "decode-response-object",
        "etcd",
        "mutating-webhook",
        "response-write",
        "serialize-response-object",
        "total",
        "transform-response-object",
        "validating-webhook",
    }
)
PSA_LEVELS = ("privileged", "baseline", "restricted")
_PSA_LEVEL = re.compile(r'PodSecurity "([a-z]+):')
FAILED_OPEN_PREFIXES = (
    "failed-open.validating.webhook.admission.k8s.io/",
    "failed-open.mutation.webhook.admission.k8s.io/",
)

SOURCES = ("webhook", "logfile", "replay", "eks", "gke", "aks")

# Label values of the HTTP codes for the report, computed once: code 0 (no
# responseStatus) is "unknown".
CODE_LABEL = {c: str(c) if c else "unknown" for c in range(600)}

# The (metric, label) pairs of series_overflow_total; "loki_streams" stands
# for the Loki stream labels. Folds of the request families' shared labels
# are counted once per request, under requests_total.
REQUEST_FOLD_LABELS = ("verb", "resource", "code")
LOKI_STREAMS = "loki_streams"
LOKI_FOLD_LABELS = ("verb", "resource", "api_group", "namespace", "audit_level")

log = logging.getLogger(__name__)


def is_long_running(ev: AuditEvent) -> bool:
    if ev.verb in LONG_RUNNING_VERBS or ev.subresource in LONG_RUNNING_SUBRESOURCES:
        return True
    return ev.subresource == "log" and "follow=true" in ev.request_uri


def counts_as_request(ev: AuditEvent) -> bool:
    """True for the one event per request that the request families count.

    ResponseComplete normally; a failed authentication is logged once, at
    ResponseStarted with code 401; a panic once, at Panic.
    """
    stage = ev.stage
    return (
        stage == "ResponseComplete"
        or stage == "Panic"
        or (stage == "ResponseStarted" and ev.code == 401)
    )


def auth_failure_reason(ev: AuditEvent) -> str | None:
    if ev.code == 401:
        return "unauthenticated"
    # A 403 with decision "allow" came from admission (e.g. Pod Security), not
    # from authorization; without the annotation we cannot tell, so it counts.
    if ev.code == 403 and ev.annotations.get("authorization.k8s.io/decision") != "allow":
        return "forbidden"
    return None


class _Counter:
    __slots__ = ("doc", "labelnames", "name", "values")

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...]) -> None:
        self.name = PREFIX + name
        self.doc = doc
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        v = self.values
        v[key] = v.get(key, 0.0) + amount

    def init(self, key: tuple[str, ...]) -> None:
        self.values.setdefault(key, 0.0)

    def render(self) -> Metric:
        from prometheus_client.core import CounterMetricFamily

        fam = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for key, value in list(self.values.items()):
            fam.add_metric(key, value)
        return fam


class _CappedCounter(_Counter):
    """A counter whose first label is unbounded (user, source IP).

    At most ``cap`` distinct values are kept; later ones are folded into
    ``__other__`` and the fold is counted in series_overflow_total. The other
    labels must be bounded: the family has at most ``(cap + 1) * (their
    combinations)`` series."""

    __slots__ = ("cap", "known", "overflow")

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: tuple[str, ...],
        cap: int,
        overflow: _Counter,
    ) -> None:
        super().__init__(name, doc, labelnames)
        self.cap = cap
        self.known: set[str] = set()
        self.overflow = overflow

    def inc_capped(self, first: str, rest: tuple[str, ...], amount: float = 1.0) -> None:
        known = self.known
        if first not in known:
            if len(known) >= self.cap:
                self.overflow.inc((self.name, self.labelnames[0]), amount)
                first = OTHER
            else:
                known.add(first)
        self.inc((first, *rest), amount)


class _Histogram:
    __slots__ = ("bounds", "doc", "labelnames", "name", "values")

    def __init__(
        self, name: str, doc: str, labelnames: tuple[str, ...], bounds: tuple[float, ...]
    ) -> None:
        self.name = PREFIX + name
        self.doc = doc
        self.labelnames = labelnames
        self.bounds = bounds
        # per key: [count in each bucket (non-cumulative) ..., +Inf bucket, sum]
        self.values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def observe_sorted(self, key: tuple[str, ...], values: list[float]) -> None:
        """Observe every value of an ascending list: one bisect per bucket
        instead of one per value."""
        if not values:
            return
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0.0] * (len(self.bounds) + 2)
        below = 0
        for i, bound in enumerate(self.bounds):
            upto = bisect_right(values, bound, below)
            row[i] += upto - below
            below = upto
        row[-2] += len(values) - below
        row[-1] += sum(values)

    def render(self) -> Metric:
        from prometheus_client.core import HistogramMetricFamily

        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        names = [*(repr(b) for b in self.bounds), "+Inf"]
        for key, row in list(self.values.items()):
            row = list(row)
            acc = 0.0
            buckets = []
            for name, n in zip(names, row[:-1], strict=True):
                acc += n
                buckets.append((name, acc))
            fam.add_metric(key, buckets, row[-1])
        return fam


StateProvider = Callable[[], Iterable["Metric"]]

# An event's own values for the request families: verb, resource,
# subresource, code, user_kind, and whether it came, not permitted, before
# any permitted request of its resource in its tally (see RequestTally).
RawKey = tuple[str, str, str, int, str, bool]
# What decides a request's row of request_duration_seconds: verb,
# resource, subresource, and the RawKey's early flag.
DurationKey = tuple[str, str, str, bool]

# The codes of requests that got past authentication and authorization
# (labels.permitted), as a set.
_PERMITTED_CODES = frozenset(c for c in range(1000) if permitted(c))


class RequestTally:
    """What the request families take from a run of requests, keyed by the
    events' own values, in the order they came.

    The label bounds and the caps depend on the order in which values are
    first seen: a resource takes a free place on its first permitted
    request, a user or a source address on its first request. A tally keeps
    that order (dictionaries in first-seen order, durations and latency
    phases as sequences), so :meth:`AuditMetrics.apply` of tallies one after
    another counts exactly what observing the requests one by one would,
    whatever the tallies' sizes: ``observe_batch`` applies one per batch;
    ``replay --jobs`` builds them over chunks in parallel and applies them
    in input order."""

    __slots__ = (
        "auth",
        "duration_groups",
        "duration_order",
        "durations",
        "permitted",
        "phases",
        "psa",
        "requests",
        "sensitive",
        "sources",
        "users",
        "webhooks",
    )

    def __init__(self) -> None:
        self.requests: dict[RawKey, int] = {}
        # the durations of the requests with a latency: per DurationKey (in
        # first-seen order) its index in ``durations``, where its values
        # are in order; and the index of each duration's key, in order
        # (how the groups interleave, for rows that several keys share)
        self.duration_groups: dict[DurationKey, int] = {}
        self.durations: list[array[float]] = []
        self.duration_order: array[int] = array("I")
        self.users: dict[tuple[str, str, int], int] = {}
        self.auth: dict[tuple[str, RawKey], int] = {}
        self.sources: dict[tuple[str, str], int] = {}
        self.sensitive: dict[tuple[str, RawKey], int] = {}
        # (phase label, seconds) in order
        self.phases: list[tuple[str, float]] = []
        self.psa: dict[str, int] = {}
        # failed-open webhook names, in order
        self.webhooks: list[str] = []
        # (resource, subresource) of permitted requests, in first-seen order
        self.permitted: dict[tuple[str, str], None] = {}

    def add(self, ev: AuditEvent) -> None:
        """One event that counts as a request (see counts_as_request)."""
        self.add_requests((ev,))

    def add_requests(self, events: Iterable[AuditEvent]) -> None:
        """Events that count as requests (see counts_as_request), in order."""
        seen = self.permitted
        requests = self.requests
        groups = self.duration_groups
        durations = self.durations
        order = self.duration_order
        users = self.users
        permitted_codes = _PERMITTED_CODES
        long_verbs = LONG_RUNNING_VERBS
        long_subresources = LONG_RUNNING_SUBRESOURCES
        common = COMMON_ANNOTATIONS
        for ev in events:
            c = ev.code
            resource = ev.resource
            subresource = ev.subresource
            res = (resource, subresource)
            if c in permitted_codes:
                if res not in seen:
                    seen[res] = None
                early = False
            else:
                early = res not in seen
            verb = ev.verb
            rk = (verb, resource, subresource, c, ev.user_kind, early)
            requests[rk] = requests.get(rk, 0) + 1
            # is_long_running(ev), inline: this runs for every request
            if ev.stage == "ResponseComplete" and not (
                verb in long_verbs
                or subresource in long_subresources
                or (subresource == "log" and "follow=true" in ev.request_uri)
            ):
                took = ev.stage_ts - ev.received_ts
                dk = (verb, resource, subresource, early)
                g = groups.get(dk)
                if g is None:
                    g = groups[dk] = len(durations)
                    durations.append(array("d"))
                durations[g].append(took if took > 0.0 else 0.0)
                order.append(g)
            if ev.username:
                u = (ev.username, verb, c)
                users[u] = users.get(u, 0) + 1
            if c == 401 or c == 403:
                reason = auth_failure_reason(ev)
                if reason is not None:
                    a = (reason, rk)
                    self.auth[a] = self.auth.get(a, 0) + 1
                    if ev.source_ip:
                        src = (ev.source_ip, reason)
                        self.sources[src] = self.sources.get(src, 0) + 1
            for category in sensitive_categories(ev):
                k = (category, rk)
                self.sensitive[k] = self.sensitive.get(k, 0) + 1
            annotations = ev.annotations
            if annotations and not common.issuperset(annotations):
                self._annotations(ev)

    def _annotations(self, ev: AuditEvent) -> None:
        for key, value in ev.annotations.items():
            if type(value) is not str:
                continue
            if key.startswith(LATENCY_PREFIX):
                seconds = parse_go_duration(value)
                if seconds is not None:
                    phase = key[len(LATENCY_PREFIX) :]
                    self.phases.append((phase if phase in KNOWN_PHASES else "other", seconds))
            elif key == "pod-security.kubernetes.io/audit-violations":
                self._psa(value)
            elif key.startswith(FAILED_OPEN_PREFIXES):
                self.webhooks.append(_webhook_name(value))
        if ev.code == 403 and "pod-security.kubernetes.io/enforce-policy" in ev.annotations:
            status = ev.obj.get("responseStatus")
            message = status.get("message", "") if type(status) is dict else ""
            if type(message) is str and "violates PodSecurity" in message:
                self._psa(message)

    def _psa(self, text: str) -> None:
        m = _PSA_LEVEL.search(text)
        level = m.group(1) if m and m.group(1) in PSA_LEVELS else "unknown"
        self.psa[level] = self.psa.get(level, 0) + 1


class AuditMetrics:
    """The kube_audit_* families, registered on ``registry`` (a collector for
    prometheus_client; None: counted, not exposed)."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        *,
        max_users: int = 1000,
        max_source_ips: int = 1000,
        sources: Iterable[str] = SOURCES,
        bounds: LabelBounds | None = None,
        max_future_skew: float = DEFAULT_MAX_FUTURE_SKEW,
    ) -> None:
        self.lock = threading.Lock()
        self.bounds = bounds or LabelBounds()
        self.max_future_skew = max_future_skew
        self._future_log = RateLimitedLog(log, burst=5, interval=60.0)
        self._state: list[StateProvider] = []
        # when set, observe_batch adds requests to this tally instead of
        # counting them (a replay job: its parent applies the tally)
        self.deferred: RequestTally | None = None
        c = _Counter
        self.series_overflow = c(
            "series_overflow_total",
            "Increments whose label value was folded (into __other__, other or a code "
            "class) to keep the series bounded, by family and label.",
            ("metric", "label"),
        )
        self.requests = c(
            "requests_total",
            "API requests, counted once each (ResponseComplete, a 401, or Panic).",
            ("verb", "resource", "code", "user_kind"),
        )
        self.duration = _Histogram(
            "request_duration_seconds",
            "Request latency (stageTimestamp - requestReceivedTimestamp), "
            "long-running requests excluded.",
            ("verb", "resource"),
            REQUEST_DURATION_BUCKETS,
        )
        self.auth_failures = c(
            "auth_failures_total",
            "Requests refused by authentication (401) or authorization (403).",
            ("reason", "verb", "resource", "user_kind"),
        )
        self.user_requests = _CappedCounter(
            "user_requests_total",
            "Requests per authenticated user (capped; overflow in __other__).",
            ("user", "verb", "code_class"),
            max_users,
            self.series_overflow,
        )
        self.source_auth_failures = _CappedCounter(
            "source_auth_failures_total",
            "Authentication and authorization failures per source IP (capped).",
            ("source_ip", "reason"),
            max_source_ips,
            self.series_overflow,
        )
        self.phase = _Histogram(
            "slow_request_phase_seconds",
            "Time spent per phase of slow requests (apiserver.latency.k8s.io annotations).",
            ("phase",),
            PHASE_BUCKETS,
        )
        self.sensitive = c(
            "sensitive_operations_total",
            "Sensitive requests: secrets and tokens, exec/attach/portforward, RBAC writes, "
            "impersonation, anonymous access.",
            ("category", "verb", "resource", "code_class", "user_kind"),
        )
        self.rule_matches = c(
            "rule_matches_total",
            "Detection rule matches, by rule and severity.",
            ("rule", "severity"),
        )
        self.psa = c(
            "pod_security_violations_total",
            "Pod Security admission violations (audit annotations and enforce denials).",
            ("level",),
        )
        self.failed_open = c(
            "webhook_failed_open_total",
            "Admission webhook calls that failed and were ignored (failurePolicy Ignore).",
            ("webhook",),
        )
        self.events = c("events_total", "Audit events accepted, all stages.", ("source",))
        self.invalid = c("events_invalid_total", "Inputs refused, by reason.", ("source", "reason"))
        self.duplicates = c(
            "events_duplicate_total",
            "Events dropped as retries of one already seen (auditID, stage).",
            ("source",),
        )
        self.future = c(
            "events_future_total",
            "Events stamped further in the future than events.max_future_skew; "
            "processed, but last_event_timestamp_seconds ignores them.",
            ("source",),
        )
        self.lag = _Histogram(
            "event_lag_seconds",
            "Time from an event's stageTimestamp to its ingestion.",
            ("source",),
            LAG_BUCKETS,
        )
        self.last_event: dict[str, float] = {}
        # the EKS sources (exporter/sources/eks.py, eks_cloudwatch.py)
        self.firehose_requests = c(
            "eks_firehose_requests_total",
            "Firehose HTTP endpoint deliveries answered, by status code.",
            ("code",),
        )
        self.cloudwatch_errors = c(
            "eks_cloudwatch_errors_total",
            "CloudWatch Logs calls that failed after the SDK's own retries, by operation "
            "and kind (throttled, error); the source backs off and calls again.",
            ("operation", "kind"),
        )
        self.webhook_requests = c(
            "webhook_requests_total", "Webhook HTTP requests answered, by status code.", ("code",)
        )
        self.webhook_tls_failures = c(
            "webhook_tls_handshake_failures_total",
            "Webhook TLS handshakes that failed (no or untrusted client certificate, ...), "
            "by OpenSSL reason.",
            ("reason",),
        )
        # the GKE source (exporter/sources/gke.py): push answers, pulled messages
        self.gke_push_requests = c(
            "gke_push_requests_total",
            "Pub/Sub push requests answered by the GKE source, by status code.",
            ("code",),
        )
        self.gke_pull_messages = c(
            "gke_pull_messages_total",
            "Pub/Sub messages pulled by the GKE source, by outcome (acked, nacked).",
            ("outcome",),
        )
        self.logfile_rotations = c(
            "logfile_rotations_total",
            "Audit log rotations followed, by kind (rename, truncate).",
            ("kind",),
        )
        self._families: tuple[_Counter | _Histogram, ...] = (
            self.requests,
            self.duration,
            self.auth_failures,
            self.user_requests,
            self.source_auth_failures,
            self.phase,
            self.sensitive,
            self.rule_matches,
            self.psa,
            self.failed_open,
            self.events,
            self.invalid,
            self.duplicates,
            self.future,
            self.lag,
            self.firehose_requests,
            self.cloudwatch_errors,
            self.series_overflow,
            self.webhook_requests,
            self.webhook_tls_failures,
            self.gke_push_requests,
            self.gke_pull_messages,
            self.logfile_rotations,
        )
        for level in PSA_LEVELS:
            self.psa.init((level,))
        for source in sources:
            self.events.init((source,))
            self.duplicates.init((source,))
            self.future.init((source,))
            for reason in INVALID_REASONS:
                self.invalid.init((source, reason))
        for fam in (self.user_requests, self.source_auth_failures):
            self.series_overflow.init((fam.name, fam.labelnames[0]))
        for label in REQUEST_FOLD_LABELS:
            self.series_overflow.init((self.requests.name, label))
        self.series_overflow.init((self.failed_open.name, "webhook"))
        for label in LOKI_FOLD_LABELS:
            self.series_overflow.init((LOKI_STREAMS, label))
        for kind in ("rename", "truncate"):
            self.logfile_rotations.init((kind,))
        if registry is not None:
            registry.register(cast("Collector", self))

    # --- updates (callers hold self.lock) ---------------------------------

    def observe_batch(self, events: list[AuditEvent], source: str, now: float) -> None:
        """Account for a batch of accepted, non-duplicate events."""
        if not events:
            return
        self.events.inc((source,), len(events))
        # lag = now - stageTimestamp (0 for clocks ahead of ours), ascending
        stamps = sorted([ev.stage_ts for ev in events], reverse=True)
        lags = [now - ts for ts in stamps]
        ahead = bisect_left(lags, 0.0)
        future = 0
        if ahead:
            # Stamps beyond now + skew (the first `future` lags) say nothing
            # about freshness: counted, and left out of the gauge.
            future = bisect_left(lags, -self.max_future_skew, 0, ahead)
            if future:
                self._future(events, source, now, future)
            lags[:ahead] = [0.0] * ahead
        self.lag.observe_sorted((source,), lags)
        if future < len(stamps):
            newest = stamps[future]
            if newest > self.last_event.get(source, 0.0):
                self.last_event[source] = newest
        tally = self.deferred
        if tally is None:
            tally = RequestTally()
        # counts_as_request(ev), inline: this runs for every event
        tally.add_requests(
            [
                ev
                for ev in events
                if (stage := ev.stage) == "ResponseComplete"
                or stage == "Panic"
                or (stage == "ResponseStarted" and ev.code == 401)
            ]
        )
        if self.deferred is None:
            self.apply(tally)

    def check_future(self, events: list[AuditEvent], source: str, now: float) -> None:
        """What observe_batch does about events stamped in the future, alone:
        counted and logged (for a pipeline that observes no batches)."""
        if not events:
            return
        skew = self.max_future_skew
        # ts - now > skew exactly when observe_batch's lag (now - ts) < -skew
        if max([ev.stage_ts for ev in events]) - now > skew:
            n = sum(1 for ev in events if ev.stage_ts - now > skew)
            self._future(events, source, now, n)

    def observe_request(self, ev: AuditEvent) -> None:
        """The request families, for the one event that counts per request."""
        tally = RequestTally()
        tally.add(ev)
        self.apply(tally)

    def apply(self, tally: RequestTally) -> None:
        """Count a tally's requests: the label bounds and caps take the
        values in the order the tally saw them first (callers hold
        :attr:`lock`)."""
        bounds = self.bounds
        # what a request that could not admit its resource reads: the
        # places taken before this tally
        early: dict[tuple[str, str], str] = {}
        for rk in tally.requests:
            if rk[5]:
                res = (rk[1], rk[2])
                if res not in early:
                    kept = bounds.kept_resource(*res)
                    early[res] = OTHER if kept is None else kept
        for res in tally.permitted:
            bounds.resource(res[0], res[1], 200)  # takes a free place, if any
        name = self.requests.name
        fold = self._fold_n
        # raw key -> (verb, resource, code class) labels
        mapped: dict[RawKey, tuple[str, str, str]] = {}
        # DurationKey -> (verb, resource) labels
        row_of: dict[DurationKey, tuple[str, str]] = {}
        requests = self.requests.values
        for rk, n in tally.requests.items():
            raw_verb, resource, subresource, c, kind, was_early = rk
            verb = bounds.verb(raw_verb)
            if was_early:
                label = early[(resource, subresource)]
            else:
                kept = bounds.kept_resource(resource, subresource)
                label = OTHER if kept is None else kept
            code = bounds.code(c)
            if verb is OTHER_VALUE:
                fold(name, "verb", raw_verb, n)
            if label is OTHER:
                fold(name, "resource", f"{resource}/{subresource}" if subresource else resource, n)
            if code in FOLDED_CODES:
                fold(name, "code", str(c), n)
            mapped[rk] = (verb, label, bounds.code_class(c))
            row_of[(raw_verb, resource, subresource, was_early)] = (verb, label)
            key = (verb, label, code, kind)
            requests[key] = requests.get(key, 0.0) + n
        # request_duration_seconds: each key's row, made in the order of
        # the keys' first requests (as one observe per request would); the
        # bucket counts per key at once; the sums in the order of the
        # requests, per row (a float sum depends on its order)
        if tally.durations:
            histogram = self.duration.values
            buckets = self.duration.bounds
            width = len(buckets) + 2
            rows: list[list[float]] = []
            # the (verb, resource, subresource) whose keys a row takes: a
            # row that takes only one's, early and later keys, takes all of
            # the early key's values before any of the later key's (a
            # request is early only before the first permitted one of its
            # resource in the tally), so key by key, in the keys' order,
            # is the requests' order
            owner: dict[int, tuple[str, str, str]] = {}
            interleaved = False
            for dk in tally.duration_groups:
                labels = row_of[dk]
                row = histogram.get(labels)
                if row is None:
                    row = histogram[labels] = [0.0] * width
                rows.append(row)
                if owner.setdefault(id(row), dk[:3]) != dk[:3]:
                    interleaved = True  # folded labels
            for row, took in zip(rows, tally.durations, strict=True):
                if len(took) < 8:
                    for value in took:
                        row[bisect_left(buckets, value)] += 1
                    continue
                ordered = sorted(took)
                below = 0
                for i, bound in enumerate(buckets):
                    upto = bisect_right(ordered, bound, below)
                    row[i] += upto - below
                    below = upto
                row[-2] += len(ordered) - below
            if not interleaved:
                for row, took in zip(rows, tally.durations, strict=True):
                    row[-1] = reduce(add, took, row[-1])
            else:
                values = [iter(took) for took in tally.durations]
                for g in tally.duration_order:
                    rows[g][-1] += next(values[g])
        verb_of, class_of = bounds.verb, bounds.code_class
        inc_user = self.user_requests.inc_capped
        for (user, raw_verb, c), n in tally.users.items():
            inc_user(user, (verb_of(raw_verb), class_of(c)), n)
        auth = self.auth_failures.inc
        for (reason, rk), n in tally.auth.items():
            m = mapped[rk]
            auth((reason, m[0], m[1], rk[4]), n)
        inc_source = self.source_auth_failures.inc_capped
        for (ip, reason), n in tally.sources.items():
            inc_source(ip, (reason,), n)
        sensitive = self.sensitive.inc
        for (category, rk), n in tally.sensitive.items():
            m = mapped[rk]
            sensitive((category, m[0], m[1], m[2], rk[4]), n)
        phase = self.phase.observe
        for label, seconds in tally.phases:
            phase((label,), seconds)
        for level, n in tally.psa.items():
            self.psa.inc((level,), n)
        for webhook in tally.webhooks:
            label = bounds.webhook(webhook)
            if label is OTHER:
                self._fold(self.failed_open.name, "webhook", webhook)
            self.failed_open.inc((label,))

    def _fold_n(self, metric: str, label: str, value: str, n: int) -> None:
        self.series_overflow.inc((metric, label), n)
        self.bounds.folded(label, value, metric)

    def _fold(self, metric: str, label: str, value: str) -> None:
        self.series_overflow.inc((metric, label))
        self.bounds.folded(label, value, metric)

    def loki_fold(self, label: str, value: str) -> None:
        """A Loki stream label folded (the Loki sink calls this, without
        holding :attr:`lock`)."""
        with self.lock:
            self._fold(LOKI_STREAMS, label, value)

    def _future(self, events: list[AuditEvent], source: str, now: float, n: int) -> None:
        self.future.inc((source,), n)
        ev = max(events, key=lambda e: e.stage_ts)
        self._future_log.warning(
            "event stamped in the future: freshness gauge left alone",
            source=source,
            audit_id=ev.audit_id[:64],
            stage_timestamp=ev.stage_time[:40],
            ahead_seconds=round(ev.stage_ts - now),
            events=n,
            hint="check the API server's clock, or raise events.max_future_skew",
        )

    def invalid_input(self, source: str, reason: str, amount: int = 1) -> None:
        with self.lock:
            self.invalid.inc((source, reason), amount)

    def duplicate(self, source: str, amount: int = 1) -> None:
        self.duplicates.inc((source,), amount)

    # --- exposition ----------------------------------------------------------

    def add_state(self, provider: StateProvider) -> None:
        """Register a callback whose metrics are read at scrape time
        (queue depth, spool size, checkpoint offset...)."""
        self._state.append(provider)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        with self.lock:
            rendered = [fam.render() for fam in self._families]
            last = dict(self.last_event)
        yield from rendered
        g = GaugeMetricFamily(
            PREFIX + "last_event_timestamp_seconds",
            "stageTimestamp of the newest event seen, per source.",
            labels=("source",),
        )
        for source, ts in last.items():
            g.add_metric((source,), ts)
        yield g
        info = GaugeMetricFamily(PREFIX + "build_info", "Build information.", labels=("version",))
        info.add_metric((package_version(),), 1.0)
        yield info
        for provider in self._state:
            yield from provider()


def _webhook_name(value: str) -> str:
    """The webhook name inside a failed-open annotation value."""
    try:
        doc: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        doc = None
    if type(doc) is dict and type(doc.get("name")) is str:
        return str(doc["name"])[:253]
    return value[:253] if value else "unknown"


# Why the HTTP layer closed a connection it did not want to keep: a fixed set,
# so the label stays bounded whatever the clients send.
HTTP_CUT_REASONS = (
    "handshake_timeout",  # no (complete) TLS handshake in time
    "tls_error",  # a handshake that failed for another reason than the certificate
    "client_cert",  # no client certificate, or one the client CA did not sign
    "header_timeout",  # the request head did not arrive in time
    "body_timeout",  # the request body did not arrive in time (answered 408)
    "write_timeout",  # the client did not read its response in time
    "idle",  # a keep-alive connection idle for too long
    "too_many",  # over the connection limit (the oldest waiting one is cut)
    "bad_request",  # the parser refused the request (answered 400)
    "header_too_large",  # a request line or header over the limit (answered 431)
    "body_too_large",  # a body over the limit (answered 413)
)


class HTTPMetrics:
    """The HTTP layer's own families, shared by every listener of a process:
    ``http_connections_closed_total{listener,reason}`` (connections the server
    cut, reasons in :data:`HTTP_CUT_REASONS`) and ``http_connections{listener}``
    (open now, read at scrape time)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.lock = threading.Lock()
        self.closed = _Counter(
            "http_connections_closed_total",
            "Connections the HTTP server cut, by listener and reason.",
            ("listener", "reason"),
        )
        self._open: dict[str, Callable[[], int]] = {}
        self._certificates: list[Callable[[], Iterable[tuple[str, float | None]]]] = []
        if registry is not None:
            registry.register(cast("Collector", self))

    def add_certificates(self, expiries: Callable[[], Iterable[tuple[str, float | None]]]) -> None:
        """``expiries`` gives (certificate, notAfter) pairs at scrape time for
        ``tls_certificate_expiry_timestamp_seconds``; None values are left out."""
        with self.lock:
            self._certificates.append(expiries)

    def add_listener(self, listener: str, open_connections: Callable[[], int]) -> None:
        with self.lock:
            for reason in HTTP_CUT_REASONS:
                self.closed.init((listener, reason))
            self._open[listener] = open_connections

    def cut(self, listener: str, reason: str) -> None:
        with self.lock:
            self.closed.inc((listener, reason))

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        with self.lock:
            closed = self.closed.render()
            listeners = list(self._open.items())
        yield closed
        gauge = GaugeMetricFamily(
            PREFIX + "http_connections", "Open HTTP connections, by listener.", labels=["listener"]
        )
        for listener, count in listeners:
            gauge.add_metric([listener], count())
        yield gauge
        with self.lock:
            sources = list(self._certificates)
        if sources:
            expiry = GaugeMetricFamily(
                PREFIX + "tls_certificate_expiry_timestamp_seconds",
                "When a TLS certificate expires (Unix seconds): serving, the webhook's own; "
                "client, the earliest of those presented in the last hour.",
                labels=["certificate"],
            )
            for source in sources:
                for name, value in source():
                    if value is not None:
                        expiry.add_metric([name], value)
            yield expiry
