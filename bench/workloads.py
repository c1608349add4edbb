"""The programs ``bench/run.py`` measures, each run as a child process so that
its peak RSS is its own:

    python bench/workloads.py library FILE         the exporter's decode + pipeline + metrics
    python bench/workloads.py naive FILE           json.loads + prometheus_client per event
    python bench/workloads.py webhook-server ...   WebhookServer with a bare pipeline
    python bench/workloads.py naive-server ...     http.server + json.loads + prometheus_client
    python bench/workloads.py client ...           posts pre-built EventLists, keep-alive

Each prints one JSON object on stdout when done.
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from exporter.event import classify_user

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCH_LINES = 1000
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# --- the exporter's library path -------------------------------------------------------


def library(path: str) -> dict[str, Any]:
    """exporter.event.Decoder.decode_line + exporter.pipeline.Pipeline with
    exporter.metrics.AuditMetrics on a fresh registry, batches of 1000 lines."""
    from prometheus_client import CollectorRegistry, generate_latest

    from exporter.event import AuditEvent, Decoder, InvalidEvent
    from exporter.metrics import AuditMetrics
    from exporter.pipeline import Pipeline

    registry = CollectorRegistry()
    pipeline = Pipeline(AuditMetrics(registry, sources=["replay"]))
    decode = Decoder().decode_line
    events = invalid = 0
    began = time.perf_counter()
    with open(path, "rb") as f:
        batch: list[AuditEvent | InvalidEvent] = []
        for line in f:
            try:
                batch.append(decode(line))
            except InvalidEvent as e:
                batch.append(e)
            if len(batch) == BATCH_LINES:
                result = pipeline.process(batch, "replay")
                events += result.accepted
                invalid += result.invalid
                batch = []
        if batch:
            result = pipeline.process(batch, "replay")
            events += result.accepted
            invalid += result.invalid
    seconds = time.perf_counter() - began
    exposition = generate_latest(registry)
    return {
        "events": events,
        "invalid": invalid,
        "seconds": seconds,
        "exposition_bytes": len(exposition),
    }


# --- the naive baseline ------------------------------------------------------------------


class NaiveMetrics:
    """What a first attempt looks like: prometheus_client children looked up
    with .labels() for every event, the same label sets as the exporter's
    main families."""

    def __init__(self, source: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.source = source
        self.events = Counter("kube_audit_events", "events", ["source"], registry=r)
        self.requests = Counter(
            "kube_audit_requests", "requests", ["verb", "resource", "code", "user_kind"], registry=r
        )
        self.duration = Histogram(
            "kube_audit_request_duration_seconds",
            "latency",
            ["verb", "resource"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "kube_audit_auth_failures",
            "failures",
            ["reason", "verb", "resource", "user_kind"],
            registry=r,
        )
        self.user_requests = Counter(
            "kube_audit_user_requests", "per user", ["user", "verb", "code_class"], registry=r
        )

    def observe(self, ev: dict[str, Any]) -> None:
        self.events.labels(self.source).inc()
        stage = ev.get("stage")
        code = (ev.get("responseStatus") or {}).get("code", 0)
        if not (
            stage == "ResponseComplete"
            or stage == "Panic"
            or (stage == "ResponseStarted" and code == 401)
        ):
            return
        ref = ev.get("objectRef") or {}
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        verb = ev.get("verb", "")
        username = (ev.get("user") or {}).get("username", "")
        kind = classify_user(username)
        self.requests.labels(verb, resource, str(code), kind).inc()
        if stage == "ResponseComplete" and verb != "watch":
            took = parse(ev["stageTimestamp"]) - parse(ev["requestReceivedTimestamp"])
            self.duration.labels(verb, resource).observe(max(0.0, took))
        if username:
            self.user_requests.labels(username, verb, f"{code // 100}xx").inc()
        if code in (401, 403):
            reason = "unauthenticated" if code == 401 else "forbidden"
            self.auth_failures.labels(reason, verb, resource, kind).inc()


def parse(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def naive(path: str) -> dict[str, Any]:
    from prometheus_client import generate_latest

    metrics = NaiveMetrics("replay")
    events = 0
    began = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            metrics.observe(json.loads(line))
            events += 1
    seconds = time.perf_counter() - began
    exposition = generate_latest(metrics.registry)
    return {"events": events, "invalid": 0, "seconds": seconds, "exposition_bytes": len(exposition)}


# --- webhook servers -------------------------------------------------------------------------


def _wait_for_term() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def webhook_server(args: argparse.Namespace) -> dict[str, Any]:
    """The exporter's WebhookServer with a bare pipeline (no redaction, no detection)."""
    from prometheus_client import CollectorRegistry

    from exporter.event import Decoder
    from exporter.metrics import AuditMetrics
    from exporter.pipeline import Pipeline
    from exporter.sources.webhook import WebhookServer

    registry = CollectorRegistry()
    metrics = AuditMetrics(registry, sources=["webhook"])
    server = WebhookServer(
        listen_address=f"127.0.0.1:{args.port}",
        path="/audit",
        pipeline=Pipeline(metrics),
        decoder=Decoder(),
        metrics=metrics,
        tls_cert_file=args.cert,
        tls_key_file=args.key,
        client_ca_file=args.ca,
        insecure=False,
    )
    server.start()
    print("ready", file=sys.stderr, flush=True)
    _wait_for_term()
    server.shutdown()
    events = registry.get_sample_value("kube_audit_events_total", {"source": "webhook"}) or 0
    return {"events": int(events)}


def naive_server(args: argparse.Namespace) -> dict[str, Any]:
    """http.server over TLS (client certificate required), json.loads, .labels().inc()."""
    metrics = NaiveMetrics("webhook")
    lock = threading.Lock()
    counted = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            items = json.loads(body)["items"]
            with lock:
                for item in items:
                    metrics.observe(item)
                counted[0] += len(items)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print("ready", file=sys.stderr, flush=True)
    _wait_for_term()
    server.shutdown()
    return {"events": counted[0]}


# --- the load generator ------------------------------------------------------------------------


def write_bodies(path: Path, bodies: Iterator[tuple[int, bytes]]) -> tuple[int, int]:
    """Length-prefixed (events, body) records; returns (bodies, events)."""
    count = events = 0
    with open(path, "wb") as f:
        for n, body in bodies:
            f.write(struct.pack("<II", n, len(body)))
            f.write(body)
            count += 1
            events += n
    return count, events


def read_bodies(path: str) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        while head := f.read(8):
            n, size = struct.unpack("<II", head)
            yield n, f.read(size)


def client(args: argparse.Namespace) -> dict[str, Any]:
    """Post the bodies on ``connections`` keep-alive connections, one thread each."""
    import requests

    source = read_bodies(args.bodies)
    lock = threading.Lock()
    totals = {"events": 0, "posts": 0, "errors": 0}
    first_error: list[str] = []

    def worker() -> None:
        session = requests.Session()
        session.headers["Content-Type"] = "application/json"
        while True:
            with lock:
                item = next(source, None)
            if item is None:
                break
            n, body = item
            try:
                response = session.post(
                    args.url, data=body, verify=args.ca, cert=(args.cert, args.key), timeout=60
                )
                ok = response.status_code == 200
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
            except requests.RequestException as e:
                ok, problem = False, str(e)
            with lock:
                totals["posts"] += 1
                if ok:
                    totals["events"] += n
                else:
                    totals["errors"] += 1
                    first_error[:] = first_error or [problem]
        session.close()

    threads = [threading.Thread(target=worker) for _ in range(args.connections)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    return {**totals, "seconds": seconds, "first_error": first_error[0] if first_error else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("library", "naive"):
        sub.add_parser(kind).add_argument("file")
    for kind in ("webhook-server", "naive-server"):
        p = sub.add_parser(kind)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--ca", required=True)
        p.add_argument("--cert", required=True)
        p.add_argument("--key", required=True)
    p = sub.add_parser("client")
    p.add_argument("--url", required=True)
    p.add_argument("--bodies", required=True)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if args.kind == "library":
        result = library(args.file)
    elif args.kind == "naive":
        result = naive(args.file)
    elif args.kind == "webhook-server":
        result = webhook_server(args)
    elif args.kind == "naive-server":
        result = naive_server(args)
    else:
        result = client(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
