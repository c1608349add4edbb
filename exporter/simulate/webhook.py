"""Posting audit events as the API server's webhook backend does.

Batching follows k8s.io/apiserver plugin/pkg/audit/buffered: up to 400 events
per batch, or what arrived within 30 s; 10 batches/s with a burst of 15;
each batch sent on its own. Retries come in two layers. Inside each
attempt, client-go's REST client (rest/request.go, checkWait) sends a 429 or
5xx answer that carries ``Retry-After: N`` again after N seconds, up to 10
times. Around it, the audit webhook (pkg/util/webhook, plugin/pkg/audit/
webhook) retries every error, any non-2xx answer included, with
wait.Backoff{10s, factor 1.5, jitter 0.2, 5 steps}, then drops the batch.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson
import requests

from .cluster import K8S_VERSION, PLATFORM

log = logging.getLogger(__name__)

BATCH_MAX_SIZE = 400
BATCH_MAX_WAIT = 30.0
THROTTLE_QPS = 10.0
THROTTLE_BURST = 15
INITIAL_BACKOFF = 10.0
BACKOFF_FACTOR = 1.5
BACKOFF_JITTER = 0.2
ATTEMPTS = 5
RETRY_AFTER_MAX = 10  # client-go's Request.maxRetries
REQUEST_TIMEOUT = 30.0
USER_AGENT = f"kube-apiserver/{K8S_VERSION} {PLATFORM}"

# How the webhook backend encodes a batch (plugin/pkg/audit/webhook,
# processEvents): it appends each event to an EventList and POSTs the list
# through a REST client with the audit group's legacy codec. The codec stamps
# kind/apiVersion on the object it encodes, the list, not on its items: they
# are the API server's internal events, whose TypeMeta is never set, so every
# item arrives without "kind" and "apiVersion". ListMeta has no omitempty,
# hence "metadata":{}.
_LIST_HEAD = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":['
_LIST_TAIL = b"]}"
_EVENT_HEAD = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'


def event_list(lines: Sequence[bytes]) -> bytes:
    """An EventList body from JSON lines, its items without kind/apiVersion."""
    cut = len(_EVENT_HEAD)
    items = []
    for line in lines:
        line = line.rstrip(b"\n")
        if line.startswith(_EVENT_HEAD):
            items.append(b"{" + line[cut:])  # the simulator's lines: no need to re-encode
        else:
            obj = orjson.loads(line)
            obj.pop("kind", None)
            obj.pop("apiVersion", None)
            items.append(orjson.dumps(obj))
    return _LIST_HEAD + b",".join(items) + _LIST_TAIL


@dataclass
class SendStats:
    """What a :class:`WebhookSender` did."""

    events: int = 0  # accepted (answered 2xx)
    batches: int = 0  # accepted
    posts: int = 0  # HTTP requests, retries included
    retries: int = 0  # after a backoff
    retry_after: int = 0  # after waiting as a Retry-After header asked
    dropped_batches: int = 0  # given up after the last attempt, as the API server does
    dropped_events: int = 0
    sizes: list[int] = field(default_factory=list)  # events per accepted batch


class TokenBucket:
    """client-go's token bucket rate limiter (flowcontrol.NewTokenBucketRateLimiter)."""

    def __init__(
        self, qps: float, burst: int, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.qps = qps
        self.burst = float(max(1, burst))
        self.tokens = self.burst
        self.clock = clock
        self.sleep = sleep
        self.last = clock()

    def accept(self) -> None:
        """Take a token, waiting for one when there is none."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.qps)
        self.last = now
        if self.tokens < 1.0:
            self.sleep((1.0 - self.tokens) / self.qps)
            self.last = self.clock()
            self.tokens = 1.0
        self.tokens -= 1.0


class WebhookSender:
    """Posts events as the API server's buffered webhook backend does.

    A batch holds up to ``batch_max_size`` events; it is also sent when
    ``batch_max_wait`` seconds passed since it began collecting (this matters
    when events are paced in real time). Batches are throttled by a token
    bucket (``throttle_qps`` 0 disables it) and sent on up to ``concurrency``
    keep-alive connections. An answer 429 or 5xx with ``Retry-After: N`` is
    retried after N seconds (up to 10 times per attempt); a batch still not
    answered 200-206 is retried after 10 s, 15 s, 22.5 s and 33.75 s (each
    plus up to 20 % jitter; scaled by ``initial_backoff``) and dropped after
    the fifth attempt.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_max_size: int = BATCH_MAX_SIZE,
        batch_max_wait: float = BATCH_MAX_WAIT,
        throttle_qps: float = THROTTLE_QPS,
        throttle_burst: int = THROTTLE_BURST,
        concurrency: int = 4,
        initial_backoff: float = INITIAL_BACKOFF,
        attempts: int = ATTEMPTS,
        timeout: float = REQUEST_TIMEOUT,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter_seed: int | None = None,
    ) -> None:
        if batch_max_size < 1:
            raise ValueError("batch_max_size: must be >= 1")
        if batch_max_wait <= 0:
            raise ValueError("batch_max_wait: must be > 0")
        if attempts < 1:
            raise ValueError("attempts: must be >= 1")
        if concurrency < 1:
            raise ValueError("concurrency: must be >= 1")
        if initial_backoff < 0:
            raise ValueError("initial_backoff: must be >= 0")
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together")
        self.url = url
        self.batch_max_size = batch_max_size
        self.batch_max_wait = batch_max_wait
        self.concurrency = concurrency
        self.initial_backoff = initial_backoff
        self.attempts = attempts
        self.timeout = timeout
        self.verify: bool | str = ca_file or True
        self.cert = (cert_file, key_file) if cert_file and key_file else None
        self.clock = clock
        self.sleep = sleep
        self.throttle = (
            TokenBucket(throttle_qps, throttle_burst, clock, sleep) if throttle_qps > 0 else None
        )
        self.stats = SendStats()
        self._jitter = random.Random(jitter_seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        """This thread's keep-alive connection."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["Content-Type"] = "application/json"
            session.headers["User-Agent"] = USER_AGENT
            session.headers["Accept"] = "application/json, */*"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close the connections (a later post opens new ones)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
            self._local = threading.local()
        for session in sessions:
            session.close()

    def backoff(self) -> Iterator[float]:
        """The waits between attempts: wait.Backoff{initial, x1.5, jitter 0.2}."""
        delay = self.initial_backoff
        for _ in range(self.attempts - 1):
            yield delay + self._jitter.random() * BACKOFF_JITTER * delay
            delay *= BACKOFF_FACTOR

    def post(self, lines: Sequence[bytes]) -> bool:
        """POST one batch, retrying as the API server does; True when accepted."""
        body = event_list(lines)
        waits = self.backoff()
        attempt = 0
        while True:
            attempt += 1
            problem = self._attempt(body)
            if not problem:
                with self._lock:
                    self.stats.events += len(lines)
                    self.stats.batches += 1
                    self.stats.sizes.append(len(lines))
                return True
            wait = next(waits, None)
            if wait is None:
                log.error(
                    "audit webhook batch dropped",
                    extra={"events": len(lines), "attempts": attempt, "error": problem[:300]},
                )
                with self._lock:
                    self.stats.dropped_batches += 1
                    self.stats.dropped_events += len(lines)
                return False
            log.warning(
                "audit webhook call failed, retrying",
                extra={"attempt": attempt, "wait_seconds": round(wait, 3), "error": problem[:300]},
            )
            with self._lock:
                self.stats.retries += 1
            self.sleep(wait)

    def _attempt(self, body: bytes) -> str:
        """One attempt (client-go's Request.Do): "" when answered 2xx, else the problem."""
        for retry in range(RETRY_AFTER_MAX + 1):
            with self._lock:
                self.stats.posts += 1
            try:
                # verify and cert per request: requests lets REQUESTS_CA_BUNDLE
                # override a session's verify, never an explicit argument
                response = self._session().post(
                    self.url, data=body, timeout=self.timeout, verify=self.verify, cert=self.cert
                )
            except requests.RequestException as e:
                return f"{type(e).__name__}: {e}"
            code = response.status_code
            response.close()
            if 200 <= code <= 206:
                return ""
            wait = response.headers.get("Retry-After", "")
            if retry < RETRY_AFTER_MAX and (code == 429 or code >= 500) and wait.isdigit():
                with self._lock:
                    self.stats.retry_after += 1
                self.sleep(float(wait))
                continue
            return f"HTTP {code}"
        raise AssertionError("unreachable")  # the last round returns

    def send(self, events: Iterable[tuple[float | None, bytes]]) -> SendStats:
        """Send ``(due, line)`` pairs, ``due`` being when the event happens on
        ``clock`` (None: at once). Returns once every batch is answered or dropped."""
        pool = ThreadPoolExecutor(self.concurrency) if self.concurrency > 1 else None
        slots = threading.BoundedSemaphore(self.concurrency * 2)
        pending: list[Future[bool]] = []
        clock, sleep = self.clock, self.sleep
        max_size, max_wait = self.batch_max_size, self.batch_max_wait

        def dispatch(batch: list[bytes]) -> None:
            if self.throttle is not None:
                self.throttle.accept()
            if pool is None:
                self.post(batch)
                return
            slots.acquire()  # bounded: the generator waits for slow answers
            future = pool.submit(self.post, batch)
            future.add_done_callback(lambda _: slots.release())
            pending.append(future)
            if len(pending) > 4 * self.concurrency:
                pending[:] = [f for f in pending if not f.done()]

        try:
            batch: list[bytes] = []
            deadline = clock() + max_wait
            for due, line in events:
                if due is not None:
                    now = clock()
                    while due > now:
                        if deadline <= due:
                            # the batch timer fires before the next event
                            if deadline > now:
                                sleep(deadline - now)
                            if batch:
                                dispatch(batch)
                                batch = []
                            deadline = clock() + max_wait
                        else:
                            sleep(due - now)
                        now = clock()
                batch.append(line)
                if len(batch) >= max_size or (due is None and clock() >= deadline):
                    dispatch(batch)
                    batch = []
                    deadline = clock() + max_wait
            if batch:
                dispatch(batch)
            for future in pending:
                future.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            self.close()
        return self.stats
