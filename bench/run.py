"""Throughput and memory benchmarks: ``python bench/run.py [--events N]``.

1. Replay: the simulator writes N events (default 1,000,000) to a temporary
   file; then, each in its own process pinned to one core, ``kube-audit-
   exporter replay`` (the real command: redaction, detection with every
   default rule active through demo/config.yaml, the auditor's report), the
   library path it is built on (Decoder.decode_line + Pipeline +
   AuditMetrics, batches of 1000 lines), and a naive baseline (json.loads +
   prometheus_client ``.labels().inc()`` per event) process it.
2. Webhook: ``kube-audit-exporter run`` serves the webhook over HTTPS with a
   client CA (test PKI made on the spot); a separate process posts
   pre-built EventLists of 400 events on several keep-alive connections.
   Then the same with the bare WebhookServer (pipeline without redaction and
   detection), and with a naive baseline server (http.server + json.loads +
   prometheus_client).

Events/s is events over wall-clock seconds of the measured process
(interpreter start-up included for replay; first post to last answer for
the webhook). Peak RSS is the process's own high-water mark (wait4). The
targets are printed beside the figures, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.results import finish  # noqa: E402
from bench.workloads import write_bodies  # noqa: E402
from exporter.simulate import Options, event_list, simulate_lines  # noqa: E402

REPLAY_TARGET = 100_000  # events/s on one core
WEBHOOK_TARGET = 30_000  # events/s
RSS_TARGET_MB = 200.0
BATCH = 400  # events per EventList, as the API server sends them
WORKLOADS = str(BENCH / "workloads.py")
DEMO_CONFIG = ROOT / "demo" / "config.yaml"
EXPORTER = [sys.executable, "-m", "exporter.cli"]


@dataclass
class Row:
    group: str  # replay, webhook, generate
    name: str
    events: int
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    baseline: bool = False
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class ChildFailed(Exception):
    pass


# --- processes --------------------------------------------------------------------


def _pinned(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, Any]:
    """Wait for ``proc`` and return (exit code, its resource usage)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def measure(argv: Sequence[str], *, cpu: int | None, log: IO[bytes]) -> tuple[bytes, float, Any]:
    """Run ``argv`` to completion: (stdout, wall seconds, rusage)."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=log, preexec_fn=_pinned(cpu), cwd=ROOT
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    code, usage = _reap(proc)
    seconds = time.perf_counter() - began
    if code != 0:
        raise ChildFailed(f"{' '.join(argv[:4])}... exited {code}")
    return out, seconds, usage


def _mb(usage: Any) -> float:
    return float(usage.ru_maxrss) / 1024.0  # KiB on Linux


def _cpu(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChildFailed(f"server exited {proc.returncode} before listening")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)  # polling a child process that is starting up, with a deadline
    raise ChildFailed(f"server not listening on {port} after the deadline")


# --- replay ------------------------------------------------------------------------------


def replay_rows(events: int, cpu: int | None, work: Path, log: IO[bytes]) -> list[Row]:
    path = work / "audit.log"
    out, seconds, usage = measure(
        [*EXPORTER, "simulate", "--events", str(events), "--seed", "1", "--output", str(path)],
        cpu=cpu,
        log=log,
    )
    rows = [
        Row(
            "generate",
            "kube-audit-exporter simulate (to a file)",
            events,
            seconds,
            _mb(usage),
            _cpu(usage),
        )
    ]
    size = path.stat().st_size
    print(f"  {events:,} events, {size / 1e6:,.0f} MB written in {seconds:.1f}s", file=sys.stderr)

    # demo/config.yaml names the simulated cluster's networks and a critical
    # workload, so that every default rule is active (the stateful ones too)
    out, seconds, usage = measure(
        [*EXPORTER, "replay", "--config.file", str(DEMO_CONFIG), "--output", "json", str(path)],
        cpu=cpu,
        log=log,
    )
    report = json.loads(out)
    counted = int(report["events"])
    note = "" if counted == events else f"counted {counted}"
    name = "kube-audit-exporter replay (redact, every rule, report)"
    rows.append(Row("replay", name, counted, seconds, _mb(usage), _cpu(usage), note=note))
    print(f"  replay: {seconds:.1f}s", file=sys.stderr)

    for kind, name, baseline in (
        ("library", "library path (Decoder + Pipeline + AuditMetrics)", False),
        ("naive", "naive baseline (json.loads + prometheus_client)", True),
    ):
        out, seconds, usage = measure(
            [sys.executable, WORKLOADS, kind, str(path)], cpu=cpu, log=log
        )
        result = json.loads(out)
        rows.append(
            Row("replay", name, int(result["events"]), seconds, _mb(usage), _cpu(usage), baseline)
        )
        print(f"  {kind}: {seconds:.1f}s", file=sys.stderr)
    return rows


# --- webhook -------------------------------------------------------------------------------


def _bodies(events: int) -> Iterator[tuple[int, bytes]]:
    batch: list[bytes] = []
    for line in simulate_lines(Options(events=events, seed=2)):
        batch.append(line)
        if len(batch) == BATCH:
            yield len(batch), event_list(batch)
            batch = []
    if batch:
        yield len(batch), event_list(batch)


def webhook_rows(
    events: int, connections: int, cpus: tuple[int | None, int | None], work: Path, log: IO[bytes]
) -> list[Row]:
    from tests.tlsutil import make_pki

    pki = make_pki(work / "pki")
    bodies = work / "bodies.bin"
    count, total = write_bodies(bodies, _bodies(events))
    print(f"  {total:,} events in {count} EventLists of up to {BATCH}", file=sys.stderr)
    ca, cert, key = str(pki.ca.cert_file), str(pki.server.cert_file), str(pki.server.key_file)
    tls = ["--ca", ca, "--cert", cert, "--key", key]
    rows = []
    servers: list[tuple[str, bool, Any]] = [
        ("kube-audit-exporter run (webhook, redact, detect)", False, "run"),
        ("WebhookServer, bare pipeline", False, "webhook-server"),
        ("naive baseline (http.server + json.loads + prometheus_client)", True, "naive-server"),
    ]
    for name, baseline, kind in servers:
        port = _free_port()
        web = _free_port()
        if kind == "run":
            argv = [
                *EXPORTER, "run", "--webhook.listen-address", f"127.0.0.1:{port}",
                "--webhook.tls-cert-file", cert, "--webhook.tls-key-file", key,
                "--webhook.client-ca-file", ca, "--web.listen-address", f"127.0.0.1:{web}",
                "--log.level", "warning",
            ]  # fmt: skip
        else:
            argv = [sys.executable, WORKLOADS, kind, "--port", str(port), *tls]
        server = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log, preexec_fn=_pinned(cpus[0]), cwd=ROOT
        )
        try:
            _wait_listening(server, port, time.monotonic() + 60)
            client = [
                sys.executable, WORKLOADS, "client", "--url", f"https://127.0.0.1:{port}/audit",
                "--bodies", str(bodies), "--connections", str(connections),
                "--ca", ca, "--cert", str(pki.client.cert_file), "--key", str(pki.client.key_file),
            ]  # fmt: skip
            out, _, _ = measure(client, cpu=cpus[1], log=log)
            sent = json.loads(out)
            accepted = _scrape_events(web) if kind == "run" else None
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.stdout is not None
            server_out = server.stdout.read()
            code, usage = _reap(server)
        if kind != "run":
            accepted = int(json.loads(server_out.splitlines()[-1])["events"])
        note = ""
        if sent["errors"]:
            note = f"{sent['errors']} posts failed: {sent['first_error'][:80]}"
        elif accepted != sent["events"]:
            note = f"server counted {accepted}"
        rows.append(
            Row(
                "webhook",
                name,
                int(sent["events"]),
                float(sent["seconds"]),
                _mb(usage),
                _cpu(usage),
                baseline,
                note,
            )
        )
        print(f"  {kind}: {sent['seconds']:.1f}s (server exit {code})", file=sys.stderr)
    return rows


def _scrape_events(port: int) -> int | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('kube_audit_events_total{source="webhook"}'):
                return int(float(line.split()[-1]))
    return None


# --- report ----------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        f"{'benchmark':<62} {'events':>10} {'seconds':>8} {'events/s':>10} {'peak RSS MB':>12} "
        f"{'vs baseline':>12}  target",
    ]
    for group, target in (
        ("generate", None),
        ("replay", REPLAY_TARGET),
        ("webhook", WEBHOOK_TARGET),
    ):
        members = [r for r in rows if r.group == group]
        if not members:
            continue
        base = next((r for r in members if r.baseline), None)
        lines.append(f"-- {group}")
        for r in members:
            ratio = (
                "baseline"
                if r.baseline
                else f"{r.rate / base.rate:.1f}x"
                if base and base.rate
                else ""
            )
            verdict = ""
            if target is not None and not r.baseline:
                fast = "ok" if r.rate >= target else "BELOW"
                small = "ok" if r.peak_rss_mb <= RSS_TARGET_MB else "OVER"
                verdict = f">= {target:,}/s {fast}, <= {RSS_TARGET_MB:.0f} MB {small}"
            figures = f"{r.events:>10,} {r.seconds:>8.2f} {r.rate:>10,.0f} {r.peak_rss_mb:>12.1f}"
            lines.append(f"{r.name:<62} {figures} {ratio:>12}  {verdict}")
            if r.note:
                lines.append(f"{'':<4}note: {r.note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="kube-audit-exporter benchmarks (figures, no assertions)"
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="replay events (default 1,000,000)"
    )
    parser.add_argument(
        "--webhook-events",
        type=int,
        default=0,
        help="webhook events (default: a quarter of --events)",
    )
    parser.add_argument(
        "--connections", type=int, default=4, help="webhook client connections (default 4)"
    )
    parser.add_argument("--only", choices=("replay", "webhook"), help="run one benchmark")
    parser.add_argument(
        "--json", default=str(BENCH / "results.json"), help="write the figures here ('' for no)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    one = cpus[0]
    other = cpus[1] if len(cpus) > 1 else None
    webhook_events = args.webhook_events or max(BATCH, args.events // 4)
    work = Path(tempfile.mkdtemp(prefix="kube-audit-bench-"))
    log_path = work / "children.log"
    rows: list[Row] = []
    try:
        with open(log_path, "wb") as log:
            if args.only in (None, "replay"):
                print(f"replay: {args.events:,} events, pinned to CPU {one}", file=sys.stderr)
                rows += replay_rows(args.events, one, work, log)
            if args.only in (None, "webhook"):
                print(
                    f"webhook: {webhook_events:,} events, server on CPU {one}, "
                    f"client on CPU {other}, {args.connections} connections",
                    file=sys.stderr,
                )
                rows += webhook_rows(webhook_events, args.connections, (one, other), work, log)
    except ChildFailed as e:
        print(f"benchmark failed: {e}; see {log_path}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if rows:
            print()
            print(table(rows))
            python = sys.version.split()[0]
            print(f"\n{len(cpus)} CPUs; Python {python}; events/s over wall-clock time")
        finish(rows, args.json, work, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
