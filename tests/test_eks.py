"""EKS: CloudWatch Logs exports read by replay, the Firehose HTTP endpoint
delivery receiver, and the CloudWatch Logs pull against moto's server mode
(tests/integration/test_eks_cloudwatch.py)."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.cli import build_parser, main
from exporter.config import ConfigError, load, require_source
from exporter.event import Decoder
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from exporter.sources.eks import FirehoseReceiver
from exporter.sources.eks_cloudwatch import make_client
from tests.conftest import CORPORA
from tests.sinks import Spool
from tests.tlsutil import make_pki

DEMO = CORPORA / "audit2rbac-demo" / "demo.log"
GROUP = "/aws/eks/demo/cluster"


def demo_lines() -> list[str]:
    return [line for line in DEMO.read_text().splitlines() if line.strip()]


def filter_log_events_output(lines: list[str]) -> dict[str, Any]:
    """What ``aws logs filter-log-events --log-group-name ...`` prints."""
    events = [
        {
            "logStreamName": f"kube-apiserver-audit-{i % 2:032x}",
            "timestamp": 1_700_000_000_000 + i,
            "message": line,
            "ingestionTime": 1_700_000_000_500 + i,
            "eventId": f"{37_000_000_000 + i:056d}",
        }
        for i, line in enumerate(lines)
    ]
    return {
        "events": events,
        "searchedLogStreams": [
            {"logStreamName": f"kube-apiserver-audit-{i:032x}", "searchedCompletely": True}
            for i in range(2)
        ],
    }


def subscription_payload(lines: list[str], stream: str = "kube-apiserver-audit-0") -> bytes:
    """A CloudWatch Logs subscription payload as delivered: gzip'd JSON."""
    doc = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": GROUP,
        "logStream": stream,
        "subscriptionFilters": ["kube-audit-exporter"],
        "logEvents": [
            {"id": f"{37_000_000_000 + i:056d}", "timestamp": 1_700_000_000_000 + i, "message": m}
            for i, m in enumerate(lines)
        ],
    }
    return gzip.compress(json.dumps(doc).encode())


CONTROL_MESSAGE = {
    "messageType": "CONTROL_MESSAGE",
    "owner": "CloudwatchLogs",
    "logGroup": "",
    "logStream": "",
    "subscriptionFilters": [],
    "logEvents": [
        {
            "id": "",
            "timestamp": 1_700_000_000_000,
            "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose.",
        }
    ],
}


def replay_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    status = main(["replay", "--output", "json", *args])
    return status, json.loads(capsys.readouterr().out)


# --- replay of CloudWatch Logs exports ----------------------------------------------


def test_replay_of_filter_log_events_output_matches_the_native_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "filter-log-events.json"
    export.write_text(json.dumps(filter_log_events_output(demo_lines()), indent=4))
    _, native = replay_json(capsys, str(DEMO))
    status, report = replay_json(capsys, str(export))
    assert status == 0
    assert report == native
    assert report["events"] == 757


def test_replay_of_gzipped_subscription_payloads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = demo_lines()
    first = tmp_path / "payload-1.gz"
    first.write_bytes(subscription_payload(lines[:400]))
    second = tmp_path / "payload-2.gz"
    second.write_bytes(subscription_payload(lines[400:], stream="kube-apiserver-audit-1"))
    control = tmp_path / "control.json"
    control.write_text(json.dumps(CONTROL_MESSAGE))
    _, native = replay_json(capsys, str(DEMO))
    status, report = replay_json(capsys, str(first), str(control), str(second))
    assert status == 0
    assert report.pop("files") == 3
    native.pop("files")
    assert report == native


def test_replay_of_a_firehose_s3_object_of_payloads_back_to_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Firehose writes to S3 the records it got, one after the other without
    a separator: gzip members of payloads, one gzip file once decompressed."""
    lines = demo_lines()
    members = [
        subscription_payload(lines[:300]),
        gzip.compress(json.dumps(CONTROL_MESSAGE).encode()),
        subscription_payload(lines[300:], stream="kube-apiserver-audit-1"),
    ]
    obj = tmp_path / "kube-audit-1-2024-05-01-10-00-00-0f3c.gz"
    obj.write_bytes(b"".join(members))
    _, native = replay_json(capsys, str(DEMO))
    status, report = replay_json(capsys, str(obj))
    assert status == 0
    assert report == native


def test_documents_back_to_back_that_are_not_payloads_are_not_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "two.json"
    doc.write_text("{}{}")
    _, report = replay_json(capsys, str(doc))
    assert report["events"] == 0
    assert sum(report["invalid"].values()) == 1


def test_control_message_is_no_event_and_no_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    control = tmp_path / "control.json"
    control.write_text(json.dumps(CONTROL_MESSAGE))
    _, report = replay_json(capsys, str(control))
    assert report["events"] == 0
    assert sum(report["invalid"].values()) == 0


def test_bad_messages_in_an_export_are_refused_and_the_good_ones_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = demo_lines()[:10]
    doc = filter_log_events_output([*lines[:5], "I0101 not json", '{"kind": 3}', *lines[5:]])
    export = tmp_path / "mixed.json"
    export.write_text(json.dumps(doc))
    _, report = replay_json(capsys, str(export))
    assert report["events"] == 10
    assert sum(report["invalid"].values()) == 2


def test_unknown_message_type_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = dict(CONTROL_MESSAGE, messageType="SOMETHING_ELSE")
    export = tmp_path / "odd.json"
    export.write_text(json.dumps(doc))
    _, report = replay_json(capsys, str(export))
    assert report["events"] == 0
    assert report["invalid"] == {"invalid_value": 1}


# --- Firehose HTTP endpoint delivery --------------------------------------------------

ACCESS_KEY = "firehose-access-key-Zm9vYmFy"
STREAM_ARN = "arn:aws:firehose:eu-west-1:123456789012:deliverystream/audit"
PATH = "/firehose"


@dataclass
class Firehose:
    receiver: FirehoseReceiver
    registry: CollectorRegistry
    spool: Spool

    def post(
        self,
        records: list[bytes] | None = None,
        *,
        body: bytes | None = None,
        request_id: str = "3e5a1a5e-0d4f-4f5c-9a55-8b0c1e4b7f10",
        key: str | None = ACCESS_KEY,
        gzip_body: bool = False,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        if body is None:
            doc = {
                "requestId": request_id,
                "timestamp": 1_700_000_100_000,
                "records": [{"data": base64.b64encode(r).decode()} for r in records or []],
            }
            body = json.dumps(doc).encode()
        headers = {
            "Content-Type": content_type,
            "X-Amz-Firehose-Protocol-Version": "1.0",
            "X-Amz-Firehose-Request-Id": request_id,
            "X-Amz-Firehose-Source-Arn": STREAM_ARN,
            "User-Agent": "Amazon Kinesis Data Firehose Agent/1.0",
        }
        if key is not None:
            headers["X-Amz-Firehose-Access-Key"] = key
        if gzip_body:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        host, port = self.receiver.address
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("POST", PATH, body=body, headers=headers)
            resp = conn.getresponse()
            assert resp.getheader("Content-Type") == "application/json"
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def answered(self, code: int) -> float:
        return self.value("kube_audit_eks_firehose_requests_total", code=str(code))


@pytest.fixture
def firehose() -> Iterator[Firehose]:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry, sources=["eks"])
    spool = Spool()
    receiver = FirehoseReceiver(
        listen_address="127.0.0.1:0",
        path=PATH,
        pipeline=Pipeline(metrics, sinks=[spool]),
        decoder=Decoder(),
        metrics=metrics,
        access_key=ACCESS_KEY,
        tls_cert_file=None,
        tls_key_file=None,
        insecure=True,
        clock=lambda: 1_700_000_200.25,
    )
    receiver.start()
    yield Firehose(receiver, registry, spool)
    receiver.shutdown()


def test_delivery_is_answered_as_documented_after_the_pipeline_took_it(
    firehose: Firehose,
) -> None:
    lines = demo_lines()
    status, reply = firehose.post(
        [
            subscription_payload(lines[:300]),
            json.dumps(CONTROL_MESSAGE).encode(),
            subscription_payload(lines[300:], stream="kube-apiserver-audit-1"),
        ]
    )
    assert status == 200
    assert reply == {
        "requestId": "3e5a1a5e-0d4f-4f5c-9a55-8b0c1e4b7f10",
        "timestamp": 1_700_000_200_250,
    }
    assert len(firehose.spool.taken) == 757
    assert firehose.value("kube_audit_events_total", source="eks") == 757
    assert sum_invalid(firehose.registry) == 0
    assert firehose.answered(200) == 1


def test_payloads_of_other_eks_log_types_are_skipped_not_refused(firehose: Firehose) -> None:
    """A subscription filter with an empty pattern sends every stream of the
    group: the API server's own log, the authenticator's."""
    lines = demo_lines()
    other = subscription_payload(["I1206 05:00:00.000000 1 trace.go:236] Trace[1]"] * 3)
    other = gzip.compress(
        gzip.decompress(other).replace(b"kube-apiserver-audit-0", b"authenticator-9f")
    )
    status, _ = firehose.post([other, subscription_payload(lines[:25])])
    assert status == 200
    assert firehose.value("kube_audit_events_total", source="eks") == 25
    assert sum_invalid(firehose.registry) == 0


def test_gzip_content_encoding_is_undone(firehose: Firehose) -> None:
    status, _ = firehose.post([subscription_payload(demo_lines()[:50])], gzip_body=True)
    assert status == 200
    assert firehose.value("kube_audit_events_total", source="eks") == 50


def test_decompressed_and_extracted_records_are_read_too(firehose: Firehose) -> None:
    """Firehose's own decompression gives the payload's JSON; its message
    extraction gives the bare lines."""
    lines = demo_lines()
    plain = gzip.decompress(subscription_payload(lines[:20]))
    extracted = "\n".join(lines[20:30]).encode() + b"\n"
    status, _ = firehose.post([plain, extracted])
    assert status == 200
    assert firehose.value("kube_audit_events_total", source="eks") == 30


@pytest.mark.parametrize("key", [None, "", "wrong", ACCESS_KEY + "x"])
def test_a_missing_or_wrong_access_key_is_refused_401_and_nothing_counted(
    firehose: Firehose, key: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, reply = firehose.post([subscription_payload(demo_lines()[:5])], key=key)
    assert status == 401
    assert reply["requestId"] == "3e5a1a5e-0d4f-4f5c-9a55-8b0c1e4b7f10"
    assert "X-Amz-Firehose-Access-Key" in reply["errorMessage"]
    assert firehose.value("kube_audit_events_total", source="eks") == 0
    assert firehose.answered(401) == 1
    assert ACCESS_KEY not in caplog.text


def test_a_retried_request_is_not_counted_twice(firehose: Firehose) -> None:
    records = [subscription_payload(demo_lines()[:100])]
    assert firehose.post(records)[0] == 200
    assert firehose.post(records)[0] == 200
    assert firehose.value("kube_audit_events_total", source="eks") == 100
    assert firehose.value("kube_audit_events_duplicate_total", source="eks") == 100
    assert len(firehose.spool.taken) == 100


def test_full_spool_answers_503_and_the_retry_is_counted_once(firehose: Firehose) -> None:
    records = [subscription_payload(demo_lines()[:40])]
    firehose.spool.full = True
    status, reply = firehose.post(records)
    assert status == 503
    assert reply["errorMessage"]
    assert reply["requestId"] == "3e5a1a5e-0d4f-4f5c-9a55-8b0c1e4b7f10"
    assert firehose.value("kube_audit_events_total", source="eks") == 0
    firehose.spool.full = False
    assert firehose.post(records)[0] == 200
    assert firehose.value("kube_audit_events_total", source="eks") == 40
    assert firehose.value("kube_audit_events_duplicate_total", source="eks") == 0


def test_bad_records_are_counted_and_the_good_ones_around_them_kept(
    firehose: Firehose,
) -> None:
    lines = demo_lines()
    bomb = gzip.compress(b" " * (4 << 20))
    firehose.receiver.max_decoded_bytes = 2 << 20
    good = subscription_payload(lines[:10])
    body = {
        "requestId": "r-1",
        "timestamp": 1,
        "records": [
            {"data": base64.b64encode(good).decode()},
            {"data": "not base64 at all!"},
            {"data": base64.b64encode(good[: len(good) // 2]).decode()},
            {"nodata": 1},
            {"data": base64.b64encode(b"garbage line\n" + lines[10].encode()).decode()},
            {"data": base64.b64encode(bomb).decode()},
        ],
    }
    status, _ = firehose.post(body=json.dumps(body).encode(), request_id="r-1")
    assert status == 200
    assert firehose.value("kube_audit_events_total", source="eks") == 11
    invalid = {
        r: firehose.value("kube_audit_events_invalid_total", source="eks", reason=r)
        for r in ("invalid_encoding", "truncated_gzip", "wrong_type", "invalid_json", "too_large")
    }
    assert invalid == {
        "invalid_encoding": 1,
        "truncated_gzip": 1,
        "wrong_type": 1,
        "invalid_json": 1,
        "too_large": 1,
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not json", "not JSON"),
        (b'{"requestId": "x", "timestamp": 1}', "records"),
        (b'[{"data": "eA=="}]', "records"),
    ],
)
def test_a_body_that_is_no_delivery_is_refused_400_with_the_documented_body(
    firehose: Firehose, body: bytes, reason: str
) -> None:
    status, reply = firehose.post(body=body, request_id="req-400")
    assert status == 400
    assert set(reply) == {"requestId", "timestamp", "errorMessage"}
    assert reply["requestId"] == "req-400"
    assert reason in reply["errorMessage"]
    assert firehose.answered(400) == 1


def test_a_damaged_gzip_body_is_refused_400(firehose: Firehose) -> None:
    whole = gzip.compress(json.dumps({"records": [{"data": "eA=="}] * 500}).encode())
    body = whole[: len(whole) // 2]
    host, port = firehose.receiver.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request(
        "POST",
        PATH,
        body=body,
        headers={
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "X-Amz-Firehose-Access-Key": ACCESS_KEY,
            "X-Amz-Firehose-Request-Id": "req-gz",
        },
    )
    resp = conn.getresponse()
    assert resp.status == 400
    assert json.loads(resp.read())["requestId"] == "req-gz"
    conn.close()


def test_firehose_feeds_the_same_metrics_as_the_webhook(firehose: Firehose) -> None:
    lines = demo_lines()
    firehose.post([subscription_payload(lines)])
    native = CollectorRegistry()
    metrics = AuditMetrics(native, sources=["webhook"])
    Pipeline(metrics).process(
        Decoder().decode_document("\n".join(lines).encode()), "webhook", context="native"
    )
    assert audit_samples(firehose.registry) == audit_samples(native)
    assert audit_samples(native)


def sum_invalid(registry: CollectorRegistry) -> float:
    return sum(
        s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "kube_audit_events_invalid_total"
    )


def audit_samples(
    registry: CollectorRegistry,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample about the events themselves (not the source or the transport)."""
    out = {}
    for m in registry.collect():
        for s in m.samples:
            if "source" in s.labels or s.name.startswith(
                ("kube_audit_webhook_requests", "kube_audit_eks_", "kube_audit_webhook_tls")
            ):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_gzip_body_smaller_than_its_content_length_once_inflated_is_read(
    firehose: Firehose,
) -> None:
    """Content-Length counts the gzip bytes; a tiny body inflates to fewer."""
    status, reply = firehose.post(body=b'{"records":[]}', gzip_body=True)
    assert status == 200
    assert "errorMessage" not in reply


def test_the_receiver_serves_https_without_a_client_certificate(tmp_path: Path) -> None:
    """Firehose delivers only to https://, and presents no certificate."""
    pki = make_pki(tmp_path)
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry, sources=["eks"])
    receiver = FirehoseReceiver(
        listen_address="127.0.0.1:0",
        path=PATH,
        pipeline=Pipeline(metrics),
        decoder=Decoder(),
        metrics=metrics,
        access_key=ACCESS_KEY,
        tls_cert_file=str(pki.server.cert_file),
        tls_key_file=str(pki.server.key_file),
        insecure=False,
    )
    receiver.start()
    try:
        body = json.dumps(
            {
                "requestId": "tls-1",
                "timestamp": 1,
                "records": [
                    {"data": base64.b64encode(subscription_payload(demo_lines()[:7])).decode()}
                ],
            }
        )
        host, port = receiver.address
        conn = http.client.HTTPSConnection(
            host, port, timeout=30, context=pki.client_context(with_cert=False)
        )
        conn.request(
            "POST",
            PATH,
            body=body,
            headers={
                "Content-Type": "application/json",
                "X-Amz-Firehose-Request-Id": "tls-1",
                "X-Amz-Firehose-Access-Key": ACCESS_KEY,
            },
        )
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["requestId"] == "tls-1"
        conn.close()
        assert registry.get_sample_value("kube_audit_events_total", {"source": "eks"}) == 7
    finally:
        receiver.shutdown()


# --- configuration ------------------------------------------------------------------


def test_eks_configuration_problems_are_located(tmp_path: Path) -> None:
    f = tmp_path / "eks.yaml"
    f.write_text(
        "eks:\n"
        "  log_group: /aws/eks/demo/cluster\n"
        "  start_at: yesterday\n"
        "  poll_interval: soon\n"
        "  firehose_listen_address: 127.0.0.1:8443\n"
        "  firehose_path: firehose\n"
    )
    with pytest.raises(ConfigError) as info:
        load(build_parser().parse_args(["check-config", "--config.file", str(f)]), {})
    text = str(info.value)
    for expected in (
        "eks.start_at: must be checkpoint, now or an RFC 3339 time, not 'yesterday'",
        "eks.poll_interval: 'soon' is not a duration",
        "eks.firehose_access_key_file: required with eks.firehose_listen_address",
        "eks.firehose_tls_cert_file: the Firehose receiver needs a certificate and key",
        "eks.firehose_path: must start with '/'",
    ):
        assert expected in text, text


def test_eks_configuration_from_flags_and_environment(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k\n")
    argv = [
        "check-config",
        "--eks.log-group", "/aws/eks/demo/cluster",
        "--eks.start-at", "2024-05-01T10:00:00Z",
        "--eks.firehose-listen-address", "127.0.0.1:8443",
        "--eks.firehose-insecure",
    ]  # fmt: skip
    env = {
        "KUBE_AUDIT_EKS_FIREHOSE_ACCESS_KEY_FILE": str(key),
        "KUBE_AUDIT_EKS_REGION": "eu-west-1",
    }
    cfg = load(build_parser().parse_args(argv), env)
    assert cfg.eks.log_group == "/aws/eks/demo/cluster"
    assert cfg.eks.region == "eu-west-1"
    assert cfg.eks.firehose_access_key_file == str(key)
    require_source(cfg)  # either EKS source is a source


def test_a_missing_region_is_a_start_up_error_naming_the_option(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ValueError, match=r"eks\.region"):
        make_client("", "")


def test_without_boto3_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 raises ImportError
    with pytest.raises(ValueError, match=r"kube-audit-exporter\[eks\]"):
        make_client("eu-west-1", "")


def test_a_body_over_the_limit_is_refused_413_unread_with_the_documented_body(
    firehose: Firehose,
) -> None:
    firehose.receiver.max_body_bytes = 2048
    status, reply = firehose.post([subscription_payload(demo_lines()[:200])], request_id="big")
    assert status == 413
    assert reply["requestId"] == "big"
    assert reply["errorMessage"]
    assert firehose.value("kube_audit_events_total", source="eks") == 0
    assert firehose.answered(413) == 1


def test_a_request_the_parser_refuses_is_answered_in_firehose_form(firehose: Firehose) -> None:
    host, port = firehose.receiver.address
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"POST /firehose HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400"
    reply = json.loads(body)
    assert set(reply) == {"requestId", "timestamp", "errorMessage"}
