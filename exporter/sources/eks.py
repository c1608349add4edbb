"""EKS: the API server's audit events from CloudWatch Logs, pushed by
Amazon Data Firehose or pulled with boto3.

With "audit" control-plane logging on, EKS writes every audit event to the
log group ``/aws/eks/<cluster>/cluster``, one stream per API server instance
named ``kube-apiserver-audit-<id>``: a CloudWatch Logs event whose
``message`` is the API server's JSON line. Both ways in feed the same
pipeline under the source name ``eks``, so metrics, rules, Loki entries and
alerts are those of a self-managed cluster.

Push, :class:`FirehoseReceiver`: a subscription filter on the log group sends
to a Firehose stream whose destination is this HTTP endpoint. Firehose's
HTTP endpoint delivery (protocol 1.0) POSTs ``application/json``, the body
gzip'd when the stream says so (``Content-Encoding: gzip``)::

    {"requestId": "<GUID>", "timestamp": 1578090901599,
     "records": [{"data": "<base64>"}, ...]}

with the configured key verbatim in ``X-Amz-Firehose-Access-Key`` and the
same ``X-Amz-Firehose-Request-Id`` on every attempt of one request. Each
record is one CloudWatch Logs subscription payload, gzip'd (Firehose passes
it on as it came; with Firehose's decompression on it is the JSON itself,
and with message extraction on the bare JSON lines)::

    {"messageType": "DATA_MESSAGE", "owner": "123456789012",
     "logGroup": "/aws/eks/demo/cluster", "logStream": "kube-apiserver-audit-...",
     "subscriptionFilters": ["..."],
     "logEvents": [{"id": "...", "timestamp": 1700000000000, "message": "<event JSON>"}]}

A ``CONTROL_MESSAGE`` (CloudWatch checking that the destination is
reachable) carries no event and is taken without a refusal. The answer is
200 only after the pipeline took the records, and always the documented
body, ``{"requestId": ..., "timestamp": <ms>}``, with ``errorMessage`` on
a failure. Firehose retries every answer but 200 until its retry duration
runs out (then backs the records up to S3), so:

=====  =======================================================================
code   when
=====  =======================================================================
200    taken (bad records inside are counted in events_invalid_total, not
       refused: sending them again would not fix them)
400    the body is not a Firehose request (not JSON, no ``records`` array,
       a damaged gzip body)
401    ``X-Amz-Firehose-Access-Key`` missing or wrong (compared in constant
       time, never logged)
413    the body, once gunzipped (as it is read), is over ``max_body_bytes``
415    a Content-Type other than ``application/json``
503    the spool is full: nothing was taken, Firehose sends the request again
=====  =======================================================================

(404, 405, 408, 411 and 500 as for the webhook, see
exporter/sources/webhook.py, whose HTTP handling this receiver shares.) A
retried request is not counted twice: its events are duplicates by
(auditID, stage, stageTimestamp) in the pipeline's dedupe window.

Pull, :class:`~exporter.sources.eks_cloudwatch.CloudWatchSource`: see that
module.
"""

from __future__ import annotations

import asyncio
import binascii
import hmac
import io
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from ..event import AuditEvent, Batch, Decoder, InvalidEvent
from ..gzstream import MAGIC, GzipStream
from ..httpconn import Connection
from ..httpserver import Limits
from ..logs import RateLimitedLog
from ..metrics import AuditMetrics, HTTPMetrics
from ..pipeline import BatchResult, Pipeline
from .webhook import DEFAULT_WORKERS, WebhookServer, _ClientGone, _Refusal

log = logging.getLogger(__name__)

SOURCE = "eks"
ACCESS_KEY_HEADER = "X-Amz-Firehose-Access-Key"
REQUEST_ID_HEADER = "X-Amz-Firehose-Request-Id"
# Firehose's largest buffer is 64 MiB of records, base64 adds a third.
DEFAULT_MAX_BODY_BYTES = 96 << 20
# What the records of one request may inflate to, all together (CloudWatch
# payloads compress about tenfold): a bound on a gzip bomb, not on real use.
DEFAULT_MAX_DECODED_BYTES = 1 << 30
# Pre-initialised so the series exist at zero.
KNOWN_CODES = ("200", "400", "401", "413", "500", "503")


def gunzip(data: bytes, limit: int) -> tuple[bytes, InvalidEvent | None]:
    """``data`` decompressed, or the refusal of a damaged stream or of one
    that inflates past ``limit`` bytes (never inflated further than that)."""
    gz = GzipStream(io.BytesIO(data))
    out = gz.read(limit + 1)
    if len(out) > limit:
        return b"", InvalidEvent("too_large", f"inflates to more than {limit} bytes")
    if gz.problem:
        return b"", InvalidEvent("truncated_gzip", gz.problem)
    return out, None


_LOG_STREAM = re.compile(rb'"logStream"\s*:\s*"([^"\\]*)"')


def stream_of(payload: bytes) -> str | None:
    """The ``logStream`` of a subscription payload, found in its head
    without parsing it (CloudWatch writes it before ``logEvents``)."""
    found = _LOG_STREAM.search(payload, 0, 4096)
    return None if found is None else found.group(1).decode(errors="replace")


def decode_records(
    records: list[Any],
    decoder: Decoder,
    max_decoded_bytes: int,
    stream_prefix: str = "",
    skipped: Callable[[str], None] | None = None,
) -> Batch:
    """The events in a Firehose request's ``records``, in order, and a
    refusal for each record (or item in it) that is not usable. A record's
    data is base64 of a CloudWatch Logs subscription payload (gzip'd or
    not) or of JSON lines; refusals of a whole record are located by its
    index. A payload from a stream not named ``stream_prefix...`` (another
    EKS log type the subscription filter let through: ``authenticator-*``,
    ``kube-apiserver-*``) is skipped, not refused, and its stream passed to
    ``skipped``."""
    batch = Batch()
    budget = max_decoded_bytes
    for index, record in enumerate(records):
        data = record.get("data") if type(record) is dict else None
        if type(data) is not str:
            batch.add(InvalidEvent("wrong_type", "a record's data must be a string", line=index))
            continue
        try:
            raw = binascii.a2b_base64(data, strict_mode=True)
        except binascii.Error:
            batch.add(InvalidEvent("invalid_encoding", "a record's data is not base64", line=index))
            continue
        if raw[:2] == MAGIC:
            raw, refused = gunzip(raw, budget)
            if refused is not None:
                refused.line = index
                batch.add(refused)
                continue
        if stream_prefix:
            stream = stream_of(raw)
            if stream is not None and not stream.startswith(stream_prefix):
                if skipped is not None:
                    skipped(stream)
                continue
        budget -= len(raw)
        if budget < 0:
            batch.add(
                InvalidEvent(
                    "too_large",
                    f"the records inflate to more than {max_decoded_bytes} bytes",
                    line=index,
                )
            )
            break
        for item in decoder.decode_document(raw):
            if type(item) is not AuditEvent and item.line is None:  # type: ignore[union-attr]
                item.line = index  # type: ignore[union-attr]
            batch.add(item)
    return batch


class FirehoseReceiver(WebhookServer):
    """Amazon Data Firehose's HTTP endpoint delivery, answered as documented.

    The HTTP handling (limits, deadlines, framing, TLS, worker threads) is
    the webhook's; what differs is the access key, the body, and the answer.
    ``access_key`` empty accepts any request (for tests; the configuration
    requires one). Binds in the constructor like the webhook.
    """

    LISTENER = "firehose"

    def __init__(
        self,
        *,
        listen_address: str,
        path: str,
        pipeline: Pipeline,
        decoder: Decoder,
        metrics: AuditMetrics,
        access_key: str,
        stream_prefix: str = "kube-apiserver-audit-",
        tls_cert_file: str | None,
        tls_key_file: str | None,
        insecure: bool,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
        read_timeout: float = Limits.read_timeout,
        max_connections: int = Limits.max_connections,
        workers: int = DEFAULT_WORKERS,
        http_metrics: HTTPMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._access_key = access_key.encode()
        self.stream_prefix = stream_prefix
        self._skip_log = RateLimitedLog(log, burst=1, interval=3600.0)
        self.max_decoded_bytes = max_decoded_bytes
        self.clock = clock
        super().__init__(
            listen_address=listen_address,
            path=path,
            pipeline=pipeline,
            decoder=decoder,
            metrics=metrics,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            client_ca_file=None,
            insecure=insecure,
            max_body_bytes=max_body_bytes,
            read_timeout=read_timeout,
            max_connections=max_connections,
            workers=workers,
            http_metrics=http_metrics,
        )

    def init_counts(self) -> None:
        with self.metrics.lock:
            for code in KNOWN_CODES:
                self.metrics.firehose_requests.init((code,))

    def count(self, code: int) -> None:
        with self.metrics.lock:
            self.metrics.firehose_requests.inc((str(code),))

    def _handshake_failed(self, reason: str) -> None:
        """Counted by the HTTP layer's cuts of the ``firehose`` listener."""

    # --- the endpoint -----------------------------------------------------------

    async def handle(self, request: web.BaseRequest, conn: Connection) -> web.StreamResponse:
        request_id = request.headers.get(REQUEST_ID_HEADER, "")[:200]
        try:
            length = self._precheck(request)
            self._authenticate(request)
            body = await self._read_body(request, length, conn)
            result = await asyncio.get_running_loop().run_in_executor(
                self._workers, self._run_delivery, body, request_id, conn.peer
            )
        except _Refusal as r:
            return self._refuse_request(r, request, conn, request_id)
        except _ClientGone:
            log.debug("firehose client closed before sending its body", extra={"peer": conn.peer})
            raise ConnectionResetError("the client went away") from None
        log.debug(
            "firehose delivery taken",
            extra={
                "request_id": request_id,
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "invalid": result.invalid,
            },
        )
        return self._reply(200, request_id, counted=True)

    def refuse(self, status: int, reason: str, message: str, peer: str) -> web.StreamResponse:
        self.refused_log.warning(
            "firehose request refused", peer=peer, code=status, reason=reason, error=message
        )
        return self._reply(status, "", message)

    def _authenticate(self, request: web.BaseRequest) -> None:
        if not self._access_key:
            return
        given = request.headers.get(ACCESS_KEY_HEADER, "").encode()
        if not hmac.compare_digest(given, self._access_key):
            raise _Refusal(
                401,
                "unauthorized",
                f"{ACCESS_KEY_HEADER} is missing or wrong",
                close=True,
            )

    # --- processing (in a worker thread) ----------------------------------------

    def _run_delivery(self, body: bytes, request_id: str, peer: str) -> BatchResult:
        """:meth:`_deliver` and the count of its answer, in the worker thread
        (as the webhook does: the loop never waits for the metrics lock)."""
        try:
            result = self._deliver(body, request_id, peer)
        except _Refusal as r:
            self.count(r.code)
            r.counted = True
            raise
        self.count(200)
        return result

    def _deliver(self, body: bytes, request_id: str, peer: str) -> BatchResult:
        """``body`` with its Content-Encoding undone (by the HTTP parser, as
        it is read, within ``max_body_bytes``)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Refusal(400, "invalid_json", "the body is not JSON") from None
        records = doc.get("records") if type(doc) is dict else None
        if type(records) is not list:
            raise _Refusal(400, "not_a_delivery", "the body has no records array")
        batch = decode_records(
            records, self.decoder, self.max_decoded_bytes, self.stream_prefix, self._skipped
        )
        try:
            result = self.pipeline.process(
                batch, SOURCE, context=f"firehose request {request_id} from {peer}"
            )
        except Exception:
            log.exception("firehose delivery failed", extra={"request_id": request_id})
            raise _Refusal(500, "internal_error", "the records could not be processed") from None
        if result.refused:
            raise _Refusal(503, "spool_full", "the exporter cannot take the records now; retry")
        return result

    def _skipped(self, stream: str) -> None:
        self._skip_log.log(
            logging.INFO,
            "firehose records from a stream that is not an audit stream skipped; "
            "narrow the subscription filter's pattern",
            stream=stream[:200],
            stream_prefix=self.stream_prefix,
        )

    # --- answers ---------------------------------------------------------------

    def _refuse_request(
        self, r: _Refusal, request: web.BaseRequest, conn: Connection, request_id: str
    ) -> web.Response:
        if r.cut is not None:
            conn.count(r.cut)
        self.refused_log.warning(
            "firehose request refused",
            peer=conn.peer,
            request_id=request_id,
            method=request.method,
            path=request.raw_path[:200],
            code=r.code,
            reason=r.reason,
        )
        response = self._reply(r.code, request_id, r.message, r.headers, counted=r.counted)
        if r.close:
            response.force_close()
        return response

    def _reply(
        self,
        code: int,
        request_id: str,
        error: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        counted: bool = False,
    ) -> web.Response:
        """The documented answer: the request's id, the time in milliseconds,
        and on a failure the reason (which Firehose logs as it is)."""
        if not counted:
            self.count(code)
        doc: dict[str, Any] = {"requestId": request_id, "timestamp": int(self.clock() * 1000)}
        if error is not None:
            doc["errorMessage"] = error
        response = web.Response(status=code, body=orjson.dumps(doc), headers=headers)
        response.headers["Content-Type"] = "application/json"
        return response
