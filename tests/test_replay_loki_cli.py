"""``replay --loki.url`` as a process: a stall timeout instead of a hang,
Ctrl-C and SIGTERM without a traceback, no temporary spool left behind, the
leftovers of a killed run removed by the next one (never a running one's),
and ``--strict``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.loki.tempspool import PREFIX, TempSpool, remove_leftovers
from tests.conftest import CORPORA
from tests.loki_receiver import LokiReceiver, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEMO = CORPORA / "audit2rbac-demo" / "demo.log"  # 757 events
FAST_RETRIES = ("--loki.backoff-min", "10ms", "--loki.backoff-max", "50ms")


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def replay_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter", "replay", *args]


def env_with_tmp(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp)}


def spools(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(PREFIX))


def test_unreachable_loki_gives_up_after_the_stall_timeout_with_a_summary(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    proc = subprocess.run(
        replay_cmd("--loki.url", url, "--loki.stall-timeout", "1s", *FAST_RETRIES, str(DEMO)),
        capture_output=True, text=True, cwd=ROOT, env=env_with_tmp(tmp_path), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("757 events")  # the summary is printed all the same
    assert "Loki: 0 entries sent, 0 refused, 757 not delivered" in proc.stdout
    assert "Loki accepted nothing for 1s" in proc.stderr
    assert "757 entries were not delivered" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert spools(tmp_path) == []


def test_stall_timeout_with_a_configured_spool_keeps_the_entries(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    spool = tmp_path / "spool"
    proc = subprocess.run(
        replay_cmd("--loki.url", url, "--spool.dir", str(spool), "--output", "json",
                   "--loki.stall-timeout", "1s", *FAST_RETRIES, str(DEMO)),
        capture_output=True, text=True, cwd=ROOT, env=env_with_tmp(tmp_path), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert f"they stay in the spool {spool} for the next run" in proc.stderr
    assert '"undelivered": 757' in proc.stdout
    assert any(spool.iterdir())


def _interrupt(tmp_path: Path, loki: LokiReceiver, signum: int) -> tuple[int, str]:
    loki.default = 503  # Loki never takes anything: replay waits in its backfill
    proc = subprocess.Popen(
        replay_cmd("--loki.url", loki.url, "--loki.stall-timeout", "0", *FAST_RETRIES, str(DEMO)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=env_with_tmp(tmp_path),
    )  # fmt: skip
    try:
        wait_for(lambda: len(loki.statuses()) >= 2, timeout=120, what="retried pushes")
        assert len(spools(tmp_path)) == 1
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize(
    ("signum", "status", "message"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_ctrl_c_or_sigterm_during_a_backfill_is_one_line_and_removes_the_spool(
    tmp_path: Path, loki: LokiReceiver, signum: int, status: int, message: str
) -> None:
    got, err = _interrupt(tmp_path, loki, signum)
    assert got == status
    assert err.strip().splitlines()[-1] == f"kube-audit-exporter: {message}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert spools(tmp_path) == []


def test_a_killed_runs_spool_is_removed_by_the_next_run(tmp_path: Path, loki: LokiReceiver) -> None:
    loki.default = 503
    killed = subprocess.Popen(
        replay_cmd("--loki.url", loki.url, "--loki.stall-timeout", "0", *FAST_RETRIES, str(DEMO)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        env=env_with_tmp(tmp_path),
    )  # fmt: skip
    try:
        wait_for(lambda: len(loki.statuses()) >= 1, timeout=120, what="a push")
    finally:
        killed.kill()
        killed.wait()
    assert len(spools(tmp_path)) == 1  # SIGKILL leaves it behind
    loki.default = None  # Loki works again
    proc = subprocess.run(
        replay_cmd("--loki.url", loki.url, str(DEMO)),
        capture_output=True, text=True, cwd=ROOT, env=env_with_tmp(tmp_path), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert spools(tmp_path) == []


def test_leftover_cleaning_never_touches_a_running_replays_spool(tmp_path: Path) -> None:
    running = TempSpool(str(tmp_path))
    killed = TempSpool(str(tmp_path))
    (Path(killed.spool_dir) / "00000001.seg").write_bytes(b"x")
    assert killed._fd is not None
    os.close(killed._fd)  # what the kernel does when the process dies
    killed._fd = None
    foreign = tmp_path / (PREFIX + "no-lock")  # no lock file: not ours to judge
    foreign.mkdir()
    assert remove_leftovers(str(tmp_path)) == [killed.root]
    assert Path(running.spool_dir).is_dir() and foreign.is_dir()
    running.remove()
    assert spools(tmp_path) == [foreign.name]


def test_strict_exits_4_when_an_input_held_invalid_events(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(DEMO.read_bytes() + b"{not json\n")
    lenient = subprocess.run(replay_cmd(str(log)), capture_output=True, cwd=ROOT, timeout=120)
    strict = subprocess.run(
        replay_cmd("--strict", str(log)), capture_output=True, cwd=ROOT, timeout=120
    )
    assert lenient.returncode == 0
    assert strict.returncode == 4
    assert strict.stdout == lenient.stdout  # the same summary, counted either way
    clean = subprocess.run(replay_cmd("--strict", str(DEMO)), capture_output=True, cwd=ROOT)
    assert clean.returncode == 0


def test_replay_and_rules_list_ignore_the_sources_of_a_shared_config(tmp_path: Path) -> None:
    """A configuration written for `run` (webhook certificates that exist only
    on the cluster) still serves replay and rules list on a laptop; `run`'s
    own check still refuses it there."""
    config = tmp_path / "prod.yaml"
    config.write_text(
        "cluster: prod\nwebhook:\n  listen_address: ':8443'\n  tls_cert_file: /nowhere/tls.crt\n"
        "  tls_key_file: /nowhere/tls.key\ndetect:\n  trusted_networks: [10.0.0.0/8]\n"
    )
    replay = subprocess.run(
        replay_cmd("--config.file", str(config), str(DEMO)), capture_output=True, text=True,
        cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.startswith("757 events")
    rules = subprocess.run(
        [sys.executable, "-m", "exporter", "rules", "list", "--config.file", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert rules.returncode == 0, rules.stderr
    assert "needs detect.trusted_networks" not in rules.stdout
    check = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config.file", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert check.returncode == 1
    assert "webhook.tls_cert_file: cannot read /nowhere/tls.crt" in check.stderr
