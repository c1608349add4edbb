"""Replay speed with and without detection (the default rules, every rule
active), on one core.

    python bench/detect.py [FILE ...] [--repeat N]

Reads audit logs (default: the real corpora in ../shared/corpora), decodes
them once per run and pushes them through the pipeline in batches of 1000,
as `replay` does, once without processors and once with the Detector. Each
repetition gets fresh auditIDs so that deduplication keeps every event.
Prints events/s for both and the detector's cost per event.

    python bench/detect.py --compare REV [--rounds N]

compares the detector alone with another revision's (a git revision of this
repository, e.g. a commit before a change of the rules or the engine): that
revision's ``exporter`` package is extracted (``git archive``) and imported
under another name into this same process, each side gets its own rules and
decodes the input with its own decoder, and the two are timed in turns, N
rounds (default 15), by CPU time. On a shared machine, two runs minutes
apart differ by more than most changes do; turns in one process see the
same neighbours. Prints the minimum and median of each side and the median
of the per-round ratios.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.detect import DetectionSettings, Detector, load_rules  # noqa: E402
from exporter.detect.noise import find_corpora  # noqa: E402
from exporter.detect.settings import CriticalWorkload  # noqa: E402
from exporter.event import Decoder, InvalidEvent  # noqa: E402
from exporter.metrics import AuditMetrics  # noqa: E402
from exporter.pipeline import Pipeline  # noqa: E402

CORPORA = find_corpora()
DEFAULT_FILES = [
    CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log",
    CORPORA / "audit2rbac-demo" / "demo.log",
]
BATCH = 1000

# Every setting filled, so that every default rule runs.
SETTINGS = DetectionSettings(
    trusted_networks=("10.20.0.0/16",),
    pod_cidrs=("10.244.0.0/16",),
    node_cidrs=("10.0.0.0/24", "192.168.0.0/16"),
    critical_workloads=(
        CriticalWorkload(
            name="payments-db",
            namespaces=("payments",),
            names=("postgres*",),
            allowed_principals=("system:serviceaccount:payments:*",),
        ),
    ),
    allowed_users=("kubernetes-admin", "minikube-user", "group:system:masters"),
    allowed_images=("registry.k8s.io/", "quay.io/", "docker.io/"),
    allowed_namespaces=("default", "kube-*", "monitoring"),
    allowed_nodes=("*",),
)


def read_lines(paths: list[Path]) -> list[bytes]:
    lines: list[bytes] = []
    for p in paths:
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        lines.extend(line for line in data.splitlines() if line.strip())
    return lines


def variants(lines: list[bytes], repeat: int) -> list[list[bytes]]:
    """``repeat`` copies of the input, each with its own auditIDs."""
    out = [lines]
    for r in range(1, repeat):
        copy = []
        for line in lines:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                copy.append(line)
                continue
            if isinstance(obj, dict) and isinstance(obj.get("auditID"), str):
                obj["auditID"] = f"{obj['auditID'][:-4]}{r:04d}"
            copy.append(orjson.dumps(obj))
        out.append(copy)
    return out


def run(runs: list[list[bytes]], detect: bool) -> tuple[int, float, int]:
    metrics = AuditMetrics(CollectorRegistry(), sources=["replay"])
    processors = []
    detector = None
    if detect:
        detector = Detector(load_rules(None), SETTINGS, metrics)
        processors.append(detector)
    pipeline = Pipeline(metrics, processors=processors, dedupe_capacity=1_000_000)
    decoder = Decoder()
    events = 0
    matched = 0
    gc.collect()
    start = time.perf_counter()
    for lines in runs:
        for i in range(0, len(lines), BATCH):
            batch: list = []
            for line in lines[i : i + BATCH]:
                try:
                    batch.append(decoder.decode_line(line))
                except InvalidEvent as e:
                    batch.append(e)
            pipeline.process(batch, "replay")
            events += len(batch)
    elapsed = time.perf_counter() - start
    if detect:
        with metrics.lock:
            matched = int(sum(metrics.rule_matches.values.values()))
    if detector is not None and len(detector.rules) != len(load_rules(None)):
        raise SystemExit(f"only {len(detector.rules)} rules active: {detector.inactive}")
    return events, elapsed, matched


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=6, help="copies of the input (default 6)")
    parser.add_argument(
        "--rounds", type=int, default=0, help="best of N rounds (default 3; 15 with --compare)"
    )
    parser.add_argument("--json", default="", help="also write the figures here as JSON")
    parser.add_argument(
        "--compare", metavar="REV", help="the detector alone against this git revision's"
    )
    args = parser.parse_args()
    if args.compare:
        return compare(args.compare, args.files or DEFAULT_FILES, args.rounds or 15)
    args.rounds = args.rounds or 3
    paths = args.files or DEFAULT_FILES
    runs = variants(read_lines(paths), args.repeat)
    n = sum(len(r) for r in runs)
    print(f"input: {n:,} lines from {len(paths)} file(s), {len(load_rules(None))} default rules")
    best: dict[bool, float] = {}
    for _ in range(args.rounds):
        for detect in (False, True):
            events, elapsed, matched = run(runs, detect)
            rate = events / elapsed
            best[detect] = max(best.get(detect, 0.0), rate)
    without, with_ = best[False], best[True]
    alone = detector_alone(runs[0], args.rounds)
    print(f"without detection: {without:>10,.0f} events/s")
    print(f"with detection:    {with_:>10,.0f} events/s  ({matched:,} rule matches)")
    print(f"detection cost:    {1e6 / with_ - 1e6 / without:>10.2f} µs/event in the pipeline")
    print(f"detector alone:    {alone:>10.2f} µs/event (decoded events, index warm)")
    if args.json:
        figures = {
            "lines": n,
            "files": [p.name for p in paths],
            "rules": len(load_rules(None)),
            "events_per_second_without_detection": round(without),
            "events_per_second_with_detection": round(with_),
            "rule_matches": matched,
            "detection_us_per_event": round(1e6 / with_ - 1e6 / without, 2),
            "detector_alone_us_per_event": round(alone, 2),
        }
        Path(args.json).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def detector_alone(lines: list[bytes], rounds: int) -> float:
    """The Detector's own cost per event once its index is built."""
    decoder = Decoder()
    events = []
    for line in lines:
        item = next(iter(decoder.decode_document(line)), None)
        if item is not None and not isinstance(item, InvalidEvent):
            events.append(item)
    detector = Detector(load_rules(None), SETTINGS)
    detector(events)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(events), BATCH):
            detector(events[i : i + BATCH])
        best = min(best, time.perf_counter() - start)
    return best / len(events) * 1e6


def compare(rev: str, paths: list[Path], rounds: int) -> int:
    """The detector alone, this tree against ``rev``, in turns (see the
    module's docstring)."""
    import importlib
    import io
    import statistics
    import subprocess
    import tarfile
    import tempfile

    lines = read_lines(paths)
    with tempfile.TemporaryDirectory(prefix="detect-compare-") as tmp:
        try:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", rev, "exporter"],
                check=True,
                capture_output=True,
            ).stdout
        except subprocess.CalledProcessError as e:
            print(f"git archive {rev}: {e.stderr.decode(errors='replace').strip()}")
            return 2
        base = Path(tmp) / "base"
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(base, filter="data")
        # the package's imports are relative: under another name it is whole
        (base / "exporter").rename(base / "exporter_base")
        sys.path.insert(0, str(base))
        sides = {"this tree": _side(importlib.import_module("exporter"), lines)}
        sides[rev] = _side(importlib.import_module("exporter_base"), lines)
        times: dict[str, list[float]] = {name: [] for name in sides}
        for n in range(rounds):
            order = list(sides.items()) if n % 2 == 0 else list(sides.items())[::-1]
            for name, (detector, events) in order:
                start = time.process_time()
                for i in range(0, len(events), BATCH):
                    detector(events[i : i + BATCH])
                times[name].append((time.process_time() - start) / len(events) * 1e6)
    print(f"input: {len(lines):,} lines from {len(paths)} file(s); {rounds} rounds in turns")
    for name, (detector, _) in sides.items():
        t = times[name]
        print(
            f"{name:>12}: {len(detector.rules)} rules active, "
            f"min {min(t):.2f} µs an event, median {statistics.median(t):.2f}"
        )
    ratios = [a / b for a, b in zip(times["this tree"], times[rev], strict=True)]
    print(f"this tree / {rev}: median of the rounds' ratios {statistics.median(ratios):.3f}")
    return 0


def _side(pkg: Any, lines: list[bytes]) -> tuple[Any, list[Any]]:
    """A revision's Detector (its default rules, every setting it knows
    filled as SETTINGS fills them) with the input decoded by its decoder,
    its index warmed."""
    import dataclasses
    import importlib

    detect = importlib.import_module(pkg.__name__ + ".detect")
    event = importlib.import_module(pkg.__name__ + ".event")
    settings_mod = importlib.import_module(pkg.__name__ + ".detect.settings")
    rules_dir = Path(detect.__file__).parent / "rules"
    ruleset = detect.load_rules(sorted(str(p) for p in rules_dir.glob("*.yaml")))
    known = {f.name for f in dataclasses.fields(detect.DetectionSettings)}
    values = {
        f.name: getattr(SETTINGS, f.name)
        for f in dataclasses.fields(SETTINGS)
        if f.name in known and f.name != "critical_workloads"
    }
    values["critical_workloads"] = tuple(
        settings_mod.CriticalWorkload(
            name=w.name,
            namespaces=w.namespaces,
            names=w.names,
            allowed_principals=w.allowed_principals,
        )
        for w in SETTINGS.critical_workloads
    )
    detector = detect.Detector(ruleset, detect.DetectionSettings(**values))
    decoder = event.Decoder()
    events = []
    for line in lines:
        item = next(iter(decoder.decode_document(line)), None)
        if item is not None and not isinstance(item, event.InvalidEvent):
            events.append(item)
    detector(events)
    return detector, events


if __name__ == "__main__":
    sys.exit(main())
