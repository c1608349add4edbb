"""One HTTP push to Loki, and what its answer means for the entries in it.

Credentials are read from files on each push (cached by file identity), so a
rotated token is picked up without a restart; their values are never logged
and never part of an exception message.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from .. import __version__
from ..logs import safe_url
from .encode import Body
from .settings import LokiSettings

OK = "ok"
RETRY = "retry"
REJECTED = "rejected"  # 400 and other final 4xx: Loki kept what it could
TOO_LARGE = "too_large"  # 413: split the batch
STOP = "stop"  # 401/403/404/405: configuration is wrong, retrying cannot help

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


class LokiClient:
    def __init__(self, settings: LokiSettings, session: requests.Session | None = None) -> None:
        self.url = settings.push_url
        self.safe_url = safe_url(self.url)
        self.timeout = (settings.connect_timeout, settings.timeout)
        s = session or requests.Session()
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
        # No proxy from the environment: the pushes carry credentials.
        s.trust_env = False
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
        headers = {"Content-Type": body.content_type}
        if body.content_encoding:
            headers["Content-Encoding"] = body.content_encoding
        auth = self._auth_header()
        if auth is not None:
            headers["Authorization"] = auth
        try:
            resp = self.session.post(
                self.url, data=body.data, headers=headers, timeout=self.timeout
            )
        except requests.Timeout:
            return PushResult(RETRY, "timeout", "timeout", "no answer within the timeout")
        except requests.exceptions.SSLError:
            # Certificates can be fixed on the other side: retried, but said.
            return PushResult(RETRY, "tls_error", "tls", "TLS handshake or verification failed")
        except requests.ConnectionError as e:
            return PushResult(RETRY, "connection_error", "connection", _short(type(e).__name__))
        except requests.RequestException as e:
            return PushResult(RETRY, "error", "error", _short(type(e).__name__))
        status = resp.status_code
        code = str(status)
        full = resp.text[: 4 << 20]
        text = _short(full, 2000)
        resp.close()
        if 200 <= status < 300:
            return PushResult(OK, code)
        if status == 400:
            return PushResult(
                REJECTED, code, "rejected", text, None, parse_rejections(full, entries)
            )
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


_STOP_REASONS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "not_found"}


def _short(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."
