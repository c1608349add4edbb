"""The HTTP layer under attack: floods of idle and slow connections, malformed
requests, huge and slow bodies, fuzzed requests, against the webhook's
mutual-TLS port and the metrics port, on loopback.

Waits are measured and printed (``pytest -s`` shows them); the only time
bound asserted is a generous one. Every connection the server cuts must be
counted in ``kube_audit_http_connections_closed_total{listener,reason}``.
"""

# The webhook harness's fixtures are imported from tests/test_webhook.py.
# ruff: noqa: F811

from __future__ import annotations

import http.client
import logging
import resource
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.httpserver import Limits
from exporter.metrics import HTTPMetrics
from exporter.web import MetricsServer
from tests.flood import Flood, tcp, tls
from tests.test_webhook import (  # noqa: F401 (fixtures)
    PATH,
    Factory,
    Harness,
    demo_items,
    event_list,
    pki,
    raw_exchange,
    read_until_closed,
    wait_until,
    webhook,
)
from tests.tlsutil import PKI

pytestmark = pytest.mark.timeout(300)

# A valid client must be answered well within this, whatever the flood.
PROMPT = 10.0


@pytest.fixture(autouse=True, scope="module")
def _enough_descriptors() -> None:
    """Both ends of 2,000 connections live in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3 * 2000 + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def cuts(registry: CollectorRegistry, listener: str, reason: str) -> float:
    value = registry.get_sample_value(
        "kube_audit_http_connections_closed_total", {"listener": listener, "reason": reason}
    )
    return value or 0.0


def open_connections(registry: CollectorRegistry, listener: str) -> float:
    return registry.get_sample_value("kube_audit_http_connections", {"listener": listener}) or 0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


# --- the webhook's mutual-TLS port -----------------------------------------------


@pytest.mark.parametrize(
    ("sockets", "max_connections"),
    [(200, None), (2000, None), (2000, 100)],
    ids=["200-idle", "2000-idle", "2000-idle-over-the-limit-of-100"],
)
def test_idle_sockets_without_a_client_hello_do_not_delay_a_client_with_a_certificate(
    webhook: Factory,
    demo_items: list[dict[str, Any]],
    sockets: int,
    max_connections: int | None,
) -> None:
    limits = {"max_connections": max_connections} if max_connections else {}
    h = webhook(handshake_timeout=3.0, **limits)
    with Flood(tcp(h.address), sockets, replace=True) as flood:
        held = min(sockets, max_connections or sockets)
        wait_until(lambda: open_connections(h.registry, "webhook") >= 0.9 * held)
        reply, wait = timed(lambda: h.post(event_list(demo_items[:50])))
        print(f"\n{sockets} idle sockets (limit {max_connections}): answered in {wait:.3f} s")
        assert reply.status == 200
        assert wait < PROMPT
        # Each silent socket is cut at the handshake deadline (or to make room),
        # counted, and replaced by the flood.
        wait_until(lambda: flood.closed_by_server >= sockets)
    assert h.value("kube_audit_events_total", source="webhook") == 50
    timeouts = cuts(h.registry, "webhook", "handshake_timeout")
    too_many = cuts(h.registry, "webhook", "too_many")
    assert timeouts + too_many >= sockets
    if max_connections:
        assert too_many > 0
    else:
        assert timeouts >= sockets


@pytest.mark.parametrize("sockets", [200, 2000])
def test_slow_headers_over_mutual_tls_do_not_delay_a_client_and_are_cut(
    webhook: Factory, pki: PKI, demo_items: list[dict[str, Any]], sockets: int
) -> None:
    h = webhook(header_timeout=3.0)
    head = f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".encode()
    with Flood(tls(h.address, pki.client_context()), sockets, dribble=head, interval=0.5) as flood:
        reply, wait = timed(lambda: h.post(event_list(demo_items[:50])))
        print(f"\n{sockets} slow TLS clients dribbling headers: answered in {wait:.3f} s")
        assert reply.status == 200
        assert wait < PROMPT
        wait_until(lambda: flood.closed_by_server >= sockets, timeout=60)
    assert cuts(h.registry, "webhook", "header_timeout") >= sockets


def test_client_without_certificate_is_cut_and_counted(webhook: Factory, pki: PKI) -> None:
    h = webhook()
    ctx = pki.client_context(with_cert=False)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        h.tls_connect(ctx).close()
    wait_until(lambda: cuts(h.registry, "webhook", "client_cert") == 1)
    # Not TLS at all: a handshake error of another kind.
    with socket.create_connection(h.address, timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_until_closed(sock)
    wait_until(lambda: cuts(h.registry, "webhook", "tls_error") == 1)


# --- the metrics port ----------------------------------------------------------------


@pytest.fixture
def metrics_server() -> Iterator[Callable[..., tuple[MetricsServer, CollectorRegistry]]]:
    servers: list[MetricsServer] = []

    def make(**limits: Any) -> tuple[MetricsServer, CollectorRegistry]:
        registry = CollectorRegistry()
        server = MetricsServer(
            "127.0.0.1:0",
            registry,
            lambda: True,
            limits=Limits(**limits),
            http_metrics=HTTPMetrics(registry),
        )
        servers.append(server)
        server.start()
        return server, registry

    yield make
    for server in servers:
        server.shutdown(10)


def scrape(address: tuple[str, int]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("sockets", "dribble"),
    [(200, b""), (2000, b""), (200, b"GET /metrics HTTP/1.1\r\nX-Slow: "), (2000, b"GET / ")],
    ids=["200-idle", "2000-idle", "200-slow", "2000-slow"],
)
def test_idle_and_slow_sockets_do_not_delay_metrics(
    metrics_server: Callable[..., tuple[MetricsServer, CollectorRegistry]],
    sockets: int,
    dribble: bytes,
) -> None:
    server, registry = metrics_server(header_timeout=2.0)
    flood = Flood(tcp(server.address), sockets, replace=True, dribble=dribble, interval=0.5)
    with flood:
        (status, body), wait = timed(lambda: scrape(server.address))
        kind = "slow" if dribble else "idle"
        print(f"\n{sockets} {kind} sockets on the metrics port: /metrics in {wait:.3f} s")
        assert status == 200
        assert b"kube_audit_http_connections_closed_total" in body
        assert wait < PROMPT
        wait_until(lambda: flood.closed_by_server >= sockets, timeout=60)
    counted = cuts(registry, "web", "header_timeout") + cuts(registry, "web", "too_many")
    assert counted >= sockets


# --- malformed requests ---------------------------------------------------------


MALFORMED = b"POST http://[::1/audit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def test_malformed_target_is_answered_400_counted_and_logged_once(
    webhook: Factory,
    metrics_server: Callable[..., tuple[MetricsServer, CollectorRegistry]],
    demo_items: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = webhook(insecure=True)
    web, registry = metrics_server()
    for listener, address, reg in (
        ("webhook", h.address, h.registry),
        ("web", web.address, registry),
    ):
        caplog.clear()
        with (
            caplog.at_level(logging.DEBUG, logger="exporter"),
            socket.create_connection(address, timeout=30) as sock,
        ):
            reply = raw_exchange(sock, MALFORMED + b"Content-Length: 2\r\n\r\n{}")
        assert reply.status == 400
        assert cuts(reg, listener, "bad_request") == 1
        lines = [r for r in caplog.records if r.levelno >= logging.INFO]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert lines[0].exc_info is None
        # A flood of them is logged at a bounded rate, never with a traceback.
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="exporter"):
            for _ in range(50):
                with socket.create_connection(address, timeout=30) as sock:
                    assert raw_exchange(sock, MALFORMED + b"\r\n").status == 400
        assert cuts(reg, listener, "bad_request") == 51
        assert len([r for r in caplog.records if r.levelno >= logging.INFO]) <= 11
        assert not any(r.exc_info for r in caplog.records)
    assert h.answered(400) == 51
    assert h.post(event_list(demo_items[:5])).status == 200
    assert scrape(web.address)[0] == 200


def test_oversized_header_is_answered_431_and_counted(webhook: Factory) -> None:
    h = webhook(max_header_bytes=1024)
    with h.tls_connect() as sock:
        reply = raw_exchange(
            sock, f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 4096}\r\n\r\n".encode()
        )
    assert reply.status == 431
    assert reply.json()["error"] == "header_too_large"
    assert cuts(h.registry, "webhook", "header_too_large") == 1


# --- bodies -------------------------------------------------------------------------


def test_huge_body_is_answered_413_without_being_read(webhook: Factory) -> None:
    """A client that claims 10 GiB and keeps sending while it waits is
    answered 413 from Content-Length. The client sends and reads in one
    thread (select, non-blocking): one TLS connection must not be read and
    written by two threads at once, which made this test flaky."""
    h = webhook(max_body_bytes=1 << 20)
    claimed = 10 << 30
    sent = 0
    reply = b""
    chunk = b"x" * 65536
    with h.tls_connect() as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {claimed}\r\n\r\n".encode()
        )
        sock.setblocking(False)
        sending = True
        deadline = time.monotonic() + 30
        while b"\r\n" not in reply and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 1.0)
            if readable or sock.pending():
                try:
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    data = None
                except OSError:
                    break
                if data == b"":
                    break  # closed
                reply += data or b""
            if writable and sending and sent < claimed:
                try:
                    sent += sock.send(chunk)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except OSError:
                    sending = False  # the server stopped reading and closed
    print(f"\n413 after {sent >> 20} MiB of a {claimed >> 30} GiB body")
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert sent < claimed // 4
    assert cuts(h.registry, "webhook", "body_too_large") == 1


def test_chunked_body_over_the_limit_is_cut_at_the_limit(webhook: Factory) -> None:
    h = webhook(max_body_bytes=256 << 10)
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    with h.tls_connect() as sock:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        reply = raw_exchange(sock, head + chunk * 8)
    assert reply.status == 413
    assert cuts(h.registry, "webhook", "body_too_large") == 1


def test_slow_body_is_cut_at_the_read_deadline(webhook: Factory) -> None:
    h = webhook(read_timeout=1.0)
    with h.tls_connect() as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
        )
        sock.settimeout(0.1)
        answer = b""
        deadline = time.monotonic() + 30
        while not answer and time.monotonic() < deadline:
            try:
                sock.send(b" ")  # one byte at a time, never the whole body
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert cuts(h.registry, "webhook", "body_timeout") == 1
    assert h.answered(408) == 1


# --- fuzzing --------------------------------------------------------------------------

METHODS = st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "PRI", "G\x00T", ""])
TARGETS = st.one_of(
    st.sampled_from(
        [PATH, "/", "/metrics", "*", "http://[::1/audit", "//", "/%zz", "/a?b#c", "http://x"]
    ),
    st.text(max_size=40),
)
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "", "http/1.1"])
HEADERS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(
                ["Content-Length", "Transfer-Encoding", "Content-Type", "Expect", "Host"]
            ),
            st.sampled_from(["-1", "0", "5", "chunked", "gzip, chunked", "application/json"]),
        ),
        st.tuples(st.text(max_size=12), st.text(max_size=20)),
    ),
    max_size=6,
)


def _compose(method: str, target: str, version: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} {version}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


REQUESTS = st.one_of(
    st.builds(_compose, METHODS, TARGETS, VERSIONS, HEADERS),
    st.binary(max_size=200),
)


def _exchange(address: tuple[str, int], data: bytes, body: bytes) -> bytes:
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(data + body)
        return read_until_closed(sock) if data else b""


def _cut_total(registry: CollectorRegistry) -> float:
    return sum(
        s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "kube_audit_http_connections_closed_total"
    )


@pytest.fixture(scope="module")
def fuzz_targets() -> Iterator[list[tuple[str, tuple[str, int], CollectorRegistry]]]:
    """A plain-HTTP webhook and a metrics server with short deadlines."""
    from exporter.event import Decoder
    from exporter.metrics import AuditMetrics
    from exporter.pipeline import Pipeline
    from exporter.sources.webhook import WebhookServer

    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    http_metrics = HTTPMetrics(registry)
    hook = WebhookServer(
        listen_address="127.0.0.1:0",
        path=PATH,
        pipeline=Pipeline(metrics),
        decoder=Decoder(),
        metrics=metrics,
        tls_cert_file=None,
        tls_key_file=None,
        client_ca_file=None,
        insecure=True,
        header_timeout=0.3,
        read_timeout=0.6,
        idle_timeout=0.3,
        http_metrics=http_metrics,
    )
    web = MetricsServer(
        "127.0.0.1:0",
        registry,
        lambda: True,
        limits=Limits(header_timeout=0.3, read_timeout=0.6, idle_timeout=0.3),
        http_metrics=http_metrics,
    )
    hook.start()
    web.start()
    yield [("webhook", hook.address, registry), ("web", web.address, registry)]
    hook.shutdown(10)
    web.shutdown(10)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=REQUESTS, body=st.binary(max_size=64), port=st.sampled_from([0, 1]))
def test_fuzzed_requests_are_answered_or_cut_and_the_server_keeps_serving(
    fuzz_targets: list[tuple[str, tuple[str, int], CollectorRegistry]],
    request: bytes,
    body: bytes,
    port: int,
) -> None:
    _listener, address, registry = fuzz_targets[port]
    before = _cut_total(registry)
    answer = _exchange(address, request, body)
    if request and not answer.startswith(b"HTTP/1."):
        # No answer: then a cut the server counted (a head that never ends).
        wait_until(lambda: _cut_total(registry) > before, timeout=10)
    # A valid request afterwards still works.
    hook_address, web_address = fuzz_targets[0][1], fuzz_targets[1][1]
    valid = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    ).encode()
    assert _exchange(hook_address, valid, b"").startswith(b"HTTP/1.1 400 ")  # empty document
    assert scrape(web_address)[0] == 200
