"""``replay --jobs 2`` gives what ``--jobs 1`` gives, field by field: the JSON
summary (detections and their examples included) and every sample of
``--metrics-out``, on the shared corpora and on the simulator's output,
with duplicates across chunks and with caps small enough to fold; and with
chunks small enough that batches, retries and the steps of a sequence rule
fall into different chunks, for plain files (which the jobs read
themselves), gzip (which goes through the pipe) and a line too large to cut
a span after."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CORPORA

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "demo" / "config.yaml"
# The lag is the wall clock at ingestion minus the event's time: its sum
# differs between two runs of the same command.
WALL_CLOCK = {"kube_audit_event_lag_seconds_sum"}


# replay with chunks of the size given first (the default, 4 MiB, makes
# few chunks of a test's input; a plain file's are up to four times that),
# split into lines windows of the size given second
SMALL_CHUNKS = (
    "import sys\n"
    "from exporter.sources import replay_jobs\n"
    "replay_jobs.CHUNK_BYTES = int(sys.argv.pop(1))\n"
    "replay_jobs.WINDOW_BYTES = int(sys.argv.pop(1))\n"
    "from exporter.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


# each replay's standard error (its log), by --jobs
STDERR: dict[int, str] = {}


def replay(
    tmp: Path,
    jobs: int,
    files: list[Path],
    *extra: str,
    chunk_bytes: int | None = None,
    window_bytes: int = 1 << 20,
) -> tuple[dict[str, Any], str]:
    metrics = tmp / f"metrics-{jobs}.prom"
    command = ["-m", "exporter.cli"]
    if chunk_bytes is not None:
        command = ["-c", SMALL_CHUNKS, str(chunk_bytes), str(window_bytes)]
    out = subprocess.run(
        [
            sys.executable,
            *command,
            "replay",
            "--jobs",
            str(jobs),
            "--config.file",
            str(DEMO_CONFIG),
            "--output",
            "json",
            "--metrics-out",
            str(metrics),
            *extra,
            *map(str, files),
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    STDERR[jobs] = out.stderr.decode()
    return json.loads(out.stdout), metrics.read_text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in WALL_CLOCK:
                found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def series_order(text: str) -> list[str]:
    """The exposition's lines without values: the order of the series."""
    return [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]


def assert_same(
    tmp: Path,
    files: list[Path],
    *extra: str,
    chunk_bytes: int | None = None,
    window_bytes: int = 1 << 20,
) -> dict[str, Any]:
    one, metrics_one = replay(tmp, 1, files, *extra)
    two, metrics_two = replay(
        tmp, 2, files, *extra, chunk_bytes=chunk_bytes, window_bytes=window_bytes
    )
    for key in one:
        assert two[key] == one[key], key
    assert two.keys() == one.keys()
    a, b = samples(metrics_one), samples(metrics_two)
    for key, value in a.items():
        assert b.get(key) == value, key
    assert b.keys() == a.keys()
    assert series_order(metrics_two) == series_order(metrics_one)
    return one


def corpus_files() -> list[Path]:
    return sorted(
        p for p in CORPORA.rglob("*") if p.is_file() and p.suffix in (".log", ".json", ".jsonl")
    )


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "audit.log"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter.cli",
            "simulate",
            "--events",
            "30000",
            "--seed",
            "7",
            "--output",
            str(path),
        ],
        check=True,
        cwd=ROOT,
    )
    return path


def test_jobs_give_the_output_of_one_on_the_corpora(tmp_path: Path) -> None:
    files = corpus_files()
    assert len(files) > 20
    summary = assert_same(tmp_path, files)
    assert summary["events"] > 16_000
    assert summary["detections"], "the corpora hold rule matches"


def test_jobs_give_the_output_of_one_on_the_simulator(tmp_path: Path, simulated: Path) -> None:
    summary = assert_same(tmp_path, [simulated])
    assert summary["events"] == 30_000
    # stateful rules fire on the simulated attacks, in order
    fired = {d["rule"] for d in summary["detections"]}
    assert {"auth-failure-burst", "forbidden-burst-person"} <= fired


def _harvesting(simulated: Path, tmp: Path) -> Path:
    """The simulator's events with, in the middle, a service account of an
    application reading 25 different secrets one by one (secret-harvesting:
    a threshold rule of severity warning whose condition holds for every
    secret a service account reads, as the info-level
    secret-read-by-service-account's does)."""
    lines = simulated.read_bytes().splitlines(keepends=True)
    middle = json.loads(lines[len(lines) // 2])
    base = middle["stageTimestamp"][:17]  # 2024-05-01T10:MM:
    user = "system:serviceaccount:shop:cart"
    added = []
    for i in range(25):
        ts = f"{base}{i * 2:02d}.000000Z"
        added.append(
            json.dumps(
                {
                    "kind": "Event",
                    "apiVersion": "audit.k8s.io/v1",
                    "level": "Metadata",
                    "auditID": str(uuid.UUID(int=i + 1)),
                    "stage": "ResponseComplete",
                    "requestURI": f"/api/v1/namespaces/shop/secrets/s{i}",
                    "verb": "get",
                    "user": {"username": user, "groups": ["system:serviceaccounts"]},
                    "sourceIPs": ["10.244.1.7"],
                    "objectRef": {"resource": "secrets", "namespace": "shop", "name": f"s{i}"},
                    "responseStatus": {"code": 200},
                    "requestReceivedTimestamp": ts,
                    "stageTimestamp": ts,
                }
            ).encode()
            + b"\n"
        )
    path = tmp / "harvesting.log"
    half = len(lines) // 2
    path.write_bytes(b"".join(lines[:half] + added + lines[half:]))
    return path


def test_a_rule_that_raises_a_routine_operation_is_applied_in_order(
    tmp_path: Path, simulated: Path
) -> None:
    """A job counts the routine sensitive requests (service accounts reading
    secrets) itself, unless a rule of a severity that changes their rank may
    match them: then the parent ranks them after detection. Here
    secret-harvesting matches the twentieth read, which becomes a row of
    its own; with that rule off, every read is routine, counted in the
    jobs as in one process. Chunks of 256 KiB put the reads in several."""
    path = _harvesting(simulated, tmp_path)
    user = "system:serviceaccount:shop:cart"

    def routine(summary: dict[str, Any]) -> dict[str, int]:
        return {
            r["component"]: r["count"]
            for r in summary["sensitive_operations"]["routine"]
            if r["component"] == user
        }

    summary = assert_same(tmp_path, [path], chunk_bytes=256 << 10, window_bytes=32 << 10)
    fired = {d["rule"]: d["count"] for d in summary["detections"]}
    assert fired.get("secret-harvesting") == 1
    rows = [r for r in summary["sensitive_operations"]["events"] if r.get("user") == user]
    assert len(rows) == 1, summary["sensitive_operations"]["events"][:3]
    assert {r["severity"] for r in rows} == {"warning"}
    assert routine(summary) == {user: 24}

    off = tmp_path / "off"
    off.mkdir()
    summary = assert_same(
        off,
        [path],
        "--detect.disabled-rules",
        "secret-harvesting",
        chunk_bytes=256 << 10,
        window_bytes=32 << 10,
    )
    assert not [r for r in summary["sensitive_operations"]["events"] if r.get("user") == user]
    assert routine(summary) == {user: 25}


def test_duplicates_across_chunks_are_dropped_as_with_one_process(
    tmp_path: Path, simulated: Path
) -> None:
    """The second copy of lines 12,000-22,000 comes one chunk (1 MiB) or more
    after the first: only the parent can know they are duplicates."""
    lines = simulated.read_bytes().splitlines(keepends=True)
    retried = tmp_path / "retried.log"
    retried.write_bytes(b"".join(lines[:22_000] + lines[12_000:]))
    summary = assert_same(tmp_path, [retried])
    assert summary["duplicates"] == 10_000
    assert summary["events"] == 30_000


def test_folded_labels_and_caps_are_the_same(tmp_path: Path, simulated: Path) -> None:
    """Which resource, user and address takes a place depends on the order
    they are first seen in; with places for few of them, most fold."""
    summary = assert_same(
        tmp_path,
        [simulated, CORPORA / "audit2rbac-demo" / "demo.log"],
        "--metrics.max-users", "5",
        "--metrics.max-extra-resources", "1",
        "--metrics.max-source-ips", "2",
        "--events.dedupe-capacity", "3000",
    )  # fmt: skip
    assert summary["events"] > 30_000


def sequence_in_steps(lines: list[bytes], every: int, plain_success: bool = False) -> list[bytes]:
    """``lines`` with the five events of untrusted-then-trusted-access
    (three refusals from outside the trusted networks, one from inside, then
    a success from inside, one user) put in, ``every`` lines apart, each at
    the time of the line before it. With ``plain_success``, the success
    lists pods, which no other rule's condition holds for."""
    template = next(
        json.loads(line)
        for line in lines
        if b'"stage":"ResponseComplete"' in line and b'"username":"system:' not in line
    )
    steps = [("198.51.100.23", 403)] * 3 + [("10.8.0.7", 403), ("10.8.0.7", 200)]
    out = list(lines)
    for n, (ip, code) in reversed(list(enumerate(steps))):
        at = every * (n + 1)
        before = json.loads(out[at - 1])
        ev = dict(template)
        ev.update(
            auditID=str(uuid.UUID(int=n + 1)),
            user={"username": "mallory", "groups": ["system:authenticated"]},
            sourceIPs=[ip],
            verb="get",
            objectRef={"resource": "secrets", "namespace": "payments", "name": "db"},
            requestURI="/api/v1/namespaces/payments/secrets/db",
            responseStatus={"metadata": {}, "code": code},
            requestReceivedTimestamp=before["stageTimestamp"],
            stageTimestamp=before["stageTimestamp"],
        )
        if plain_success and code == 200:
            ev.update(
                verb="list",
                objectRef={"resource": "pods", "namespace": "payments"},
                requestURI="/api/v1/namespaces/payments/pods",
            )
        out.insert(at, json.dumps(ev).encode() + b"\n")
    return out


def test_small_chunks_cut_batches_retries_and_sequences(tmp_path: Path, simulated: Path) -> None:
    """Chunks of 16 KiB (about 18 lines): every batch of the Deduper spans
    many chunks, the retried lines come hundreds of chunks after their first
    copy, and each step of a sequence rule is in a chunk of its own."""
    lines = simulated.read_bytes().splitlines(keepends=True)
    steps = tmp_path / "steps.log"
    steps.write_bytes(b"".join(sequence_in_steps(lines[:3000], every=200)))
    retried = tmp_path / "retried.log"
    retried.write_bytes(b"".join(lines[:8_000] + lines[5_000:]))
    summary = assert_same(tmp_path, [steps, retried], chunk_bytes=16 << 10)
    assert summary["duplicates"] == 3_000 + 3_000  # steps.log's lines come again too
    fired = {d["rule"]: d["count"] for d in summary["detections"]}
    assert fired.get("untrusted-then-trusted-access") == 1
    assert {"auth-failure-burst", "forbidden-burst-person"} <= fired.keys()


def test_a_sequence_that_starts_and_ends_within_a_chunk_fires(
    tmp_path: Path, simulated: Path
) -> None:
    """The five steps three lines apart, in one 64 KiB chunk before which no
    sequence is in progress: the job says that a projection of the chunk
    starts one, so the parent feeds the chunk's idle projections too (the
    success's, which matches no first step and no other rule)."""
    lines = simulated.read_bytes().splitlines(keepends=True)
    steps = tmp_path / "steps.log"
    steps.write_bytes(b"".join(sequence_in_steps(lines[:3000], every=3, plain_success=True)))
    summary = assert_same(tmp_path, [steps], chunk_bytes=64 << 10)
    fired = {d["rule"]: d["count"] for d in summary["detections"]}
    assert fired.get("untrusted-then-trusted-access") == 1


def test_small_chunks_through_the_pipe_from_gzip(tmp_path: Path, simulated: Path) -> None:
    """A .gz is read by the parent and its chunks sent to the jobs."""
    lines = simulated.read_bytes().splitlines(keepends=True)
    packed = tmp_path / "steps.log.gz"
    packed.write_bytes(gzip.compress(b"".join(sequence_in_steps(lines[:6000], every=500))))
    summary = assert_same(tmp_path, [packed], chunk_bytes=16 << 10)
    fired = {d["rule"] for d in summary["detections"]}
    assert "untrusted-then-trusted-access" in fired


def test_a_line_too_large_to_cut_after_is_read_as_a_stream(tmp_path: Path, simulated: Path) -> None:
    """A span ends at the first newline after its size; a line that goes on
    past the size and the event limit is handed to the parent's bounded
    stream reader, and counted too_large as with one process."""
    lines = simulated.read_bytes().splitlines(keepends=True)
    huge = b'{"kind":"Event","x":"' + b"y" * (300 << 10) + b'"}\n'
    mixed = tmp_path / "huge.log"
    mixed.write_bytes(b"".join([*lines[:200], huge, *lines[200:2000], huge[:-1]]))
    summary = assert_same(tmp_path, [mixed], "--events.max-bytes", "64KiB", chunk_bytes=16 << 10)
    assert summary["invalid"]["too_large"] == 2
    assert summary["events"] == 2000


def test_jobs_refuse_loki(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter.cli",
            "replay",
            "--jobs",
            "2",
            "--loki.url",
            "http://127.0.0.1:9/",
            str(CORPORA / "audit2rbac-demo" / "demo.log"),
        ],
        capture_output=True,
        cwd=ROOT,
    )
    assert out.returncode == 1
    assert b"--jobs 1" in out.stderr


def test_a_cut_gzip_exits_2_with_the_same_summary(tmp_path: Path) -> None:
    data = gzip.compress((CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log")
                         .read_bytes())  # fmt: skip
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(data[: len(data) // 2])
    outs = []
    for jobs in (1, 2):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter.cli",
                "replay",
                "--jobs",
                str(jobs),
                "--output",
                "json",
                str(cut),
            ],
            capture_output=True,
            cwd=ROOT,
        )
        assert out.returncode == 2, out.stderr.decode()[-500:]
        assert b"read up to there" in out.stderr
        outs.append(json.loads(out.stdout))
    assert outs[0] == outs[1]
    assert outs[0]["invalid"]["truncated_gzip"] == 1


def test_jobs_that_die_end_the_replay_with_an_error(simulated: Path) -> None:
    """The jobs killed before the input comes (stdin, so the test decides
    when): the parent says so and exits, rather than waiting for ever."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "replay", "--jobs", "2", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 120
    jobs: list[int] = []
    while len(jobs) < 2 and time.monotonic() < deadline and proc.poll() is None:
        jobs = [int(p) for p in children.read_text().split()]
        time.sleep(0.05)  # polling a child that is starting up, with a deadline
    assert len(jobs) == 2, "the replay did not start its two jobs"
    for pid in jobs:
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(simulated.read_bytes(), timeout=300)
    assert proc.returncode == 1
    assert b"replay: a replay job ended (exit codes" in err
    assert b"Traceback" not in err, "a clear message, not a traceback"
    assert out == b"", "no partial summary"


def test_a_plain_file_is_cut_in_large_spans_then_small_ones(tmp_path: Path) -> None:
    """Spans are whole lines that cover the file once, in order: the
    ``share``-th part of what is left (at most ``largest``) while that is
    more than ``size``, then about ``size`` bytes each to the end."""
    from exporter.sources.replay_chunks import Span, file_chunks

    lines = [b"x" * (20 + (i * 37) % 90) for i in range(4000)]
    path = tmp_path / "input.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    data = path.read_bytes()
    with open(path, "rb", buffering=0) as raw:
        assert isinstance(raw, io.FileIO)
        spans = list(file_chunks(raw, 0, 2000, 1000, largest=8000, share=4))
    assert all(isinstance(s, Span) for s in spans)
    got = [s.read() for s in spans if isinstance(s, Span)]
    assert b"".join(x or b"" for x in got) == data
    assert all(x is not None and x.endswith(b"\n") for x in got)
    sizes = [len(x or b"") for x in got]
    longest = max(map(len, lines)) + 1
    # every span reaches its target (the first newline after it)
    left = len(data)
    for n in sizes[:-1]:
        target = min(max(left // 4, 2000), 8000)
        assert target <= n < target + longest
        left -= n
    assert sizes[0] >= 8000 and max(sizes[-4:]) < 2000 + longest
    # without ``largest``, every span is about ``size``
    with open(path, "rb", buffering=0) as raw:
        assert isinstance(raw, io.FileIO)
        even = [s.length for s in file_chunks(raw, 0, 2000, 1000) if isinstance(s, Span)]
    assert sum(even) == len(data) and max(even) < 2000 + longest


def test_idle_projections_are_packed_and_unpacked_as_they_were() -> None:
    """A job packs the idle projections with marshal, and with pickle when a
    group value is of a type marshal cannot write; either way the parent
    unpacks the same records, types and all."""
    import ipaddress

    from exporter.detect.engine import LATER_STEPS_UNKNOWN
    from exporter.sources.replay_jobs import pack, unpack

    later = LATER_STEPS_UNKNOWN
    records = [
        (0, ("a1", "ResponseComplete", 200, 2.25, ((3, ("alice", "ns"), None, later),), False)),
        (7, ("a2", "ResponseStarted", 0, 1.0, ((3, ("bob", None, 4, True), None, later),), False)),
    ]  # fmt: skip
    data = pack(records)  # type: ignore[arg-type]
    assert data[:1] == b"m"
    back = unpack(data)
    assert back == records
    assert [type(v) for v in back[1][1][4][0][1]] == [str, type(None), int, bool]
    address = ipaddress.ip_address("10.0.0.1")
    odd = [(0, ("a3", "ResponseComplete", 200, 1.5, ((3, (address,), None, later),), False))]
    data = pack(odd)  # type: ignore[arg-type]
    assert data[:1] == b"p"
    assert unpack(data) == odd


def test_odd_lines_in_small_windows_keep_their_line_numbers(
    tmp_path: Path, simulated: Path
) -> None:
    """A job splits its chunk into lines a window at a time: blank lines,
    refusals, CRLF lines and an EventList on one line, in windows of about
    two lines, count as with one process, and each refusal is logged with
    its line in the file."""
    lines = simulated.read_bytes().splitlines(keepends=True)[:3000]
    items = [json.loads(line) for line in lines[:2]]
    odd = [
        b"\n",
        b"   \n",
        b"not json\n",
        b'{"broken\n',
        json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}).encode()
        + b"\n",
    ]
    out = []
    for i, line in enumerate(lines):
        out.append(line.replace(b"\n", b"\r\n") if i % 7 == 3 else line)
        if i % 97 == 5:
            out.append(odd[i % len(odd)])
    mixed = tmp_path / "odd.log"
    mixed.write_bytes(b"".join(out))
    summary = assert_same(tmp_path, [mixed], chunk_bytes=64 << 10, window_bytes=2 << 10)
    assert summary["invalid"]["invalid_json"] >= 10

    def where(log: str) -> list[str]:
        return sorted(part for part in log.split() if part.startswith("where="))

    assert where(STDERR[2]) == where(STDERR[1])
    assert len(where(STDERR[1])) >= 2


@pytest.mark.parametrize("window", [20 << 10, 1 << 20])
def test_a_job_drops_the_retries_within_its_chunk(
    monkeypatch: pytest.MonkeyPatch, simulated: Path, window: int
) -> None:
    """Retries next to their first copy (in one window of lines) and far
    after it (in a later window, or in the same one when the window holds
    the chunk) are the job's duplicates, found by the job itself, so that
    the parent agrees and need not run the chunk again."""
    from exporter.event import Decoder
    from exporter.sources import replay_jobs

    monkeypatch.setattr(replay_jobs, "WINDOW_BYTES", window)
    monkeypatch.setattr(
        replay_jobs, "_JOB", replay_jobs._Job(Decoder(), [], None, {"sources": ["replay"]})
    )
    lines = simulated.read_bytes().splitlines(keepends=True)[:1000]
    out, expected = [], []
    for i, line in enumerate(lines):
        out.append(line)
        if i % 10 == 4:
            out.append(line)  # the same group
            expected.append(len(out) - 1)
    for line in lines[100:150]:  # groups later
        out.append(line)
        expected.append(len(out) - 1)
    partial = replay_jobs.run_chunk(b"".join(out))
    assert partial is not None
    assert partial.taken_as_duplicates == expected
    assert partial.events == 1000
    assert partial.lines == len(out) == len(partial.keys)


def test_without_metrics_out_the_jobs_count_no_requests(
    monkeypatch: pytest.MonkeyPatch, simulated: Path
) -> None:
    """A replay that shows no metrics (no --metrics-out, no Loki) does not
    count the request families, with one process or in its jobs: a job
    then sends an empty tally, and still counts the events stamped in the
    future."""
    from exporter.event import Decoder
    from exporter.sources import replay_jobs

    lines = simulated.read_bytes().splitlines(keepends=True)[:500]
    future = lines[7].replace(
        b'"stageTimestamp":"', b'"stageTimestamp":"2999-01-01T00:00:00.000000Z","x":"'
    )
    assert future != lines[7]
    chunk = b"".join([*lines, future])
    for observe in (True, False):
        job = replay_jobs._Job(Decoder(), [], None, {"sources": ["replay"]}, observe)
        monkeypatch.setattr(replay_jobs, "_JOB", job)
        partial = replay_jobs.run_chunk(chunk)
        assert partial is not None
        assert partial.events == 501
        assert partial.future == 1
        if observe:
            assert partial.tally.requests and partial.lag is not None
        else:
            assert not partial.tally.requests and not partial.tally.users
            assert partial.lag is None


def test_jobs_without_metrics_give_the_summary_of_one(tmp_path: Path, simulated: Path) -> None:
    outs = []
    for jobs in (1, 2):
        out = subprocess.run(
            [sys.executable, "-c", SMALL_CHUNKS, str(256 << 10), str(64 << 10), "replay",
             "--jobs", str(jobs), "--config.file", str(DEMO_CONFIG), "--output", "json",
             str(simulated)],
            capture_output=True, cwd=ROOT, timeout=600, check=True,
        )  # fmt: skip
        outs.append(json.loads(out.stdout))
    assert outs[1] == outs[0]
    assert outs[0]["events"] == 30000 and outs[0]["detections"]


@pytest.mark.parametrize("window", [300, 1 << 20])
def test_a_job_asks_each_window_once_and_keeps_each_lines_verdict(
    monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """As the reader's blocks: invalid UTF-8 in a value the fast path skips,
    among ASCII lines, is refused; CRLF lines are read without the CR."""
    from exporter.event import Decoder
    from exporter.sources import replay_jobs
    from tests.test_replay_lines import event

    monkeypatch.setattr(replay_jobs, "WINDOW_BYTES", window)
    monkeypatch.setattr(
        replay_jobs, "_JOB", replay_jobs._Job(Decoder(), [], None, {"sources": ["replay"]})
    )
    lines = [event(1), event(2, value=b"\xff\xfe"), event(3) + b"\r", event(4, name="zoë".encode())]
    partial = replay_jobs.run_chunk(b"\n".join(lines) + b"\n")
    assert partial is not None
    assert partial.events == 3
    # what one process's reader says of the same lines
    from exporter.sources.replay import read_batches

    data = b"\n".join(lines) + b"\n"
    alone = list(read_batches(io.BytesIO(data), Decoder()))
    expected = [(s.reason, s.line) for b in alone for s in b.refusals.samples]
    assert [(s.reason, s.line) for s in partial.refusals.samples] == expected
    assert [line for _, line in expected] == [2]


@pytest.mark.parametrize("pure", [False, True], ids=["C", "Python"])
def test_the_parents_window_deduplicates_a_batch_as_the_pipelines_deduper(
    pure: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent's window of hashes (tables in C, or sets) gives each
    batch the verdicts the pipeline's Deduper gives the same keys: the
    first of each key is kept unless the window holds it, in either
    generation; the kept ones are remembered, and a generation ends at the
    same batch. Random batches with repeats, against the Deduper itself."""
    import random
    from array import array

    from exporter import accel
    from exporter.pipeline import Deduper
    from exporter.sources import replay_jobs

    if pure:
        for name in (
            "new_hash_table",
            "seen_before",
            "hashes_in",
            "table_len",
            "table_hashes",
            "table_reserve",
        ):
            monkeypatch.setattr(replay_jobs, name, getattr(accel, f"py_{name}"))
    rng = random.Random(7)
    for capacity in (0, 1, 50, 400):
        window, reference = replay_jobs.HashedDeduper(capacity), Deduper(capacity)
        pool = [rng.getrandbits(64) - (1 << 63) for _ in range(600)] + [0, -1]
        for _ in range(60):
            batch = [rng.choice(pool) for _ in range(rng.randint(0, 40))]
            # the pipeline's way: keys in the window or earlier in the batch
            kept: set[int] = set()
            want = []
            for i, h in enumerate(batch):
                if h in reference or h in kept:  # type: ignore[operator]
                    want.append(i)
                else:
                    kept.add(h)
            reference.update(kept)  # type: ignore[arg-type]
            assert window.take_batch(array("q", batch)) == want
            assert len(window) == len(reference)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"x")) | st.just(b"a\r"),
        max_size=30,
    ),
    st.booleans(),
    st.integers(1, 64),
    st.integers(0, 5),
    st.integers(0, 40),
)
def test_a_span_read_a_window_at_a_time_gives_the_windows_of_its_bytes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[bytes],
    trailing: bool,
    size: int,
    slack: int,
    skip: int,
) -> None:
    """A job reads a span of a file a window at a time: the same windows
    (offsets, line numbers, lines, ASCII and carriage-return flags) as the
    span's bytes cut at once, for lines longer than the window and than
    what it reads beyond it (WINDOW_SLACK, made tiny here), a span that
    starts inside the file and one without a last newline."""
    from exporter.sources import replay_jobs
    from exporter.sources.replay_chunks import Span

    monkeypatch.setattr(replay_jobs, "WINDOW_SLACK", slack)
    data = b"\n".join(lines) + (b"\n" if trailing else b"")
    path = tmp_path / "span.log"
    path.write_bytes(b"h" * skip + data)
    st_ = path.stat()
    span = Span(str(path), st_.st_dev, st_.st_ino, skip, len(data))
    fd = span.open()
    assert fd is not None
    try:
        got = list(replay_jobs._span_windows(fd, span, size))
    finally:
        os.close(fd)
    assert got == list(replay_jobs._windows(data, size))


def test_a_span_whose_file_changed_is_left_to_the_parent(tmp_path: Path) -> None:
    """A span of a file that is now shorter, or another file by its name:
    the job gives it back (the parent reads it, and says so)."""
    from exporter.sources import replay_jobs
    from exporter.sources.replay_chunks import Span

    path = tmp_path / "span.log"
    path.write_bytes(b"line\n" * 200_000)
    st_ = path.stat()
    span = Span(str(path), st_.st_dev, st_.st_ino, 0, st_.st_size)
    fd = span.open()
    assert fd is not None
    try:
        windows = replay_jobs._span_windows(fd, span, 1 << 16)
        next(windows)
        os.truncate(path, 100_000)
        with pytest.raises(replay_jobs._SpanChanged):
            list(windows)
    finally:
        os.close(fd)
    other = tmp_path / "other.log"
    other.write_bytes(b"line\n")
    os.replace(other, path)
    assert span.open() is None
    assert span.read() is None
