"""The simulator: a realistic, deterministic audit stream, and the API server's
webhook batching and retries."""

from __future__ import annotations

import gzip
import http.server
import ipaddress
import re
import ssl
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from exporter.cli import main
from exporter.duration import parse_go_duration
from exporter.event import AuditEvent, Decoder, InvalidEvent, parse_time
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from exporter.simulate import (
    ADMIN_BINDING,
    ANONYMOUS_ATTACKER_IP,
    BRUTE_FORCE_FAILURES,
    BRUTE_FORCE_IP,
    ESCALATED_USER,
    ESCALATING_SA,
    EXEC_TARGET,
    EXEC_USER,
    POD_CIDR,
    STOLEN_TOKEN_IP,
    STOLEN_TOKEN_USER,
    TRUSTED_CIDRS,
    VPN_CIDR,
    Options,
    WebhookSender,
    event_list,
    go_duration,
    simulate,
    simulate_lines,
)
from tests.tlsutil import PKI, make_pki

EVENTS = 20_000
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
Event = dict[str, Any]


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(simulate_lines(Options(events=EVENTS)))


@pytest.fixture(scope="module")
def events(lines: list[bytes]) -> list[Event]:
    return [orjson.loads(line) for line in lines]


@pytest.fixture(scope="module")
def by_id(events: list[Event]) -> dict[str, list[Event]]:
    stages: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        stages[ev["auditID"]].append(ev)
    return stages


def _in(ip: str, *cidrs: str) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in ipaddress.ip_network(c) for c in cidrs)


def _code(ev: Event) -> int:
    code: int = ev.get("responseStatus", {}).get("code", 0)
    return code


# --- the stream as the exporter sees it -----------------------------------------------


def test_every_event_decodes_and_none_is_invalid(lines: list[bytes]) -> None:
    decoder = Decoder()
    decoded = [decoder.decode_line(line) for line in lines]
    assert len(decoded) == EVENTS
    assert all(isinstance(ev, AuditEvent) for ev in decoded)


def test_the_real_pipeline_counts_every_feature(lines: list[bytes], events: list[Event]) -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry, sources=["replay"])
    pipeline = Pipeline(metrics)
    decoder = Decoder()
    for i in range(0, len(lines), 1000):
        result = pipeline.process([decoder.decode_line(x) for x in lines[i : i + 1000]], "replay")
        assert result.invalid == 0 and result.duplicates == 0

    def value(name: str, labels: dict[str, str]) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert value("kube_audit_events_total", {"source": "replay"}) == EVENTS
    unauthenticated = sum(1 for ev in events if _code(ev) == 401)
    assert unauthenticated >= BRUTE_FORCE_FAILURES
    total_401 = sum(
        value("kube_audit_auth_failures_total", labels)
        for labels in _label_sets(registry, "kube_audit_auth_failures_total")
        if labels["reason"] == "unauthenticated"
    )
    assert total_401 == unauthenticated
    assert value("kube_audit_slow_request_phase_seconds_count", {"phase": "total"}) > 0
    assert value("kube_audit_slow_request_phase_seconds_count", {"phase": "etcd"}) > 0
    assert value("kube_audit_pod_security_violations_total", {"level": "restricted"}) > 0
    assert value("kube_audit_pod_security_violations_total", {"level": "baseline"}) > 0
    assert (
        value("kube_audit_webhook_failed_open_total", {"webhook": "validation.gatekeeper.sh"}) >= 1
    )
    kinds = {labels["user_kind"] for labels in _label_sets(registry, "kube_audit_requests_total")}
    assert kinds == {"human", "serviceaccount", "node", "system", "anonymous", "unauthenticated"}


def _label_sets(registry: CollectorRegistry, name: str) -> Iterator[dict[str, str]]:
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                yield dict(sample.labels)


def test_webhook_bodies_decode_as_the_exporter_reads_them(lines: list[bytes]) -> None:
    body = event_list(lines[:400])
    doc = orjson.loads(body)
    assert (doc["kind"], doc["apiVersion"], doc["metadata"]) == ("EventList", "audit.k8s.io/v1", {})
    assert all("kind" not in item and "apiVersion" not in item for item in doc["items"])
    decoded = list(Decoder().decode_document(body))
    assert len(decoded) == 400
    assert not [d for d in decoded if isinstance(d, InvalidEvent)]


# --- the shape of the stream -------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    options = Options(events=3_000, seed=7)
    first = b"".join(simulate_lines(options))
    assert first == b"".join(simulate_lines(options))
    assert first != b"".join(simulate_lines(Options(events=3_000, seed=8)))


def test_gzip_output_is_byte_identical_across_runs(tmp_path: Path) -> None:
    args = ["simulate", "--events", "2000", "--seed", "3", "--start", "2024-05-01T08:00:00Z"]
    assert main([*args, "--output", str(tmp_path / "a.log.gz")]) == 0
    assert main([*args, "--output", str(tmp_path / "b.log.gz")]) == 0
    packed = (tmp_path / "a.log.gz").read_bytes()
    assert packed == (tmp_path / "b.log.gz").read_bytes()
    assert packed[4:8] == b"\0\0\0\0"  # gzip MTIME
    expected = b"".join(simulate_lines(Options(events=2000, seed=3, start=1714550400.0)))
    assert gzip.decompress(packed) == expected


def test_events_are_in_stage_order_with_micro_timestamps(events: list[Event]) -> None:
    stamps = [ev["stageTimestamp"] for ev in events]
    assert stamps == sorted(stamps)
    for ev in events:
        assert MICRO_TIME.match(ev["requestReceivedTimestamp"])
        assert MICRO_TIME.match(ev["stageTimestamp"])
        assert ev["requestReceivedTimestamp"] <= ev["stageTimestamp"]
    assert events[0]["stageTimestamp"] >= "2024-05-01T10:00:00.000000Z"


def test_audit_ids_are_uuid4_and_each_stage_appears_once(events: list[Event]) -> None:
    uuid4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert all(uuid4.match(ev["auditID"]) for ev in events)
    keys = Counter((ev["auditID"], ev["stage"]) for ev in events)
    assert max(keys.values()) == 1


def test_requests_are_received_then_completed(by_id: dict[str, list[Event]]) -> None:
    """RequestReceived first (no status, no annotations), at its received time;
    every complete pair shares user, verb and URI."""
    pairs = 0
    for stages in by_id.values():
        names = [ev["stage"] for ev in stages]
        if "RequestReceived" not in names:
            continue
        first = stages[0]
        assert first["stage"] == "RequestReceived"
        assert first["stageTimestamp"] == first["requestReceivedTimestamp"]
        assert "responseStatus" not in first and "annotations" not in first
        for later in stages[1:]:
            assert later["verb"] == first["verb"] and later["user"] == first["user"]
            assert later["requestURI"] == first["requestURI"]
        pairs += names[-1] in ("ResponseComplete", "Panic")
    assert pairs > EVENTS // 3


def test_omitting_request_received() -> None:
    stages = Counter(ev["stage"] for ev in simulate(Options(events=5_000, request_received=False)))
    assert "RequestReceived" not in stages
    assert stages["ResponseComplete"] > 4_000


def test_mostly_metadata_level_with_some_request_response(events: list[Event]) -> None:
    levels = Counter(ev["level"] for ev in events)
    assert levels["Metadata"] > 0.9 * EVENTS
    bodies = [ev for ev in events if ev["level"] == "RequestResponse" and "requestObject" in ev]
    kinds = {ev["requestObject"]["kind"] for ev in bodies}
    assert {"Pod", "Secret", "RoleBinding", "ClusterRoleBinding", "TokenReview"} <= kinds
    pods = [ev["requestObject"] for ev in bodies if ev["requestObject"]["kind"] == "Pod"]
    assert any(
        c["securityContext"].get("privileged") for p in pods for c in p["spec"]["containers"]
    )


def test_node_leases_are_renewed_every_ten_seconds(events: list[Event]) -> None:
    renewals: dict[str, list[float]] = defaultdict(list)
    for ev in events:
        ref = ev.get("objectRef", {})
        if ev["stage"] == "ResponseComplete" and ref.get("namespace") == "kube-node-lease":
            assert ev["user"]["username"] == f"system:node:{ref['name']}"
            renewals[ref["name"]].append(parse_time(ev["requestReceivedTimestamp"]))
    assert len(renewals) >= 9  # 3 control-plane nodes and 6 workers
    for times in renewals.values():
        gaps = [b - a for a, b in pairwise(times)]
        assert gaps and all(9.9 < gap < 10.1 for gap in gaps)


def test_people_use_kubectl_from_the_office_and_the_vpn(events: list[Event]) -> None:
    people = [ev for ev in events if "@" in ev["user"].get("username", "")]
    agents = {ev["userAgent"].split(" ")[0] for ev in people}
    assert any(a.startswith("kubectl/v1.30.") for a in agents)
    assert all("system:authenticated" in ev["user"]["groups"] for ev in people)
    addresses = {ev["sourceIPs"][-1] for ev in people}
    assert any(_in(ip, "192.0.2.0/24") for ip in addresses)
    assert any(_in(ip, VPN_CIDR) for ip in addresses)


def test_rbac_denials_say_forbid(events: list[Event]) -> None:
    """A 403 from authorization says forbid; one from admission (Pod Security)
    was allowed by authorization."""
    denials = [ev for ev in events if ev["stage"] == "ResponseComplete" and _code(ev) == 403]
    decided = [ev for ev in denials if "authorization.k8s.io/decision" in ev.get("annotations", {})]
    rbac = [ev for ev in decided if ev["annotations"]["authorization.k8s.io/decision"] == "forbid"]
    assert rbac and any("@" in ev["user"].get("username", "") for ev in rbac)
    for ev in rbac:
        assert "authorization.k8s.io/reason" in ev["annotations"]
        assert ev["responseStatus"]["reason"] == "Forbidden"
        assert re.search(r'(^|is )forbidden: User "[^"]+" cannot ', ev["responseStatus"]["message"])
    admission = [ev for ev in decided if ev not in rbac]
    assert admission
    assert all("violates PodSecurity" in ev["responseStatus"]["message"] for ev in admission)


# --- the scenarios -----------------------------------------------------------------------


def test_failed_authentication_is_one_response_started_with_an_empty_user(
    events: list[Event], by_id: dict[str, list[Event]]
) -> None:
    failures = [ev for ev in events if _code(ev) == 401]
    assert failures
    for ev in failures:
        assert ev["stage"] == "ResponseStarted"
        assert ev["user"] == {}
        assert ev["sourceIPs"] and not _in(ev["sourceIPs"][-1], *TRUSTED_CIDRS)
        assert len(by_id[ev["auditID"]]) == 1
        if ev["requestURI"].split("?")[0] in ("/", "/api", "/version", "/.env"):
            assert "objectRef" not in ev
    assert any("objectRef" in ev for ev in failures)


def test_watches_start_and_complete_minutes_later(by_id: dict[str, list[Event]]) -> None:
    complete = 0
    for stages in by_id.values():
        if stages[0]["verb"] != "watch":
            continue
        started = [ev for ev in stages if ev["stage"] == "ResponseStarted"]
        done = [ev for ev in stages if ev["stage"] == "ResponseComplete"]
        if started and done:
            complete += 1
            assert _code(started[0]) == _code(done[0]) == 200
            took = parse_time(done[0]["stageTimestamp"]) - parse_time(started[0]["stageTimestamp"])
            assert took > 3
            assert "watch=true" in done[0]["requestURI"]
    assert complete >= 3


def test_exec_is_switched_protocols_then_completes(by_id: dict[str, list[Event]]) -> None:
    sessions = [
        stages
        for stages in by_id.values()
        if stages[0].get("objectRef", {}).get("subresource") == "exec"
        and {ev["stage"] for ev in stages} >= {"ResponseStarted", "ResponseComplete"}
    ]
    assert sessions
    for stages in sessions:
        started = next(ev for ev in stages if ev["stage"] == "ResponseStarted")
        assert _code(started) == 101
        assert "command=" in started["requestURI"]


def test_request_response_secrets_carry_data(events: list[Event]) -> None:
    """Redaction has something to do: Secret data in objects and list items,
    TokenRequest status.token, TokenReview spec.token."""
    secrets = [
        ev
        for ev in events
        if ev["level"] == "RequestResponse" and ev.get("objectRef", {}).get("resource") == "secrets"
    ]
    written = [ev for ev in secrets if ev["verb"] == "create" and "responseObject" in ev]
    assert written and all(ev["requestObject"]["data"] for ev in written)
    listed = [ev for ev in secrets if ev["verb"] == "list" and "responseObject" in ev]
    assert listed and all(item["data"] for item in listed[0]["responseObject"]["items"])
    tokens = [
        ev
        for ev in events
        if ev.get("responseObject", {}).get("kind") == "TokenRequest"
        and ev["responseObject"]["status"]["token"]
    ]
    assert tokens
    assert any(ev.get("requestObject", {}).get("spec", {}).get("token") for ev in events)
    metadata_secrets = [
        ev
        for ev in events
        if ev.get("objectRef", {}).get("resource") == "secrets" and ev["level"] == "Metadata"
    ]
    assert metadata_secrets
    assert not [ev for ev in metadata_secrets if "requestObject" in ev or "responseObject" in ev]


def test_latency_annotations_are_go_durations_on_slow_requests(events: list[Event]) -> None:
    slow = [ev for ev in events if "apiserver.latency.k8s.io/total" in ev.get("annotations", {})]
    assert slow
    phases: set[str] = set()
    for ev in slow:
        assert ev["stage"] == "ResponseComplete"
        took = parse_time(ev["stageTimestamp"]) - parse_time(ev["requestReceivedTimestamp"])
        assert took > 0.5
        for key, value in ev["annotations"].items():
            if key.startswith("apiserver.latency.k8s.io/"):
                phases.add(key.rsplit("/", 1)[1])
                seconds = parse_go_duration(value)
                assert seconds is not None, value
                assert seconds <= took + 0.001
        total = parse_go_duration(ev["annotations"]["apiserver.latency.k8s.io/total"])
        assert total is not None and abs(total - took) < 0.001
    assert {"etcd", "total", "response-write", "serialize-response-object"} <= phases
    assert {"apf-queue-wait", "validating-webhook", "mutating-webhook"} <= phases


def test_go_duration_matches_go() -> None:
    cases = {
        0: "0s",
        999: "999ns",
        1_500: "1.5µs",
        510_200_000: "510.2ms",
        1_234_567_000: "1.234567s",
        60_000_000_000: "1m0s",
        3_723_000_000_000: "1h2m3s",
    }
    assert {ns: go_duration(ns) for ns in cases} == cases


def test_pod_security_and_failed_open_webhook_annotations(events: list[Event]) -> None:
    creates = [
        ev
        for ev in events
        if ev["stage"] == "ResponseComplete"
        and ev["verb"] == "create"
        and ev.get("objectRef", {}).get("resource") == "pods"
        and "subresource" not in ev["objectRef"]
        and ev["annotations"].get("authorization.k8s.io/decision") == "allow"
    ]
    assert creates
    assert all("pod-security.kubernetes.io/enforce-policy" in ev["annotations"] for ev in creates)
    violations = [
        ev for ev in creates if "pod-security.kubernetes.io/audit-violations" in ev["annotations"]
    ]
    assert violations
    assert violations[0]["annotations"]["pod-security.kubernetes.io/audit-violations"].startswith(
        'would violate PodSecurity "restricted:latest": '
    )
    failed_open = [
        ev
        for ev in events
        if any(k.startswith("failed-open.validating.webhook") for k in ev.get("annotations", {}))
    ]
    assert failed_open
    assert (
        parse_time(failed_open[0]["stageTimestamp"])
        - parse_time(failed_open[0]["requestReceivedTimestamp"])
        > 10
    )


def test_panic_ends_a_request(by_id: dict[str, list[Event]], events: list[Event]) -> None:
    panics = [ev for ev in events if ev["stage"] == "Panic"]
    assert panics
    for ev in panics:
        assert _code(ev) == 500 and ev["responseStatus"]["reason"] == "InternalError"
        assert [e["stage"] for e in by_id[ev["auditID"]]] == ["RequestReceived", "Panic"]


def test_brute_force_then_a_success_from_the_vpn(events: list[Event]) -> None:
    burst = [ev for ev in events if ev["sourceIPs"] == [BRUTE_FORCE_IP]]
    assert len(burst) == BRUTE_FORCE_FAILURES
    assert all(_code(ev) == 401 and ev["user"] == {} for ev in burst)
    first, last = parse_time(burst[0]["stageTimestamp"]), parse_time(burst[-1]["stageTimestamp"])
    assert last - first < 120
    after = [
        ev
        for ev in events
        if ev["stage"] == "ResponseComplete"
        and "@" in ev["user"].get("username", "")
        and _in(ev["sourceIPs"][-1], VPN_CIDR)
        and 0 < parse_time(ev["stageTimestamp"]) - last < 60
        and ev.get("objectRef", {}).get("resource") == "secrets"
    ]
    assert after and _code(after[0]) == 200


def test_anonymous_request_allowed(events: list[Event]) -> None:
    allowed = [
        ev
        for ev in events
        if ev["user"].get("username") == "system:anonymous"
        and ev["stage"] == "ResponseComplete"
        and _code(ev) == 200
        and ev.get("objectRef", {}).get("resource") == "secrets"
    ]
    assert allowed and allowed[0]["sourceIPs"] == [ANONYMOUS_ATTACKER_IP]
    assert "cluster-admin" in allowed[0]["annotations"]["authorization.k8s.io/reason"]


def test_service_account_token_used_outside_the_pod_network(events: list[Event]) -> None:
    outside = [
        ev
        for ev in events
        if ev["user"].get("username") == STOLEN_TOKEN_USER
        and not _in(ev["sourceIPs"][-1], POD_CIDR)
    ]
    assert outside and {ev["sourceIPs"][-1] for ev in outside} == {STOLEN_TOKEN_IP}
    assert outside[0]["user"]["extra"]["authentication.kubernetes.io/pod-name"]
    inside = [ev for ev in events if ev["user"].get("username") == STOLEN_TOKEN_USER]
    assert len(inside) > 10 * len(outside)  # its usual traffic comes from its pod


def test_exec_into_the_payments_database(events: list[Event]) -> None:
    ns, pod = EXEC_TARGET
    shells = [
        ev
        for ev in events
        if ev["user"].get("username") == EXEC_USER
        and ev.get("objectRef", {}).get("subresource") == "exec"
        and ev["objectRef"].get("namespace") == ns
        and ev["objectRef"].get("name") == pod
    ]
    assert {ev["stage"] for ev in shells} >= {"ResponseStarted", "ResponseComplete"}
    assert all(_code(ev) == 101 for ev in shells if "responseStatus" in ev)


def test_cluster_admin_binding_created_then_used(events: list[Event]) -> None:
    created = [
        ev
        for ev in events
        if ev["stage"] == "ResponseComplete"
        and ev.get("objectRef", {}).get("resource") == "clusterrolebindings"
        and ev["verb"] == "create"
    ]
    assert len(created) == 1
    ev = created[0]
    assert ev["user"]["username"] == ESCALATING_SA and _code(ev) == 201
    assert ev["requestObject"]["roleRef"]["name"] == "cluster-admin"
    assert ev["responseObject"]["metadata"]["name"] == ADMIN_BINDING
    used = [
        e
        for e in events
        if e["user"].get("username") == ESCALATED_USER
        and ADMIN_BINDING in e.get("annotations", {}).get("authorization.k8s.io/reason", "")
    ]
    assert used


def test_impersonation_refused_and_allowed(events: list[Event]) -> None:
    impersonating = [
        ev for ev in events if "impersonatedUser" in ev and ev["stage"] == "ResponseComplete"
    ]
    assert any(_code(ev) == 403 for ev in impersonating)
    allowed = [ev for ev in impersonating if _code(ev) == 200]
    assert allowed
    assert any(
        ev["impersonatedUser"]["username"].startswith("system:serviceaccount:") for ev in allowed
    )


# --- the webhook backend --------------------------------------------------------------------


class Receiver:
    """An in-test audit webhook: records each body, answers from a script."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]], pki: PKI | None = None) -> None:
        self.answers = list(answers)
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.bodies.append(body)
                    receiver.headers.append(dict(self.headers))
                    code, extra = receiver.answers.pop(0) if receiver.answers else (200, {})
                self.send_response(code)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if pki is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca.cert_file))
            ctx.load_cert_chain(str(pki.server.cert_file), str(pki.server.key_file))
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/audit"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def items(self) -> list[Event]:
        return [item for body in self.bodies for item in orjson.loads(body)["items"]]


def _unpaced(lines: list[bytes]) -> list[tuple[float | None, bytes]]:
    return [(None, line) for line in lines]


def test_webhook_batches_at_most_400_and_retries_a_503(lines: list[bytes]) -> None:
    waits: list[float] = []
    with Receiver([(503, {})]) as receiver:
        sender = WebhookSender(receiver.url, concurrency=1, sleep=waits.append, jitter_seed=1)
        stats = sender.send(_unpaced(lines[:1000]))
    assert len(receiver.bodies) == 4  # 400 refused, 400 again, 400, 200
    assert receiver.bodies[0] == receiver.bodies[1]
    assert [len(orjson.loads(b)["items"]) for b in receiver.bodies] == [400, 400, 400, 200]
    ids = [(i["auditID"], i["stage"]) for i in receiver.items()[400:]]
    assert ids == [(e["auditID"], e["stage"]) for e in map(orjson.loads, lines[:1000])]
    assert len(waits) == 1 and 10.0 <= waits[0] <= 12.0  # the API server's first backoff
    assert (stats.events, stats.batches, stats.retries, stats.dropped_events) == (1000, 3, 1, 0)
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert receiver.headers[0]["User-Agent"].startswith("kube-apiserver/v1.30")


def test_webhook_waits_as_retry_after_asks_then_backs_off(lines: list[bytes]) -> None:
    """client-go re-sends a 503 with Retry-After itself (up to 10 times) before
    the audit backoff sees an error."""
    waits: list[float] = []
    answers = [(503, {"Retry-After": "5"})] * 11 + [(500, {})]
    with Receiver(answers) as receiver:
        sender = WebhookSender(receiver.url, concurrency=1, sleep=waits.append, jitter_seed=1)
        stats = sender.send(_unpaced(lines[:10]))
    assert waits[:10] == [5.0] * 10
    assert 10.0 <= waits[10] <= 12.0 and 15.0 <= waits[11] <= 18.0
    assert len(receiver.bodies) == 13
    assert (stats.events, stats.retry_after, stats.retries) == (10, 10, 2)


def test_webhook_drops_a_batch_after_five_attempts(lines: list[bytes]) -> None:
    waits: list[float] = []
    with Receiver([(500, {})] * 10) as receiver:
        sender = WebhookSender(receiver.url, concurrency=1, sleep=waits.append, jitter_seed=2)
        stats = sender.send(_unpaced(lines[:10]))
    assert len(receiver.bodies) == 5
    for wait, base in zip(waits, (10.0, 15.0, 22.5, 33.75), strict=True):
        assert base <= wait <= base * 1.2
    assert (stats.dropped_batches, stats.dropped_events, stats.events) == (1, 10, 0)


def test_batch_max_wait_sends_what_arrived(lines: list[bytes]) -> None:
    """Paced events: a batch goes out when its timer (max wait) fires."""
    now = [1000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    due = [(1000.0 + i * 0.5, line) for i, line in enumerate(lines[:100])]  # 2 events/s
    with Receiver([]) as receiver:
        sender = WebhookSender(
            receiver.url,
            concurrency=1,
            batch_max_wait=10.0,
            throttle_qps=0,
            clock=lambda: now[0],
            sleep=sleep,
        )
        stats = sender.send(due)
    sizes = [len(orjson.loads(b)["items"]) for b in receiver.bodies]
    assert sum(sizes) == 100 and stats.events == 100
    assert sizes[:4] == [20, 20, 20, 20]  # 10 s of events each


def test_throttle_limits_batches_per_second(lines: list[bytes]) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    with Receiver([]) as receiver:
        sender = WebhookSender(
            receiver.url,
            concurrency=1,
            batch_max_size=1,
            throttle_qps=10,
            throttle_burst=15,
            clock=lambda: now[0],
            sleep=sleep,
        )
        sender.send(_unpaced(lines[:35]))
    assert len(receiver.bodies) == 35
    assert now[0] == pytest.approx(2.0)  # 15 at once, then 10 per second


def test_simulate_posts_over_mutual_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = make_pki(tmp_path)
    with Receiver([(503, {})], pki) as receiver:
        code = main(
            [
                "simulate", "--events", "900", "--webhook", receiver.url,
                "--initial-backoff", "0", "--concurrency", "3", "--throttle-qps", "0",
                "--ca-file", str(pki.ca.cert_file),
                "--cert-file", str(pki.client.cert_file), "--key-file", str(pki.client.key_file),
            ]
        )  # fmt: skip
    assert code == 0
    items = receiver.items()
    assert len({(i["auditID"], i["stage"]) for i in items}) == 900
    assert max(len(orjson.loads(b)["items"]) for b in receiver.bodies) == 400
    assert "posted 900 events in 3 batches (1 retries, 0 events dropped)" in capsys.readouterr().err


def test_simulate_refuses_a_client_certificate_without_its_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--webhook", "https://127.0.0.1:1/audit", "--cert-file", "x.crt"]) == 1
    assert "cert_file and key_file go together" in capsys.readouterr().err
