"""The EKS CloudWatch Logs pull against moto's server mode on loopback: real
boto3 calls over HTTP, streams that appear, throttling answered on the wire
by a proxy in front of moto, restarts from the checkpoint, and every event
counted once."""

from __future__ import annotations

import base64
import gzip
import http.client
import http.server
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from exporter.event import AuditEvent, Decoder
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from exporter.sources.eks_cloudwatch import CloudWatchSource, make_client
from tests.integration.conftest import Process, exporter_cmd, free_port, poll
from tests.test_eks import audit_samples, demo_lines

pytestmark = pytest.mark.timeout(180)

moto_server = pytest.importorskip("moto.server")
PREFIX = "kube-apiserver-audit-"
_groups = itertools.count()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The SDK's default chain finds these (never real credentials)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)


class Cluster:
    """One EKS cluster's log group in moto."""

    def __init__(self, url: str) -> None:
        self.client = make_client("eu-west-1", url)
        self.group = f"/aws/eks/demo-{next(_groups)}/cluster"
        self.client.create_log_group(logGroupName=self.group)
        self.base_ms = int(time.time() * 1000) - 600_000

    def put(self, stream: str, lines: list[str], at: int | None = None) -> None:
        """``lines`` into ``stream``, a millisecond apart from ``at`` (ms
        after base), or all at ``at`` exactly when ``same_ms``."""
        name = PREFIX + stream
        existing = self.client.describe_log_streams(
            logGroupName=self.group, logStreamNamePrefix=name
        )["logStreams"]
        if not any(s["logStreamName"] == name for s in existing):
            self.client.create_log_stream(logGroupName=self.group, logStreamName=name)
        start = self.base_ms + (at or 0)
        events = [{"timestamp": start + i, "message": m} for i, m in enumerate(lines)]
        self.client.put_log_events(logGroupName=self.group, logStreamName=name, logEvents=events)

    def put_same_ms(self, stream: str, lines: list[str], at: int) -> None:
        events = [{"timestamp": self.base_ms + at, "message": m} for m in lines]
        self.client.put_log_events(
            logGroupName=self.group, logStreamName=PREFIX + stream, logEvents=events
        )


class Reader:
    """A source with its own registry and pipeline, as one exporter process."""

    def __init__(self, cluster: Cluster, url: str, **kwargs: Any) -> None:
        self.registry = CollectorRegistry()
        metrics = AuditMetrics(self.registry, sources=["eks"])
        self.taken: list[AuditEvent] = []
        self.full = False
        reader = self

        class Sink:
            keeps_marks = False

            def admit(self, events: Any) -> bool:
                return not reader.full

            def submit(self, events: Any, mark: bytes | None = None) -> bool:
                reader.taken.extend(events)
                return True

            def close(self, timeout: float = 10.0) -> bool:
                return True

        kwargs.setdefault("client", make_client("eu-west-1", url, attempts=1))
        self.source = CloudWatchSource(
            log_group=cluster.group,
            pipeline=Pipeline(metrics, sinks=[Sink()]),
            decoder=Decoder(),
            metrics=metrics,
            backoff_min=0.01,
            backoff_max=0.05,
            poll_interval=0.01,
            **kwargs,
        )

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    @property
    def events(self) -> float:
        return self.value("kube_audit_events_total", source="eks")


def test_streams_that_appear_are_followed_and_every_event_counted_once(
    moto_url: str,
) -> None:
    cluster = Cluster(moto_url)
    lines = demo_lines()
    cluster.put("a1", lines[:200])
    reader = Reader(cluster, moto_url, start_at=_rfc3339(cluster.base_ms - 1000))
    assert reader.source.poll_once()
    assert reader.events == 200
    cluster.put("b2", lines[200:500], at=300)
    cluster.put("a1", lines[500:], at=400)
    assert reader.source.poll_once()
    assert reader.source.poll_once()  # nothing new: nothing counted again
    assert reader.events == 757
    assert reader.value("kube_audit_events_duplicate_total", source="eks") == 0
    assert len(reader.taken) == 757
    native = CollectorRegistry()
    Pipeline(AuditMetrics(native, sources=["logfile"])).process(
        Decoder().decode_document("\n".join(lines).encode()), "logfile"
    )
    assert audit_samples(reader.registry) == audit_samples(native)


def test_a_refused_page_is_read_again_and_counted_once(moto_url: str) -> None:
    cluster = Cluster(moto_url)
    cluster.put("a1", demo_lines()[:50])
    reader = Reader(cluster, moto_url, start_at=_rfc3339(cluster.base_ms - 1000))
    reader.full = True
    reader.source.poll_once()
    assert reader.events == 0
    reader.full = False
    reader.source.poll_once()
    assert reader.events == 50
    assert len(reader.taken) == 50


def test_restart_from_the_checkpoint_drops_what_was_taken_at_the_same_millisecond(
    moto_url: str, tmp_path: Path
) -> None:
    cluster = Cluster(moto_url)
    lines = demo_lines()
    ckpt = str(tmp_path / "cloudwatch.json")
    cluster.put("a1", lines[:100])
    cluster.put_same_ms("a1", lines[100:110], at=100)
    first = Reader(cluster, moto_url, checkpoint_file=ckpt, start_at=_rfc3339(cluster.base_ms))
    assert first.source.poll_once()
    assert first.events == 110
    saved = json.loads(Path(ckpt).read_text())
    stream = saved["streams"][PREFIX + "a1"]
    assert stream["time_ms"] == cluster.base_ms + 100
    assert len(stream["seen"]) == 10
    # while it was down: more events at that same millisecond, and later ones
    cluster.put_same_ms("a1", lines[110:115], at=100)
    cluster.put("a1", lines[115:300], at=200)
    cluster.put("b2", lines[300:320], at=250)
    second = Reader(cluster, moto_url, checkpoint_file=ckpt)  # start_at: checkpoint
    assert second.source.poll_once()
    assert second.events == 210
    taken = {(e.audit_id, e.stage) for e in first.taken}
    assert taken.isdisjoint((e.audit_id, e.stage) for e in second.taken)
    assert len(taken) + len(second.taken) == 320


def test_start_at_now_skips_older_events(moto_url: str, tmp_path: Path) -> None:
    cluster = Cluster(moto_url)
    lines = demo_lines()
    cluster.put("a1", lines[:30])
    reader = Reader(cluster, moto_url, start_at="now")
    assert reader.source.poll_once()
    assert reader.events == 0
    cluster.put("a1", lines[30:40], at=1_200_000)  # ten minutes after now
    assert reader.source.poll_once()
    assert reader.events == 10


class ThrottlingProxy:
    """Forwards to moto, but answers the first ``throttle`` calls of
    ``operation`` as CloudWatch does when over its quota."""

    def __init__(self, upstream: str, operation: str, throttle: int) -> None:
        self.remaining = throttle
        self.answered = 0
        host, port = upstream.removeprefix("http://").split(":")
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                target = self.headers.get("X-Amz-Target", "")
                with lock:
                    throttle = target.endswith("." + operation) and proxy.remaining > 0
                    if throttle:
                        proxy.remaining -= 1
                        proxy.answered += 1
                if throttle:
                    reply = json.dumps(
                        {"__type": "ThrottlingException", "message": "Rate exceeded"}
                    ).encode()
                    self.send_response(400)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("x-amzn-RequestId", "throttled")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_throttled_calls_back_off_and_lose_nothing(moto_url: str, tmp_path: Path) -> None:
    cluster = Cluster(moto_url)
    lines = demo_lines()
    cluster.put("a1", lines[:120])
    cluster.put("b2", lines[120:240], at=50)
    proxy = ThrottlingProxy(moto_url, "GetLogEvents", throttle=3)
    try:
        reader = Reader(
            cluster,
            moto_url,
            client=make_client("eu-west-1", proxy.url, attempts=1),
            checkpoint_file=str(tmp_path / "cw.json"),
            start_at=_rfc3339(cluster.base_ms - 1000),
        )
        assert not reader.source.poll_once()
        assert reader.source.failures == 1
        waits = [reader.source.backoff() for _ in range(1)]
        assert 0.005 <= waits[0] <= 0.01
        reader.source.start()
        deadline = time.monotonic() + 60
        while reader.events < 240 and time.monotonic() < deadline:
            time.sleep(0.05)
        reader.source.stop()
        assert proxy.answered == 3
        assert reader.events == 240
        assert len(reader.taken) == 240
        assert (
            reader.value(
                "kube_audit_eks_cloudwatch_errors_total",
                operation="GetLogEvents",
                kind="throttled",
            )
            == 3
        )
        assert reader.source.failures == 0
    finally:
        proxy.close()


def test_botocore_retries_throttling_itself_first(moto_url: str) -> None:
    """With the SDK's standard retry mode (the default, 3 attempts), two
    throttled answers in a row never reach the source."""
    cluster = Cluster(moto_url)
    cluster.put("a1", demo_lines()[:10])
    proxy = ThrottlingProxy(moto_url, "GetLogEvents", throttle=2)
    try:
        reader = Reader(
            cluster,
            moto_url,
            client=make_client("eu-west-1", proxy.url),
            start_at=_rfc3339(cluster.base_ms - 1000),
        )
        assert reader.source.poll_once()
        assert proxy.answered == 2
        assert reader.events == 10
    finally:
        proxy.close()


def _rfc3339(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def test_run_pulls_cloudwatch_and_takes_firehose_deliveries(
    moto_url: str, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    """The README's EKS section, as a process: the pull and the push at once."""
    cluster = Cluster(moto_url)
    lines = demo_lines()
    cluster.put("0f3c9a", lines[:300])
    key_file = tmp_path / "firehose-key"
    key_file.write_text("s3cr3t-firehose-key\n")
    web, push = free_port(), free_port()
    flags = [
        "--web.listen-address", f"127.0.0.1:{web}",
        "--eks.log-group", cluster.group,
        "--eks.region", "eu-west-1",
        "--eks.endpoint-url", moto_url,
        "--eks.start-at", _rfc3339(cluster.base_ms - 1000),
        "--eks.poll-interval", "100ms",
        "--eks.checkpoint-file", str(tmp_path / "cloudwatch.json"),
        "--eks.firehose-listen-address", f"127.0.0.1:{push}",
        "--eks.firehose-insecure",
        "--eks.firehose-access-key-file", str(key_file),
    ]  # fmt: skip
    proc = spawn(exporter_cmd("run", *flags), "exporter", env=dict(os.environ))

    def events() -> float:
        text = requests.get(f"http://127.0.0.1:{web}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith('kube_audit_events_total{source="eks"}'):
                return float(line.split()[-1])
        return 0.0

    poll(lambda: events() == 300, what="the pulled events", on_timeout=proc.output)
    payload = gzip.compress(
        json.dumps(
            {
                "messageType": "DATA_MESSAGE",
                "owner": "123456789012",
                "logGroup": cluster.group,
                "logStream": PREFIX + "0f3c9a",
                "subscriptionFilters": ["kube-audit-exporter"],
                "logEvents": [
                    {"id": str(i), "timestamp": cluster.base_ms + i, "message": m}
                    for i, m in enumerate(lines[300:])
                ],
            }
        ).encode()
    )
    reply = requests.post(
        f"http://127.0.0.1:{push}/firehose",
        json={
            "requestId": "b7a1e2c4-1111-2222-3333-444455556666",
            "timestamp": cluster.base_ms,
            "records": [{"data": base64.b64encode(payload).decode()}],
        },
        headers={
            "X-Amz-Firehose-Protocol-Version": "1.0",
            "X-Amz-Firehose-Request-Id": "b7a1e2c4-1111-2222-3333-444455556666",
            "X-Amz-Firehose-Access-Key": "s3cr3t-firehose-key",
        },
        timeout=30,
    )
    assert reply.status_code == 200
    assert reply.json()["requestId"] == "b7a1e2c4-1111-2222-3333-444455556666"
    poll(lambda: events() == 757, what="the pushed events", on_timeout=proc.output)
    assert proc.alive()
    assert proc.stop() == 0
    assert "s3cr3t-firehose-key" not in proc.output()


def test_kill9_then_restart_from_the_checkpoint_counts_each_event_once(
    moto_url: str, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    """The README's pull configuration, killed without warning and started
    again: what was counted is not read again, what came meanwhile is."""
    cluster = Cluster(moto_url)
    lines = demo_lines()
    cluster.put("0f3c9a", lines[:300])
    config = tmp_path / "eks.yaml"
    config.write_text(
        "cluster: demo\n"
        "eks:\n"
        f"  log_group: {cluster.group}\n"
        "  region: eu-west-1\n"
        f"  checkpoint_file: {tmp_path / 'cloudwatch.json'}\n"
        "  start_at: checkpoint\n"
        f"  endpoint_url: {moto_url}\n"
        "  poll_interval: 100ms\n"
    )

    def run(*flags: str) -> tuple[Process, Callable[[], float]]:
        web = free_port()
        proc = spawn(
            exporter_cmd("run", "--config.file", str(config),
                         "--web.listen-address", f"127.0.0.1:{web}", *flags),
            f"exporter-{web}",
            env=dict(os.environ),
        )  # fmt: skip

        def events() -> float:
            text = requests.get(f"http://127.0.0.1:{web}/metrics", timeout=5).text
            for line in text.splitlines():
                if line.startswith('kube_audit_events_total{source="eks"}'):
                    return float(line.split()[-1])
            return -1.0

        return proc, events

    first, events = run("--eks.start-at", _rfc3339(cluster.base_ms - 1000))
    poll(lambda: events() == 300, what="the first 300 events", on_timeout=first.output)
    first.proc.kill()  # kill -9: no shutdown, no last checkpoint write
    first.proc.wait()
    # meanwhile: more at the last millisecond taken, and later ones
    cluster.put_same_ms("0f3c9a", lines[300:310], at=299)
    cluster.put("0f3c9a", lines[310:400], at=1000)
    second, events = run()
    poll(lambda: events() == 100, what="the 100 new events", on_timeout=second.output)
    cluster.put("0f3c9a", lines[400:401], at=5000)  # a marker: read after all the rest
    poll(lambda: events() >= 101, what="the marker", on_timeout=second.output)
    assert events() == 101


def test_with_a_sink_that_keeps_marks_the_later_of_mark_and_file_is_resumed(
    moto_url: str, tmp_path: Path
) -> None:
    """With Loki on, the spool keeps each batch's mark in the batch's own
    write; the cursor file is still written after it, and after a restart
    the later of the two (by seq) is where reading resumes."""
    cluster = Cluster(moto_url)
    lines = demo_lines()
    cluster.put("a1", lines[:50])
    ckpt = tmp_path / "cw.json"
    marks: list[bytes] = []

    class MarkingSink:
        keeps_marks = True

        def admit(self, events: Any) -> bool:
            return True

        def submit(self, events: Any, mark: bytes | None = None) -> bool:
            assert mark is not None
            marks.append(mark)
            return True

        def close(self, timeout: float = 10.0) -> bool:
            return True

    registry = CollectorRegistry()
    metrics = AuditMetrics(registry, sources=["eks"])
    source = CloudWatchSource(
        client=make_client("eu-west-1", moto_url, attempts=1),
        log_group=cluster.group,
        pipeline=Pipeline(metrics, sinks=[MarkingSink()]),
        decoder=Decoder(),
        metrics=metrics,
        checkpoint_file=str(ckpt),
        start_at=_rfc3339(cluster.base_ms - 1000),
    )
    assert source.poll_once()
    assert len(marks) == 1
    assert json.loads(ckpt.read_bytes()) == json.loads(marks[-1])
    stale = ckpt.read_bytes()
    cluster.put("a1", lines[50:80], at=100)
    assert source.poll_once()
    assert len(marks) == 2
    ckpt.write_bytes(stale)  # as if the last file write was lost
    cluster.put("a1", lines[80:90], at=200)
    again = Reader(cluster, moto_url, checkpoint_file=str(ckpt), resume_mark=marks[-1])
    assert again.source.poll_once()
    assert again.events == 10
    stale_copy = tmp_path / "stale.json"
    stale_copy.write_bytes(stale)
    other = Reader(cluster, moto_url, checkpoint_file=str(stale_copy), resume_mark=b"not ours")
    assert other.source.poll_once()
    assert other.events == 40  # from the stale file: the 30 after it, and the 10


class CountingClient:
    """A boto3 client whose GetLogEvents calls are counted, by stream."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.reads: list[str] = []

    def describe_log_streams(self, **kwargs: Any) -> Any:
        return self.client.describe_log_streams(**kwargs)

    def get_log_events(self, **kwargs: Any) -> Any:
        self.reads.append(kwargs["logStreamName"].removeprefix(PREFIX))
        return self.client.get_log_events(**kwargs)


def test_a_stream_quiet_for_two_hours_is_left_until_it_has_new_events(moto_url: str) -> None:
    cluster = Cluster(moto_url)
    lines = demo_lines()
    cluster.put("old", lines[:10])
    cluster.put("new", lines[10:20], at=10)
    now = [time.time()]
    client = CountingClient(make_client("eu-west-1", moto_url, attempts=1))
    reader = Reader(
        cluster,
        moto_url,
        client=client,
        start_at=_rfc3339(cluster.base_ms - 1000),
        clock=lambda: now[0],
    )
    assert reader.source.poll_once()
    assert reader.events == 20
    assert set(client.reads) == {"old", "new"}
    client.reads.clear()
    assert reader.source.poll_once()
    assert set(client.reads) == {"old", "new"}  # active: read at every poll
    now[0] += 3 * 3600  # three hours later, nothing new anywhere
    client.reads.clear()
    assert reader.source.poll_once()
    assert client.reads == []  # both quiet for longer than STREAM_IDLE_MS
    cluster.put("new", lines[20:30], at=100)  # its lastIngestionTime moves on
    assert reader.source.poll_once()
    assert client.reads and set(client.reads) == {"new"}
    assert reader.events == 30
