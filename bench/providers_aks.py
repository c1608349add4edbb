"""Events/s through the AKS decoding paths beside the native one:
``python bench/providers_aks.py [--events N] [--rounds R]``.

The perfspec corpus (repeated under other audit IDs up to N events) is
turned into each shape and decoded into a pipeline with metrics (no
detection, no Loki: this measures the envelope and the reading), best of R
rounds, rows interleaved:

- native: the same events as JSON lines, ``Decoder.decode_record`` per line
  (what the log file source and replay do): the baseline;
- AKS storage archive: ``PT1H.json`` append blobs of diagnostic records
  (``properties.log`` a JSON string), read by ``BlobArchiveSource.poll_once``
  from an in-memory blob store (ranged reads of 4 MiB, whole lines, the
  checkpoint kept in memory);
- AKS Event Hubs: messages of ``{"records": [...]}`` (100 records each, as
  diagnostic settings batch them), through ``EventHubSource.on_event_batch``
  in batches of 300 messages (the consumer's default).

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from exporter.detect.noise import find_corpora  # noqa: E402
from exporter.event import Batch, Decoder  # noqa: E402
from exporter.metrics import AuditMetrics  # noqa: E402
from exporter.pipeline import Pipeline  # noqa: E402
from exporter.sources.aks import BlobArchiveSource, BlobInfo  # noqa: E402
from exporter.sources.aks_eventhub import EventHubSource  # noqa: E402

PERFSPEC = "perfspec-kubernetes-event-dataset/reconstructed-audit.log"
BLOB = (
    "resourceId=/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE"
    "/MANAGEDCLUSTERS/BENCH/y=2025/m=10/d=07/h={hour:02d}/m=00/PT1H.json"
)
PER_BLOB = 50_000  # records per hourly blob
PER_MESSAGE = 100


def native_lines(events: int) -> list[bytes]:
    lines = (find_corpora() / PERFSPEC).read_bytes().splitlines()
    out: list[bytes] = []
    copy = 0
    while len(out) < events:
        prefix = b'"auditID":"' + (f"c{copy}-".encode() if copy else b"")
        out += [ln.replace(b'"auditID":"', prefix, 1) for ln in lines[: events - len(out)]]
        copy += 1
    return out


def record(line: bytes) -> bytes:
    """The diagnostic record AKS writes for one event (the real shape)."""
    return orjson.dumps(
        {
            "category": "kube-audit",
            "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
            "properties": {
                "log": line.decode(),
                "containerID": "a64cba7fefbf5020788dc29d9247157585bbb64826bf7209623ca7bb49b15fe7",
                "stream": "stdout",
                "pod": "kube-apiserver-869d7bb754-kkg69",
            },
            "resourceId": "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/"
            "MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/BENCH",
            "serviceBuild": "na",
            "time": "2025-10-07T16:19:19.647880072Z",
        }
    )


class Store:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
        if container != "insights-logs-kube-audit":
            return []
        return [BlobInfo(n, len(d)) for n, d in self.blobs.items()]

    def read(self, container: str, blob: str, offset: int, length: int) -> bytes:
        return self.blobs[blob][offset : offset + length]


class Message:
    def __init__(self, body: bytes) -> None:
        self.body = body


class Context:
    partition_id = "0"

    def update_checkpoint(self, event: Any = None, **kwargs: Any) -> None:
        pass


def pipeline() -> tuple[Pipeline, AuditMetrics]:
    metrics = AuditMetrics(CollectorRegistry())
    return Pipeline(metrics), metrics


def run_native(lines: list[bytes]) -> int:
    pipe, _ = pipeline()
    decoder = Decoder()
    taken = 0
    for start in range(0, len(lines), 1000):
        batch = Batch()
        for line in lines[start : start + 1000]:
            batch.add_all(decoder.decode_record(line))
        taken += pipe.process(batch, "replay").accepted
    return taken


def run_archive(blobs: dict[str, bytes]) -> int:
    pipe, metrics = pipeline()
    src = BlobArchiveSource(Store(blobs), pipeline=pipe, decoder=Decoder(), metrics=metrics)
    return src.poll_once()


def run_eventhub(messages: list[Message]) -> int:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    src = EventHubSource(
        None,  # type: ignore[arg-type]  # on_event_batch is called directly
        pipeline=Pipeline(metrics),
        decoder=Decoder(),
        metrics=metrics,
    )
    for start in range(0, len(messages), 300):
        src.on_event_batch(Context(), messages[start : start + 300])
    return int(registry.get_sample_value("kube_audit_events_total", {"source": "aks"}) or 0)


def best(fn: Callable[[], int], rounds: int, events: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        taken = fn()
        times.append(time.perf_counter() - t0)
        if taken < events * 0.99:
            raise SystemExit(f"{fn.__name__}: only {taken} of {events} events taken")
    return events / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = native_lines(args.events)
    records = [record(ln) for ln in lines]
    blobs = {
        BLOB.format(hour=i // PER_BLOB): b"".join(r + b"\n" for r in records[i : i + PER_BLOB])
        for i in range(0, len(records), PER_BLOB)
    }
    messages = [
        Message(b'{"records":[' + b",".join(records[i : i + PER_MESSAGE]) + b"]}")
        for i in range(0, len(records), PER_MESSAGE)
    ]
    rows = {
        "native JSON lines (baseline)": lambda: run_native(lines),
        "AKS storage archive (PT1H.json)": lambda: run_archive(blobs),
        "AKS Event Hubs ({records: [...]})": lambda: run_eventhub(messages),
    }
    rates: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved, best of each
        for name, fn in rows.items():
            rates[name] = max(rates.get(name, 0.0), best(fn, 1, len(lines)))
    base = rates["native JSON lines (baseline)"]
    print(f"{len(lines):,} events, best of {args.rounds} rounds (events/s, ratio to native)")
    for name, rate in rates.items():
        print(f"  {name:<36} {rate:>10,.0f}/s  {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
