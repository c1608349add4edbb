"""The Loki path beside python-logging-loki, in one run:
``python bench/loki.py [--events N]``.

The simulator writes N events to a temporary file. A Loki receiver runs in
its own process on one CPU: the tests' receiver (tests/loki_receiver.py),
which decodes raw snappy + protobuf with protoc-generated classes, or JSON,
checks every stream selector and answers 204; here it only tallies what it
accepted instead of keeping it. Then, each in its own process on the other
CPU, these senders push the same events to it:

- ``LokiSink``: the file read and decoded (``Decoder.decode_line``) into
  batches of 1000 events (replay's batch) before the clock starts, as the
  pipeline hands them over (decoding is timed apart: the pipeline does it
  for the metrics whether Loki is on or not); then each batch handed to
  ``LokiSink.submit``: redaction, stream labels, structured metadata, spool
  append (fsync ``always`` and ``never``, one row each), and the sender
  thread's 1 MiB protobuf + snappy pushes. The clock runs from the first
  ``submit`` until ``LokiSink.drain`` returns: every entry acknowledged by
  the receiver and released from the spool.
- python-logging-loki: the lines read into memory before the clock starts,
  then a ``LokiHandler`` (emitter v1, JSON) on a logger, ``logger.info(line)``
  per event. It sends one HTTP request per record, synchronously, with no
  retry, no spool, no structured metadata and the send time as the
  timestamp. The clock runs from the first ``info`` call until the last
  returns (its request answered).

- ``LokiSink`` with parallel pushes: Loki is rarely on the same host, and
  one push at a time waits a round trip per batch. For these rows the
  receiver holds each answer for ``--latency`` seconds (default 0.05, a
  Loki in another zone or behind a gateway) and the sink runs with
  ``loki.parallelism`` 1, then each of ``--parallelism`` (default 1 and 4),
  fsync ``never``, all in the same run: parallel pushes beside one.

Events/s is events over those wall-clock seconds; CPU s is the sender
process's CPU time (all its threads) over the same span. Peak RSS is each sender
process's own high-water mark (wait4); "RSS at start" is what it held when
the clock started (the interpreter, its libraries and the input: decoded
events weigh about 4 KB each), so the difference is what sending took. The
receiver's tally is checked against what was sent: every event's line
arrives, once. Figures are printed, never asserted; the target is the Loki
path >= 50x the baseline.

Internal modes (run by the above): ``receiver``, ``sink``, ``logging-loki``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.results import finish  # noqa: E402

TARGET = 50.0  # the Loki path's events/s over the baseline's
BATCH_LINES = 1000
CLUSTER = "bench"
SELF = str(Path(__file__).resolve())


# --- the receiver process ----------------------------------------------------------


def receiver_main() -> int:
    """The tests' Loki receiver, tallying instead of keeping. Prints its URL,
    then answers commands on stdin, one JSON line each: ``stats``, ``reset``."""
    from tests.loki_receiver import LokiReceiver, Received, compile_push_proto

    class Tally:
        """Stands in for the receiver's lists: counts, remembers line digests."""

        def __init__(self) -> None:
            self.n = 0
            self.lines: set[int] = set()
            self.duplicates = 0

        def extend(self, items: Sequence[Received]) -> None:
            for r in items:
                h = hash(r.line)
                if h in self.lines:
                    self.duplicates += 1
                else:
                    self.lines.add(h)
            self.n += len(items)

        def append(self, _: object) -> None:
            self.n += 1

        def __len__(self) -> int:
            return self.n

    class BenchReceiver(LokiReceiver):
        def __init__(self, pb2: Any) -> None:
            super().__init__(pb2)
            self.answers: Counter[int] = Counter()
            self.reset()

        def reset(self) -> None:
            with self.lock:
                self.received = Tally()  # type: ignore[assignment]
                self.requests = Tally()  # type: ignore[assignment]
                self.answers.clear()

        def _answer(self, h: Any, req: Any, status: int, text: str) -> None:
            with self.lock:
                self.answers[status] += 1
            super()._answer(h, req, status, text)

        latency = 0.0

        def _handle(self, h: Any) -> None:
            if self.latency:
                time.sleep(self.latency)  # a round trip to a Loki further away
            super()._handle(h)

    with tempfile.TemporaryDirectory(prefix="loki-bench-proto-") as tmp:
        receiver = BenchReceiver(compile_push_proto(Path(tmp)))
    print(receiver.url, flush=True)
    for command in sys.stdin:
        command = command.strip()
        if command == "reset":
            receiver.reset()
            print("{}", flush=True)
        elif command.startswith("latency "):
            receiver.latency = float(command.split()[1])
            print("{}", flush=True)
        elif command == "stats":
            with receiver.lock:
                got: Any = receiver.received
                reqs: Any = receiver.requests
                stats = {
                    "entries": got.n,
                    "distinct_lines": len(got.lines),
                    "duplicates": got.duplicates,
                    "requests": reqs.n,
                    "statuses": {str(k): v for k, v in receiver.answers.items()},
                }
            print(json.dumps(stats), flush=True)
    receiver.close()
    return 0


class Receiver:
    """The parent's handle on the receiver process."""

    def __init__(self, cpu: int | None, log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, SELF, "receiver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=_pinned(cpu),
            cwd=ROOT,
        )
        self.url = self._line()

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            raise ChildFailed(f"receiver exited {self.proc.wait()} before answering")
        return line

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._line())
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


# --- the senders -------------------------------------------------------------------


def _resident_mb() -> float:
    """This process's resident set now, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def sink_main(
    url: str, path: str, fsync: str, spool_dir: str, batch: int, parallelism: int = 1
) -> int:
    """Our Loki path, as the pipeline drives it: decoded events handed to
    ``submit`` in batches, then ``drain``."""
    import gc

    from exporter.event import AuditEvent, Decoder, InvalidEvent
    from exporter.loki import LokiSettings, LokiSink

    settings = LokiSettings(
        url=url, spool_dir=spool_dir, cluster=CLUSTER, fsync=fsync, parallelism=parallelism
    )
    sink = LokiSink(settings)
    decode = Decoder().decode_line
    # Decoding is the pipeline's work, done for the metrics whether Loki is
    # on or not: timed on its own, before the clock starts.
    began = time.perf_counter()
    batches: list[list[AuditEvent]] = []
    events = invalid = 0
    with open(path, "rb") as f:
        pending: list[AuditEvent] = []
        for line in f:
            try:
                pending.append(decode(line))
            except InvalidEvent:
                invalid += 1
                continue
            if len(pending) == batch:
                batches.append(pending)
                pending = []
        if pending:
            batches.append(pending)
    events = sum(len(b) for b in batches)
    decode_seconds = time.perf_counter() - began
    # The events held here stand for the pipeline's input: out of the
    # collector's way, as they would not exist all at once in the exporter.
    gc.collect()
    gc.freeze()
    held = _resident_mb()
    refused = 0
    cpu = time.process_time()
    began = time.perf_counter()
    for b in batches:
        while not sink.submit(b):
            refused += 1  # spool full: wait for the sender, as replay does
            if not sink.wait_for_room(600):
                raise SystemExit("the spool made no room in 600 s")
    submitted = time.perf_counter() - began
    drained = sink.drain(600)
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    stats = sink.stats
    sink.close(5)
    json.dump(
        {
            "events": events,
            "invalid": invalid,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "submit_seconds": submitted,
            "decode_seconds": decode_seconds,
            "held_mb": held,
            "drained": drained,
            "sent": stats.entries_sent,
            "batches": stats.batches_sent,
            "spool_full": refused,
        },
        sys.stdout,
    )
    return 0 if drained else 1


def logging_loki_main(url: str, path: str) -> int:
    """python-logging-loki, as its README shows it: a LokiHandler on a logger."""
    import gc
    import logging

    try:
        import logging_loki  # type: ignore[import-untyped]
    except ImportError:
        print(
            "python-logging-loki is not installed: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2

    errors = 0

    class Handler(logging_loki.LokiHandler):  # type: ignore[misc]
        def handleError(self, record: logging.LogRecord) -> None:
            nonlocal errors
            errors += 1
            self.emitter.close()

    handler = Handler(
        url=url.rstrip("/") + "/loki/api/v1/push",
        tags={"service_name": "kube-audit", "cluster": CLUSTER},
        version="1",
    )
    logger = logging.getLogger("kube-audit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    info = logger.info
    with open(path, "rb") as f:
        lines = [line.rstrip(b"\n").decode() for line in f]
    gc.collect()
    gc.freeze()
    held = _resident_mb()
    cpu = time.process_time()
    began = time.perf_counter()
    for line in lines:
        info(line)
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    json.dump(
        {
            "events": len(lines),
            "seconds": seconds,
            "cpu_seconds": cpu,
            "errors": errors,
            "held_mb": held,
        },
        sys.stdout,
    )
    return 0


# --- the parent ----------------------------------------------------------------------


class ChildFailed(Exception):
    pass


@dataclass
class Row:
    name: str
    events: int
    seconds: float
    peak_rss_mb: float
    # Resident when the clock started: the interpreter, libraries and the
    # input held in memory (decoded events, or lines for the baseline).
    input_rss_mb: float
    cpu_seconds: float  # the sender process's, while the clock ran
    received: int
    baseline: bool = False
    note: str = ""
    # LokiSink rows: decoding the input beforehand (timed apart), per event
    decode_us: float = 0.0
    # The round-trip rows: how long the receiver held each answer; compared
    # with each other (parallel pushes beside one), not with the baseline.
    latency_ms: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _pinned(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def measure(argv: Sequence[str], cpu: int | None, log: IO[bytes]) -> tuple[dict[str, Any], Any]:
    """Run a sender to completion: (its JSON result, its rusage)."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=log, preexec_fn=_pinned(cpu), cwd=ROOT
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise ChildFailed(f"{' '.join(argv[1:3])} exited {code}")
    result: dict[str, Any] = json.loads(out)
    return result, usage


def write_events(path: Path, events: int) -> int:
    from exporter.simulate import Options, simulate_lines

    size = 0
    with open(path, "wb") as f:
        for line in simulate_lines(Options(events=events, seed=3)):
            f.write(line)
            size += len(line)
    return size


def first_lines(src: Path, dst: Path, n: int) -> None:
    with open(src, "rb") as f, open(dst, "wb") as out:
        for i, line in enumerate(f):
            if i == n:
                break
            out.write(line)


def check(receiver: Receiver, events: int) -> tuple[int, str]:
    """What the receiver got since the last reset, and what is wrong with it."""
    got = receiver.ask("stats")
    problems = []
    if got["distinct_lines"] != events:
        problems.append(f"{got['distinct_lines']} distinct lines of {events}")
    if got["duplicates"]:
        problems.append(f"{got['duplicates']} duplicates")
    bad = {k: v for k, v in got["statuses"].items() if k != "204"}
    if bad:
        problems.append(f"answers {bad}")
    receiver.ask("reset")
    return int(got["entries"]), "; ".join(problems)


def run(args: argparse.Namespace, work: Path, log: IO[bytes]) -> list[Row]:
    cpus = sorted(os.sched_getaffinity(0))
    sender_cpu = cpus[0]
    receiver_cpu = cpus[1] if len(cpus) > 1 else None
    path = work / "audit.log"
    size = write_events(path, args.events)
    print(f"{args.events:,} simulated events, {size / 1e6:,.0f} MB", file=sys.stderr)
    baseline_events = min(args.baseline_events or args.events, args.events)
    baseline_path = path
    if baseline_events < args.events:
        baseline_path = work / "audit-head.log"
        first_lines(path, baseline_path, baseline_events)
    print(f"senders on CPU {sender_cpu}, receiver on CPU {receiver_cpu}", file=sys.stderr)
    receiver = Receiver(receiver_cpu, log)
    rows: list[Row] = []
    try:
        for fsync in args.fsync:
            spool = work / f"spool-{fsync}"
            argv = [
                sys.executable, SELF, "sink", "--url", receiver.url, "--file", str(path),
                "--fsync", fsync, "--spool", str(spool), "--batch", str(args.batch),
            ]  # fmt: skip
            result, usage = measure(argv, sender_cpu, log)
            received, note = check(receiver, int(result["events"]))
            events = int(result["events"])
            detail = (
                f"{int(result['batches'])} pushes; submit returned after "
                f"{result['submit_seconds']:.2f}s; decoding beforehand took "
                f"{result['decode_seconds'] / events * 1e6:.1f} us/event"
            )
            rows.append(
                Row(
                    f"LokiSink, fsync {fsync}",
                    events,
                    float(result["seconds"]),
                    _mb(usage),
                    float(result["held_mb"]),
                    float(result["cpu_seconds"]),
                    received,
                    note="; ".join(filter(None, [note, detail])),
                    decode_us=result["decode_seconds"] / events * 1e6,
                )
            )
            print(f"  LokiSink fsync {fsync}: {result['seconds']:.2f}s", file=sys.stderr)
        if args.parallelism:
            receiver.ask(f"latency {args.latency}")
            for n in args.parallelism:
                spool = work / f"spool-parallel-{n}"
                argv = [
                    sys.executable, SELF, "sink", "--url", receiver.url, "--file", str(path),
                    "--fsync", "never", "--spool", str(spool), "--batch", str(args.batch),
                    "--parallelism", str(n),
                ]  # fmt: skip
                result, usage = measure(argv, sender_cpu, log)
                received, note = check(receiver, int(result["events"]))
                events = int(result["events"])
                what = "1 push" if n == 1 else f"{n} pushes"
                rows.append(
                    Row(
                        f"LokiSink, {what} in flight, {args.latency * 1000:g} ms Loki",
                        events,
                        float(result["seconds"]),
                        _mb(usage),
                        float(result["held_mb"]),
                        float(result["cpu_seconds"]),
                        received,
                        note="; ".join(
                            filter(None, [note, f"{int(result['batches'])} pushes, fsync never"])
                        ),
                        decode_us=result["decode_seconds"] / events * 1e6,
                        latency_ms=args.latency * 1000,
                    )
                )
                print(f"  LokiSink parallelism {n}: {result['seconds']:.2f}s", file=sys.stderr)
            receiver.ask("latency 0")
        if not args.no_baseline:
            argv = [
                sys.executable, SELF, "logging-loki", "--url", receiver.url,
                "--file", str(baseline_path),
            ]  # fmt: skip
            result, usage = measure(argv, sender_cpu, log)
            received, note = check(receiver, int(result["events"]))
            if result["errors"]:
                note = "; ".join(filter(None, [note, f"{result['errors']} records failed"]))
            rows.append(
                Row(
                    "python-logging-loki LokiHandler",
                    int(result["events"]),
                    float(result["seconds"]),
                    _mb(usage),
                    float(result["held_mb"]),
                    float(result["cpu_seconds"]),
                    received,
                    baseline=True,
                    note=note,
                )
            )
            print(f"  python-logging-loki: {result['seconds']:.2f}s", file=sys.stderr)
    finally:
        receiver.close()
    return rows


def _mb(usage: Any) -> float:
    return float(usage.ru_maxrss) / 1024.0  # KiB on Linux


def table(rows: list[Row]) -> str:
    base = next((r for r in rows if r.baseline), None)
    lines = [
        f"{'sender':<42} {'events':>9} {'seconds':>8} {'events/s':>9} {'CPU s':>7} "
        f"{'RSS at start':>12} {'peak RSS MB':>11} {'vs baseline':>11}  target"
    ]
    for r in rows:
        ratio, verdict = "", ""
        one = next((o for o in rows if o.latency_ms and "1 push" in o.name), None)
        if r.baseline:
            ratio = "baseline"
        elif r.latency_ms:
            if one is not None and one.rate:
                ratio = f"{r.rate / one.rate:.1f}x 1 push"
        elif base is not None and base.rate:
            x = r.rate / base.rate
            ratio = f"{x:.1f}x"
            verdict = f">= {TARGET:.0f}x {'ok' if x >= TARGET else 'BELOW'}"
        lines.append(
            f"{r.name:<42} {r.events:>9,} {r.seconds:>8.2f} {r.rate:>9,.0f} {r.cpu_seconds:>7.2f} "
            f"{r.input_rss_mb:>12.1f} {r.peak_rss_mb:>11.1f} {ratio:>11}  {verdict}"
        )
        if r.note:
            lines.append(f"    {r.note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The Loki path beside python-logging-loki (figures, no assertions)"
    )
    sub = parser.add_subparsers(dest="mode")
    p = sub.add_parser("receiver", help="internal: the receiver process")
    p = sub.add_parser("sink", help="internal: LokiSink as the sender")
    p.add_argument("--url", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--fsync", required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--batch", type=int, default=BATCH_LINES)
    p.add_argument("--parallelism", type=int, default=1)
    p = sub.add_parser("logging-loki", help="internal: python-logging-loki as the sender")
    p.add_argument("--url", required=True)
    p.add_argument("--file", required=True)
    parser.add_argument("--events", type=int, default=100_000, help="default 100,000")
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=0,
        help="python-logging-loki sends only the first this many (default: all)",
    )
    parser.add_argument(
        "--batch", type=int, default=BATCH_LINES, help="events per submit (default 1000)"
    )
    parser.add_argument(
        "--fsync",
        action="append",
        choices=("always", "interval", "never"),
        help="spool fsync policy, one row each (default: always, never)",
    )
    parser.add_argument(
        "--parallelism",
        action="append",
        type=int,
        help="loki.parallelism of the round-trip rows, one row each (default: 1, 4; 0 skips)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.05,
        help="seconds the receiver holds each answer in the round-trip rows (default 0.05)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip python-logging-loki")
    parser.add_argument("--json", default="", help="also write the figures here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.mode == "receiver":
        return receiver_main()
    if args.mode == "sink":
        return sink_main(args.url, args.file, args.fsync, args.spool, args.batch, args.parallelism)
    if args.mode == "logging-loki":
        return logging_loki_main(args.url, args.file)
    args.fsync = args.fsync or ["always", "never"]
    args.parallelism = [n for n in (args.parallelism or [1, 4]) if n > 0]
    work = Path(tempfile.mkdtemp(prefix="kube-audit-loki-bench-"))
    log_path = work / "children.log"
    rows: list[Row] = []
    try:
        with open(log_path, "wb") as log:
            rows = run(args, work, log)
    except ChildFailed as e:
        print(f"benchmark failed: {e}; see {log_path}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if rows:
            print()
            print(table(rows))
            python = sys.version.split()[0]
            print(
                f"\n{len(os.sched_getaffinity(0))} CPUs; Python {python}; events/s over "
                "wall-clock time, first submit (or log call) to last entry acknowledged"
            )
        finish(rows, args.json, work, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
