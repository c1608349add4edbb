"""The exporter as users run it: one process with the webhook (mutual TLS),
the log file tailer and the Loki path, against a Loki receiver that decodes
what Loki decodes. Nothing is lost, nothing is counted twice, and a full
spool makes the webhook answer 503 until Loki takes the backlog."""

from __future__ import annotations

import http.server
import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import main
from tests.conftest import CORPORA
from tests.integration.conftest import client_tls, exporter_cmd, free_port, poll, webhook_flags
from tests.loki_receiver import LokiReceiver
from tests.tlsutil import make_pki

DEMO = CORPORA / "audit2rbac-demo" / "demo.log"
PERFSPEC = CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventlists(path: Path, size: int = 400) -> list[dict[str, Any]]:
    items = []
    for line in path.read_bytes().splitlines():
        obj = json.loads(line)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        items.append(obj)
    return [
        {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items[i : i + size]}
        for i in range(0, len(items), size)
    ]


def test_webhook_and_logfile_to_loki_through_a_full_spool(
    tmp_path: Path, spawn: Any, loki: LokiReceiver
) -> None:
    pki = make_pki(tmp_path / "pki")
    web, hook = free_port(), free_port()
    audit_log = tmp_path / "audit.log"
    checkpoint = tmp_path / "checkpoint.json"
    perfspec = PERFSPEC.read_bytes().splitlines(keepends=True)
    audit_log.write_bytes(b"".join(perfspec[:5000]))
    loki.default = 503  # Loki is down at first
    exporter = spawn(
        exporter_cmd(
            "run",
            "--cluster",
            "e2e",
            "--web.listen-address",
            f"127.0.0.1:{web}",
            *webhook_flags(pki, hook),
            "--logfile.path",
            str(audit_log),
            "--logfile.checkpoint-file",
            str(checkpoint),
            "--logfile.poll-interval",
            "50ms",
            "--loki.url",
            loki.url,
            "--loki.batch-wait",
            "50ms",
            "--loki.backoff-min",
            "50ms",
            "--loki.backoff-max",
            "200ms",
            "--spool.dir",
            str(tmp_path / "spool"),
            "--spool.max-bytes",
            "512KiB",
            "--spool.fsync",
            "never",
        ),
        "exporter",
    )
    poll(lambda: requests.get(f"http://127.0.0.1:{web}/readyz", timeout=2).ok, what="ready")
    tls: dict[str, Any] = {**client_tls(pki), "timeout": 30}
    url = f"https://127.0.0.1:{hook}/audit"

    # While Loki is down the spool fills up; the webhook then answers 503 and
    # the API server would retry. We retry the same way.
    answers = []
    pending = eventlists(DEMO, size=50)
    for body in pending:
        r = requests.post(url, json=body, **tls)
        answers.append(r.status_code)
        if r.status_code == 503:
            assert r.headers.get("Retry-After")
            break
    assert answers[-1] == 503, answers
    first_refused = len(answers) - 1

    loki.default = None  # Loki is back: 204 from now on
    for body in pending[first_refused:]:
        poll(lambda b=body: requests.post(url, json=b, **tls).status_code == 200, what="200")
    # The tailer goes on through a rotation while all this happens.
    audit_log.rename(tmp_path / "audit-2023-01-27T18-30-00.000.log")
    audit_log.write_bytes(b"".join(perfspec[5000:]))

    total = len(perfspec) + len(DEMO.read_bytes().splitlines())
    poll(
        lambda: value(scrape(web), "kube_audit_events_total", source="logfile") == len(perfspec),
        timeout=60,
        what="the tailer to finish",
        on_timeout=lambda: f"{scrape(web)}\n{exporter.output()[-3000:]}",
    )
    poll(lambda: loki.count() >= total, timeout=90, what=f"Loki to hold {total} entries")

    samples = scrape(web)
    assert value(samples, "kube_audit_events_total", source="webhook") == len(
        DEMO.read_bytes().splitlines()
    )
    assert value(samples, "kube_audit_events_duplicate_total", source="webhook") == 0
    assert value(samples, "kube_audit_webhook_requests_total", code="503") >= 1
    assert value(samples, "kube_audit_spool_full_total") >= 1
    assert value(samples, "kube_audit_logfile_rotations_total", kind="rename") == 1
    # Every event reached Loki; a resent batch is the same (stream, time, line).
    assert len(loki.keys()) == total
    ids = loki.audit_ids()
    assert all(n in (1, 2) for n in ids.values())  # RequestReceived + ResponseComplete
    sample = loki.received[0]
    assert sample.labels["cluster"] == "e2e" and sample.labels["service_name"] == "kube-audit"

    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(20) == 0
    saved = json.loads(checkpoint.read_text())
    assert saved["offset"] == len(b"".join(perfspec[5000:]))


def test_replay_backfills_loki_with_original_timestamps(
    tmp_path: Path, loki: LokiReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["replay", "--output", "json", "--loki.url", loki.url, "--loki.batch-wait", "50ms",
         "--cluster", "backfill", str(DEMO)]
    )  # fmt: skip
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == 757
    assert loki.count() == 757
    # v1beta1 events carry only second-precision timestamps: the entry time
    # is the event's own, not the push time.
    first = json.loads(DEMO.read_bytes().splitlines()[0])
    entry = next(r for r in loki.received if r.metadata.get("audit_id") == first["auditID"])
    assert entry.ts_ns == 1505159705 * 10**9  # 2017-09-11T19:55:05Z
    assert entry.line == DEMO.read_bytes().splitlines()[0]


def test_run_notifies_alertmanager_of_a_detection_from_the_log_file(
    tmp_path: Path, spawn: Any
) -> None:
    """`run` with the log file source and an Alertmanager URL: a human deleting
    a Secret (a real event) reaches the Alertmanager API with who/what/where."""
    received: list[Any] = []

    class AlertsAPI(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AlertsAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        audit_log = tmp_path / "audit.log"
        event = (CORPORA / "falco-k8s-audit-trace-files" / "delete_secret.json").read_bytes()
        audit_log.write_bytes(event.strip() + b"\n")
        web = free_port()
        am_url = f"http://operator:s3cret@127.0.0.1:{server.server_address[1]}"
        exporter = spawn(
            exporter_cmd(
                "run",
                "--cluster",
                "e2e",
                "--web.listen-address",
                f"127.0.0.1:{web}",
                "--logfile.path",
                str(audit_log),
                "--logfile.start-at",
                "beginning",
                "--alertmanager.url",
                am_url,
            ),
            "exporter",
        )
        poll(lambda: received, timeout=30, what=f"an alert\n{exporter.output()}")
    finally:
        server.shutdown()
    path, alerts = received[0]
    assert path == "/api/v2/alerts"
    labels = {a["labels"]["rule"]: a for a in alerts}
    alert = labels["secret-deleted-by-human"]
    assert alert["labels"]["user"] == "minikube-user"
    assert alert["labels"]["cluster"] == "e2e"
    assert alert["labels"]["namespace"] == "default"
    assert "example-secret" in alert["annotations"]["description"]
    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(20) == 0
    assert "s3cret" not in exporter.output()  # the URL's password is not logged
