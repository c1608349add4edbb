"""Inputs that are not plain seekable files: cut or damaged ``.gz`` (every
recoverable line read, the cut counted as truncated_gzip and reported), and
FIFOs, pipes to /dev/stdin and process substitution (read as streams)."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import main
from exporter.gzstream import GzipStream
from exporter.policy.lint import EXIT_ERRORS
from tests.conftest import CORPORA, ROOT
from tests.test_logfile import ApiServerLog, Tail, independent_count
from tests.test_policy_simulate import SHIPPED, simulate_json

DEMO = ROOT / "demo" / "audit.log.gz"
AUDIT2RBAC = CORPORA / "audit2rbac-demo" / "demo.log"
PERFSPEC = CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    status = main(["replay", "--output", "json", *args])
    out = capsys.readouterr()
    return status, json.loads(out.out), out.err


def gunzip_what_can_be(data: bytes) -> bytes:
    """What ``gzip -dc`` writes of a cut file before its error."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


def read_all(stream: GzipStream, size: int) -> bytes:
    parts = []
    while chunk := stream.read(size):
        parts.append(chunk)
    return b"".join(parts)


# --- cut and damaged .gz ------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.9, 0.5])
@pytest.mark.parametrize("corpus", ["demo", "audit2rbac"])
def test_truncated_gzip_reads_every_recoverable_line_and_reports_the_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], corpus: str, fraction: float
) -> None:
    data = DEMO.read_bytes() if corpus == "demo" else gzip.compress(AUDIT2RBAC.read_bytes())
    cut = data[: int(len(data) * fraction)]
    recovered = gunzip_what_can_be(cut)
    complete = recovered.count(b"\n")
    partial = recovered[recovered.rfind(b"\n") + 1 :]
    assert complete > 300 and partial  # the cut falls inside a line
    path = tmp_path / "audit-2024-05-01T10-00-00.000.log.gz"
    path.write_bytes(cut)
    metrics = tmp_path / "metrics.prom"
    status, report, err = replay(capsys, "--metrics-out", str(metrics), str(path))
    assert status == 2
    assert report["events"] == complete  # every line before the cut
    assert report["invalid"] == {"truncated_gzip": 1, "invalid_json": 1}  # the cut, its line
    assert "ends before its gzip end-of-stream marker" in err
    exposition = metrics.read_text()
    assert 'kube_audit_events_invalid_total{reason="truncated_gzip",source="replay"} 1.0' in (
        exposition
    )


def test_damaged_gzip_is_read_up_to_the_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(gzip.compress(AUDIT2RBAC.read_bytes()))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeroed in the middle
    path = tmp_path / "damaged.log.gz"
    path.write_bytes(bytes(data))
    status, report, err = replay(capsys, str(path))
    assert status == 2
    assert 0 < report["events"] < 757
    assert report["invalid"]["truncated_gzip"] == 1
    assert "damaged gzip data" in err


def test_whole_gzip_members_and_padding_read_as_gzip_reads_them() -> None:
    one = gzip.compress(AUDIT2RBAC.read_bytes())
    body = one + gzip.compress(b'{"second": "member"}\n') + bytes(512)
    for size in (1, 4097, 1 << 20):
        stream = GzipStream(io.BytesIO(body))
        assert read_all(stream, size) == gzip.decompress(body)
        assert stream.problem is None
        assert stream.count == len(body)
    cut = GzipStream(io.BytesIO(one[:-3]))  # the trailer cut: all data, a problem
    assert read_all(cut, 1000) == AUDIT2RBAC.read_bytes()
    assert cut.problem is not None


def test_tailer_reads_a_cut_rotated_gzip_to_the_cut(tmp_path: Path) -> None:
    """The log file source finishing a rotated .gz that was cut (a full disk
    while compressing): every line before the cut is counted, and the cut."""
    lines = PERFSPEC.read_bytes().splitlines(keepends=True)[:6000]
    log = ApiServerLog(tmp_path)
    first = Tail(tmp_path)
    log.write(lines[:1000])
    first.poll()
    first.source.stop()
    log.write(lines[1000:5000])
    gz = ApiServerLog.compress(log.rotate())
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) * 6 // 10])
    log.write(lines[5000:])
    recovered = gunzip_what_can_be(gz.read_bytes())
    complete = recovered[: recovered.rfind(b"\n") + 1].splitlines(keepends=True)
    assert 1000 < len(complete) < 5000

    second = Tail(tmp_path)
    second.poll()
    want = independent_count(complete[1000:])[0] + independent_count(lines[5000:])[0]
    assert second.events == want
    assert second.invalid("truncated_gzip") == 1
    assert second.invalid("invalid_json") == 1  # the line the cut went through


# --- streams ---------------------------------------------------------------------------


def _cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", "replay", "--output", "json", *args],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        **kw,
    )


@pytest.mark.parametrize("compressed", [False, True])
def test_replay_of_a_fifo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], compressed: bool
) -> None:
    data = PERFSPEC.read_bytes()
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as f:  # blocks until replay opens it
            f.write(gzip.compress(data) if compressed else data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    status, report, err = replay(capsys, str(fifo))
    writer.join(timeout=60)
    assert (status, report["events"], report["invalid"]) == (0, 16_563, {}), err


def test_replay_of_dev_stdin_from_a_pipe() -> None:
    proc = _cli("/dev/stdin", input=AUDIT2RBAC.read_bytes())
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["events"], report["invalid"]) == (757, {})


@pytest.mark.skipif(shutil.which("bash") is None, reason="process substitution is bash's")
def test_replay_of_process_substitution_plain_and_gzip(tmp_path: Path) -> None:
    gz = tmp_path / "copy.gz"
    gz.write_bytes(gzip.compress(AUDIT2RBAC.read_bytes()))
    script = (
        f'"{sys.executable}" -m exporter.cli replay --output json '
        f'<(cat "{AUDIT2RBAC}") <(cat "{gz}")'
    )
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, cwd=ROOT, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    # the compressed one is recognised by its magic number, not its name
    assert (report["files"], report["events"], report["invalid"]) == (2, 757, {})
    assert report["duplicates"] == 757


def test_policy_simulate_reads_a_cut_gzip_to_the_cut_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = gzip.compress(AUDIT2RBAC.read_bytes())
    path = tmp_path / "cut.log.gz"
    path.write_bytes(data[: len(data) // 2])
    complete = gunzip_what_can_be(path.read_bytes()).count(b"\n")
    code, _, summary = simulate_json(capsys, "--policy", str(SHIPPED[0]), str(path))
    assert code == EXIT_ERRORS
    assert summary["invalid"] == {"truncated_gzip": 1, "invalid_json": 1}
    assert summary["events"] == complete
