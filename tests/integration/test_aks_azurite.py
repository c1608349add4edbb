"""The AKS storage archive and the Event Hubs checkpoint store against
Azurite (Microsoft's Azure Storage emulator, started here on loopback): real
append blobs, ranged reads and containers, through azure-storage-blob."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from azure.storage.blob import BlobServiceClient
from prometheus_client import CollectorRegistry

from exporter.app import App
from exporter.cli import build_parser
from exporter.config import load, require_source
from exporter.event import Decoder
from exporter.sources import aks_eventhub
from exporter.sources.aks import (
    CONNECTION_STRING_ENV,
    ArchiveCheckpoint,
    AzureBlobStore,
    BlobArchiveSource,
    blob_service,
    stream_of,
)
from exporter.sources.aks_eventhub import checkpoint_store
from tests.azurite_server import Azurite, azurite
from tests.integration.conftest import poll
from tests.test_aks import (
    RECORDS,
    FakeClient,
    FakeContext,
    Gate,
    audit_samples,
    by_source,
    distinct,
    hour_blob,
    inner_event,
    lines,
    message,
    new_pipeline,
    webhook_registry,
)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def service(emulator: Azurite) -> Iterator[BlobServiceClient]:
    client = blob_service(emulator.account_url, {CONNECTION_STRING_ENV: emulator.connection_string})
    yield client
    for c in client.list_containers():
        client.delete_container(c.name)


def append(service: BlobServiceClient, container: str, blob: str, data: bytes) -> None:
    """What Azure Monitor does: an append blob, one block per write."""
    client = service.get_blob_client(container, blob)
    if not client.exists():
        if not service.get_container_client(container).exists():
            service.create_container(container)
        client.create_append_blob()
    client.append_block(data)


def source(service: BlobServiceClient, pipeline: Any, metrics: Any, **kw: Any) -> BlobArchiveSource:
    return BlobArchiveSource(
        AzureBlobStore(service), pipeline=pipeline, decoder=Decoder(), metrics=metrics, **kw
    )


def test_tails_both_categories_through_the_hours_and_resumes(
    service: BlobServiceClient, tmp_path: Path
) -> None:
    records = distinct(RECORDS)
    audit, admin = "insights-logs-kube-audit", "insights-logs-kube-audit-admin"
    registry, metrics, pipeline = new_pipeline()
    cp = tmp_path / "aks.json"
    src = source(service, pipeline, metrics, checkpoint_file=str(cp))
    assert src.poll_once() == 0  # no container yet: nothing, no error
    append(service, audit, hour_blob(16), lines(records[:2]))
    append(service, admin, hour_blob(16), lines(records[2:3]))
    assert src.poll_once() == 3
    append(service, audit, hour_blob(16), lines(records[3:4]))
    append(service, audit, hour_blob(17), lines(records[4:5]))
    assert src.poll_once() == 2
    saved = ArchiveCheckpoint.parse(cp.read_bytes())
    stream = stream_of(audit, hour_blob(16))
    size16 = service.get_blob_client(audit, hour_blob(16)).get_blob_properties().size
    assert saved.streams[stream] == {hour_blob(16): size16, hour_blob(17): len(lines(records[4:5]))}
    # a restart from the checkpoint reads only what came since
    append(service, audit, hour_blob(17), lines(records[5:]))
    again = source(service, pipeline, metrics, checkpoint_file=str(cp))
    assert again.poll_once() == len(records) - 5
    assert again.poll_once() == 0
    assert by_source(registry, "kube_audit_events_total", "aks") == len(records)
    assert (
        registry.get_sample_value("kube_audit_aks_archive_errors_total", {"operation": "read"})
        is None
    )
    assert audit_samples(registry) == audit_samples(
        webhook_registry([inner_event(r) for r in records])
    )


def test_a_record_split_across_append_blocks_is_read_once_whole(
    service: BlobServiceClient,
) -> None:
    records = distinct(RECORDS)
    c = "insights-logs-kube-audit"
    data = lines(records[:2])
    cut = len(orjson.dumps(records[0])) + 20  # inside the second record
    registry, metrics, pipeline = new_pipeline()
    src = source(service, pipeline, metrics)
    append(service, c, hour_blob(16), data[:cut])
    assert src.poll_once() == 1
    append(service, c, hour_blob(16), data[cut:])
    assert src.poll_once() == 1
    assert by_source(registry, "kube_audit_events_total", "aks") == 2
    assert not registry.get_sample_value(
        "kube_audit_events_invalid_total", {"source": "aks", "reason": "invalid_json"}
    )


def test_a_refused_batch_leaves_the_checkpoint_and_is_counted_once(
    service: BlobServiceClient, tmp_path: Path
) -> None:
    records = distinct(RECORDS)
    c = "insights-logs-kube-audit"
    append(service, c, hour_blob(16), lines(records))
    gate = Gate()
    gate.open = False
    registry, metrics, pipeline = new_pipeline([gate])
    cp = tmp_path / "aks.json"
    src = source(service, pipeline, metrics, checkpoint_file=str(cp))
    assert src.poll_once() == 0
    assert not cp.exists()
    gate.open = True
    assert src.poll_once() == len(records)
    assert src.poll_once() == 0
    assert gate.taken == len(records)
    assert by_source(registry, "kube_audit_events_total", "aks") == len(records)


def test_the_eventhub_checkpoint_store_keeps_checkpoints_in_its_container(
    emulator: Azurite, service: BlobServiceClient
) -> None:
    env = {CONNECTION_STRING_ENV: emulator.connection_string}
    store = checkpoint_store(emulator.account_url, "aks-eventhub-checkpoints", env)
    assert service.get_container_client("aks-eventhub-checkpoints").exists()
    # the calls EventHubConsumerClient makes for partition 0
    where = {
        "fully_qualified_namespace": "ns.servicebus.windows.net",
        "eventhub_name": "aks-audit",
        "consumer_group": "$Default",
    }
    owned = store.claim_ownership([{**where, "partition_id": "0", "owner_id": "replica-a"}])
    assert [o["partition_id"] for o in owned] == ["0"]
    store.update_checkpoint({**where, "partition_id": "0", "offset": "4242", "sequence_number": 7})
    # a second replica (or this one after a restart) finds it
    again = checkpoint_store(emulator.account_url, "aks-eventhub-checkpoints", env)
    found = again.list_checkpoints(**where)
    assert [(c["partition_id"], c["offset"], c["sequence_number"]) for c in found] == [
        ("0", "4242", 7)
    ]


def test_the_exporter_reads_the_archive_as_the_readme_configures_it(
    emulator: Azurite, service: BlobServiceClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` with the README's aks: section, the connection string in the
    environment as the README says for Azurite; the first metric appears."""
    records = distinct(RECORDS)
    append(service, "insights-logs-kube-audit", hour_blob(16), lines(records))
    monkeypatch.setenv(CONNECTION_STRING_ENV, emulator.connection_string)
    f = tmp_path / "config.yaml"
    f.write_text(
        "web:\n  listen_address: 127.0.0.1:0\n"
        "aks:\n"
        f"  storage_account_url: {emulator.account_url}\n"
        f"  checkpoint_file: {tmp_path / 'aks-checkpoint.json'}\n"
        "  poll_interval: 0.2s\n"
    )
    cfg = load(build_parser().parse_args(["run", "--config.file", str(f)]), {})
    require_source(cfg)
    app = App(cfg, CollectorRegistry())
    app.start()
    try:
        url = f"http://127.0.0.1:{app.web.address[1]}/metrics"
        text = poll(
            lambda: (
                body
                if f'kube_audit_events_total{{source="aks"}} {float(len(records))}'
                in (body := requests.get(url, timeout=5).text)
                else None
            ),
            what="the AKS events in /metrics",
        )
        assert "kube_audit_aks_archive_streams 1.0" in text
        assert emulator.connection_string not in text
    finally:
        app.stop()
    assert (tmp_path / "aks-checkpoint.json").exists()


def test_the_exporter_wires_event_hubs_with_its_checkpoint_store(
    emulator: Azurite, service: BlobServiceClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` with aks.eventhub_*: the checkpoint container is created on
    Azurite and handed to the consumer; the consumer itself (AMQP, no
    emulator here) is a double that delivers one message of records."""
    records = distinct(RECORDS)
    monkeypatch.setenv(CONNECTION_STRING_ENV, emulator.connection_string)
    built: dict[str, Any] = {}
    ctx = FakeContext()

    def client(namespace: str, eventhub: str, group: str, store: Any) -> FakeClient:
        built.update(namespace=namespace, eventhub=eventhub, group=group, store=store)
        return FakeClient([(ctx, [message(records)])])

    monkeypatch.setattr(aks_eventhub, "eventhub_client", client)
    f = tmp_path / "config.yaml"
    f.write_text(
        "web:\n  listen_address: 127.0.0.1:0\n"
        "aks:\n"
        "  eventhub_namespace: my-ns.servicebus.windows.net\n"
        "  eventhub_name: aks-audit\n"
        f"  eventhub_checkpoint_account_url: {emulator.account_url}\n"
    )
    cfg = load(build_parser().parse_args(["run", "--config.file", str(f)]), {})
    registry = CollectorRegistry()
    app = App(cfg, registry)
    app.start()
    try:
        poll(
            lambda: ctx.checkpoints or None,
            what="the batch taken and checkpointed",
        )
    finally:
        app.stop()
    assert built["namespace"] == "my-ns.servicebus.windows.net"
    assert (built["eventhub"], built["group"]) == ("aks-audit", "$Default")
    assert service.get_container_client("kube-audit-exporter-checkpoints").exists()
    assert by_source(registry, "kube_audit_events_total", "aks") == len(records)
