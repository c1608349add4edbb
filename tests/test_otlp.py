"""The OTLP logs output end to end, against the OTLP/HTTP receiver of
tests/loki_receiver.py, which decodes with opentelemetry-proto's generated
classes (protobuf and the OTLP/JSON mapping), independently of the
exporter's hand-written encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import load, otlp_settings
from exporter.event import AuditEvent
from exporter.loki import LokiSettings, LokiSink
from exporter.metrics import AuditMetrics
from exporter.otlp import otlp_sink
from tests.loki_corpus import SECRET_KINDS, expected_ts_ns, unique_events
from tests.loki_receiver import OtlpReceiver
from tests.sinks import CLUSTER, sink_settings


def settings(tmp_path: Path, otlp: OtlpReceiver, **kw: Any) -> LokiSettings:
    return sink_settings(tmp_path, otlp.url, "spool/otlp", **{"protocol": "otlp", **kw})


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
