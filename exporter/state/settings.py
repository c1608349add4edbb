"""The shared store's settings (the ``state`` config section), the URL's
checks. The URL appears in logs only through exporter.logs.safe_url (no
password); a password in its query string is refused, so that is all."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

SCHEMES = ("redis", "rediss", "unix")
# query parameters that would carry a credential past safe_url's userinfo check
_SECRET_PARAMS = frozenset({"password", "username"})


@dataclass(frozen=True, slots=True)
class StateSettings:
    url: str = ""
    prefix: str = "kube-audit:"
    timeout: float = 0.25
    dedupe_ttl: float = 900.0
    tls_ca_file: str = ""
    # Keys outlive their window (or TTL) by this much: event time and the
    # store's clock may disagree by the events' lag.
    grace: float = 300.0


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a state URL, or None. Never quotes the URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as e:
        return f"not a URL ({e})"
    if parts.scheme not in SCHEMES:
        return "must start with redis://, rediss:// or unix://"
    if parts.scheme == "unix":
        if not parts.path:
            return "unix:// needs a socket path (unix:///run/redis.sock)"
    elif not parts.hostname:
        return "needs a host (redis://HOST:PORT/DB)"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name in _SECRET_PARAMS:
            return f"put the {name} in the URL's user part (redis://user:pass@host), not ?{name}="
    db = parts.path.lstrip("/") if parts.scheme != "unix" else ""
    if db and not db.isdigit():
        return f"the path must be a database number, not {db!r}"
    return None
