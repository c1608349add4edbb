"""Shared state in Redis or Valkey (``state.url``), one round trip per call.

- :meth:`RedisStore.observe` sends a batch's observations as one EVALSHA of
  :data:`~.scripts.OBSERVE`, which applies them in order, atomically.
- :meth:`RedisStore.seen` asks with one EVALSHA of :data:`~.scripts.SEEN`
  which dedupe keys another replica (or this one) already took;
  :meth:`RedisStore.remember` records a batch's keys with
  ``state.dedupe_ttl`` once the batch is stored (one EVALSHA of
  :data:`~.scripts.REMEMBER`).

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
import functools
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
from .ops import DedupeKey, Observation, RuleSpec
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
            "observe": scripts.OBSERVE,
            "seen": scripts.SEEN,
            "remember": scripts.REMEMBER,
        }
        self._shas = {name: _sha(text) for name, text in self._scripts.items()}
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
            keys: list[Any] = []
            args: list[Any] = []
            for o in observations:
                self._encode(o, keys, args)
            return [bool(r) for r in self._script("observe", keys, args)]

        found: list[bool] | None = self._attempt("detect", run)
        return found

    def seen(self, keys: list[DedupeKey]) -> set[DedupeKey] | None:
        if not keys:
            return set()

        def run() -> set[DedupeKey]:
            found = self._script("seen", self._dedupe_keys(keys), [])
            return {keys[int(i) - 1] for i in found}

        taken: set[DedupeKey] | None = self._attempt("dedupe_check", run)
        return taken

    def remember(self, keys: list[DedupeKey]) -> bool:
        if not keys:
            return True

        def run() -> bool:
            self._script("remember", self._dedupe_keys(keys), [self.dedupe_ttl_ms])
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

    def _dedupe_keys(self, keys: list[DedupeKey]) -> list[str]:
        # a stage never holds "|", nor a float's repr: the last two split it
        head = self.prefix + "dedupe:"
        return [f"{head}{audit_id}|{stage}|{ts!r}" for audit_id, stage, ts in keys]

    def _script(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        """One EVALSHA; a restarted (or flushed) server forgot the scripts:
        they are loaded again and the call repeated (a missing script ran
        nowhere)."""
        try:
            return self.client.evalsha(self._shas[name], len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.client.script_load(self._scripts[name])
            return self.client.evalsha(self._shas[name], len(keys), *keys, *args)

    def _encode(self, o: Observation, keys: list[Any], args: list[Any]) -> None:
        """``o`` as KEYS and ARGV of the OBSERVE script (see scripts.py)."""
        spec = o.spec
        rule = _rule_name(spec)
        keys.append(self._key("wm", rule))
        life = int(spec.window * 1000) + self.grace_ms
        head = (repr(o.t), repr(spec.window), life)
        kind = spec.kind
        if kind == "threshold":
            keys.append(self._group("threshold", rule, o.group))
            args += ("t", *head, spec.count, "", o.member)
        elif kind == "distinct":
            keys.append(self._group("distinct", rule, o.group))
            args += ("d", *head, spec.count, o.value, o.member)
        elif kind == "sequence":
            mask = "".join("1" if o.steps >> i & 1 else "0" for i in range(len(spec.counts)))
            keys.append(self._group("sequence", rule, o.group))
            args += ("s", *head, mask, ",".join(str(c) for c in spec.counts), o.member)
        else:
            pair = self._group("first_seen", rule, o.group) + b":" + orjson.dumps(o.value)
            keys += (self._key("started", rule), pair)
            args += ("f", *head, repr(spec.learning), "", o.member)

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


@functools.cache
def _rule_name(spec: RuleSpec) -> str:
    """The rule's id and a digest of its parameters: a rule changed (a
    rolling update to another window, count or steps) starts afresh instead
    of reading state it would misread."""
    digest = hashlib.sha1(repr(spec).encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{spec.rule}@{digest}"


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
