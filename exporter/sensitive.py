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
    resource = ev.resource
    if (
        resource != "secrets"
        and resource != "serviceaccounts"
        and not ev.subresource
        and ev.api_group != RBAC_GROUP
        and not ev.impersonated_user
        and ev.user_kind != "anonymous"
    ):
        return ()  # none of the tests below can hold: the common case
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
    if ev.user_kind == "anonymous" and not _public_endpoint(ev):
        out.append("anonymous")
    return tuple(out)


# Non-resource paths that default RBAC (system:public-info-viewer) lets anyone
# read: load balancers and probes hit them anonymously all day.
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")


def _public_endpoint(ev: AuditEvent) -> bool:
    if ev.resource or ev.verb != "get":
        return False
    path = ev.request_uri.split("?", 1)[0]
    return any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)
