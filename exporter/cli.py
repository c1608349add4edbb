"""The ``kube-audit-exporter`` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import orjson
from prometheus_client import CollectorRegistry, write_to_textfile

from . import __version__, logs
from .config import OPTIONS, ConfigError, add_flags, load, require_source

# Modules that add a subcommand: each has ``register(subparsers)``, which adds
# its parser and sets ``func`` to a callable taking the parsed args and
# returning the exit code.
COMMAND_MODULES: tuple[str, ...] = ("exporter.detect.cli", "exporter.policy.cli")

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

    try:
        app = App(cfg)
        app.start()
    except (OSError, ValueError) as e:
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
    from .event import Decoder
    from .metrics import AuditMetrics
    from .pipeline import Pipeline
    from .report import Report, render_text
    from .sources.replay import Progress, open_input, read_batches

    logs.setup("logfmt", "warning" if not args.verbose else "info")
    registry = CollectorRegistry()
    metrics = AuditMetrics(
        registry, max_users=args.max_users, max_source_ips=args.max_source_ips, sources=["replay"]
    )
    report = Report()
    pipeline = Pipeline(metrics, processors=[report], dedupe_capacity=args.dedupe_capacity)
    decoder = Decoder(args.max_event_bytes)
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
                result = pipeline.process(batch, "replay", context=path)
                report.duplicates += result.duplicates
                for item in batch:
                    reason = getattr(item, "reason", None)
                    if reason is not None:
                        report.invalid[reason] += 1
                progress.update(counter.count if counter else 0, report.events)
        except (OSError, EOFError) as e:
            # a truncated .gz or an I/O error: keep what was read, say so
            print(f"{path}: read error: {e}", file=sys.stderr)
            status = 2
        finally:
            progress.update(counter.count if counter else 0, report.events, force=True)
            progress.close()
            if stream is not sys.stdin.buffer:
                stream.close()
    pipeline.close()
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

    defaults = {o.key: o.default for o in OPTIONS}
    replay = sub.add_parser(
        "replay",
        help="process audit logs as fast as possible and summarise them",
        description="Replay audit logs (JSON lines, a JSON document, .gz, or - for stdin) "
        "through the pipeline and print what an auditor asks: who did what, "
        "auth failures, sensitive operations, slowest requests.",
    )
    replay.add_argument("files", nargs="+", metavar="FILE")
    replay.add_argument("--output", choices=("text", "json"), default="text")
    replay.add_argument("--metrics-out", metavar="FILE", help="write the metrics exposition")
    replay.add_argument("--top", type=int, default=10, help="rows per table (default 10)")
    replay.add_argument(
        "--max-event-bytes", type=int, default=defaults["events.max_bytes"], metavar="N"
    )
    replay.add_argument(
        "--dedupe-capacity", type=int, default=defaults["events.dedupe_capacity"], metavar="N"
    )
    replay.add_argument("--max-users", type=int, default=defaults["metrics.max_users"])
    replay.add_argument("--max-source-ips", type=int, default=defaults["metrics.max_source_ips"])
    replay.add_argument("-v", "--verbose", action="store_true", help="log invalid inputs")
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
