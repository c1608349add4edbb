"""The OIDC token Pub/Sub puts on each push request to the GKE source, and
its verification (google-auth, imported lazily: the ``[gke]`` extra).

Apart from exporter/sources/gke.py so that the configuration (which reads
GOOGLE_CERTS_URL as a default) imports neither aiohttp nor the HTTP server.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

# the GKE source's logger: these lines belong to it
log = logging.getLogger("exporter.sources.gke")

EXTRA_HINT = "install kube-audit-exporter[gke] (google-auth, google-cloud-pubsub)"
# Google's signing certificates for the ID tokens it issues (PEM, by key id):
# the endpoint google.oauth2.id_token.verify_oauth2_token uses.
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
DEFAULT_CERTS_MAX_AGE = 3600.0
# An unknown key id refetches the certificates at most this often.
CERTS_REFETCH_INTERVAL = 30.0
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
