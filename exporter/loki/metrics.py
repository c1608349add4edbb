"""The Loki output's health metrics, rendered at scrape time.

Registered through :meth:`exporter.metrics.AuditMetrics.add_state`, so they
are built on the same injected registry as every other family.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..metrics import PREFIX
from .client import REJECT_REASONS
from .spool import SpoolStats

PUSH_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From spooling to Loki's answer: seconds normally, hours in an outage.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
FAILURE_REASONS = (
    "timeout",
    "connection",
    "tls",
    "error",
    "rate_limited",
    "http_5xx",
    "rejected",
    "too_large",
    "unauthorized",
    "forbidden",
    "not_found",
    "blocked",
)


class LokiMetrics:
    """Counters updated by the sender threads, read by scrapes.

    ``name`` is the output in the metric names (``kube_audit_loki_...``,
    ``kube_audit_otlp_...``); ``spool_prefix`` goes before the spool's
    (empty for Loki's ``kube_audit_spool_...``)."""

    def __init__(self, name: str = "loki", spool_prefix: str = "") -> None:
        self.name = name
        self.spool_prefix = spool_prefix
        self.lock = threading.Lock()
        self.sent_bytes = 0.0
        self.request_bytes = 0.0
        self.metadata_on = 1.0
        self.resent_without_metadata = 0.0
        self._latency = [0.0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self.entries_sent = 0.0
        self.entries_rejected: dict[str, float] = dict.fromkeys(REJECT_REASONS, 0.0)
        self.entries_shrunk = 0.0
        self.batches_sent = 0.0
        self.requests: dict[str, float] = {}
        self.failures: dict[str, float] = dict.fromkeys(FAILURE_REASONS, 0.0)
        self.retries = 0.0
        self.spool_full = 0.0
        self.sender_up = 1.0
        self._buckets = [0.0] * (len(PUSH_DURATION_BUCKETS) + 1)
        self._duration_sum = 0.0

    def request(self, code: str, seconds: float, reason: str, nbytes: int = 0) -> None:
        with self.lock:
            self.request_bytes += nbytes
            self.requests[code] = self.requests.get(code, 0.0) + 1
            self._buckets[bisect_left(PUSH_DURATION_BUCKETS, seconds)] += 1
            self._duration_sum += seconds
            if reason:
                self.failures[reason] = self.failures.get(reason, 0.0) + 1

    def rejected(self, reasons: dict[str, int]) -> None:
        with self.lock:
            for reason, n in reasons.items():
                self.entries_rejected[reason] = self.entries_rejected.get(reason, 0.0) + n

    def sent(self, entries: int, batches: int = 1, nbytes: int = 0) -> None:
        with self.lock:
            self.entries_sent += entries
            self.batches_sent += batches
            self.sent_bytes += nbytes

    def latency(self, seconds: float, entries: int) -> None:
        """``entries`` were answered for ``seconds`` after they were spooled."""
        with self.lock:
            self._latency[bisect_left(LATENCY_BUCKETS, seconds)] += entries
            self._latency_sum += seconds * entries

    def metadata_off(self) -> None:
        with self.lock:
            self.metadata_on = 0.0

    def resent(self, entries: int) -> None:
        with self.lock:
            self.resent_without_metadata += entries

    def retry(self) -> None:
        with self.lock:
            self.retries += 1

    def full(self) -> None:
        with self.lock:
            self.spool_full += 1

    def shrunk(self, n: int) -> None:
        with self.lock:
            self.entries_shrunk += n

    def collect(
        self, spool: SpoolStats | None, clock: Callable[[], float] = time.time
    ) -> Iterator[Metric]:
        with self.lock:
            sent = self.entries_sent
            rejected = dict(self.entries_rejected)
            shrunk = self.entries_shrunk
            batches = self.batches_sent
            requests = dict(self.requests)
            failures = dict(self.failures)
            retries = self.retries
            full = self.spool_full
            up = self.sender_up
            buckets = list(self._buckets)
            dsum = self._duration_sum
            sent_bytes = self.sent_bytes
            request_bytes = self.request_bytes
            metadata_on = self.metadata_on
            resent = self.resent_without_metadata
            latency = list(self._latency)
            lsum = self._latency_sum
        p = PREFIX + self.name + "_"
        what = "Loki" if self.name == "loki" else "The OTLP receiver"
        yield _counter(
            p + "sent_bytes_total",
            "Uncompressed bytes of the push requests answered 2xx (what ingestion limits count).",
            sent_bytes,
        )
        yield _counter(
            p + "request_bytes_total",
            "Bytes of push request bodies sent, as sent (compressed), retries included.",
            request_bytes,
        )
        yield _histogram(
            p + "entry_latency_seconds",
            f"Time from an entry's spooling to {what}'s answer for it (from the oldest "
            "entry of the spool read it came in).",
            LATENCY_BUCKETS,
            latency,
            lsum,
        )
        if self.name == "loki":
            yield _gauge(
                p + "structured_metadata",
                "1 while entries carry structured metadata; 0 when switched off or refused.",
                metadata_on,
            )
            yield _counter(
                p + "entries_resent_without_metadata_total",
                "Entries sent again without structured metadata after Loki refused it.",
                resent,
            )
        yield _counter(p + "entries_sent_total", f"Entries {what} accepted.", sent)
        fam = CounterMetricFamily(
            p + "entries_rejected_total",
            f"Entries {what} refused (400, 260, or a single entry too large), by reason; not "
            "retried. A lower bound: a 2xx can hide refused entries.",
            labels=("reason",),
        )
        for reason, v in rejected.items():
            fam.add_metric((reason,), v)
        yield fam
        yield _counter(
            p + "entries_shrunk_total",
            "Events over the line limit sent without their request/response bodies.",
            shrunk,
        )
        yield _counter(p + "batches_sent_total", f"Push requests {what} answered 2xx.", batches)
        fam = CounterMetricFamily(
            p + "requests_total",
            "Push requests, by HTTP status or transport error.",
            labels=("code",),
        )
        for code, v in requests.items():
            fam.add_metric((code,), v)
        yield fam
        fam = CounterMetricFamily(
            p + "push_failures_total",
            "Push requests that failed, by reason.",
            labels=("reason",),
        )
        for reason, v in failures.items():
            fam.add_metric((reason,), v)
        yield fam
        yield _counter(p + "retries_total", "Pushes sent again after a failure.", retries)
        hist = HistogramMetricFamily(p + "push_duration_seconds", "Duration of one push request.")
        acc = 0.0
        pairs = []
        for bound, n in zip([*map(repr, PUSH_DURATION_BUCKETS), "+Inf"], buckets, strict=True):
            acc += n
            pairs.append((bound, acc))
        hist.add_metric((), pairs, dsum)
        yield hist
        yield _gauge(
            p + "sender_up",
            "1 while the sender pushes; 0 after a 401, 403, 404 or 405 until a push works.",
            up,
        )
        p = PREFIX + self.spool_prefix
        yield _counter(
            p + "spool_full_total",
            "Batches refused because the spool was full (webhook 503, log tailer held).",
            full,
        )
        if spool is None:
            return
        yield _gauge(p + "spool_bytes", "Unacknowledged bytes in the spool.", spool.bytes)
        yield _gauge(p + "spool_max_bytes", "Spool size limit.", spool.max_bytes)
        yield _gauge(p + "spool_entries", "Entries waiting in the spool.", spool.entries)
        age = 0.0
        if spool.oldest_append_ts is not None:
            age = max(0.0, clock() - spool.oldest_append_ts)
        yield _gauge(
            p + "spool_oldest_entry_age_seconds",
            "Time since the oldest unacknowledged entry was spooled.",
            age,
        )
        yield _counter(
            p + "spool_corrupt_records_total",
            "Damaged spool records skipped (torn writes, bad checksums).",
            spool.corrupt_records,
        )


def _counter(name: str, doc: str, value: float) -> Metric:
    fam = CounterMetricFamily(name, doc)
    fam.add_metric((), value)
    return fam


def _histogram(
    name: str, doc: str, bounds: tuple[float, ...], counts: list[float], total: float
) -> Metric:
    hist = HistogramMetricFamily(name, doc)
    acc = 0.0
    pairs = []
    for bound, n in zip([*map(repr, bounds), "+Inf"], counts, strict=True):
        acc += n
        pairs.append((bound, acc))
    hist.add_metric((), pairs, total)
    return hist


def _gauge(name: str, doc: str, value: float) -> Metric:
    fam = GaugeMetricFamily(name, doc)
    fam.add_metric((), value)
    return fam
