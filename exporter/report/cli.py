"""``kube-audit-exporter report FILE... --output report.html [--pdf report.pdf]``.

Reads what ``replay`` reads (JSON lines, a JSON document, ``.gz``, ``-``)
with the same reader and the same pipeline (redaction, the configured rules
and detection settings), without Loki or Alertmanager, and writes the
auditor's report. Exit statuses: 0; 1 for the configuration or the rules;
2 when an input could not be read whole (the report covers what was read and
says so) or the PDF could not be printed (the HTML is written either way).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
from typing import IO, Any, cast

from prometheus_client import CollectorRegistry

from .. import logs
from ..config import SOURCE_SECTIONS, ConfigError, add_flags, audit_metrics, load
from ..duration import parse_duration
from ..event import AuditEvent, InvalidEvent, parse_time

EXIT_INPUT = 2  # an input unreadable, or the PDF not printed

# Sections of the configuration that do not apply: the report sends nothing.
EXCLUDED = (*SOURCE_SECTIONS, "loki", "spool")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        usage="%(prog)s FILE [FILE ...] --output report.html [--pdf report.pdf] [options]",
        help="write the auditor's report (one self-contained HTML file, and a PDF)",
        description="Read audit logs as `replay` does, through the same pipeline and rules, "
        "and write one self-contained HTML report (no script, nothing fetched from "
        "elsewhere, printable): scope and evidence, who did what, sensitive operations, "
        "detections in context, authentication failures, critical workloads, the audit "
        "policy judged from the evidence, performance. --pdf prints it with headless "
        "Chromium.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--output", required=True, metavar="FILE", help="the HTML report to write")
    p.add_argument("--pdf", metavar="FILE", help="also print the report to this PDF")
    p.add_argument(
        "--from",
        dest="since",
        type=_time,
        metavar="TIME",
        help="leave out events before this time (RFC 3339, e.g. 2024-05-01T08:00:00Z)",
    )
    p.add_argument(
        "--to",
        dest="until",
        type=_time,
        metavar="TIME",
        help="leave out events at or after this time (RFC 3339)",
    )
    p.add_argument("--title", default="Kubernetes audit report", help="the report's title")
    p.add_argument(
        "--gap",
        type=_duration,
        default=300.0,
        metavar="DURATION",
        help="a silence longer than this is listed as a gap in the record (default 5m)",
    )
    p.add_argument(
        "--chromium",
        metavar="PATH",
        help="the Chromium used for --pdf (default: chromium, chromium-browser or "
        "google-chrome on the PATH)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log invalid inputs")
    add_flags(p, exclude=EXCLUDED)
    p.set_defaults(func=cmd_report)


def _time(text: str) -> float:
    try:
        return parse_time(text)
    except InvalidEvent as e:
        raise argparse.ArgumentTypeError(e.detail) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_report(args: argparse.Namespace) -> int:
    from ..assembly import build_pipeline
    from ..detect import Detector, RuleError
    from ..runtime import BATCH_GC_YOUNG_THRESHOLD, defer_gc, tune_gc
    from .collect import Collector
    from .html import Scope, render

    # few collections while the configuration and the rules are built
    defer_gc()

    try:
        cfg = load(args, skip=EXCLUDED)
    except ConfigError as e:
        print("configuration is invalid:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    # the report reads; it pushes nothing and notifies nobody
    cfg = dataclasses.replace(
        cfg,
        loki=dataclasses.replace(cfg.loki, url=""),
        alertmanager=dataclasses.replace(cfg.alertmanager, url=()),
    )
    logs.setup(cfg.log.format, "info" if args.verbose else "warning")
    registry = CollectorRegistry()
    metrics = audit_metrics(cfg, registry, ["replay"])
    try:
        pipeline, _ = build_pipeline(cfg, metrics)
    except (RuleError, ValueError, OSError) as e:
        print(f"cannot start: {e}", file=sys.stderr)
        return 1
    # The report exposes no metrics: the pipeline does not count the batches
    # into them (about a tenth of replay's time). The rest of the pipeline is
    # replay's: deduplication, redaction, the rules.
    pipeline.observe_batches = False
    detector = next((p for p in pipeline.processors if isinstance(p, Detector)), None)
    settings = detector.settings if detector is not None else None
    if settings is None:  # pragma: no cover - build_pipeline always adds one
        from ..config import detection_settings

        settings = detection_settings(cfg)
    collector = Collector(settings, detector, gap=args.gap)
    if detector is not None:
        detector.on_match = collector.on_match
    pipeline.processors.append(collector)
    scope = Scope(title=args.title, cluster=cfg.cluster, since=args.since, until=args.until)
    # replay's collections: its batches die whole before the next is read
    tune_gc(BATCH_GC_YOUNG_THRESHOLD)
    status = feed(args.files, pipeline, collector, scope, cfg.events.max_bytes)
    pipeline.close()
    page = render(collector, scope)
    try:
        _write(args.output, page)
    except OSError as e:
        print(f"{args.output}: cannot write the report: {e.strerror or e}", file=sys.stderr)
        return 1
    print(
        f"{args.output}: {collector.summary.events:,} events, "
        f"{sum(r.count for r in collector.detections.values()):,} detections",
        file=sys.stderr,
    )
    if args.pdf:
        from .pdf import PdfError, print_pdf

        try:
            print_pdf(args.output, args.pdf, chromium=args.chromium)
        except PdfError as e:
            print(f"{args.pdf}: {e}; the HTML report {args.output} was written", file=sys.stderr)
            return EXIT_INPUT
    return status


def feed(files: list[str], pipeline: Any, collector: Any, scope: Any, max_bytes: int) -> int:
    """Read each file into the pipeline as replay does; note each file's
    SHA-256 and what went wrong. Returns 0 or EXIT_INPUT."""
    from ..event import Decoder
    from ..sources.replay import open_input, read_batches
    from .digest import Hasher
    from .html import InputFile

    decoder = Decoder(max_bytes)
    summary = collector.summary
    since, until = scope.since, scope.until
    status = 0
    # the digests are computed beside the reading, on another core when
    # there is one: a plain file's from the blocks read (see digest.py)
    hasher = Hasher()
    done: list[tuple[str, str]] = []
    for path in files:
        try:
            stream, _, _ = open_input(path)
        except OSError as e:
            print(f"{path}: {e.strerror}", file=sys.stderr)
            done.append((path, f"not read: {e.strerror}"))
            status = EXIT_INPUT
            continue
        summary.files += 1
        problem = ""
        reading = hasher.reading(stream) if type(stream) is io.FileIO else None
        if reading is None:
            hasher.whole(path)
        source = cast(IO[bytes], reading) if reading is not None else stream
        try:
            for batch in read_batches(source, decoder):
                if since is not None or until is not None:
                    _period(batch, since, until, collector)
                result = pipeline.process(batch, "replay", context=path)
                summary.duplicates += result.duplicates
                for reason, count in batch.refusals:
                    summary.invalid[reason] += count
            cut = getattr(stream, "problem", None)
            if cut:
                problem = f"{cut}; read up to there"
        except (OSError, EOFError) as e:
            if isinstance(e, BrokenPipeError):
                raise
            problem = f"read error: {e}"
        finally:
            if reading is not None:
                hasher.done(path, reading)
                reading.close()
            elif stream is not sys.stdin.buffer:
                stream.close()
        if problem:
            print(f"{path}: {problem}", file=sys.stderr)
            status = EXIT_INPUT
        done.append((path, problem))
    digests = hasher.close()
    for path, problem in done:
        digest, size = digests.get(path, ("", None))
        if problem.startswith("not read"):
            digest, size = "", None
        scope.files.append(InputFile(path, digest, size, problem))
    return status


def _period(batch: list[AuditEvent], since: float | None, until: float | None, c: Any) -> None:
    """Drop the batch's events outside [since, until), counted."""
    lo = since if since is not None else float("-inf")
    hi = until if until is not None else float("inf")
    kept = [ev for ev in batch if lo <= ev.stage_ts < hi]
    if len(kept) != len(batch):
        c.outside_period += len(batch) - len(kept)
        batch[:] = kept


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
