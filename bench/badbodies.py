"""Peak memory and time for the worst bodies an attacker or a broken client
can send, at the webhook's default body limit (64 MiB):

    python bench/badbodies.py                  every body, every path, 64 MiB
    python bench/badbodies.py --size 8000000   quicker
    python bench/badbodies.py child PATH BODY FILE    one measurement (JSON on stdout)

Bodies: ``invalid-lines`` (``x`` lines: 32 million refusals), ``eventlist-ints``
(an EventList whose items are integers), ``array-ints`` (a JSON array of
integers), ``deep-wrappers`` (a valid event beside AKS-style wrappers nested
as deep as the body allows).

Paths, each in its own child process (peak RSS from ``wait4``, so it is that
process's own high-water mark, and "growth" is the peak less what the process
held once the body was in memory):

- ``webhook``: ``Decoder.decode_document`` + ``Pipeline.process`` on a fresh
  registry, what :class:`~exporter.sources.webhook.WebhookServer` runs on a
  body it has read;
- ``replay``: the real ``kube-audit-exporter replay --output json FILE``;
- ``naive``: ``json.loads`` of the same body, the baseline.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_SIZE = 64 << 20
BODIES = ("invalid-lines", "eventlist-ints", "array-ints", "deep-wrappers")
PATHS = ("webhook", "replay", "naive")

EVENT = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "Metadata",
    "auditID": "0d3b6a4e-7c1f-4f7e-9a55-2b8c1d9e0f10",
    "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/default/pods",
    "verb": "list",
    "user": {"username": "alice@example.com"},
    "sourceIPs": ["10.0.0.7"],
    "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
    "responseStatus": {"code": 200},
    "requestReceivedTimestamp": "2024-05-01T10:00:00.000000Z",
    "stageTimestamp": "2024-05-01T10:00:00.010000Z",
}


def make_body(kind: str, size: int) -> bytes:
    """A body of about ``size`` bytes (never more)."""
    good = json.dumps(EVENT, separators=(",", ":")).encode()
    if kind == "invalid-lines":
        return b"x\n" * (size // 2)
    if kind in ("eventlist-ints", "array-ints"):
        head = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":['
        if kind == "array-ints":
            head = b"["
        tail = b"]}" if kind == "eventlist-ints" else b"]"
        n = (size - len(head) - len(tail) + 1) // 2
        return head + b",".join([b"1"] * n) + tail
    if kind == "deep-wrappers":
        head = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + good + b","
        inner = json.dumps({**EVENT, "auditID": "deep"}, separators=(",", ":")).encode()
        opening, closing = b'{"properties":{"log":', b"}}"
        n = (size - len(head) - len(inner) - 2) // (len(opening) + len(closing))
        return head + opening * n + inner + closing * n + b"]}"
    raise ValueError(kind)


# --- the measured programs (children) ---------------------------------------------


def child(path: str, body_kind: str, file: str) -> dict[str, Any]:
    """One measurement: the body is read first, then timed and measured."""
    body = Path(file).read_bytes() if path != "replay" else b""
    # imported before the start is taken: growth is what the body costs
    from prometheus_client import CollectorRegistry

    from exporter.cli import main as cli
    from exporter.event import Decoder
    from exporter.metrics import AuditMetrics
    from exporter.pipeline import Pipeline

    start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = time.process_time()
    began = time.perf_counter()
    out: dict[str, Any] = {"path": path, "body": body_kind}
    if path == "webhook":
        pipeline = Pipeline(AuditMetrics(CollectorRegistry(), sources=["webhook"]))
        result = pipeline.process(Decoder().decode_document(body), "webhook", context="bench")
        out.update(accepted=result.accepted, invalid=result.invalid)
        out["outcome"] = f"accepted {result.accepted}, invalid {result.invalid}"
    elif path == "replay":
        text = io.StringIO()
        with redirect_stdout(text):
            status = cli(["replay", "--output", "json", file])
        report = json.loads(text.getvalue())
        out.update(accepted=report["events"], invalid=sum(report["invalid"].values()), rc=status)
        out["outcome"] = f"rc {status}, events {report['events']}, invalid {report['invalid']}"
    elif path == "naive":
        sys.setrecursionlimit(10_000)  # as far as a default thread stack lets it go
        try:
            doc = json.loads(body)
            out["outcome"] = f"parsed {type(doc).__name__}"
        except (ValueError, RecursionError) as e:
            out["outcome"] = f"{type(e).__name__}: {str(e)[:40]}"
    else:
        raise ValueError(path)
    out["seconds"] = time.perf_counter() - began
    out["cpu_seconds"] = time.process_time() - cpu0
    out["rss_start_mb"] = start_kib / 1024.0
    return out


# --- the parent ---------------------------------------------------------------------


def measure(path: str, body_kind: str, file: str) -> dict[str, Any]:
    """Run one child; its peak RSS from wait4."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "child", path, body_kind, file],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    data = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        return {"path": path, "body": body_kind, "outcome": f"child failed ({status})"}
    out: dict[str, Any] = json.loads(data)
    out["peak_mb"] = usage.ru_maxrss / 1024.0  # KiB on Linux
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    run = sub.add_parser("child")
    run.add_argument("path", choices=PATHS)
    run.add_argument("body", choices=BODIES)
    run.add_argument("file")
    make = sub.add_parser("make")
    make.add_argument("body", choices=BODIES)
    make.add_argument("size", type=int)
    make.add_argument("file")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="body bytes")
    parser.add_argument("--bodies", default=",".join(BODIES))
    parser.add_argument("--paths", default=",".join(PATHS))
    args = parser.parse_args(argv)
    if args.cmd == "child":
        print(json.dumps(child(args.path, args.body, args.file)))
        return 0
    if args.cmd == "make":
        Path(args.file).write_bytes(make_body(args.body, args.size))
        return 0
    print(
        f"{'body':<15} {'path':<8} {'body MB':>8} {'peak MB':>8} {'growth MB':>9} "
        f"{'x body':>7} {'seconds':>8} {'cpu s':>6}  outcome"
    )
    with tempfile.TemporaryDirectory(prefix="badbodies-") as tmp:
        for kind in args.bodies.split(","):
            file = os.path.join(tmp, f"{kind}.json")
            # made by a child: a child's peak RSS starts from its parent's
            # at fork, so the parent stays small
            subprocess.run(
                [sys.executable, __file__, "make", kind, str(args.size), file], check=True
            )
            mb = os.path.getsize(file) / 2**20
            for path in args.paths.split(","):
                r = measure(path, kind, file)
                if "peak_mb" not in r:
                    print(
                        f"{kind:<15} {path:<8} {mb:8.1f} {'':>8} {'':>9} {'':>7} {'':>8} {'':>6}  "
                        f"{r['outcome']}"
                    )
                    continue
                growth = r["peak_mb"] - r["rss_start_mb"]
                cpu = r["cpu_seconds"]
                print(
                    f"{kind:<15} {path:<8} {mb:8.1f} {r['peak_mb']:8.0f} {growth:9.0f} "
                    f"{growth / mb:7.1f} {r['seconds']:8.1f} {cpu:6.1f}  {r['outcome']}",
                    flush=True,
                )
            os.unlink(file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
