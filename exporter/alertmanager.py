"""Direct notifications to Alertmanager (POST /api/v2/alerts).

Every configured Alertmanager gets every alert (an HA pair deduplicates by
labels, as with Prometheus). Each URL has its own bounded queue and sender
thread, so one Alertmanager being down never delays the others or the
pipeline: ``send`` only enqueues. Failed posts are retried with jittered
exponential backoff; a 4xx other than 429 is not retried (Alertmanager
refused the alerts as invalid). When a queue is full the oldest alert is
dropped and counted.

Metrics (read at scrape time):

- ``kube_audit_alertmanager_alerts_sent_total``: alerts accepted by an
  Alertmanager (one per alert and Alertmanager);
- ``kube_audit_alertmanager_failures_total{reason}``: failed POST attempts
  (``connection``, ``timeout``, ``http_4xx``, ``http_5xx``) and alerts given up
  (``queue_full``, ``retries_exhausted``, ``shutdown``);
- ``kube_audit_alertmanager_queue_length``: alerts waiting, all URLs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import requests
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .logs import RateLimitedLog, safe_url
from .metrics import AuditMetrics

log = logging.getLogger(__name__)

FAILURE_REASONS = (
    "connection",
    "timeout",
    "http_4xx",
    "http_5xx",
    "queue_full",
    "retries_exhausted",
    "shutdown",
)
API_PATH = "/api/v2/alerts"


def alerts_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


class _Target:
    """One Alertmanager: its queue and its sender thread."""

    def __init__(self, owner: Alertmanager, url: str) -> None:
        self.owner = owner
        self.url = alerts_url(url)
        self.shown = safe_url(self.url)  # for logs: no user:password
        self.queue: deque[dict[str, Any]] = deque()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.session = owner.session_factory()

    def put(self, alert: dict[str, Any]) -> bool:
        with self.cond:
            dropped = False
            if len(self.queue) >= self.owner.queue_size:
                self.queue.popleft()
                dropped = True
            self.queue.append(alert)
            self.cond.notify()
        if dropped:
            self.owner._fail("queue_full")
        return not dropped

    def run(self) -> None:
        owner = self.owner
        while True:
            with self.cond:
                while not self.queue and not owner._stopping.is_set():
                    self.cond.wait()
                if not self.queue:
                    return  # stopping and nothing left
                n = min(len(self.queue), owner.batch_size)
                batch = [self.queue.popleft() for _ in range(n)]
            self._deliver(batch)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        owner = self.owner
        attempt = 0
        while True:
            reason, retry = self._post(batch)
            if reason is None:
                owner._sent(len(batch))
                return
            owner._fail(reason)
            attempt += 1
            if not retry:
                owner._fail("retries_exhausted", len(batch))
                return
            if attempt >= owner.max_attempts:
                owner._fail("retries_exhausted", len(batch))
                owner._log.warning(
                    "alerts dropped after retries", url=self.shown, alerts=len(batch), reason=reason
                )
                return
            if owner._stopping.is_set() and owner._deadline_passed():
                owner._fail("shutdown", len(batch))
                return
            delay = min(owner.backoff_max, owner.backoff_base * (2 ** (attempt - 1)))
            delay *= 0.5 + random.random() / 2
            owner._wake.wait(delay)

    def _post(self, batch: list[dict[str, Any]]) -> tuple[str | None, bool]:
        """(failure reason or None, whether retrying can help)."""
        try:
            resp = self.session.post(self.url, json=batch, timeout=self.owner.timeout)
        except requests.Timeout:
            return "timeout", True
        except requests.RequestException as e:
            self.owner._log.warning("alertmanager unreachable", url=self.shown, error=str(e)[:200])
            return "connection", True
        if 200 <= resp.status_code < 300:
            return None, False
        self.owner._log.warning(
            "alertmanager refused alerts",
            url=self.shown,
            status=resp.status_code,
            body=resp.text[:200],
        )
        if resp.status_code >= 500:
            return "http_5xx", True
        # 429 asks to come back later; any other 4xx refuses the alerts as they are
        return "http_4xx", resp.status_code == 429


class Alertmanager:
    """The notifier: ``send(alert)`` from the pipeline, ``start()`` once,
    ``close(timeout)`` at shutdown (delivers what is queued until then)."""

    def __init__(
        self,
        urls: Sequence[str],
        metrics: AuditMetrics | None = None,
        *,
        timeout: float = 10.0,
        queue_size: int = 10_000,
        batch_size: int = 64,
        max_attempts: int = 8,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        session_factory: Callable[[], requests.Session] = requests.Session,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or max_attempts < 1:
            raise ValueError("queue_size, batch_size and max_attempts must be >= 1")
        self.timeout = timeout
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.session_factory = session_factory
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set to cut backoff waits short at shutdown
        self._deadline = float("inf")
        self._log = RateLimitedLog(log)
        self.sent = 0
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self.targets = [_Target(self, u) for u in urls]
        if metrics is not None:
            metrics.add_state(self.collect)

    # --- the pipeline side --------------------------------------------------

    def send(self, alert: dict[str, Any]) -> bool:
        """Queue ``alert`` for every Alertmanager; False when a queue was full
        (its oldest alert was dropped to make room) or after close()."""
        if self._stopping.is_set():
            self._fail("shutdown")
            return False
        ok = True
        for t in self.targets:
            ok = t.put(alert) and ok
        return ok

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        for t in self.targets:
            if t.thread is None:
                t.thread = threading.Thread(
                    target=t.run, name=f"alertmanager {t.shown}", daemon=True
                )
                t.thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking alerts; deliver the queued ones for up to ``timeout``
        seconds; count whatever is left as ``shutdown`` failures."""
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        for t in self.targets:
            with t.cond:
                t.cond.notify_all()
        for t in self.targets:
            if t.thread is not None:
                t.thread.join(max(0.0, self._deadline - time.monotonic()))
        self._wake.set()
        for t in self.targets:
            if t.thread is not None:
                t.thread.join(1.0)
            with t.cond:
                left = len(t.queue)
                t.queue.clear()
            if left:
                self._fail("shutdown", left)
            t.session.close()

    def _deadline_passed(self) -> bool:
        return time.monotonic() >= self._deadline

    # --- accounting ----------------------------------------------------------------

    def _sent(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def _fail(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.failures[reason] = self.failures.get(reason, 0) + n

    def queue_length(self) -> int:
        return sum(len(t.queue) for t in self.targets)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            sent = self.sent
            failures = dict(self.failures)
        s = CounterMetricFamily(
            "kube_audit_alertmanager_alerts_sent",
            "Alerts accepted by an Alertmanager (one per alert and Alertmanager).",
        )
        s.add_metric((), float(sent))
        f = CounterMetricFamily(
            "kube_audit_alertmanager_failures",
            "Failed POST attempts (connection, timeout, http_4xx, http_5xx) and alerts "
            "given up (queue_full, retries_exhausted, shutdown).",
            labels=("reason",),
        )
        for reason, n in failures.items():
            f.add_metric((reason,), float(n))
        q = GaugeMetricFamily(
            "kube_audit_alertmanager_queue_length", "Alerts waiting to be sent, all Alertmanagers."
        )
        q.add_metric((), float(self.queue_length()))
        return [s, f, q]
