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
)


class LokiMetrics:
    """Counters updated by the sender thread, read by scrapes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
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

    def request(self, code: str, seconds: float, reason: str) -> None:
        with self.lock:
            self.requests[code] = self.requests.get(code, 0.0) + 1
            self._buckets[bisect_left(PUSH_DURATION_BUCKETS, seconds)] += 1
            self._duration_sum += seconds
            if reason:
                self.failures[reason] = self.failures.get(reason, 0.0) + 1

    def rejected(self, reasons: dict[str, int]) -> None:
        with self.lock:
            for reason, n in reasons.items():
                self.entries_rejected[reason] = self.entries_rejected.get(reason, 0.0) + n

    def sent(self, entries: int, batches: int = 1) -> None:
        with self.lock:
            self.entries_sent += entries
            self.batches_sent += batches

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
        p = PREFIX
        yield _counter(p + "loki_entries_sent_total", "Entries Loki accepted.", sent)
        fam = CounterMetricFamily(
            p + "loki_entries_rejected_total",
            "Entries Loki refused (400, or a single entry too large), by reason; not retried.",
            labels=("reason",),
        )
        for reason, v in rejected.items():
            fam.add_metric((reason,), v)
        yield fam
        yield _counter(
            p + "loki_entries_shrunk_total",
            "Events over the line limit sent without their request/response bodies.",
            shrunk,
        )
        yield _counter(p + "loki_batches_sent_total", "Push requests Loki answered 2xx.", batches)
        fam = CounterMetricFamily(
            p + "loki_requests_total",
            "Push requests, by HTTP status or transport error.",
            labels=("code",),
        )
        for code, v in requests.items():
            fam.add_metric((code,), v)
        yield fam
        fam = CounterMetricFamily(
            p + "loki_push_failures_total",
            "Push requests that failed, by reason.",
            labels=("reason",),
        )
        for reason, v in failures.items():
            fam.add_metric((reason,), v)
        yield fam
        yield _counter(p + "loki_retries_total", "Pushes sent again after a failure.", retries)
        hist = HistogramMetricFamily(
            p + "loki_push_duration_seconds", "Duration of one push request."
        )
        acc = 0.0
        pairs = []
        for bound, n in zip([*map(repr, PUSH_DURATION_BUCKETS), "+Inf"], buckets, strict=True):
            acc += n
            pairs.append((bound, acc))
        hist.add_metric((), pairs, dsum)
        yield hist
        yield _gauge(
            p + "loki_sender_up",
            "1 while the sender pushes; 0 after Loki refused the credentials (401/403).",
            up,
        )
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


def _gauge(name: str, doc: str, value: float) -> Metric:
    fam = GaugeMetricFamily(name, doc)
    fam.add_metric((), value)
    return fam
