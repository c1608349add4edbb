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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web

from ..event import Batch, Decoder, InvalidEvent, Item
from ..httpconn import Connection
from ..logs import RateLimitedLog
from ..metrics import AuditMetrics
from ..pipeline import BatchResult, Pipeline
from .webhook import RETRY_AFTER_SECONDS, WebhookServer, _Refusal

log = logging.getLogger(__name__)

SOURCE = "gke"
EXTRA_HINT = "install kube-audit-exporter[gke] (google-auth, google-cloud-pubsub)"
# Google's signing certificates for the ID tokens it issues (PEM, by key id):
# the endpoint google.oauth2.id_token.verify_oauth2_token uses.
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
DEFAULT_CERTS_MAX_AGE = 3600.0
# An unknown key id refetches the certificates at most this often.
CERTS_REFETCH_INTERVAL = 30.0
PUSH_CODES = ("200", "400", "401", "403", "404", "405", "408", "411", "413", "500", "503")
_MAX_AGE = re.compile(r"max-age=([0-9]+)")


class MissingExtra(ValueError):
    """The [gke] extra is not installed (a start-up error, like a bad value)."""


def _import_error(e: ImportError) -> MissingExtra:
    return MissingExtra(f"the GKE source needs {e.name}: {EXTRA_HINT}")


# --- the push token -------------------------------------------------------------


class TokenRefused(Exception):
    """A push request whose bearer token is missing (401) or does not verify (403)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


CertsFetcher = Callable[[], tuple[Mapping[str, str], float]]


class OIDCVerifier:
    """Verifies the OIDC token Pub/Sub puts on each push request.

    The token is a Google-signed JWT (RS256): its ``aud`` must be
    ``audience`` (the push endpoint's URL unless the subscription set
    another), ``iss`` Google's, ``exp`` in the future, and, when
    ``service_account`` is set, ``email`` that account with
    ``email_verified``. Google's certificates are fetched with google-auth's
    transport and kept for their Cache-Control max-age; a token signed by a
    key not among them refetches them (at most every 30 s), since Google
    rotates its keys. ``fetch_certs`` replaces the fetch (tests).
    """

    def __init__(
        self,
        audience: str,
        *,
        service_account: str = "",
        certs_url: str = GOOGLE_CERTS_URL,
        clock_skew: int = 10,
        fetch_certs: CertsFetcher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            from google.auth import jwt  # noqa: F401
        except ImportError as e:
            raise _import_error(e) from None
        if not audience:
            raise ValueError("gke.push_audience: must be set to verify push tokens")
        self.audience = audience
        self.service_account = service_account
        self.certs_url = certs_url
        self.clock_skew = clock_skew
        self._fetch = fetch_certs or self._fetch_from_url
        self._clock = clock
        self._lock = threading.Lock()
        self._certs: Mapping[str, str] = {}
        self._expires = -1.0
        self._fetched = -CERTS_REFETCH_INTERVAL

    def _fetch_from_url(self) -> tuple[Mapping[str, str], float]:
        import google.auth.transport.requests

        response = google.auth.transport.requests.Request()(self.certs_url, method="GET")
        if response.status != 200:
            raise OSError(f"fetching {self.certs_url}: HTTP {response.status}")
        certs = orjson.loads(response.data)
        if type(certs) is not dict or not all(type(v) is str for v in certs.values()):
            raise OSError(f"{self.certs_url}: not a map of key ids to PEM certificates")
        age = _MAX_AGE.search(response.headers.get("Cache-Control", "") or "")
        return certs, float(age.group(1)) if age else DEFAULT_CERTS_MAX_AGE

    def _certs_for(self, kid: str) -> Mapping[str, str]:
        with self._lock:
            now = self._clock()
            stale = now >= self._expires
            unknown = kid not in self._certs and now - self._fetched >= CERTS_REFETCH_INTERVAL
            if stale or unknown:
                try:
                    certs, max_age = self._fetch()
                except Exception as e:
                    if not self._certs:
                        raise TokenRefused(403, "certs_unavailable") from e
                    log.warning(
                        "cannot refresh Google's signing certificates; keeping the last ones",
                        extra={"url": self.certs_url, "error": str(e)[:200]},
                    )
                else:
                    self._certs = dict(certs)
                    self._expires = now + max_age
                self._fetched = now
            return self._certs

    def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """The token's claims; raises TokenRefused (never with the token in it)."""
        from google.auth import jwt

        if not authorization:
            raise TokenRefused(401, "missing_token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise TokenRefused(401, "missing_token")
        try:
            header = jwt.decode_header(token)  # type: ignore[no-untyped-call]
        except Exception:
            raise TokenRefused(403, "malformed_token") from None
        kid = header.get("kid") if type(header) is dict else None
        if type(kid) is not str or header.get("alg") != "RS256":
            raise TokenRefused(403, "malformed_token")
        certs = self._certs_for(kid)
        if kid not in certs:
            raise TokenRefused(403, "unknown_key")
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token,
                certs=certs,
                audience=self.audience,
                clock_skew_in_seconds=self.clock_skew,
            )
        except Exception as e:
            # google-auth's messages name the failed check; they hold no token
            raise TokenRefused(403, _token_problem(str(e))) from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise TokenRefused(403, "wrong_issuer")
        if self.service_account and (
            claims.get("email") != self.service_account or claims.get("email_verified") is not True
        ):
            raise TokenRefused(403, "wrong_service_account")
        return claims


def _token_problem(message: str) -> str:
    text = message.lower()
    for word, reason in (
        ("expired", "expired"),
        ("audience", "wrong_audience"),
        ("signature", "bad_signature"),
        ("early", "not_yet_valid"),
    ):
        if word in text:
            return reason
    return "invalid_token"


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
