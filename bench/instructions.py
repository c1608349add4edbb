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
  first line alone (start-up) and on its first ``--events`` lines, so that
  the difference over the events is what one event costs;
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
(Debian's package; ``make deps-bench`` installs it).
"""

from __future__ import annotations

import argparse
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
        env={"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    m = COLLECTED.search(out.stderr)
    if m is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {out.stderr[-500:]!r}")
    return int(m.group(1))


def per_event(argv: list[str], one: Path, many: Path, events: int) -> tuple[int, float]:
    """(start-up instructions, instructions an event) of ``argv + [file]``."""
    start = count([*argv, str(one)])
    total = count([*argv, str(many)])
    return start, (total - start) / (events - 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="instructions an event (callgrind)")
    parser.add_argument("--events", type=int, default=20_000, help="lines of each input counted")
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
        inputs = write_inputs(work, args.events)
        for (kind, path), size in zip(
            (("metadata", inputs["metadata"]), ("bodies", inputs["bodies"])),
            args.for_events,
            strict=True,
        ):
            lines = path.read_bytes().splitlines(keepends=True)
            events = min(args.events, len(lines))
            one, many = work / f"{kind}-1.log", work / f"{kind}-n.log"
            one.write_bytes(lines[0])
            many.write_bytes(b"".join(lines[:events]))
            loop = per_event([python, "-c", LOOP], one, many, events)
            replay = per_event([python, "-c", REPLAY, "none", "replay"], one, many, events)
            ratio = (loop[0] + size * loop[1]) / (replay[0] + size * replay[1])
            print(f"{kind} ({events:,} events counted):")
            print(f"  orjson.loads loop   {loop[1]:>9,.0f} an event, start-up {loop[0]:>13,}")
            print(f"  replay              {replay[1]:>9,.0f} an event, start-up {replay[0]:>13,}")
            print(
                f"  loop / replay for {size:,} events: {ratio:.3f} "
                f"(after the start-up: {loop[1] / replay[1]:.3f})"
            )
            if args.stages:
                read = per_event([python, "-c", READ], one, many, events)
                print(f"  reading and decoding (read_batches)   {read[1]:>9,.0f} an event")
                for stage in ("detector", "summary"):
                    left = per_event([python, "-c", REPLAY, stage, "replay"], one, many, events)
                    print(f"  the {stage:<34} {replay[1] - left[1]:>9,.0f} an event")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
