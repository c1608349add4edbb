"""One HTTP push to Loki, and what its answer means for the entries in it.

Credentials are read from files on each push (cached by file identity), so a
rotated token is picked up without a restart; their values are never logged
and never part of an exception message.

Proxies come from HTTP_PROXY, HTTPS_PROXY and NO_PROXY (either case), read
once at start; nothing else is taken from the environment (no .netrc).
Besides the connect and read timeouts, each request has a deadline for the
whole exchange: when it passes, its socket is shut down, so a server that
trickles its answer cannot hold a push for longer.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import os
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import requests.adapters
import requests.utils
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from .. import __version__
from ..logs import safe_url
from . import proto
from .encode import Body
from .settings import LokiSettings

OK = "ok"
RETRY = "retry"
REJECTED = "rejected"  # 400 and other final 4xx: Loki kept what it could
TOO_LARGE = "too_large"  # 413: split the batch
STOP = "stop"  # 401/403/404/405: configuration or a gateway; retried on a timer
# 400 because Loki takes no structured metadata: send the same entries
# again without it.
NO_METADATA = "no_metadata"

# Reasons an entry is refused, pre-initialised in the metrics. Loki's own
# reason names where it has one (pkg/validation/validate.go).
REJECT_REASONS = (
    "greater_than_max_sample_age",
    "too_far_in_future",
    "out_of_order",
    "too_far_behind",
    "line_too_long",
    "invalid_labels",
    "structured_metadata",
    "missing_enforced_labels",
    "blocked_ingestion",
    "too_large",  # a single entry answered 413
    "retries_exhausted",  # max_retries reached
    "other",
)

# (reason, substring of Loki's error message)
_CLASSIFY = (
    ("greater_than_max_sample_age", "timestamp too old"),
    ("too_far_in_future", "timestamp too new"),
    ("too_far_behind", "too far behind"),
    ("out_of_order", "out of order"),
    ("line_too_long", "max entry size"),
    ("invalid_labels", "error parsing labels"),
    ("invalid_labels", "at least one label pair"),
    ("invalid_labels", "label name too long"),
    ("invalid_labels", "label value too long"),
    ("invalid_labels", "duplicate label name"),
    ("invalid_labels", "label names; limit"),
    # Loki 2.9's default, and Loki 3 on a schema before v13 (validate.go's
    # DisallowedStructuredMetadataErrorMsg): resent without metadata.
    ("structured_metadata_disabled", "structured metadata, but this feature is disallowed"),
    ("structured_metadata", "structured metadata"),
    ("missing_enforced_labels", "missing required labels"),
    ("blocked_ingestion", "ingestion blocked"),
)
_GROUPED = re.compile(r"^(\d+) errors like: ")
_TOTAL = re.compile(r"total ignored: (\d+) out of (\d+)")
_IGNORED = re.compile(r"entry with timestamp .*? ignored, reason: '(.*?)'(?: for stream|,|$)")


def classify(message: str) -> str:
    low = message.lower()
    for reason, needle in _CLASSIFY:
        if needle in low:
            return reason
    return "other"


def parse_rejections(body: str, entries: int) -> dict[str, int]:
    """How many entries of a push Loki refused, by reason, from a 400 body.

    Two shapes exist. The distributor's validation errors, grouped::

        3 errors like: entry for stream '{...}' has timestamp too old: ...; 1 errors like: ...

    (a single error has no ``N errors like:`` prefix). The ingester's, one
    line per refused entry (possibly capped) and a total::

        entry with timestamp ... ignored, reason: 'entry out of order' for stream: {...},
        total ignored: 2 out of 5

    Counts are capped at ``entries``; a body that says nothing countable is
    taken to refuse the whole push, reason ``other``.
    """
    counts: Counter[str] = Counter()
    text = body.strip()
    totals = list(_TOTAL.finditer(text))
    if totals:
        listed: Counter[str] = Counter(classify(m.group(1)) for m in _IGNORED.finditer(text))
        total = sum(int(m.group(1)) for m in totals)
        counts.update(listed)
        rest = total - sum(listed.values())
        if rest > 0:
            # Loki lists at most max_returned_errors entries; the others had
            # the same kind of problem as far as anyone can tell.
            common = listed.most_common(1)[0][0] if listed else "other"
            counts[common] += rest
    elif text:
        parts = re.split(r"; (?=\d+ errors like: )", text) if "errors like: " in text else [text]
        for part in parts:
            m = _GROUPED.match(part)
            n = int(m.group(1)) if m else 1
            counts[classify(part[m.end() :] if m else part)] += n
    if not counts:
        return {"other": entries}
    # Never more than were sent.
    out: dict[str, int] = {}
    left = entries
    for reason, n in counts.most_common():
        take = min(n, left)
        if take:
            out[reason] = take
            left -= take
    return out


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: str
    # HTTP status as text, or the kind of transport error: requests_total{code}.
    code: str
    # Why it failed (push_failures_total{reason}); empty on success.
    reason: str = ""
    detail: str = ""
    retry_after: float | None = None
    rejected: dict[str, int] = field(default_factory=dict)


class LokiSetupError(Exception):
    """A start-up problem with the Loki output (an unreadable credential file)."""


class _FileSecret:
    """A credential read from a file, re-read when the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sig: tuple[int, int, int] | None = None
        self._value = ""
        self.read()

    def signature(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> str:
        try:
            sig = self.signature()
            if sig != self._sig:
                with open(self.path, encoding="utf-8") as f:
                    self._value = f.read().strip()
                self._sig = sig
        except OSError as e:
            # Keep the last good value; say which file, never what it held.
            if self._sig is None:
                raise LokiSetupError(f"cannot read {self.path}: {e.strerror}") from None
        return self._value


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Watch:
    """The socket of the request a client is making, so that a deadline can
    cut it short from another thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.expired = False

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# The watch of the push the current thread is making (set by LokiClient.push).
_current = threading.local()


def _watched(sock: Any) -> None:
    watch: _Watch | None = getattr(_current, "watch", None)
    if watch is not None and sock is not None:
        with watch.lock:
            watch.sock = sock
            expired = watch.expired
        if expired:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _watched(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watched(self.sock)  # a kept-alive connection: connect() is not called
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _watched(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watched(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections report their socket to the watch."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class LokiClient:
    def __init__(self, settings: LokiSettings, session: requests.Session | None = None) -> None:
        self.url = settings.push_url
        self.safe_url = safe_url(self.url)
        self.timeout = (settings.connect_timeout, settings.timeout)
        self.deadline = settings.request_deadline
        self.protocol = settings.protocol
        s = session or requests.Session()
        if session is None:
            adapter = _WatchedAdapter()
            s.mount("http://", adapter)
            s.mount("https://", adapter)
        s.headers["User-Agent"] = f"kube-audit-exporter/{__version__}"
        s.headers.update(settings.headers)
        if settings.tenant:
            s.headers["X-Scope-OrgID"] = settings.tenant
        if settings.insecure_skip_verify:
            s.verify = False
        elif settings.ca_file:
            s.verify = settings.ca_file
        if settings.cert_file:
            s.cert = (settings.cert_file, settings.key_file)
        for path in (settings.ca_file, settings.cert_file, settings.key_file):
            if path and not os.access(path, os.R_OK):
                raise LokiSetupError(f"cannot read {path}")
        # Only the proxy settings come from the environment (HTTP_PROXY,
        # HTTPS_PROXY, NO_PROXY), never .netrc credentials.
        s.trust_env = False
        self.proxies: dict[str, str] = requests.utils.get_environ_proxies(self.url)
        self.session = s
        self._user = settings.basic_auth_user
        self._password = (
            _FileSecret(settings.basic_auth_password_file)
            if settings.basic_auth_password_file
            else None
        )
        self._token = (
            _FileSecret(settings.bearer_token_file) if settings.bearer_token_file else None
        )

    def credentials_signature(self) -> tuple[object, ...]:
        """Changes when a credential file changes (to resume after a 401)."""
        out: list[object] = []
        for secret in (self._password, self._token):
            if secret is not None:
                try:
                    out.append(secret.signature())
                except OSError:
                    out.append(None)
        return tuple(out)

    def _auth_header(self) -> str | None:
        if self._token is not None:
            return "Bearer " + self._token.read()
        if self._password is not None:
            pair = f"{self._user}:{self._password.read()}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        return None

    def push(self, body: Body, entries: int) -> PushResult:
        """One request, within the deadline; what its answer means."""
        watch = _Watch()
        timer = threading.Timer(self.deadline, watch.expire)
        timer.daemon = True
        _current.watch = watch
        timer.start()
        try:
            result = self._push(body, entries)
        finally:
            timer.cancel()
            _current.watch = None
        if watch.expired and result.outcome == RETRY:
            return PushResult(
                RETRY, "timeout", "timeout", f"no complete answer within {self.deadline:g}s"
            )
        return result

    def _push(self, body: Body, entries: int) -> PushResult:
        headers = {"Content-Type": body.content_type}
        if body.content_encoding:
            headers["Content-Encoding"] = body.content_encoding
        auth = self._auth_header()
        if auth is not None:
            headers["Authorization"] = auth
        try:
            resp = self.session.post(
                self.url,
                data=body.data,
                headers=headers,
                timeout=self.timeout,
                proxies=self.proxies,
            )
            status = resp.status_code
            data = resp.content[: 4 << 20]
            full = data.decode("utf-8", "replace")
        except requests.Timeout:
            return PushResult(RETRY, "timeout", "timeout", "no answer within the timeout")
        except requests.exceptions.SSLError:
            # Certificates can be fixed on the other side: retried, but said.
            return PushResult(RETRY, "tls_error", "tls", "TLS handshake or verification failed")
        except requests.ConnectionError as e:
            return PushResult(RETRY, "connection_error", "connection", _short(type(e).__name__))
        except requests.RequestException as e:
            return PushResult(RETRY, "error", "error", _short(type(e).__name__))
        code = str(status)
        text = _short(full, 2000)
        resp.close()
        if self.protocol == "otlp":
            return otlp_result(status, code, data, text, entries, resp.headers)
        if status == BLOCKED_STATUS or (200 <= status < 300 and _BLOCKED in full.lower()):
            # Loki 3.2+ answers a blocked tenant with a 2xx (260 by default,
            # blocked_ingestion_status_code) so that clients do not retry;
            # the entries are dropped all the same.
            return PushResult(REJECTED, code, "blocked", text, None, {"blocked_ingestion": entries})
        if 200 <= status < 300:
            return PushResult(OK, code)
        if status == 400:
            rejected = parse_rejections(full, entries)
            if "structured_metadata_disabled" in rejected:
                return PushResult(NO_METADATA, code, "rejected", text, None, rejected)
            return PushResult(REJECTED, code, "rejected", text, None, rejected)
        if status in (401, 403, 404, 405):
            return PushResult(STOP, code, _STOP_REASONS[status], text)
        if status == 413:
            return PushResult(TOO_LARGE, code, "too_large", text)
        if status in (408, 425, 429) or status >= 500:
            reason = "rate_limited" if status == 429 else f"http_{status // 100}xx"
            if status in (408, 425):
                reason = "timeout"
            return PushResult(
                RETRY, code, reason, text, _retry_after(resp.headers.get("Retry-After"))
            )
        return PushResult(REJECTED, code, "rejected", text, None, {"other": entries})


BLOCKED_STATUS = 260
_BLOCKED = "ingestion blocked for user"


def otlp_result(
    status: int, code: str, data: bytes, text: str, entries: int, headers: Any
) -> PushResult:
    """What an OTLP/HTTP answer means (the OTLP specification's rules):
    2xx is success, except for the records a ``partialSuccess`` names as
    rejected; 429, 502, 503 and 504 are retried (after any Retry-After);
    401, 403, 404 and 405 stop as for Loki; 413 splits; the rest is final."""
    if 200 <= status < 300:
        rejected = _otlp_partial(data, headers.get("Content-Type", ""))
        if rejected:
            return PushResult(
                REJECTED, code, "rejected", text, None, {"other": min(rejected, entries)}
            )
        return PushResult(OK, code)
    if status in (401, 403, 404, 405):
        return PushResult(STOP, code, _STOP_REASONS[status], text)
    if status == 413:
        return PushResult(TOO_LARGE, code, "too_large", text)
    if status in (408, 429, 502, 503, 504):
        reason = {408: "timeout", 429: "rate_limited"}.get(status, "http_5xx")
        return PushResult(RETRY, code, reason, text, _retry_after(headers.get("Retry-After")))
    if status >= 500:
        return PushResult(RETRY, code, "http_5xx", text)
    return PushResult(REJECTED, code, "rejected", text, None, {"other": entries})


def _otlp_partial(data: bytes, content_type: str) -> int:
    """rejected_log_records of an ExportLogsServiceResponse's partial_success
    (field 1, its field 1), in protobuf or JSON; 0 when there is none."""
    if "protobuf" in content_type:
        try:
            for number, partial in proto.fields(data):
                if number == 1 and isinstance(partial, bytes):
                    for n, value in proto.fields(partial):
                        if n == 1 and isinstance(value, int):
                            return value
        except ValueError:
            pass
        return 0
    m = re.search(rb'"rejected_?[lL]og_?[rR]ecords"\s*:\s*"?(\d+)', data)
    return int(m.group(1)) if m else 0


_STOP_REASONS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "not_found"}


def _short(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."
