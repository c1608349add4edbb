"""The naive baseline for bench/webhook_server.py: the webhook source as it was
on the threaded server (a verbatim copy of the old exporter/sources/webhook.py,
imports made absolute). Not used by the exporter.

The webhook source: the API server's audit webhook backend POSTs here.

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
"""

from __future__ import annotations

import functools
import logging
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench.threaded_httpserver import (
    DEFAULT_TLS_RELOAD_INTERVAL,
    HTTPServer,
    ReloadingTLSContext,
    RequestHandler,
)
from exporter.event import Decoder, InvalidEvent
from exporter.logs import RateLimitedLog
from exporter.metrics import AuditMetrics
from exporter.pipeline import BatchResult, Pipeline

log = logging.getLogger(__name__)

SOURCE = "webhook"
# The API server's webhook client (client-go's rest client, see checkWait in
# rest/request.go) sends a 429/5xx request again after Retry-After seconds.
RETRY_AFTER_SECONDS = 5
READ_CHUNK = 1 << 20
MAX_CHUNK_LINE = 4096
# Pre-initialised so the series exist at zero (the others appear when used).
KNOWN_CODES = ("200", "400", "404", "405", "408", "411", "413", "415", "500", "503")

_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]+")


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
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.message = message
        self.close = close
        self.headers = headers or {}


class _ClientGone(Exception):
    """The client closed the connection before sending the whole body."""


class WebhookServer:
    """Receives audit EventLists over HTTPS (or plain HTTP with ``insecure``).

    Binds in the constructor, so a bad address, a busy port or unloadable TLS
    files fail at start-up (ValueError or OSError). ``client_ca_file`` makes a
    client certificate signed by that CA mandatory; the certificate, key and
    CA are reloaded when they change on disk (checked at most every
    ``tls_reload_interval`` seconds).
    """

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
        read_timeout: float = 30.0,
        max_connections: int = 64,
        tls_reload_interval: float = DEFAULT_TLS_RELOAD_INTERVAL,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"webhook.path: must start with '/', got {path!r}")
        if max_body_bytes < 1:
            raise ValueError("webhook.max_body_bytes: must be > 0")
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
        self._server = HTTPServer(
            listen_address,
            functools.partial(_WebhookHandler, webhook=self),
            name="webhook",
            tls=tls,
            max_connections=max_connections,
            read_timeout=read_timeout,
            on_handshake_failure=self._handshake_failed,
        )

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

    def count(self, code: int) -> None:
        with self.metrics.lock:
            self.metrics.webhook_requests.inc((str(code),))


class _WebhookHandler(RequestHandler):
    def __init__(
        self,
        request: socket.socket,
        client_address: Any,
        server: HTTPServer,
        *,
        webhook: WebhookServer,
    ) -> None:
        self.webhook = webhook
        self.body_read = False
        super().__init__(request, client_address, server)

    def on_response(self, code: int) -> None:
        self.webhook.count(code)

    # --- routing ---------------------------------------------------------------

    def route(self) -> None:
        self.body_read = False
        try:
            length = self._precheck()
            body = self._read_body(length)
            result = self._process(body)
        except _Refusal as r:
            self._refuse(r)
            return
        except _ClientGone:
            log.debug("webhook client closed before sending its body", extra={"peer": self.peer})
            self.close_connection = True
            return
        self._answer(
            200,
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "invalid": result.invalid,
            },
        )

    def handle_expect_100(self) -> bool:
        # Refuse before the client sends the body, not after.
        self.body_read = False
        try:
            self._precheck()
        except _Refusal as r:
            self._refuse(r)
            return False
        return super().handle_expect_100()

    def _precheck(self) -> int | None:
        """Everything that can be refused from the request head. Returns the
        Content-Length, or None for a chunked body."""
        if urlsplit(self.path).path != self.webhook.path:
            raise _Refusal(404, "not_found", "no such path", close=True)
        if self.command != "POST":
            raise _Refusal(
                405, "method_not_allowed", "use POST", close=True, headers={"Allow": "POST"}
            )
        if self.headers.get_content_type() != "application/json":
            raise _Refusal(
                415, "unsupported_media_type", "Content-Type must be application/json", close=True
            )
        encodings = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
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
        if length > self.webhook.max_body_bytes:
            raise _Refusal(
                413,
                "too_large",
                f"the body is over the {self.webhook.max_body_bytes} byte limit",
                close=True,
            )
        return length

    # --- body ------------------------------------------------------------------

    def _read_body(self, length: int | None) -> bytes:
        try:
            body = self._read_chunked() if length is None else self._read_exact(length)
        except TimeoutError:
            raise _Refusal(
                408, "timeout", "the request was not received in time", close=True
            ) from None
        self.body_read = True
        return body

    def _read_exact(self, length: int) -> bytes:
        chunks = []
        remaining = length
        while remaining > 0:
            # Read in slices: only what actually arrives is allocated.
            data = self.rfile.read(min(remaining, READ_CHUNK))
            if not data:
                raise _ClientGone
            chunks.append(data)
            remaining -= len(data)
        return b"".join(chunks)

    def _read_chunked(self) -> bytes:
        limit = self.webhook.max_body_bytes
        chunks = []
        total = 0
        while True:
            line = self._read_line()
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text.decode("latin-1")):
                raise _Refusal(400, "bad_framing", "invalid chunk size", close=True)
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise _Refusal(
                    413, "too_large", f"the body is over the {limit} byte limit", close=True
                )
            chunks.append(self._read_exact(size))
            if self._read_line() != b"":
                raise _Refusal(400, "bad_framing", "chunk not followed by CRLF", close=True)
        while self._read_line() != b"":
            pass  # trailer fields, ignored
        return b"".join(chunks)

    def _read_line(self) -> bytes:
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        if not line:
            raise _ClientGone
        if len(line) > MAX_CHUNK_LINE or not line.endswith(b"\n"):
            raise _Refusal(400, "bad_framing", "chunk line too long", close=True)
        return line.rstrip(b"\r\n")

    # --- processing ------------------------------------------------------------

    def _process(self, body: bytes) -> BatchResult:
        if not body.strip():
            raise _Refusal(400, "empty_body", "the body is empty")
        webhook = self.webhook
        try:
            result = webhook.pipeline.process(
                webhook.decoder.decode_document(body), SOURCE, context=self.peer
            )
        except Exception:
            log.exception("webhook batch failed", extra={"peer": self.peer})
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

    def _refuse(self, r: _Refusal) -> None:
        if r.close and r.code != 408 and not self.body_read and self._has_body():
            # The client may still be sending the body we did not read.
            self.linger = True
        self.webhook.refused_log.warning(
            "webhook request refused",
            peer=self.peer,
            method=self.command,
            path=self.path[:200],
            code=r.code,
            reason=r.reason,
        )
        self._answer(r.code, {"error": r.reason, "message": r.message}, r.headers, close=r.close)

    def _has_body(self) -> bool:
        length = self.headers.get("Content-Length", "0").strip()
        return "Transfer-Encoding" in self.headers or length != "0"

    def _answer(
        self,
        code: int,
        doc: dict[str, Any],
        headers: dict[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        self.respond(
            code,
            orjson.dumps(doc) + b"\n",
            "application/json",
            headers=headers,
            close=close,
        )


def _body_refused(result: BatchResult) -> bool:
    """True when nothing in the body was usable because the body itself is not
    an audit document; bad items inside a good EventList are not a refusal."""
    err: InvalidEvent | None = result.first_error
    if err is None or result.accepted or result.duplicates:
        return False
    # invalid_json: garbage or a truncated document. line None: the document
    # itself (not one of its items) was refused.
    return err.reason == "invalid_json" or err.line is None
