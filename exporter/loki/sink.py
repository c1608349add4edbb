"""The Loki output: a pipeline Sink in front of a disk spool and a sender thread.

``admit`` (the pipeline's thread, before detection sees the batch) says
whether the spool has room for a batch, from its events' sizes; when it is
full it refuses, so the webhook answers 503 and the log tailer keeps its
checkpoint. ``submit`` then redacts, builds the entries and appends them to
the spool, with the source's mark (its resume position) in the same write. The
sender thread reads the spool in order, cuts batches at ``batch_bytes`` or
after ``batch_wait``, pushes them one at a time, in order, and acknowledges
each batch in the spool only once Loki has answered for it. While a batch's
first push is in flight (made by a push thread), the sender reads and
encodes the next batch, which is pushed only once the one before it is
settled, so entries reach Loki and leave the spool in spool order:

- 2xx: sent.
- 400 (and other final 4xx): Loki kept the valid entries; the refused ones
  are counted by reason and logged, never retried.
- 413: the batch is split in halves and each half pushed; a single entry
  that is still too large is counted (reason ``too_large``) and logged.
- 408, 425, 429, 5xx, timeouts, connection errors: the same batch again after
  a jittered exponential backoff (``backoff_min`` doubling up to
  ``backoff_max``, at least any Retry-After), without limit unless
  ``max_retries`` says otherwise.
- 401, 403, 404, 405: the configuration is wrong. The sender stops, says so
  at error level, shows ``loki_sender_up 0``, and resumes only when a
  credential file changes; the spool keeps filling meanwhile.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence

import requests
from prometheus_client.core import Metric

from ..event import AuditEvent
from ..logs import RateLimitedLog, safe_url
from ..metrics import AuditMetrics
from ..redact import Redactor
from . import client as c
from .encode import Body, encode
from .entry import Entry, EntryBuilder, MetadataHook, decode_record
from .metrics import LokiMetrics
from .settings import LokiSettings
from .spool import Position, Spool

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
    ) -> None:
        """``redact`` defaults to ``settings.redact``; pass False when a
        :class:`~exporter.redact.Redactor` already runs as a pipeline
        processor (running it twice is harmless, only slower).
        ``metadata_hook`` adds structured metadata per event (the detection
        stage's ``rules`` and ``severity``)."""
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
        self.client = c.LokiClient(settings, session)
        self.spool = Spool(
            settings.spool_dir,
            max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.segment_bytes,
            fsync=settings.fsync,
            fsync_interval=settings.fsync_interval,
            clock=clock,
        )
        self.stats = LokiMetrics()
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
        self._thread = threading.Thread(target=self._run, name="loki-sender", daemon=True)
        backlog = self.spool.stats()
        log.info(
            "loki output enabled",
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
            log.warning("loki: TLS certificate verification is off (insecure_skip_verify)")
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
        record = self.builder.record
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
        """Wait until everything spooled is acknowledged (True), the sender
        stopped on a configuration error, ``timeout`` passed, or Loki
        answered nothing for ``stall`` seconds (False; :attr:`stalled` says
        which). For replay, which ends only when its events are in Loki."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        with self.spool.changed:
            self._draining += 1
            self.spool.changed.notify_all()
            try:
                while not self.spool.empty():
                    if self.stopped_reason is not None or not self._thread.is_alive():
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
                "loki output stopped with entries left in the spool; the next start sends them",
                extra={"spool_entries": left.entries, "spool_bytes": left.bytes},
            )
        return drained

    def collect(self) -> list[Metric]:
        self.stats.entries_shrunk = float(self.builder.shrunk)
        return list(self.stats.collect(self.spool.stats(), self.clock))

    # --- the sender thread ----------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            if self._stop.is_set():
                return  # abandoned: its spool may be gone already
            log.exception("loki sender failed; entries stay in the spool")
            with self.stats.lock:
                self.stats.sender_up = 0.0

    def _loop(self) -> None:
        pusher = _Pusher(self.client)
        try:
            self._send(pusher)
        finally:
            pusher.stop()

    def _send(self, pusher: _Pusher) -> None:
        spool = self.spool
        batch_bytes = self.settings.batch_bytes
        batch_wait = self.settings.batch_wait
        fmt = self.settings.format
        # The batch whose first push is in flight, settled by _settle.
        inflight: tuple[list[bytes], Position, _Push] | None = None
        cursor = spool.head()
        # The records read for the next batch: payloads, when the first was
        # appended, and the position just after the last.
        pending: list[bytes] = []
        pending_bytes = 0
        first_ts = 0.0
        end = cursor
        while not self._stop.is_set():
            spool.sync_if_due()
            if pending_bytes < batch_bytes:
                chunk = spool.read_chunk(cursor, batch_bytes - pending_bytes)
                cursor = chunk.cursor
                if chunk.payloads and chunk.end is not None and chunk.first_ts is not None:
                    if not pending:
                        first_ts = chunk.first_ts
                    pending += chunk.payloads
                    pending_bytes += sum(map(len, chunk.payloads))
                    end = chunk.end
                self.pending_entries = len(pending)
            if pending and (
                pending_bytes >= batch_bytes
                or self._closing
                or self._draining
                or self.clock() - first_ts >= batch_wait
            ):
                batch, pending, pending_bytes = pending, [], 0
                self.pending_entries = 0
                try:
                    body: Body | None = encode(batch, fmt)
                except ValueError:
                    body = None  # _deliver sorts out the damaged records
                settled, inflight = inflight, None
                if settled is not None and not self._settle(settled[0], settled[2]):
                    return
                if body is not None:
                    inflight = (batch, end, pusher.push(body, len(batch)))
                if settled is not None:
                    # Acknowledged while the next push is in flight: still
                    # in spool order, and only once Loki has answered.
                    spool.ack(settled[1], len(settled[0]))
                if body is None and not self._deliver(batch, end):
                    return
                continue
            if inflight is not None:
                # Nothing more to send yet: settle the push in flight first.
                if not self._deliver(*inflight):
                    return
                inflight = None
                continue
            with spool.changed:
                if self._stop.is_set() or (spool.available(cursor) and pending_bytes < batch_bytes):
                    continue
                if not pending:
                    if self._closing:
                        return  # drained
                    timeout = self.settings.fsync_interval
                else:
                    timeout = max(0.0, batch_wait - (self.clock() - first_ts))
                spool.changed.wait(min(timeout, batch_wait, 1.0) or 0.001)

    def _deliver(self, entries: list[bytes], end: Position, first: _Push | None = None) -> bool:
        """Push ``entries`` (spool records up to ``end``) until Loki has
        answered for every one; then ack. ``first`` is their first push,
        already started. False when stopped first (the batch stays in the
        spool)."""
        if not self._settle(entries, first):
            return False
        self.spool.ack(end, len(entries))
        return True

    def _settle(self, entries: list[bytes], first: _Push | None = None) -> bool:
        """Push ``entries`` until Loki has answered for every one (sent,
        refused or dropped as too large), retrying as needed; False when
        stopped first. The caller acknowledges them."""
        work: list[list[bytes]] = [entries]
        attempt = 0
        fmt = self.settings.format
        while work:
            part = work[0]
            if first is not None:
                body = first.body
                result, seconds = first.wait()
                first = None
            else:
                part, pushed, result, seconds = self._push(part, fmt)
                if pushed is None:
                    work.pop(0)
                    continue
                work[0] = part
                body = pushed
            self.stats.request(result.code, seconds, result.reason)
            outcome = result.outcome
            if outcome in (c.OK, c.REJECTED, c.TOO_LARGE):
                self.answered_at = time.monotonic()
            else:
                self.last_failure = result.reason or f"HTTP {result.code}"
            if outcome == c.OK:
                self.stats.sent(len(part))
                if self.stopped_reason is not None:
                    self._resumed()
                work.pop(0)
                attempt = 0
            elif outcome == c.REJECTED:
                refused = sum(result.rejected.values())
                self.stats.rejected(result.rejected)
                self.stats.sent(len(part) - refused)
                self._warn.warning(
                    "loki refused entries; not retrying them",
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
                        "loki refused a single entry as too large; dropped",
                        extra={"bytes": len(part[0]), "detail": result.detail},
                    )
                    work.pop(0)
                else:
                    half = len(part) // 2
                    work[0:1] = [part[:half], part[half:]]
                    log.info(
                        "loki answered 413; splitting the batch",
                        extra={"entries": len(part), "bytes": body.raw_size},
                    )
            elif outcome == c.STOP:
                self._stopped(result)
                if not self._wait_for_credentials():
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
                self.stats.retry()
                delay = self._backoff(attempt, result.retry_after)
                self._warn.warning(
                    "loki push failed; retrying",
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
        self, part: list[bytes], fmt: str
    ) -> tuple[list[bytes], Body | None, c.PushResult, float]:
        """Encode and push ``part`` once: (what was pushed, body, result,
        seconds). Records that do not decode are counted, logged and left
        out; no body when none is left."""
        try:
            body = encode(part, fmt)
        except ValueError:
            # A record that passed its checksum but does not decode: a bug.
            good = [r for r in part if _decodes(r)]
            self.stats.rejected({"other": len(part) - len(good)})
            log.error(
                "spool records could not be decoded; skipped",
                extra={"records": len(part) - len(good)},
            )
            if not good:
                return good, None, c.PushResult(c.OK, ""), 0.0
            part = good
            body = encode(part, fmt)
        start = time.monotonic()
        result = self.client.push(body, len(part))
        return part, body, result, time.monotonic() - start

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
                "LOKI REFUSED THE EXPORTER: pushing stopped until the credentials or the "
                "configuration are fixed; events are kept in the spool meanwhile",
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
        log.info("loki accepts pushes again", extra={"was": self.stopped_reason})
        self.stopped_reason = None
        with self.stats.lock:
            self.stats.sender_up = 1.0

    def _wait_for_credentials(self) -> bool:
        """Wait until a credential file changes (True) or the sink stops."""
        before = self.client.credentials_signature()
        while not self._stop.wait(CREDENTIALS_POLL):
            if self._closing:
                return False
            if self.client.credentials_signature() != before:
                log.info("credential file changed; trying Loki again")
                return True
        return False


class _Push:
    """One push, made by the :class:`_Pusher` thread."""

    def __init__(self, body: Body, entries: int) -> None:
        self.body = body
        self.entries = entries
        self._done = threading.Event()
        self._result: c.PushResult | None = None
        self._error: BaseException | None = None
        self._seconds = 0.0

    def run(self, client: c.LokiClient) -> None:
        start = time.monotonic()
        try:
            self._result = client.push(self.body, self.entries)
        except BaseException as e:  # handed to the sender, as if it had pushed itself
            self._error = e
        self._seconds = time.monotonic() - start
        self._done.set()

    def wait(self) -> tuple[c.PushResult, float]:
        """(result, seconds) once the push is answered; its exception, if any."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result, self._seconds


class _Pusher:
    """The thread that makes each batch's first push, so that the sender can
    read and encode the next batch meanwhile. The sender starts one push at a
    time and waits for it before starting another."""

    def __init__(self, client: c.LokiClient) -> None:
        self._client = client
        self._jobs: queue.SimpleQueue[_Push | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="loki-push", daemon=True)
        self._thread.start()

    def push(self, body: Body, entries: int) -> _Push:
        job = _Push(body, entries)
        self._jobs.put(job)
        return job

    def stop(self) -> None:
        """End the thread after the push it is making, if any."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.run(self._client)


def _decodes(record: bytes) -> bool:
    try:
        decode_record(record)
    except ValueError:
        return False
    return True
