"""The exporter's own endpoints: /metrics, /healthz, /readyz and a landing page.

Plain HTTP only: serving /metrics over TLS (or behind authentication) is out
of scope; in Kubernetes, scrape it on the pod network or put a proxy such as
kube-rbac-proxy in front of it.

- ``/metrics``: the registry in the Prometheus text format, or OpenMetrics
  when the scraper's ``Accept`` header asks for it; gzip when accepted.
- ``/healthz``: 200 while the process serves requests (liveness).
- ``/readyz``: 200 when ``ready()`` is true, 503 otherwise (readiness).
- ``/``: a small HTML page linking the above.
"""

from __future__ import annotations

import functools
import gzip
import logging
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from . import __version__
from .httpserver import HTTPServer, RequestHandler

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
READ_TIMEOUT = 30.0

LANDING_PAGE = f"""<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>kube-audit-exporter</title></head>
<body>
<h1>kube-audit-exporter</h1>
<p>Version {__version__}</p>
<ul>
<li><a href="metrics">/metrics</a></li>
<li><a href="healthz">/healthz</a></li>
<li><a href="readyz">/readyz</a></li>
</ul>
</body>
</html>
""".encode()

TEXT = "text/plain; charset=utf-8"


class MetricsServer:
    """Serves the registry and the health endpoints (see the module doc)."""

    def __init__(
        self,
        listen_address: str,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
    ) -> None:
        self.registry = registry
        self.ready = ready
        self._server = HTTPServer(
            listen_address,
            functools.partial(_MetricsHandler, web=self),
            name="web",
            max_connections=MAX_CONNECTIONS,
            read_timeout=READ_TIMEOUT,
        )

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def start(self) -> None:
        self._server.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        self._server.shutdown(timeout)


class _MetricsHandler(RequestHandler):
    def __init__(
        self,
        request: socket.socket,
        client_address: Any,
        server: HTTPServer,
        *,
        web: MetricsServer,
    ) -> None:
        self.web = web
        super().__init__(request, client_address, server)

    def route(self) -> None:
        path = urlsplit(self.path).path
        page = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/": self._landing,
        }.get(path)
        if page is None or self.command not in ("GET", "HEAD"):
            # Bodies are never read here: close rather than parse one as the
            # next request, after draining what the client is still sending.
            self.linger = close = self._unread_body()
            if page is None:
                self.respond(404, b"not found\n", TEXT, close=close)
            else:
                self.respond(
                    405, b"method not allowed\n", TEXT, headers={"Allow": "GET, HEAD"}, close=close
                )
            return
        page()

    def _unread_body(self) -> bool:
        return "Transfer-Encoding" in self.headers or self.headers.get(
            "Content-Length", "0"
        ).strip() not in ("", "0")

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            output = encoder(self.web.registry)
        except Exception:
            log.exception("collecting metrics failed")
            self.respond(500, b"collecting metrics failed\n", TEXT)
            return
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            output = gzip.compress(output, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        self.respond(200, output, content_type, headers=headers)

    def _healthz(self) -> None:
        self.respond(200, b"ok\n", TEXT)

    def _readyz(self) -> None:
        try:
            ready = self.web.ready()
        except Exception:
            log.exception("readiness check failed")
            ready = False
        if ready:
            self.respond(200, b"ready\n", TEXT)
        else:
            self.respond(503, b"not ready\n", TEXT)

    def _landing(self) -> None:
        self.respond(200, LANDING_PAGE, "text/html; charset=utf-8")
