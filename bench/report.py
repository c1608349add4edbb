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


def measure(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-500:]}")
    return took, usage.ru_maxrss / 1024  # kilobytes on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the report written here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        src = Path(tmp) / "audit.log"
        n = build(src, args.events)
        out = args.keep or Path(tmp) / "report.html"
        common = ["--config.file", str(CONFIG), str(src)]
        replay_s, replay_mb = measure([str(EXE), "replay", *common, "--output", "json"])
        report_s, report_mb = measure([str(EXE), "report", *common, "--output", str(out)])
        size = out.stat().st_size
    print(f"input: {n:,} events (the demo log repeated, fresh auditIDs)")
    print(f"{'command':<8} {'seconds':>8} {'events/s':>10} {'peak RSS MB':>12}")
    for name, s, mb in (("replay", replay_s, replay_mb), ("report", report_s, report_mb)):
        print(f"{name:<8} {s:>8.1f} {n / s:>10,.0f} {mb:>12.0f}")
    ratio = replay_s / report_s
    print(f"report/replay rate: {ratio:.2f} (target >= 0.80); report size {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
