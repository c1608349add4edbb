"""The webhook source over real TLS on loopback, fed real audit events."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.event import AuditEvent, Decoder
from exporter.metrics import AuditMetrics, HTTPMetrics
from exporter.pipeline import Pipeline, Processor, Sink
from exporter.sources.webhook import RETRY_AFTER_SECONDS, WebhookServer

from .sinks import Spool
from .tlsutil import PKI, issue, make_ca, make_pki

pytestmark = pytest.mark.timeout(120)

PATH = "/audit"


# --- fixtures and helpers ------------------------------------------------------


@pytest.fixture(scope="module")
def demo_items(corpora: Path) -> list[dict[str, Any]]:
    """audit2rbac's demo log as EventList items: without kind/apiVersion, as
    the API server's webhook backend sends them."""
    items = []
    with open(corpora / "audit2rbac-demo" / "demo.log", "rb") as f:
        for line in f:
            obj = json.loads(line)
            obj.pop("kind")
            obj.pop("apiVersion")
            items.append(obj)
    keys = {(i["auditID"], i["stage"]) for i in items}
    assert len(keys) == len(items), "the fixture assumes distinct events"
    return items


def event_list(items: Sequence[dict[str, Any]]) -> bytes:
    # The demo events are audit.k8s.io/v1beta1, so is the list.
    doc = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "metadata": {}}
    return json.dumps({**doc, "items": list(items)}).encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Harness:
    registry: CollectorRegistry
    metrics: AuditMetrics
    server: WebhookServer
    context: ssl.SSLContext | None

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str) -> float:
        """The sum of every sample named ``name`` (all label values)."""
        return sum(s.value for m in self.registry.collect() for s in m.samples if s.name == name)

    def answered(self, code: int) -> float:
        return self.value("kube_audit_webhook_requests_total", code=str(code))

    def post(self, body: bytes | None, **kw: Any) -> Reply:
        return request(self.address, body, **{"context": self.context, **kw})

    def tls_connect(self, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
        sock = socket.create_connection(self.address, timeout=30)
        ctx = context or self.context
        assert ctx is not None
        return ctx.wrap_socket(sock, server_hostname="127.0.0.1")


Factory = Callable[..., Harness]


@pytest.fixture
def webhook(pki: PKI) -> Iterator[Factory]:
    """Builds started webhook servers (each with its own registry) and shuts
    them down after the test."""
    servers: list[WebhookServer] = []

    def make(
        *,
        sinks: Sequence[Sink] = (),
        processors: Sequence[Processor] = (),
        client_ca: bool = True,
        insecure: bool = False,
        context: ssl.SSLContext | None = None,
        **kw: Any,
    ) -> Harness:
        registry = CollectorRegistry()
        metrics = AuditMetrics(registry)
        pipeline = Pipeline(metrics, sinks=sinks, processors=processors)
        tls: dict[str, Any] = {
            "tls_cert_file": None if insecure else str(pki.server.cert_file),
            "tls_key_file": None if insecure else str(pki.server.key_file),
            "client_ca_file": str(pki.ca.cert_file) if client_ca and not insecure else None,
        }
        tls.update({k: kw.pop(k) for k in list(kw) if k in tls})
        server = WebhookServer(
            listen_address="127.0.0.1:0",
            path=PATH,
            pipeline=pipeline,
            decoder=Decoder(),
            metrics=metrics,
            insecure=insecure,
            http_metrics=HTTPMetrics(registry),
            **tls,
            **kw,
        )
        servers.append(server)
        server.start()
        if context is None and not insecure:
            context = pki.client_context()
        return Harness(registry, metrics, server, context)

    yield make
    for server in servers:
        server.shutdown(10)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    address: tuple[str, int],
    body: bytes | None,
    *,
    context: ssl.SSLContext | None,
    method: str = "POST",
    path: str = PATH,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Reply:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(*address, timeout=30)
    else:
        conn = http.client.HTTPSConnection(*address, timeout=30, context=context)
    try:
        conn.request(
            method, path, body=body, headers={"Content-Type": content_type, **(headers or {})}
        )
        return read_reply(conn.getresponse())
    finally:
        conn.close()


def read_reply(resp: http.client.HTTPResponse) -> Reply:
    body = resp.read()
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)


def raw_exchange(sock: socket.socket, data: bytes) -> Reply:
    """Send bytes as they are and read one response."""
    sock.sendall(data)
    resp = http.client.HTTPResponse(sock, method="POST")
    resp.begin()
    return read_reply(resp)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket
    timeout is the deadline)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.01)


def requests_counted(items: Sequence[dict[str, Any]]) -> int:
    """Requests the demo events stand for: one per ResponseComplete."""
    return sum(1 for i in items if i["stage"] == "ResponseComplete")


# --- accepting -----------------------------------------------------------------


def test_eventlist_from_a_client_with_a_certificate_is_accepted_and_counted(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook()
    batch = demo_items[:400]
    reply = h.post(event_list(batch))
    assert reply.status == 200
    assert reply.json() == {"accepted": 400, "duplicates": 0, "invalid": 0}
    assert h.value("kube_audit_events_total", source="webhook") == 400
    assert h.total("kube_audit_requests_total") == requests_counted(batch)
    assert h.answered(200) == 1
    assert h.total("kube_audit_webhook_requests_total") == 1


def test_retried_batch_counts_as_duplicates_not_as_requests(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook()
    body = event_list(demo_items[100:200])
    assert h.post(body).status == 200
    requests = h.total("kube_audit_requests_total")
    assert requests == requests_counted(demo_items[100:200])
    reply = h.post(body)
    assert reply.status == 200
    assert reply.json() == {"accepted": 0, "duplicates": 100, "invalid": 0}
    assert h.value("kube_audit_events_duplicate_total", source="webhook") == 100
    assert h.value("kube_audit_events_total", source="webhook") == 100
    assert h.total("kube_audit_requests_total") == requests
    assert h.answered(200) == 2


def test_bad_items_inside_a_good_eventlist_are_counted_and_answered_200(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook()
    missing_stage = {k: v for k, v in demo_items[1].items() if k != "stage"}
    reply = h.post(event_list([demo_items[0], missing_stage, {"kind": "Pod"}]))
    assert reply.status == 200
    assert reply.json() == {"accepted": 1, "duplicates": 0, "invalid": 2}
    assert h.value("kube_audit_events_invalid_total", source="webhook", reason="missing_field") == 1
    assert h.value("kube_audit_events_invalid_total", source="webhook", reason="not_an_event") == 1


def test_chunked_body_is_accepted(webhook: Factory, demo_items: list[dict[str, Any]]) -> None:
    h = webhook()
    body = event_list(demo_items[:50])
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with h.tls_connect() as sock:
        reply = raw_exchange(sock, head + framed)
    assert reply.status == 200
    assert h.value("kube_audit_events_total", source="webhook") == 50


def test_full_spool_answers_503_with_retry_after_and_the_retry_is_counted_once(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    spool = Spool(full=True)
    h = webhook(sinks=[spool])
    body = event_list(demo_items[:30])
    reply = h.post(body)
    assert reply.status == 503
    assert reply.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert h.value("kube_audit_events_total", source="webhook") == 0
    spool.full = False
    assert h.post(body).status == 200
    assert len(spool.taken) == 30
    assert h.value("kube_audit_events_total", source="webhook") == 30
    assert h.value("kube_audit_events_duplicate_total", source="webhook") == 0
    assert h.answered(503) == 1
    assert h.answered(200) == 1


# --- client certificates -------------------------------------------------------


def test_client_without_certificate_is_refused_at_the_handshake(
    webhook: Factory, pki: PKI, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook()
    # TLS 1.2: the server's refusal ends the handshake itself.
    ctx12 = pki.client_context(with_cert=False)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        h.tls_connect(ctx12).close()
    # TLS 1.3: the client finishes its side first and sees the alert on read.
    with pytest.raises(OSError):
        h.post(event_list(demo_items[:5]), context=pki.client_context(with_cert=False))
    assert h.total("kube_audit_webhook_requests_total") == 0
    assert h.value("kube_audit_events_total", source="webhook") == 0
    # Both refusals are counted by reason (the server sees them on its own time).
    wait_until(lambda: h.total("kube_audit_webhook_tls_handshake_failures_total") == 2)
    assert h.post(event_list(demo_items[:5])).status == 200


def test_client_certificate_from_another_ca_is_refused(
    webhook: Factory, pki: PKI, tmp_path: Path, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook()
    other_ca = make_ca(tmp_path / "other", "other-ca")
    intruder = issue(other_ca, tmp_path / "other", "kube-apiserver", server=False)
    ctx = pki.client_context(with_cert=False)
    ctx.load_cert_chain(str(intruder.cert_file), str(intruder.key_file))
    ctx12 = pki.client_context(with_cert=False)
    ctx12.load_cert_chain(str(intruder.cert_file), str(intruder.key_file))
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        h.tls_connect(ctx12).close()
    with pytest.raises(OSError):
        h.post(event_list(demo_items[:5]), context=ctx)
    assert h.total("kube_audit_webhook_requests_total") == 0
    assert h.value("kube_audit_events_total", source="webhook") == 0


def test_without_client_ca_any_tls_client_is_served(
    webhook: Factory, pki: PKI, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook(client_ca=False, context=pki.client_context(with_cert=False))
    assert h.post(event_list(demo_items[:5])).status == 200


# --- refusals ------------------------------------------------------------------

MAX_BODY = 64 << 10


def _oversized(h: Harness, items: list[dict[str, Any]]) -> Reply:
    body = event_list(items)
    assert len(body) > MAX_BODY
    return h.post(body)


def _oversized_never_sent(h: Harness, items: list[dict[str, Any]]) -> Reply:
    # Refused from Content-Length alone: the body is never sent, never read.
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000000\r\n\r\n"
    ).encode()
    with h.tls_connect() as sock:
        reply = raw_exchange(sock, head)
        assert read_until_closed(sock) == b""  # and the connection is closed
    return reply


def _wrong_content_type(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return h.post(event_list(items[:5]), content_type="text/plain")


def _garbage(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return h.post(b"\x00\xffnot json at all {{{\n\x01")


def _truncated(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return h.post(event_list(items[:5])[:-40])


def _not_an_audit_document(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return h.post(b'{"kind": "Status", "apiVersion": "v1", "status": "Success"}')


def _empty(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return h.post(b"")


def _get(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return h.post(None, method="GET")


def _other_path(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return h.post(event_list(items[:5]), path="/elsewhere")


def _no_length(h: Harness, items: list[dict[str, Any]]) -> Reply:
    head = f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\r\n"
    with h.tls_connect() as sock:
        return raw_exchange(sock, head.encode())


def _oversized_chunked(h: Harness, items: list[dict[str, Any]]) -> Reply:
    body = event_list(items)
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with h.tls_connect() as sock:
        return raw_exchange(sock, head + framed)


def _raw_head(h: Harness, head: str) -> Reply:
    with h.tls_connect() as sock:
        return raw_exchange(sock, head.encode() + b"{}")


def _two_framings(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return _raw_head(
        h,
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    )


def _bad_length(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return _raw_head(
        h,
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Content-Length: -2\r\n\r\n",
    )


def _unknown_transfer_encoding(h: Harness, items: list[dict[str, Any]]) -> Reply:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: gzip, chunked\r\n\r\n"
    )
    with h.tls_connect() as sock:
        return raw_exchange(sock, head.encode() + b"2\r\n{}\r\n0\r\n\r\n")


def _bad_chunk(h: Harness, items: list[dict[str, Any]]) -> Reply:
    return _raw_head(
        h,
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    )


@pytest.mark.parametrize(
    ("send", "code", "reason"),
    [
        (_oversized, 413, "too_large"),
        (_oversized_never_sent, 413, "too_large"),
        (_oversized_chunked, 413, "too_large"),
        (_wrong_content_type, 415, "unsupported_media_type"),
        (_garbage, 400, "invalid_json"),
        (_truncated, 400, "invalid_json"),
        (_not_an_audit_document, 400, "not_an_event"),
        (_empty, 400, "empty_body"),
        (_get, 405, "method_not_allowed"),
        (_other_path, 404, "not_found"),
        (_no_length, 411, "length_required"),
        (_two_framings, 400, "bad_framing"),
        (_bad_length, 400, "bad_framing"),
        (_bad_chunk, 400, "bad_framing"),
        (_unknown_transfer_encoding, 501, "unsupported_transfer_encoding"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_bad_request_is_refused_counted_and_the_server_keeps_serving(
    webhook: Factory,
    demo_items: list[dict[str, Any]],
    send: Callable[[Harness, list[dict[str, Any]]], Reply],
    code: int,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = webhook(max_body_bytes=MAX_BODY)
    secret = "SECRET-BODY-MARKER"
    items = [{**i, "requestURI": i["requestURI"] + "?" + secret} for i in demo_items[:300]]
    with caplog.at_level(logging.INFO):
        reply = send(h, items)
    assert reply.status == code
    assert reply.json()["error"] == reason
    if code == 405:
        assert reply.headers["allow"] == "POST"
    assert h.answered(code) == 1
    assert h.value("kube_audit_events_total", source="webhook") == 0
    assert any(r.getMessage() == "webhook request refused" for r in caplog.records)
    assert secret not in caplog.text
    # The refusal changed nothing for the next client.
    good = demo_items[300:320]
    assert h.post(event_list(good)).status == 200
    assert h.value("kube_audit_events_total", source="webhook") == 20
    assert h.answered(200) == 1


def test_pipeline_failure_answers_500_and_the_server_keeps_serving(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    failures = [RuntimeError("a bug in a processor")]

    def flaky(events: list[AuditEvent]) -> None:
        if failures:
            raise failures.pop()

    h = webhook(processors=[flaky])
    body = event_list(demo_items[:10])
    assert h.post(body).status == 500
    assert h.post(body).status == 200
    assert h.answered(500) == 1
    assert h.value("kube_audit_events_total", source="webhook") == 10


def test_expect_100_continue_is_refused_before_the_body_is_sent(webhook: Factory) -> None:
    h = webhook()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
        "Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with h.tls_connect() as sock:
        assert raw_exchange(sock, head).status == 415


def test_expect_100_continue_then_body_is_accepted(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook()
    body = event_list(demo_items[:10])
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with h.tls_connect() as sock:
        sock.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100")
        assert raw_exchange(sock, body).status == 200
    assert h.value("kube_audit_events_total", source="webhook") == 10


# --- connections ---------------------------------------------------------------


def test_keep_alive_serves_several_batches_on_one_connection(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook()
    conn = http.client.HTTPSConnection(*h.address, timeout=30, context=h.context)
    try:
        first_socket = None
        for n in range(5):
            batch = demo_items[n * 50 : (n + 1) * 50]
            conn.request(
                "POST", PATH, body=event_list(batch), headers={"Content-Type": "application/json"}
            )
            reply = read_reply(conn.getresponse())
            assert reply.status == 200
            assert "close" not in reply.headers.get("connection", "")
            first_socket = first_socket or conn.sock
            assert conn.sock is first_socket  # not reconnected
    finally:
        conn.close()
    assert h.value("kube_audit_events_total", source="webhook") == 250
    assert h.answered(200) == 5


def test_many_concurrent_clients_are_all_served(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    # More clients than connection slots: the excess waits its turn.
    h = webhook(max_connections=8)
    clients = 32
    size = len(demo_items) // clients
    batches = [demo_items[i * size : (i + 1) * size] for i in range(clients)]
    start = threading.Barrier(clients)

    def client(batch: list[dict[str, Any]]) -> int:
        body = event_list(batch)
        start.wait(30)
        return h.post(body).status

    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(client, batches))
    assert statuses == [200] * clients
    assert h.value("kube_audit_events_total", source="webhook") == clients * size
    assert h.answered(200) == clients


def test_slow_and_silent_clients_do_not_stop_others_and_are_cut_after_the_read_timeout(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook(read_timeout=0.5, handshake_timeout=0.5, max_connections=8)
    started = time.monotonic()
    # Headers sent, then the body stalls after one byte.
    stalled_body = h.tls_connect()
    stalled_body.sendall(
        f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{".encode()
    )
    # Half the headers, then nothing.
    stalled_head = h.tls_connect()
    stalled_head.sendall(f"POST {PATH} HTTP/1.1\r\nHost: local".encode())
    # Connected, never starts the TLS handshake.
    silent = socket.create_connection(h.address, timeout=30)
    for n in range(5):
        assert h.post(event_list(demo_items[n * 10 : (n + 1) * 10])).status == 200
    with stalled_body, stalled_head, silent:
        assert read_until_closed(stalled_body).startswith(b"HTTP/1.1 408 ")
        assert read_until_closed(stalled_head) == b""
        assert read_until_closed(silent) == b""
    assert time.monotonic() - started >= 0.5
    assert h.answered(408) == 1
    assert h.answered(200) == 5
    assert h.value("kube_audit_events_total", source="webhook") == 50


def test_connections_over_the_limit_wait_for_a_slot_without_a_thread(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook(read_timeout=0.5, max_connections=2)
    threads = threading.active_count()
    started = time.monotonic()
    idle = [h.tls_connect() for _ in range(2)]  # hold both slots, never send a request
    waiting = socket.create_connection(h.address, timeout=30)
    with waiting, idle[0], idle[1]:
        # The third client is served once a stalled connection is cut.
        assert h.context is not None
        with h.context.wrap_socket(waiting, server_hostname="127.0.0.1") as sock:
            body = event_list(demo_items[:10])
            head = (
                f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            assert raw_exchange(sock, head + body).status == 200
        assert time.monotonic() - started >= 0.5
        # No thread per connection (the pipeline's pool may have started one).
        assert threading.active_count() <= threads + 1
    closed = sum(
        h.value("kube_audit_http_connections_closed_total", listener="webhook", reason=r)
        for r in ("header_timeout", "too_many")
    )
    assert closed >= 1


# --- certificate reload --------------------------------------------------------


def test_replaced_certificate_is_served_to_new_connections(
    webhook: Factory,
    tmp_path: Path,
    pki: PKI,
    demo_items: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The server's files live in tmp_path so the test can replace them.
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(pki.server.cert_file.read_bytes())
    key_file.write_bytes(pki.server.key_file.read_bytes())
    h = webhook(tls_cert_file=str(cert_file), tls_key_file=str(key_file), tls_reload_interval=0.0)

    def served_certificate() -> bytes:
        with h.tls_connect() as sock:
            der = sock.getpeercert(binary_form=True)
        assert der is not None
        return der

    assert served_certificate() == pki.server.der

    # Files that cannot be read (a Secret being rewritten): the old certificate stays.
    key_file.rename(tmp_path / "tls.key.moved")
    with caplog.at_level(logging.ERROR, logger="exporter.tlsreload"):
        assert served_certificate() == pki.server.der
        assert served_certificate() == pki.server.der
    assert sum("cannot read TLS files" in r.getMessage() for r in caplog.records) == 1
    (tmp_path / "tls.key.moved").rename(key_file)
    caplog.clear()

    # A broken file is refused: the old certificate stays, the error is logged once.
    with caplog.at_level(logging.ERROR, logger="exporter.tlsreload"):
        cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n")

        def broken_logged() -> bool:
            assert served_certificate() == pki.server.der
            return any("cannot be loaded" in r.getMessage() for r in caplog.records)

        wait_until(broken_logged)
    assert sum("cannot be loaded" in r.getMessage() for r in caplog.records) == 1

    # A new pair (same CA, new key) is picked up by the next connections.
    new = issue(pki.ca, tmp_path / "new", "kube-audit-exporter", server=True, stem="tls")
    key_file.write_bytes(new.key_file.read_bytes())
    cert_file.write_bytes(new.cert_file.read_bytes())
    wait_until(lambda: served_certificate() == new.der)
    assert h.post(event_list(demo_items[:5])).status == 200


# --- shutdown ------------------------------------------------------------------


def test_graceful_shutdown_lets_the_request_in_flight_finish(
    pki: PKI, demo_items: list[dict[str, Any]]
) -> None:
    entered, release = threading.Event(), threading.Event()

    def hold(events: list[AuditEvent]) -> None:
        entered.set()
        release.wait(60)

    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    server = WebhookServer(
        listen_address="127.0.0.1:0",
        path=PATH,
        pipeline=Pipeline(metrics, processors=[hold]),
        decoder=Decoder(),
        metrics=metrics,
        tls_cert_file=str(pki.server.cert_file),
        tls_key_file=str(pki.server.key_file),
        client_ca_file=str(pki.ca.cert_file),
        insecure=False,
    )
    server.start()
    address = server.address
    replies: list[Reply] = []
    poster = threading.Thread(
        target=lambda: replies.append(
            request(address, event_list(demo_items[:20]), context=pki.client_context())
        )
    )
    poster.start()
    stopper = threading.Thread(target=server.shutdown, args=(60,))
    try:
        assert entered.wait(30)
        stopper.start()

        def refusing() -> bool:
            try:
                socket.create_connection(address, timeout=5).close()
            except ConnectionRefusedError:
                return True
            except ConnectionResetError:
                pass  # queued while the listener was closing; ask again
            return False

        wait_until(refusing)  # no longer accepting...
        assert stopper.is_alive()  # ...but still waiting for the batch in flight
    finally:
        release.set()
        poster.join(30)
        if stopper.ident is None:  # failed before shutting down
            server.shutdown(10)
        else:
            stopper.join(30)
    assert not stopper.is_alive()
    assert [r.status for r in replies] == [200]
    assert replies[0].headers["connection"] == "close"
    assert registry.get_sample_value("kube_audit_events_total", {"source": "webhook"}) == 20


def test_shutdown_closes_idle_keep_alive_connections_at_once(
    webhook: Factory, demo_items: list[dict[str, Any]]
) -> None:
    h = webhook(read_timeout=60)
    conn = http.client.HTTPSConnection(*h.address, timeout=30, context=h.context)
    try:
        conn.request(
            "POST",
            PATH,
            body=event_list(demo_items[:5]),
            headers={"Content-Type": "application/json"},
        )
        assert conn.getresponse().read()
        assert conn.sock is not None
        started = time.monotonic()
        h.server.shutdown(30)
        # Well before the 60 s an idle connection could otherwise stay.
        assert time.monotonic() - started < 20
        assert conn.sock.recv(1) == b""
    finally:
        conn.close()


# --- configuration -------------------------------------------------------------


def test_insecure_serves_plain_http(webhook: Factory, demo_items: list[dict[str, Any]]) -> None:
    h = webhook(insecure=True)
    assert not h.server.tls
    assert h.post(event_list(demo_items[:10])).status == 200
    assert h.value("kube_audit_events_total", source="webhook") == 10


def _construct(**kw: Any) -> WebhookServer:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    args: dict[str, Any] = {
        "listen_address": "127.0.0.1:0",
        "path": PATH,
        "pipeline": Pipeline(metrics),
        "decoder": Decoder(),
        "metrics": metrics,
        "tls_cert_file": None,
        "tls_key_file": None,
        "client_ca_file": None,
        "insecure": False,
    }
    return WebhookServer(**{**args, **kw})


def test_refuses_to_start_without_a_certificate_unless_insecure(pki: PKI) -> None:
    with pytest.raises(ValueError, match=r"certificate and key are required.*insecure"):
        _construct()
    with pytest.raises(ValueError, match="certificate and key are required"):
        _construct(tls_cert_file=str(pki.server.cert_file))
    with pytest.raises(ValueError, match="cannot be combined"):
        _construct(insecure=True, tls_cert_file=str(pki.server.cert_file))


def test_refuses_to_start_with_unloadable_tls_files(pki: PKI, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read TLS file"):
        _construct(
            tls_cert_file=str(tmp_path / "missing.crt"), tls_key_file=str(pki.server.key_file)
        )
    mismatched = issue(pki.ca, tmp_path, "other", server=True)
    with pytest.raises(ValueError, match="cannot load TLS certificate"):
        _construct(tls_cert_file=str(pki.server.cert_file), tls_key_file=str(mismatched.key_file))
    with pytest.raises(ValueError, match="cannot load client CA"):
        _construct(
            tls_cert_file=str(pki.server.cert_file),
            tls_key_file=str(pki.server.key_file),
            client_ca_file=str(pki.server.key_file),
        )


def _expiry(cert_file: Path) -> float:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc.timestamp()


def test_certificate_expiry_of_the_serving_and_the_presented_client_certificate(
    webhook: Factory, pki: PKI, demo_items: list[dict[str, Any]]
) -> None:
    name = "kube_audit_tls_certificate_expiry_timestamp_seconds"
    h = webhook()
    assert h.value(name, certificate="serving") == _expiry(pki.server.cert_file)
    # no client has presented a certificate yet: no client sample
    assert h.registry.get_sample_value(name, {"certificate": "client"}) is None
    assert h.post(event_list(demo_items[:1])).status == 200
    assert h.value(name, certificate="client") == _expiry(pki.client.cert_file)
    assert _expiry(pki.client.cert_file) > 0


def test_client_certificate_expiry_keeps_the_earliest_seen_within_the_window(pki: PKI) -> None:
    from exporter.tlsreload import CLIENT_CERT_WINDOW, ReloadingTLSContext

    tls = ReloadingTLSContext(str(pki.server.cert_file), str(pki.server.key_file))
    tls.client_presented({"notAfter": "Jan  2 00:00:00 2030 GMT"}, now=1000.0)
    tls.client_presented({"notAfter": "Jan  1 00:00:00 2031 GMT"}, now=2000.0)
    tls.client_presented({"subject": ()}, now=2000.0)  # no notAfter: ignored
    tls.client_presented(None, now=2000.0)  # no certificate: ignored
    assert tls.client_not_after(now=2000.0) == ssl.cert_time_to_seconds("Jan  2 00:00:00 2030 GMT")
    # the old certificate was last presented more than the window ago
    later = 1000.0 + CLIENT_CERT_WINDOW + 1
    assert tls.client_not_after(now=later) == ssl.cert_time_to_seconds("Jan  1 00:00:00 2031 GMT")
    assert tls.client_not_after(now=2000.0 + CLIENT_CERT_WINDOW + 1) is None


def test_a_plain_http_webhook_exposes_no_certificate_expiry(webhook: Factory) -> None:
    h = webhook(insecure=True)
    assert h.total("kube_audit_tls_certificate_expiry_timestamp_seconds") == 0
    names = {m.name for m in h.registry.collect()}
    assert "kube_audit_tls_certificate_expiry_timestamp_seconds" not in names
