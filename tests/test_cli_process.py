"""The command line as a process: pipes, exit codes, help and flag errors.

Each test runs ``python -m exporter`` as a subprocess, since what is under
test is how the process ends (its status and its stderr)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_LOG = ROOT / "demo" / "audit.log.gz"
POLICY = ROOT / "exporter" / "policy" / "policies" / "recommended.yaml"


def cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        **kwargs,  # type: ignore[call-overload]
    )


def run_into_closed_pipe(*args: str) -> tuple[int, str]:
    """Run with stdout a pipe whose reader is already gone, like ``| head``
    after head exited; (status, stderr)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


def test_policy_simulate_into_a_closed_pipe_exits_quietly() -> None:
    status, err = run_into_closed_pipe("policy", "simulate", "--policy", str(POLICY), str(DEMO_LOG))
    assert status == 141
    assert "Traceback" not in err
    assert "read error" not in err  # the input is not to blame


def test_policy_simulate_piped_to_head_keeps_quiet() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "policy", "simulate", "--policy", str(POLICY),
         str(DEMO_LOG)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what head does after its lines
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert b"->" in first
    assert "Traceback" not in err and "read error" not in err


def test_check_config_show_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    status, err = run_into_closed_pipe(
        "check-config", "--show", "--logfile.path", str(tmp_path / "audit.log")
    )
    assert status == 141
    assert "Traceback" not in err and err == ""


def test_replay_help_shows_only_replay_flags() -> None:
    text = cli("replay", "--help").stdout
    for flag in ("--web.listen-address", "--webhook.listen-address", "--logfile.path"):
        assert flag not in text
    for flag in ("--loki.url", "--spool.dir", "--detect.trusted-networks", "--output"):
        assert flag in text
    run_text = cli("run", "--help").stdout
    assert "--webhook.listen-address" in run_text and "--logfile.path" in run_text
    assert "--output" not in run_text


def test_replay_refuses_a_listen_address_flag() -> None:
    proc = cli("replay", "--web.listen-address", ":1", "-")
    assert proc.returncode == 2
    assert "unrecognized arguments: --web.listen-address" in proc.stderr


def test_a_bad_flag_is_one_line_with_a_suggestion() -> None:
    proc = cli("check-config", "--loki.urll", "http://x")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) <= 2, proc.stderr
    assert "unrecognized arguments: --loki.urll" in lines[0]
    assert "did you mean" in lines[0] and "--loki.url?" in lines[0]
    assert "usage:" not in proc.stderr


def test_a_negative_duration_is_refused_by_its_key(tmp_path: Path) -> None:
    proc = cli(
        "check-config", "--logfile.path", str(tmp_path / "a.log"), "--logfile.poll-interval", "-1s"
    )
    assert proc.returncode == 1
    assert "expected one argument" not in proc.stderr
    assert "logfile.poll_interval:" in proc.stderr and "--logfile.poll-interval" in proc.stderr


def test_version_names_the_rule_set_and_policy() -> None:
    out = cli("--version").stdout
    assert out.startswith("kube-audit-exporter ")
    assert "rules: 8 files, sha256:" in out
    assert "recommended policy: sha256:" in out
