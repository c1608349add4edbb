"""The AKS source without an emulator: the storage archive reader on an
in-memory blob store, the Event Hubs adapter with a double of azure-eventhub's
consumer client (no Event Hubs emulator runs here), and replay of both export
formats, on the real AKS records in the shared corpora. Against Azurite:
tests/integration/test_aks_azurite.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import build_parser, main
from exporter.config import ConfigError, load, require_source
from exporter.event import AuditEvent, Batch, Decoder, InvalidEvent
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from exporter.sources.aks import (
    FULL_LIST_EVERY,
    ArchiveCheckpoint,
    BlobArchiveSource,
    BlobInfo,
    StartError,
    stream_of,
)
from exporter.sources.aks_eventhub import EventHubSource, event_body
from tests.conftest import CORPORA

ELASTIC = (
    CORPORA / "elastic-integrations/packages/kubernetes/data_stream/audit_logs/_dev/test/pipeline"
)
LOG_ANALYTICS = (
    CORPORA / "small-samples/mohamedsaif-kubernetes-auditor/sample-log-query-result.json"
)
RESOURCE = (
    "resourceId=/SUBSCRIPTIONS/AE2861B3-E901-49BD-99F3-660EB5747107/RESOURCEGROUPS/TEST"
    "/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/TEST-CLUSTER"
)


def hour_blob(hour: int, resource: str = RESOURCE, day: int = 7) -> str:
    return f"{resource}/y=2025/m=10/d={day:02d}/h={hour:02d}/m=00/PT1H.json"


# --- real records -------------------------------------------------------------


def real_records() -> list[dict[str, Any]]:
    """The AKS diagnostic records of the corpora as the storage account and
    Event Hubs carry them: the real ones (``properties.log`` a string, and an
    object), then the Log Analytics events (``log_s``) put in the same
    envelope as the real kube-audit record."""
    records = [
        json.loads(line)
        for line in (ELASTIC / "test-kube-audit.log").read_text().split("\n")
        if line
    ]
    records += [
        json.loads(line)
        for line in (ELASTIC / "test-audit.log").read_text().splitlines()
        if '"properties"' in line
    ]
    template = records[0]
    for row in json.loads(LOG_ANALYTICS.read_text())["body"]["value"]:
        inner = json.loads(row["log_s"])
        record = json.loads(json.dumps(template))
        record["category"] = row["Category"]
        record["properties"]["log"] = json.dumps(inner)
        record["time"] = inner["stageTimestamp"]
        records.append(record)
    return records


def inner_event(record: dict[str, Any]) -> dict[str, Any]:
    log = record["properties"]["log"]
    return json.loads(log) if isinstance(log, str) else dict(log)


def distinct(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (auditID, stage, stageTimestamp): the elastic samples
    reuse an auditID, which the pipeline rightly takes as a retry."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for r in records:
        e = inner_event(r)
        key = (e["auditID"], e["stage"], e["stageTimestamp"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


RECORDS = real_records()


def test_the_corpora_hold_both_categories_and_both_log_shapes() -> None:
    assert {r["category"] for r in RECORDS} == {"kube-audit", "kube-audit-admin"}
    shapes = {type(r["properties"]["log"]).__name__ for r in RECORDS}
    assert shapes == {"str", "dict"}
    assert len(distinct(RECORDS)) >= 5


# --- metrics ------------------------------------------------------------------


def new_pipeline(sinks: Sequence[Any] = ()) -> tuple[CollectorRegistry, AuditMetrics, Pipeline]:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    return registry, metrics, Pipeline(metrics, sinks=sinks)


def audit_samples(
    registry: CollectorRegistry,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The request metrics, without the source label and the sources' own
    health: what must not depend on how the events arrived."""
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        if fam.name.startswith(("kube_audit_aks", "kube_audit_logfile")):
            continue
        for s in fam.samples:
            if s.name.endswith("_created") or "source" in s.labels:
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_source(registry: CollectorRegistry, name: str, source: str) -> float:
    return registry.get_sample_value(name, {"source": source}) or 0.0


def webhook_registry(events: list[dict[str, Any]]) -> CollectorRegistry:
    """The same events through the webhook's path: one EventList body."""
    registry, _, pipeline = new_pipeline()
    body = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events})
    pipeline.process(Batch(Decoder().decode_document(body)), "webhook")
    return registry


# --- the archive reader on an in-memory store ---------------------------------


class MemoryStore:
    """Append blobs in memory, with the BlobStore methods the source calls."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytearray] = {}
        self.reads = 0
        self.fail_list = False
        self.fail_read: set[str] = set()
        self.listed: list[tuple[str, str]] = []

    def append(self, container: str, blob: str, data: bytes) -> None:
        self.blobs.setdefault((container, blob), bytearray()).extend(data)

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
        self.listed.append((container, prefix))
        if self.fail_list:
            raise ConnectionError("storage unreachable")
        return [
            BlobInfo(name, len(data))
            for (c, name), data in self.blobs.items()
            if c == container and name.startswith(prefix)
        ]

    def read(self, container: str, blob: str, offset: int, length: int) -> bytes:
        self.reads += 1
        if blob in self.fail_read:
            raise TimeoutError("read timed out")
        return bytes(self.blobs[(container, blob)][offset : offset + length])


def lines(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


class Gate:
    """A sink that refuses every batch while closed (a full spool)."""

    keeps_marks = False

    def __init__(self) -> None:
        self.open = True
        self.taken = 0

    def admit(self, events: Sequence[AuditEvent]) -> bool:
        return self.open

    def submit(self, events: Sequence[AuditEvent], mark: bytes | None = None) -> bool:
        self.taken += len(events)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        return True


def archive(
    store: MemoryStore, pipeline: Pipeline, metrics: AuditMetrics, **kwargs: Any
) -> BlobArchiveSource:
    return BlobArchiveSource(store, pipeline=pipeline, decoder=Decoder(), metrics=metrics, **kwargs)


def test_archive_feeds_the_same_metrics_as_the_webhook() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    for r in records:
        store.append(f"insights-logs-{r['category']}", hour_blob(16), orjson.dumps(r) + b"\n")
    registry, metrics, pipeline = new_pipeline()
    assert archive(store, pipeline, metrics).poll_once() == len(records)
    assert by_source(registry, "kube_audit_events_total", "aks") == len(records)
    expected = webhook_registry([inner_event(r) for r in records])
    assert audit_samples(registry) == audit_samples(expected)


def test_archive_reads_only_what_was_appended_and_never_twice(tmp_path: Path) -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    container = "insights-logs-kube-audit"
    store.append(container, hour_blob(16), lines(records[:2]))
    registry, metrics, pipeline = new_pipeline()
    cp = str(tmp_path / "aks.json")
    src = archive(store, pipeline, metrics, checkpoint_file=cp)
    assert src.poll_once() == 2
    assert src.poll_once() == 0
    store.append(container, hour_blob(16), lines(records[2:4]))
    assert src.poll_once() == 2
    # a restarted source resumes from the checkpoint file
    saved = ArchiveCheckpoint.parse(Path(cp).read_bytes())
    stream = stream_of(container, hour_blob(16))
    assert saved.streams[stream] == {hour_blob(16): len(store.blobs[(container, hour_blob(16))])}
    again = archive(store, pipeline, metrics, checkpoint_file=cp)
    assert again.poll_once() == 0
    assert by_source(registry, "kube_audit_events_total", "aks") == 4


def test_a_record_appended_late_to_the_previous_hour_is_still_read() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit-admin"
    store.append(c, hour_blob(16), lines(records[:1]))
    registry, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics)
    assert src.poll_once() == 1
    store.append(c, hour_blob(17), lines(records[1:2]))
    store.append(c, hour_blob(16), lines(records[2:3]))
    assert src.poll_once() == 2
    assert by_source(registry, "kube_audit_events_total", "aks") == 3


def test_bad_records_are_counted_and_the_good_ones_around_them_kept() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    bad_inner = dict(
        records[0], properties={"log": '{"kind":"Event","apiVersion":"audit.k8s.io/v1"'}
    )
    store.append(c, hour_blob(16), orjson.dumps(records[0]) + b"\n")
    store.append(c, hour_blob(16), b"not json at all\n")
    store.append(c, hour_blob(16), orjson.dumps(bad_inner) + b"\n")
    store.append(c, hour_blob(16), b'{"category":"kube-audit","properties":{"log":42}}\n')
    store.append(c, hour_blob(16), orjson.dumps(records[1]) + b"\n")
    registry, metrics, pipeline = new_pipeline()
    assert archive(store, pipeline, metrics).poll_once() == 2
    assert by_source(registry, "kube_audit_events_total", "aks") == 2
    invalid = sum(
        registry.get_sample_value("kube_audit_events_invalid_total", {"source": "aks", "reason": r})
        or 0
        for r in ("invalid_json", "not_an_event", "wrong_type")
    )
    assert invalid == 3


def test_a_record_without_its_newline_is_read_once_when_whole() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    first = orjson.dumps(records[0])
    store.append(c, hour_blob(16), first[: len(first) // 2])
    registry, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics)
    assert src.poll_once() == 0  # half a record: wait for the rest
    store.append(c, hour_blob(16), first[len(first) // 2 :])
    assert src.poll_once() == 1  # whole, though its newline is not there yet
    store.append(c, hour_blob(16), b"\n" + lines(records[1:2]))
    assert src.poll_once() == 1
    assert by_source(registry, "kube_audit_events_total", "aks") == 2
    assert not registry.get_sample_value(
        "kube_audit_events_invalid_total", {"source": "aks", "reason": "invalid_json"}
    )


def test_small_reads_split_records_across_requests_without_loss() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    store.append(c, hour_blob(16), lines(records))
    _registry, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics, read_bytes=97, batch_lines=2)
    assert src.poll_once() == len(records)
    assert store.reads > len(records)


def test_a_record_over_the_size_limit_is_refused_and_skipped() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    store.append(c, hour_blob(16), lines(records[:1]) + b'{"x":"' + b"a" * 5000 + b'"}\n')
    store.append(c, hour_blob(16), lines(records[1:2]))
    registry, metrics, _ = new_pipeline()
    pipeline = Pipeline(metrics)
    src = BlobArchiveSource(
        store, pipeline=pipeline, decoder=Decoder(2048), metrics=metrics, read_bytes=1024
    )
    assert src.poll_once() == 2
    assert (
        registry.get_sample_value(
            "kube_audit_events_invalid_total", {"source": "aks", "reason": "too_large"}
        )
        == 1
    )


def test_a_refused_batch_is_read_again_and_counted_once(tmp_path: Path) -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    store.append(c, hour_blob(16), lines(records[:3]))
    gate = Gate()
    registry, metrics, pipeline = new_pipeline([gate])
    cp = tmp_path / "aks.json"
    src = archive(store, pipeline, metrics, checkpoint_file=str(cp))
    gate.open = False
    assert src.poll_once() == 0
    assert not cp.exists()
    assert by_source(registry, "kube_audit_events_total", "aks") == 0
    assert (
        registry.get_sample_value("kube_audit_aks_archive_errors_total", {"operation": "refused"})
        == 1
    )
    gate.open = True
    assert src.poll_once() == 3
    assert src.poll_once() == 0
    assert gate.taken == 3
    assert by_source(registry, "kube_audit_events_total", "aks") == 3


def test_start_at_end_skips_what_is_there_and_reads_what_comes(tmp_path: Path) -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    store.append(c, hour_blob(15), lines(records[:1]))
    store.append(c, hour_blob(16), lines(records[1:2]))
    _registry, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics, start_at="end")
    assert src.poll_once() == 0
    store.append(c, hour_blob(16), lines(records[2:3]))
    # a cluster that appears later is read from its start
    store.append(c, hour_blob(16, RESOURCE.replace("TEST-CLUSTER", "OTHER")), lines(records[3:4]))
    assert src.poll_once() == 2


def test_both_categories_and_two_clusters_are_separate_streams() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    other = RESOURCE.replace("TEST-CLUSTER", "OTHER")
    store.append("insights-logs-kube-audit", hour_blob(16), lines(records[:1]))
    store.append("insights-logs-kube-audit-admin", hour_blob(16), lines(records[1:2]))
    store.append("insights-logs-kube-audit", hour_blob(9, other), lines(records[2:3]))
    _registry, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics)
    assert src.poll_once() == 3
    assert len(src.position.streams) == 3
    # an older hour of another cluster is not "done" because a newer one was read
    store.append("insights-logs-kube-audit", hour_blob(8, other), lines(records[3:4]))
    assert src.poll_once() == 0  # older than the kept blobs of its own stream: done
    store.append("insights-logs-kube-audit", hour_blob(10, other), lines(records[3:4]))
    assert src.poll_once() == 1


def test_a_listing_error_is_counted_and_the_next_poll_goes_on() -> None:
    store = MemoryStore()
    store.append("insights-logs-kube-audit", hour_blob(16), lines(distinct(RECORDS)[:1]))
    registry, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics)
    store.fail_list = True
    assert src.poll_once() == 0
    assert (
        registry.get_sample_value("kube_audit_aks_archive_errors_total", {"operation": "list"}) == 2
    )
    store.fail_list = False
    assert src.poll_once() == 1


def test_a_damaged_checkpoint_stops_the_start_with_its_name(tmp_path: Path) -> None:
    cp = tmp_path / "aks.json"
    cp.write_bytes(b'{"version": 1, "kind": "aks-blob", "seq": 1, "streams": {"s": {"b": -1}}}')
    _, metrics, pipeline = new_pipeline()
    with pytest.raises(StartError, match=r"aks\.json.*streams\.s"):
        archive(MemoryStore(), pipeline, metrics, checkpoint_file=str(cp))
    # a log file checkpoint is not taken for one
    cp.write_bytes(b'{"version": 1, "path": "/var/log/audit.log"}')
    with pytest.raises(StartError, match="aks-blob"):
        archive(MemoryStore(), pipeline, metrics, checkpoint_file=str(cp))


# --- Event Hubs, with a double of the consumer client -------------------------


class FakeEvent:
    def __init__(self, body: Any) -> None:
        self.body = body


class FakeContext:
    def __init__(self, partition_id: str = "0", fail: bool = False) -> None:
        self.partition_id = partition_id
        self.checkpoints: list[Any] = []
        self.fail = fail

    def update_checkpoint(self, event: Any = None, **kwargs: Any) -> None:
        if self.fail:
            raise ConnectionError("checkpoint store unreachable")
        self.checkpoints.append(event)


class FakeClient:
    """Delivers prepared batches as EventHubConsumerClient.receive_batch does
    (the callback per partition batch), then returns."""

    def __init__(self, deliveries: list[tuple[FakeContext, list[FakeEvent]]]) -> None:
        self.deliveries = deliveries
        self.kwargs: dict[str, Any] = {}
        self.closed = False

    def receive_batch(self, on_event_batch: Callable[..., None], **kwargs: Any) -> None:
        self.kwargs = kwargs
        for context, events in self.deliveries:
            on_event_batch(context, events)

    def close(self) -> None:
        self.closed = True


def message(records: list[dict[str, Any]]) -> FakeEvent:
    """One Event Hubs message as diagnostic settings send it."""
    return FakeEvent(orjson.dumps({"records": records}))


def test_eventhub_records_feed_the_same_metrics_as_the_webhook() -> None:
    records = distinct(RECORDS)
    ctx = FakeContext()
    events = [message(records[:3]), FakeEvent([orjson.dumps({"records": records[3:]})])]
    client = FakeClient([(ctx, events)])
    registry, metrics, pipeline = new_pipeline()
    EventHubSource(client, pipeline=pipeline, decoder=Decoder(), metrics=metrics).run()
    assert client.kwargs["starting_position"] == "-1"
    assert ctx.checkpoints == [events[-1]]
    expected = webhook_registry([inner_event(r) for r in records])
    assert audit_samples(registry) == audit_samples(expected)


def test_eventhub_redelivery_is_not_counted_twice() -> None:
    records = distinct(RECORDS)
    batch = [message(records)]
    # the checkpoint did not move (a crash, a lost partition): delivered again
    ctx = FakeContext(fail=True)
    client = FakeClient([(ctx, batch), (FakeContext(), batch)])
    registry, metrics, pipeline = new_pipeline()
    EventHubSource(client, pipeline=pipeline, decoder=Decoder(), metrics=metrics).run()
    assert by_source(registry, "kube_audit_events_total", "aks") == len(records)
    assert by_source(registry, "kube_audit_events_duplicate_total", "aks") == len(records)
    assert (
        registry.get_sample_value(
            "kube_audit_aks_eventhub_errors_total", {"operation": "checkpoint"}
        )
        == 1
    )


def test_eventhub_bad_records_are_counted_and_the_good_ones_kept() -> None:
    records = distinct(RECORDS)
    events = [
        message([records[0], {"category": "kube-audit", "properties": {"log": "{"}}, records[1]]),
        FakeEvent(b"\xff\xfe garbage"),
        FakeEvent({"amqp": "value body"}),
        message(records[2:3]),
    ]
    ctx = FakeContext()
    registry, metrics, pipeline = new_pipeline()
    EventHubSource(
        FakeClient([(ctx, events)]), pipeline=pipeline, decoder=Decoder(), metrics=metrics
    ).run()
    assert by_source(registry, "kube_audit_events_total", "aks") == 3
    reasons = {
        r: registry.get_sample_value(
            "kube_audit_events_invalid_total", {"source": "aks", "reason": r}
        )
        for r in ("invalid_json", "wrong_type")
    }
    assert reasons == {"invalid_json": 2, "wrong_type": 1}
    assert ctx.checkpoints == [events[-1]]


def test_eventhub_refused_batch_is_retried_before_the_checkpoint_moves() -> None:
    records = distinct(RECORDS)
    gate = Gate()
    gate.open = False
    registry, metrics, pipeline = new_pipeline([gate])
    ctx = FakeContext()
    tries = 0
    src: EventHubSource

    class Clock:
        def wait(self, seconds: float) -> bool:
            nonlocal tries
            tries += 1
            assert not ctx.checkpoints  # nothing acknowledged while refused
            gate.open = tries >= 3
            return False

        def is_set(self) -> bool:
            return False

    src = EventHubSource(
        FakeClient([(ctx, [message(records)])]),
        pipeline=pipeline,
        decoder=Decoder(),
        metrics=metrics,
    )
    src._stop = Clock()  # type: ignore[assignment]
    src.run()
    assert tries == 3
    assert len(ctx.checkpoints) == 1
    assert gate.taken == len(records)
    assert by_source(registry, "kube_audit_events_total", "aks") == len(records)
    assert (
        registry.get_sample_value("kube_audit_aks_eventhub_errors_total", {"operation": "refused"})
        == 3
    )


def test_eventhub_stop_while_refused_leaves_the_checkpoint() -> None:
    gate = Gate()
    gate.open = False
    registry, metrics, pipeline = new_pipeline([gate])
    ctx = FakeContext()
    client = FakeClient([(ctx, [message(distinct(RECORDS))])])
    src = EventHubSource(client, pipeline=pipeline, decoder=Decoder(), metrics=metrics)
    src.stop()
    src.run()
    assert client.closed and ctx.checkpoints == []
    assert by_source(registry, "kube_audit_events_total", "aks") == 0


def test_event_body_shapes() -> None:
    assert event_body(FakeEvent(b"{}")) == b"{}"
    assert event_body(FakeEvent([b"{", b"}"])) == b"{}"
    assert event_body(FakeEvent("{}")) == b"{}"
    with pytest.raises(InvalidEvent, match="wrong_type"):
        event_body(FakeEvent(42))


# --- replay of the export formats ---------------------------------------------


def replay(capsys: pytest.CaptureFixture[str], *paths: Path) -> dict[str, Any]:
    main(["replay", "--output", "json", *map(str, paths)])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def test_replay_reads_storage_blobs_and_eventhub_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = distinct(RECORDS)
    blob = tmp_path / "PT1H.json"
    blob.write_bytes(lines(records))
    native = tmp_path / "audit.log"
    native.write_bytes(b"".join(orjson.dumps(inner_event(r)) + b"\n" for r in records))
    # Event Hubs messages as captured (one {"records": [...]} per line), and one pretty-printed
    hub = tmp_path / "eventhub.jsonl"
    hub.write_bytes(
        orjson.dumps({"records": records[:2]})
        + b"\n"
        + orjson.dumps({"records": records[2:]})
        + b"\n"
    )
    pretty = tmp_path / "message.json"
    pretty.write_text(json.dumps({"records": records}, indent=2))
    expected = replay(capsys, native)
    assert expected["events"] == len(records)
    for path in (blob, hub, pretty):
        assert replay(capsys, path) == expected, path.name


def test_replay_of_the_real_storage_line_unwraps_the_string_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = replay(capsys, ELASTIC / "test-kube-audit.log")
    assert report["events"] == 1
    assert report.get("invalid", 0) in (0, {})


# --- configuration --------------------------------------------------------------


def config_problems(tmp_path: Path, text: str) -> list[str]:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    args = build_parser().parse_args(["check-config", "--config.file", str(f)])
    with pytest.raises(ConfigError) as info:
        load(args, {})
    return info.value.problems


def test_aks_configuration_problems_are_located(tmp_path: Path) -> None:
    found = config_problems(
        tmp_path,
        "aks:\n"
        "  storage_account_url: acct.blob.core.windows.net\n"
        "  categories: [kube-audit, kube-apiserver]\n"
        "  eventhub_namespace: https://ns.servicebus.windows.net/\n",
    )
    f = tmp_path / "c.yaml"
    assert any(
        p.startswith("aks.storage_account_url: 'acct.blob.core.windows.net' is not an http(s) URL")
        and p.endswith(f"(from {f}:2:3)")
        for p in found
    ), found
    assert any(p.startswith("aks.categories: 'kube-apiserver'") for p in found), found
    assert any(p.startswith("aks.eventhub_namespace:") for p in found), found
    assert any(p.startswith("aks.eventhub_name: required") for p in found), found
    assert any(p.startswith("aks.eventhub_checkpoint_account_url: required") for p in found), found


def test_aks_configuration_from_the_environment() -> None:
    env = {
        "KUBE_AUDIT_AKS_STORAGE_ACCOUNT_URL": "https://acct.blob.core.windows.net",
        "KUBE_AUDIT_AKS_START_AT": "end",
    }
    cfg = load(build_parser().parse_args(["check-config"]), env)
    assert cfg.aks.storage_account_url == "https://acct.blob.core.windows.net"
    assert cfg.aks.categories == ("kube-audit", "kube-audit-admin")
    assert cfg.aks.start_at == "end"
    require_source(cfg)  # the archive alone is a source


def test_an_event_in_both_categories_is_counted_once() -> None:
    """kube-audit-admin holds the same events as kube-audit (less get and
    list): with both enabled, the second copy is a duplicate."""
    records = [r for r in distinct(RECORDS) if inner_event(r)["verb"] not in ("get", "list")]
    assert len(records) >= 3
    store = MemoryStore()
    for category in ("kube-audit", "kube-audit-admin"):
        store.append(f"insights-logs-{category}", hour_blob(16), lines(records))
    registry, metrics, pipeline = new_pipeline()
    archive(store, pipeline, metrics).poll_once()
    assert by_source(registry, "kube_audit_events_total", "aks") == len(records)
    assert by_source(registry, "kube_audit_events_duplicate_total", "aks") == len(records)
    assert audit_samples(registry) == audit_samples(
        webhook_registry([inner_event(r) for r in records])
    )


def test_the_aks_metrics_are_in_the_readme() -> None:
    registry, metrics, pipeline = new_pipeline()
    archive(MemoryStore(), pipeline, metrics)
    EventHubSource(FakeClient([]), pipeline=pipeline, decoder=Decoder(), metrics=metrics)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    names = {m.name for m in registry.collect() if m.name.startswith("kube_audit_aks")}
    assert len(names) == 4
    assert [n for n in sorted(names) if f"`{n}" not in readme] == []


def test_a_blob_that_cannot_be_read_is_not_skipped_for_newer_hours() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    for i, hour in enumerate(range(12, 17)):
        store.append(c, hour_blob(hour), lines(records[i : i + 1]))
    registry, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics)
    store.fail_read = {hour_blob(13)}
    assert src.poll_once() == 1  # h12; h13 fails, the newer hours wait for it
    assert registry.get_sample_value("kube_audit_aks_archive_errors_total", {"operation": "read"})
    store.fail_read = set()
    assert src.poll_once() == 4
    assert by_source(registry, "kube_audit_events_total", "aks") == 5


def test_a_refused_batch_stops_the_whole_poll() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    store.append("insights-logs-kube-audit", hour_blob(16), lines(records[:2]))
    store.append("insights-logs-kube-audit-admin", hour_blob(16), lines(records[2:4]))
    gate = Gate()
    gate.open = False
    registry, metrics, pipeline = new_pipeline([gate])
    src = archive(store, pipeline, metrics)
    assert src.poll_once() == 0
    refused = {"operation": "refused"}
    assert registry.get_sample_value("kube_audit_aks_archive_errors_total", refused) == 1
    gate.open = True
    assert src.poll_once() == 4


def test_no_credential_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    """An Azure error that quotes a SAS URL or a connection string is
    logged with the credential masked."""
    secret_sig = "sv=2022-11-02&ss=b&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
    key = "AccountKey=bm90LWEtcmVhbC1rZXk=;"

    class Leaky(MemoryStore):
        def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
            raise PermissionError(
                f"403 on https://acct.blob.core.windows.net/{container}?{secret_sig} ({key})"
            )

    _, metrics, pipeline = new_pipeline()
    with caplog.at_level("WARNING"):
        archive(Leaky(), pipeline, metrics).poll_once()
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "403 on https://acct.blob.core.windows.net" in text
    assert "c2VjcmV0" not in text and "bm90LWEt" not in text
    assert "sig=<redacted>" in text


def test_batches_hold_at_most_batch_lines_and_a_refusal_mid_blob_keeps_what_was_taken(
    tmp_path: Path,
) -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    store.append(c, hour_blob(16), lines(records[:5]))
    sizes: list[int] = []

    class Counting(Gate):
        def admit(self, events: Sequence[AuditEvent]) -> bool:
            if len(sizes) == 2:
                return False  # the third batch finds the spool full
            sizes.append(len(events))
            return True

    registry, metrics, pipeline = new_pipeline([Counting()])
    cp = tmp_path / "aks.json"
    src = archive(store, pipeline, metrics, batch_lines=2, checkpoint_file=str(cp))
    assert src.poll_once() == 4
    assert sizes == [2, 2]
    stream = stream_of(c, hour_blob(16))
    assert ArchiveCheckpoint.parse(cp.read_bytes()).streams[stream] == {
        hour_blob(16): len(lines(records[:4]))
    }
    sizes.clear()
    assert src.poll_once() == 1
    assert by_source(registry, "kube_audit_events_total", "aks") == 5


def test_most_polls_list_only_the_days_the_streams_are_at() -> None:
    records = distinct(RECORDS)
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    store.append(c, hour_blob(16), lines(records[:1]))
    now = [datetime(2025, 10, 7, 17, 30, tzinfo=UTC).timestamp()]
    registry, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics, categories=["kube-audit"], clock=lambda: now[0])
    assert src.poll_once() == 1
    assert store.listed == [(c, "")]  # the first listing is whole
    store.listed.clear()
    assert src.poll_once() == 0
    assert store.listed == [(c, f"{RESOURCE}/y=2025/m=10/d=07/")]
    # past midnight: yesterday and today
    now[0] = datetime(2025, 10, 8, 0, 10, tzinfo=UTC).timestamp()
    store.append(c, hour_blob(0, day=8), lines(records[1:2]))
    store.listed.clear()
    assert src.poll_once() == 1
    assert [p for _, p in store.listed] == [
        f"{RESOURCE}/y=2025/m=10/d=07/",
        f"{RESOURCE}/y=2025/m=10/d=08/",
    ]
    # a new cluster is found by the next whole listing
    other = RESOURCE.replace("TEST-CLUSTER", "OTHER")
    store.append(c, hour_blob(0, other, day=8), lines(records[2:3]))
    found = sum(src.poll_once() for _ in range(FULL_LIST_EVERY))
    assert found == 1
    assert by_source(registry, "kube_audit_events_total", "aks") == 3


def test_a_stream_days_behind_is_listed_whole() -> None:
    store = MemoryStore()
    c = "insights-logs-kube-audit"
    store.append(c, hour_blob(16), lines(distinct(RECORDS)[:1]))
    now = datetime(2025, 10, 12, 9, 0, tzinfo=UTC).timestamp()
    _, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics, categories=["kube-audit"], clock=lambda: now)
    src.poll_once()
    store.listed.clear()
    src.poll_once()
    assert store.listed == [(c, "")]


def test_a_container_empty_at_first_is_listed_whole_until_a_stream_appears() -> None:
    store = MemoryStore()
    now = datetime(2025, 10, 7, 17, 30, tzinfo=UTC).timestamp()
    _, metrics, pipeline = new_pipeline()
    src = archive(store, pipeline, metrics, categories=["kube-audit"], clock=lambda: now)
    assert src.poll_once() == 0
    store.append("insights-logs-kube-audit", hour_blob(16), lines(distinct(RECORDS)[:1]))
    assert src.poll_once() == 1


def test_eventhub_consumer_that_fails_to_start_is_started_again() -> None:
    records = distinct(RECORDS)
    ctx = FakeContext()
    waits: list[float] = []

    class Flaky(FakeClient):
        calls = 0

        def receive_batch(self, on_event_batch: Callable[..., None], **kwargs: Any) -> None:
            Flaky.calls += 1
            if Flaky.calls <= 2:
                raise ConnectionError("amqp:connection:forced")
            super().receive_batch(on_event_batch, **kwargs)

    class Clock:
        def wait(self, seconds: float) -> bool:
            waits.append(seconds)
            return False

        def is_set(self) -> bool:
            return False

    registry, metrics, pipeline = new_pipeline()
    src = EventHubSource(
        Flaky([(ctx, [message(records)])]), pipeline=pipeline, decoder=Decoder(), metrics=metrics
    )
    src._stop = Clock()  # type: ignore[assignment]
    src.run()
    assert waits == [1.0, 2.0]
    receive = {"operation": "receive"}
    assert registry.get_sample_value("kube_audit_aks_eventhub_errors_total", receive) == 2
    assert by_source(registry, "kube_audit_events_total", "aks") == len(records)


def test_a_sas_url_is_refused_without_echoing_its_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sas = "https://acct.blob.core.windows.net/?sv=2022-11-02&sig=c2VjcmV0"
    found = config_problems(tmp_path, f"aks:\n  storage_account_url: '{sas}'\n")
    assert any(p.startswith("aks.storage_account_url: must not carry a query") for p in found)
    assert not any("c2VjcmV0" in p for p in found)
    status = main(["check-config", "--aks.storage-account-url", sas])
    assert status == 1
    out = capsys.readouterr()
    assert "c2VjcmV0" not in out.out + out.err
