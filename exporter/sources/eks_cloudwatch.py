"""EKS pull: the audit streams of a CloudWatch Logs group, read with boto3.

Each poll lists the group's streams named ``kube-apiserver-audit-*``
(DescribeLogStreams), so a stream that appears (a new API server instance)
is followed from its first event, and reads each live stream forward with
GetLogEvents (``startFromHead``, then its ``nextForwardToken``) until it
has nothing new. A stream read to its end whose listed last ingestion is
more than :data:`STREAM_IDLE_MS` old and has not moved since is no longer
read (a replaced API server); it is read again once it moves.

The cursor of a stream is the newest event timestamp taken (milliseconds)
and a digest of every message taken at that very millisecond. After a
restart a stream is read again from that millisecond: events at it whose
digest is known were taken already and are dropped, later ones are new. The
cursors are written atomically (:func:`~exporter.sources.checkpoint.write_atomic`)
with each batch, before its metrics count it, so a kill -9 loses nothing and
counts nothing twice::

    {"version": 1, "log_group": "/aws/eks/demo/cluster", "start_ms": 1700000000000,
     "seq": 42, "streams": {"kube-apiserver-audit-0f3c...": {"time_ms": 1700000123456,
     "seen": ["9f2c4e1a0b7d3c55"]}}, "updated": "..."}

``start_at``: ``checkpoint`` resumes from the file (and reads new streams
from the moment the cursors were first made), or starts now when there is
none; ``now`` or an RFC 3339 time ignore the file. A throttled call
(ThrottlingException and the like, after botocore's own retries) or any
other failure is counted in ``kube_audit_eks_cloudwatch_errors_total``,
logged at a bounded rate, and the next poll waits a jittered exponential
backoff (``backoff_min`` doubling to ``backoff_max``); the position is kept,
so nothing is skipped. A batch the pipeline refuses (the spool is full) is
read again at the next poll.

boto3 is an optional dependency (the ``eks`` extra), imported when the
source is built; credentials come only from its default chain (IRSA or EKS
Pod Identity in a pod, the environment or a profile elsewhere).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..event import AuditEvent, Batch, Decoder, parse_time
from ..logs import RateLimitedLog
from ..metrics import AuditMetrics
from ..pipeline import Mark, Pipeline
from . import checkpoint
from .eks import SOURCE

log = logging.getLogger(__name__)

VERSION = 1
DEFAULT_STREAM_PREFIX = "kube-apiserver-audit-"
# lastIngestionTime is eventually consistent (AWS: "typically ... less than an
# hour"): a stream is read until it has been quiet for longer than that.
STREAM_IDLE_MS = 2 * 3600 * 1000
PAGE_LIMIT = 10_000
# The error codes CloudWatch Logs (and AWS generally) throttles with.
THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "RequestThrottledException",
        "ServiceUnavailableException",
    }
)
OPERATIONS = ("DescribeLogStreams", "GetLogEvents")
CHECKPOINT_LIMIT = 16 << 20


class CursorError(ValueError):
    """A cursor file that exists but cannot be used (a start-up error)."""


class MissingExtra(ValueError):
    """boto3 is not installed (a start-up error that names the extra)."""


class _Failed(Exception):
    """A call failed after the SDK's own retries; the poll backs off."""


def digest(message: str) -> str:
    return hashlib.sha256(message.encode()).hexdigest()[:16]


@dataclass
class StreamCursor:
    """Where one stream has been read up to."""

    time_ms: int | None = None
    seen: set[str] = field(default_factory=set)
    # not kept across restarts:
    token: str | None = None
    start_ms: int | None = None  # the startTime of this session's reads
    # its lastIngestionTime (as listed) when it was last read to its end
    caught_up_ingestion: int | None = None

    def take(self, ts: int, message_digest: str) -> bool:
        """Whether an event is new; remembers it when it is."""
        if self.time_ms is None or ts > self.time_ms:
            self.time_ms = ts
            self.seen = {message_digest}
            return True
        if ts == self.time_ms:
            if message_digest in self.seen:
                return False
            self.seen.add(message_digest)
        return True


def parse_start_at(value: str) -> float | None:
    """None for ``checkpoint`` or ``now``, else the time (seconds) it names;
    raises ValueError."""
    if value in ("checkpoint", "now"):
        return None
    try:
        return parse_time(value)
    except Exception:
        raise ValueError(
            f"must be checkpoint, now or an RFC 3339 time, not {value[:60]!r}"
        ) from None


def make_client(region: str, endpoint_url: str, attempts: int = 3) -> Any:
    """A CloudWatch Logs client from boto3's default credential chain, with
    botocore's standard retry mode: it retries throttling itself first, up to
    ``attempts`` calls in all."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingExtra(
            "eks.log_group: the CloudWatch Logs source needs boto3: "
            "pip install 'kube-audit-exporter[eks]'"
        ) from None
    config = Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        user_agent_extra="kube-audit-exporter",
    )
    try:
        return boto3.client(
            "logs", region_name=region or None, endpoint_url=endpoint_url or None, config=config
        )
    except Exception as e:  # NoRegionError, a malformed endpoint URL
        raise ValueError(f"eks.region/eks.endpoint_url: {e}") from None


class CloudWatchSource:
    """Follows the audit streams of ``log_group`` into ``pipeline``.

    ``client`` is a boto3 CloudWatch Logs client (see :func:`make_client`).
    ``resume_mark`` is the last mark the pipeline's sinks kept (the Loki
    spool), used when it is later than the cursor file. ``clock`` (seconds)
    and ``wait`` (stop-aware sleep, returns True when stopping) are for tests.
    """

    def __init__(
        self,
        *,
        client: Any,
        log_group: str,
        pipeline: Pipeline,
        decoder: Decoder,
        metrics: AuditMetrics,
        stream_prefix: str = DEFAULT_STREAM_PREFIX,
        checkpoint_file: str | None = None,
        start_at: str = "checkpoint",
        poll_interval: float = 5.0,
        backoff_min: float = 1.0,
        backoff_max: float = 300.0,
        resume_mark: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        start = parse_start_at(start_at)  # ValueError
        self.client = client
        self.log_group = log_group
        self.stream_prefix = stream_prefix
        self.pipeline = pipeline
        self.decoder = decoder
        self.metrics = metrics
        self.checkpoint_file = checkpoint_file
        self.poll_interval = poll_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.clock = clock
        self.streams: dict[str, StreamCursor] = {}
        self.seq = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = RateLimitedLog(log)
        with metrics.lock:
            for op in OPERATIONS:
                for kind in ("throttled", "error"):
                    metrics.cloudwatch_errors.init((op, kind))
        self.start_ms = int((self.clock() if start is None else start) * 1000)
        if start_at == "checkpoint":
            doc = self._later(self._load(), resume_mark)
            if doc is not None:
                self._restore(doc)

    # --- cursors ----------------------------------------------------------------

    def _load(self) -> dict[str, Any] | None:
        if not self.checkpoint_file:
            return None
        try:
            data = checkpoint.read_small(self.checkpoint_file, CHECKPOINT_LIMIT)
        except OSError as e:
            raise CursorError(f"{self.checkpoint_file}: cannot read: {e.strerror}") from None
        if data is None:
            return None
        try:
            return self._parse(data)
        except CursorError as e:
            raise CursorError(f"{self.checkpoint_file}: {e}") from None

    def _parse(self, data: bytes) -> dict[str, Any]:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise CursorError(f"not JSON: {e}") from None
        if type(doc) is not dict or doc.get("version") != VERSION:
            raise CursorError(f"not a version {VERSION} CloudWatch cursor file")
        if doc.get("log_group") != self.log_group:
            raise CursorError(f"holds cursors of another log group, {doc.get('log_group')!r}")
        streams = doc.get("streams")
        if type(doc.get("start_ms")) is not int or type(streams) is not dict:
            raise CursorError("start_ms and streams are missing")
        for name, c in streams.items():
            if type(c) is not dict or type(c.get("time_ms")) is not int:
                raise CursorError(f"streams.{name}: time_ms is missing")
            if type(c.get("seen")) is not list:
                raise CursorError(f"streams.{name}: seen is missing")
        return doc

    def _later(self, doc: dict[str, Any] | None, mark: bytes | None) -> dict[str, Any] | None:
        """The later of the cursor file and the sinks' mark (by ``seq``)."""
        if mark is None:
            return doc
        try:
            kept = self._parse(mark)
        except CursorError:
            return doc  # another source's mark, or none of ours
        if doc is not None and int(doc.get("seq", 0)) >= int(kept.get("seq", 0)):
            return doc
        return kept

    def _restore(self, doc: dict[str, Any]) -> None:
        self.start_ms = doc["start_ms"]
        self.seq = int(doc.get("seq", 0))
        for name, c in doc["streams"].items():
            self.streams[name] = StreamCursor(time_ms=c["time_ms"], seen=set(c["seen"]))
        log.info(
            "resuming CloudWatch Logs from the checkpoint",
            extra={"log_group": self.log_group, "streams": len(self.streams), "seq": self.seq},
        )

    def dump(self, seq: int, cursors: dict[str, StreamCursor]) -> bytes:
        wall = self.clock()
        doc = {
            "version": VERSION,
            "log_group": self.log_group,
            "start_ms": self.start_ms,
            "seq": seq,
            "streams": {
                name: {"time_ms": c.time_ms, "seen": sorted(c.seen)}
                for name, c in cursors.items()
                if c.time_ms is not None
            },
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall)),
        }
        return orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)

    # --- running ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="eks-cloudwatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            delay = self.poll_interval if self.poll_once() else self.backoff()

    def backoff(self) -> float:
        """The wait after the ``failures``-th failure in a row: exponential,
        jittered down to half so that replicas do not call in step."""
        exponent = max(0, min(self.failures - 1, 30))
        step: float = min(self.backoff_max, self.backoff_min * float(2**exponent))
        return step * (0.5 + random.random() / 2)

    def poll_once(self) -> bool:
        """List the streams and read the live ones to their end; False when a
        call failed (the next poll backs off)."""
        try:
            names = self._list_streams()
            for name, last_ingestion in names:
                if self._stop.is_set():
                    break
                cursor = self.streams.setdefault(name, StreamCursor())
                if self._live(cursor, last_ingestion) and self._read(name, cursor):
                    cursor.caught_up_ingestion = last_ingestion
        except _Failed:
            self.failures += 1
            return False
        self.failures = 0
        return True

    def _live(self, cursor: StreamCursor, last_ingestion: int | None) -> bool:
        """Whether to read a stream: one not read to its end yet, one with
        an ingestion since, or one whose last ingestion is recent (the
        listed time may lag what the stream holds)."""
        if cursor.caught_up_ingestion is None or last_ingestion is None:
            return True
        if last_ingestion > cursor.caught_up_ingestion:
            return True
        return int(self.clock() * 1000) - last_ingestion < STREAM_IDLE_MS

    def _list_streams(self) -> list[tuple[str, int | None]]:
        streams = []
        kwargs: dict[str, Any] = {
            "logGroupName": self.log_group,
            "logStreamNamePrefix": self.stream_prefix,
        }
        while True:
            page = self._call("DescribeLogStreams", self.client.describe_log_streams, kwargs)
            for s in page.get("logStreams", ()):
                last = s.get("lastIngestionTime")
                streams.append((s["logStreamName"], last if type(last) is int else None))
            token = page.get("nextToken")
            if not token or token == kwargs.get("nextToken"):
                return streams
            kwargs["nextToken"] = token

    def _read(self, name: str, cursor: StreamCursor) -> bool:
        """Read ``name`` forward until it has nothing new (True), or a batch
        is refused (False: it is read again from the same place at the next
        poll)."""
        if cursor.start_ms is None:
            cursor.start_ms = cursor.time_ms if cursor.time_ms is not None else self.start_ms
        while not self._stop.is_set():
            kwargs: dict[str, Any] = {
                "logGroupName": self.log_group,
                "logStreamName": name,
                "startFromHead": True,
                "startTime": cursor.start_ms,
                "limit": PAGE_LIMIT,
            }
            if cursor.token is not None:
                kwargs["nextToken"] = cursor.token
            page = self._call("GetLogEvents", self.client.get_log_events, kwargs)
            events = page.get("events") or []
            token = page.get("nextForwardToken")
            if events and not self._take(name, cursor, events):
                return False
            if not events or token is None or token == cursor.token:
                cursor.token = token or cursor.token
                return True
            cursor.token = token
        return False

    def _take(self, name: str, cursor: StreamCursor, events: Iterable[dict[str, Any]]) -> bool:
        """Hand one page to the pipeline; True when it was taken."""
        after = StreamCursor(time_ms=cursor.time_ms, seen=set(cursor.seen))
        batch = Batch()
        decode = self.decoder.decode_record
        for e in events:
            message, ts = e.get("message"), e.get("timestamp")
            if type(message) is not str or type(ts) is not int:
                continue
            if not after.take(ts, digest(message)):
                continue  # taken before a restart, at the same millisecond
            for item in decode(message.encode()):
                if type(item) is not AuditEvent and item.line is None:  # type: ignore[union-attr]
                    item.line = ts  # type: ignore[union-attr]
                batch.add(item)
        if after.time_ms == cursor.time_ms and after.seen == cursor.seen:
            return True  # nothing new
        cursors = dict(self.streams)
        cursors[name] = after
        seq = self.seq + 1
        data = self.dump(seq, cursors)
        saved = []

        def save() -> None:
            saved.append(self._save(data))

        mark = Mark(data, save) if self.checkpoint_file else None
        try:
            result = self.pipeline.process(
                batch, SOURCE, context=f"{self.log_group}/{name}", mark=mark
            )
        except Exception as e:
            self._log.warning(
                "the pipeline failed on a CloudWatch Logs page; reading it again",
                stream=name,
                error=type(e).__name__,
            )
            return False
        if result.refused:
            return False
        if mark is not None and not saved:
            self._save(data)  # a sink kept the mark with the batch: keep the file too
        cursor.time_ms, cursor.seen = after.time_ms, after.seen
        self.seq = seq
        return True

    def _save(self, data: bytes) -> bool:
        assert self.checkpoint_file
        try:
            checkpoint.write_atomic(self.checkpoint_file, data)
        except OSError as e:
            self._log.warning(
                "cannot write the CloudWatch Logs checkpoint",
                file=self.checkpoint_file,
                error=e.strerror or str(e),
            )
            return False
        return True

    def _call(self, operation: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """``fn(**kwargs)``; a failure is counted, logged and raised as _Failed."""
        try:
            return fn(**kwargs)
        except Exception as e:
            code = _error_code(e)
            kind = "throttled" if code in THROTTLE_CODES else "error"
            with self.metrics.lock:
                self.metrics.cloudwatch_errors.inc((operation, kind))
            self._log.warning(
                "CloudWatch Logs call failed; backing off",
                operation=operation,
                log_group=self.log_group,
                kind=kind,
                error=code or type(e).__name__,
                detail=str(e)[:200],
            )
            raise _Failed from None


def _error_code(e: Exception) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code", "")
        return code if isinstance(code, str) else ""
    return ""
