"""The audit policy judged from the evidence: what the events show about the
policy that produced them, the CIS Kubernetes Benchmark audit items they can
support or contradict, and advice worded as ``policy lint`` words it (the
same finding codes, so a reader can run ``policy lint`` on the real policy
and find the same names)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..policy.lint import SENSITIVE

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
BODY_LEVELS = frozenset({"Request", "RequestResponse"})

# Resources whose bodies hold secret values: policy lint's, as the report
# labels them (resource or resource/subresource).
SECRET_BODIES = tuple(
    f"{s.resource}/{s.subresource}" if s.subresource else s.resource for s in SENSITIVE
)

# What an auditor expects to find in any real cluster's record; absent ones
# are either untouched in the period or dropped by the policy (level None).
EXPECTED = (
    "secrets",
    "configmaps",
    "pods",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "serviceaccounts/token",
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
    "namespaces",
    "nodes",
    "deployments",
    "tokenreviews",
    "subjectaccessreviews",
    "certificatesigningrequests",
)


@dataclass(frozen=True)
class Finding:
    code: str  # policy lint's code, or "evidence" for an observation
    verdict: str  # "problem", "ok" or "unknown"
    text: str
    advice: str = ""


@dataclass(frozen=True)
class CisItem:
    ref: str
    title: str
    verdict: str  # "supported", "contradicted", "not shown by events"
    why: str


def level_table(levels: Counter[tuple[str, str]]) -> list[tuple[str, dict[str, int]]]:
    """Per resource, the requests seen at each level, resources sorted."""
    per: dict[str, dict[str, int]] = {}
    for (resource, level), n in levels.items():
        per.setdefault(resource, {})[level] = per.get(resource, {}).get(level, 0) + n
    return sorted(per.items())


def judge(
    levels: Counter[tuple[str, str]], stages: Counter[str]
) -> tuple[list[Finding], list[CisItem], list[str]]:
    """(findings, CIS items, resources never seen)."""
    findings: list[Finding] = []
    seen = {r for r, _ in levels}
    leaked = sorted(
        {
            f"{r} at {lv}"
            for (r, lv), n in levels.items()
            if r in SECRET_BODIES and lv in BODY_LEVELS
        }
    )
    if leaked:
        findings.append(
            Finding(
                "sensitive-body",
                "problem",
                "requests for objects that hold secret values were logged with their bodies ("
                + ", ".join(leaked)
                + "): the audit log itself holds secret values (this report shows them "
                "redacted)",
                "put a rule at level Metadata for secrets, configmaps, tokenreviews and "
                "serviceaccounts/token before any rule that logs bodies",
            )
        )
    elif any(r in seen for r in SECRET_BODIES):
        findings.append(
            Finding(
                "sensitive-body",
                "ok",
                "objects that hold secret values were logged at Metadata at most: no secret "
                "value reached the log",
            )
        )
    if not levels:
        findings.append(Finding("evidence", "unknown", "no requests: nothing to judge"))
    received = stages.get("RequestReceived", 0)
    if received:
        findings.append(
            Finding(
                "request-received",
                "problem",
                f"{received:,} events at stage RequestReceived: the policy does not omit it, "
                "so every request is logged twice",
                "add `omitStages: [RequestReceived]` at the top level of the policy",
            )
        )
    elif levels:
        findings.append(
            Finding("request-received", "ok", "no RequestReceived events: the stage is omitted")
        )
    if "secrets" not in seen:
        findings.append(
            Finding(
                "no-secrets-rule",
                "unknown",
                "no request for secrets in the record: either nothing touched a secret or the "
                "policy drops them",
                'make sure a rule logs secrets at level Metadata (`resources: [{group: "", '
                'resources: ["secrets"]}]`)',
            )
        )
    never = [r for r in EXPECTED if r not in seen]
    cis = _cis(levels, stages, leaked, seen)
    return findings, cis, never


def _cis(
    levels: Counter[tuple[str, str]], stages: Counter[str], leaked: list[str], seen: set[str]
) -> list[CisItem]:
    has_events = bool(levels) or bool(stages)
    out = [
        CisItem(
            "1.2 (API server)",
            "Audit logging is enabled (--audit-log-path, or an audit webhook)",
            "supported" if has_events else "not shown by events",
            "this record exists" if has_events else "the record is empty",
        ),
        CisItem(
            "1.2 (API server)",
            "Audit log retention is set (--audit-log-maxage, -maxbackup, -maxsize)",
            "not shown by events",
            "retention is a flag of the API server; events cannot show it. Gaps in the "
            "record (section 1) can show logs that were lost",
        ),
        CisItem(
            "3.2.1",
            "Ensure that a minimal audit policy is created",
            "supported" if has_events else "not shown by events",
            "events were written, so a policy is in force"
            if has_events
            else "no events: no evidence of a policy",
        ),
    ]
    covered = [
        r for r in ("secrets", "pods/exec", "rolebindings", "clusterrolebindings") if r in seen
    ]
    if leaked:
        verdict, why = "contradicted", "secret values are logged (" + ", ".join(leaked) + ")"
    elif covered:
        verdict = "supported"
        why = "the record covers " + ", ".join(covered) + ", and no secret body is logged"
    else:
        verdict = "not shown by events"
        why = "no secrets, exec or RBAC requests in the record"
    out.append(
        CisItem("3.2.2", "Ensure that the audit policy covers key security concerns", verdict, why)
    )
    return out
