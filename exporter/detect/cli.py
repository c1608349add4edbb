"""``kube-audit-exporter rules test|list [FILE...]``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from .errors import RuleError
from .examples import run_examples
from .rules import RuleSet, load_rules


def register(sub: Any) -> None:
    rules = sub.add_parser(
        "rules",
        help="test or list detection rules",
        description="Work with detection rule files (the default set when no FILE is given).",
    )
    verbs = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    test = verbs.add_parser(
        "test",
        help="run every rule's positive and negative examples",
        description="Run each rule's examples, like `promtool test rules`; exit 1 on any "
        "failure or invalid file.",
    )
    test.add_argument("files", nargs="*", metavar="FILE")
    test.set_defaults(func=cmd_test)
    lst = verbs.add_parser("list", help="print the loaded rules")
    lst.add_argument("files", nargs="*", metavar="FILE")
    lst.add_argument("--output", choices=("text", "json"), default="text")
    lst.set_defaults(func=cmd_list)


def _load(files: list[str]) -> RuleSet | None:
    try:
        return load_rules(files or None)
    except RuleError as e:
        print("rules are invalid:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def cmd_test(args: argparse.Namespace) -> int:
    ruleset = _load(args.files)
    if ruleset is None:
        return 1
    report = run_examples(ruleset)
    for f in report.failures:
        print(f"FAILED: {f}")
    status = "SUCCESS" if report.ok else "FAILED"
    print(
        f"{status}: {report.rules} rules, {report.examples} examples, "
        f"{len(report.failures)} failures"
    )
    return 0 if report.ok else 1


def cmd_list(args: argparse.Namespace) -> int:
    ruleset = _load(args.files)
    if ruleset is None:
        return 1
    rows: list[dict[str, Any]] = []
    for r in ruleset.rules:
        rows.append(
            {
                "id": r.id,
                "severity": r.severity,
                "kind": r.kind,
                "mitre": list(r.mitre),
                "title": r.title,
                "needs": r.requirements(),
                "enabled": r.enabled,
                "file": r.source,
            }
        )
    if args.output == "json":
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    width = max((len(r["id"]) for r in rows), default=2)
    print(f"{'ID':<{width}}  {'SEVERITY':<8}  {'KIND':<10}  {'MITRE':<10}  TITLE")
    for row in rows:
        notes = []
        if row["needs"]:
            notes.append("needs " + ", ".join(row["needs"]))
        if not row["enabled"]:
            notes.append("disabled")
        note = f"  [{'; '.join(notes)}]" if notes else ""
        print(
            f"{row['id']:<{width}}  {row['severity']:<8}  {row['kind']:<10}  "
            f"{','.join(row['mitre']):<10}  {row['title']}{note}"
        )
    print(f"{len(rows)} rules")
    return 0
