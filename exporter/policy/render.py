"""Text renderings of lint reports and simulation summaries (the CLI prints them)."""

from __future__ import annotations

from typing import Any

from .findings import ERROR, Finding
from .lint import LintReport
from .model import LEVELS, Policy
from .simulate import EventResult


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _signed(n: int, text: str) -> str:
    return f"+{text}" if n > 0 else text


def finding_line(source: str, finding: Finding) -> str:
    where = source
    if finding.line is not None:
        where += f":{finding.line}"
        if finding.column is not None:
            where += f":{finding.column}"
    text = f"{where}: {finding.severity}: {finding.message} [{finding.code}]"
    if finding.hint:
        text += f"\n    hint: {finding.hint}"
    return text


def lint_text(report: LintReport) -> str:
    lines = [finding_line(report.source, f) for f in report.findings]
    errors = sum(1 for f in report.findings if f.severity == ERROR)
    warnings = len(report.findings) - errors
    if errors:
        verdict = "kube-apiserver would refuse this policy"
    elif warnings:
        verdict = "kube-apiserver accepts it, but see the warnings"
    else:
        verdict = "clean"
    lines.append(
        f"{report.source}: {errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}: {verdict}"
    )
    return "\n".join(lines) + "\n"


def event_line(event_desc: str, result: EventResult, policy: Policy) -> str:
    decision = result.decision
    if decision.rule is None:
        by = "no rule matched"
    else:
        rule = policy.rules[decision.rule]
        line = f" (line {rule.location.line})" if rule.location else ""
        by = f"rules[{decision.rule}]{line}"
    text = f"{event_desc} -> {decision.level} by {by}"
    if decision.level != "None" and not result.written:
        text += f", {result.stage} omitted"
    return text


def _rule_ref(summary: dict[str, Any], index: int | None) -> str:
    if index is None:
        return "the end"
    line = summary["rules"][index]["line"]
    return f"rules[{index}]" + (f" (line {line})" if line else "")


def simulation_text(summary: dict[str, Any]) -> str:
    out: list[str] = []
    rules = summary["rules"]
    invalid = sum(summary["invalid"].values())
    head = f"{summary['policy']}: {len(rules)} rules; {summary['events']:,} events"
    if invalid:
        reasons = ", ".join(f"{n:,} {r}" for r, n in summary["invalid"].items())
        head += f" ({invalid:,} invalid inputs skipped: {reasons})"
    out.append(head)
    levels = "  ".join(f"{level} {summary['levels'].get(level, 0):,}" for level in LEVELS)
    out.append(f"  levels: {levels}")
    written = summary["written"]
    line = (
        f"  written: {written['events']:,} events, {human_bytes(written['bytes'])} estimated"
        f" (recorded: {summary['events']:,} events, {human_bytes(summary['recordedBytes'])})"
    )
    out.append(line)
    if written["bodiesUnknown"]:
        out.append(
            f"  {written['bodiesUnknown']:,} written events need request/response bodies the "
            "recording does not have: the byte estimate is a lower bound"
        )
    out.append("")
    out.append("Volume per rule:")
    out.append(
        f"  {'rule':>7} {'line':>5}  {'level':<16}{'matched':>10}{'written':>10}{'bytes':>12}"
    )
    for r in rules:
        out.append(
            f"  {r['index']:>7} {r['line'] or '':>5}  {r['level']:<16}{r['matched']:>10,}"
            f"{r['written']:>10,}{human_bytes(r['bytes']):>12}"
        )
    d = summary["default"]
    out.append(
        f"  {'no rule':>7} {'':>5}  {d['level']:<16}{d['matched']:>10,}{d['written']:>10,}"
        f"{human_bytes(d['bytes']):>12}"
    )
    never = summary["neverMatched"]
    out.append("")
    if never:
        out.append("Rules that never matched: " + ", ".join(_rule_ref(summary, i) for i in never))
    else:
        out.append("Every rule matched at least one event.")
    noisy = summary["noisiest"]
    if noisy:
        out.append("")
        out.append("Noisiest (user, verb, resource) among written events:")
        out.append(f"  {'events':>8} {'bytes':>10}  {'verb':<8} {'resource':<32} user")
        for n in noisy:
            user = n["user"] if n["user"] is not None else "(no user)"
            out.append(
                f"  {n['events']:>8,} {human_bytes(n['bytes']):>10}  {n['verb']:<8} "
                f"{n['resource']:<32} {user}"
            )
        suggestions = [n for n in noisy if n.get("suggestion")]
        if suggestions:
            out.append("")
            out.append("Suggested rules, each to go before the rule that decides them now:")
            for n in suggestions:
                note = f"; {n['note']}" if n.get("note") else ""
                out.append(
                    f"  # {n['events']:,} events, {human_bytes(n['bytes'])}: before "
                    f"{_rule_ref(summary, n.get('insertBefore'))}{note}"
                )
                out.extend("  " + line for line in n["suggestion"].rstrip("\n").split("\n"))
    compare = summary.get("compare")
    if compare:
        out.append("")
        a = summary["written"]
        b = compare["written"]
        delta = compare["delta"]
        out.append(f"Compared with {compare['policy']}:")
        events_delta = _signed(delta["events"], f"{delta['events']:,}")
        bytes_delta = _signed(delta["bytes"], human_bytes(delta["bytes"]))
        out.append(
            f"  written: {b['events']:,} events ({events_delta}), {human_bytes(b['bytes'])} "
            f"({bytes_delta}) against {a['events']:,} events, {human_bytes(a['bytes'])}"
        )
        out.append(f"  events whose outcome differs: {compare['changed']:,}")
        for t in compare["transitions"]:
            out.append(f"    {t['from']:>16} -> {t['to']:<16} {t['events']:>10,}")
        if compare["examples"]:
            out.append("  for example:")
            for ex in compare["examples"]:
                user = ex["user"] or "(no user)"
                out.append(
                    f"    {ex['auditID']} {ex['stage']} {ex['verb']} {ex['requestURI'][:80]} "
                    f"{user}: {ex['from']['level']} (rule {ex['from']['rule']}) -> "
                    f"{ex['to']['level']} (rule {ex['to']['rule']})"
                )
    return "\n".join(out) + "\n"
