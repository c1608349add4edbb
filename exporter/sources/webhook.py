"""The webhook source: the API server's audit webhook backend POSTs here.

The API server (``--audit-webhook-config-file``) sends an ``audit.k8s.io/v1``
EventList as ``application/json``, up to 400 events per batch, and retries a
batch that was not answered 2xx. The answers are chosen for that client:

=====  ==========================================================================
code   when
=====  ==========================================================================
200    the batch was taken (events spooled and counted; duplicates of a retried
       batch and bad items inside a good EventList are counted, not refused:
       sending them again would not fix them)
400    the body is not an audit document at all (not JSON, a truncated body, an
       EventList of an unknown apiVersion, a JSON value that is no event), or
       empty, or its framing is broken (bad Content-Length, bad chunk)
404    another path
405    another method on the webhook path (``Allow: POST``)
408    the request was not received within the read timeout
431    a request line or header field over ``max_header_bytes``
411    neither Content-Length nor ``Transfer-Encoding: chunked``
413    the body is over ``max_body_bytes`` (refused from Content-Length without
       reading the body; a chunked body is read up to the limit)
415    the Content-Type is not ``application/json`` (parameters such as charset
       are fine)
500    an unexpected error in the pipeline (logged)
501    a Transfer-Encoding other than chunked
503    a sink is full (the spool): nothing was taken, ``Retry-After`` asks the API
       server to send the batch again
=====  ==========================================================================

Every answer is counted in ``kube_audit_webhook_requests_total{code}``. A
refusal that leaves the request body unread closes the connection. Refusals
are logged at a bounded rate, with the peer and the reason, never the body.

The transport is exporter/httpserver.py's asynchronous server; decoding and
the pipeline (CPU work, the spool's fsync) run on a pool of ``workers``
threads, so the event loop never waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiohttp import web

from ..event import Decoder, InvalidEvent
from ..httpserver import Connection, HTTPServer, Limits
from ..logs import RateLimitedLog
from ..metrics import AuditMetrics, HTTPMetrics
from ..pipeline import BatchResult, Pipeline
from ..tlsreload import DEFAULT_TLS_RELOAD_INTERVAL, ReloadingTLSContext

log = logging.getLogger(__name__)

SOURCE = "webhook"
# The API server's webhook client (client-go's rest client, see checkWait in
# rest/request.go) sends a 429/5xx request again after Retry-After seconds.
RETRY_AFTER_SECONDS = 5
# Pre-initialised so the series exist at zero (the others appear when used).
KNOWN_CODES = ("200", "400", "404", "405", "408", "411", "413", "415", "500", "503")
DEFAULT_WORKERS = 4

_DIGITS = re.compile(r"[0-9]+")


class _Refusal(Exception):
    """An answer other than 200; ``close`` when the connection cannot be reused."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        close: bool = False,
        headers: dict[str, str] | None = None,
        cut: str | None = None,
    ) -> None:
        """``cut``: the HTTP layer's reason for the connection closed with
        this answer (exporter.metrics.HTTP_CUT_REASONS), when it counts as one."""
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.message = message
        self.close = close
        self.headers = headers or {}
        self.cut = cut


class _ClientGone(Exception):
    """The client closed the connection before sending the whole body."""


class WebhookServer:
    """Receives audit EventLists over HTTPS (or plain HTTP with ``insecure``).

    Binds in the constructor, so a bad address, a busy port or unloadable TLS
    files fail at start-up (ValueError or OSError). ``client_ca_file`` makes a
    client certificate signed by that CA mandatory; the certificate, key and
    CA are reloaded when they change on disk (checked at most every
    ``tls_reload_interval`` seconds). The connection limits and deadlines are
    those of :class:`~exporter.httpserver.Limits`; ``workers`` threads run
    the pipeline.
    """

    # the listener label of the HTTP layer's metrics (a push source that
    # reuses this server names its own)
    LISTENER = "webhook"
    # the Content-Types taken (None: any, the body says what it is)
    CONTENT_TYPES: frozenset[str] | None = frozenset({"application/json"})

    def __init__(
        self,
        *,
        listen_address: str,
        path: str,
        pipeline: Pipeline,
        decoder: Decoder,
        metrics: AuditMetrics,
        tls_cert_file: str | None,
        tls_key_file: str | None,
        client_ca_file: str | None,
        insecure: bool,
        max_body_bytes: int = 64 << 20,
        read_timeout: float = Limits.read_timeout,
        max_connections: int = Limits.max_connections,
        handshake_timeout: float = Limits.handshake_timeout,
        header_timeout: float = Limits.header_timeout,
        idle_timeout: float = Limits.idle_timeout,
        max_header_bytes: int = Limits.max_header_bytes,
        workers: int = DEFAULT_WORKERS,
        tls_reload_interval: float = DEFAULT_TLS_RELOAD_INTERVAL,
        http_metrics: HTTPMetrics | None = None,
    ) -> None:
        """``http_metrics``: the process's HTTP families (kept unregistered
        when not given)."""
        if not path.startswith("/"):
            raise ValueError(f"webhook.path: must start with '/', got {path!r}")
        if max_body_bytes < 1:
            raise ValueError("webhook.max_body_bytes: must be > 0")
        if workers < 1:
            raise ValueError("webhook.workers: must be >= 1")
        tls: ReloadingTLSContext | None = None
        if insecure:
            if tls_cert_file or tls_key_file or client_ca_file:
                raise ValueError(
                    "webhook.insecure: serves plain HTTP and cannot be combined with "
                    "webhook.tls_cert_file, webhook.tls_key_file or webhook.client_ca_file"
                )
        else:
            if not (tls_cert_file and tls_key_file):
                raise ValueError(
                    "webhook: a TLS certificate and key are required "
                    "(webhook.tls_cert_file and webhook.tls_key_file); "
                    "set webhook.insecure to serve plain HTTP"
                )
            try:
                tls = ReloadingTLSContext(
                    tls_cert_file,
                    tls_key_file,
                    client_ca_file,
                    reload_interval=tls_reload_interval,
                )
            except ValueError as e:
                raise ValueError(f"webhook: {e}") from None
        self.path = path
        self.pipeline = pipeline
        self.decoder = decoder
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.refused_log = RateLimitedLog(log)
        with metrics.lock:
            for code in KNOWN_CODES:
                metrics.webhook_requests.init((code,))
        limits = Limits(
            max_connections=max_connections,
            handshake_timeout=handshake_timeout,
            header_timeout=header_timeout,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
            max_header_bytes=max_header_bytes,
        )
        http_metrics = http_metrics or HTTPMetrics()
        if tls is not None:
            served = tls
            http_metrics.add_certificates(
                lambda: (
                    ("serving", served.serving_not_after),
                    ("client", served.client_not_after()),
                )
            )
        self._server = HTTPServer(
            listen_address,
            self,
            name=self.LISTENER,
            metrics=http_metrics,
            tls=tls,
            limits=limits,
            on_handshake_failure=self._handshake_failed,
        )
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="webhook-pipeline")

    def _handshake_failed(self, reason: str) -> None:
        # OpenSSL reason codes are a fixed set: a bounded label
        with self.metrics.lock:
            self.metrics.webhook_tls_failures.inc((reason[:64],))

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @property
    def tls(self) -> bool:
        return self._server.tls is not None

    def start(self) -> None:
        self._server.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, let batches in flight finish (up to ``timeout``)."""
        self._server.shutdown(timeout)
        self._workers.shutdown(wait=True)

    def count(self, code: int) -> None:
        with self.metrics.lock:
            self.metrics.webhook_requests.inc((str(code),))

    # --- the endpoint -----------------------------------------------------------

    async def handle(self, request: web.BaseRequest, conn: Connection) -> web.StreamResponse:
        try:
            length = self._precheck(request)
            body = await self._read_body(request, length, conn)
            result = await asyncio.get_running_loop().run_in_executor(
                self._workers, self._process, body, conn.peer
            )
        except _Refusal as r:
            return self._refuse(r, request, conn)
        except _ClientGone:
            log.debug("webhook client closed before sending its body", extra={"peer": conn.peer})
            raise ConnectionResetError("the client went away") from None
        return self._answer(
            200,
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "invalid": result.invalid,
            },
        )

    def refuse(self, status: int, reason: str, message: str, peer: str) -> web.StreamResponse:
        self.refused_log.warning(
            "webhook request refused", peer=peer, code=status, reason=reason, error=message
        )
        return self._answer(status, {"error": reason, "message": message})

    def _precheck(self, request: web.BaseRequest) -> int | None:
        """Everything that can be refused from the request head. Returns the
        Content-Length, or None for a chunked body."""
        if request.path != self.path:
            raise _Refusal(404, "not_found", "no such path", close=True)
        if request.method != "POST":
            raise _Refusal(
                405, "method_not_allowed", "use POST", close=True, headers={"Allow": "POST"}
            )
        if self.CONTENT_TYPES is not None and request.content_type not in self.CONTENT_TYPES:
            raise _Refusal(
                415, "unsupported_media_type", "Content-Type must be application/json", close=True
            )
        encodings = request.headers.getall("Transfer-Encoding", [])
        lengths = request.headers.getall("Content-Length", [])
        if encodings:
            if lengths:
                # Both framings at once is how requests are smuggled; refuse.
                raise _Refusal(
                    400,
                    "bad_framing",
                    "Content-Length and Transfer-Encoding together",
                    close=True,
                )
            if [e.strip().lower() for e in ",".join(encodings).split(",")] != ["chunked"]:
                raise _Refusal(
                    501, "unsupported_transfer_encoding", "only chunked is supported", close=True
                )
            return None
        if not lengths:
            raise _Refusal(411, "length_required", "Content-Length is required", close=True)
        values = {v.strip() for v in lengths}
        text = values.pop()
        if values or not _DIGITS.fullmatch(text):
            raise _Refusal(400, "bad_framing", "invalid Content-Length", close=True)
        length = int(text)
        if length > self.max_body_bytes:
            raise self._too_large()
        return length

    def _too_large(self) -> _Refusal:
        return _Refusal(
            413,
            "too_large",
            f"the body is over the {self.max_body_bytes} byte limit",
            close=True,
            cut="body_too_large",
        )

    # --- body ------------------------------------------------------------------

    async def _read_body(
        self, request: web.BaseRequest, length: int | None, conn: Connection
    ) -> bytes:
        """The body, read before the request's deadline; a chunked body only up
        to the limit."""
        chunks = []
        total = 0
        try:
            async with asyncio.timeout_at(conn.deadline):
                if request.headers.get("Expect", "").lower() == "100-continue":
                    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                while True:
                    chunk = await request.content.readany()
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > self.max_body_bytes:
                        raise self._too_large()
                    chunks.append(chunk)
        except TimeoutError:
            raise _Refusal(
                408,
                "timeout",
                "the request was not received in time",
                close=True,
                cut="body_timeout",
            ) from None
        except _Refusal:
            raise
        except (ConnectionError, asyncio.CancelledError):
            raise _ClientGone from None
        except Exception as e:  # the parser refused the body's framing
            if request.protocol.transport is None:
                raise _ClientGone from None
            log.debug("invalid chunked body", extra={"peer": conn.peer, "error": type(e).__name__})
            raise _Refusal(
                400, "bad_framing", "invalid chunked body", close=True, cut="bad_request"
            ) from None
        if length is not None and total < length:
            raise _ClientGone
        return b"".join(chunks)

    # --- processing (in a worker thread) ----------------------------------------

    def _process(self, body: bytes, peer: str) -> BatchResult:
        if not body.strip():
            raise _Refusal(400, "empty_body", "the body is empty")
        try:
            result = self.pipeline.process(self.decoder.decode_document(body), SOURCE, context=peer)
        except Exception:
            log.exception("webhook batch failed", extra={"peer": peer})
            raise _Refusal(500, "internal_error", "the batch could not be processed") from None
        if result.refused:
            raise _Refusal(
                503,
                "spool_full",
                "the exporter cannot take the batch now; retry",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        if _body_refused(result):
            assert result.first_error is not None
            raise _Refusal(
                400,
                result.first_error.reason,
                "the body is not an audit.k8s.io Event or EventList",
            )
        return result

    # --- answers ---------------------------------------------------------------

    def _refuse(self, r: _Refusal, request: web.BaseRequest, conn: Connection) -> web.Response:
        if r.cut is not None:
            conn.count(r.cut)
        self.refused_log.warning(
            "webhook request refused",
            peer=conn.peer,
            method=request.method,
            path=request.raw_path[:200],
            code=r.code,
            reason=r.reason,
        )
        response = self._answer(r.code, {"error": r.reason, "message": r.message}, r.headers)
        if r.close:
            response.force_close()
        return response

    def _answer(
        self, code: int, doc: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        self.count(code)
        response = web.Response(status=code, body=orjson.dumps(doc) + b"\n", headers=headers)
        response.headers["Content-Type"] = "application/json"
        return response


def _body_refused(result: BatchResult) -> bool:
    """True when nothing in the body was usable because the body itself is not
    an audit document; bad items inside a good EventList are not a refusal."""
    err: InvalidEvent | None = result.first_error
    if err is None or result.accepted or result.duplicates:
        return False
    # invalid_json: garbage or a truncated document. line None: the document
    # itself (not one of its items) was refused.
    return err.reason == "invalid_json" or err.line is None
