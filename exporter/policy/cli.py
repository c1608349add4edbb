"""``kube-audit-exporter policy lint|simulate``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

import orjson

from ..event import AuditEvent, Decoder
from ..sources.replay import open_input, read_batches
from . import render
from .lint import EXIT_ERRORS, lint_file
from .model import Policy
from .simulate import Comparison, EventResult, Simulation

EXIT_OK = 0


def register(subparsers: Any) -> None:
    policy = subparsers.add_parser(
        "policy",
        help="lint an audit policy, or simulate it over recorded audit logs",
        description="Tools for kube-apiserver audit policies (audit.k8s.io/v1 Policy).",
    )
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")

    lint = sub.add_parser(
        "lint",
        help="report what kube-apiserver refuses and the mistakes it accepts",
        description="Errors first (kube-apiserver refuses the policy), then warnings with "
        "file:line (it loads it, but not as meant). Exit status: 0 clean, 1 warnings, "
        "2 errors.",
    )
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--output", choices=("text", "json"), default="text")
    lint.set_defaults(func=cmd_lint)

    simulate = sub.add_parser(
        "simulate",
        help="evaluate a policy over recorded audit events",
        description="For each recorded event: the level the policy gives it and the rule "
        "that decides; then the volume per rule, rules that never match and the noisiest "
        "(user, verb, resource) combinations with a suggested rule (None for reads; never None for "
        "writes or secrets, which the linter keeps audited). With --output json, "
        "one JSON object per event (auditID, stage, level, rule, omitStages) and a last "
        'object {"summary": ...}.',
    )
    simulate.add_argument("logs", nargs="+", metavar="LOG", help="audit log (.gz, - for stdin)")
    simulate.add_argument("--policy", required=True, metavar="FILE")
    simulate.add_argument("--compare", metavar="FILE", help="a second policy to compare with")
    simulate.add_argument("--output", choices=("text", "json"), default="text")
    simulate.add_argument("--top", type=int, default=10, help="noisiest combinations shown")
    simulate.add_argument(
        "--summary-only", action="store_true", help="text output: leave out the per-event lines"
    )
    simulate.set_defaults(func=cmd_simulate)


def _write(lines: Iterable[str]) -> None:
    out = sys.stdout
    for line in lines:
        out.write(line)
        out.write("\n")


def cmd_lint(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        report = lint_file(path)
        if args.output == "json":
            print(orjson.dumps(report.to_dict()).decode())
        else:
            sys.stdout.write(render.lint_text(report))
        status = max(status, report.exit_code)
    return status


def _load_for_simulation(path: str) -> Policy | None:
    """The policy kube-apiserver would run, or None (problems on stderr)."""
    report = lint_file(path)
    if report.errors:
        print(f"{path}: kube-apiserver would refuse this policy:", file=sys.stderr)
        sys.stderr.write(render.lint_text(report))
        return None
    if report.warnings:
        print(
            f"{path}: {len(report.warnings)} lint warning(s); simulating what kube-apiserver "
            f"would run (see `policy lint {path}`)",
            file=sys.stderr,
        )
    return report.policy


def _describe(event: AuditEvent) -> str:
    if event.resource:
        parts = [event.namespace, event.api_group, event.resource, event.name, event.subresource]
        target = "/".join(p for p in parts if p)
    else:
        target = event.request_uri.split("?", 1)[0]
    user = event.username or "(no user)"
    return f"{event.audit_id} {event.stage} {user} {event.verb} {target}"


def cmd_simulate(args: argparse.Namespace) -> int:
    policy = _load_for_simulation(args.policy)
    if policy is None:
        return EXIT_ERRORS
    base = Simulation(policy, args.policy, top=args.top)
    comparison: Comparison | None = None
    if args.compare:
        other_policy = _load_for_simulation(args.compare)
        if other_policy is None:
            return EXIT_ERRORS
        comparison = Comparison(base, Simulation(other_policy, args.compare, top=args.top))
    as_json = args.output == "json"
    per_event = as_json or not args.summary_only
    decoder = Decoder()
    status = EXIT_OK
    for path in args.logs:
        try:
            stream, _, _ = open_input(path)
        except OSError as e:
            print(f"{path}: {e.strerror or e}", file=sys.stderr)
            status = EXIT_ERRORS
            continue
        try:
            for batch in read_batches(stream, decoder):
                lines: list[str] = []
                for reason, count in batch.refusals:
                    (comparison or base).add_invalid(reason, count)
                for item in batch:
                    second: EventResult | None = None
                    if comparison is not None:
                        result, second = comparison.add(item)
                    else:
                        result = base.add(item)
                    if per_event:
                        lines.append(_event_output(item, result, second, policy, as_json))
                _write(lines)
            problem = getattr(stream, "problem", None)
            if problem:  # a cut .gz, read up to the cut (counted as truncated_gzip)
                print(f"{path}: {problem}; read up to there", file=sys.stderr)
                status = EXIT_ERRORS
        except BrokenPipeError:
            raise  # our reader went away (| head): not the input's fault
        except (OSError, EOFError) as e:
            print(f"{path}: read error: {e}", file=sys.stderr)
            status = EXIT_ERRORS
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    summary = base.summary()
    if comparison is not None:
        summary["compare"] = comparison.summary()
    if as_json:
        print(orjson.dumps({"summary": summary}).decode())
    else:
        if per_event and base.events:
            print()
        sys.stdout.write(render.simulation_text(summary))
    return status


def _event_output(
    event: AuditEvent,
    result: EventResult,
    second: EventResult | None,
    policy: Policy,
    as_json: bool,
) -> str:
    if as_json:
        record = result.to_dict()
        if second is not None:
            other = second.to_dict()
            record["compare"] = {k: other[k] for k in ("level", "rule", "omitStages")}
        return orjson.dumps(record).decode()
    text = render.event_line(_describe(event), result, policy)
    if second is not None and second.effective_level != result.effective_level:
        text += f"; compared: {second.effective_level} (rule {second.decision.rule})"
    return text
