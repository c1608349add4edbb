"""The Loki output: a pipeline Sink in front of a disk spool and sender threads.

``admit`` (the pipeline's thread, before detection sees the batch) says
whether the spool has room for a batch, from its events' sizes; when it is
full it refuses, so the webhook answers 503 and the log tailer keeps its
checkpoint. ``submit`` then redacts, builds the entries and appends them to
the spool, with the source's mark (its resume position) in the same write.

The sender thread reads the spool in order and hands each record to one of
``parallelism`` shards, chosen by a hash of its stream's labels (as
Alloy's loki.write shards its queue). Each shard cuts its batches at
``batch_bytes`` or after ``batch_wait`` and pushes them from its own
thread, one at a time, so one stream's entries reach Loki in spool order
while other streams' pushes are in flight beside it. The spool is
acknowledged up to the first record not yet answered for, and the records
after it that were answered for are acknowledged one by one (the spool's
``acked`` file): nothing leaves it before Loki has answered for it, and
after a kill -9 only the records whose answer came after the last ack
are sent again (at most the ``parallelism`` pushes in flight). What each
answer means:

- 2xx: sent. A 2xx can hide refused entries (Loki's ingester reports only
  the last stream's error), so the refusal counts are a lower bound.
- 260 (Loki 3.2+ blocked ingestion, or any 2xx that says so): refused,
  counted as ``blocked_ingestion``.
- 400 naming disallowed structured metadata (Loki 2.9's default, Loki 3 on
  a schema before v13): the same entries again without metadata, and every
  entry from then on; said once in the log and in the metrics.
- 400 (and other final 4xx): Loki kept the valid entries; the refused ones
  are counted by reason (``too_far_behind`` among them) and logged, never
  retried.
- 413: the batch is split in halves and each half pushed; a single entry
  that is still too large is counted (reason ``too_large``) and logged.
- 408, 425, 429, 5xx, timeouts (the connect and read timeouts, and the
  deadline of the whole request), connection errors: the same batch again
  after a jittered exponential backoff (``backoff_min`` doubling up to
  ``backoff_max``, at least any Retry-After), without limit unless
  ``max_retries`` says otherwise.
- 401, 403, 404, 405: the configuration is wrong, or a gateway is in a
  rollout. The shard says so at error level, shows ``loki_sender_up 0``,
  and pushes again after the same backoff, or at once when a credential
  file changes; the spool keeps filling meanwhile.

The same machinery carries the OTLP output (exporter/otlp), with its own
:class:`~exporter.loki.codec.Codec`.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence

import requests
from prometheus_client.core import Metric

from ..event import AuditEvent
from ..logs import RateLimitedLog, safe_url
from ..metrics import AuditMetrics
from ..redact import Redactor
from . import client as c
from .codec import Codec, LokiCodec
from .encode import Body
from .entry import Entry, EntryBuilder, MetadataHook
from .metrics import LokiMetrics
from .settings import LokiSettings
from .spool import Spool
from .spoolstate import Position

log = logging.getLogger(__name__)

# How often a stopped sender looks for changed credential files.
CREDENTIALS_POLL = 1.0


# What an entry adds to its event's JSON line, at most, for the room check:
# stream labels, timestamp, structured metadata and the spool's record header.
ENTRY_OVERHEAD = 512
# The room check's guess for an event without its original line (a webhook
# item), until entries have been built: then it is their mean size.
FIRST_ENTRY_GUESS = 4096


class LokiSink:
    """Implements :class:`exporter.pipeline.Sink` for Loki."""

    keeps_marks = True

    def __init__(
        self,
        settings: LokiSettings,
        metrics: AuditMetrics | None = None,
        *,
        metadata_hook: MetadataHook | None = None,
        redact: bool | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        session: requests.Session | None = None,
        start: bool = True,
        codec: Codec | None = None,
    ) -> None:
        """``redact`` defaults to ``settings.redact``; pass False when a
        :class:`~exporter.redact.Redactor` already runs as a pipeline
        processor (running it twice is harmless, only slower).
        ``metadata_hook`` adds structured metadata per event (the detection
        stage's).  ``codec`` is the wire protocol, Loki's push API unless
        given (exporter/otlp)."""
        problems = settings.problems()
        if problems:
            raise c.LokiSetupError("; ".join(problems))
        self.settings = settings
        self.clock = clock
        self.rng = rng
        self.builder = EntryBuilder(
            settings,
            metadata_hook,
            bounds=metrics.bounds if metrics is not None else None,
            on_fold=metrics.loki_fold if metrics is not None else None,
        )
        do_redact = settings.redact if redact is None else redact
        self.redactor = Redactor(settings.redact_paths) if do_redact else None
        self.codec: Codec = codec if codec is not None else LokiCodec(self.builder)
        self.name = self.codec.name
        # One client per shard: each makes one request at a time.
        self.clients = [c.LokiClient(settings, session) for _ in range(settings.parallelism)]
        self.client = self.clients[0]
        self.spool = Spool(
            settings.spool_dir,
            max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.segment_bytes,
            fsync=settings.fsync,
            fsync_interval=settings.fsync_interval,
            clock=clock,
        )
        self.stats = LokiMetrics(self.name, "" if self.name == "loki" else self.name + "_")
        # Entries go without structured metadata: Loki refused it (the
        # spooled ones are stripped when sent), or the settings say so.
        self._strip = False
        if not settings.structured_metadata:
            self.stats.metadata_off()
        # (shard, batch, finished) of the batches the shards are done with,
        # under spool.changed.
        self._done: list[tuple[_Shard, _Batch, bool]] = []
        if metrics is not None:
            metrics.add_state(self.collect)
        self._warn = RateLimitedLog(log, burst=5, interval=60.0)
        self._closing = False
        # Callers waiting in drain(): the sender sends what it holds without
        # waiting for batch_wait, since no more is coming for that batch.
        self._draining = 0
        self._stop = threading.Event()
        self.stopped_reason: str | None = None
        # Entries the sender has read and holds for the next batch.
        self.pending_entries = 0
        # When Loki last answered for a batch (monotonic), and why the last
        # push failed: what a stall timeout judges and reports.
        self.answered_at = time.monotonic()
        self.last_failure = ""
        self.stalled = False
        self._abandoned = False
        self._mean_entry = FIRST_ENTRY_GUESS
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-sender", daemon=True)
        backlog = self.spool.stats()
        log.info(
            f"{self.name} output enabled",
            extra={
                "url": safe_url(settings.push_url),
                "tenant": settings.tenant or "-",
                "format": settings.format,
                "spool_dir": settings.spool_dir,
                "spool_entries": backlog.entries,
                "redaction": "on" if do_redact else "upstream" if settings.redact else "off",
            },
        )
        if settings.insecure_skip_verify:
            log.warning(f"{self.name}: TLS certificate verification is off (insecure_skip_verify)")
        if start:
            self._thread.start()

    # --- the pipeline side ---------------------------------------------------

    def build(self, events: Sequence[AuditEvent]) -> list[Entry]:
        """The Loki entries for ``events`` (redacted first when configured)."""
        if self.redactor is not None:
            redact = self.redactor.redact
            for ev in events:
                redact(ev)
        build = self.builder.build
        return [build(ev) for ev in events]

    def admit(self, events: Sequence[AuditEvent]) -> bool:
        """Whether the spool has room for ``events``, estimated from their
        original lines (an event without one, from a webhook EventList,
        counts as the mean entry so far: it is not serialised twice). An
        admitted batch is appended even when its entries turn out larger,
        so the spool overshoots its limit by less than one batch."""
        if not events:
            return True
        nbytes = ENTRY_OVERHEAD * len(events)
        for ev in events:
            raw = ev.raw
            nbytes += self._mean_entry if raw is None else len(raw)
        if self.spool.admits(nbytes):
            return True
        self.stats.full()
        self._warn.warning(
            "spool full: refusing events until Loki catches up",
            events=len(events),
            spool_bytes=self.spool.stats().disk_bytes,
            spool_max_bytes=self.settings.spool_max_bytes,
        )
        return False

    def submit(self, events: Sequence[AuditEvent], mark: bytes | None = None) -> bool:
        """Append admitted ``events`` and ``mark`` to the spool in one write;
        False only when the write failed (logged by the spool)."""
        if self.redactor is not None:
            redact = self.redactor.redact
            for ev in events:
                redact(ev)
        record = self.codec.record
        payloads = [record(ev) for ev in events]
        if payloads:
            self._mean_entry = sum(map(len, payloads)) // len(payloads)
        return self.spool.append(payloads, mark, check_room=False)

    def wait_for_room(self, timeout: float, stall: float | None = None) -> bool:
        """Block until the spool is at most half full (for replay, which can
        wait instead of failing); False on timeout, or when Loki answered
        nothing for ``stall`` seconds (then :attr:`stalled` is set)."""
        start = time.monotonic()
        deadline = start + timeout
        half = self.settings.spool_max_bytes // 2
        with self.spool.changed:
            while not self.spool.has_room(half):
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set() or self._stalled_since(start, stall):
                    return False
                self.spool.changed.wait(min(left, 1.0, stall or 1.0))
        return True

    def drain(self, timeout: float | None = None, stall: float | None = None) -> bool:
        """Wait until everything spooled is acknowledged (True), Loki
        refused the credentials (401, 403: a 404 or 405 may be a gateway's
        rollout, left to ``stall``), ``timeout`` passed, or Loki
        answered nothing for ``stall`` seconds (False; :attr:`stalled` says
        which). For replay, which ends only when its events are in Loki."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        with self.spool.changed:
            self._draining += 1
            self.spool.changed.notify_all()
            try:
                while not self.spool.empty():
                    if self.stopped_reason in _CREDENTIALS or not self._thread.is_alive():
                        return False
                    if self._stalled_since(start, stall):
                        return False
                    left = 1.0 if deadline is None else deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self.spool.changed.wait(min(left, 1.0, stall or 1.0))
            finally:
                self._draining -= 1
        return True

    def _stalled_since(self, start: float, stall: float | None) -> bool:
        """Whether Loki has answered nothing for ``stall`` seconds, counted
        from the later of ``start`` and its last answer."""
        idle = time.monotonic() - max(start, self.answered_at)
        self.stalled = stall is not None and stall > 0 and idle >= stall
        return self.stalled

    def undelivered(self) -> int:
        """Entries spooled and not yet acknowledged by Loki."""
        return self.spool.stats().entries

    def abandon(self) -> None:
        """Stop at once without waiting for Loki (Ctrl-C, a stall): what is
        not acknowledged stays in the spool, a push in flight is left to its
        timeout in a daemon thread."""
        self._abandoned = True
        self._closing = True
        self._stop.set()
        self.wake()
        self._thread.join(0.5)

    def wake(self) -> None:
        """Make the sender look at the clock and the spool again now."""
        with self.spool.changed:
            self.spool.changed.notify_all()

    def close(self, timeout: float = 10.0) -> bool:
        """Send what is spooled, for at most ``timeout`` seconds, then stop.
        True when everything was acknowledged; the rest stays in the spool
        for the next start."""
        self._closing = True
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._stop.set()
        self.wake()
        if self._thread.is_alive():
            # A push in flight ends within the HTTP timeouts.
            self._thread.join(self.settings.connect_timeout + self.settings.timeout)
        drained = self.spool.empty()
        self.spool.close()
        left = self.spool.stats()
        if not drained and not self._abandoned:  # the one who abandoned it reports
            log.warning(
                f"{self.name} output stopped with entries left in the spool; "
                "the next start sends them",
                extra={"spool_entries": left.entries, "spool_bytes": left.bytes},
            )
        return drained

    def collect(self) -> list[Metric]:
        self.stats.entries_shrunk = float(self.builder.shrunk)
        return list(self.stats.collect(self.spool.stats(), self.clock))

    # --- the sender thread ----------------------------------------------------

    def _run(self) -> None:
        try:
            self._send()
        except Exception:
            if self._stop.is_set():
                return  # abandoned: its spool may be gone already
            log.exception(f"{self.name} sender failed; entries stay in the spool")
            with self.stats.lock:
                self.stats.sender_up = 0.0

    def _send(self) -> None:
        """Read the spool in order, hand each record to its stream's shard,
        start each shard's batch when it is due and the shard is free, and
        acknowledge the spool up to the first record not yet answered for."""
        spool = self.spool
        batch_bytes = self.settings.batch_bytes
        batch_wait = self.settings.batch_wait
        shards = [_Shard(self, i, client) for i, client in enumerate(self.clients)]
        route: dict[bytes, _Shard] = {}
        # Reads not yet answered for entirely, in spool order, and their bytes:
        # at most two batches per shard are read ahead.
        window: deque[_Read] = deque()
        window_bytes = 0
        limit = 2 * batch_bytes * len(shards)
        cursor = spool.head()
        try:
            while not self._stop.is_set():
                spool.sync_if_due()
                with spool.changed:
                    done, self._done = self._done, []
                answered: list[Position] = []
                stopped = False
                for shard, batch, ok in done:
                    shard.busy = False
                    if not ok:
                        stopped = True  # the other shards' answers still count
                        continue
                    for read, i in zip(batch.reads, batch.index, strict=True):
                        read.left -= 1
                        read.answered[i] = 1
                        answered.append(read.starts[i])
                head: Position | None = None
                now = self.clock()
                while window and window[0].left == 0:
                    read = window.popleft()
                    head = read.end
                    window_bytes -= read.nbytes
                    if read.count:
                        self.stats.latency(max(0.0, now - read.first_ts), read.count)
                if window and answered:
                    # Up to the first record of the oldest read not yet answered for.
                    first = window[0]
                    i = first.answered.find(0, first.open)
                    if i > 0:
                        first.open = i
                        head = first.starts[i]
                if head is not None or answered:
                    spool.ack(head, len(answered), answered)
                if stopped:
                    return  # what is not acknowledged stays spooled
                if window_bytes < limit:
                    chunk = spool.read_chunk(cursor, min(batch_bytes, limit - window_bytes))
                    cursor = chunk.cursor
                    if chunk.end is not None and (chunk.payloads or chunk.skipped):
                        nbytes = sum(map(len, chunk.payloads))
                        read = _Read(chunk.end, chunk.starts, chunk.first_ts or 0.0, nbytes)
                        window.append(read)
                        window_bytes += nbytes
                        if not chunk.payloads:
                            pass  # only records answered for before a restart
                        elif len(shards) == 1:
                            shards[0].add(chunk.payloads, read, list(range(read.count)))
                        else:
                            self._route(chunk.payloads, read, shards, route)
                flush = self._closing or self._draining > 0
                wait = 1.0
                for shard in shards:
                    if shard.busy or not shard.pending:
                        continue
                    left = batch_wait - (self.clock() - shard.first_ts)
                    if flush or shard.pending_bytes >= batch_bytes or left <= 0:
                        shard.start(batch_bytes)
                    else:
                        wait = min(wait, left)
                self.pending_entries = sum(len(s.pending) for s in shards)
                if self._closing and not window and not any(s.busy for s in shards):
                    return  # drained
                with spool.changed:
                    if self._stop.is_set() or self._done:
                        continue
                    if spool.available(cursor) and window_bytes < limit:
                        continue
                    if not window:
                        wait = min(wait, self.settings.fsync_interval)
                    spool.changed.wait(min(wait, batch_wait, 1.0) or 0.001)
        finally:
            for shard in shards:
                shard.stop()
            # a push in flight ends within the HTTP timeouts, and its shard
            # touches the spool until then: close() waits for it
            for shard in shards:
                shard.join(self.settings.connect_timeout + self.settings.timeout)

    def _route(
        self,
        payloads: list[bytes],
        read: _Read,
        shards: list[_Shard],
        route: dict[bytes, _Shard],
    ) -> None:
        """Each record to its stream's shard (remembered in ``route``)."""
        stream = self.codec.stream
        groups: dict[_Shard, tuple[list[bytes], list[int]]] = {}
        for i, payload in enumerate(payloads):
            key = stream(payload)
            to = route.get(key)
            if to is None:
                if len(route) >= _ROUTE_CACHE_MAX:
                    route.clear()
                to = route[key] = shards[zlib.crc32(key) % len(shards)]
            group = groups.get(to)
            if group is None:
                groups[to] = ([payload], [i])
            else:
                group[0].append(payload)
                group[1].append(i)
        for to, (records, index) in groups.items():
            to.add(records, read, index)

    def _settle(self, entries: list[bytes], client: c.LokiClient) -> bool:
        """Push ``entries`` until Loki has answered for every one (sent,
        refused or dropped as too large), retrying as needed; False when
        stopped first. The sender acknowledges them."""
        work: list[list[bytes]] = [entries]
        attempt = 0
        refusals = 0
        fmt = self.settings.format
        while work:
            # Taken before the push: another shard may learn meanwhile that
            # Loki refuses metadata, and this push still carries it.
            strip = self._strip
            part, body, result, seconds = self._push(work[0], fmt, client, strip)
            if body is None:
                work.pop(0)
                continue
            work[0] = part
            self.stats.request(result.code, seconds, result.reason, len(body.data))
            outcome = result.outcome
            if outcome in (c.OK, c.REJECTED, c.TOO_LARGE, c.NO_METADATA):
                self.answered_at = time.monotonic()
            else:
                self.last_failure = result.reason or f"HTTP {result.code}"
            if outcome != c.STOP:
                refusals = 0
                if self.stopped_reason is not None and outcome != c.RETRY:
                    self._resumed()
            if outcome == c.OK:
                self.stats.sent(len(part), nbytes=body.raw_size)
                work.pop(0)
                attempt = 0
            elif outcome == c.NO_METADATA and not strip:
                if not self._strip:
                    self._metadata_refused(result)
                self.stats.resent(len(part))
            elif outcome in (c.REJECTED, c.NO_METADATA):
                refused = sum(result.rejected.values())
                self.stats.rejected(result.rejected)
                self.stats.sent(len(part) - refused)
                self._warn.warning(
                    f"{self.name} refused entries; not retrying them",
                    status=result.code,
                    refused=refused,
                    entries=len(part),
                    reasons=",".join(f"{k}={v}" for k, v in sorted(result.rejected.items())),
                    detail=result.detail,
                )
                work.pop(0)
                attempt = 0
            elif outcome == c.TOO_LARGE:
                if len(part) == 1:
                    self.stats.rejected({"too_large": 1})
                    log.error(
                        f"{self.name} refused a single entry as too large; dropped",
                        extra={"bytes": len(part[0]), "detail": result.detail},
                    )
                    work.pop(0)
                else:
                    half = len(part) // 2
                    work[0:1] = [part[:half], part[half:]]
                    log.info(
                        f"{self.name} answered 413; splitting the batch",
                        extra={"entries": len(part), "bytes": body.raw_size},
                    )
            elif outcome == c.STOP:
                refusals += 1
                self._stopped(result)
                if not self._wait_to_retry(client, refusals):
                    return False
            else:
                attempt += 1
                limit = self.settings.max_retries
                if limit and attempt > limit:
                    self.stats.rejected({"retries_exhausted": len(part)})
                    log.error(
                        "giving up on a batch after max_retries",
                        extra={"entries": len(part), "retries": limit, "last": result.reason},
                    )
                    work.pop(0)
                    attempt = 0
                    continue
                if self._stop.is_set():
                    return False  # stopping: the batch stays in the spool, no retry
                self.stats.retry()
                delay = self._backoff(attempt, result.retry_after)
                self._warn.warning(
                    f"{self.name} push failed; retrying",
                    reason=result.reason,
                    status=result.code,
                    attempt=attempt,
                    delay=round(delay, 3),
                    detail=result.detail[:200],
                )
                if self._stop.wait(delay):
                    return False
        return True

    def _push(
        self, part: list[bytes], fmt: str, client: c.LokiClient, strip: bool = False
    ) -> tuple[list[bytes], Body | None, c.PushResult, float]:
        """Encode and push ``part`` once: (what was pushed, body, result,
        seconds). Records that do not decode are counted, logged and left
        out; no body when none is left."""
        codec = self.codec
        if strip:
            part = [_stripped(codec, r) for r in part]
        try:
            body = codec.encode(part, fmt)
        except ValueError:
            # A record that passed its checksum but does not decode: a bug.
            good = [r for r in part if codec.decodes(r)]
            self.stats.rejected({"other": len(part) - len(good)})
            log.error(
                "spool records could not be decoded; skipped",
                extra={"records": len(part) - len(good)},
            )
            if not good:
                return good, None, c.PushResult(c.OK, ""), 0.0
            part = good
            body = codec.encode(part, fmt)
        start = time.monotonic()
        result = client.push(body, len(part))
        return part, body, result, time.monotonic() - start

    def _metadata_refused(self, result: c.PushResult) -> None:
        """Loki takes no structured metadata: from now on entries go without
        it (their lines still hold every field); said once."""
        self._strip = True
        self.builder.with_metadata = False
        self.stats.metadata_off()
        log.warning(
            "loki refuses structured metadata (limits_config.allow_structured_metadata is off, "
            "Loki 2.9's default, or a schema before v13); sending entries without it from now "
            "on. Set loki.structured_metadata to false to say so, or enable it in Loki",
            extra={"status": result.code, "detail": result.detail[:200]},
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        s = self.settings
        base: float = min(s.backoff_max, s.backoff_min * 2.0 ** min(attempt - 1, 40))
        delay: float = base / 2 + self.rng() * base / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.backoff_max))
        return delay

    def _stopped(self, result: c.PushResult) -> None:
        if self.stopped_reason is None:
            log.error(
                f"{self.name.upper()} REFUSED THE EXPORTER: pushes are retried with backoff and "
                "at once when a credential file changes; events are kept in the spool meanwhile",
                extra={
                    "status": result.code,
                    "reason": result.reason,
                    "url": safe_url(self.settings.push_url),
                    "detail": result.detail[:200],
                },
            )
        with self.stats.lock:
            self.stats.sender_up = 0.0
        self.stopped_reason = result.reason

    def _resumed(self) -> None:
        log.info(f"{self.name} accepts pushes again", extra={"was": self.stopped_reason})
        self.stopped_reason = None
        with self.stats.lock:
            self.stats.sender_up = 1.0

    def _wait_to_retry(self, client: c.LokiClient, refusals: int) -> bool:
        """After a 401/403/404/405: wait for a credential file to change or
        for the backoff (a gateway's 404 during a rollout passes by itself);
        True to push again, False when the sink stops first."""
        before = client.credentials_signature()
        deadline = time.monotonic() + self._backoff(refusals, None)
        while True:
            left = deadline - time.monotonic()
            if self._stop.wait(max(0.0, min(CREDENTIALS_POLL, left))):
                return False
            if self._closing:
                return False
            if client.credentials_signature() != before:
                log.info("credential file changed; trying again")
                return True
            if time.monotonic() >= deadline:
                return True


_ROUTE_CACHE_MAX = 4096
# Stop reasons that drain() gives up on at once.
_CREDENTIALS = ("unauthorized", "forbidden")


class _Read:
    """Records read from the spool together (a chunk): acknowledged up to
    the first of them not yet answered for once all reads before them are,
    and the ones after it that were answered for one by one."""

    __slots__ = ("answered", "count", "end", "first_ts", "left", "nbytes", "open", "starts")

    def __init__(self, end: Position, starts: list[Position], first_ts: float, nbytes: int) -> None:
        self.end = end  # after the last record (or the last one skipped)
        self.starts = starts  # where each record starts
        self.count = len(starts)
        self.first_ts = first_ts
        self.nbytes = nbytes
        self.left = self.count
        self.answered = bytearray(self.count)  # 1 once Loki answered for it
        self.open = 0  # no record before this one is still unanswered


class _Batch:
    __slots__ = ("index", "reads", "records")

    def __init__(self, records: list[bytes], reads: list[_Read], index: list[int]) -> None:
        self.records = records
        self.reads = reads  # the read of each record
        self.index = index  # and its place in that read


class _Shard:
    """One share of the streams: the records waiting for its next batch,
    and the thread that pushes its batches, one at a time and in order, so
    that each stream's entries reach Loki in spool order."""

    def __init__(self, sink: LokiSink, index: int, client: c.LokiClient) -> None:
        self.sink = sink
        self.client = client
        self.pending: list[bytes] = []
        self.reads: list[_Read] = []
        self.index: list[int] = []
        self.pending_bytes = 0
        self.first_ts = 0.0
        self.busy = False
        self._jobs: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"{sink.name}-push-{index}", daemon=True
        )
        self._thread.start()

    def add(self, records: list[bytes], read: _Read, index: list[int]) -> None:
        """Records of one spool read, in spool order, and their places in it."""
        if not self.pending:
            self.first_ts = read.first_ts
        self.pending += records
        self.reads += [read] * len(records)
        self.index += index
        self.pending_bytes += sum(map(len, records))

    def start(self, max_bytes: int) -> None:
        """Push the pending records, up to ``max_bytes`` of them (at least one)."""
        n = 0
        size = 0
        for record in self.pending:
            if n and size + len(record) > max_bytes:
                break
            size += len(record)
            n += 1
        batch = _Batch(self.pending[:n], self.reads[:n], self.index[:n])
        del self.pending[:n]
        del self.reads[:n]
        del self.index[:n]
        self.pending_bytes -= size
        if self.pending:
            self.first_ts = self.reads[0].first_ts
        self.busy = True
        self._jobs.put(batch)

    def stop(self) -> None:
        """End the thread after the batch it is pushing, if any."""
        self._jobs.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        sink = self.sink
        while (batch := self._jobs.get()) is not None:
            try:
                ok = sink._settle(batch.records, self.client)
            except Exception:
                if not sink._stop.is_set():
                    log.exception(f"{sink.name} push failed; the batch stays in the spool")
                ok = False
            with sink.spool.changed:
                sink._done.append((self, batch, ok))
                sink.spool.changed.notify_all()
            if not ok:
                return


def _stripped(codec: Codec, record: bytes) -> bytes:
    try:
        return codec.without_metadata(record)
    except ValueError:
        return record  # left to the encoder's check
