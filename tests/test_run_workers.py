"""``run --workers 2`` with real processes on loopback: both workers take
webhook connections on one port, the supervisor's /metrics holds each
family once with the workers' samples summed, a killed worker is started
again and counted, and SIGTERM stops everything."""

from __future__ import annotations

import dataclasses
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulate import Options, event_list, simulate_lines
from exporter.workers import merge
from tests.loki_receiver import LokiReceiver

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the supervisor exited {proc.returncode}"
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)  # polling other processes, with a deadline
    pytest.fail(f"no {what} after {DEADLINE}s")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def value(text: str, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
        return bool(r.status == 200)


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    hook, web = free_port(), free_port()
    log = open(tmp_path / "supervisor.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter.cli",
            "run",
            "--workers",
            "2",
            "--webhook.insecure",
            "--webhook.listen-address",
            f"127.0.0.1:{hook}",
            "--web.listen-address",
            f"127.0.0.1:{web}",
        ],
        cwd=ROOT,
        stderr=log,
        start_new_session=True,
    )
    try:
        wait_for("readiness", lambda: ready(web), proc)
        yield proc, hook, web
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/audit", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def worker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True)
    return [int(x) for x in out.stdout.split()]


def test_two_workers_one_port_one_metrics_restart_and_sigterm(
    supervisor: tuple[subprocess.Popen[bytes], int, int],
) -> None:
    proc, hook, web = supervisor
    lines = list(simulate_lines(Options(events=8000, seed=5)))
    for i in range(0, len(lines), 400):
        # a connection each: the kernel spreads connections over the workers
        assert post(hook, event_list(lines[i : i + 400])) == 200
    text = scrape(web)
    assert value(text, "kube_audit_events_total", source="webhook") == 8000
    assert value(text, "kube_audit_workers") == 2
    assert value(text, "kube_audit_worker_restarts_total") == 0
    names = [fam.name for fam in text_string_to_metric_families(text)]
    assert len(names) == len(set(names)), "a family appears twice"
    for family in ("kube_audit_requests", "kube_audit_request_duration_seconds",
                   "kube_audit_rule_matches", "kube_audit_http_connections_closed"):  # fmt: skip
        assert family in names

    # each worker took some of the connections: its own events, summed above
    pids = worker_pids(proc)
    assert len(pids) == 2
    # kill -9 one worker: it is started again and counted
    os.kill(pids[0], signal.SIGKILL)
    wait_for(
        "restart",
        lambda: value(scrape(web), "kube_audit_worker_restarts_total") == 1 and ready(web),
        proc,
    )
    after = scrape(web)
    events = value(after, "kube_audit_events_total", source="webhook")
    # the survivor's events remain; the restarted worker counts from zero
    assert events is not None and 0 < events < 8000, "both workers had taken events"
    assert post(hook, event_list(lines[:400])) == 200

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    for pid in worker_pids(proc) + pids[1:]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_merge_sums_counters_and_keeps_points_in_time() -> None:
    a = list(
        text_string_to_metric_families(
            "# TYPE kube_audit_events_total counter\n"
            'kube_audit_events_total{source="webhook"} 3\n'
            "# TYPE kube_audit_last_event_timestamp_seconds gauge\n"
            'kube_audit_last_event_timestamp_seconds{source="webhook"} 100\n'
        )
    )
    b = list(
        text_string_to_metric_families(
            "# TYPE kube_audit_events_total counter\n"
            'kube_audit_events_total{source="webhook"} 4\n'
            "# TYPE kube_audit_last_event_timestamp_seconds gauge\n"
            'kube_audit_last_event_timestamp_seconds{source="webhook"} 90\n'
        )
    )
    merged = {s.name: s.value for fam in merge([a, b]) for s in fam.samples}
    assert merged == {
        "kube_audit_events_total": 7,
        "kube_audit_last_event_timestamp_seconds": 100,
    }


def test_two_workers_each_own_spool_and_loki_stream(tmp_path: Path, loki: LokiReceiver) -> None:
    """Workers never share what a process must own alone: worker 0 keeps
    spool.dir and the writer label, worker 1 spools in spool.dir/worker-1 and
    writes its own stream; every event reaches Loki once."""
    hook, web = free_port(), free_port()
    spool = tmp_path / "spool"
    # a spool of a third worker from an earlier run, which nobody sends now
    (spool / "worker-2").mkdir(parents=True)
    (spool / "worker-2" / "0000000000000000.seg").write_bytes(b"x")
    log_path = tmp_path / "supervisor.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "run", "--workers", "2",
             "--webhook.insecure", "--webhook.listen-address", f"127.0.0.1:{hook}",
             "--web.listen-address", f"127.0.0.1:{web}",
             "--loki.url", loki.url, "--loki.writer", "pod-a", "--loki.batch-wait", "50ms",
             "--spool.dir", str(spool), "--spool.max-bytes", "64MiB"],
            cwd=ROOT, stderr=log, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for("readiness", lambda: ready(web), proc)
            lines = list(simulate_lines(Options(events=6000, seed=9)))
            for i in range(0, len(lines), 300):
                assert post(hook, event_list(lines[i : i + 300])) == 200
            wait_for("every entry in Loki", lambda: loki.count() >= len(lines), proc)
            assert (spool / "worker-1").is_dir()
            # each spool acknowledged what it sent (drained segments are deleted)
            assert (spool / "worker-1" / "ack").is_file()
            assert (spool / "ack").is_file()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    seen = Counter(r.line for r in loki.received)
    assert len(seen) == len(lines) and max(seen.values()) == 1, "an event reached Loki twice"
    writers = Counter(r.labels.get("writer") for r in loki.received)
    assert set(writers) == {"pod-a", "pod-a-w1"}, writers
    text = log_path.read_text()
    assert "a spool of a worker that no longer runs" in text
    assert str(spool / "worker-2") in text


def test_worker_config_splits_what_a_process_owns_alone() -> None:
    from exporter.config import Config
    from exporter.workers import worker_config

    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        spool=dataclasses.replace(cfg.spool, dir="/var/spool/kae", max_bytes=3 << 30),
        loki=dataclasses.replace(cfg.loki, writer="pod-a"),
        state=dataclasses.replace(cfg.state, first_seen_file="/data/first-seen.json"),
    )
    w0, w2 = worker_config(cfg, 0, 3), worker_config(cfg, 2, 3)
    assert (w0.spool.dir, w0.loki.writer, w0.state.first_seen_file) == (
        "/var/spool/kae", "pod-a", "/data/first-seen.json",
    )  # fmt: skip
    assert (w2.spool.dir, w2.loki.writer, w2.state.first_seen_file) == (
        "/var/spool/kae/worker-2", "pod-a-w2", "/data/first-seen.json.worker-2",
    )  # fmt: skip
    assert w0.spool.max_bytes == w2.spool.max_bytes == 1 << 30
    assert w0.web.listen_address == w2.web.listen_address == "127.0.0.1:0"
