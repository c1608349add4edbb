"""The GKE source: Pub/Sub push with the OIDC token verified (a locally
generated RSA key, its certificate served on loopback the way Google serves
its own), Pub/Sub pull through a fake subscriber (no Pub/Sub emulator can run
here: the client adapter is thin and everything around it is tested), and
identical metrics through the GKE path and the webhook for the same events."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from prometheus_client import CollectorRegistry

from exporter.event import AuditEvent, Decoder
from exporter.gke_entry import entry_to_event
from exporter.metrics import AuditMetrics, HTTPMetrics
from exporter.pipeline import Pipeline
from exporter.sources.gke import OIDCVerifier, PubSubPull, PubSubPushServer, TokenRefused
from exporter.sources.webhook import WebhookServer
from tests.gke_entries import SYSDIG, entry, sysdig_entry, sysdig_files
from tests.sinks import Spool
from tests.test_webhook import request

AUDIENCE = "https://audit.example.com/pubsub"
ACCOUNT = "pubsub-push@demo.iam.gserviceaccount.com"
PATH = "/pubsub"


# --- a signing key and its certificate served like Google's ------------------


@dataclass
class Key:
    kid: str
    pem: bytes
    cert: str

    def sign(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "email": ACCOUNT,
            "email_verified": True,
            "sub": "1234567890",
            "iat": now,
            "exp": now + 3600,
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        signer = crypt.RSASigner.from_string(self.pem, key_id=self.kid)
        return jwt.encode(signer, payload).decode()


def make_key(kid: str) -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Key(kid, pem, cert.public_bytes(serialization.Encoding.PEM).decode())


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {k: make_key(k) for k in ("k1", "k2", "k3")}


@dataclass
class CertsServer:
    """Serves {kid: PEM certificate} as www.googleapis.com/oauth2/v1/certs does."""

    certs: dict[str, str]
    fetches: int = 0
    url: str = ""
    server: http.server.HTTPServer | None = None

    def start(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps(owner.certs).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=21600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth2/v1/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def certs(keys: dict[str, Key]) -> Iterator[CertsServer]:
    server = CertsServer({"k1": keys["k1"].cert})
    server.start()
    yield server
    assert server.server is not None
    server.server.shutdown()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the token ---------------------------------------------------------------------


def test_valid_token_verifies_against_certs_fetched_over_http(
    keys: dict[str, Key], certs: CertsServer
) -> None:
    v = OIDCVerifier(AUDIENCE, service_account=ACCOUNT, certs_url=certs.url)
    claims = v.verify("Bearer " + keys["k1"].sign())
    assert claims["email"] == ACCOUNT
    v.verify("Bearer " + keys["k1"].sign())
    assert certs.fetches == 1  # cached for the Cache-Control max-age


@pytest.mark.parametrize(
    ("make", "code", "reason"),
    [
        (lambda k: None, 401, "missing_token"),
        (lambda k: "Basic dXNlcjpwYXNz", 401, "missing_token"),
        (lambda k: "Bearer not-a-jwt", 403, "malformed_token"),
        (
            lambda k: "Bearer " + k["k1"].sign(aud="https://elsewhere.example.com"),
            403,
            "wrong_audience",
        ),
        (
            lambda k: (
                "Bearer " + k["k1"].sign(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
            ),
            403,
            "expired",
        ),
        (lambda k: "Bearer " + k["k1"].sign(iss="https://evil.example.com"), 403, "wrong_issuer"),
        (
            lambda k: "Bearer " + k["k1"].sign(email="someone@example.com"),
            403,
            "wrong_service_account",
        ),
        (lambda k: "Bearer " + k["k1"].sign(email_verified=False), 403, "wrong_service_account"),
        # signed by another key under the published key id
        (lambda k: "Bearer " + Key("k1", k["k2"].pem, "").sign(), 403, "bad_signature"),
        (lambda k: "Bearer " + k["k3"].sign(), 403, "unknown_key"),
    ],
    ids=[
        "none",
        "basic",
        "garbage",
        "audience",
        "expired",
        "issuer",
        "email",
        "email_unverified",
        "forged",
        "unknown_kid",
    ],
)
def test_bad_tokens_are_refused_with_their_reason(
    keys: dict[str, Key],
    certs: CertsServer,
    make: Callable[[dict[str, Key]], str | None],
    code: int,
    reason: str,
) -> None:
    v = OIDCVerifier(AUDIENCE, service_account=ACCOUNT, certs_url=certs.url)
    with pytest.raises(TokenRefused) as e:
        v.verify(make(keys))
    assert (e.value.code, e.value.reason) == (code, reason)


def test_rotated_key_is_fetched_once_when_first_seen(
    keys: dict[str, Key], certs: CertsServer
) -> None:
    clock = Clock()
    v = OIDCVerifier(AUDIENCE, certs_url=certs.url, clock=clock)
    v.verify("Bearer " + keys["k1"].sign())
    certs.certs = {"k1": keys["k1"].cert, "k2": keys["k2"].cert}  # Google rotates
    clock.now += 60
    assert v.verify("Bearer " + keys["k2"].sign())["aud"] == AUDIENCE
    assert certs.fetches == 2
    # a flood of tokens with an unknown key id does not refetch each time
    for _ in range(5):
        with pytest.raises(TokenRefused):
            v.verify("Bearer " + keys["k3"].sign())
    assert certs.fetches == 2  # none: the last fetch was less than 30 s ago
    clock.now += 31
    for _ in range(5):
        with pytest.raises(TokenRefused):
            v.verify("Bearer " + keys["k3"].sign())
    assert certs.fetches == 3  # once more, then again not for 30 s


def test_certs_kept_when_a_refresh_fails(keys: dict[str, Key]) -> None:
    clock = Clock()
    calls: list[int] = []

    def fetch() -> tuple[dict[str, str], float]:
        calls.append(1)
        if len(calls) > 1:
            raise OSError("unreachable")
        return {"k1": keys["k1"].cert}, 60.0

    v = OIDCVerifier(AUDIENCE, fetch_certs=fetch, clock=clock)
    v.verify("Bearer " + keys["k1"].sign())
    clock.now += 120  # expired: refetch fails, the old certificates stay
    v.verify("Bearer " + keys["k1"].sign())
    assert len(calls) == 2


# --- push --------------------------------------------------------------------------


@dataclass
class Push:
    registry: CollectorRegistry
    server: PubSubPushServer
    spool: Spool
    key: Key

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str) -> float:
        return sum(s.value for m in self.registry.collect() for s in m.samples if s.name == name)

    def post(self, body: bytes, token: str | None = "valid", **kw: Any) -> Any:
        headers = {}
        if token == "valid":
            token = self.key.sign()
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        return request(self.server.address, body, context=None, path=PATH, headers=headers, **kw)


def envelope(obj: dict[str, Any] | bytes, message_id: str = "1") -> bytes:
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return json.dumps(
        {
            "message": {
                "attributes": {"logging.googleapis.com/timestamp": "2024-05-01T10:00:00Z"},
                "data": base64.b64encode(data).decode(),
                "messageId": message_id,
                "publishTime": "2024-05-01T10:00:02.1Z",
            },
            "subscription": "projects/demo/subscriptions/k8s-audit-push",
        }
    ).encode()


@pytest.fixture
def push(keys: dict[str, Key]) -> Iterator[Callable[..., Push]]:
    servers: list[PubSubPushServer] = []

    def make(*, verify: bool = True) -> Push:
        registry = CollectorRegistry()
        metrics = AuditMetrics(registry)
        spool = Spool()
        verifier = None
        if verify:
            verifier = OIDCVerifier(
                AUDIENCE,
                service_account=ACCOUNT,
                fetch_certs=lambda: ({"k1": keys["k1"].cert}, 3600.0),
            )
        server = PubSubPushServer(
            verifier=verifier,
            listen_address="127.0.0.1:0",
            path=PATH,
            pipeline=Pipeline(metrics, sinks=[spool]),
            decoder=Decoder(),
            metrics=metrics,
            tls_cert_file=None,
            tls_key_file=None,
            client_ca_file=None,
            insecure=True,
            http_metrics=HTTPMetrics(registry),
        )
        servers.append(server)
        server.start()
        return Push(registry, server, spool, keys["k1"])

    yield make
    for s in servers:
        s.shutdown(10)


FORBIDDEN = entry(
    "io.k8s.core.v1.secrets.get",
    "core/v1/namespaces/kube-system/secrets/admin-token",
    insert_id="f-1",
    principal="mallory@example.com",
    status={"code": 7},
    granted=False,
)


def test_push_message_with_a_valid_token_is_counted_once_even_when_retried(
    push: Callable[..., Push],
) -> None:
    p = push()
    body = envelope(FORBIDDEN)
    reply = p.post(body)
    assert reply.status == 200
    assert reply.json() == {"accepted": 1, "duplicates": 0, "invalid": 0}
    assert p.value("kube_audit_events_total", source="gke") == 1
    assert (
        p.value(
            "kube_audit_auth_failures_total",
            reason="forbidden",
            verb="get",
            resource="secrets",
            user_kind="human",
        )
        == 1
    )
    # Pub/Sub delivers at least once: the same message again
    assert p.post(envelope(FORBIDDEN, message_id="1")).json()["duplicates"] == 1
    assert p.total("kube_audit_requests_total") == 1
    assert p.value("kube_audit_events_duplicate_total", source="gke") == 1
    assert p.value("kube_audit_gke_push_requests_total", code="200") == 2
    assert len(p.spool.taken) == 1


def test_push_without_or_with_a_bad_token_takes_nothing(
    push: Callable[..., Push], keys: dict[str, Key], caplog: pytest.LogCaptureFixture
) -> None:
    p = push()
    caplog.set_level(logging.DEBUG)
    missing = p.post(envelope(FORBIDDEN), token=None)
    forged = Key("k1", keys["k2"].pem, "").sign()
    bad = p.post(envelope(FORBIDDEN), token=forged)
    assert (missing.status, bad.status) == (401, 403)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert bad.json()["error"] == "bad_signature"
    assert p.total("kube_audit_events_total") == 0
    assert p.spool.taken == []
    assert p.value("kube_audit_gke_push_requests_total", code="401") == 1
    assert p.value("kube_audit_gke_push_requests_total", code="403") == 1
    assert forged not in caplog.text and forged.split(".")[2] not in caplog.text


def test_push_when_the_spool_is_full_is_503_then_taken_on_retry(
    push: Callable[..., Push],
) -> None:
    p = push()
    p.spool.full = True
    reply = p.post(envelope(FORBIDDEN))
    assert reply.status == 503 and "retry-after" in reply.headers
    assert p.total("kube_audit_requests_total") == 0
    p.spool.full = False
    assert p.post(envelope(FORBIDDEN)).json() == {"accepted": 1, "duplicates": 0, "invalid": 0}
    assert p.total("kube_audit_requests_total") == 1


def test_push_envelope_problems_are_400_and_foreign_entries_acknowledged(
    push: Callable[..., Push],
) -> None:
    p = push()
    assert p.post(b'{"message": {"data": "%%%"}}').status == 400
    assert p.post(b'{"message": {}}').status == 400
    assert p.post(b"[1, 2]").status == 400
    # a LogEntry of another service: acknowledged (a retry would not fix it), counted
    other = entry("google.container.v1.ClusterManager.GetCluster", "projects/p/clusters/c")
    other["resource"]["type"] = "gke_cluster"
    other["protoPayload"]["serviceName"] = "container.googleapis.com"
    reply = p.post(envelope(other))
    assert reply.status == 200 and reply.json()["invalid"] == 1
    assert p.value("kube_audit_events_invalid_total", source="gke", reason="not_an_event") == 1
    assert p.value("kube_audit_gke_push_requests_total", code="400") == 3


def test_push_with_payload_unwrapping_reads_the_bare_entry(push: Callable[..., Push]) -> None:
    p = push()
    reply = p.post(json.dumps(FORBIDDEN).encode(), content_type="application/octet-stream")
    assert reply.json() == {"accepted": 1, "duplicates": 0, "invalid": 0}


# --- identical metrics through the GKE path and through the webhook ----------------

REQUEST_FAMILIES = (
    "kube_audit_requests_total",
    "kube_audit_auth_failures_total",
    "kube_audit_user_requests_total",
    "kube_audit_source_auth_failures_total",
    "kube_audit_request_duration_seconds_bucket",
    "kube_audit_rule_matches_total",
)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in registry.collect()
        for s in m.samples
        if s.name in REQUEST_FAMILIES
    }


def test_push_feeds_the_same_metrics_as_the_webhook_for_the_same_events(
    push: Callable[..., Push],
) -> None:
    entries = [sysdig_entry(p) for p in sysdig_files()] + [
        FORBIDDEN,
        entry(
            "io.k8s.core.v1.namespaces.list",
            "core/v1/namespaces",
            insert_id="u-1",
            principal=None,
            status={"code": 16},
            granted=None,
        ),
    ]
    p = push()
    for i, e in enumerate(entries):
        assert p.post(envelope(e, message_id=str(i))).status == 200

    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    webhook = WebhookServer(
        listen_address="127.0.0.1:0",
        path="/audit",
        pipeline=Pipeline(metrics),
        decoder=Decoder(),
        metrics=metrics,
        tls_cert_file=None,
        tls_key_file=None,
        client_ca_file=None,
        insecure=True,
        http_metrics=HTTPMetrics(registry),
    )
    webhook.start()
    try:
        items = [entry_to_event(e) for e in entries]
        body = json.dumps(
            {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}
        ).encode()
        assert request(webhook.address, body, context=None, path="/audit").status == 200
    finally:
        webhook.shutdown(10)
    ours, theirs = samples(p.registry), samples(registry)
    # 27 entries: the exec entry is the start of a stream (ResponseStarted), not counted
    assert sum(v for (n, _), v in ours.items() if n == "kube_audit_requests_total") == 26
    assert ours == theirs
    assert p.value("kube_audit_events_total", source="gke") == registry.get_sample_value(
        "kube_audit_events_total", {"source": "webhook"}
    )


# --- pull ----------------------------------------------------------------------------


@dataclass
class FakeMessage:
    data: bytes
    message_id: str
    acked: int = 0
    nacked: int = 0

    def ack(self) -> None:
        self.acked += 1

    def nack(self) -> None:
        self.nacked += 1


@dataclass
class FakeStream:
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def result(self, timeout: float | None = None) -> None:
        return None


@dataclass
class FakeSubscriber:
    """google.cloud.pubsub_v1.SubscriberClient's subscribe, with a callback
    the test drives the way the client's scheduler does (another thread)."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    callback: Callable[[Any], None] | None = None
    stream: FakeStream = field(default_factory=FakeStream)

    def subscribe(
        self, subscription: str, callback: Callable[[Any], None], flow_control: Any = None
    ) -> FakeStream:
        self.calls.append((subscription, flow_control))
        self.callback = callback
        return self.stream

    def deliver(self, messages: Sequence[FakeMessage]) -> None:
        assert self.callback is not None
        threads = [threading.Thread(target=self.callback, args=(m,)) for m in messages]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def settled(messages: Sequence[FakeMessage], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(m.acked + m.nacked == 0 for m in messages):
        assert time.monotonic() < deadline, "messages were not acked or nacked in time"
        time.sleep(0.01)


SUBSCRIPTION = "projects/demo/subscriptions/k8s-audit"


@pytest.fixture
def pull() -> Iterator[Callable[..., tuple[PubSubPull, FakeSubscriber, Spool, CollectorRegistry]]]:
    sources: list[PubSubPull] = []

    def make(**kw: Any) -> tuple[PubSubPull, FakeSubscriber, Spool, CollectorRegistry]:
        registry = CollectorRegistry()
        metrics = AuditMetrics(registry)
        spool = Spool()
        fake = FakeSubscriber()
        source = PubSubPull(
            subscription=SUBSCRIPTION,
            pipeline=Pipeline(metrics, sinks=[spool]),
            decoder=Decoder(),
            metrics=metrics,
            subscriber=fake,
            **kw,
        )
        source.start()
        sources.append(source)
        return source, fake, spool, registry

    yield make
    for s in sources:
        s.stop(10)


def messages_of(entries: Sequence[dict[str, Any] | bytes]) -> list[FakeMessage]:
    return [
        FakeMessage(e if isinstance(e, bytes) else json.dumps(e).encode(), str(i))
        for i, e in enumerate(entries)
    ]


def test_pull_uses_flow_control_and_acks_what_the_pipeline_took(pull: Any) -> None:
    _source, fake, spool, registry = pull(max_messages=50, max_bytes=1 << 20)
    ((subscription, flow),) = fake.calls
    assert subscription == SUBSCRIPTION
    assert (flow.max_messages, flow.max_bytes) == (50, 1 << 20)
    msgs = messages_of([sysdig_entry(p) for p in sysdig_files()])
    fake.deliver(msgs)
    settled(msgs)
    assert all((m.acked, m.nacked) == (1, 0) for m in msgs)
    assert len(spool.taken) == 25
    assert registry.get_sample_value("kube_audit_events_total", {"source": "gke"}) == 25
    assert (
        registry.get_sample_value("kube_audit_gke_pull_messages_total", {"outcome": "acked"}) == 25
    )


def test_pull_nacks_a_refused_batch_and_counts_its_redelivery_once(pull: Any) -> None:
    _source, fake, spool, registry = pull()
    spool.full = True
    msgs = messages_of([FORBIDDEN])
    fake.deliver(msgs)
    settled(msgs)
    assert (msgs[0].acked, msgs[0].nacked) == (0, 1)
    assert registry.get_sample_value("kube_audit_events_total", {"source": "gke"}) == 0
    spool.full = False
    again = messages_of([FORBIDDEN, FORBIDDEN])  # redelivered, twice
    fake.deliver(again)
    settled(again)
    assert all(m.acked == 1 for m in again)
    assert (
        sum(
            s.value
            for m in registry.collect()
            for s in m.samples
            if s.name == "kube_audit_requests_total"
        )
        == 1
    )


def test_pull_bad_messages_are_acked_and_counted_and_the_good_ones_kept(pull: Any) -> None:
    _source, fake, spool, registry = pull(batch_size=10)
    good = [
        entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/p", insert_id=f"g{i}")
        for i in range(3)
    ]
    msgs = messages_of([good[0], b"{not json", b"", good[1], b'"a string"', good[2]])
    fake.deliver(msgs)
    settled(msgs)
    assert all(m.acked == 1 for m in msgs)
    assert len(spool.taken) == 3
    invalid = {
        s.labels["reason"]: s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "kube_audit_events_invalid_total" and s.value
    }
    assert invalid == {"invalid_json": 1, "missing_field": 1, "wrong_type": 1}


def test_pull_process_runs_one_pipeline_batch_per_call() -> None:
    """The batching itself, without threads: process() acks after the pipeline."""
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    seen: list[int] = []
    pipeline = Pipeline(metrics, processors=[lambda evs: seen.append(len(evs))])
    source = PubSubPull(
        subscription=SUBSCRIPTION,
        pipeline=pipeline,
        decoder=Decoder(),
        metrics=metrics,
        subscriber=FakeSubscriber(),
    )
    msgs = messages_of([sysdig_entry(p) for p in sysdig_files()[:5]])
    result = source.process(msgs)
    assert result is not None and result.accepted == 5
    assert seen == [5]
    assert all(m.acked == 1 for m in msgs)


def test_pull_subscription_name_is_checked() -> None:
    with pytest.raises(ValueError, match=r"gke\.subscription"):
        PubSubPull(
            subscription="k8s-audit",
            pipeline=Pipeline(AuditMetrics(CollectorRegistry())),
            decoder=Decoder(),
            metrics=AuditMetrics(CollectorRegistry()),
        )


# --- configuration and the running exporter ----------------------------------------


def run_args(*argv: str) -> Any:
    from exporter.cli import build_parser

    return build_parser().parse_args(["run", "--web.listen-address", "127.0.0.1:0", *argv])


def test_gke_configuration_problems_are_located(tmp_path: Any) -> None:
    from exporter.config import ConfigError, load

    f = tmp_path / "c.yaml"
    f.write_text(
        "gke:\n  subscription: k8s-audit\n  push_listen_address: 127.0.0.1:0\n  max_messages: 0\n"
    )
    with pytest.raises(ConfigError) as info:
        load(run_args("--config.file", str(f)), {})
    text = str(info.value)
    for expected in (
        "gke.subscription: must be projects/<project>/subscriptions/<name>",
        "gke.push_audience: required to verify the push subscription's OIDC token",
        "gke.push_tls_cert_file: a certificate and key are required",
        "gke.max_messages: must be >= 1",
    ):
        assert expected in text, text
    with pytest.raises(ConfigError, match=r"gke\.push_audience: set without gke\.push_listen"):
        load(run_args(), {"KUBE_AUDIT_GKE_PUSH_AUDIENCE": AUDIENCE})


def test_run_with_only_the_gke_push_source_takes_a_message() -> None:
    from exporter.app import App
    from exporter.config import load, require_source

    cfg = load(
        run_args(
            "--gke.push-listen-address",
            "127.0.0.1:0",
            "--gke.push-insecure-http",
            "--gke.push-allow-unauthenticated",
        ),
        {},
    )
    require_source(cfg)  # the push endpoint alone is a source
    app = App(cfg)
    app.start()
    try:
        assert app.gke_push is not None
        reply = request(app.gke_push.address, envelope(FORBIDDEN), context=None, path="/pubsub")
        assert reply.status == 200
        assert app.registry.get_sample_value("kube_audit_events_total", {"source": "gke"}) == 1
    finally:
        app.stop(10)


# --- replay of exports ----------------------------------------------------------------


@pytest.mark.parametrize("form", ["gcloud-json", "storage-sink"])
def test_replay_reads_gcloud_output_and_storage_sink_files(
    form: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gcloud logging read --format=json` prints one indented JSON array;
    a Cloud Storage sink writes one entry per line. Both replay to the same
    requests and detections (the README's first alert: cluster-admin-binding)."""
    from exporter.cli import main

    entries = [sysdig_entry(p) for p in sysdig_files()]
    other = entry("google.container.v1.ClusterManager.GetCluster", "projects/p/clusters/c")
    other["resource"]["type"] = "gke_cluster"
    other["protoPayload"]["serviceName"] = "container.googleapis.com"
    entries.insert(3, other)
    path = tmp_path / "export.json"
    if form == "gcloud-json":
        path.write_text(json.dumps(entries, indent=2))
    else:
        path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert main(["replay", "--output", "json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["events"], report["requests"]) == (25, 24)
    assert report["invalid"] == {"not_an_event": 1}
    rules = {d["rule"] for d in report["detections"]}
    assert {"cluster-admin-binding", "role-with-wildcard", "pod-host-network"} <= rules


# --- the README, followed as written ---------------------------------------------------


def readme_yaml_blocks(marker: str) -> list[dict[str, Any]]:
    import re

    import yaml

    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### GKE") : text.index("#### The mapping, field by field")]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return [yaml.safe_load(b) for b in blocks if marker in b]


def test_readme_pull_configuration_is_valid() -> None:
    from exporter.config import load, require_source

    (doc,) = readme_yaml_blocks("subscription:")
    env = {"KUBE_AUDIT_GKE_SUBSCRIPTION": doc["gke"]["subscription"]}
    require_source(load(run_args(), env))


def test_readme_push_configuration_takes_a_signed_push_and_fires_the_first_alert(
    tmp_path: Any, keys: dict[str, Key], certs: CertsServer
) -> None:
    """The README's push YAML as written (only the port and the certificate
    URL changed for loopback), a token signed for its audience and service
    account, and the README's first alert (a cluster-admin binding)."""
    import yaml

    from exporter.app import App
    from exporter.config import load, require_source

    (doc,) = readme_yaml_blocks("push_listen_address:")
    gke = doc["gke"]
    gke["push_listen_address"] = "127.0.0.1:0"
    gke["push_certs_url"] = certs.url
    f = tmp_path / "config.yaml"
    f.write_text(yaml.safe_dump(doc))
    cfg = load(run_args("--config.file", str(f)), {})
    require_source(cfg)
    app = App(cfg)
    app.start()
    try:
        assert app.gke_push is not None
        binding = sysdig_entry(SYSDIG / "log_entries" / "attach_cluster_admin_role.json")
        token = keys["k1"].sign(aud=gke["push_audience"], email=gke["push_service_account"])
        reply = request(
            app.gke_push.address,
            envelope(binding),
            context=None,
            path=cfg.gke.push_path,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status == 200
        value = app.registry.get_sample_value
        assert value("kube_audit_events_total", {"source": "gke"}) == 1
        rule = {"rule": "cluster-admin-binding", "severity": "warning"}
        assert value("kube_audit_rule_matches_total", rule) == 1
        # the same token for another audience is refused
        other = keys["k1"].sign(aud="https://elsewhere.example.com")
        refused = request(
            app.gke_push.address,
            envelope(binding),
            context=None,
            path=cfg.gke.push_path,
            headers={"Authorization": f"Bearer {other}"},
        )
        assert refused.status == 403
    finally:
        app.stop(10)


def test_pull_nacks_a_batch_the_pipeline_failed_on() -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)

    def broken(events: list[AuditEvent]) -> None:
        raise RuntimeError("disk on fire")

    source = PubSubPull(
        subscription=SUBSCRIPTION,
        pipeline=Pipeline(metrics, processors=[broken]),
        decoder=Decoder(),
        metrics=metrics,
        subscriber=FakeSubscriber(),
    )
    msgs = messages_of([FORBIDDEN])
    assert source.process(msgs) is None
    assert (msgs[0].acked, msgs[0].nacked) == (0, 1)
    nacked = registry.get_sample_value("kube_audit_gke_pull_messages_total", {"outcome": "nacked"})
    assert nacked == 1
