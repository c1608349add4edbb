"""The GKE source: Kubernetes audit entries from a Cloud Logging sink to Pub/Sub.

A log sink (filter ``resource.type="k8s_cluster" AND
protoPayload.serviceName="k8s.io"``, or narrower) publishes each Cloud Audit
Log entry as one Pub/Sub message whose data is the LogEntry JSON. Two ways to
receive them, both feeding the same pipeline (source ``gke``) through
:mod:`~exporter.gke_entry`:

Push (:class:`PubSubPushServer`): Pub/Sub POSTs each message to an HTTPS
endpoint, ``{"message": {"data": base64, "messageId", "attributes",
"publishTime"}, "subscription"}`` (or the bare data when the subscription
unwraps payloads), with ``Authorization: Bearer <OIDC token>`` signed by
Google for the subscription's service account. The token is verified
(:class:`OIDCVerifier`: signature against Google's published certificates,
audience, issuer, expiry, the service account's verified email) before the
body is read. Answers:

=====  =========================================================================
code   when
=====  =========================================================================
200    the message was taken (its entry spooled and counted; an entry that is
       no Kubernetes audit entry is counted as invalid and acknowledged too:
       sending it again would not fix it). Pub/Sub acknowledges the message.
400    the body is no push envelope (not JSON, no ``message``, data not base64)
401    no bearer token
403    a token that does not verify (signature, audience, issuer, expiry, email)
503    the spool is full: Pub/Sub sends the message again later (with its
       backoff); a retry is not counted twice (auditID, stage, timestamp)
=====  =========================================================================

and the framing answers of :mod:`~exporter.sources.webhook` (404, 405, 408,
411, 413), whose HTTP handling this server reuses; any Content-Type is taken
(an unwrapped payload keeps its publisher's). Every answer is
counted in ``kube_audit_gke_push_requests_total{code}``; the token is never
logged.

Pull (:class:`PubSubPull`): a streaming pull with google-cloud-pubsub and
flow control (at most ``max_messages`` / ``max_bytes`` leased at once); the
messages are batched, and acknowledged only once the pipeline took the
batch; a refused batch (spool full) is nacked whole, for redelivery. The
adapter around the client is thin: its logic is tested with a fake client
implementing ``subscribe``.

google-auth and google-cloud-pubsub are imported lazily: install the
``[gke]`` extra. Credentials come only from Google's default chain
(Workload Identity on GKE).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web

from ..event import Batch, Decoder, InvalidEvent, Item
from ..httpconn import Connection
from ..logs import RateLimitedLog
from ..metrics import AuditMetrics
from ..pipeline import BatchResult, Pipeline
from .gke_token import EXTRA_HINT as EXTRA_HINT
from .gke_token import GOOGLE_CERTS_URL as GOOGLE_CERTS_URL
from .gke_token import MissingExtra as MissingExtra
from .gke_token import OIDCVerifier as OIDCVerifier
from .gke_token import TokenRefused as TokenRefused
from .gke_token import _import_error
from .webhook import RETRY_AFTER_SECONDS, WebhookServer, _Refusal

log = logging.getLogger(__name__)

SOURCE = "gke"
PUSH_CODES = ("200", "400", "401", "403", "404", "405", "408", "411", "413", "500", "503")

# --- the push body ----------------------------------------------------------------


def push_items(body: bytes, decoder: Decoder) -> tuple[Iterator[Item], str]:
    """The items of a push request's body and the message id ("" when the
    subscription unwraps payloads); raises ValueError when the body is no
    push envelope."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("the body is not JSON") from None
    if type(doc) is not dict:
        raise ValueError("the body is not a JSON object")
    message = doc.get("message")
    if message is None:
        # payload unwrapping: the body is the message data itself
        return decoder.decode_document(body), ""
    if type(message) is not dict:
        raise ValueError("message must be an object")
    message_id = message.get("messageId") or message.get("message_id") or ""
    data = message.get("data")
    if type(data) is not str:
        raise ValueError("message.data is missing")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("message.data is not base64") from None
    return message_items(raw, decoder), str(message_id)[:100]


def message_items(data: bytes, decoder: Decoder) -> Iterator[Item]:
    """The items of one Pub/Sub message's data: a LogEntry (or anything the
    decoder reads); an empty message is refused, not skipped."""
    if not data.strip():
        return iter((InvalidEvent("missing_field", "the Pub/Sub message has no data"),))
    return decoder.decode_document(data)


class PubSubPushServer(WebhookServer):
    """The Pub/Sub push endpoint: the webhook's HTTP handling (framing,
    limits, TLS, worker threads) with the token check and the push body.

    ``verifier`` None accepts unauthenticated pushes (only for a network
    where nothing else can reach the endpoint; the configuration asks for
    it explicitly)."""

    LISTENER = "gke_push"
    # a subscription that unwraps payloads sends the bare message data with
    # whatever Content-Type its publisher gave it
    CONTENT_TYPES = None

    def __init__(self, *, verifier: OIDCVerifier | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verifier = verifier

    def init_counts(self) -> None:
        """Pre-initialise the push answers' known codes (not the webhook's)."""
        with self.metrics.lock:
            for code in PUSH_CODES:
                self.metrics.gke_push_requests.init((code,))

    def count(self, code: int) -> None:
        with self.metrics.lock:
            self.metrics.gke_push_requests.inc((str(code),))

    async def handle(self, request: web.BaseRequest, conn: Connection) -> web.StreamResponse:
        verifier = self.verifier
        if verifier is not None:
            try:
                self._precheck(request)
                await asyncio.get_running_loop().run_in_executor(
                    self._workers, verifier.verify, request.headers.get("Authorization")
                )
            except _Refusal as r:
                return self._refuse(r, request, conn)
            except TokenRefused as t:
                refusal = _Refusal(
                    t.code,
                    t.reason,
                    "a bearer token is required" if t.code == 401 else "the token was refused",
                    close=True,
                    headers={"WWW-Authenticate": "Bearer"} if t.code == 401 else None,
                )
                return self._refuse(refusal, request, conn)
        return await super().handle(request, conn)

    def _process(self, body: bytes, peer: str) -> BatchResult:
        try:
            items, message_id = push_items(body, self.decoder)
        except ValueError as e:
            raise _Refusal(400, "not_a_push_message", str(e)) from None
        context = f"{peer} message {message_id}" if message_id else peer
        try:
            result = self.pipeline.process(items, SOURCE, context=context)
        except Exception:
            log.exception("GKE push message failed", extra={"peer": peer})
            raise _Refusal(500, "internal_error", "the message could not be processed") from None
        if result.refused:
            raise _Refusal(
                503,
                "spool_full",
                "the exporter cannot take the message now; retry",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return result


# --- pull -----------------------------------------------------------------------


class Message(Protocol):
    """What the pull source uses of google.cloud.pubsub_v1's Message."""

    @property
    def data(self) -> bytes: ...

    @property
    def message_id(self) -> str: ...

    def ack(self) -> None: ...

    def nack(self) -> None: ...


class StreamingPull(Protocol):
    """What the pull source uses of the future ``subscribe`` returns."""

    def cancel(self) -> None: ...

    def result(self, timeout: float | None = None) -> Any: ...


class Subscriber(Protocol):
    """What the pull source uses of google.cloud.pubsub_v1.SubscriberClient."""

    def subscribe(
        self, subscription: str, callback: Callable[[Any], None], flow_control: Any = ...
    ) -> StreamingPull: ...


class PubSubPull:
    """Pulls GKE audit entries from a Pub/Sub subscription.

    ``subscribe`` leases at most ``max_messages`` messages (``max_bytes``)
    at once; they are handed to one thread that batches up to
    ``batch_size`` of them (or what came within ``flush_interval`` seconds),
    runs the pipeline once per batch and then acks every message of the
    batch (nacks them all when the pipeline refused it or failed).
    ``subscriber`` replaces the client (tests); without it,
    google-cloud-pubsub's SubscriberClient uses Google's default
    credentials.
    """

    def __init__(
        self,
        *,
        subscription: str,
        pipeline: Pipeline,
        decoder: Decoder,
        metrics: AuditMetrics,
        max_messages: int = 1000,
        max_bytes: int = 64 << 20,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        subscriber: Subscriber | None = None,
    ) -> None:
        if not re.fullmatch(r"projects/[^/]+/subscriptions/[^/]+", subscription):
            raise ValueError(
                "gke.subscription: must be projects/<project>/subscriptions/<name>, "
                f"got {subscription!r}"
            )
        if max_messages < 1 or max_bytes < 1 or batch_size < 1 or flush_interval <= 0:
            raise ValueError("gke: max_messages, max_bytes, batch_size and flush_interval > 0")
        self.subscription = subscription
        self.pipeline = pipeline
        self.decoder = decoder
        self.metrics = metrics
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        if subscriber is None:
            try:
                import google.cloud.pubsub_v1  # type: ignore[import-untyped]  # noqa: F401
            except ImportError as e:
                raise _import_error(e) from None
        self._subscriber = subscriber
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._future: StreamingPull | None = None
        self._thread: threading.Thread | None = None
        self.failed_log = RateLimitedLog(log)
        with metrics.lock:
            for outcome in ("acked", "nacked"):
                metrics.gke_pull_messages.init((outcome,))

    def start(self) -> None:
        try:
            from google.cloud import pubsub_v1
        except ImportError as e:
            raise _import_error(e) from None
        subscriber = self._subscriber or pubsub_v1.SubscriberClient()
        flow = pubsub_v1.types.FlowControl(max_messages=self.max_messages, max_bytes=self.max_bytes)
        self._thread = threading.Thread(target=self._run, name="gke-pull", daemon=True)
        self._thread.start()
        self._future = subscriber.subscribe(
            self.subscription, callback=self._queue.put, flow_control=flow
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop pulling; the messages in hand are still processed and acked."""
        if self._future is not None:
            self._future.cancel()
            try:
                self._future.result(timeout=timeout)
            except Exception:  # a cancelled stream ends with an error
                log.debug("streaming pull ended", exc_info=True)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            messages = self._collect()
            if messages:
                self.process(messages)
            elif self._stop.is_set():
                return

    def _collect(self) -> list[Any]:
        """Up to batch_size messages: the first one waited for (a bounded
        time, to notice stop), the others for what remains of flush_interval."""
        try:
            first = self._queue.get(timeout=self.flush_interval)
        except queue.Empty:
            return []
        messages = [first]
        deadline = time.monotonic() + self.flush_interval
        while len(messages) < self.batch_size:
            left = deadline - time.monotonic()
            try:
                messages.append(
                    self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return messages

    def process(self, messages: Sequence[Message]) -> BatchResult | None:
        """One batch through the pipeline, then ack (taken) or nack (refused)."""
        batch = Batch()
        for m in messages:
            batch.add_all(message_items(m.data, self.decoder))
        try:
            result = self.pipeline.process(batch, SOURCE, context=self.subscription)
        except Exception:
            log.exception("GKE pull batch failed", extra={"subscription": self.subscription})
            result = None
        taken = result is not None and not result.refused
        for m in messages:
            if taken:
                m.ack()
            else:
                m.nack()
        with self.metrics.lock:
            self.metrics.gke_pull_messages.inc(("acked" if taken else "nacked",), len(messages))
        if result is not None and result.refused:
            self.failed_log.warning(
                "pipeline refused a pulled batch (spool full); nacked for redelivery",
                subscription=self.subscription,
                messages=len(messages),
            )
        return result
