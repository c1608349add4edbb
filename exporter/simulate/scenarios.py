"""Scripted scenarios, each played once per stream at a fixed fraction of its
length (once per simulated hour when the stream is endless): first a few
showcases, so that every feature the exporter reads appears even in a short
stream, then the attacks a detection engine should find.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .cluster import (
    ADMIN_BINDING,
    ANONYMOUS_ATTACKER_IP,
    BASIC_USER_REASON,
    BRUTE_FORCE_FAILURES,
    BRUTE_FORCE_IP,
    DELETED,
    ESCALATED_USER,
    EXEC_TARGET,
    EXEC_USER,
    REQUEST_RESPONSE,
    SCANNER_PATHS,
    STOLEN_TOKEN_IP,
    US,
    Actor,
    forbidden,
)
from .mix import CREATE_QUERY, kubectl_discovery, scan_target

if TYPE_CHECKING:
    from .traffic import Simulator

Scenario = Callable[["Simulator", int], None]


def sandbox_secrets(sim: Simulator, t: int) -> None:
    """A developer creates, lists and reads secrets where the policy logs bodies."""
    frank = sim.human["frank@example.com"]
    ip = frank.ips[0]
    ns = "sandbox"
    actor = frank.actor(ip, frank.reason(ns, "secrets"))
    t = kubectl_discovery(sim, t, frank, ip)
    name = "playground-db"
    secret = sim.secret(ns, name, {"username": 8, "password": 24})
    sim.write()
    uri = sim.uri("secrets", ns, query=CREATE_QUERY)
    t = sim.request(
        t,
        actor,
        "create",
        uri,
        sim.ref("secrets", ns, name),
        201,
        level=REQUEST_RESPONSE,
        request_object=secret,
        response_object=sim.stored(secret, t),
    )
    t = sim.sandbox_secrets(t + 4 * US, actor)
    stored = sim.stored(secret, t - 7 * US)
    sim.call(
        t + 3 * US,
        actor,
        "get",
        "secrets",
        ns,
        name,
        level=REQUEST_RESPONSE,
        response_object=stored,
    )


def token_request(sim: Simulator, t: int) -> None:
    """A TokenRequest and a TokenReview at RequestResponse: tokens in the log."""
    pod = sim.pod("sandbox")
    sim.write()
    sim.token_request(t, pod, REQUEST_RESPONSE)
    sim.token_review(t + 2 * US, sim.workload_sa[f"sandbox:{pod.sa}"])


def pod_security(sim: Simulator, t: int) -> None:
    """A pod that violates restricted (audited), then a privileged one (refused)."""
    grace = sim.human["grace@example.com"]
    ip = grace.ips[1]
    t = kubectl_discovery(sim, t, grace, ip)
    sim.human_pod(t, grace, ip, "orders", privileged=False, compliant=False)
    sim.human_pod(t + 20 * US, grace, ip, "orders", privileged=True, compliant=False)


def failed_open(sim: Simulator, t: int) -> None:
    sim.replicaset_pod(t, failed_open=True)


def slow_list(sim: Simulator, t: int) -> None:
    actor = sim.workload_sa["monitoring:kube-state-metrics"]
    lat = 2_340_000 + sim.randrange(100_000)
    sim.call(t, actor, "list", "pods", query="?limit=500&resourceVersion=0", lat=lat)


def panic(sim: Simulator, t: int) -> None:
    actor = sim.workload_sa["argocd:argocd-application-controller"]
    lat = 3_000 + sim.randrange(4_000)
    sim.call(t, actor, "list", "applications", "argocd", query="?limit=500", lat=lat, panic=True)


def anonymous_allowed(sim: Simulator, t: int) -> None:
    """A forgotten ClusterRoleBinding lets system:anonymous read secrets."""
    reason = (
        'RBAC: allowed by ClusterRoleBinding "debug-anonymous" of ClusterRole "cluster-admin" '
        'to User "system:anonymous"'
    )
    public = sim.probe.but(ips=[ANONYMOUS_ATTACKER_IP], ua="curl/8.5.0")
    anonymous = public.but(reason=reason)
    t = sim.request(t, public, "get", "/version", None) + 3 * US
    t = sim.call(t, anonymous, "list", "namespaces") + 5 * US
    sim.call(t, anonymous, "list", "secrets", "kube-system")


def brute_force(sim: Simulator, t: int) -> None:
    """Forty 401s from one internet address in about a minute, then a person
    succeeds from the VPN."""
    paths = SCANNER_PATHS[:8]
    for _ in range(BRUTE_FORCE_FAILURES):
        path, target = sim.choice(paths)
        verb, ref = scan_target(sim, target)
        sim.unauthorized(t, BRUTE_FORCE_IP, "python-requests/2.31.0", path, verb, ref)
        t += 300_000 + sim.randrange(2_500_000)
    alice = sim.human["alice@example.com"]
    vpn = alice.ips[1]
    t = kubectl_discovery(sim, t + 20 * US, alice, vpn)
    sim.call(t, alice.actor(vpn), "list", "secrets", "kube-system", query="?limit=500")


def stolen_token(sim: Simulator, t: int) -> None:
    """Prometheus's pod-bound token used with curl and kubectl from the internet."""
    sa = sim.workload_sa["monitoring:prometheus-k8s"]
    curl = sa.but(ips=[STOLEN_TOKEN_IP], ua="curl/8.5.0")
    t = sim.call(t, curl, "list", "pods", query="?limit=500") + 4 * US
    t = sim.forbid(t, curl, "list", "/api/v1/secrets?limit=500", sim.ref("secrets")) + 3 * US
    kubectl = curl.but(
        ua="kubectl/v1.30.2 (linux/amd64) kubernetes/3968350", reason=BASIC_USER_REASON
    )
    sim.call(t, kubectl, "create", "selfsubjectrulesreviews", code=201)


def exec_database(sim: Simulator, t: int) -> None:
    """A developer opens a psql shell in the payments database for a minute or two."""
    dave = sim.human[EXEC_USER]
    ns, pod = EXEC_TARGET
    ip = dave.ips[0]
    reason = (
        'RBAC: allowed by RoleBinding "payments-oncall/payments" of ClusterRole "edit" '
        f'to User "{EXEC_USER}"'
    )
    actor = dave.actor(ip, reason)
    t = kubectl_discovery(sim, t, dave, ip)
    t = sim.call(t, actor, "list", "pods", ns, query="?limit=500") + 6 * US
    query = (
        "?command=psql&command=-U&command=postgres&container=postgres"
        "&stdin=true&stdout=true&tty=true"
    )
    lat = (60 + sim.randrange(90)) * US + sim.randrange(US)
    started = 40_000 + sim.randrange(30_000)
    sim.call(t, actor, "get", "pods", ns, pod, "exec", query, code=101, lat=lat, started=started)


def cluster_admin_binding(sim: Simulator, t: int) -> None:
    """The CI service account binds cluster-admin to a developer, who uses it."""
    ci = sim.workload_sa["ci:deployer"]
    reason = (
        'RBAC: allowed by ClusterRoleBinding "ci-deployer" of ClusterRole "ci-deployer" '
        'to ServiceAccount "deployer/ci"'
    )
    actor = ci.but(reason=reason)
    group = "rbac.authorization.k8s.io"
    binding = {
        "kind": "ClusterRoleBinding",
        "apiVersion": f"{group}/v1",
        "metadata": {"name": ADMIN_BINDING, "creationTimestamp": None},
        "subjects": [{"kind": "User", "apiGroup": group, "name": ESCALATED_USER}],
        "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": "cluster-admin"},
    }
    sim.write()
    uri = sim.uri("clusterrolebindings", query=CREATE_QUERY)
    t = sim.request(
        t,
        actor,
        "create",
        uri,
        sim.ref("clusterrolebindings", name=ADMIN_BINDING),
        201,
        level=REQUEST_RESPONSE,
        request_object=binding,
        response_object=sim.stored(binding, t),
    )
    carol = sim.human[ESCALATED_USER]
    vpn = carol.ips[1]
    t = kubectl_discovery(sim, t + 45 * US, carol, vpn)
    admin_reason = (
        f'RBAC: allowed by ClusterRoleBinding "{ADMIN_BINDING}" of ClusterRole "cluster-admin" '
        f'to User "{ESCALATED_USER}"'
    )
    sim.call(t, carol.actor(vpn, admin_reason), "list", "secrets", query="?limit=500")


def impersonation(sim: Simulator, t: int) -> None:
    """One impersonation refused; then the new cluster-admin acts as the
    garbage collector, reading payments' secrets and removing a binding."""
    frank = sim.human["frank@example.com"]
    ip = frank.ips[0]
    t = kubectl_discovery(sim, t, frank, ip)
    target = {"username": "system:admin", "groups": ["system:masters"]}
    status = forbidden(frank.name, "impersonate", sim.ref("users", name="system:admin"))
    sim.call(
        t,
        frank.actor(ip),
        "get",
        "secrets",
        "kube-system",
        "admin-token",
        code=403,
        status=status,
        annotations={},
        impersonated=target,
    )
    carol = sim.human[ESCALATED_USER]
    gc = sim.controllers["generic-garbage-collector"]
    impersonated: dict[str, Any] = {"username": gc.name, "groups": gc.user["groups"]}
    admin = Actor(carol.user, [carol.ips[1]], carol.ua, gc.reason)
    ns = EXEC_TARGET[0]
    t = sim.call(
        t + 30 * US, admin, "list", "secrets", ns, query="?limit=500", impersonated=impersonated
    )
    sim.write()
    sim.call(
        t + 8 * US,
        admin,
        "delete",
        "rolebindings",
        ns,
        "payments-oncall",
        impersonated=impersonated,
        level=REQUEST_RESPONSE,
        response_object=DELETED,
    )


PLAN: tuple[tuple[float, Scenario], ...] = (
    (0.03, sandbox_secrets),
    (0.05, token_request),
    (0.07, pod_security),
    (0.09, failed_open),
    (0.11, slow_list),
    (0.13, anonymous_allowed),
    (0.20, brute_force),
    (0.30, stolen_token),
    (0.40, exec_database),
    (0.55, cluster_admin_binding),
    (0.70, impersonation),
    (0.85, panic),
)


def schedule(sim: Simulator) -> None:
    """Add each scenario as a request source of the simulator."""
    endless = sim.opt.events == 0
    span = int((sim.opt.events / sim.opt.rate if not endless else 3600.0) * US)
    for fraction, scenario in PLAN:
        sim.add_source(
            sim.start + int(span * fraction) + sim.randrange(US),
            _source(sim, scenario, span, endless),
        )


def _source(
    sim: Simulator, scenario: Scenario, period: int, repeat: bool
) -> Callable[[int], int | None]:
    def run(t: int) -> int | None:
        scenario(sim, t)
        return t + period if repeat else None

    return run
