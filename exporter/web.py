"""The exporter's own endpoints: /metrics, /healthz, /readyz and a landing page.

Plain HTTP only: serving /metrics over TLS (or behind authentication) is out
of scope; in Kubernetes, scrape it on the pod network or put a proxy such as
kube-rbac-proxy in front of it.

- ``/metrics``: the registry in the Prometheus text format, or OpenMetrics
  when the scraper's ``Accept`` header asks for it; gzip when accepted.
- ``/healthz``: 200 while the process serves requests (liveness).
- ``/readyz``: 200 when ``ready()`` is true, 503 otherwise (readiness).
- ``/``: a small HTML page linking the above.

Served by the asynchronous server of exporter/httpserver.py; the metrics are
encoded in a worker thread, so a large registry does not stall the loop.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from . import __version__
from .httpserver import Connection, HTTPServer, Limits
from .logs import RateLimitedLog
from .metrics import HTTPMetrics

log = logging.getLogger(__name__)


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
        *,
        limits: Limits | None = None,
        http_metrics: HTTPMetrics | None = None,
    ) -> None:
        """``http_metrics``: the process's HTTP families (registered on
        ``registry`` when not given)."""
        self.registry = registry
        self.ready = ready
        self._refused_log = RateLimitedLog(log)
        self._server = HTTPServer(
            listen_address,
            self,
            name="web",
            metrics=http_metrics or HTTPMetrics(registry),
            limits=limits,
        )

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def start(self) -> None:
        self._server.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        self._server.shutdown(timeout)

    # --- the endpoint ---------------------------------------------------------

    async def handle(self, request: web.BaseRequest, conn: Connection) -> web.StreamResponse:
        page = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/": self._landing,
        }.get(request.path)
        if page is None:
            return _text(404, "not found")
        if request.method not in ("GET", "HEAD"):
            response = _text(405, "method not allowed")
            response.headers["Allow"] = "GET, HEAD"
            return response
        return await page(request)

    def refuse(self, status: int, reason: str, message: str, peer: str) -> web.StreamResponse:
        self._refused_log.warning(
            "request refused", peer=peer, code=status, reason=reason, error=message
        )
        return _text(status, f"{reason}: {message}")

    async def _metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        try:
            output, content_type = await asyncio.get_running_loop().run_in_executor(
                None, self._encode, accept, gzipped
            )
        except Exception:
            log.exception("collecting metrics failed")
            return _text(500, "collecting metrics failed")
        response = web.Response(status=200, body=output)
        response.headers["Content-Type"] = content_type
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
        return response

    def _encode(self, accept: str, gzipped: bool) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        output = encoder(self.registry)
        if gzipped:
            output = gzip.compress(output, compresslevel=6)
        return output, content_type

    async def _healthz(self, request: web.BaseRequest) -> web.StreamResponse:
        return _text(200, "ok")

    async def _readyz(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            ready = self.ready()
        except Exception:
            log.exception("readiness check failed")
            ready = False
        return _text(200, "ready") if ready else _text(503, "not ready")

    async def _landing(self, request: web.BaseRequest) -> web.StreamResponse:
        response = web.Response(status=200, body=LANDING_PAGE)
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response


def _text(status: int, text: str) -> web.Response:
    response = web.Response(status=status, body=(text + "\n").encode())
    response.headers["Content-Type"] = TEXT
    return response
