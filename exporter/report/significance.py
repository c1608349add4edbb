"""Which principals and sensitive operations matter to an auditor.

Shared by the terminal summary and the HTML report, so both choose the same
rows. A sensitive operation *matters* when a person, an anonymous or
unauthenticated caller, or an unusual principal did it, when it is more than
reading or minting credentials (exec, RBAC writes, impersonation), or when a
rule matched it. The rest is routine controller traffic (kubelets minting
their pods' tokens, cert-manager reading its secrets): summarised, one line
per component.
"""

from __future__ import annotations

from ..event import AuditEvent

# Rank of a row among the sensitive operations that matter: people first.
RANK_PERSON = 0
RANK_PRINCIPAL = 1
RANK_ANONYMOUS = 2
RANK_ROUTINE = 3

CONTROL_PLANE_SA = "system:serviceaccount:kube-system:"
ROUTINE_CATEGORIES = frozenset({"secrets"})
# A rule match of these severities makes an operation matter (see rank)
MATTERING_SEVERITIES = frozenset({"critical", "warning"})


def is_control_plane(username: str, user_kind: str) -> bool:
    """Nodes, ``system:*`` components and kube-system's controllers."""
    return user_kind in ("node", "system") or username.startswith(CONTROL_PLANE_SA)


def is_reported_principal(username: str, user_kind: str) -> bool:
    """The principals "who did what" lists one by one: people and the service
    accounts that are not the control plane's."""
    return user_kind == "human" or (
        user_kind == "serviceaccount" and not username.startswith(CONTROL_PLANE_SA)
    )


def rank(ev: AuditEvent, cats: tuple[str, ...]) -> int:
    """RANK_* of one sensitive operation (``cats`` non-empty)."""
    kind = ev.user_kind
    if kind == "human":
        return RANK_PERSON
    if kind in ("anonymous", "unauthenticated"):
        return RANK_ANONYMOUS
    # an info-level match (inventory, a service account reading a secret) is
    # routine traffic described, not a reason to list it among what matters
    if ev.severity in MATTERING_SEVERITIES or not ROUTINE_CATEGORIES.issuperset(cats):
        return RANK_PRINCIPAL
    return RANK_ROUTINE


def component(ev: AuditEvent) -> str:
    """The line a routine operation is summarised under: kubelets together,
    every other principal by its own name."""
    if ev.user_kind == "node":
        return "system:node:* (kubelets)"
    return ev.username or "(unauthenticated)"
