"""``run --workers 2`` with real processes on loopback: both workers take
webhook connections on one port, the supervisor's /metrics holds each
family once with the workers' samples summed, a killed worker is started
again and counted, and SIGTERM stops everything."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulate import Options, event_list, simulate_lines
from exporter.workers import merge

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
