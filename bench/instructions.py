"""Instructions an event, counted by valgrind (callgrind): ``python
bench/instructions.py [--events N]``.

bench/scale.py times ``replay`` beside a bare ``orjson.loads`` loop; on a
shared machine the times move with the neighbours (by 10-20% from run to
run, more when another process shares the core's cache). The number of
instructions a process executes does not: two runs of the same command on
the same input agree to a few parts in a million. This counts them, for
the same two inputs as bench/scale.py (small Metadata-level events, the
perfspec corpus repeated with fresh auditIDs; body-heavy events from the
simulator):

- the loop and ``replay`` (default configuration), each on the input's
  first line alone (start-up), on its first ``--events`` lines and on
  twice as many: an event's cost is the difference between the last two
  over the events added, when the caches of values seen before (the
  detector's candidate rules per kind of event, its tests of principals,
  the timestamps' seconds) are warm; what the first ``--events`` cost
  beyond that and the start-up is their warm-up;
- with ``--stages``, replay's parts: reading and decoding alone
  (``read_batches``), and replay with the detector's and the summary's
  work on a batch left out (each costs what leaving it out saves).

It prints instructions an event and at start-up, and the ratio they give
for bench/scale.py's input size (``--for-events``, 300,000 Metadata and
100,000 body-heavy events by default). Instructions are a proxy for time,
not time: an instruction of the C parser and one of the interpreter take
different times, so this ratio and bench/scale.py's differ somewhat; the
proxy's worth is that it does not move between runs, so a change's effect
shows however busy the machine is. Nothing is asserted. Needs ``valgrind``
(Debian's package; ``make deps-bench`` installs it). The commands run in a
fixed environment, but for ``KUBE_AUDIT_PURE_PYTHON``: set, they run the
decoder's Python fast path instead of exporter._speedups.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scale import write_inputs  # noqa: E402
from exporter.accel import PURE_PYTHON_ENV  # noqa: E402

LOOP = (
    "import sys, orjson\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for line in f:\n"
    "        orjson.loads(line)\n"
)
# replay through the CLI, with a stage's work on a batch left out
REPLAY = (
    "import sys\n"
    "stub = sys.argv.pop(1)\n"
    "from exporter.cli import main\n"
    "if stub == 'detector':\n"
    "    from exporter.detect.engine import Detector\n"
    "    Detector.__call__ = lambda self, events, only=None: None\n"
    "if stub == 'summary':\n"
    "    from exporter.report.summary import Report\n"
    "    Report.__call__ = lambda self, events: None\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
READ = (
    "import sys\n"
    "from exporter.event import Decoder\n"
    "from exporter.sources.replay import read_batches\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for batch in read_batches(f, Decoder()):\n"
    "        pass\n"
)
COLLECTED = re.compile(rb"Collected : (\d+)")


def count(argv: list[str]) -> int:
    """Instructions the command executes (its children not followed)."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True,
        cwd=ROOT,
        # a fixed environment, but for the choice of the C or Python fast path
        env={"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"}
        | {k: v for k, v in os.environ.items() if k == PURE_PYTHON_ENV},
        check=True,
    )
    m = COLLECTED.search(out.stderr)
    if m is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {out.stderr[-500:]!r}")
    return int(m.group(1))


class Counts:
    """A command's instructions on one line, on ``events`` lines and on
    twice as many."""

    def __init__(self, argv: list[str], one: Path, half: Path, full: Path, events: int) -> None:
        self.start = count([*argv, str(one)])
        self.half = count([*argv, str(half)])
        self.full = count([*argv, str(full)])
        self.events = events

    @property
    def per_event(self) -> float:
        """Instructions an event, caches warm."""
        return (self.full - self.half) / self.events

    @property
    def warm_up(self) -> float:
        """What the first ``events`` cost beyond start-up and per_event."""
        return self.half - self.start - self.events * self.per_event

    def at(self, size: int) -> float:
        """The instructions of an input of ``size`` events (>= events)."""
        return self.half + (size - self.events) * self.per_event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="instructions an event (callgrind)")
    parser.add_argument(
        "--events", type=int, default=20_000, help="lines counted (and twice as many)"
    )
    parser.add_argument(
        "--for-events",
        type=int,
        nargs=2,
        default=(300_000, 100_000),
        metavar=("METADATA", "BODIES"),
        help="input sizes of bench/scale.py, for the ratio",
    )
    parser.add_argument("--stages", action="store_true", help="also replay's parts")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind not found: `make deps-bench` installs it", file=sys.stderr)
        return 1
    python = sys.executable
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "exporter")], check=True)
    with tempfile.TemporaryDirectory(prefix="kube-audit-instructions-") as tmp:
        work = Path(tmp)
        inputs = write_inputs(work, 2 * args.events)
        for (kind, path), size in zip(
            (("metadata", inputs["metadata"]), ("bodies", inputs["bodies"])),
            args.for_events,
            strict=True,
        ):
            lines = path.read_bytes().splitlines(keepends=True)
            events = min(args.events, len(lines) // 2)
            files = [work / f"{kind}-{n}.log" for n in (1, events, 2 * events)]
            for f, n in zip(files, (1, events, 2 * events), strict=True):
                f.write_bytes(b"".join(lines[:n]))
            one, half, full = files
            loop = Counts([python, "-c", LOOP], one, half, full, events)
            replay = Counts([python, "-c", REPLAY, "none", "replay"], one, half, full, events)
            print(f"{kind} ({events:,} events and {2 * events:,} counted):")
            for name, c in (("orjson.loads loop", loop), ("replay", replay)):
                print(
                    f"  {name:<18} {c.per_event:>9,.0f} an event, start-up {c.start:>13,}, "
                    f"warm-up {c.warm_up:>13,.0f}"
                )
            print(
                f"  loop / replay for {size:,} events: {loop.at(size) / replay.at(size):.3f} "
                f"(an event, caches warm: {loop.per_event / replay.per_event:.3f})"
            )
            if args.stages:
                read = Counts([python, "-c", READ], one, half, full, events)
                print(f"  reading and decoding (read_batches)   {read.per_event:>9,.0f} an event")
                for stage in ("detector", "summary"):
                    left = Counts([python, "-c", REPLAY, stage, "replay"], one, half, full, events)
                    saved = replay.per_event - left.per_event
                    print(f"  the {stage:<34} {saved:>9,.0f} an event")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
