"""Structured logging (logfmt or JSON) and a rate limiter for noisy inputs.

Values often come from clients (request paths, verbs, peer addresses), so
every control character (C0 including NUL, DEL, C1) is escaped in both
formats, in every field and the message alike: a line is one line of
printable text, and the JSON and logfmt parsers read the value back as it
was.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _RESERVED and not key.startswith("_"):
            out[key] = value
    if record.exc_info and record.exc_info[0] is not None:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


# A logfmt value with any of these is quoted (and escaped as a JSON string).
_NEEDS_QUOTES = re.compile(r'[\s="\\\x00-\x1f\x7f-\x9f]')
# JSON escapes C0 itself; DEL and C1 are legal raw in JSON strings, but not
# wanted in a log line. They only occur inside strings, so escaping them in
# the encoded text keeps it valid JSON.
_DEL_C1 = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def _json(value: Any) -> str:
    """``value`` as JSON text without a raw control character."""
    return orjson.dumps(value, default=str, option=_JSON_OPTIONS).decode().translate(_DEL_C1)


def _logfmt_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        text = _json(value)
    else:
        text = value if isinstance(value, str) else str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        return _json(text)
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _json(_fields(record))


def setup(fmt: str = "logfmt", level: str = "info") -> None:
    """Configure the root logger once, at start-up, from the validated config."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RateLimitedLog:
    """Log at most ``burst`` messages per ``interval`` seconds; say how many
    were suppressed when the next window opens. Bad input can arrive at
    100k lines per second and must not flood the exporter's own logs."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._window_start = -float("inf")
        self._sent = 0
        self._suppressed = 0

    def warning(self, msg: str, **fields: Any) -> bool:
        return self.log(logging.WARNING, msg, **fields)

    def log(self, level: int, msg: str, **fields: Any) -> bool:
        """Log ``msg`` at ``level`` unless the window's burst is spent; True
        when it was logged."""
        with self._lock:
            now = self.clock()
            if now - self._window_start >= self.interval:
                if self._suppressed:
                    self.logger.log(
                        level, "suppressed similar messages", extra={"suppressed": self._suppressed}
                    )
                self._window_start = now
                self._sent = 0
                self._suppressed = 0
            if self._sent >= self.burst:
                self._suppressed += 1
                return False
            self._sent += 1
        self.logger.log(level, msg, extra=fields)
        return True


def safe_url(url: str) -> str:
    """``url`` without any user:password part, for logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc="***@" + host))
