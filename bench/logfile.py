"""The log tailer's throughput, and what exactly-once costs it:
``python bench/logfile.py [--events N] [--rounds R]``.

A log of N events is written from the perfspec corpus (repeated under other
audit IDs), then each row tails it from the start with
``LogFileSource.poll_once`` until every line is taken, in batches of 1000
lines, through a pipeline with metrics (no detection: this measures the
tailer and what it saves), best of R rounds (rows interleaved):

- no checkpoint file (the naive baseline): nothing is saved, a restart
  reads everything again;
- checkpoint file, saved durably (write, fsync, rename, fsync of the
  directory) with every batch before the metrics count it: the default
  without Loki;
- with a Loki spool (fsync ``always``, no sender): each batch's mark is one
  more record in the batch's own write, so the checkpoint file is saved
  only on the clock.

Run it from a checkout of the code before exactly-once (its tailer saved the
checkpoint every ``checkpoint_interval`` only) for the "before" figure; rows
are labelled with what the tree does. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from exporter.detect.noise import find_corpora  # noqa: E402
from exporter.event import Decoder  # noqa: E402
from exporter.loki import LokiSettings, LokiSink  # noqa: E402
from exporter.metrics import AuditMetrics  # noqa: E402
from exporter.pipeline import Pipeline, Sink  # noqa: E402
from exporter.sources.logfile import LogFileSource  # noqa: E402

PERFSPEC = "perfspec-kubernetes-event-dataset/reconstructed-audit.log"


def write_log(path: Path, events: int) -> int:
    lines = (find_corpora() / PERFSPEC).read_bytes().splitlines(keepends=True)
    out = []
    copy = 0
    while len(out) < events:
        prefix = b'"auditID":"' + (f"c{copy}-".encode() if copy else b"")
        out += [ln.replace(b'"auditID":"', prefix, 1) for ln in lines[: events - len(out)]]
        copy += 1
    path.write_bytes(b"".join(out))
    return len(out)


def tail(log: Path, work: Path, checkpoint: bool, sinks: Callable[[], list[Sink]]) -> float:
    """Seconds to take the whole log from its start."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    metrics = AuditMetrics(CollectorRegistry())
    made = sinks()
    pipeline = Pipeline(metrics, sinks=made)
    source = LogFileSource(
        path=str(log),
        checkpoint_file=str(work / "checkpoint.json") if checkpoint else None,
        pipeline=pipeline,
        decoder=Decoder(),
        metrics=metrics,
        checkpoint_interval=3600.0,
    )
    start = time.perf_counter()
    while source.poll_once():
        pass
    seconds = time.perf_counter() - start
    source.stop()
    pipeline.close(timeout=0.1)
    return seconds


def save_ms(work: Path, times: int = 50) -> float:
    """Milliseconds per durable checkpoint save, alone."""
    from exporter.sources import checkpoint as ckpt

    work.mkdir(exist_ok=True)
    position = ckpt.Position("/a.log", 1, 2, ckpt.fingerprint(b"x"), 1, 100, 10)
    ck = ckpt.Checkpoint("/a.log", position, None)
    start = time.perf_counter()
    for _ in range(times):
        ckpt.save(str(work / "alone.json"), ck)
    return (time.perf_counter() - start) * 1000 / times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-logfile-"))
    try:
        log = tmp / "audit.log"
        n = write_log(log, args.events)
        work = tmp / "work"

        def spool() -> list[Sink]:
            settings = LokiSettings(
                url="http://127.0.0.1:9/loki/api/v1/push", spool_dir=str(work / "spool")
            )
            return [LokiSink(settings, start=False)]

        marks = "resume_mark" in inspect.signature(LogFileSource).parameters
        rows: list[tuple[str, bool, Callable[[], list[Sink]]]] = [
            ("no checkpoint file (baseline)", False, list),
            (
                "checkpoint file, saved with each batch"
                if marks
                else "checkpoint file, saved on the clock",
                True,
                list,
            ),
            (
                "Loki spool, mark in each batch's write" if marks else "Loki spool, no marks",
                True,
                spool,
            ),
        ]
        print(f"tailer over {n} events ({log.stat().st_size >> 20} MiB), best of {args.rounds}")
        print(f"code: {os.path.dirname(inspect.getfile(LogFileSource))}")
        # Rounds outside, rows inside: a noisy neighbour slows every row alike.
        best = [float("inf")] * len(rows)
        for _ in range(args.rounds):
            for i, (_name, checkpoint, sinks) in enumerate(rows):
                best[i] = min(best[i], tail(log, work, checkpoint, sinks))
        base = n / best[0]
        for (name, _, _), seconds in zip(rows, best, strict=True):
            rate = n / seconds
            print(f"  {name:42s} {rate:10,.0f} events/s  {rate / base:5.2f}x baseline")
        print(f"  one checkpoint save (write, fsync, rename, fsync dir): {save_ms(work):.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
