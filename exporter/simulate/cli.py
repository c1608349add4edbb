"""``kube-audit-exporter simulate``."""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from .traffic import (
    DEFAULT_EVENTS,
    DEFAULT_NODES,
    DEFAULT_RATE,
    DEFAULT_START,
    Options,
    parse_start,
    simulate_timed_lines,
)
from .webhook import (
    BATCH_MAX_SIZE,
    BATCH_MAX_WAIT,
    INITIAL_BACKOFF,
    REQUEST_TIMEOUT,
    THROTTLE_BURST,
    THROTTLE_QPS,
    WebhookSender,
)


def register(subparsers: Any) -> None:
    """Add ``simulate`` to the command line."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="generate a realistic audit stream (JSON lines, or webhook EventLists)",
        description="Generate a deterministic, realistic audit.k8s.io/v1 stream of one API server: "
        "control plane, kubelets, controllers, service accounts, kubectl users with RBAC "
        "denials, 401 probes, watches, exec, and a few attacks. The same seed and options "
        "give the same bytes.",
    )
    p.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        metavar="N",
        help=f"events to produce, 0 for endless (default {DEFAULT_EVENTS})",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument(
        "--start",
        default=DEFAULT_START,
        metavar="TIME",
        help=f"event time of the first event: RFC 3339 or 'now' (default {DEFAULT_START})",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        metavar="EVENTS_PER_SECOND",
        help=f"mean events per second of event time (default {DEFAULT_RATE:g})",
    )
    p.add_argument(
        "--nodes", type=int, default=DEFAULT_NODES, help=f"worker nodes (default {DEFAULT_NODES})"
    )
    p.add_argument(
        "--omit-request-received",
        action="store_true",
        help="leave out the RequestReceived stage, as a policy's omitStages does",
    )
    p.add_argument("--no-attacks", action="store_true", help="leave out the attack scenarios")
    p.add_argument(
        "--speed",
        type=float,
        default=0.0,
        metavar="FACTOR",
        help="pace events by their event time, FACTOR times faster than real time "
        "(default 0: as fast as possible)",
    )
    out = p.add_argument_group("output: a file (default) or a webhook")
    out.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="FILE",
        help="JSON lines to FILE; '-' (the default) for stdout; a .gz FILE is gzipped with "
        "mtime 0, so its bytes are reproducible",
    )
    out.add_argument(
        "--webhook",
        metavar="URL",
        help="POST EventLists to URL as the API server's webhook backend does",
    )
    hook = p.add_argument_group("webhook (the API server's defaults)")
    hook.add_argument("--batch-max-size", type=int, default=BATCH_MAX_SIZE, metavar="N")
    hook.add_argument("--batch-max-wait", type=float, default=BATCH_MAX_WAIT, metavar="SECONDS")
    hook.add_argument(
        "--throttle-qps",
        type=float,
        default=THROTTLE_QPS,
        metavar="QPS",
        help="batches per second, 0 for no limit",
    )
    hook.add_argument("--throttle-burst", type=int, default=THROTTLE_BURST, metavar="N")
    hook.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="batches in flight (default 4)"
    )
    hook.add_argument(
        "--initial-backoff",
        type=float,
        default=INITIAL_BACKOFF,
        metavar="SECONDS",
        help="wait before the first retry, x1.5 before each next one (4 retries)",
    )
    hook.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT, metavar="SECONDS")
    hook.add_argument(
        "--ca-file", metavar="FILE", help="CA bundle that signed the receiver's certificate"
    )
    hook.add_argument("--cert-file", metavar="FILE", help="client certificate, for mutual TLS")
    hook.add_argument("--key-file", metavar="FILE", help="the client certificate's key")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import logs

    logs.setup("logfmt", "info")
    try:
        if args.speed < 0:
            raise ValueError("speed: must be >= 0")
        options = Options(
            events=args.events,
            seed=args.seed,
            start=parse_start(args.start),
            rate=args.rate,
            nodes=args.nodes,
            request_received=not args.omit_request_received,
            attacks=not args.no_attacks,
        )
        sender = None
        if args.webhook:
            sender = WebhookSender(
                args.webhook,
                batch_max_size=args.batch_max_size,
                batch_max_wait=args.batch_max_wait,
                throttle_qps=args.throttle_qps,
                throttle_burst=args.throttle_burst,
                concurrency=args.concurrency,
                initial_backoff=args.initial_backoff,
                timeout=args.timeout,
                ca_file=args.ca_file,
                cert_file=args.cert_file,
                key_file=args.key_file,
            )
    except ValueError as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 1
    items = paced(simulate_timed_lines(options), args.speed, time.monotonic)
    if sender is None:
        return write(args.output, items)
    began = time.monotonic()
    stats = sender.send(items)
    print(
        f"posted {stats.events} events in {stats.batches} batches ({stats.retries} retries, "
        f"{stats.dropped_events} events dropped) in {time.monotonic() - began:.1f}s",
        file=sys.stderr,
    )
    return 1 if stats.dropped_batches else 0


def paced(
    items: Iterator[tuple[float, bytes]], speed: float, clock: Callable[[], float]
) -> Iterator[tuple[float | None, bytes]]:
    """Each line with its due time on ``clock`` (None when not pacing)."""
    if speed <= 0:
        for _, line in items:
            yield None, line
        return
    origin: float | None = None
    wall = clock()
    for ts, line in items:
        if origin is None:
            origin = ts
        yield wall + (ts - origin) / speed, line


def write(path: str, items: Iterable[tuple[float | None, bytes]]) -> int:
    """JSON lines to ``path`` (``-``: stdout; ``.gz``: gzip with mtime 0), paced when due."""
    raw: IO[bytes]
    if path == "-":
        raw = sys.stdout.buffer
    else:
        try:
            raw = open(path, "wb")  # noqa: SIM115 - closed below
        except OSError as e:
            print(f"simulate: {path}: {e.strerror}", file=sys.stderr)
            return 1
    out: IO[bytes] = raw
    if path.endswith(".gz"):
        out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0)  # type: ignore[assignment]
    try:
        chunk: list[bytes] = []
        for due, line in items:
            if due is not None:
                wait = due - time.monotonic()
                if wait > 0:
                    out.writelines(chunk)
                    chunk.clear()
                    out.flush()
                    time.sleep(wait)
            chunk.append(line)
            if len(chunk) >= 4096:
                out.writelines(chunk)
                chunk.clear()
        out.writelines(chunk)
        out.flush()
    except BrokenPipeError:
        # The reader went away (| head): fine for a generator. Point stdout at
        # /dev/null so the interpreter's final flush does not complain.
        if raw is sys.stdout.buffer:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        try:
            if out is not raw:
                out.close()
            if raw is not sys.stdout.buffer:
                raw.close()
        except BrokenPipeError:
            pass
    return 0
