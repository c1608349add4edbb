"""Shared state in Redis or Valkey (``state.url``), one round trip per call.

- :meth:`RedisStore.observe` sends a batch's observations as one pipeline of
  EVALSHA calls (the scripts in :mod:`.scripts`, each atomic on the server).
- :meth:`RedisStore.seen` asks with one MGET which dedupe keys another
  replica (or this one) already took; :meth:`RedisStore.remember` records a
  batch's keys with ``state.dedupe_ttl`` once the batch is stored.

It never raises on the store's account: a call that fails (refused,
timed out past ``state.timeout``, an error reply) is counted in
``kube_audit_state_operations_failed_total{op}``, answers ``None`` and marks
the store down (``kube_audit_state_backend_up`` 0, one log line). While down,
calls answer ``None`` at once, counted in
``kube_audit_state_fallbacks_total{op}``, until the next attempt, after a
backoff that doubles from 0.5 s to 30 s; the first call that succeeds marks
it up again (one log line). Error text never carries the URL's password.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..logs import safe_url
from . import scripts
from .ops import DedupeKey, Observation
from .settings import StateSettings

log = logging.getLogger(__name__)

OPS = ("connect", "detect", "dedupe_check", "dedupe_mark")
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0


class RedisStore:
    """:class:`~exporter.state.ops.SharedState` on Redis/Valkey."""

    def __init__(
        self,
        settings: StateSettings,
        *,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self.where = safe_url(settings.url)
        self._password = unquote(urlsplit(settings.url).password or "")
        self.client = client if client is not None else _client(settings)
        self.clock = clock
        self._scripts = {
            "threshold": scripts.THRESHOLD,
            "distinct": scripts.DISTINCT,
            "sequence": scripts.SEQUENCE,
            "first_seen": scripts.FIRST_SEEN,
        }
        self._shas = {kind: _sha(text) for kind, text in self._scripts.items()}
        self.grace_ms = int(settings.grace * 1000)
        self.dedupe_ttl_ms = max(1, int(settings.dedupe_ttl * 1000))
        self._lock = threading.Lock()
        self.up = True
        self._backoff = 0.0
        self._next_attempt = 0.0
        self.failed = dict.fromkeys(OPS, 0)
        self.fallbacks = dict.fromkeys(OPS, 0)
        self.round_trips = dict.fromkeys(OPS, 0)

    # --- the interface ----------------------------------------------------------

    def observe(self, observations: list[Observation]) -> list[bool] | None:
        if not observations:
            return []

        def run() -> list[bool]:
            pipe = self.client.pipeline(transaction=False)
            for o in observations:
                self._call(pipe, o)
            try:
                replies = pipe.execute()
            except redis.exceptions.NoScriptError:
                # a restarted (or flushed) server forgot the scripts: a script
                # that is missing ran nowhere, so the batch runs again whole
                for text in self._scripts.values():
                    self.client.script_load(text)
                pipe = self.client.pipeline(transaction=False)
                for o in observations:
                    self._call(pipe, o)
                replies = pipe.execute()
            return [bool(r) for r in replies]

        found: list[bool] | None = self._attempt("detect", run)
        return found

    def seen(self, keys: list[DedupeKey]) -> set[DedupeKey] | None:
        if not keys:
            return set()

        def run() -> set[DedupeKey]:
            found = self.client.mget([self._dedupe_key(k) for k in keys])
            return {k for k, v in zip(keys, found, strict=True) if v is not None}

        taken: set[DedupeKey] | None = self._attempt("dedupe_check", run)
        return taken

    def remember(self, keys: list[DedupeKey]) -> bool:
        if not keys:
            return True

        def run() -> bool:
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.set(self._dedupe_key(k), b"1", px=self.dedupe_ttl_ms)
            pipe.execute()
            return True

        return self._attempt("dedupe_mark", run) is not None

    def check(self) -> bool:
        """One PING (at start-up): True when the store answers. Failing
        marks it down like any other call; nothing waits for it."""
        return self._attempt("connect", self.client.ping) is not None

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.close()

    # --- keys and calls ----------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _group(self, kind: str, rule: str, group: tuple[str, ...]) -> bytes:
        # JSON keeps any character in a group value from merging two groups
        return self._key(kind, rule).encode() + b":" + orjson.dumps(group)

    def _dedupe_key(self, k: DedupeKey) -> bytes:
        return self._key("dedupe").encode() + b":" + orjson.dumps([k[0], k[1], repr(k[2])])

    def _call(self, pipe: Any, o: Observation) -> None:
        spec = o.spec
        wm = self._key("wm", spec.rule)
        life = str(int(spec.window * 1000) + self.grace_ms)
        t = repr(o.t)
        window = repr(spec.window)
        sha = self._shas[spec.kind]
        if spec.kind == "threshold":
            keys: list[Any] = [wm, self._group("threshold", spec.rule, o.group)]
            args: list[Any] = [t, window, life, spec.count, o.member]
        elif spec.kind == "distinct":
            keys = [wm, self._group("distinct", spec.rule, o.group)]
            args = [t, window, life, spec.count, o.value]
        elif spec.kind == "sequence":
            mask = "".join("1" if o.steps >> i & 1 else "0" for i in range(len(spec.counts)))
            keys = [wm, self._group("sequence", spec.rule, o.group)]
            args = [t, window, life, mask, ",".join(str(c) for c in spec.counts)]
        else:
            pair = self._group("first_seen", spec.rule, o.group) + b":" + orjson.dumps(o.value)
            keys = [wm, self._key("started", spec.rule), pair]
            args = [t, window, life, repr(spec.learning)]
        pipe.evalsha(sha, len(keys), *keys, *args)

    # --- health ------------------------------------------------------------------

    def _attempt(self, op: str, run: Callable[[], Any]) -> Any:
        with self._lock:
            if not self.up and self.clock() < self._next_attempt:
                self.fallbacks[op] += 1
                return None
        try:
            result = run()
        except (redis.RedisError, OSError) as e:
            self._down(op, e)
            return None
        with self._lock:
            self.round_trips[op] += 1
            if not self.up:
                self.up = True
                self._backoff = 0.0
                log.warning(
                    "shared state reachable again: state and dedupe are shared again",
                    extra={"state_url": self.where},
                )
        return result

    def _down(self, op: str, e: BaseException) -> None:
        with self._lock:
            self.failed[op] += 1
            self.fallbacks[op] += 1
            self._backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, self._backoff * 2))
            self._next_attempt = self.clock() + self._backoff * random.uniform(0.8, 1.0)
            if not self.up:
                return
            self.up = False
        error = f"{type(e).__name__}: {e}"
        if self._password:
            error = error.replace(self._password, "***")
        log.warning(
            "shared state unreachable: stateful rules and dedupe use this process's "
            "memory until it is back",
            extra={"state_url": self.where, "error": error[:300]},
        )

    def collect(self) -> Iterable[Metric]:
        """The store's health, read at scrape time."""
        up = GaugeMetricFamily(
            "kube_audit_state_backend_up",
            "1 while the shared state store (state.url) answers, 0 while stateful "
            "detection and dedupe run on this process's memory.",
        )
        failed = CounterMetricFamily(
            "kube_audit_state_operations_failed",
            "Round trips to the shared state store that failed (refused, timed out, error reply).",
            labels=("op",),
        )
        fallbacks = CounterMetricFamily(
            "kube_audit_state_fallbacks",
            "Batches whose state went to this process's memory instead of the shared "
            "store (a failed round trip, or none tried while it is down).",
            labels=("op",),
        )
        trips = CounterMetricFamily(
            "kube_audit_state_round_trips",
            "Successful round trips to the shared state store.",
            labels=("op",),
        )
        with self._lock:
            up.add_metric((), 1.0 if self.up else 0.0)
            for op in OPS:
                failed.add_metric((op,), float(self.failed[op]))
                fallbacks.add_metric((op,), float(self.fallbacks[op]))
                trips.add_metric((op,), float(self.round_trips[op]))
        return [up, failed, fallbacks, trips]


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _client(settings: StateSettings) -> redis.Redis:
    """A client that fails fast: short timeouts, no retries of its own (the
    store's backoff decides when to try again)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": 30,
    }
    if settings.tls_ca_file and urlsplit(settings.url).scheme == "rediss":
        kwargs["ssl_ca_certs"] = settings.tls_ca_file
    return redis.Redis.from_url(settings.url, **kwargs)
