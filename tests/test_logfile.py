"""The audit log file source against an audit log written the way the API
server writes it (lumberjack: rename to audit-<time>.log, create a new file,
optionally gzip the renamed one), with real events from the shared corpora."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import threading
import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from exporter.event import AuditEvent, Decoder
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline, Sink
from exporter.sources import checkpoint as ckpt
from exporter.sources.logfile import LogFileSource, rotated_files

CORPUS = "perfspec-kubernetes-event-dataset/reconstructed-audit.log"


@pytest.fixture(scope="module")
def lines(corpora: Path) -> list[bytes]:
    """The corpus' events, one JSON line each, with their newlines."""
    return (corpora / CORPUS).read_bytes().splitlines(keepends=True)


def independent_count(lines: Sequence[bytes]) -> tuple[float, float]:
    """(events, requests) for ``lines`` decoded and processed in one batch,
    without the log file source."""
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    decoder = Decoder()
    Pipeline(metrics).process([decoder.decode_line(line) for line in lines], "logfile")
    return _events(registry), _requests(registry)


def _events(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("kube_audit_events_total", {"source": "logfile"})
    assert value is not None
    return value


def _requests(registry: CollectorRegistry) -> float:
    return sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "kube_audit_requests_total"
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ApiServerLog:
    """Writes an audit log as the API server does with lumberjack."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "audit.log"
        self.time = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
        self.path.write_bytes(b"")

    def write(self, data: bytes | Sequence[bytes]) -> None:
        with open(self.path, "ab") as f:
            f.write(data if isinstance(data, bytes) else b"".join(data))

    def rotate(self) -> Path:
        """Rename to audit-<time>.log and start a new, empty file."""
        stamp = self.time.strftime("%Y-%m-%dT%H-%M-%S") + f".{self.time.microsecond // 1000:03d}"
        backup = self.directory / f"audit-{stamp}.log"
        os.rename(self.path, backup)
        self.path.write_bytes(b"")
        self.time += timedelta(minutes=1, milliseconds=7)
        return backup

    @staticmethod
    def compress(backup: Path) -> Path:
        """What --audit-log-compress does later: .log.gz, and the .log removed."""
        gz = backup.with_name(backup.name + ".gz")
        with open(backup, "rb") as src, gzip.open(gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
        backup.unlink()
        return gz


class Tail:
    """A LogFileSource with its own registry, metrics and pipeline."""

    def __init__(
        self,
        directory: Path,
        *,
        start_at: str = "checkpoint",
        batch_lines: int = 1000,
        sinks: Sequence[Sink] = (),
        decoder: Decoder | None = None,
        checkpoint_interval: float = 5.0,
        poll_interval: float = 0.25,
        resume_mark: bytes | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.metrics = AuditMetrics(self.registry)
        self.pipeline = Pipeline(self.metrics, sinks=sinks)
        self.clock = FakeClock()
        self.path = directory / "audit.log"
        self.checkpoint_file = directory / "checkpoint.json"
        self.source = LogFileSource(
            path=str(self.path),
            checkpoint_file=str(self.checkpoint_file),
            start_at=start_at,
            pipeline=self.pipeline,
            decoder=decoder or Decoder(),
            metrics=self.metrics,
            poll_interval=poll_interval,
            checkpoint_interval=checkpoint_interval,
            batch_lines=batch_lines,
            clock=self.clock,
            resume_mark=resume_mark,
        )

    def poll(self) -> int:
        return self.source.poll_once()

    def value(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        assert value is not None, f"{name}{labels} is not exposed"
        return value

    @property
    def events(self) -> float:
        return _events(self.registry)

    @property
    def requests(self) -> float:
        return _requests(self.registry)

    @property
    def duplicates(self) -> float:
        return self.value("kube_audit_events_duplicate_total", source="logfile")

    def invalid(self, reason: str) -> float:
        return self.value("kube_audit_events_invalid_total", source="logfile", reason=reason)

    def invalid_total(self) -> float:
        return sum(
            s.value
            for family in self.registry.collect()
            for s in family.samples
            if s.name == "kube_audit_events_invalid_total"
        )

    def rotations(self, kind: str) -> float:
        return self.value("kube_audit_logfile_rotations_total", kind=kind)

    def saved(self) -> ckpt.Checkpoint:
        ck = ckpt.load(str(self.checkpoint_file))
        assert ck is not None
        return ck


class FlakySink:
    """A sink that is full for the answers that say False."""

    def __init__(self, answers: Sequence[bool]) -> None:
        self.answers = list(answers)
        self.submitted: list[tuple[bool, list[str]]] = []

    keeps_marks = False

    def admit(self, events: Sequence[AuditEvent]) -> bool:
        ok = self.answers.pop(0) if self.answers else True
        if not ok:
            self.submitted.append((ok, [ev.audit_id for ev in events]))
        return ok

    def submit(self, events: Sequence[AuditEvent], mark: bytes | None = None) -> bool:
        self.submitted.append((True, [ev.audit_id for ev in events]))
        return True

    def close(self) -> None:
        pass

    def taken(self) -> list[str]:
        return [audit_id for ok, ids in self.submitted if ok for audit_id in ids]


def audit_ids(lines: Sequence[bytes]) -> list[str]:
    return [orjson.loads(line)["auditID"] for line in lines]


# --- rotation ------------------------------------------------------------------


def test_rename_rotation_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path)
    parts = [lines[i : i + 2100] for i in range(0, len(lines), 2100)]
    rotations = 0
    for i, part in enumerate(parts):
        half = len(part) // 2
        log.write(part[:half])
        if i % 3 != 2:  # every third time two rotations pass between polls
            tail.poll()
        log.write(part[half:])  # still unread when the file is renamed
        log.rotate()
        rotations += 1
    tail.poll()

    events, requests = independent_count(lines)
    assert events == len(lines) == 16_563
    assert tail.events == events
    assert tail.requests == requests
    assert tail.duplicates == 0
    assert tail.invalid_total() == 0
    assert tail.rotations("rename") == rotations
    assert tail.rotations("truncate") == 0
    # Caught up: the checkpoint is at the start of the new, empty file.
    assert tail.source.checkpoint()
    saved = tail.saved()
    assert saved.position.file == str(log.path)
    assert (saved.position.ino, saved.position.offset) == (log.path.stat().st_ino, 0)


def test_gzip_of_the_rotated_file_while_stopped_loses_nothing(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    first = Tail(tmp_path)
    log.write(lines[:4000])
    first.poll()
    first.source.stop()
    assert first.saved().position.offset == len(b"".join(lines[:4000]))

    # While the exporter is down: the file grows, is rotated and compressed
    # (the checkpoint now points into a .gz), and once more.
    log.write(lines[4000:7000])
    gz = ApiServerLog.compress(log.rotate())
    log.write(lines[7000:10000])
    ApiServerLog.compress(log.rotate())
    log.write(lines[10000:])
    assert not any(r.plain for r in rotated_files(str(log.path)))
    with gzip.open(gz) as f:
        assert f.read(100) == lines[0][:100]  # the checkpointed file, compressed

    second = Tail(tmp_path)
    second.poll()
    assert second.events == independent_count(lines[4000:])[0]
    assert first.events + second.events == independent_count(lines)[0]
    assert first.requests + second.requests == independent_count(lines)[1]
    assert first.duplicates == second.duplicates == 0
    assert second.invalid_total() == 0
    assert second.rotations("rename") == 2


def test_restart_from_checkpoint_in_the_middle_counts_every_event_once(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    first = Tail(tmp_path, batch_lines=700)
    log.write(lines[:8000])
    log.write(lines[8000][:123])  # the API server is in the middle of a line
    first.poll()
    log.write(lines[8000][123:])
    log.write(lines[8001:9000])
    first.source.stop()
    saved = first.saved()
    assert (saved.position.offset, saved.position.line) == (len(b"".join(lines[:8000])), 8000)

    second = Tail(tmp_path, batch_lines=700)
    second.poll()
    log.rotate()
    log.write(lines[9000:])
    second.poll()
    second.source.stop()

    events, requests = independent_count(lines)
    assert first.events == 8000
    assert first.events + second.events == events
    assert first.requests + second.requests == requests
    assert first.duplicates == second.duplicates == 0
    assert first.invalid_total() == second.invalid_total() == 0
    assert second.saved().position.offset == log.path.stat().st_size


def test_rename_while_stopped_finishes_the_old_file_from_the_checkpoint(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    first = Tail(tmp_path)
    log.write(lines[:1000])
    first.poll()
    first.source.stop()

    log.write(lines[1000:1500])
    log.write(lines[1500].rstrip(b"\n"))  # unterminated when renamed: complete
    log.rotate()
    log.write(lines[1501:2000])

    second = Tail(tmp_path)
    second.poll()
    assert first.events + second.events == 2000
    assert second.invalid_total() == second.duplicates == 0
    assert second.rotations("rename") == 1


def test_checkpoint_in_a_deleted_rotated_file_continues_with_the_newer_ones(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    first = Tail(tmp_path)
    log.write(lines[:1000])
    first.poll()
    log.rotate()
    log.write(lines[1000:1500])
    first.poll()
    first.source.stop()
    assert first.saved().rotated_done is not None

    # Down: the file is rotated and pruned (its rest is lost), then another.
    log.write(lines[1500:2000])
    log.rotate().unlink()
    log.write(lines[2000:3000])
    log.rotate()
    log.write(lines[3000:4000])

    second = Tail(tmp_path)
    second.poll()
    assert first.events == 1500
    assert second.events == 2000  # the newer rotated file and the current one
    assert second.duplicates == 0


def test_copytruncate_reads_the_file_again_from_the_start(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path)
    log.write(lines[:3000])
    tail.poll()
    shutil.copy(log.path, tmp_path / "audit.log.1")
    os.truncate(log.path, 0)
    log.write(lines[3000:4000])  # shorter than what was read
    tail.poll()

    assert tail.events == independent_count(lines[:4000])[0]
    assert tail.rotations("truncate") == 1
    assert tail.rotations("rename") == 0
    assert tail.invalid_total() == 0
    tail.source.checkpoint()
    assert tail.saved().position.offset == log.path.stat().st_size
    assert tail.saved().position.line == 1000


def test_copytruncate_is_detected_when_the_file_regrew_past_the_old_offset(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path)
    log.write(lines[:100])
    tail.poll()
    os.truncate(log.path, 0)
    log.write(lines[100:1000])  # longer than before: only the first bytes tell
    tail.poll()

    assert tail.events == 1000
    assert tail.rotations("truncate") == 1
    assert tail.invalid_total() == 0


# --- partial and unterminated lines -----------------------------------------------


def test_partial_line_is_held_until_its_newline_arrives(tmp_path: Path, lines: list[bytes]) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path)
    log.write(lines[0][:100])
    assert tail.poll() == 0
    log.write(lines[0][100:-1])  # all of it but the newline
    assert tail.poll() == 0
    assert tail.events == 0
    assert tail.invalid_total() == 0
    tail.source.checkpoint()
    assert tail.saved().position.offset == 0

    log.write(b"\n" + lines[1])
    assert tail.poll() == 2
    assert tail.events == 2
    assert tail.invalid_total() == 0


def test_lines_cut_at_every_write_boundary_lose_nothing(tmp_path: Path, lines: list[bytes]) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path, batch_lines=97)
    data = b"".join(lines[:4000])
    for i in range(0, len(data), 7919):  # a prime: cuts fall everywhere in lines
        log.write(data[i : i + 7919])
        tail.poll()

    assert tail.events == independent_count(lines[:4000])[0]
    assert tail.invalid_total() == 0
    assert tail.duplicates == 0


def test_unterminated_last_line_of_a_rotated_file_is_processed(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path)
    log.write(lines[:10])
    log.write(lines[10].rstrip(b"\n"))
    assert tail.poll() == 10  # the last line may still grow
    log.rotate()
    log.write(lines[11:20])
    assert tail.poll() == 10

    assert tail.events == 20
    assert tail.invalid_total() == 0
    assert tail.rotations("rename") == 1


def test_line_completed_in_the_old_file_before_rotation_is_counted_once(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path)
    log.write(lines[:10])
    log.write(lines[10][:50])
    assert tail.poll() == 10
    log.write(lines[10][50:])  # completed in the old file, then renamed
    log.rotate()
    log.write(lines[11:20])
    assert tail.poll() == 10

    assert tail.events == 20
    assert tail.invalid_total() == 0
    assert tail.duplicates == 0


# --- where to start ------------------------------------------------------------------


def test_start_at_end_skips_what_is_there_and_follows_rotations(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    log.write(lines[:1000])
    log.write(lines[1000][:40])  # being written when the exporter starts
    tail = Tail(tmp_path, start_at="end")
    assert tail.poll() == 0
    log.write(lines[1000][40:])
    log.write(lines[1001:1500])
    assert tail.poll() == 500
    log.rotate()
    log.write(lines[1500:2000])
    assert tail.poll() == 500

    assert tail.events == 1000
    assert tail.invalid_total() == 0
    assert tail.rotations("rename") == 1


def test_start_at_beginning_ignores_the_checkpoint(tmp_path: Path, lines: list[bytes]) -> None:
    log = ApiServerLog(tmp_path)
    log.write(lines[:300])
    first = Tail(tmp_path)
    first.poll()
    first.source.stop()

    second = Tail(tmp_path, start_at="beginning")
    second.poll()
    assert second.events == 300


def test_missing_file_is_waited_for(tmp_path: Path, lines: list[bytes]) -> None:
    tail = Tail(tmp_path)
    assert tail.poll() == 0
    assert tail.poll() == 0
    assert not tail.source.checkpoint()  # nothing to say yet
    assert not tail.checkpoint_file.exists()
    log = ApiServerLog(tmp_path)
    log.write(lines[:50])
    assert tail.poll() == 50
    assert tail.value("kube_audit_logfile_errors_total", operation="open") == 0


def test_unreadable_path_is_counted_and_retried(
    tmp_path: Path, lines: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "audit.log").mkdir()  # not a file (root reads any file, so no chmod)
    tail = Tail(tmp_path)
    with caplog.at_level(logging.WARNING, logger="exporter.sources.logfile"):
        for _ in range(30):
            assert tail.poll() == 0
    assert tail.value("kube_audit_logfile_errors_total", operation="open") == 30
    assert 1 <= len([r for r in caplog.records if "cannot open" in r.getMessage()]) <= 11
    (tmp_path / "audit.log").rmdir()
    ApiServerLog(tmp_path).write(lines[:20])
    assert tail.poll() == 20


def test_checkpoint_of_a_reused_inode_with_other_content_starts_at_the_beginning(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    log.write(lines[:100])
    st = log.path.stat()
    stale = ckpt.Position(
        file=str(log.path),
        dev=st.st_dev,
        ino=st.st_ino,
        fingerprint=ckpt.fingerprint(lines[500][:1024]),
        fingerprint_bytes=1024,
        offset=5000,
        line=10,
    )
    ckpt.save(str(tmp_path / "checkpoint.json"), ckpt.Checkpoint(str(log.path), stale, None))

    tail = Tail(tmp_path)
    tail.poll()
    assert tail.events == 100
    assert tail.invalid_total() == 0


def test_damaged_checkpoint_is_ignored_and_reading_starts_at_the_beginning(
    tmp_path: Path, lines: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    log = ApiServerLog(tmp_path)
    log.write(lines[:100])
    (tmp_path / "checkpoint.json").write_bytes(b'{"version": 1, "offset": "half')
    with caplog.at_level(logging.WARNING, logger="exporter.sources.logfile"):
        tail = Tail(tmp_path)
    assert any("damaged log file checkpoint" in r.getMessage() for r in caplog.records)
    tail.poll()
    assert tail.events == 100


def test_unreadable_checkpoint_fails_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.json").mkdir()
    with pytest.raises(OSError, match=r"logfile\.checkpoint_file: cannot read"):
        Tail(tmp_path)


# --- the pipeline's answers ----------------------------------------------------------------


def test_refused_batch_is_retried_and_the_checkpoint_does_not_pass_it(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    sink = FlakySink([True, False, False])
    tail = Tail(tmp_path, batch_lines=100, sinks=[sink])
    log.write(lines[:300])
    assert tail.poll() == 100  # the second batch is refused
    assert tail.events == 100
    tail.source.checkpoint()
    assert tail.saved().position.offset == len(b"".join(lines[:100]))

    log.write(lines[300:400])
    assert tail.poll() == 0  # refused again; nothing more is read
    tail.source.checkpoint()
    assert tail.saved().position.offset == len(b"".join(lines[:100]))

    assert tail.poll() == 300
    assert tail.events == 400
    tail.source.checkpoint()
    assert tail.saved().position.offset == len(b"".join(lines[:400]))
    # The same batch each time, and every event taken once, in order.
    refused = [ids for ok, ids in sink.submitted if not ok]
    assert refused == [audit_ids(lines[100:200])] * 2
    assert sink.taken() == audit_ids(lines[:400])


def test_refused_batch_at_a_rotation_is_retried_and_the_old_file_finished(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    sink = FlakySink([True, False])
    tail = Tail(tmp_path, batch_lines=200, sinks=[sink])
    log.write(lines[:500])
    assert tail.poll() == 200
    log.rotate()  # while the second batch waits to be retried
    log.write(lines[500:1000])
    assert tail.poll() == 800

    assert tail.events == 1000
    assert sink.taken() == audit_ids(lines[:1000])
    assert tail.rotations("rename") == 1


def test_invalid_lines_between_good_ones_are_counted_by_reason(
    tmp_path: Path, lines: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path)
    log.write(lines[:50])
    log.write(b"not json at all\n")
    log.write(lines[50:100])
    log.write(b'{"kind": 0}\n')
    log.write(b'{"kind":"Event","apiVersion":"audit.k8s.io/v2","auditID":"a","stage":"Panic"}\n')
    log.write(b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete"}\n')
    log.write(b"\n")  # blank lines are no events and no errors
    log.write(lines[100:150])
    with caplog.at_level(logging.WARNING, logger="exporter.pipeline"):
        tail.poll()

    assert tail.invalid("invalid_json") == 1
    assert tail.invalid("wrong_type") == 1
    assert tail.invalid("unknown_api_version") == 1
    assert tail.invalid("missing_field") == 1
    assert tail.invalid_total() == 4
    assert (tail.events, tail.requests) == independent_count(lines[:150])
    where = [getattr(r, "where", None) for r in caplog.records]
    assert f"{log.path}:51" in where  # the line number of "not json at all"
    assert f"{log.path}:104" in where


def test_too_large_line_is_skipped_without_holding_it_in_memory(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path, decoder=Decoder(max_event_bytes=64 * 1024))
    log.write(lines[:10])
    tail.poll()
    piece = b"x" * (1 << 20)
    tracemalloc.start()
    try:
        for _ in range(24):  # a 24 MiB line, written over many polls
            log.write(piece)
            assert tail.poll() == 0
        log.write(b"\n")
        log.write(lines[10:20])
        assert tail.poll() == 11
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert tail.invalid("too_large") == 1
    assert tail.invalid_total() == 1
    assert tail.events == 20

    # Unterminated at rotation, and over the limit: complete, and too large.
    log.write(piece[:100_000])
    log.rotate()
    tail.poll()
    assert tail.invalid("too_large") == 2
    assert tail.events == 20


# --- checkpoint, metrics and the thread ------------------------------------------------------


def test_checkpoint_is_written_with_each_batch_atomically(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    tail = Tail(tmp_path, checkpoint_interval=3600.0)
    assert tail.value("kube_audit_logfile_checkpoint_timestamp_seconds") == 0
    log.write(lines[:200])
    tail.poll()

    # Without a sink that keeps marks, each batch's checkpoint is on disk
    # before the metrics count the batch (not only every checkpoint_interval).
    saved = tail.saved()
    size = log.path.stat().st_size
    assert saved.path == str(log.path)
    assert saved.seq == 1
    assert (saved.position.offset, saved.position.line) == (size, 200)
    assert saved.position.ino == log.path.stat().st_ino
    assert saved.position.fingerprint == ckpt.fingerprint(log.path.read_bytes()[:1024])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "checkpoint.json"]
    assert tail.value("kube_audit_logfile_offset_bytes") == size
    assert tail.value("kube_audit_logfile_size_bytes") == size
    assert tail.value("kube_audit_logfile_checkpoint_timestamp_seconds") > 0


class MarkingSink:
    """A sink that keeps marks, as the Loki spool does, in memory."""

    keeps_marks = True

    def __init__(self) -> None:
        self.marks: list[bytes] = []
        self.taken: list[str] = []

    def admit(self, events: Sequence[AuditEvent]) -> bool:
        return True

    def submit(self, events: Sequence[AuditEvent], mark: bytes | None = None) -> bool:
        self.taken += [ev.audit_id for ev in events]
        if mark is not None:
            self.marks.append(mark)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        return True


def test_a_crash_after_counted_batches_reads_none_of_them_again(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    log.write(lines[:2500])
    first = Tail(tmp_path, checkpoint_interval=3600.0)
    assert first.poll() == 2500
    # kill -9: no stop(), no checkpoint on the clock; a new process starts.
    log.write(lines[2500:3000])
    second = Tail(tmp_path, checkpoint_interval=3600.0)
    assert second.poll() == 500
    assert first.events + second.events == independent_count(lines[:3000])[0]


def test_the_later_of_the_spools_mark_and_the_checkpoint_file_wins(
    tmp_path: Path, lines: list[bytes]
) -> None:
    log = ApiServerLog(tmp_path)
    log.write(lines[:1500])
    sink = MarkingSink()
    first = Tail(tmp_path, checkpoint_interval=3600.0, sinks=[sink])
    assert first.poll() == 1500
    first.source.checkpoint()  # seq 2, at the end of what is written
    log.write(lines[1500:2500])
    assert first.poll() == 1000
    # The spool kept a mark with each batch; the checkpoint file lags.
    assert len(sink.marks) == 3
    assert tail_seq(first) == 2
    log.write(lines[2500:3000])

    later = MarkingSink()
    second = Tail(tmp_path, sinks=[later], resume_mark=sink.marks[-1])
    assert second.poll() == 500
    assert later.taken == audit_ids(lines[2500:3000])
    assert first.events + second.events == independent_count(lines[:3000])[0]

    # An older mark (a spool from before) loses to a later checkpoint file.
    second.source.checkpoint()
    third = Tail(tmp_path, sinks=[MarkingSink()], resume_mark=sink.marks[0])
    assert third.poll() == 0


def tail_seq(tail: Tail) -> int:
    return tail.saved().seq


def test_start_and_stop_follow_the_file_on_a_thread(tmp_path: Path, lines: list[bytes]) -> None:
    log = ApiServerLog(tmp_path)
    log.write(lines[:2000])
    tail = Tail(tmp_path, poll_interval=0.01)
    tail.source.start()
    try:
        deadline = time.monotonic() + 10
        while tail.events < 2000 and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert tail.events == 2000
        log.rotate()
        log.write(lines[2000:3000])
        while tail.events < 3000 and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert tail.events == 3000
    finally:
        # Stopped, not given up on: the thread has ended (the timeout only
        # bounds a failure; how long stopping takes is not asserted).
        tail.source.stop(timeout=30)
        assert tail.source._thread is not None and not tail.source._thread.is_alive()
    assert tail.saved().position.offset == log.path.stat().st_size
    assert tail.source.poll_once() == 0  # stopped
