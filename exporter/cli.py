"""The ``kube-audit-exporter`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

import orjson

from . import logs
from .cliparser import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Parser,
    Terminated,
    VersionAction,
)
from .completion import SHELLS, script
from .config import (
    SOURCE_SECTIONS,
    Config,
    ConfigError,
    add_flags,
    audit_metrics,
    load,
    require_source,
)
from .duration import parse_duration
from .event import Batch, InvalidEvent

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .alertmanager import Alertmanager
    from .loki.backfill import AgeCheck
    from .loki.sink import LokiSink
    from .pipeline import Pipeline

# Modules that add a subcommand, with the subcommand each adds: each has
# ``register(subparsers)``, which adds its parser and sets ``func`` to a
# callable taking the parsed args and returning the exit code.
COMMAND_MODULES: dict[str, str] = {
    "exporter.detect.cli": "rules",
    "exporter.policy.cli": "policy",
    "exporter.simulate": "simulate",
    "exporter.report.cli": "report",
}

# The subcommands defined here: when one of them is asked for, the command
# modules above (the simulator imports an HTTP client) are not imported;
# when one of theirs is, only its own (all of them for help, completion
# and anything unknown).
OWN_COMMANDS = frozenset({"run", "check-config", "replay"})

log = logging.getLogger("exporter")


def _config_errors(e: ConfigError) -> int:
    print("configuration is invalid:", file=sys.stderr)
    for problem in e.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    from .workers import READY_PREFIX, WORKER_ENV, warn_orphaned_spools, worker_config

    try:
        cfg = load(args)
        require_source(cfg)
    except ConfigError as e:
        return _config_errors(e)
    logs.setup(cfg.log.format, cfg.log.level)
    worker = os.environ.get(WORKER_ENV)
    if args.workers > 1 and worker is None:
        return _supervise(cfg, args)
    if worker is not None:
        # a worker of run --workers: its own /metrics on loopback for the
        # supervisor, its own spool, Loki stream and first_seen file
        cfg = worker_config(cfg, int(worker), args.workers)
    else:
        warn_orphaned_spools(cfg.spool.dir, 1)
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
    if worker is not None:
        print(f"{READY_PREFIX}{app.web.address[1]}", flush=True)
    stop.wait()
    app.stop()
    return 0


def _supervise(cfg: Config, args: argparse.Namespace) -> int:
    """run --workers N (N > 1): the supervisor (see exporter/workers.py)."""
    from .workers import Supervisor, check

    problems = check(cfg)
    if problems:
        print("configuration is invalid:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    try:
        supervisor = Supervisor(cfg, args.argv, args.workers)
        supervisor.start()
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
    supervisor.stop()
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


# Exit statuses of ``replay`` (besides 0, 1 for configuration, 130/141/143).
# replay sends to Loki only: the OTLP output is for run.
REPLAY_SKIPS = (*SOURCE_SECTIONS, "otlp")
EXIT_INPUT = 2  # an input could not be read (missing file, read error)
EXIT_LOKI = 3  # Loki did not take every entry (stall timeout, refused credentials)
EXIT_INVALID = 4  # --strict: some inputs were not valid audit events


def cmd_replay(args: argparse.Namespace) -> int:
    from .assembly import build_pipeline
    from .detect import RuleError
    from .loki.tempspool import TempSpool
    from .runtime import defer_gc

    defer_gc()

    try:
        cfg = load(args, skip=REPLAY_SKIPS)
    except ConfigError as e:
        return _config_errors(e)
    if args.jobs != 1 and (cfg.loki.url or cfg.alertmanager.url):
        print(
            "--jobs: sending to Loki or Alertmanager needs every event in one process; "
            "use --jobs 1 with --loki.url and --alertmanager.url",
            file=sys.stderr,
        )
        return 1
    logs.setup(cfg.log.format, "info" if args.verbose else "warning")
    if not cfg.loki.writer:
        # Its own Loki streams: a backfill older than the live data by more
        # than max_chunk_age/2 would be "too far behind" in theirs.
        writer = f"replay-{socket.gethostname()}-{os.getpid()}"
        cfg = dataclasses.replace(cfg, loki=dataclasses.replace(cfg.loki, writer=writer))
    # prometheus_client (about a sixth of the start-up) only for a file to write
    registry: CollectorRegistry | None = None
    if args.metrics_out:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
    metrics = audit_metrics(cfg, registry, ["replay"])
    temp: TempSpool | None = None
    if cfg.loki.url and not cfg.spool.dir:
        temp = TempSpool()
    # the Loki client (requests) is imported only when there is a Loki to send to
    setup_errors: tuple[type[Exception], ...] = (RuleError, ValueError, OSError)
    if cfg.loki.url:
        from .loki.client import LokiSetupError

        setup_errors = (LokiSetupError, *setup_errors)
    try:
        try:
            pipeline, notifier = build_pipeline(
                cfg, metrics, spool_dir=temp.spool_dir if temp else None
            )
        except setup_errors as e:
            print(f"cannot start: {e}", file=sys.stderr)
            return 1
        return _replay(args, cfg, pipeline, notifier, registry, temp is not None)
    finally:
        if temp is not None:
            temp.remove()


def _replay(
    args: argparse.Namespace,
    cfg: Config,
    pipeline: Pipeline,
    notifier: Alertmanager | None,
    registry: CollectorRegistry | None,
    temporary_spool: bool,
) -> int:
    from .detect import Detector
    from .event import Decoder
    from .report import Report, render_text
    from .runtime import BATCH_GC_YOUNG_THRESHOLD, tune_gc
    from .sources.replay import Progress, ReplayJobFailed, open_input, read_batches

    if notifier is not None:
        notifier.start()
    report = Report()
    for processor in pipeline.processors:
        if isinstance(processor, Detector):
            report.rule_severity = {r.id: r.severity for r in processor.rules}
    pipeline.processors.append(report)
    loki: LokiSink | None = None
    age: AgeCheck | None = None
    if pipeline.sinks:
        # only then: the Loki sink imports its HTTP client (requests)
        from .loki.backfill import AgeCheck
        from .loki.sink import LokiSink

        for sink in pipeline.sinks:
            if isinstance(sink, LokiSink):
                loki = sink
        age = AgeCheck() if loki is not None else None
    if not args.metrics_out and loki is None:
        # Nothing shows the events' own metric families (requests, latency,
        # lag): no --metrics-out, and no Loki stream labels share their
        # label bounds. Counting them costs about 2 us an event.
        pipeline.observe_batches = False
    stall = args.stall_timeout or None
    decoder = Decoder(cfg.events.max_bytes)
    tune_gc(BATCH_GC_YOUNG_THRESHOLD)
    status = 0
    finished = False
    job_failed = ""
    jobs = args.jobs
    parallel: ParallelReplay | None = None
    if jobs != 1:
        # multiprocessing and the jobs' machinery only when asked for
        from .sources.replay_jobs import ParallelReplay, Prepended, cpu_count

        jobs = jobs or cpu_count()
    if jobs > 1:
        parallel = ParallelReplay(
            jobs,
            pipeline,
            report,
            decoder,
            {"sources": ["replay"], "max_future_skew": cfg.events.max_future_skew},
        )
    try:
        for path in args.files:
            try:
                stream, counter, total = open_input(path)
            except OSError as e:
                print(f"{path}: {e.strerror}", file=sys.stderr)
                status = EXIT_INPUT
                continue
            report.files += 1
            progress = Progress(total)
            try:
                source: IO[bytes] = stream
                batches: Iterable[Batch] = ()
                if parallel is not None:
                    head, lines = parallel.starts_lines(stream)
                    if lines:
                        parallel.run(head, stream, path, _progress(progress, counter, report))
                    else:
                        source = Prepended(head, stream)  # type: ignore[assignment]
                        batches = read_batches(source, decoder)
                else:
                    batches = read_batches(source, decoder)
                for batch in batches:
                    if age is not None:
                        age([x for x in batch if not isinstance(x, InvalidEvent)])
                    result = pipeline.process(batch, "replay", context=path)
                    while result.refused and loki is not None:
                        # the spool is full: wait for Loki to take some, never drop
                        if not loki.wait_for_room(3600.0, stall=stall):
                            raise _LokiStalled("Loki made no room in the spool for an hour")
                        result = pipeline.process(batch, "replay", context=path)
                    report.duplicates += result.duplicates
                    for reason, count in batch.refusals:
                        report.invalid[reason] += count
                    progress.update(counter.count if counter else 0, report.events)
                problem = getattr(stream, "problem", None)
                if problem:
                    # a cut .gz: read up to the cut, counted as truncated_gzip
                    print(f"{path}: {problem}; read up to there", file=sys.stderr)
                    status = EXIT_INPUT
            except (OSError, EOFError) as e:
                if isinstance(e, BrokenPipeError):
                    raise
                # a truncated .gz or an I/O error: keep what was read, say so
                print(f"{path}: read error: {e}", file=sys.stderr)
                status = EXIT_INPUT
            finally:
                progress.update(counter.count if counter else 0, report.events, force=True)
                progress.close()
                if stream is not sys.stdin.buffer:
                    stream.close()
        if loki is not None and not loki.drain(stall=stall):
            raise _LokiStalled("the Loki sender stopped (see the log above)")
        finished = True
    except _LokiStalled as e:
        assert loki is not None
        status = EXIT_LOKI
        print(_undelivered(loki, stall, temporary_spool, str(e)), file=sys.stderr)
    except ReplayJobFailed as e:
        job_failed = str(e)
    finally:
        if loki is not None and not finished:
            loki.abandon()  # Ctrl-C, SIGTERM or a stall: no waiting for Loki
        if parallel is not None:
            parallel.close()
    pipeline.close()
    if notifier is not None:
        notifier.close(30.0)
    if job_failed:
        print(f"replay: {job_failed}; no result (run again, or with --jobs 1)", file=sys.stderr)
        return 1
    summary = report.to_dict(top=args.top)
    if loki is not None:
        summary["loki"] = _loki_summary(loki)
    if args.output == "json":
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_text(summary, top=args.top))
        if loki is not None:
            lk = summary["loki"]
            sys.stdout.write(
                f"\nLoki: {lk['sent']} entries sent, {sum(lk['rejected'].values())} refused, "
                f"{lk['undelivered']} not delivered\n"
            )
    if registry is not None:  # --metrics-out
        from prometheus_client import write_to_textfile

        write_to_textfile(args.metrics_out, registry)
    if args.strict and report.invalid and not status:
        status = EXIT_INVALID
    return status


def _progress(progress: Any, counter: Any, report: Any) -> Callable[[], None]:
    """Progress.update as a callback (with --jobs)."""

    def update() -> None:
        progress.update(counter.count if counter else 0, report.events)

    return update


class _LokiStalled(Exception):
    """Loki took nothing for the stall timeout, or refused the credentials."""


def _undelivered(loki: LokiSink, stall: float | None, temporary_spool: bool, other: str) -> str:
    n = loki.undelivered()
    if loki.stalled and stall is not None:
        why = f"Loki accepted nothing for {stall:g}s"
        if loki.last_failure:
            why += f" (last failure: {loki.last_failure})"
    elif loki.stopped_reason is not None:
        why = f"Loki refused the exporter ({loki.stopped_reason})"
    else:
        why = other
    where = (
        "the temporary spool is removed"
        if temporary_spool
        else f"they stay in the spool {loki.settings.spool_dir} for the next run"
    )
    return f"{why}: {n} entries were not delivered; {where}"


def _loki_summary(loki: LokiSink) -> dict[str, Any]:
    with loki.stats.lock:
        sent = int(loki.stats.entries_sent)
        rejected = {k: int(v) for k, v in loki.stats.entries_rejected.items() if v}
    return {"sent": sent, "rejected": rejected, "undelivered": loki.undelivered()}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; given ``command`` (the subcommand the arguments
    name), without the other modules' subcommands when it is one of ours."""
    parser = Parser(
        prog="kube-audit-exporter",
        description="Kubernetes audit events to Prometheus metrics, Loki and alerts.",
    )
    parser.add_argument(
        "--version", action=VersionAction, help="print the version, rule set and policy digests"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        usage="%(prog)s [options]",
        help="receive and tail audit events, serve metrics",
        description="Run the exporter. Every option has a flag, an environment variable "
        "and a YAML key; flags win over the environment, which wins over the file.",
    )
    add_flags(run)
    run.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="webhook processes on the same port (SO_REUSEPORT), one /metrics summing them; "
        "share their dedupe and detection state with state.url (default 1)",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check-config",
        usage="%(prog)s [--show] [options]",
        help="validate the configuration and exit",
        description="Validate the configuration (flags, environment and --config.file) as "
        "`run` would, report every problem with its place, and exit 1 if there is one.",
    )
    add_flags(check)
    check.add_argument("--show", action="store_true", help="print the effective configuration")
    check.set_defaults(func=cmd_check_config)

    replay = sub.add_parser(
        "replay",
        usage="%(prog)s [options] FILE [FILE ...]",
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
    replay.add_argument(
        "--jobs",
        type=_jobs,
        default=1,
        metavar="N",
        help="processes that decode and count JSON-lines inputs in parallel, with the output "
        "of one; 0 for one per CPU (default 1; Loki and Alertmanager need 1)",
    )
    replay.add_argument("-v", "--verbose", action="store_true", help="log invalid inputs")
    replay.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {EXIT_INVALID} when an input held invalid events (they are counted either way)",
    )
    replay.add_argument(
        "--loki.stall-timeout",
        dest="stall_timeout",
        type=_duration,
        default=300.0,
        metavar="DURATION",
        help="with --loki.url: give up when Loki has accepted nothing for this long, print "
        f"the summary with what was not delivered and exit {EXIT_LOKI}; 0 waits forever "
        "(default 5m)",
    )
    # The options of the pipeline (events.*, metrics.*, loki.*, spool.*,
    # detection); not those of run's sources and endpoints.
    add_flags(replay, exclude=REPLAY_SKIPS)
    replay.set_defaults(func=cmd_replay)

    owner = [m for m, name in COMMAND_MODULES.items() if name == command]
    for module in () if command in OWN_COMMANDS else owner or COMMAND_MODULES:
        importlib.import_module(module).register(sub)

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Print the completion script for SHELL, generated from this command "
        "line. bash: `source <(kube-audit-exporter completion bash)`; zsh (after compinit): "
        "`source <(kube-audit-exporter completion zsh)`; fish: "
        "`kube-audit-exporter completion fish | source`.",
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    completion.set_defaults(func=lambda args: cmd_completion(args, parser))
    return parser


def cmd_completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sys.stdout.write(script(args.shell, parser))
    return 0


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes (1 or more)")
    return n


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes (0 or more)")
    return n


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the subcommand, and turn the ways a command-line process
    ends into exit codes without a traceback: a closed stdout (``| head``)
    141, Ctrl-C 130, SIGTERM 143."""
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((w for w in words if not w.startswith("-")), None))
    args = parser.parse_args(argv)
    # what run --workers gives its workers
    args.argv = list(sys.argv[1:] if argv is None else argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        code: int = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away: stop quietly, like a shell pipeline
        _detach_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{parser.prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _detach_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does
    not complain about the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
