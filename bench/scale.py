"""Scaling benchmarks (issue 16): ``python bench/scale.py [--events N]``.

1. One core: ``kube-audit-exporter replay`` (the real command, default
   configuration) beside a bare ``orjson.loads`` loop over the same file,
   each in its own process pinned to one CPU, on two inputs: small
   Metadata-level events (the perfspec corpus, 490 bytes an event, repeated
   with fresh auditIDs) and body-heavy events (the simulator's events that
   carry a requestObject or responseObject, 3.6 KB an event). The ratio is
   replay's events/s over the loop's; the target is 0.3. Each side runs
   ``--repeat`` times (default 3), alternating, and keeps its fastest run:
   on a shared machine the slow runs measure the neighbours. The ratio of
   CPU times (user + system, of the same runs) is printed beside it, with
   the load average. The package's byte code is compiled first (``python
   -m compileall``, as the Docker image does), so that start-up does not
   include compiling it under ``PYTHONDONTWRITEBYTECODE``.
2. Replay scaling: ``replay --jobs 1`` and ``--jobs 2`` (every default rule
   active through demo/config.yaml) on the simulator's output (``--jobs-events``,
   a million by default: a large input, as --jobs is for), unpinned; the
   target is 2 jobs >= 1.7x 1 job on two CPUs. Each run reports its CPU
   seconds, the parent's apart from its jobs', and the start-up alone is
   measured on a one-line file; each runs ``--jobs-rounds`` times, in turns,
   and the best counts. Beside the measured ratio, which other work
   on the machine skews, it prints the ratio those CPU seconds give on an
   idle machine with two CPUs: --jobs 1 takes its CPU time; --jobs 2 takes
   the start-up, then the longer of the parent's remaining CPU time and
   half of that plus the jobs' (every process shares the two CPUs); and the
   same ratio after the start-up, which a larger input tends to.
3. Run scaling: ``run --workers 1`` and ``--workers 2`` behind the webhook
   over mutual TLS, a client posting EventLists of 400 events on 8
   keep-alive connections (the client shares the two CPUs).

Events/s is events over the wall-clock seconds of the measured process
(start-up included for replay and the loop). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.results import finish  # noqa: E402
from bench.run import (  # noqa: E402
    DEMO_CONFIG,
    EXPORTER,
    WORKLOADS,
    ChildFailed,
    Row,
    _cpu,
    _free_port,
    _mb,
    _reap,
    _scrape_events,
    _wait_listening,
    measure,
)
from exporter.detect.noise import find_corpora  # noqa: E402
from exporter.simulate import Options, simulate_lines  # noqa: E402

PERFSPEC = find_corpora() / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"
RATIO_TARGET = 0.3
JOBS_TARGET = 1.7
LOOP = (
    "import sys, orjson\n"
    "n = 0\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for line in f:\n"
    "        orjson.loads(line)\n"
    "        n += 1\n"
    "print(n)\n"
)


def _fresh_copies(lines: list[bytes], events: int) -> Iterator[bytes]:
    """``lines`` over and over, each copy's auditIDs made its own."""
    copy = 0
    written = 0
    while written < events:
        tag = f'"auditID":"{copy:04x}'.encode()
        for line in lines:
            if written >= events:
                return
            yield line.replace(b'"auditID":"', tag, 1)
            written += 1
        copy += 1


def write_inputs(work: Path, events: int) -> dict[str, Path]:
    small = work / "metadata.log"
    base = [line for line in PERFSPEC.read_bytes().splitlines() if line.strip()]
    small.write_bytes(b"\n".join(_fresh_copies(base, events)) + b"\n")
    bodies = [
        line.rstrip(b"\n")
        for line in simulate_lines(Options(events=200_000, seed=11))
        if b'"requestObject"' in line or b'"responseObject"' in line
    ]
    heavy = work / "bodies.log"
    heavy.write_bytes(b"\n".join(_fresh_copies(bodies, events // 3)) + b"\n")
    mixed = write_simulated(work / "simulated.log", events)
    return {"metadata": small, "bodies": heavy, "simulated": mixed}


def _in_child(call: str) -> None:
    """Run ``call`` (Python, with this module's names) in a process of its
    own. The inputs are built there so that this process stays small: a
    child inherits its parent's peak RSS through fork and exec on Linux, so
    a large benchmark process would be every measured command's peak RSS."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
        "from bench.run import _bodies; from bench.workloads import write_bodies; "
        f"from bench.scale import write_inputs, write_simulated; {call}"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def write_simulated(path: Path, events: int) -> Path:
    with open(path, "wb") as f:
        for line in simulate_lines(Options(events=events, seed=1)):
            f.write(line if line.endswith(b"\n") else line + b"\n")
    return path


def ratio_rows(inputs: dict[str, Path], cpu: int, log: IO[bytes], repeat: int = 3) -> list[Row]:
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "exporter")], check=True)
    rows = []
    for kind, label in (("metadata", "small Metadata events"), ("bodies", "body-heavy events")):
        path = inputs[kind]
        loop: Row | None = None
        replay: Row | None = None
        for _ in range(repeat):
            out, seconds, usage = measure([sys.executable, "-c", LOOP, str(path)], cpu=cpu, log=log)
            row = Row(f"ratio-{kind}", f"orjson.loads loop, {label}", int(out), seconds,
                      _mb(usage), _cpu(usage), baseline=True)  # fmt: skip
            loop = row if loop is None or row.seconds < loop.seconds else loop
            out, seconds, usage = measure(
                [*EXPORTER, "replay", "--output", "json", str(path)], cpu=cpu, log=log
            )
            counted = int(json.loads(out)["events"])
            row = Row(f"ratio-{kind}", f"kube-audit-exporter replay, {label}", counted, seconds,
                      _mb(usage), _cpu(usage))  # fmt: skip
            replay = row if replay is None or row.seconds < replay.seconds else replay
        assert loop is not None and replay is not None
        rows += [loop, replay]
        by_cpu = (replay.events / replay.cpu_seconds) / (loop.events / loop.cpu_seconds)
        print(
            f"  {kind}: {replay.rate / loop.rate:.2f} of the loop by wall time, {by_cpu:.2f} by "
            f"CPU time (best of {repeat}; load average {os.getloadavg()[0]:.2f})",
            file=sys.stderr,
        )
    return rows


# replay, then the CPU seconds of this process and of its jobs (reaped by
# then) into the file named first
REPLAY_CPU = (
    "import json, resource, sys\n"
    "from exporter.cli import main\n"
    "code = main(sys.argv[2:])\n"
    "me = resource.getrusage(resource.RUSAGE_SELF)\n"
    "jobs = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump({'parent': me.ru_utime + me.ru_stime,\n"
    "               'jobs': jobs.ru_utime + jobs.ru_stime}, f)\n"
    "sys.exit(code)\n"
)


def _replay_cpu(
    path: Path, jobs: int, work: Path, log: IO[bytes]
) -> tuple[int, float, Any, dict[str, float]]:
    """(events, wall seconds, rusage, {parent, jobs} CPU seconds) of one replay."""
    cpu_file = work / f"cpu-{jobs}.json"
    out, seconds, usage = measure(
        [sys.executable, "-c", REPLAY_CPU, str(cpu_file), "replay", "--jobs", str(jobs),
         "--config.file", str(DEMO_CONFIG), "--output", "json", str(path)],
        cpu=None,
        log=log,
    )  # fmt: skip
    return int(json.loads(out)["events"]), seconds, usage, json.loads(cpu_file.read_text())


def jobs_rows(
    path: Path, work: Path, log: IO[bytes], rounds: int = 1
) -> tuple[list[Row], dict[str, float]]:
    """The rows of ``--jobs 1`` and ``--jobs 2`` (each the best of
    ``rounds``, run in turns), the start-up's, and the CPU figures (each
    the least of the rounds) with the estimate for an idle machine."""
    one_line = work / "one-line.log"
    with open(path, "rb") as f:
        one_line.write_bytes(f.readline())
    _, start_wall, start_usage, start = _replay_cpu(one_line, 1, work, log)
    best: dict[int, Row] = {}
    cpu: dict[str, float] = {"startup": start["parent"]}
    for _ in range(rounds):
        for jobs in (1, 2):
            counted, seconds, usage, split = _replay_cpu(path, jobs, work, log)
            if jobs not in best or split["parent"] + split["jobs"] < (
                cpu[f"parent_{jobs}"] + cpu[f"jobs_{jobs}"]
            ):
                cpu[f"parent_{jobs}"], cpu[f"jobs_{jobs}"] = split["parent"], split["jobs"]
            if jobs not in best or seconds < best[jobs].seconds:
                best[jobs] = Row(
                    "jobs", f"replay --jobs {jobs} (every rule, report)", counted, seconds,
                    _mb(usage), _cpu(usage), baseline=jobs == 1,
                    note=f"CPU s: parent {split['parent']:.2f}, jobs {split['jobs']:.2f}",
                )  # fmt: skip
            print(
                f"  --jobs {jobs}: {seconds:.1f}s wall, CPU {split['parent']:.2f}s parent, "
                f"{split['jobs']:.2f}s jobs",
                file=sys.stderr,
            )
    rows = [best[1], best[2]]
    rows.append(
        Row("jobs-startup", "replay --jobs 1 of one line (start-up)", 1, start_wall,
            _mb(start_usage), _cpu(start_usage), baseline=True)
    )  # fmt: skip
    # on an idle machine with two CPUs (see the module's docstring)
    startup = cpu["startup"]
    one = cpu["parent_1"]
    rest = max(cpu["parent_2"] - startup, 0.0)
    two = startup + max(rest, (rest + cpu["jobs_2"]) / 2)
    cpu["idle_wall_1"], cpu["idle_wall_2"] = one, two
    cpu["idle_speedup"] = one / two if two else 0.0
    # the same without the start-up, which both pay once (a larger input
    # tends to this)
    cpu["idle_speedup_after_startup"] = (one - startup) / (two - startup) if two > startup else 0.0
    cpu["overhead"] = (cpu["parent_2"] + cpu["jobs_2"]) / one - 1 if one else 0.0
    return rows, cpu


def workers_rows(events: int, work: Path, log: IO[bytes]) -> list[Row]:
    from tests.tlsutil import make_pki

    pki = make_pki(work / "pki")
    bodies = work / "bodies.bin"
    _in_child(f"write_bodies(Path({str(bodies)!r}), _bodies({events}))")
    ca, cert, key = str(pki.ca.cert_file), str(pki.server.cert_file), str(pki.server.key_file)
    rows = []
    for workers in (1, 2):
        port, web = _free_port(), _free_port()
        argv = [
            *EXPORTER, "run", "--workers", str(workers),
            "--webhook.listen-address", f"127.0.0.1:{port}",
            "--webhook.tls-cert-file", cert, "--webhook.tls-key-file", key,
            "--webhook.client-ca-file", ca, "--web.listen-address", f"127.0.0.1:{web}",
            "--log.level", "error",
        ]  # fmt: skip
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
        try:
            _wait_listening(server, port, time.monotonic() + 60)
            _wait_ready(server, web)
            client = [
                sys.executable, WORKLOADS, "client", "--url", f"https://127.0.0.1:{port}/audit",
                "--bodies", str(bodies), "--connections", "8", "--ca", ca,
                "--cert", str(pki.client.cert_file), "--key", str(pki.client.key_file),
            ]  # fmt: skip
            out, _, _ = measure(client, cpu=None, log=log)
            sent = json.loads(out)
            accepted = _scrape_events(web)
        finally:
            server.send_signal(signal.SIGTERM)
            _, usage = _reap(server)
        note = "" if accepted == sent["events"] else f"server counted {accepted}"
        if sent["errors"]:
            note = f"{sent['errors']} posts failed"
        rows.append(
            Row("workers", f"run --workers {workers} (webhook, mutual TLS)", int(sent["events"]),
                float(sent["seconds"]), _mb(usage), _cpu(usage), workers == 1, note)
        )  # fmt: skip
        print(f"  --workers {workers}: {sent['seconds']:.1f}s", file=sys.stderr)
    return rows


def _wait_ready(server: subprocess.Popen[bytes], web: int) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ChildFailed(f"run exited {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # a child starting up, with a deadline
    raise ChildFailed("run not ready after the deadline")


def table(rows: Sequence[Row]) -> str:
    lines = [f"{'benchmark':<58} {'events':>9} {'seconds':>8} {'events/s':>10}  vs first"]
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    for group, members in groups.items():
        base = members[0]
        lines.append(f"-- {group}")
        for r in members:
            ratio = "" if r is base else f"{r.rate / base.rate:.2f}x"
            lines.append(f"{r.name:<58} {r.events:>9,} {r.seconds:>8.2f} {r.rate:>10,.0f}  {ratio}")
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> dict[str, Any]:
    def rate(group: str, first: bool) -> float:
        members = [r for r in rows if r.group == group]
        return members[0 if first else 1].rate if len(members) == 2 else 0.0

    out = {}
    for key, group in (
        ("metadata_ratio", "ratio-metadata"),
        ("bodies_ratio", "ratio-bodies"),
        ("jobs_speedup", "jobs"),
        ("workers_speedup", "workers"),
    ):
        base = rate(group, True)
        out[key] = round(rate(group, False) / base, 3) if base else None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scaling benchmarks (figures, no assertions)")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument(
        "--jobs-events", type=int, default=1_000_000, help="events of the --jobs input"
    )
    parser.add_argument(
        "--jobs-rounds", type=int, default=2, help="runs of each --jobs, in turns (the best)"
    )
    parser.add_argument("--webhook-events", type=int, default=100_000)
    parser.add_argument("--json", default=str(BENCH / "results-scale.json"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side of section 1")
    parser.add_argument(
        "--only",
        action="append",
        choices=("ratio", "jobs", "workers"),
        help="run this section only (repeatable; default: all three)",
    )
    args = parser.parse_args(argv)
    sections = set(args.only or ("ratio", "jobs", "workers"))
    cpu = sorted(os.sched_getaffinity(0))[0]
    work = Path(tempfile.mkdtemp(prefix="kube-audit-scale-"))
    rows: list[Row] = []
    jobs_cpu: dict[str, float] = {}
    try:
        with open(work / "children.log", "wb") as log:
            inputs: dict[str, Path] = {}
            if "ratio" in sections:
                _in_child(f"write_inputs(Path({str(work)!r}), {args.events})")
                inputs = {k: work / f"{k}.log" for k in ("metadata", "bodies", "simulated")}
                print(f"one core (CPU {cpu}): replay beside an orjson.loads loop", file=sys.stderr)
                rows += ratio_rows(inputs, cpu, log, args.repeat)
            if "jobs" in sections:
                print("replay --jobs 1 and 2", file=sys.stderr)
                jobs_input = inputs.get("simulated")
                if jobs_input is None or args.jobs_events != args.events:
                    jobs_input = work / "simulated-jobs.log"
                    _in_child(f"write_simulated(Path({str(jobs_input)!r}), {args.jobs_events})")
                added, jobs_cpu = jobs_rows(jobs_input, work, log, args.jobs_rounds)
                rows += added
            if "workers" in sections:
                print("run --workers 1 and 2", file=sys.stderr)
                rows += workers_rows(args.webhook_events, work, log)
    except ChildFailed as e:
        print(f"benchmark failed: {e}; see {work / 'children.log'}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if rows:
            print()
            print(table(rows))
            s = summary(rows)
            print(
                f"\nreplay / orjson loop: Metadata {s['metadata_ratio']}, bodies "
                f"{s['bodies_ratio']} (target {RATIO_TARGET}); --jobs 2 / --jobs 1: "
                f"{s['jobs_speedup']} (target {JOBS_TARGET}); --workers 2 / --workers 1: "
                f"{s['workers_speedup']}; load average {os.getloadavg()[0]:.2f}"
            )
            if jobs_cpu:
                c = jobs_cpu
                print(
                    f"replay --jobs CPU seconds: start-up {c['startup']:.2f}; --jobs 1 "
                    f"{c['parent_1']:.2f}; --jobs 2 parent {c['parent_2']:.2f} + jobs "
                    f"{c['jobs_2']:.2f} ({c['overhead']:+.0%} of --jobs 1's). On an idle "
                    f"machine with two CPUs (estimate from these, not measured): --jobs 1 "
                    f"{c['idle_wall_1']:.2f}s, --jobs 2 {c['idle_wall_2']:.2f}s, "
                    f"{c['idle_speedup']:.2f}x (target {JOBS_TARGET}); after the start-up "
                    f"{c['idle_speedup_after_startup']:.2f}x"
                )
        finish(rows, args.json, work, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
