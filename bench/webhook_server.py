"""The webhook's HTTP server, old and new, side by side in one run.

    python bench/webhook_server.py                 # 60,000 events, 8 clients, 200 and 2,000 idle
    python bench/webhook_server.py --events 20000 --clients 4 --idle 200

For each server (``threaded``: the thread-per-connection server the exporter
used before, kept in bench/threaded_*.py as the naive baseline; ``async``:
exporter/sources/webhook.py on exporter/httpserver.py), in its own process
with the same bare pipeline (no redaction, no detection) and the same
mutual-TLS setup (the test PKI of tests/tlsutil.py):

- events/s: real audit events (``audit2rbac-demo/demo.log`` of the shared
  corpora, each copy with its own auditID) posted as EventLists of 400 items
  by ``--clients`` keep-alive client threads with a client certificate; from
  the first post to the last answer, the best of ``--rounds`` (the servers
  run at once and the rounds alternate between them), checked against the
  server's own count (later rounds resend the same events: duplicates); and
  events per CPU second of the server process over all its rounds, the
  steadier figure on a shared machine;
- wait: how long a client with a valid certificate waits for its answer while
  N sockets that never send a ClientHello are held open (each one the server
  closes is opened again), capped at ``--cap`` seconds;
- RSS with those sockets open, and the process's peak RSS (``wait4``).

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exporter.detect.noise import find_corpora  # noqa: E402
from tests.flood import Flood, tcp  # noqa: E402
from tests.tlsutil import PKI, make_pki  # noqa: E402

BATCH = 400
PATH = "/audit"


# --- the server process ----------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """One server on a free port: prints ``ready PORT``, serves until SIGTERM,
    prints the events it counted as JSON."""
    from prometheus_client import CollectorRegistry

    from exporter.event import Decoder
    from exporter.metrics import AuditMetrics
    from exporter.pipeline import Pipeline

    if args.serve == "threaded":
        from bench.threaded_webhook import WebhookServer as Threaded

        server_class: Any = Threaded
    else:
        from exporter.sources.webhook import WebhookServer

        server_class = functools.partial(WebhookServer, workers=args.workers)
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry, sources=["webhook"])
    server = server_class(
        listen_address="127.0.0.1:0",
        path=PATH,
        pipeline=Pipeline(metrics),
        decoder=Decoder(),
        metrics=metrics,
        tls_cert_file=args.cert,
        tls_key_file=args.key,
        client_ca_file=args.ca,
        insecure=False,
    )
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"ready {server.address[1]}", flush=True)
    stop.wait()
    server.shutdown(5)
    events = registry.get_sample_value("kube_audit_events_total", {"source": "webhook"}) or 0
    print(json.dumps({"events": int(events)}), flush=True)


# --- the client side -------------------------------------------------------------


def bodies(events: int) -> list[bytes]:
    """EventLists of BATCH real events, each copy with its own auditID."""
    items = []
    with open(find_corpora() / "audit2rbac-demo" / "demo.log", "rb") as f:
        for line in f:
            obj = json.loads(line)
            obj.pop("kind")
            obj.pop("apiVersion")
            items.append(obj)
    out = []
    head = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "metadata": {}}
    n = 0
    while n < events:
        batch = []
        for _ in range(min(BATCH, events - n)):
            item = dict(items[n % len(items)])
            item["auditID"] = f"{item['auditID']}-{n}"
            batch.append(item)
            n += 1
        out.append(json.dumps({**head, "items": batch}).encode())
    return out


def post_all(port: int, pki: PKI, batches: list[bytes], clients: int) -> float:
    """Seconds to post every batch on ``clients`` keep-alive connections."""
    shares = [batches[i::clients] for i in range(clients)]

    def client(share: list[bytes]) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=pki.client_context())
        try:
            for body in share:
                conn.request("POST", PATH, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"answered {resp.status}")
        finally:
            conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, shares))
    return time.perf_counter() - started


def valid_wait(port: int, pki: PKI, body: bytes, cap: float) -> float | None:
    """Seconds until a client with a certificate is answered; None past ``cap``."""
    result: list[float] = []

    def client() -> None:
        started = time.perf_counter()
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=cap, context=pki.client_context()
        )
        try:
            conn.request("POST", PATH, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                result.append(time.perf_counter() - started)
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    thread.join(cap)
    return result[0] if result else None


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(kind: str, pki: PKI, args: argparse.Namespace) -> tuple[subprocess.Popen[str], int]:
    cmd = [
        sys.executable, __file__, "--serve", kind,
        "--cert", str(pki.server.cert_file), "--key", str(pki.server.key_file),
        "--ca", str(pki.ca.cert_file), "--workers", str(args.workers),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"{kind} server did not start: {line!r}")
    return proc, int(line.split()[1])


def measure(
    kinds: list[str], pki: PKI, batches: list[bytes], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every server runs at once; the rounds of posts alternate between them,
    so that a busy machine weighs on each alike."""
    servers = [start(kind, pki, args) for kind in kinds]
    results: list[dict[str, Any]] = [
        {"server": kind, "events_per_s": 0.0, "cpu_s": 0.0} for kind in kinds
    ]
    for _ in range(args.rounds):
        for (proc, port), out in zip(servers, results, strict=True):
            cpu_before = cpu_seconds(proc.pid)
            rate = args.events / post_all(port, pki, batches, args.clients)
            out["cpu_s"] += cpu_seconds(proc.pid) - cpu_before
            out["events_per_s"] = max(out["events_per_s"], rate)
    for (proc, port), out in zip(servers, results, strict=True):
        out["events_per_cpu_s"] = args.events * args.rounds / out.pop("cpu_s")
        out["rss_mb_after_load"] = rss_mb(proc.pid)
        for count in args.idle:
            with Flood(tcp(("127.0.0.1", port)), count, replace=True):
                time.sleep(1.0)  # let the server take them (or not)
                out[f"wait_{count}_idle_s"] = valid_wait(port, pki, batches[0], args.cap)
                out[f"rss_mb_{count}_idle"] = rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        out["counted"] = json.loads(proc.stdout.readline() or "{}").get("events", -1)
        _, _, usage = os.wait4(proc.pid, 0)
        out["peak_rss_mb"] = usage.ru_maxrss / 1024
        out["posted"] = args.events
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--idle", type=lambda v: [int(x) for x in v.split(",") if x], default=[200, 2000]
    )
    parser.add_argument("--cap", type=float, default=40.0, help="longest wait measured (s)")
    parser.add_argument("--servers", default="threaded,async")
    parser.add_argument(
        "--rounds", type=int, default=5, help="posts of all events per server, alternating"
    )
    parser.add_argument("--workers", type=int, default=4, help="the async server's workers")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 16384), hard), hard))
    if args.serve:
        serve(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp) / "pki")
        batches = bodies(args.events)
        results = measure(args.servers.split(","), pki, batches, args)
    print(f"\n{args.events} events in EventLists of {BATCH}, {args.clients} clients, mutual TLS")
    columns = ["server", "events_per_s", "events_per_cpu_s", "peak_rss_mb", "rss_mb_after_load"]
    for count in args.idle:
        columns += [f"wait_{count}_idle_s", f"rss_mb_{count}_idle"]
    columns += ["posted", "counted"]
    print(" | ".join(columns))
    for r in results:
        cells = []
        for c in columns:
            v = r.get(c)
            if v is None and c.startswith("wait_"):
                cells.append(f"> {args.cap:.0f}")
            elif isinstance(v, float):
                cells.append(f"{v:,.1f}" if v >= 10 else f"{v:.3f}")
            else:
                cells.append(str(v))
        print(" | ".join(cells))
    if len(results) == 2:
        for column in ("events_per_s", "events_per_cpu_s"):
            ratio = results[1][column] / results[0][column]
            print(f"{column} {results[1]['server']} / {results[0]['server']}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
