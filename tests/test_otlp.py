"""The OTLP logs output end to end, against an OTLP/HTTP receiver that
decodes with opentelemetry-proto's generated classes (protobuf and the
OTLP/JSON mapping), independently of the exporter's hand-written encoder."""

from __future__ import annotations

import gzip
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from prometheus_client import CollectorRegistry

from exporter.config import load, otlp_settings
from exporter.event import AuditEvent
from exporter.loki import LokiSettings, LokiSink
from exporter.metrics import AuditMetrics
from exporter.otlp import otlp_sink
from tests.loki_corpus import expected_ts_ns
from tests.test_loki_sink import SECRET_KINDS, unique_events

CLUSTER = "test-cluster"


class OtlpReceiver:
    """POST /otlp/v1/logs (Loki's path) on loopback: every log record with
    its resource attributes; scripted statuses first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[tuple[dict[str, str], Any]] = []
        self.requests: list[tuple[str, int]] = []  # (path, status)
        self.script: deque[int] = deque()
        self.partial: int = 0  # rejected_log_records to answer once
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                receiver._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/otlp"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self) -> int:
        with self.lock:
            return len(self.records)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length", "0")))
        with self.lock:
            status = self.script.popleft() if self.script else 200
            partial = 0
            if status == 200:
                partial, self.partial = self.partial, 0
        ctype = h.headers.get("Content-Type", "")
        if status == 200:
            if h.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            msg = logs_service_pb2.ExportLogsServiceRequest()
            if ctype == "application/json":
                json_format.Parse(body, msg)  # strict: unknown fields fail
            else:
                msg.ParseFromString(body)
            got = []
            for rl in msg.resource_logs:
                resource = {a.key: a.value.string_value for a in rl.resource.attributes}
                for sl in rl.scope_logs:
                    assert sl.scope.name == "kube-audit-exporter"
                    got += [(resource, r) for r in sl.log_records]
            with self.lock:
                self.records += got[partial:]
        with self.lock:
            self.requests.append((h.path, status))
        answer = b""
        if status == 200:
            response = logs_service_pb2.ExportLogsServiceResponse()
            if partial:
                response.partial_success.rejected_log_records = partial
                response.partial_success.error_message = "dropped"
            answer = response.SerializeToString()
        h.send_response(status)
        h.send_header("Content-Type", "application/x-protobuf")
        h.send_header("Content-Length", str(len(answer)))
        h.end_headers()
        h.wfile.write(answer)


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def sinks() -> Iterator[list[LokiSink]]:
    opened: list[LokiSink] = []
    yield opened
    for s in opened:
        s.close(timeout=0.5)


def settings(tmp_path: Path, otlp: OtlpReceiver, **kw: Any) -> LokiSettings:
    base: dict[str, Any] = {
        "protocol": "otlp",
        "url": otlp.url,
        "spool_dir": str(tmp_path / "spool" / "otlp"),
        "cluster": CLUSTER,
        "batch_wait": 0.02,
        "backoff_min": 0.01,
        "backoff_max": 0.05,
    }
    base.update(kw)
    return LokiSettings(**base)


def attributes(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in record.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind)
    return out


def expected_attributes(ev: AuditEvent) -> dict[str, Any]:
    obj = ev.obj
    out: dict[str, Any] = {}
    if ev.username:
        out["user.name"] = ev.username
    ips = obj.get("sourceIPs") or []
    if ips:
        out["client.address"] = ips[-1]
    if obj.get("userAgent"):
        out["user_agent.original"] = obj["userAgent"]
    if obj.get("requestURI"):
        out["url.path"] = obj["requestURI"].split("?")[0]
    code = (obj.get("responseStatus") or {}).get("code")
    if code:
        out["http.response.status_code"] = code
    return out


@pytest.mark.parametrize("fmt", ["protobuf", "json"])
def test_every_event_arrives_as_one_log_record_with_its_time_body_and_attributes(
    tmp_path: Path, otlp: OtlpReceiver, corpora: Path, sinks: list[LokiSink], fmt: str
) -> None:
    registry = CollectorRegistry()
    events = unique_events(corpora, 400)
    sink = otlp_sink(
        settings(tmp_path, otlp, format=fmt, batch_bytes=64 << 10, parallelism=2),
        AuditMetrics(registry),
    )
    sinks.append(sink)
    for i in range(0, len(events), 100):
        assert sink.submit(events[i : i + 100])
    assert sink.close(timeout=20)
    assert {path for path, _ in otlp.requests} == {"/otlp/v1/logs"}
    assert otlp.count() == 400
    by_body = {r.body.string_value.encode(): (res, r) for res, r in otlp.records}
    for ev in events:
        resource, record = by_body[ev.to_bytes()]
        # Only these two: Loki makes a stream label of every resource attribute.
        assert resource == {"service.name": "kube-audit", "k8s.cluster.name": CLUSTER}
        assert record.time_unix_nano == expected_ts_ns(ev.obj)
        assert attributes(record) == expected_attributes(ev)
        code = ev.code
        assert record.severity_text == (
            "ERROR" if code >= 500 else "WARN" if code >= 400 else "INFO"
        )
    value = registry.get_sample_value
    assert value("kube_audit_otlp_entries_sent_total") == 400
    assert value("kube_audit_otlp_spool_entries") == 0
    assert value("kube_audit_otlp_entry_latency_seconds_count") == 400


def test_secrets_are_redacted_before_the_otlp_spool(
    tmp_path: Path, otlp: OtlpReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    from tests.loki_corpus import corpus_events

    secret_events = [
        c.event
        for c in corpus_events(corpora)
        if any(k in c.event.to_bytes() for k in SECRET_KINDS)
    ][:200]
    assert secret_events
    values: list[bytes] = []
    for ev in secret_events:
        for key in ("requestObject", "responseObject"):
            node = ev.obj.get(key)
            if isinstance(node, dict):
                for field in ("data", "stringData"):
                    data = node.get(field)
                    if isinstance(data, dict):
                        values += [str(v).encode() for v in data.values() if len(str(v)) > 6]
    sink = otlp_sink(settings(tmp_path, otlp), AuditMetrics(CollectorRegistry()))
    sinks.append(sink)
    assert sink.submit(secret_events)
    assert sink.close(timeout=20)
    assert otlp.count() == len(secret_events)
    bodies = b"\n".join(r.body.string_value.encode() for _, r in otlp.records)
    spooled = b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file())
    for v in values:
        assert v not in bodies and v not in spooled


def test_otlp_retries_503_and_counts_a_partial_success_as_refused(
    tmp_path: Path, otlp: OtlpReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    otlp.script.extend([503, 429])
    otlp.partial = 3
    sink = otlp_sink(settings(tmp_path, otlp, batch_wait=3600.0), AuditMetrics(registry))
    sinks.append(sink)
    assert sink.submit(unique_events(corpora, 50))
    assert sink.close(timeout=20)
    assert [s for _, s in otlp.requests] == [503, 429, 200]
    value = registry.get_sample_value
    assert value("kube_audit_otlp_retries_total") == 2
    assert value("kube_audit_otlp_entries_rejected_total", {"reason": "other"}) == 3
    assert value("kube_audit_otlp_entries_sent_total") == 47
    assert otlp.count() == 47


def test_otlp_config_section_maps_onto_its_own_spool(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        orjson.dumps(
            {
                "cluster": "prod",
                "otlp": {"url": "http://collector:4318", "format": "json", "parallelism": 4},
                "spool": {"dir": str(tmp_path / "spool")},
            }
        ).decode()
    )
    import argparse

    cfg = load(argparse.Namespace(config_file=str(cfg_file)))
    s = otlp_settings(cfg)
    assert s.push_url == "http://collector:4318/v1/logs"
    assert s.spool_dir == str(tmp_path / "spool" / "otlp")
    assert (s.format, s.parallelism, s.cluster) == ("json", 4, "prod")
    assert s.problems() == []
