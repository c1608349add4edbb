"""Every label a client can choose stays bounded, in the metrics and in the
Loki stream labels alike, and real events keep their exact labels."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.labels import LOKI_LABELS, NOW, made_up_events, series_by_family
from exporter.detect.noise import corpus_sources
from exporter.event import AuditEvent, Decoder
from exporter.labels import (
    AUDIT_LEVELS,
    BUILTIN_NAMESPACES,
    KNOWN_CODES,
    OTHER,
    VERBS,
    LabelBounds,
)
from exporter.loki import LokiSettings, LokiSink
from exporter.loki.entry import EntryBuilder
from exporter.metrics import AuditMetrics, counts_as_request
from exporter.pipeline import Pipeline
from tests.loki_receiver import LokiReceiver, wait_for
from tests.test_event import ev

N = 10_000
CAP = 5
REQUEST = "kube_audit_requests_total"


def samples(registry: CollectorRegistry) -> Iterator[tuple[str, dict[str, str]]]:
    text = generate_latest(registry).decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            yield fam.name, s.labels


def test_made_up_label_values_stay_bounded_through_the_real_pipeline(
    tmp_path: Path, loki: LokiReceiver
) -> None:
    bounds = LabelBounds(max_extra_resources=CAP, max_namespaces=CAP, max_webhooks=CAP)
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry, bounds=bounds)
    start = sum(series_by_family(generate_latest(registry).decode()).values())
    settings = LokiSettings(
        url=loki.url,
        spool_dir=str(tmp_path / "spool"),
        labels=LOKI_LABELS,
        cluster="c1",
        batch_wait=0.02,
    )
    sink = LokiSink(settings, metrics)
    try:
        _feed_made_up_events(Pipeline(metrics, sinks=[sink], clock=lambda: NOW))
        wait_for(lambda: loki.count() == N, what="every event in Loki")
    finally:
        sink.close(timeout=0.5)

    # Metrics: every label within its bound, the whole exposition small.
    text = generate_latest(registry).decode()
    series = sum(series_by_family(text).values())
    print(f"\nseries before: {start}, after {N} made-up events: {series}, /metrics {len(text)} B")
    builtin = bounds._resources.builtin
    values: dict[str, set[str]] = defaultdict(set)
    for name, labels in samples(registry):
        if name == "kube_audit_series_overflow_total":
            continue
        for label, value in labels.items():
            values[label].add(value)
    assert values["verb"] <= {*VERBS, "other"}
    assert len(values["resource"] - builtin) <= CAP + 1
    known_codes = {str(c) for c in KNOWN_CODES} | {"1xx", "2xx", "3xx", "4xx", "5xx"}
    assert values["code"] <= known_codes | {"unknown", "other"}
    assert values["code_class"] <= {"2xx", "3xx", "4xx", "5xx", "unknown", "other"}
    assert len(values["webhook"]) <= CAP + 1
    assert len(values["user"]) <= 3
    # user_requests_total: 3 users x verbs x code classes, not one per verb
    families = series_by_family(text)
    assert families["kube_audit_user_requests"] <= 3 * (len(VERBS) + 1) * 6
    assert families["kube_audit_requests"] <= (len(VERBS) + 1) * (CAP + 1) * 10
    assert series < 1000, series
    assert len(text) < 200_000

    # The folds are counted, by family and label.
    def folds(metric: str, label: str) -> float | None:
        return registry.get_sample_value(
            "kube_audit_series_overflow_total", {"metric": metric, "label": label}
        )

    assert folds(REQUEST, "verb") == N
    # the first CAP permitted (200) events took the places; the metrics' label
    # of a subresource request (res/sub) is not among them
    assert N - CAP <= folds(REQUEST, "resource") < N  # type: ignore[operator]
    assert folds(REQUEST, "code") == N // 10
    assert folds("kube_audit_webhook_failed_open_total", "webhook") == N - CAP
    assert folds("loki_streams", "verb") == N
    assert folds("loki_streams", "namespace") == N - CAP
    assert folds("loki_streams", "audit_level") == N // 5

    # Loki: few streams, each label within its bound, every event delivered.
    streams = {r.selector for r in loki.received}
    print(f"loki streams after {N} made-up events: {len(streams)}")
    seen: dict[str, set[str]] = defaultdict(set)
    for r in loki.received:
        for label, value in r.labels.items():
            seen[label].add(value)
    assert seen["verb"] == {"other"}
    assert len(seen["resource"]) <= CAP + 1 and OTHER in seen["resource"]
    assert len(seen["namespace"] - set(BUILTIN_NAMESPACES)) <= CAP + 1
    assert len(seen["api_group"]) <= CAP + 1
    assert seen["audit_level"] <= {*AUDIT_LEVELS, "other"}
    assert len(streams) <= (CAP + 1) ** 3 * 2
    assert len(streams) <= 2 * CAP + 4
    # The exact values stay in the structured metadata.
    assert len({r.metadata["namespace"] for r in loki.received}) == N


def _feed_made_up_events(pipeline: Pipeline, permitted: bool = True) -> None:
    decoder = Decoder()
    objs = made_up_events(N, permitted)
    for i in range(0, N, 500):
        body = b"\n".join(orjson.dumps(o) for o in objs[i : i + 500])
        result = pipeline.process(decoder.decode_document(body), "webhook")
        assert result.accepted == 500


def test_a_client_without_permission_gets_one_stream_and_a_handful_of_series() -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)  # the default bounds
    builder = EntryBuilder(
        LokiSettings(url="http://127.0.0.1:9/", labels=LOKI_LABELS), bounds=metrics.bounds
    )
    streams: set[str] = set()

    def sink(events: list[AuditEvent]) -> None:
        streams.update(builder.labels(e) for e in events)

    _feed_made_up_events(Pipeline(metrics, processors=[sink], clock=lambda: NOW), permitted=False)
    families = series_by_family(generate_latest(registry).decode())
    # verb other x resource __other__ x code (403, 401, 2xx, other) x user kind human
    assert families["kube_audit_requests"] <= 4, families
    assert families["kube_audit_user_requests"] <= 3 * 2 * 2
    # the Metadata level and a made-up one (other)
    assert len(streams) == 2, streams
    assert all('verb="other"' in s and 'resource="__other__"' in s for s in streams)


def test_a_client_without_permission_takes_no_place() -> None:
    bounds = LabelBounds(max_extra_resources=2, max_namespaces=2)
    # refused requests: folded, and they leave the places free
    for i in range(50):
        code = (401, 403, 429)[i % 3]
        assert bounds.resource(f"fake{i}", "", code) == OTHER
        assert bounds.namespace(f"ns{i}", code) == OTHER
        assert bounds.api_group(f"g{i}.example.com", code) == OTHER
    # a real custom resource, once served, keeps its name from then on
    assert bounds.resource("widgets", "", 403) == OTHER
    assert bounds.resource("widgets", "", 200) == "widgets"
    assert bounds.resource("widgets", "", 403) == "widgets"
    assert bounds.resource("widgets", "status", 200) == "widgets/status"
    assert bounds.resource("gadgets", "", 404) == OTHER  # the places are taken
    # built-in values never fold, whatever the code
    assert bounds.resource("pods", "exec", 403) == "pods/exec"
    assert bounds.resource("", "", 401) == ""
    assert bounds.namespace("kube-system", 403) == "kube-system"
    assert bounds.api_group("rbac.authorization.k8s.io", 401) == "rbac.authorization.k8s.io"


def test_verbs_codes_and_levels_fold_into_fixed_sets() -> None:
    b = LabelBounds()
    for verb in ("get", "list", "watch", "deletecollection", "connect", "post", "options", "head"):
        assert b.verb(verb) == verb
    for verb in ("GET", "brew", "x" * 40, "", "other"):
        assert b.verb(verb) == "other"
    assert [b.code(c) for c in (200, 101, 422, 0, 299, 599, 600, -1, 10**9)] == [
        "200", "101", "422", "unknown", "2xx", "5xx", "other", "other", "other",
    ]  # fmt: skip
    assert [b.code_class(c) for c in (101, 204, 404, 503, 0, 700)] == [
        "2xx", "2xx", "4xx", "5xx", "unknown", "other",
    ]  # fmt: skip
    assert b.audit_level("RequestResponse") == "RequestResponse"
    assert b.audit_level("Everything") == "other"
    capped = LabelBounds(max_webhooks=1)
    assert capped.webhook("a.example.com") == "a.example.com"
    assert capped.webhook("b.example.com") == OTHER
    assert capped.webhook("a.example.com") == "a.example.com"


def test_real_corpus_events_keep_their_exact_labels(corpora: Path) -> None:
    decoder = Decoder()
    events: list[AuditEvent] = []
    for _name, files in corpus_sources(corpora):
        for path in files:
            events.extend(
                e for e in decoder.decode_document(path.read_bytes()) if type(e) is AuditEvent
            )
    assert len(events) > 10_000
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    with metrics.lock:
        metrics.observe_batch(events, "replay", NOW)
    expected = {
        (e.verb, e.resource_label, str(e.code) if e.code else "unknown")
        for e in events
        if counts_as_request(e)
    }
    got = {(k[0], k[1], k[2]) for k in metrics.requests.values}
    assert got == expected
    for (metric, label), value in metrics.series_overflow.values.items():
        assert value == 0, (metric, label)
    # Loki: the default stream labels exactly; the extra ones exactly for
    # every request that was authorized (a value seen only in refused
    # requests may fold, by design).
    builder = EntryBuilder(
        LokiSettings(url="http://127.0.0.1:9/", labels=LOKI_LABELS), bounds=metrics.bounds
    )
    for e in events:
        key: Any = builder.stream_key(e)
        assert key[0] == e.verb
        if e.code and e.code not in (401, 403, 429):
            assert key[1:] == (e.resource, e.namespace, e.api_group, e.level), e


def test_an_event_from_the_far_future_leaves_the_freshness_gauge_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry, max_future_skew=300.0)
    pipeline = Pipeline(metrics, clock=lambda: NOW)
    decoder = Decoder()

    def feed(*objs: dict[str, Any]) -> None:
        body = b"\n".join(orjson.dumps(o) for o in objs)
        pipeline.process(decoder.decode_document(body), "webhook")

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    gauge = "kube_audit_last_event_timestamp_seconds"
    feed(ev(auditID="now", stageTimestamp="2024-05-01T10:01:30Z"))
    assert value(gauge, source="webhook") == 1714557690.0
    # alone in its batch, and with an older one
    feed(ev(auditID="far", stageTimestamp="9999-12-31T23:59:59Z"))
    feed(
        ev(auditID="far2", stageTimestamp="9999-12-31T23:59:59Z"),
        ev(auditID="older", stageTimestamp="2024-05-01T10:01:35Z"),
    )
    assert value(gauge, source="webhook") == 1714557695.0
    assert value("kube_audit_events_future_total", source="webhook") == 2
    (logged, *_) = [r for r in caplog.records if "stamped in the future" in r.getMessage()]
    assert logged.__dict__["audit_id"] == "far" and logged.__dict__["source"] == "webhook"
    # still processed: counted as requests
    assert value(REQUEST, verb="list", resource="pods", code="200", user_kind="human") == 4
    # a clock a little ahead (within the skew) still moves the gauge
    feed(ev(auditID="ahead", stageTimestamp="2024-05-01T10:03:00Z"))
    assert value(gauge, source="webhook") == 1714557780.0
    assert value("kube_audit_events_future_total", source="webhook") == 2
    assert value("kube_audit_events_future_total", source="logfile") == 0


def test_bounds_and_skew_come_from_the_config_and_are_shared_with_loki(tmp_path: Path) -> None:
    from exporter.app import build_pipeline
    from exporter.cli import build_parser
    from exporter.config import ConfigError, audit_metrics, load

    def parse(*argv: str) -> Any:
        return build_parser().parse_args(["run", "--logfile.path", str(tmp_path / "a.log"), *argv])

    with pytest.raises(ConfigError) as info:
        load(parse("--events.max-future-skew=-1m"), {"KUBE_AUDIT_METRICS_MAX_WEBHOOKS": "-2"})
    assert "events.max_future_skew: '-1m' is not a duration" in str(info.value)
    assert "metrics.max_webhooks: must be >= 0" in str(info.value)
    cfg = load(
        parse("--events.max-future-skew", "90s", "--loki.url", "http://127.0.0.1:9/",
              "--spool.dir", str(tmp_path / "spool")),
        {"KUBE_AUDIT_METRICS_MAX_EXTRA_RESOURCES": "7", "KUBE_AUDIT_METRICS_MAX_NAMESPACES": "3"},
    )  # fmt: skip
    metrics = audit_metrics(cfg, CollectorRegistry(), ["logfile"])
    assert metrics.max_future_skew == 90.0
    assert (metrics.bounds.max_extra_resources, metrics.bounds.max_namespaces) == (7, 3)
    pipeline, _ = build_pipeline(cfg, metrics)
    try:
        (sink,) = pipeline.sinks
        assert isinstance(sink, LokiSink) and sink.builder.bounds is metrics.bounds
    finally:
        pipeline.close(timeout=0.1)


def test_the_readme_states_each_label_bound() -> None:
    import re

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Label bounds", 1)[1].split("\n\n", 3)[2]
    stated: dict[str, int] = {}
    for row in section.splitlines()[2:]:
        m = re.match(r"\| `(\w+)`.*\((\d+)(?: by default| each by default)?\) \|$", row)
        if m:
            stated[m.group(1)] = int(m.group(2))
    bounds = LabelBounds().series_bounds()
    assert stated == {**bounds, "user": 1001}  # and source_ip, on the same row
