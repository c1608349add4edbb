"""``rules import-sigma FILE...``: Sigma rules for Kubernetes audit logs as
this project's rule files.

Sigma files are parsed with pySigma (``SigmaCollection``); a rule is taken
when its logsource is ``product: kubernetes`` with ``service: audit``. Its
condition (selections, ``and``/``or``/``not``, ``1 of``/``all of``, list
values, modifiers) is resolved by pySigma into a tree of field comparisons,
which becomes one ``match:`` condition:

- fields are audit event paths as Sigma writes them (``verb``,
  ``objectRef.resource``, ``user.username``, ``responseStatus.code``...);
  Sigma's abstract ``hostPath`` and ``capabilities`` become
  ``$pod_spec.volumes[*].hostPath.path`` and
  ``$containers.securityContext.capabilities.add``;
- a plain value of a Kubernetes identifier field (verb, objectRef.*, user
  and group names, stage, level) is equality: those values are lower-case
  and case-sensitive in Kubernetes; any other string, and every string with
  wildcards or a ``contains``/``startswith``/``endswith`` modifier, is a
  case-insensitive anchored regular expression, as Sigma compares strings
  case-insensitively; ``*`` alone is ``exists: true``, ``null`` is
  ``exists: false``;
- ``re`` (with its ``i``, ``m``, ``s`` flags), ``cidr``, ``exists``,
  ``gt``/``gte``/``lt``/``lte`` and boolean values map to the operators of
  the same meaning; ``responseStatus.code`` takes numbers only.

Not translated, rule by rule, with the reason: other log sources, keyword
(field-less) searches, field references (``fieldref``), expansions
(``base64offset``, ``windash``...), fields that are not audit event paths,
values a field can never hold, regular expressions Python cannot compile,
and correlation rules (counts over time; write a ``kind: threshold`` rule).
A rule is translated whole or not at all: dropping one comparison would
change what it means.

Severity: informational and low are info, medium and high warning, critical
critical; the rule's ``rationale`` says so and ``peers`` names the Sigma rule.
Sigma rules carry no test events, so imported rules have no examples:
``rules test`` reports them until examples are added.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LEVELS = {
    "informational": "info",
    "low": "info",
    "medium": "warning",
    "high": "warning",
    "critical": "critical",
}

# Sigma's abstract fields in the SigmaHQ Kubernetes rules, as our paths
ABSTRACT_FIELDS = {
    "hostPath": "$pod_spec.volumes[*].hostPath.path",
    "capabilities": "$containers.securityContext.capabilities.add",
}
# fields whose values Kubernetes writes in one case: equality is exact
IDENTIFIER_FIELDS = re.compile(
    r"^(verb|stage|level|objectRef\.\w+|user\.(username|groups)|impersonatedUser\.(username|groups))$"
)
AUDIT_ROOTS = (
    "verb",
    "stage",
    "level",
    "auditID",
    "requestURI",
    "userAgent",
    "sourceIPs",
    "objectRef",
    "user",
    "impersonatedUser",
    "responseStatus",
    "annotations",
    "requestObject",
    "responseObject",
    "requestReceivedTimestamp",
    "stageTimestamp",
)
_PATH = re.compile(r"^[A-Za-z_][\w-]*(\.[\w/.-]+)*$")


class Untranslatable(Exception):
    """A part of a Sigma rule this project's rules cannot express."""


@dataclass
class Translation:
    """One Sigma rule: the rule (a mapping for the YAML file) or the reasons
    it was not translated."""

    source: str
    title: str
    sigma_id: str
    rule: dict[str, Any] | None = None
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def import_files(paths: list[str]) -> list[Translation]:
    """Every rule of every file, translated or with its reasons."""
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    out: list[Translation] = []
    used: set[str] = set()
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            out.append(Translation(path, "", "", reasons=[f"cannot read the file: {e}"]))
            continue
        try:
            collection = SigmaCollection.from_yaml(text, collect_errors=True)
        except (SigmaError, yaml.YAMLError) as e:
            out.append(Translation(path, "", "", reasons=[f"not a Sigma file: {e}"]))
            continue
        for item in collection.rules:
            out.append(translate(item, path, used))
    return out


def translate(item: Any, source: str, used: set[str]) -> Translation:
    from sigma.correlations import SigmaCorrelationRule
    from sigma.rule import SigmaRule

    title = str(getattr(item, "title", "") or "")
    sigma_id = str(getattr(item, "id", "") or "")
    t = Translation(source, title, sigma_id)
    if isinstance(item, SigmaCorrelationRule):
        t.reasons.append(
            "a correlation rule (events counted over time): write it as kind: threshold "
            "over the rules it correlates"
        )
        return t
    if not isinstance(item, SigmaRule):
        t.reasons.append(f"a {type(item).__name__}, not a detection rule")
        return t
    errors = list(getattr(item, "errors", []) or [])
    if errors:
        t.reasons.extend(f"pySigma: {e}" for e in errors)
        return t
    ls = item.logsource
    if (ls.product or "").lower() != "kubernetes" or (ls.service or "").lower() != "audit":
        t.reasons.append(
            f"logsource is product {ls.product!r}, service {ls.service!r}: only Kubernetes "
            "audit rules (product kubernetes, service audit) apply to audit events"
        )
        return t
    try:
        trees = [c.parse() for c in item.detection.parsed_condition]
    except Exception as e:  # pySigma raises several kinds for a bad condition
        t.reasons.append(f"the condition cannot be parsed: {e}")
        return t
    conditions: list[dict[str, Any]] = []
    for tree in trees:
        try:
            conditions.append(_node(tree, t.notes))
        except Untranslatable as e:
            t.reasons.append(str(e))
    if t.reasons:
        return t
    match = conditions[0] if len(conditions) == 1 else {"any": conditions}
    level = item.level.name.lower() if item.level is not None else "medium"
    severity = LEVELS.get(level, "warning")
    rid = _unique(_slug(title or sigma_id or "rule"), used)
    rule: dict[str, Any] = {"id": rid, "title": title or rid, "severity": severity}
    mitre = _mitre(item.tags)
    if mitre:
        rule["mitre"] = mitre if len(mitre) > 1 else mitre[0]
    rule["rationale"] = (
        f"Imported from Sigma at level {level}: informational and low are info, medium and "
        f"high warning, critical critical."
    )
    rule["peers"] = {"sigma": [f"{title} ({sigma_id})" if sigma_id else title]}
    description = " ".join(str(item.description or title or rid).split())
    fps = [str(f) for f in (item.falsepositives or []) if str(f).strip()]
    if fps:
        description += " Sigma's known false positives: " + "; ".join(fps) + "."
    rule["description"] = description
    rule["match"] = match
    problems = _validate(rule)
    if problems:
        t.reasons.extend(problems)
        return t
    used.add(rid)
    t.rule = rule
    return t


def _validate(rule: dict[str, Any]) -> list[str]:
    """What this project's loader says about the translated rule."""
    from .located import load
    from .rules import parse_rule_file

    problems: list[str] = []
    text = yaml.safe_dump({"rules": [rule]}, sort_keys=False, allow_unicode=True)
    load(text)  # the dump is YAML we wrote: it loads
    parse_rule_file(text, "<translated>", problems)
    return [p.split(": ", 1)[-1] if p.startswith("<translated>") else p for p in problems]


def _node(node: Any, notes: list[str]) -> dict[str, Any]:
    from sigma.conditions import (
        ConditionAND,
        ConditionFieldEqualsValueExpression,
        ConditionNOT,
        ConditionOR,
        ConditionValueExpression,
    )

    if isinstance(node, ConditionAND):
        items = [_node(a, notes) for a in node.args]
        return _merge_and(items)
    if isinstance(node, ConditionOR):
        items = [_node(a, notes) for a in node.args]
        return items[0] if len(items) == 1 else _merge_or(items)
    if isinstance(node, ConditionNOT):
        return {"not": _node(node.args[0], notes)}
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return _field(node.field, node.value, notes)
    if isinstance(node, ConditionValueExpression):
        raise Untranslatable(
            f"keyword search {str(node.value)!r} without a field: audit events are matched "
            "field by field"
        )
    raise Untranslatable(f"unsupported condition element {type(node).__name__}")


def _merge_and(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``all`` of the items, as one mapping when their keys do not collide."""
    if len(items) == 1:
        return items[0]
    merged: dict[str, Any] = {}
    for item in items:
        for key, value in item.items():
            if key in merged:
                return {"all": items}
            merged[key] = value
    return merged


def _merge_or(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``any`` of the items; alternatives for one field (a Sigma list) as one
    field condition: ``verb: [list, watch]``, ``userAgent: {regex: [a, b]}``."""
    keys = {next(iter(i)) for i in items if len(i) == 1}
    if len(keys) == 1 and all(len(i) == 1 for i in items):
        key = keys.pop()
        values = [i[key] for i in items]
        if key not in ("any", "all", "not"):
            if all(isinstance(v, (str, int, float, bool)) for v in values):
                return {key: values}
            if all(isinstance(v, dict) and list(v) == ["regex"] for v in values):
                return {key: {"regex": [v["regex"] for v in values]}}
    return {"any": items}


def _path(name: str, notes: list[str]) -> str:
    if name in ABSTRACT_FIELDS:
        path = ABSTRACT_FIELDS[name]
        notes.append(f"field {name!r} read as {path}")
        return path
    root = name.split(".", 1)[0].split("[", 1)[0]
    if root not in AUDIT_ROOTS or not _PATH.match(name):
        raise Untranslatable(
            f"field {name!r} is not a path into an audit event (known roots: "
            + ", ".join(AUDIT_ROOTS)
            + ")"
        )
    if root == "annotations" and name.count(".") > 1:
        # annotation keys hold dots and slashes: quote the key
        return f'annotations["{name.split(".", 1)[1]}"]'
    return name


def _field(name: str, value: Any, notes: list[str]) -> dict[str, Any]:
    from sigma.types import (
        SigmaBool,
        SigmaCIDRExpression,
        SigmaCompareExpression,
        SigmaExists,
        SigmaNull,
        SigmaNumber,
        SigmaRegularExpression,
        SigmaString,
    )

    if not name:
        raise Untranslatable("a value without a field (keyword search)")
    path = _path(name, notes)
    numeric = path == "responseStatus.code"
    if isinstance(value, SigmaNull):
        return {path: {"exists": False}}
    if isinstance(value, SigmaExists):
        return {path: {"exists": bool(value.exists)}}
    if isinstance(value, SigmaBool):
        return {path: bool(value.boolean)}
    if isinstance(value, SigmaNumber):
        return {path: value.number}
    if isinstance(value, SigmaCompareExpression):
        ops = {
            SigmaCompareExpression.CompareOperators.LT: "lt",
            SigmaCompareExpression.CompareOperators.LTE: "lte",
            SigmaCompareExpression.CompareOperators.GT: "gt",
            SigmaCompareExpression.CompareOperators.GTE: "gte",
        }
        return {path: {ops[value.op]: value.number.number}}
    if isinstance(value, SigmaCIDRExpression):
        return {path: {"cidr": str(value.network)}}
    if isinstance(value, SigmaRegularExpression):
        if numeric:
            raise Untranslatable(f"{name} is a number; a regular expression cannot match it")
        pattern = str(value.regexp)
        flags = "".join(
            sorted(
                f.name.lower()[0]
                for f in value.flags
                if f.name in ("IGNORECASE", "MULTILINE", "DOTALL")
            )
        )
        if flags:  # scoped, so that alternatives can be joined into one pattern
            pattern = f"(?{flags.replace('d', 's')}:{pattern})"
        try:
            re.compile(pattern)
        except re.error as e:
            raise Untranslatable(
                f"regular expression {pattern!r} is not valid in Python: {e}"
            ) from None
        return {path: {"regex": pattern}}
    if isinstance(value, SigmaString):
        return _string(name, path, value, numeric)
    kind = type(value).__name__
    why = {
        "SigmaFieldReference": "compares two fields of the event (fieldref); rules compare a "
        "field with values",
        "SigmaExpansion": "is an expansion (base64offset, windash, ...), several encodings of "
        "one value",
        "SigmaQueryExpression": "is a backend query expression",
    }.get(kind, f"is a {kind}")
    raise Untranslatable(f"the value of {name!r} {why}; this has no equivalent in a rule")


def _string(name: str, path: str, value: Any, numeric: bool) -> dict[str, Any]:
    from sigma.types import SpecialChars

    parts = list(value.s)
    if parts == [SpecialChars.WILDCARD_MULTI]:
        return {path: {"exists": True}}
    special = value.contains_special()
    if numeric:
        text = "" if special else str(value)
        if not text.isdigit():
            raise Untranslatable(f"{name} is an HTTP status code; {str(value)!r} can never be one")
        return {path: int(text)}
    if not special and IDENTIFIER_FIELDS.match(name):
        return {path: str(value)}
    regex = "".join(_part(p) for p in parts)
    return {path: {"regex": f"(?i:^{regex}$)"}}


def _part(p: Any) -> str:
    from sigma.types import SpecialChars

    if p == SpecialChars.WILDCARD_MULTI:
        return ".*"
    if p == SpecialChars.WILDCARD_SINGLE:
        return "."
    if isinstance(p, str):
        return re.escape(p)
    raise Untranslatable(f"unsupported part {p!r} in a Sigma string (placeholders)")


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return ("sigma-" + s)[:56].rstrip("-") or "sigma-rule"


def _unique(rid: str, used: set[str]) -> str:
    if rid not in used:
        return rid
    n = 2
    while f"{rid}-{n}" in used:
        n += 1
    return f"{rid}-{n}"


def _mitre(tags: Any) -> list[str]:
    out: list[str] = []
    for tag in tags or []:
        if getattr(tag, "namespace", "") == "attack":
            name = str(getattr(tag, "name", ""))
            if re.match(r"^t\d{4}(\.\d{3})?$", name):
                out.append(name.upper())
    return out


HEADER = """\
# Generated by `kube-audit-exporter rules import-sigma` from Sigma rules.
# Sigma rules carry no test events: add `examples:` (match and no_match) to
# each rule; `kube-audit-exporter rules test` reports the rules without them.
"""


def render(translations: list[Translation]) -> str:
    rules = [t.rule for t in translations if t.rule is not None]
    body = yaml.safe_dump({"rules": rules}, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def report(translations: list[Translation], write: Callable[[str], Any]) -> None:
    """One line per rule, then what could not be translated and why."""
    for t in translations:
        name = t.title or "(no title)"
        where = f"{t.source}: {name}" + (f" ({t.sigma_id})" if t.sigma_id else "")
        if t.rule is not None:
            write(f"translated  {where} -> {t.rule['id']} ({t.rule['severity']})\n")
            for n in t.notes:
                write(f"            note: {n}\n")
        else:
            write(f"skipped     {where}\n")
            for r in t.reasons:
                write(f"            why: {r}\n")
    done = sum(1 for t in translations if t.rule is not None)
    write(f"{done} of {len(translations)} rules translated\n")
