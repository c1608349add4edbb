"""A server :class:`ssl.SSLContext` that follows its certificate files on disk.

Used by the webhook listener (exporter/httpserver.py asks :meth:`current` for
each new connection's handshake). It also knows when certificates expire:
the serving certificate in use, and the client certificates presented in the
last :data:`CLIENT_CERT_WINDOW` seconds (the earliest expiry wins), for
``kube_audit_tls_certificate_expiry_timestamp_seconds``.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_TLS_RELOAD_INTERVAL = 5.0
# Client certificates count for the expiry gauge this long after their last
# handshake: a renewed certificate replaces the old one within an hour.
CLIENT_CERT_WINDOW = 3600.0


class ReloadingTLSContext:
    """A server :class:`ssl.SSLContext` rebuilt when its files change on disk.

    The files are compared by content (a SHA-256 of each) at most every
    ``reload_interval`` seconds, when a connection asks for the context: a
    Kubernetes Secret update (a symlink swap) or cert-manager's renewal is
    picked up without a restart, and a rewrite that keeps size and mtime
    is not missed. When the new files cannot be loaded (a half-written pair,
    a key that does not match) the previous context stays in use, the error
    is logged once, and the files are tried again when they change next.

    With ``client_ca_file`` a client certificate signed by one of its CAs is
    mandatory (``CERT_REQUIRED``). TLS 1.2 is the minimum version.
    """

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        client_ca_file: str | None = None,
        *,
        reload_interval: float = DEFAULT_TLS_RELOAD_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self.reload_interval = reload_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._unreadable = False
        self.serving_not_after: float | None = None
        # client certificate expiry (Unix seconds) -> when it was last presented
        self._clients: dict[float, float] = {}
        # Start-up: any problem is fatal and reported as a ValueError.
        try:
            self._signature = self._read_signature()
        except OSError as e:
            raise ValueError(f"cannot read TLS file {e.filename}: {e.strerror}") from None
        self._context = self._build()
        self._next_check = clock() + reload_interval

    @property
    def files(self) -> tuple[str, ...]:
        return (self.cert_file, self.key_file) + (
            (self.client_ca_file,) if self.client_ca_file else ()
        )

    def _read_signature(self) -> tuple[bytes, ...]:
        sig = []
        for path in self.files:
            with open(path, "rb") as f:
                sig.append(hashlib.sha256(f.read()).digest())
        return tuple(sig)

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_RENEGOTIATION
        ctx.set_alpn_protocols(["http/1.1"])
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        except OSError as e:
            raise ValueError(
                f"cannot load TLS certificate {self.cert_file} with key {self.key_file}: "
                f"{ssl_reason(e)}"
            ) from None
        if self.client_ca_file:
            try:
                ctx.load_verify_locations(cafile=self.client_ca_file)
            except OSError as e:
                raise ValueError(
                    f"cannot load client CA {self.client_ca_file}: {ssl_reason(e)}"
                ) from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        self.serving_not_after = _not_after(self.cert_file)
        return ctx

    def client_presented(self, peercert: object, now: float | None = None) -> None:
        """Note the expiry of a verified client certificate (the dict of
        :meth:`ssl.SSLSocket.getpeercert`); anything else is ignored."""
        if not isinstance(peercert, dict) or not isinstance(peercert.get("notAfter"), str):
            return
        try:
            expiry = float(ssl.cert_time_to_seconds(peercert["notAfter"]))
        except ValueError:
            return
        now = time.time() if now is None else now
        with self._lock:
            self._clients[expiry] = now
            if len(self._clients) > 64:  # keep the most recently presented
                for old in sorted(self._clients, key=self._clients.__getitem__)[:-64]:
                    del self._clients[old]

    def client_not_after(self, now: float | None = None) -> float | None:
        """The earliest expiry among client certificates presented within
        :data:`CLIENT_CERT_WINDOW`; None when none was."""
        now = time.time() if now is None else now
        with self._lock:
            for expiry, seen in list(self._clients.items()):
                if now - seen > CLIENT_CERT_WINDOW:
                    del self._clients[expiry]
            return min(self._clients, default=None)

    def current(self) -> ssl.SSLContext:
        """The context for a new connection, reloaded first if the files changed."""
        now = self.clock()
        with self._lock:
            if now < self._next_check:
                return self._context
            self._next_check = now + self.reload_interval
            try:
                signature = self._read_signature()
            except OSError as e:
                if not self._unreadable:  # once per outage, not per connection
                    self._unreadable = True
                    log.error(
                        "cannot read TLS files; keeping the previous certificate",
                        extra={"file": e.filename, "error": e.strerror},
                    )
                return self._context
            self._unreadable = False
            if signature == self._signature:
                return self._context
            # Remember what was tried, so a bad pair is logged once, not per connection.
            self._signature = signature
            try:
                self._context = self._build()
            except ValueError as e:
                log.error(
                    "TLS files changed but cannot be loaded; keeping the previous certificate",
                    extra={"error": str(e)},
                )
            else:
                log.info("reloaded TLS certificate", extra={"cert_file": self.cert_file})
            return self._context


def ssl_reason(e: OSError) -> str:
    reason = getattr(e, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return e.strerror or str(e)


def _not_after(cert_file: str) -> float | None:
    """The notAfter of the first certificate in ``cert_file`` (Unix seconds)."""
    from cryptography import x509

    try:
        with open(cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()
