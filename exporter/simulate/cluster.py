"""The simulated cluster: its networks, nodes, workloads, people and clients,
and the Status objects its API server answers with.

Everything here is fixed data or a small value class; the generator in
:mod:`.traffic` draws from it.
"""

from __future__ import annotations

from typing import Any

# --- networks and names that tests and detection rules may rely on -------------

POD_CIDR = "10.244.0.0/16"
NODE_CIDR = "10.0.0.0/16"
OFFICE_CIDR = "192.0.2.0/24"
VPN_CIDR = "10.8.0.0/16"
# Documentation ranges (RFC 5737), so no real party is named.
INTERNET_CIDRS = ("203.0.113.0/24", "198.51.100.0/24")
TRUSTED_CIDRS = (NODE_CIDR, POD_CIDR, OFFICE_CIDR, VPN_CIDR)
CRITICAL_NAMESPACES = ("payments", "kube-system")

BRUTE_FORCE_IP = "203.0.113.45"
BRUTE_FORCE_FAILURES = 40
ANONYMOUS_ATTACKER_IP = "198.51.100.77"
STOLEN_TOKEN_IP = "198.51.100.23"
STOLEN_TOKEN_USER = "system:serviceaccount:monitoring:prometheus-k8s"
EXEC_USER = "dave@example.com"
EXEC_TARGET = ("payments", "postgres-0")
ESCALATING_SA = "system:serviceaccount:ci:deployer"
ADMIN_BINDING = "carol-admin"
ESCALATED_USER = "carol@example.com"

K8S_VERSION = "v1.30.2"
K8S_COMMIT = "3968350"
PLATFORM = f"(linux/amd64) kubernetes/{K8S_COMMIT}"

US = 1_000_000  # event time is in integer microseconds
# Audit levels of the simulated policy: RequestResponse for pod and RBAC
# writes and for anything in (or by) namespace sandbox; Metadata otherwise.
METADATA = "Metadata"
REQUEST_RESPONSE = "RequestResponse"

DECISION = "authorization.k8s.io/decision"
REASON = "authorization.k8s.io/reason"

# --- identities ----------------------------------------------------------------


class Actor:
    """Who sends a request: the audit ``user``, from where, with which client,
    and the annotations of an allowed request. Shared by many events: read-only."""

    __slots__ = ("allowed", "ips", "ua", "user")

    def __init__(self, user: dict[str, Any], ips: list[str], ua: str, reason: str = "") -> None:
        self.user = user
        self.ips = ips
        self.ua = ua
        self.allowed: dict[str, str] = {DECISION: "allow", REASON: reason}

    @property
    def name(self) -> str:
        name: str = self.user.get("username", "")
        return name

    @property
    def reason(self) -> str:
        return self.allowed[REASON]

    def but(
        self, *, ips: list[str] | None = None, ua: str | None = None, reason: str | None = None
    ) -> Actor:
        """The same user from elsewhere, with another client or RBAC reason."""
        return Actor(
            self.user,
            self.ips if ips is None else ips,
            self.ua if ua is None else ua,
            self.reason if reason is None else reason,
        )


class Pod:
    __slots__ = ("container", "image", "ip", "name", "namespace", "node", "sa", "workload")

    def __init__(
        self,
        namespace: str,
        name: str,
        workload: str,
        node: str,
        ip: str,
        sa: str,
        container: str,
        image: str,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.workload = workload
        self.node = node
        self.ip = ip
        self.sa = sa
        self.container = container
        self.image = image


class Human:
    """A person using kubectl (or k9s) from the office or the VPN."""

    __slots__ = ("actors", "ips", "name", "namespaces", "role", "ua", "user")

    def __init__(
        self,
        name: str,
        groups: tuple[str, ...],
        ua: str,
        ips: list[str],
        role: str,
        namespaces: tuple[str, ...],
    ) -> None:
        self.name = name
        self.user: dict[str, Any] = {"username": name, "groups": [*groups, "system:authenticated"]}
        self.ips = ips
        self.ua = ua
        self.role = role
        self.namespaces = namespaces
        reason = self.reason("") or ""
        self.actors = {ip: Actor(self.user, [ip], ua, reason) for ip in ips}

    def actor(self, ip: str, reason: str | None = None) -> Actor:
        actor = self.actors[ip]
        return actor if reason is None else actor.but(reason=reason)

    def reason(self, namespace: str, resource: str = "") -> str | None:
        """The RBAC reason when this person may act there, None when forbidden."""
        if self.role == "sre":
            return (
                'RBAC: allowed by ClusterRoleBinding "sre-cluster-admin" of ClusterRole '
                '"cluster-admin" to Group "sre"'
            )
        if resource in RBAC_RESOURCES or resource in CLUSTER_ONLY:
            return None
        if namespace and namespace in self.namespaces:
            group = self.user["groups"][0]
            return (
                f'RBAC: allowed by RoleBinding "{group}-edit/{namespace}" of ClusterRole "edit" '
                f'to Group "{group}"'
            )
        if not namespace:
            return DISCOVERY_REASON
        return None


RBAC_RESOURCES = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})
CLUSTER_ONLY = frozenset({"nodes", "namespaces", "persistentvolumes"})

DISCOVERY_REASON = (
    'RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole "system:discovery" '
    'to Group "system:authenticated"'
)
BASIC_USER_REASON = (
    'RBAC: allowed by ClusterRoleBinding "system:basic-user" of ClusterRole "system:basic-user" '
    'to Group "system:authenticated"'
)
PUBLIC_INFO_REASON = (
    'RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole '
    '"system:public-info-viewer" to Group "system:unauthenticated"'
)


def controller_reason(name: str) -> str:
    return (
        f'RBAC: allowed by ClusterRoleBinding "system:controller:{name}" of ClusterRole '
        f'"system:controller:{name}" to ServiceAccount "{name}/kube-system"'
    )


def workload_reason(ns: str, sa: str) -> str:
    if ns in APP_NAMESPACES:
        return (
            f'RBAC: allowed by RoleBinding "{sa}/{ns}" of Role "{sa}" to ServiceAccount "{sa}/{ns}"'
        )
    return (
        f'RBAC: allowed by ClusterRoleBinding "{sa}" of ClusterRole "{sa}" '
        f'to ServiceAccount "{sa}/{ns}"'
    )


def exec_verb(user_agent: str) -> str:
    """kubectl 1.30 runs exec over WebSocket (a GET); other clients over SPDY (a POST)."""
    return "get" if user_agent.startswith("kubectl/v1.30") else "create"


# --- workloads -------------------------------------------------------------------

# namespace -> (workload, kind, replicas, service account, container, image)
Workload = tuple[str, str, int, str, str, str]
WORKLOADS: dict[str, tuple[Workload, ...]] = {
    "kube-system": (
        ("coredns", "Deployment", 2, "coredns", "coredns",
         "registry.k8s.io/coredns/coredns:v1.11.1"),
        ("metrics-server", "Deployment", 1, "metrics-server", "metrics-server",
         "registry.k8s.io/metrics-server/metrics-server:v0.7.1"),
    ),
    "monitoring": (
        ("prometheus-k8s", "StatefulSet", 2, "prometheus-k8s", "prometheus",
         "quay.io/prometheus/prometheus:v2.51.2"),
        ("kube-state-metrics", "Deployment", 1, "kube-state-metrics", "kube-state-metrics",
         "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.12.0"),
        ("grafana", "Deployment", 1, "grafana", "grafana", "docker.io/grafana/grafana:10.4.2"),
    ),
    "ingress-nginx": (
        ("ingress-nginx-controller", "Deployment", 2, "ingress-nginx", "controller",
         "registry.k8s.io/ingress-nginx/controller:v1.10.1"),
    ),
    "cert-manager": (
        ("cert-manager", "Deployment", 1, "cert-manager", "cert-manager-controller",
         "quay.io/jetstack/cert-manager-controller:v1.14.5"),
        ("cert-manager-webhook", "Deployment", 1, "cert-manager-webhook", "cert-manager-webhook",
         "quay.io/jetstack/cert-manager-webhook:v1.14.5"),
    ),
    "argocd": (
        ("argocd-application-controller", "StatefulSet", 1, "argocd-application-controller",
         "argocd-application-controller", "quay.io/argoproj/argocd:v2.10.9"),
        ("argocd-server", "Deployment", 1, "argocd-server", "argocd-server",
         "quay.io/argoproj/argocd:v2.10.9"),
    ),
    "web": (
        ("frontend", "Deployment", 3, "frontend", "frontend",
         "registry.example.com/web/frontend:4.12.0"),
        ("api-gateway", "Deployment", 2, "api-gateway", "gateway",
         "registry.example.com/web/api-gateway:2.3.1"),
    ),
    "orders": (
        ("orders-api", "Deployment", 3, "orders-api", "api",
         "registry.example.com/orders/api:1.44.2"),
        ("orders-worker", "Deployment", 2, "orders-worker", "worker",
         "registry.example.com/orders/worker:1.44.2"),
    ),
    "payments": (
        ("payments-api", "Deployment", 2, "payments-api", "api",
         "registry.example.com/payments/api:3.8.0"),
        ("postgres", "StatefulSet", 1, "postgres", "postgres", "docker.io/library/postgres:16.2"),
    ),
    "data": (
        ("redis", "StatefulSet", 1, "redis", "redis", "docker.io/library/redis:7.2.4"),
        ("etl-runner", "Deployment", 1, "etl-runner", "etl", "registry.example.com/data/etl:0.9.3"),
    ),
    "ci": (
        ("runner", "Deployment", 2, "deployer", "runner", "registry.example.com/ci/runner:2.316.1"),
    ),
    "sandbox": (
        ("playground", "Deployment", 1, "playground", "shell", "docker.io/library/busybox:1.36"),
    ),
}  # fmt: skip

APP_NAMESPACES = ("web", "orders", "payments", "data", "sandbox")
# Pod Security enforce level per namespace (the rest: baseline; all audit restricted).
PSA_LEVEL = {"kube-system": "privileged", "monitoring": "baseline", "ingress-nginx": "baseline"}

# Workload service accounts that run cluster-wide informers.
WATCHERS = (
    "monitoring:prometheus-k8s",
    "monitoring:kube-state-metrics",
    "ingress-nginx:ingress-nginx",
    "cert-manager:cert-manager",
    "argocd:argocd-application-controller",
    "kube-system:coredns",
)

WORKLOAD_AGENTS = {
    "monitoring:prometheus-k8s": "Prometheus/2.51.2",
    "monitoring:kube-state-metrics": "kube-state-metrics/v2.12.0 (linux/amd64) kubernetes/$Format",
    "monitoring:grafana": "Grafana/10.4.2",
    "ingress-nginx:ingress-nginx":
        "nginx-ingress-controller/v1.10.1 (linux/amd64) ingress-nginx/4fb5aac",
    "cert-manager:cert-manager":
        "cert-manager-controller/v1.14.5 (linux/amd64) cert-manager/0a0b5f4",
    "cert-manager:cert-manager-webhook":
        "cert-manager-webhook/v1.14.5 (linux/amd64) cert-manager/0a0b5f4",
    "argocd:argocd-application-controller":
        "argocd-application-controller/v2.10.9+c071af8 (linux/amd64) kubernetes/$Format",
    "argocd:argocd-server": "argocd-server/v2.10.9+c071af8 (linux/amd64) kubernetes/$Format",
    "kube-system:coredns": "coredns/v1.11.1 (linux/amd64) kubernetes/$Format",
    "kube-system:metrics-server": "metrics-server/v0.7.1 (linux/amd64) kubernetes/$Format",
    "ci:deployer": "kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b",
    "sandbox:playground": "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
}  # fmt: skip

CONTROLLERS = (
    "replicaset-controller",
    "deployment-controller",
    "endpointslice-controller",
    "endpoint-controller",
    "generic-garbage-collector",
    "resourcequota-controller",
    "node-controller",
    "job-controller",
    "cronjob-controller",
    "horizontal-pod-autoscaler",
    "statefulset-controller",
    "namespace-controller",
    "clusterrole-aggregation-controller",
)

# --- people ------------------------------------------------------------------------

# username, groups, client, office host (192.0.2.x), VPN address, role, namespaces
HUMANS: tuple[tuple[str, tuple[str, ...], str, int, str, str, tuple[str, ...]], ...] = (
    (
        "alice@example.com",
        ("sre",),
        "kubectl/v1.30.2 (darwin/arm64) kubernetes/3968350",
        21,
        "10.8.1.21",
        "sre",
        (),
    ),
    (
        "bob@example.com",
        ("sre",),
        "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225",
        22,
        "10.8.1.22",
        "sre",
        (),
    ),
    (
        "carol@example.com",
        ("developers",),
        "kubectl/v1.30.1 (darwin/arm64) kubernetes/6911225",
        31,
        "10.8.2.31",
        "dev",
        ("orders", "web"),
    ),
    (
        "dave@example.com",
        ("developers",),
        "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225",
        32,
        "10.8.2.32",
        "dev",
        ("web", "orders"),
    ),
    (
        "erin@example.com",
        ("data-engineers",),
        "kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b",
        41,
        "10.8.3.41",
        "dev",
        ("data",),
    ),
    (
        "frank@example.com",
        ("developers",),
        "kubectl/v1.30.2 (windows/amd64) kubernetes/3968350",
        33,
        "10.8.2.33",
        "dev",
        ("web", "sandbox"),
    ),
    (
        "grace@example.com",
        ("developers",),
        "k9s/v0.32.4 (darwin/arm64) kubernetes/$Format",
        34,
        "10.8.2.34",
        "dev",
        ("orders", "sandbox"),
    ),
)

SCANNER_IPS = (
    *(f"203.0.113.{i}" for i in (9, 17, 38, 61, 99, 130, 177, 201, 222, 250)),
    *(f"198.51.100.{i}" for i in (3, 14, 59, 88, 140, 161, 205, 244)),
)
SCANNER_AGENTS = (
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "curl/8.5.0",
    "Mozilla/5.0 zgrab/0.x",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "",
)
# path, and (resource, namespace) when it is a resource request
SCANNER_PATHS: tuple[tuple[str, tuple[str, str] | None], ...] = (
    ("/", None),
    ("/version", None),
    ("/api", None),
    ("/apis", None),
    ("/api/v1/pods", ("pods", "")),
    ("/api/v1/namespaces/kube-system/secrets", ("secrets", "kube-system")),
    ("/api/v1/namespaces/default/pods", ("pods", "default")),
    ("/apis/apps/v1/deployments", ("deployments", "")),
    ("/.env", None),
    ("/metrics", None),
    ("/openapi/v2", None),
)
LOAD_BALANCER_IPS = ("10.0.0.4", "10.0.0.5")

# --- the API -------------------------------------------------------------------------

# resource -> (API group, version, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "pods": ("", "v1", True),
    "services": ("", "v1", True),
    "endpoints": ("", "v1", True),
    "configmaps": ("", "v1", True),
    "secrets": ("", "v1", True),
    "events": ("", "v1", True),
    "serviceaccounts": ("", "v1", True),
    "persistentvolumeclaims": ("", "v1", True),
    "namespaces": ("", "v1", False),
    "nodes": ("", "v1", False),
    "persistentvolumes": ("", "v1", False),
    "users": ("", "v1", False),  # impersonation checks
    "deployments": ("apps", "v1", True),
    "replicasets": ("apps", "v1", True),
    "statefulsets": ("apps", "v1", True),
    "daemonsets": ("apps", "v1", True),
    "controllerrevisions": ("apps", "v1", True),
    "jobs": ("batch", "v1", True),
    "cronjobs": ("batch", "v1", True),
    "ingresses": ("networking.k8s.io", "v1", True),
    "networkpolicies": ("networking.k8s.io", "v1", True),
    "endpointslices": ("discovery.k8s.io", "v1", True),
    "leases": ("coordination.k8s.io", "v1", True),
    "horizontalpodautoscalers": ("autoscaling", "v2", True),
    "poddisruptionbudgets": ("policy", "v1", True),
    "roles": ("rbac.authorization.k8s.io", "v1", True),
    "rolebindings": ("rbac.authorization.k8s.io", "v1", True),
    "clusterroles": ("rbac.authorization.k8s.io", "v1", False),
    "clusterrolebindings": ("rbac.authorization.k8s.io", "v1", False),
    "customresourcedefinitions": ("apiextensions.k8s.io", "v1", False),
    "validatingwebhookconfigurations": ("admissionregistration.k8s.io", "v1", False),
    "flowschemas": ("flowcontrol.apiserver.k8s.io", "v1", False),
    "prioritylevelconfigurations": ("flowcontrol.apiserver.k8s.io", "v1", False),
    "csinodes": ("storage.k8s.io", "v1", False),
    "storageclasses": ("storage.k8s.io", "v1", False),
    "runtimeclasses": ("node.k8s.io", "v1", False),
    "certificates": ("cert-manager.io", "v1", True),
    "certificaterequests": ("cert-manager.io", "v1", True),
    "applications": ("argoproj.io", "v1alpha1", True),
    "servicemonitors": ("monitoring.coreos.com", "v1", True),
    "tokenreviews": ("authentication.k8s.io", "v1", False),
    "selfsubjectaccessreviews": ("authorization.k8s.io", "v1", False),
    "selfsubjectrulesreviews": ("authorization.k8s.io", "v1", False),
    "subjectaccessreviews": ("authorization.k8s.io", "v1", False),
}

# What informers watch.
WATCHED = (
    "pods",
    "services",
    "endpointslices",
    "configmaps",
    "secrets",
    "nodes",
    "namespaces",
    "deployments",
    "replicasets",
    "leases",
    "ingresses",
    "jobs",
    "serviceaccounts",
    "persistentvolumeclaims",
)

DISCOVERY_BURSTS = (
    ("/api", "/apis"),
    ("/api/v1", "/apis/apps/v1", "/apis/batch/v1", "/apis/networking.k8s.io/v1"),
    ("/apis/discovery.k8s.io/v1", "/apis/coordination.k8s.io/v1", "/apis/policy/v1"),
    ("/apis/cert-manager.io/v1", "/apis/argoproj.io/v1alpha1", "/apis/monitoring.coreos.com/v1"),
    ("/apis/rbac.authorization.k8s.io/v1", "/apis/storage.k8s.io/v1", "/apis/autoscaling/v2"),
)


def qualified(resource: str) -> str:
    """``deployments.apps`` for a group resource, ``pods`` for the core group."""
    group = RESOURCES.get(resource, ("", "v1", True))[0]
    return f"{resource}.{group}" if group else resource


# --- answers ---------------------------------------------------------------------------

STATUS_OK: dict[int, dict[str, Any]] = {
    code: {"metadata": {}, "code": code} for code in (101, 200, 201)
}
UNAUTHORIZED: dict[str, Any] = {
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}
DELETED: dict[str, Any] = {"metadata": {}, "status": "Success", "code": 200}
PANIC: dict[str, Any] = {
    "metadata": {},
    "status": "Failure",
    "message": "APIServer panic'd: runtime error: invalid memory address or nil pointer "
    "dereference",
    "reason": "InternalError",
    "code": 500,
}


def forbidden(
    username: str, verb: str, ref: dict[str, Any] | None, path: str = "", reason: str = ""
) -> dict[str, Any]:
    """The Status of an authorization denial (responsewriters.Forbidden, errors.NewForbidden)."""
    details: dict[str, Any] = {}
    if ref is None:
        message = f'forbidden: User "{username}" cannot {verb} path "{path}"'
    else:
        resource = ref["resource"]
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        group = ref.get("apiGroup", "")
        ns = ref.get("namespace", "")
        scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
        why = (
            f'User "{username}" cannot {verb} resource "{resource}" in API group "{group}" {scope}'
        )
        name = ref.get("name", "")
        what = qualified(ref["resource"])
        message = f'{what} "{name}" is forbidden: {why}' if name else f"{what} is forbidden: {why}"
        if name:
            details["name"] = name
        if group:
            details["group"] = group
        details["kind"] = ref["resource"]
    if reason:
        message += f": {reason}"
    return failure(403, "Forbidden", message, details)


def failure(code: int, reason: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


def object_failure(code: int, reason: str, message: str, ref: dict[str, Any]) -> dict[str, Any]:
    """A Status about one object (NotFound, Conflict), with its details."""
    details: dict[str, Any] = {}
    if ref.get("name"):
        details["name"] = ref["name"]
    if ref.get("apiGroup"):
        details["group"] = ref["apiGroup"]
    details["kind"] = ref["resource"]
    return failure(code, reason, message, details)


RESTRICTED_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
