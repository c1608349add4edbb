"""Which requests an auditor calls sensitive, by category.

Used by the metrics (sensitive_operations_total) and by the replay report.
Categories are fixed so the metric label stays bounded.
"""

from __future__ import annotations

from .event import AuditEvent

CATEGORIES = ("secrets", "exec", "rbac", "impersonation", "anonymous")

RBAC_GROUP = "rbac.authorization.k8s.io"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Interactive access into a running container or through it.
EXEC_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})


def categories(ev: AuditEvent) -> tuple[str, ...]:
    """The sensitive categories of one request (often none)."""
    out: list[str] = []
    # Secrets, and TokenRequests (serviceaccounts/token) that mint credentials.
    if ev.resource == "secrets" or (ev.resource == "serviceaccounts" and ev.subresource == "token"):
        out.append("secrets")
    if ev.subresource in EXEC_SUBRESOURCES:
        out.append("exec")
    if ev.api_group == RBAC_GROUP and ev.verb in WRITE_VERBS:
        out.append("rbac")
    if ev.impersonated_user:
        out.append("impersonation")
    if ev.user_kind == "anonymous":
        out.append("anonymous")
    return tuple(out)
