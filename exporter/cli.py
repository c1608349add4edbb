"""The ``kube-audit-exporter`` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from types import FrameType

import orjson
from prometheus_client import CollectorRegistry, write_to_textfile

from . import __version__, logs
from .config import ConfigError, add_flags, load, require_source
from .event import InvalidEvent

# Modules that add a subcommand: each has ``register(subparsers)``, which adds
# its parser and sets ``func`` to a callable taking the parsed args and
# returning the exit code.
COMMAND_MODULES: tuple[str, ...] = (
    "exporter.detect.cli",
    "exporter.policy.cli",
    "exporter.simulate",
)

log = logging.getLogger("exporter")


def _config_errors(e: ConfigError) -> int:
    print("configuration is invalid:", file=sys.stderr)
    for problem in e.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args)
        require_source(cfg)
    except ConfigError as e:
        return _config_errors(e)
    logs.setup(cfg.log.format, cfg.log.level)
    from .app import App
    from .detect import RuleError
    from .loki.client import LokiSetupError
    from .runtime import tune_gc

    try:
        app = App(cfg)
        app.start()
        tune_gc()
    except (OSError, ValueError, LokiSetupError, RuleError) as e:
        log.error("cannot start", extra={"error": str(e)})
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    app.stop()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load(args)
        require_source(cfg)
    except ConfigError as e:
        return _config_errors(e)
    if args.show:
        print(orjson.dumps(cfg.redacted(), option=orjson.OPT_INDENT_2).decode())
    else:
        print("configuration is valid")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .app import build_pipeline
    from .detect import Detector, RuleError
    from .event import Decoder
    from .loki.backfill import AgeCheck
    from .loki.client import LokiSetupError
    from .loki.sink import LokiSink
    from .metrics import AuditMetrics
    from .report import Report, render_text
    from .runtime import tune_gc
    from .sources.replay import Progress, open_input, read_batches

    try:
        cfg = load(args)
    except ConfigError as e:
        return _config_errors(e)
    logs.setup(cfg.log.format, "info" if args.verbose else "warning")
    registry = CollectorRegistry()
    metrics = AuditMetrics(
        registry,
        max_users=cfg.metrics.max_users,
        max_source_ips=cfg.metrics.max_source_ips,
        sources=["replay"],
    )
    spool_dir = None
    if cfg.loki.url and not cfg.spool.dir:
        spool_dir = tempfile.mkdtemp(prefix="kube-audit-replay-spool-")
    try:
        pipeline, notifier = build_pipeline(cfg, metrics, spool_dir=spool_dir)
    except (LokiSetupError, RuleError, ValueError, OSError) as e:
        print(f"cannot start: {e}", file=sys.stderr)
        return 1
    if notifier is not None:
        notifier.start()
    report = Report()
    for processor in pipeline.processors:
        if isinstance(processor, Detector):
            report.rule_severity = {r.id: r.severity for r in processor.rules}
    pipeline.processors.append(report)
    loki: LokiSink | None = None
    for sink in pipeline.sinks:
        if isinstance(sink, LokiSink):
            loki = sink
    age = AgeCheck() if loki is not None else None
    decoder = Decoder(cfg.events.max_bytes)
    tune_gc()
    status = 0
    for path in args.files:
        try:
            stream, counter, total = open_input(path)
        except OSError as e:
            print(f"{path}: {e.strerror}", file=sys.stderr)
            status = 2
            continue
        report.files += 1
        progress = Progress(total)
        try:
            for batch in read_batches(stream, decoder):
                if age is not None:
                    age([x for x in batch if not isinstance(x, InvalidEvent)])
                result = pipeline.process(batch, "replay", context=path)
                while result.refused and loki is not None:
                    # the spool is full: wait for Loki to take some, never drop
                    if not loki.wait_for_room(3600.0):
                        print("Loki made no room in the spool for an hour", file=sys.stderr)
                        return 3
                    result = pipeline.process(batch, "replay", context=path)
                report.duplicates += result.duplicates
                for reason, count in batch.refusals:
                    report.invalid[reason] += count
                progress.update(counter.count if counter else 0, report.events)
            problem = getattr(stream, "problem", None)
            if problem:
                # a cut .gz: read up to the cut, counted as truncated_gzip
                print(f"{path}: {problem}; read up to there", file=sys.stderr)
                status = 2
        except (OSError, EOFError) as e:
            # a truncated .gz or an I/O error: keep what was read, say so
            print(f"{path}: read error: {e}", file=sys.stderr)
            status = 2
        finally:
            progress.update(counter.count if counter else 0, report.events, force=True)
            progress.close()
            if stream is not sys.stdin.buffer:
                stream.close()
    if loki is not None:
        if not loki.drain():
            print(
                f"Loki did not take every entry ({loki.stopped_reason or 'still retrying'}); "
                f"they stay in the spool {loki.settings.spool_dir}",
                file=sys.stderr,
            )
            status = status or 3
        elif spool_dir is not None:
            pipeline.close()
            shutil.rmtree(spool_dir, ignore_errors=True)
    pipeline.close()
    if notifier is not None:
        notifier.close(30.0)
    summary = report.to_dict(top=args.top)
    if args.output == "json":
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_text(summary, top=args.top))
    if args.metrics_out:
        write_to_textfile(args.metrics_out, registry)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kube-audit-exporter",
        description="Kubernetes audit events to Prometheus metrics, Loki and alerts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="receive and tail audit events, serve metrics",
        description="Run the exporter. Every option has a flag, an environment variable "
        "and a YAML key; flags win over the environment, which wins over the file.",
    )
    add_flags(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate the configuration and exit")
    add_flags(check)
    check.add_argument("--show", action="store_true", help="print the effective configuration")
    check.set_defaults(func=cmd_check_config)

    replay = sub.add_parser(
        "replay",
        help="process audit logs as fast as possible and summarise them",
        description="Replay audit logs (JSON lines, a JSON document, .gz, or - for stdin) "
        "through the pipeline and print what an auditor asks: who did what, "
        "auth failures, sensitive operations, slowest requests. With --loki.url "
        "the events are pushed to Loki with their original timestamps.",
    )
    replay.add_argument("files", nargs="+", metavar="FILE")
    replay.add_argument("--output", choices=("text", "json"), default="text")
    replay.add_argument("--metrics-out", metavar="FILE", help="write the metrics exposition")
    replay.add_argument("--top", type=int, default=10, help="rows per table (default 10)")
    replay.add_argument("-v", "--verbose", action="store_true", help="log invalid inputs")
    # The same options as `run` (events.*, metrics.*, loki.*, spool.*, detection);
    # the sources' options are accepted and ignored.
    add_flags(replay)
    replay.set_defaults(func=cmd_replay)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
