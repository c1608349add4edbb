"""The metrics endpoint and the shared server's address handling."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from exporter.httpserver import format_address, parse_listen_address
from exporter.metrics import AuditMetrics
from exporter.web import MetricsServer

pytestmark = pytest.mark.timeout(60)

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


Factory = Callable[..., MetricsServer]


@pytest.fixture
def web() -> Iterator[Factory]:
    servers: list[MetricsServer] = []

    def make(
        registry: CollectorRegistry | None = None,
        ready: Callable[[], bool] = lambda: True,
        listen_address: str = "127.0.0.1:0",
    ) -> MetricsServer:
        server = MetricsServer(listen_address, registry or CollectorRegistry(), ready)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.shutdown(10)


def get(
    address: tuple[str, int],
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host or address[0], address[1], timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_metrics_are_served_in_the_text_format(web: Factory) -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    with metrics.lock:
        metrics.webhook_requests.inc(("200",), 3)
    server = web(registry)
    status, headers, body = get(server.address, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {
        tuple(s.labels.items()): s.value for s in families["kube_audit_webhook_requests"].samples
    }
    assert samples[(("code", "200"),)] == 3
    assert registry.get_sample_value("kube_audit_webhook_requests_total", {"code": "200"}) == 3


def test_metrics_are_served_as_openmetrics_when_asked(web: Factory) -> None:
    registry = CollectorRegistry()
    Counter("scrapes_seen", "A counter.", registry=registry).inc()
    server = web(registry)
    status, headers, body = get(server.address, "/metrics", headers={"Accept": OPENMETRICS})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b"scrapes_seen_total 1.0" in body
    # And the plain format for a scraper that does not ask.
    _, headers, body = get(server.address, "/metrics", headers={"Accept": "text/plain"})
    assert headers["content-type"].startswith("text/plain")
    assert not body.endswith(b"# EOF\n")


def test_metrics_are_gzipped_when_accepted(web: Factory) -> None:
    registry = CollectorRegistry()
    Counter("scrapes_seen", "A counter.", registry=registry).inc()
    server = web(registry)
    status, headers, body = get(server.address, "/metrics", headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert b"scrapes_seen_total 1.0" in gzip.decompress(body)


def test_healthz_answers_while_the_process_runs(web: Factory) -> None:
    server = web(ready=lambda: False)
    assert get(server.address, "/healthz")[::2] == (200, b"ok\n")


def test_readyz_follows_the_callable(web: Factory) -> None:
    ready = threading.Event()
    server = web(ready=ready.is_set)
    assert get(server.address, "/readyz")[0] == 503
    ready.set()
    assert get(server.address, "/readyz")[::2] == (200, b"ready\n")
    ready.clear()
    assert get(server.address, "/readyz")[0] == 503


def test_readyz_is_503_when_the_callable_fails(web: Factory) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    server = web(ready=broken)
    assert get(server.address, "/readyz")[0] == 503
    assert get(server.address, "/healthz")[0] == 200


def test_landing_page_links_the_endpoints(web: Factory) -> None:
    server = web()
    status, headers, body = get(server.address, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    for link in (b'href="metrics"', b'href="healthz"', b'href="readyz"'):
        assert link in body


def test_unknown_paths_and_methods_are_refused(web: Factory) -> None:
    server = web()
    assert get(server.address, "/nope")[0] == 404
    status, headers, _ = get(server.address, "/metrics", method="POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    status, _, body = get(server.address, "/metrics", method="HEAD")
    assert (status, body) == (200, b"")
    assert get(server.address, "/metrics")[0] == 200


def test_listening_on_all_interfaces_with_port_only(web: Factory) -> None:
    server = web(listen_address=":0")
    assert server.address[1] != 0
    assert get(("127.0.0.1", server.address[1]), "/healthz")[0] == 200


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_listening_on_a_bracketed_ipv6_address(web: Factory) -> None:
    try:
        server = web(listen_address="[::1]:0")
    except OSError as e:
        pytest.skip(f"cannot bind ::1: {e}")
    host, port = server.address
    assert host == "::1"
    assert get(server.address, "/healthz")[0] == 200
    assert format_address(server.address) == f"[::1]:{port}"


def test_shutdown_stops_accepting(web: Factory) -> None:
    server = web()
    address = server.address
    assert get(address, "/healthz")[0] == 200
    server.shutdown(10)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
    server.shutdown(10)  # a second call is harmless


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        (":9100", ("", 9100)),
        ("[::1]:8443", ("::1", 8443)),
        ("[::]:0", ("::", 0)),
        ("localhost:8080", ("localhost", 8080)),
    ],
)
def test_listen_address_parsing(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9100", "expected host:port"),
        ("127.0.0.1:", "not a number"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:70000", "out of range"),
        ("::1:8443", "in brackets"),
        ("[]:8443", "empty IPv6"),
    ],
)
def test_bad_listen_addresses_are_reported(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen_address(value)


def test_bad_listen_address_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="in brackets"):
        MetricsServer("::1:9100", CollectorRegistry(), lambda: True)
