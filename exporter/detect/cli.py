"""``kube-audit-exporter rules test|list [FILE...]`` and ``rules import-sigma FILE...``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from .errors import RuleError
from .examples import run_examples
from .rules import Rule, RuleSet, load_rules
from .settings import DetectionSettings, config_keys


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
    lst = verbs.add_parser(
        "list",
        usage="%(prog)s [options] [FILE ...]",
        help="print the loaded rules and whether the configuration activates them",
        description="List the rules (FILE..., else rules.file, else the defaults) and, under "
        "the configuration given (--config.file, the environment, detect.* flags), which are "
        "active and which need a setting.",
    )
    lst.add_argument("files", nargs="*", metavar="FILE")
    lst.add_argument("--output", choices=("text", "json"), default="text")
    lst.add_argument(
        "--peers",
        action="store_true",
        help="print each rule's severity rationale and the peer rules (Falco k8saudit, "
        "SigmaHQ, Elastic) it corresponds to",
    )
    sigma = verbs.add_parser(
        "import-sigma",
        help="translate Sigma rules for Kubernetes audit logs into a rule file",
        description="Parse Sigma rules (pySigma) whose logsource is product kubernetes, "
        "service audit, and write them as this project's rule file (stdout or --output). "
        "A report on stderr says, rule by rule, what was translated and what could not be "
        "and why. Exit 1 when nothing could be translated.",
    )
    sigma.add_argument("files", nargs="+", metavar="FILE")
    sigma.add_argument("--output", default="", metavar="FILE", help="write the rules here")
    sigma.set_defaults(func=cmd_import_sigma)
    # lazily: the configuration module imports this package
    from ..config import add_flags

    add_flags(lst, only=("rules", "detect"))
    lst.set_defaults(func=cmd_list)


def _load(files: list[str], *, with_defaults: bool = False) -> RuleSet | None:
    try:
        return load_rules(files or None, with_defaults=with_defaults)
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


def _status(rule: Rule, settings: DetectionSettings) -> tuple[bool, str]:
    """(active, why not) under ``settings``, as the engine decides it."""
    if not rule.enabled:
        return False, "disabled in its rule file"
    if rule.id in settings.disabled_rules:
        return False, "disabled by detect.disabled_rules"
    missing = rule.missing(settings)
    if missing:
        return False, "needs " + ", ".join(config_keys(m) for m in missing)
    return True, ""


def _configured(args: argparse.Namespace) -> tuple[RuleSet, DetectionSettings] | None:
    """The rules and detection settings the configuration gives (the rule
    files named on the command line win over rules.file)."""
    from ..config import OPTIONS, ConfigError, detection_settings, load

    used = ("", "rules", "detect", "alertmanager")
    unused = {o.section or "" for o in OPTIONS} - set(used)
    try:
        cfg = load(args, skip=unused) if hasattr(args, "config_file") else None
    except ConfigError as e:
        print("configuration is invalid:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    if cfg is not None and not args.files and cfg.rules.file:
        ruleset = _load(list(cfg.rules.file), with_defaults=cfg.rules.include_defaults)
    else:
        ruleset = _load(args.files)
    if ruleset is None:
        return None
    settings = detection_settings(cfg) if cfg is not None else DetectionSettings()
    return ruleset, settings


def cmd_list(args: argparse.Namespace) -> int:
    loaded = _configured(args)
    if loaded is None:
        return 1
    ruleset, settings = loaded
    rows: list[dict[str, Any]] = []
    for r in ruleset.rules:
        active, why = _status(r, settings)
        rows.append(
            {
                "id": r.id,
                "severity": r.severity,
                "kind": r.kind,
                "mitre": list(r.mitre),
                "title": r.title,
                "needs": [config_keys(n) for n in r.requirements()],
                "enabled": r.enabled,
                "active": active,
                "inactive_reason": why or None,
                "file": r.source,
                "rationale": r.rationale or None,
                "peers": {k: list(v) for k, v in r.peers.items()},
                "variant_of": r.variant_of or None,
                "notify_once": (
                    {"per": list(r.notify_per), "window_seconds": r.notify_window}
                    if r.notify_window
                    else None
                ),
            }
        )
    if args.output == "json":
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    width = max((len(r["id"]) for r in rows), default=2)
    print(f"{'ID':<{width}}  {'SEVERITY':<8}  {'KIND':<10}  {'MITRE':<10}  TITLE")
    for row in rows:
        note = f"  [inactive: {row['inactive_reason']}]" if not row["active"] else ""
        print(
            f"{row['id']:<{width}}  {row['severity']:<8}  {row['kind']:<10}  "
            f"{','.join(row['mitre']):<10}  {row['title']}{note}"
        )
        if getattr(args, "peers", False):
            _print_peers(row)
    n_active = sum(1 for row in rows if row["active"])
    print(f"{len(rows)} rules, {n_active} active")
    return 0


PEER_NAMES = {"falco": "Falco k8saudit", "sigma": "SigmaHQ", "elastic": "Elastic"}


def _print_peers(row: dict[str, Any]) -> None:
    """The rationale and the peer mapping under a rule's line."""
    pad = " " * 4
    if row["variant_of"]:
        print(f"{pad}variant of: {row['variant_of']}")
    print(f"{pad}why {row['severity']}: {row['rationale'] or '(no rationale given)'}")
    peers = row["peers"]
    if not peers:
        print(f"{pad}peers: none named")
    for key, names in peers.items():
        print(f"{pad}{PEER_NAMES.get(key, key)}: {'; '.join(names) if names else 'none'}")


def cmd_import_sigma(args: argparse.Namespace) -> int:
    from .sigma import import_files, render, report

    translations = import_files(list(args.files))
    report(translations, sys.stderr.write)
    if not any(t.rule is not None for t in translations):
        return 1
    text = render(translations)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            print(f"cannot write {args.output}: {e.strerror}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0
