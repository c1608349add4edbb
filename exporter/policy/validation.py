"""kube-apiserver's validation of a decoded Policy.

The rules are those of k8s.io/apiserver/pkg/apis/audit/validation
(ValidatePolicy) and of the policy reader, which refuses a policy with no
rules. Only rules are validated there: the policy-wide ``omitStages`` is not
checked by the API server (the linter warns about it instead). Every finding
here is an error: the API server does not start with such a policy.
"""

from __future__ import annotations

import difflib
import re

from .findings import ERROR, Finding
from .model import LEVELS, STAGES, Policy, PolicyRule

# k8s.io/apimachinery/pkg/util/validation: IsDNS1123Subdomain.
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
DNS1123_SUBDOMAIN_MAX_LENGTH = 253

# kube-apiserver v1.36 added `group: "*"` (kubernetes/kubernetes#135262);
# earlier releases refuse it as not a DNS subdomain. It is accepted here and
# the linter warns that it needs v1.36.
GROUP_WILDCARD = "*"


def dns_subdomain_problems(value: str) -> list[str]:
    problems = []
    if len(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        problems.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX_LENGTH} characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        problems.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    return problems


def validate(policy: Policy) -> list[Finding]:
    """Errors kube-apiserver reports for ``policy``, in rule order."""
    findings: list[Finding] = []
    for i, rule in enumerate(policy.rules):
        findings.extend(_rule(policy, rule, f"rules[{i}]"))
    if not policy.rules:
        loc = policy.location("rules")
        findings.append(
            Finding(
                ERROR,
                "no-rules",
                "loaded illegal policy with 0 rules: kube-apiserver refuses it",
                field="rules",
                line=loc.line if loc else 1,
                column=loc.column if loc else 1,
                hint="end the rules with a catch-all such as `- level: Metadata`",
            )
        )
    return findings


def _rule(policy: Policy, rule: PolicyRule, path: str) -> list[Finding]:
    out: list[Finding] = []

    def error(field: str, message: str, hint: str = "") -> None:
        loc = policy.location(field)
        out.append(
            Finding(
                ERROR,
                "invalid",
                f"{field}: {message}",
                field=field,
                line=loc.line if loc else None,
                column=loc.column if loc else None,
                hint=hint,
            )
        )

    level_path = f"{path}.level"
    if rule.level == "":
        error(
            level_path,
            "Required value",
            hint="set level: None, Metadata, Request or RequestResponse",
        )
    elif rule.level not in LEVELS:
        supported = ", ".join(f'"{level}"' for level in LEVELS)
        hint = ""
        lowered = {level.lower(): level for level in LEVELS}
        if rule.level.lower() in lowered:
            hint = f"levels are case-sensitive: {lowered[rule.level.lower()]}"
        else:
            close = difflib.get_close_matches(rule.level, LEVELS, n=1)
            if close:
                hint = f"did you mean {close[0]}?"
        error(
            level_path,
            f'Unsupported value: "{rule.level}": supported values: {supported}',
            hint,
        )

    for i, url in enumerate(rule.non_resource_urls):
        if url == "*":
            continue
        field = f"{path}.nonResourceURLs[{i}]"
        if not url.startswith("/"):
            error(
                field,
                f"Invalid value: \"{url}\": non-resource URL rules must begin with a '/' character",
            )
        if url != "" and "*" in url[:-1]:
            error(
                field,
                f"Invalid value: \"{url}\": non-resource URL wildcards '*' must be the final "
                "character of the rule",
            )

    for i, gr in enumerate(rule.resources):
        gr_path = f"{path}.resources[{i}]"
        if gr.group and gr.group != GROUP_WILDCARD:
            problems = dns_subdomain_problems(gr.group)
            if problems:
                hint = ""
                if "/" in gr.group:
                    hint = f'a group has no version: "{gr.group.split("/", 1)[0]}"'
                elif gr.group.lower() != gr.group:
                    hint = f'group names are lower case: "{gr.group.lower()}"'
                error(
                    f"{gr_path}.group", f'Invalid value: "{gr.group}": ' + ",".join(problems), hint
                )
        if gr.resource_names and not gr.resources:
            error(
                f"{gr_path}.resourceNames",
                "Invalid value: using resourceNames requires at least one resource",
            )

    for i, stage in enumerate(rule.omit_stages):
        if stage not in STAGES:
            error(
                f"{path}.omitStages[{i}]",
                f'Invalid value: "{stage}": allowed stages are {",".join(STAGES)}',
            )

    if rule.non_resource_urls and (rule.resources or rule.namespaces):
        error(
            f"{path}.nonResourceURLs",
            "Invalid value: rules cannot apply to both regular resources and non-resource URLs",
            hint="split it into two rules",
        )
    return out
