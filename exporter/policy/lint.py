"""``policy lint``: what kube-apiserver refuses, then the mistakes it accepts.

Errors are the API server's own (YAML it cannot read, decoding and validation
errors, no rules): it does not start. Warnings are policies it loads that do
not do what their author meant: fields the strict decoder rejects and the
lenient one drops, resource names that match nothing, rules no request can
reach, no catch-all, RequestReceived logged, secret values in the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .evaluate import resource_pattern_matches
from .findings import ERROR, WARNING, Finding
from .loader import LoadResult, load_policy, load_policy_file
from .model import (
    LEVEL_NONE,
    LEVEL_ORDER,
    LEVEL_REQUEST,
    STAGES,
    GroupResources,
    Policy,
    PolicyRule,
)
from .resources import NON_RESOURCE_VERBS, RESOURCE_VERBS, BuiltinResources, builtin_resources
from .validation import validate

EXIT_CLEAN = 0
EXIT_WARNINGS = 1
EXIT_ERRORS = 2

# Verbs of resource requests, and the lowercase HTTP methods that are the
# verbs of non-resource requests.
KNOWN_VERBS = frozenset({*RESOURCE_VERBS, "proxy", *NON_RESOURCE_VERBS})


@dataclass(frozen=True)
class Sensitive:
    group: str
    resource: str
    subresource: str
    label: str


# Objects whose request or response bodies hold secret values.
SENSITIVE = (
    Sensitive("", "secrets", "", "Secrets"),
    Sensitive("", "configmaps", "", "ConfigMaps"),
    Sensitive("authentication.k8s.io", "tokenreviews", "", "TokenReviews"),
    Sensitive("", "serviceaccounts", "token", "TokenRequests (serviceaccounts/token)"),
)


@dataclass
class LintReport:
    source: str
    findings: list[Finding]
    load: LoadResult

    @property
    def policy(self) -> Policy | None:
        return self.load.policy

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_ERRORS
        return EXIT_WARNINGS if self.warnings else EXIT_CLEAN

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "accepted": not self.errors,
            "exitCode": self.exit_code,
            "resourcesRelease": builtin_resources().release,
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
        }


def lint_file(path: str | Path) -> LintReport:
    return _report(load_policy_file(path))


def lint_text(data: bytes | str, source: str = "<policy>") -> LintReport:
    return _report(load_policy(data, source))


def _report(load: LoadResult) -> LintReport:
    findings = list(load.findings)
    if load.policy is not None:
        findings.extend(validate(load.policy))
        # every warning, even beside errors: fixing the errors one at a time
        # should not reveal new warnings each time
        findings.extend(policy_warnings(load.policy))
    findings.sort(key=Finding.sort_key)
    return LintReport(load.source, findings, load)


def policy_warnings(policy: Policy, known: BuiltinResources | None = None) -> list[Finding]:
    """The warnings for a policy kube-apiserver accepts."""
    return list(_Linter(policy, known or builtin_resources()).run())


# --- coverage: does one rule match every request another one does? ---------


def _selector_covers(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    """An exact-match list ``outer`` accepts everything ``inner`` accepts
    (an empty list accepts everything)."""
    if not outer:
        return True
    return bool(inner) and set(inner) <= set(outer)


def pattern_covers(outer: str, inner: str) -> bool:
    """Every resource ``inner`` matches is matched by ``outer``."""
    if outer == "*" or outer == inner:
        return True
    if outer.endswith("/*") and outer != "*/*":
        base = outer[:-2]
        return inner == base or inner.startswith(base + "/")
    if outer.startswith("*/"):
        sub = outer[2:]
        resource, _, inner_sub = inner.partition("/")
        return resource != "" and inner_sub == sub
    return False


def _group_resources_cover(outer: GroupResources, inner: GroupResources) -> bool:
    if outer.group != "*" and outer.group != inner.group:
        return False
    if not outer.resources:
        return True
    if not inner.resources:
        # inner matches every resource of its group, whatever the names.
        return "*" in outer.resources and not outer.resource_names
    if outer.resource_names and not _selector_covers(outer.resource_names, inner.resource_names):
        return False
    return all(any(pattern_covers(o, i) for o in outer.resources) for i in inner.resources)


def rule_covers(outer: PolicyRule, inner: PolicyRule) -> bool:
    """Every request ``inner`` matches is matched by ``outer`` (a sufficient
    test: it does not combine several earlier rules)."""
    if not _selector_covers(outer.users, inner.users):
        return False
    if not _selector_covers(outer.user_groups, inner.user_groups):
        return False
    if not _selector_covers(outer.verbs, inner.verbs):
        return False
    outer_resource = bool(outer.resources or outer.namespaces)
    inner_resource = bool(inner.resources or inner.namespaces)
    if outer_resource:
        if not inner_resource:
            return False
        if not _selector_covers(outer.namespaces, inner.namespaces):
            return False
        if not outer.resources:
            return True
        if not inner.resources:
            return any(
                gr.group == "*"
                and (not gr.resources or ("*" in gr.resources))
                and not gr.resource_names
                for gr in outer.resources
            )
        return all(
            any(_group_resources_cover(o, i) for o in outer.resources) for i in inner.resources
        )
    if outer.non_resource_urls:
        if inner_resource or not inner.non_resource_urls:
            return False
        return all(
            any(
                o == "*" or o == i or (o.endswith("*") and i.startswith(o.rstrip("*")))
                for o in outer.non_resource_urls
            )
            for i in inner.non_resource_urls
        )
    return True


# --- sensitive bodies --------------------------------------------------------


def _may_match(rule: PolicyRule, target: Sensitive) -> bool:
    if rule.non_resource_urls and not (rule.resources or rule.namespaces):
        return False
    if not rule.resources:
        return True
    return any(
        gr.group in (target.group, "*")
        and (
            not gr.resources
            or any(
                resource_pattern_matches(p, target.resource, target.subresource)
                for p in gr.resources
            )
        )
        for gr in rule.resources
    )


def _catches_all(rule: PolicyRule, target: Sensitive) -> bool:
    if rule.users or rule.user_groups or rule.namespaces:
        return False
    if rule.verbs and not set(RESOURCE_VERBS) <= set(rule.verbs):
        return False
    if rule.non_resource_urls and not rule.resources:
        return False
    if not rule.resources:
        return True
    return any(
        gr.group in (target.group, "*")
        and not gr.resource_names
        and (
            not gr.resources
            or any(
                resource_pattern_matches(p, target.resource, target.subresource)
                for p in gr.resources
            )
        )
        for gr in rule.resources
    )


class _Linter:
    def __init__(self, policy: Policy, known: BuiltinResources) -> None:
        self.policy = policy
        self.known = known

    def warn(self, code: str, field: str, message: str, hint: str = "") -> Finding:
        loc = self.policy.location(field)
        where = f"{field}: " if field else ""
        return Finding(
            WARNING,
            code,
            where + message,
            field=field,
            line=loc.line if loc else None,
            column=loc.column if loc else None,
            hint=hint,
        )

    def rule_line(self, index: int) -> str:
        rule = self.policy.rules[index]
        return f" (line {rule.location.line})" if rule.location else ""

    def run(self) -> Iterator[Finding]:
        yield from self.stages()
        for i, rule in enumerate(self.policy.rules):
            yield from self.selectors(i, rule)
            yield from self.resource_names(i, rule)
        yield from self.shadowed()
        yield from self.catch_all()
        yield from self.request_received()
        yield from self.sensitive()

    # --- single rules --------------------------------------------------------

    def stages(self) -> Iterator[Finding]:
        for i, stage in enumerate(self.policy.omit_stages):
            if stage not in STAGES:
                yield self.warn(
                    "unknown-stage",
                    f"omitStages[{i}]",
                    f'"{stage}" is not a stage: kube-apiserver does not check the policy-wide '
                    "omitStages, so this entry is accepted and does nothing",
                    hint="stages are " + ", ".join(STAGES),
                )

    def selectors(self, index: int, rule: PolicyRule) -> Iterator[Finding]:
        path = f"rules[{index}]"
        for field, values in (
            ("users", rule.users),
            ("userGroups", rule.user_groups),
            ("namespaces", rule.namespaces),
            ("verbs", rule.verbs),
        ):
            for j, value in enumerate(values):
                item = f"{path}.{field}[{j}]"
                if value == "*":
                    yield self.warn(
                        "wildcard-literal",
                        item,
                        f'"*" is not a wildcard in {field}: it matches only the literal '
                        f'value "*", so this entry matches no request',
                        hint=f"omit {field} to match all",
                    )
                elif field == "verbs" and value not in KNOWN_VERBS:
                    yield self.warn(
                        "unknown-verb",
                        item,
                        f'"{value}" is not a verb kube-apiserver uses, so this entry matches '
                        "no request",
                        hint="resource verbs are "
                        + ", ".join(RESOURCE_VERBS)
                        + "; non-resource requests use the lowercase HTTP method",
                    )

    def resource_names(self, index: int, rule: PolicyRule) -> Iterator[Finding]:
        path = f"rules[{index}]"
        for g, gr in enumerate(rule.resources):
            gr_path = f"{path}.resources[{g}]"
            if gr.group == "*":
                yield self.warn(
                    "group-wildcard",
                    f"{gr_path}.group",
                    'group "*" matches every API group only in kube-apiserver v1.36 and later '
                    "(kubernetes/kubernetes#135262); earlier releases refuse the policy "
                    "because it is not a DNS subdomain",
                )
            for r, pattern in enumerate(gr.resources):
                item = f"{gr_path}.resources[{r}]"
                if pattern == "*/*":
                    yield self.warn(
                        "never-matches",
                        item,
                        '"*/*" matches no request: only "*", "RESOURCE/*" and "*/SUBRESOURCE" '
                        "are patterns",
                        hint='use "*" for every resource and subresource',
                    )
                    continue
                if _literal_star(pattern):
                    yield self.warn(
                        "wildcard-literal",
                        item,
                        f'"{pattern}" is compared literally: only "*", "RESOURCE/*" and '
                        '"*/SUBRESOURCE" are patterns',
                    )
                    continue
                problem = self.known.check(gr.group, pattern)
                if problem is not None:
                    hint = f'did you mean "{problem.suggestion}"?' if problem.suggestion else ""
                    if problem.code == "wrong-group" and problem.suggestion:
                        hint = f"did you mean {{{problem.suggestion}}}?"
                    if problem.code == "unknown-group":
                        hint = f"use {problem.suggestion}"
                    yield self.warn(
                        problem.code,
                        item,
                        f"{problem.message}; the rule never matches it",
                        hint=hint,
                    )
            if (
                gr.resource_names
                and rule.verbs
                and set(rule.verbs) <= {"create"}
                and all("/" not in p for p in gr.resources)
            ):
                yield self.warn(
                    "never-matches",
                    f"{gr_path}.resourceNames",
                    "resourceNames never match a create: the request that creates an "
                    "object has no name yet (the name is in the body)",
                )

    # --- across rules ----------------------------------------------------

    def shadowed(self) -> Iterator[Finding]:
        rules = self.policy.rules
        for j in range(1, len(rules)):
            for i in range(j):
                if rule_covers(rules[i], rules[j]):
                    what = (
                        "matches every request"
                        if rules[i].is_catch_all
                        else "matches every request it would"
                    )
                    yield self.warn(
                        "shadowed-rule",
                        f"rules[{j}]",
                        f"this rule can never match: rules[{i}]{self.rule_line(i)} {what}, "
                        "and the first matching rule wins",
                        hint=f"move it before rules[{i}], or remove it",
                    )
                    break

    def catch_all(self) -> Iterator[Finding]:
        if any(rule.is_catch_all for rule in self.policy.rules):
            return
        last = len(self.policy.rules) - 1
        yield self.warn(
            "no-catch-all",
            f"rules[{last}]",
            "no catch-all rule at the end: requests that match no rule are not audited "
            "at all (level None), silently",
            hint="end the rules with `- level: Metadata`",
        )

    def request_received(self) -> Iterator[Finding]:
        if "RequestReceived" in self.policy.omit_stages:
            return
        logging = [
            i
            for i, rule in enumerate(self.policy.rules)
            if rule.level != LEVEL_NONE and "RequestReceived" not in rule.omit_stages
        ]
        if not logging:
            return
        field = "omitStages" if "omitStages" in self.policy.locations else ""
        which = (
            "the rules"
            if len(logging) == len(self.policy.rules)
            else "rules " + ", ".join(str(i) for i in logging)
        )
        yield self.warn(
            "request-received",
            field,
            f"RequestReceived is not omitted for {which}: every request is logged once when it "
            "arrives and again when it completes, which doubles the volume and adds nothing "
            "the later stage does not have",
            hint="add `omitStages: [RequestReceived]` at the top level of the policy",
        )

    def sensitive(self) -> Iterator[Finding]:
        exposed: dict[int, list[str]] = {}
        for target in SENSITIVE:
            for i, rule in enumerate(self.policy.rules):
                if (
                    _may_match(rule, target)
                    and LEVEL_ORDER.get(rule.level, 0) >= LEVEL_ORDER[LEVEL_REQUEST]
                ):
                    exposed.setdefault(i, []).append(target.label)
                if _catches_all(rule, target):
                    break
        for i, labels in sorted(exposed.items()):
            rule = self.policy.rules[i]
            yield self.warn(
                "sensitive-body",
                f"rules[{i}].level",
                f"{rule.level} logs the bodies of {_join(labels)}: secret values and tokens end "
                "up in the audit log",
                hint="put a rule at level Metadata for them before this one",
            )
        if not any(
            gr.group in ("", "*") and any(p in ("secrets", "secrets/*") for p in gr.resources)
            for rule in self.policy.rules
            for gr in rule.resources
        ):
            yield self.warn(
                "no-secrets-rule",
                "rules",
                "no rule names secrets: they get whatever level the generic rules give, and a "
                "later change to those rules can put secret values in the audit log",
                hint='add `- level: Metadata` with resources [{group: "", resources: '
                '["secrets"]}] near the top',
            )


def _literal_star(pattern: str) -> bool:
    """A "*" where it is not a pattern ("pod*", "*s", "pods/l*")."""
    if "*" not in pattern or pattern == "*":
        return False
    resource, slash, sub = pattern.partition("/")
    if slash and resource == "*" and "*" not in sub:
        return False  # */log
    return not (slash and sub == "*" and "*" not in resource)  # pods/*


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
