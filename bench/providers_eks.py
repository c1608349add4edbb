"""EKS decoding paths beside the native one:
``python bench/providers_eks.py [--rounds R] [--copies C]``.

The perfspec corpus (16,563 events, ``--copies`` times) is decoded, each row
best of R rounds in this one process, rows interleaved:

- native: ``Decoder.decode_document`` on the events as JSON lines (what the
  log tailer and replay do), the baseline;
- Firehose: ``decode_records`` on a request's records, each the base64 of a
  gzip'd CloudWatch Logs subscription payload of 500 events (gunzip, the
  envelope, the unwrapping of each ``message``);
- Firehose, decompressed: the same with Firehose's own decompression on
  (base64 of the payload's JSON);
- CloudWatch pull: ``CloudWatchSource._take`` on GetLogEvents pages of
  10,000 events (the per-stream cursor's digest of each message, then the
  decoding), with a pipeline that takes everything and does nothing else;
- replay of ``aws logs filter-log-events`` output: one JSON document.

Only decoding is timed (building the inputs is not). Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from exporter.detect.noise import find_corpora  # noqa: E402
from exporter.event import Batch, Decoder  # noqa: E402
from exporter.metrics import AuditMetrics  # noqa: E402
from exporter.pipeline import BatchResult  # noqa: E402
from exporter.sources.eks import DEFAULT_MAX_DECODED_BYTES, decode_records  # noqa: E402
from exporter.sources.eks_cloudwatch import CloudWatchSource, StreamCursor  # noqa: E402

PERFSPEC = "perfspec-kubernetes-event-dataset/reconstructed-audit.log"
PAYLOAD_EVENTS = 500
PAGE_EVENTS = 10_000


class TakeAll:
    """A pipeline that takes every batch and does nothing with it."""

    def __init__(self) -> None:
        self.accepted = 0

    def process(self, items: Batch, source: str, context: str = "", **_: Any) -> BatchResult:
        self.accepted += len(items)
        return BatchResult(accepted=len(items), invalid=items.refusals.total)


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def payload(lines: list[str], base: int) -> bytes:
    return json.dumps(
        {
            "messageType": "DATA_MESSAGE",
            "owner": "123456789012",
            "logGroup": "/aws/eks/bench/cluster",
            "logStream": "kube-apiserver-audit-0",
            "subscriptionFilters": ["bench"],
            "logEvents": [
                {"id": str(base + i), "timestamp": 1_700_000_000_000 + base + i, "message": m}
                for i, m in enumerate(lines)
            ],
        }
    ).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copies", type=int, default=2)
    args = parser.parse_args()

    lines = [
        line for line in (find_corpora() / PERFSPEC).read_text().splitlines() if line.strip()
    ] * args.copies
    n = len(lines)
    decoder = Decoder()
    native = ("\n".join(lines) + "\n").encode()
    groups = chunks(lines, PAYLOAD_EVENTS)
    gz_records = [
        {"data": base64.b64encode(gzip.compress(payload(g, i * PAYLOAD_EVENTS), 6)).decode()}
        for i, g in enumerate(groups)
    ]
    plain_records = [
        {"data": base64.b64encode(payload(g, i * PAYLOAD_EVENTS)).decode()}
        for i, g in enumerate(groups)
    ]
    pages = [
        [
            {"timestamp": 1_700_000_000_000 + j * PAGE_EVENTS + i, "message": m}
            for i, m in enumerate(page)
        ]
        for j, page in enumerate(chunks(lines, PAGE_EVENTS))
    ]
    export = json.dumps(
        {
            "events": [
                {
                    "logStreamName": "kube-apiserver-audit-0",
                    "timestamp": 1_700_000_000_000 + i,
                    "message": m,
                    "ingestionTime": 1_700_000_000_500 + i,
                    "eventId": str(i),
                }
                for i, m in enumerate(lines)
            ],
            "searchedLogStreams": [],
        }
    ).encode()

    def pull() -> int:
        taker = TakeAll()
        source = CloudWatchSource(
            client=None,
            log_group="/aws/eks/bench/cluster",
            pipeline=taker,  # type: ignore[arg-type]
            decoder=decoder,
            metrics=AuditMetrics(CollectorRegistry(), sources=["eks"]),
            start_at="now",
        )
        cursor = StreamCursor()
        for page in pages:
            source._take("kube-apiserver-audit-0", cursor, page)
        return taker.accepted

    rows: list[tuple[str, Callable[[], int]]] = [
        ("native: Decoder.decode_document on JSON lines (baseline)",
         lambda: len(Batch(decoder.decode_document(native)))),
        ("Firehose: records of gzip'd subscription payloads",
         lambda: len(decode_records(gz_records, decoder, DEFAULT_MAX_DECODED_BYTES))),
        ("Firehose: records of decompressed payloads",
         lambda: len(decode_records(plain_records, decoder, DEFAULT_MAX_DECODED_BYTES))),
        ("CloudWatch pull: GetLogEvents pages (cursor digests + decoding)", pull),
        ("replay: aws logs filter-log-events output",
         lambda: len(Batch(decoder.decode_document(export)))),
    ]  # fmt: skip
    best = {name: float("inf") for name, _ in rows}
    for _ in range(args.rounds):
        for name, fn in rows:
            start = time.perf_counter()
            got = fn()
            elapsed = time.perf_counter() - start
            if got != n:
                print(f"{name}: decoded {got} events, expected {n}", file=sys.stderr)
                return 1
            best[name] = min(best[name], elapsed)
    base = n / best[rows[0][0]]
    print(f"{n:,} events (perfspec x{args.copies}), best of {args.rounds} rounds, one process")
    print(f"{'path':<66} {'events/s':>10} {'vs native':>10}")
    for name, _ in rows:
        rate = n / best[name]
        print(f"{name:<66} {rate:>10,.0f} {rate / base:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
