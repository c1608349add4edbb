"""The cost per event of shared state (state.url, Redis) beside in-memory
state, in one run, on one core.

    python bench/state.py [FILE ...] [--repeat N] [--batch N]

Starts Debian's redis-server on a free loopback port (nothing persisted),
decodes the input once (default: the real corpora in ../shared/corpora,
copied ``--repeat`` times under fresh auditIDs) and pushes it through the
pipeline with every default rule active, in batches of ``--batch`` (the
API server's webhook batches are up to 400 events by default), three ways:

- no detection (the floor);
- detection with state in this process's memory (no state.url);
- detection and the dedupe window in Redis (state.url): per batch one MGET,
  one pipeline of the stateful rules' Lua scripts, one pipeline of SETs.

Prints events/s for each, the cost of detection per event in each state
backend, what Redis adds per event and per batch, the round trips made and
the peak RSS of this process (one process runs all three).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.detect import DEFAULT_FILES, SETTINGS, read_lines, variants  # noqa: E402
from exporter.detect import Detector, load_rules  # noqa: E402
from exporter.event import AuditEvent, Decoder, InvalidEvent  # noqa: E402
from exporter.metrics import AuditMetrics  # noqa: E402
from exporter.pipeline import Pipeline  # noqa: E402
from exporter.state import StateSettings  # noqa: E402
from exporter.state.redis_store import RedisStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def decode(runs: list[list[bytes]]) -> list[list[bytes]]:
    """Only lines that decode to events (the rest costs the same each way)."""
    decoder = Decoder()
    out = []
    for lines in runs:
        kept = []
        for line in lines:
            try:
                decoder.decode_line(line)
            except InvalidEvent:
                continue
            kept.append(line)
        out.append(kept)
    return out


def run(
    runs: list[list[bytes]], batch: int, mode: str, server: RedisServer | None, prefix: str
) -> tuple[int, float, int, RedisStore | None]:
    metrics = AuditMetrics(CollectorRegistry(), sources=["webhook"])
    store = None
    if mode == "redis":
        assert server is not None
        store = RedisStore(StateSettings(url=server.url, prefix=prefix, timeout=2.0))
    processors = []
    if mode != "none":
        processors.append(Detector(load_rules(None), SETTINGS, metrics, shared=store))
    pipeline = Pipeline(metrics, processors=processors, dedupe_capacity=1_000_000, state=store)
    decoder = Decoder()
    # decoding is the same in every mode: done before the clock starts
    batches: list[list[AuditEvent]] = []
    for lines in runs:
        for i in range(0, len(lines), batch):
            batches.append([decoder.decode_line(ln) for ln in lines[i : i + batch]])
    events = 0
    gc.collect()
    start = time.perf_counter()
    for b in batches:
        result = pipeline.process(b, "webhook")
        events += result.accepted
    elapsed = time.perf_counter() - start
    with metrics.lock:
        matched = int(sum(metrics.rule_matches.values.values()))
    if store is not None and not store.up:
        raise SystemExit("Redis went away during the run")
    return events, elapsed, matched, store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=4, help="copies of the input (default 4)")
    parser.add_argument("--batch", type=int, default=400, help="events per batch (default 400)")
    parser.add_argument("--json", default="", help="also write the figures here as JSON")
    args = parser.parse_args()
    paths = args.files or DEFAULT_FILES
    runs = decode(variants(read_lines(paths), args.repeat))
    n = sum(len(r) for r in runs)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            results = {}
            for i, mode in enumerate(("none", "memory", "redis")):
                results[mode] = run(runs, args.batch, mode, server, f"bench{i}:")
            info = server.client().info("memory")
        finally:
            server.kill()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = {m: r[0] / r[1] for m, r in results.items()}
    us = {m: r[1] / r[0] * 1e6 for m, r in results.items()}
    store = results["redis"][3]
    assert store is not None
    trips = sum(store.round_trips.values())
    nbatches = sum((len(r) + args.batch - 1) // args.batch for r in runs)
    same = results["memory"][2] == results["redis"][2]
    print(f"input: {n:,} events from {len(paths)} file(s), batches of {args.batch}")
    print(f"no detection:           {rate['none']:>10,.0f} events/s")
    print(
        f"detection, memory:      {rate['memory']:>10,.0f} events/s"
        f"  ({us['memory'] - us['none']:.2f} µs/event for detection)"
    )
    print(
        f"detection, Redis:       {rate['redis']:>10,.0f} events/s"
        f"  ({us['redis'] - us['none']:.2f} µs/event for detection and shared dedupe)"
    )
    print(
        f"Redis adds:             {us['redis'] - us['memory']:>10.2f} µs/event, "
        f"{(results['redis'][1] - results['memory'][1]) / nbatches * 1e3:.2f} ms/batch "
        f"({trips / nbatches:.1f} round trips per batch)"
    )
    print(
        f"rule matches:           {results['memory'][2]:,} in memory, {results['redis'][2]:,} "
        f"through Redis ({'the same' if same else 'DIFFERENT'})"
    )
    print(
        f"peak RSS of this process: {rss_mb:.1f} MB; Redis used "
        f"{int(info['used_memory_peak']) / 2**20:.1f} MB at its peak"
    )
    if args.json:
        figures = {
            "events": n,
            "batch": args.batch,
            "files": [p.name for p in paths],
            "events_per_second": {m: round(v) for m, v in rate.items()},
            "us_per_event": {m: round(v, 2) for m, v in us.items()},
            "redis_extra_us_per_event": round(us["redis"] - us["memory"], 2),
            "round_trips_per_batch": round(trips / nbatches, 2),
            "rule_matches": {m: results[m][2] for m in ("memory", "redis")},
        }
        Path(args.json).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
