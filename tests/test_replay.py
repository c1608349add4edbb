from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.event import Decoder
from exporter.sources.replay import Progress, read_batches
from tests.conftest import CORPORA

PERFSPEC = CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"


def replay_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    status = main(["replay", "--output", "json", *args])
    return status, json.loads(capsys.readouterr().out)


def test_gzip_gives_the_same_report_as_plain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gz = tmp_path / "audit-2023-01-27T18-32-12.000.log.gz"
    gz.write_bytes(gzip.compress(PERFSPEC.read_bytes()))
    _, plain = replay_json(capsys, str(PERFSPEC))
    _, packed = replay_json(capsys, str(gz))
    assert plain == packed
    assert plain["events"] == 16_563


def test_the_summary_is_the_same_with_and_without_metrics_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --metrics-out (and Loki) replay counts none of the events'
    own metric families; its summary does not depend on them."""
    prom = tmp_path / "replay.prom"
    _, bare = replay_json(capsys, str(PERFSPEC))
    _, counted = replay_json(capsys, "--metrics-out", str(prom), str(PERFSPEC))
    assert bare == counted
    text = prom.read_text()
    assert 'kube_audit_events_total{source="replay"} 16563.0' in text
    assert "kube_audit_requests_total{" in text


def test_stdin_and_text_output() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "replay", "-"],
        input=(CORPORA / "audit2rbac-demo" / "demo.log").read_bytes(),
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert out.startswith("757 events")
    for section in ("Top users", "Auth failures by user", "Sensitive operations", "Slowest"):
        assert section in out
    assert "impersonation" in out


def test_truncated_gzip_keeps_what_was_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = gzip.compress(PERFSPEC.read_bytes())
    gz = tmp_path / "cut.log.gz"
    gz.write_bytes(data[: len(data) // 2])
    status, report = replay_json(capsys, str(gz))
    assert status == 2
    assert 0 < report["events"] < 16_563


def test_missing_file_is_reported_and_others_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = replay_json(capsys, str(tmp_path / "nope.log"), str(PERFSPEC))
    assert status == 2
    assert report["events"] == 16_563


def test_pretty_printed_document_is_read_whole() -> None:
    path = CORPORA / "small-samples" / "afcollins-kube-audit-log-tool" / "single-event.json"
    with open(path, "rb") as fh:
        batches = list(read_batches(fh, Decoder()))
    assert [len(b) for b in batches] == [1]
    assert batches[0][0].audit_id == "532b1164-8b26-4b49-95f2-907424a80cac"  # type: ignore[union-attr]


def test_lines_mode_batches_and_numbers_lines() -> None:
    body = PERFSPEC.read_bytes()[:200_000]
    body = body[: body.rfind(b"\n") + 1] + b"not json\n"
    batches = list(read_batches(io.BytesIO(body), Decoder(), batch_lines=100))
    assert all(b.inputs <= 100 for b in batches)
    assert sum(b.refusals.total for b in batches[:-1]) == 0
    (last,) = batches[-1].refusals.samples
    assert (last.reason, last.line) == ("invalid_json", body.count(b"\n"))


def test_lines_across_reads_and_an_endless_garbage_line() -> None:
    """Lines split across reads, CRLF, blank lines, no final newline, and a
    line of 5 MiB without a newline between good events: every good event
    is read and the long line is refused as too large."""
    good = PERFSPEC.read_bytes().split(b"\n")[:3000]
    body = (
        b"\n".join(good[:1500])
        + b"\r\n\n   \n"
        + b"x" * (5 << 20)
        + b"\n"
        + b"\n".join(good[1500:])
    )
    want = [Decoder().decode_line(line).audit_id for line in good if line.strip()]

    class SmallReads(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            return super().read(min(n if n is not None and n >= 0 else 1 << 30, 4099))

    batches = list(read_batches(SmallReads(body), Decoder(max_event_bytes=1 << 20)))
    assert [x.audit_id for b in batches for x in b] == want
    refused = [x for b in batches for x in b.refusals.samples]
    assert [(x.reason, x.line) for x in refused] == [("too_large", 1503)]


def test_progress_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    quiet = io.StringIO()
    Progress(100, quiet).update(50, 10, force=True)
    assert quiet.getvalue() == ""
    tty = Tty()
    p = Progress(100, tty)
    p.update(50, 10, force=True)
    assert "50.0%" in tty.getvalue() and "10 events" in tty.getvalue()


def test_report_lists_detections_with_the_rules_own_severity(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from exporter.detect import load_rules

    severity = {r.id: r.severity for r in load_rules(None).rules}
    files = sorted(str(p) for p in (CORPORA / "falco-k8s-audit-trace-files").glob("*.json"))
    _, report = replay_json(capsys, *files)
    found = {d["rule"]: d for d in report["detections"]}
    assert found, "the falco corpus holds privileged pods, exec and cluster-admin bindings"
    for rule, det in found.items():
        assert det["severity"] == severity[rule]
        assert det["examples"] and det["examples"][0]["audit_id"]
