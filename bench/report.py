"""`report` beside `replay` over the same million events, in the same run.

    python bench/report.py [--events 1000000] [--keep FILE]

Builds the input from the demo log (demo/audit.log.gz, 25,000 events)
repeated with fresh auditIDs, then runs, each as its own process with the
demo configuration (the same rules and critical workloads):

- ``kube-audit-exporter replay FILE --output json`` (the baseline), and
- ``kube-audit-exporter report FILE --output report.html``.

Prints events/s and peak RSS of each, and report's rate as a fraction of
replay's (the target: at least 0.8, under 300 MB).
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "audit.log.gz"
CONFIG = ROOT / "demo" / "config.yaml"
EXE = Path(sys.executable).parent / "kube-audit-exporter"


def build(path: Path, events: int) -> int:
    """``events`` lines: the demo log over and over, each pass with its own
    auditIDs so that deduplication keeps every event."""
    lines = gzip.decompress(DEMO.read_bytes()).splitlines(keepends=True)
    written = 0
    with path.open("wb") as fh:
        n = 0
        while written < events:
            tag = f'"auditID":"r{n:03d}-'.encode()
            chunk = lines[: events - written]
            fh.write(b"".join(line.replace(b'"auditID":"', tag, 1) for line in chunk))
            written += len(chunk)
            n += 1
    return written


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-500:]}")
    return took, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the report written here")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternating")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        src = Path(tmp) / "audit.log"
        n = build(src, args.events)
        out = args.keep or Path(tmp) / "report.html"
        common = ["--config.file", str(CONFIG), str(src)]
        runs: dict[str, list[tuple[float, float, float]]] = {"replay": [], "report": []}
        for _ in range(args.repeat):
            runs["replay"].append(measure([str(EXE), "replay", *common, "--output", "json"]))
            runs["report"].append(measure([str(EXE), "report", *common, "--output", str(out)]))
        size = out.stat().st_size
    print(f"input: {n:,} events (the demo log repeated, fresh auditIDs); best of {args.repeat}")
    print(f"{'command':<8} {'wall s':>7} {'CPU s':>7} {'events/s (CPU)':>15} {'peak RSS MB':>12}")
    best = {}
    walls = {}
    for name, rs in runs.items():
        wall = min(r[0] for r in rs)
        cpu = min(r[1] for r in rs)
        mb = max(r[2] for r in rs)
        best[name] = cpu
        walls[name] = wall
        print(f"{name:<8} {wall:>7.1f} {cpu:>7.1f} {n / cpu:>15,.0f} {mb:>12.0f}")
    ratio = best["replay"] / best["report"]
    # CPU time, not wall time: the rate of the work itself, whatever else
    # the machine runs at the same time
    print(
        f"report/replay rate: {ratio:.2f} by CPU time, {walls['replay'] / walls['report']:.2f} "
        f"by wall time (target >= 0.80); report size {size / 1e6:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
