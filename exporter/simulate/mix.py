"""The random traffic: who sends which request, and how often.

Each function sends one request (or a short burst) at time ``t``. ``MIX``
weighs them by request rate, shaped after a real cluster's log: gets
dominate, then updates, lists, creates and watches; kubelets and
controllers far outnumber people.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Callable
from itertools import accumulate
from typing import TYPE_CHECKING

from .cluster import (
    APP_NAMESPACES,
    BASIC_USER_REASON,
    CRITICAL_NAMESPACES,
    DISCOVERY_BURSTS,
    DISCOVERY_REASON,
    METADATA,
    REQUEST_RESPONSE,
    SCANNER_AGENTS,
    SCANNER_IPS,
    SCANNER_PATHS,
    US,
    WATCHED,
    WORKLOADS,
    Human,
    exec_verb,
    forbidden,
    object_failure,
    qualified,
)

if TYPE_CHECKING:
    from .traffic import Simulator

Action = Callable[["Simulator", int], None]

LIST_QUERY = "?limit=500&resourceVersion=0"  # a reflector's initial list
APPLY_QUERY = "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict"
CREATE_QUERY = "?fieldManager=kubectl-create&fieldValidation=Strict"


# --- kubelets ----------------------------------------------------------------------


def kubelet_pod_status(sim: Simulator, t: int) -> None:
    pod = sim.pod()
    kubelet = sim.kubelets[pod.node]
    sim.write()
    if sim.random() < 0.01:
        ref = sim.ref("pods", pod.namespace, pod.name, "status")
        status = object_failure(404, "NotFound", f'pods "{pod.name}" not found', ref)
        sim.call(
            t, kubelet, "patch", "pods", pod.namespace, pod.name, "status", code=404, status=status
        )
        return
    sim.call(t, kubelet, "patch", "pods", pod.namespace, pod.name, "status")


def kubelet_get_pod(sim: Simulator, t: int) -> None:
    pod = sim.pod()
    sim.call(t, sim.kubelets[pod.node], "get", "pods", pod.namespace, pod.name)


def kubelet_token(sim: Simulator, t: int) -> None:
    pod = sim.pod()
    sim.write()
    sim.token_request(t, pod, REQUEST_RESPONSE if pod.namespace == "sandbox" else METADATA)


def kubelet_event(sim: Simulator, t: int) -> None:
    pod = sim.pod()
    kubelet = sim.kubelets[pod.node]
    sim.write()
    if sim.random() < 0.3:
        name = f"{pod.name}.{sim.bits(64):016x}"[:63]
        sim.call(t, kubelet, "patch", "events", pod.namespace, name)
    else:
        sim.call(t, kubelet, "create", "events", pod.namespace, code=201)


def kubelet_misc(sim: Simulator, t: int) -> None:
    if sim.random() < 0.5:
        node = sim.choice(sim.workers)
        sim.call(t, sim.kubelets[node], "get", "csinodes", name=node)
        return
    pod = sim.pod()
    query = "?fieldSelector=metadata.name%3Dkube-root-ca.crt&limit=500&resourceVersion=0"
    sim.call(t, sim.kubelets[pod.node], "list", "configmaps", pod.namespace, query=query)


def watch(sim: Simulator, t: int) -> None:
    sim.watch(t)


# --- kube-controller-manager, kube-scheduler, the API server itself -------------------


def endpoints(sim: Simulator, t: int) -> None:
    pod = sim.pod()
    ns = pod.namespace
    if sim.random() < 0.25:
        actor = sim.controllers["endpoint-controller"]
        resource, name = "endpoints", pod.workload
    else:
        actor = sim.controllers["endpointslice-controller"]
        resource, name = "endpointslices", f"{pod.workload}-{sim.rs_hash[(ns, pod.workload)][:5]}"
    sim.write()
    if sim.random() < 0.03:
        message = (
            f'Operation cannot be fulfilled on {qualified(resource)} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again"
        )
        status = object_failure(409, "Conflict", message, sim.ref(resource, ns, name))
        sim.call(t, actor, "update", resource, ns, name, code=409, status=status)
        return
    sim.call(t, actor, "update", resource, ns, name)


def replicasets(sim: Simulator, t: int) -> None:
    r = sim.random()
    if r < 0.45:
        sim.replicaset_pod(t, failed_open=sim.random() < 0.02)
        return
    actor = sim.controllers["replicaset-controller"]
    pod = sim.pod(sim.choice(APP_NAMESPACES))
    ns = pod.namespace
    sim.write()
    if r < 0.65:
        sim.call(t, actor, "delete", "pods", ns, pod.name)
        return
    rs = f"{pod.workload}-{sim.rs_hash[(ns, pod.workload)]}"
    sim.call(t, actor, "update", "replicasets", ns, rs, "status")


def deployments(sim: Simulator, t: int) -> None:
    actor = sim.controllers["deployment-controller"]
    pod = sim.pod(sim.choice(APP_NAMESPACES))
    ns, name = pod.namespace, pod.workload
    sim.write()
    if sim.random() < 0.15:
        sim.call(t, actor, "patch", "replicasets", ns, f"{name}-{sim.rs_hash[(ns, name)]}")
        return
    sim.call(t, actor, "update", "deployments", ns, name, "status")


def discovery(sim: Simulator, t: int) -> None:
    """Controllers that follow API discovery (garbage collector, quota) re-read it."""
    name = "generic-garbage-collector" if sim.random() < 0.5 else "resourcequota-controller"
    actor = sim.controllers[name].but(reason=DISCOVERY_REASON)
    for path in sim.choice(DISCOVERY_BURSTS):
        t = sim.request(t, actor, "get", path, None, lat=500 + sim.randrange(2_000)) + 300


def garbage_collector(sim: Simulator, t: int) -> None:
    actor = sim.controllers["generic-garbage-collector"]
    pod = sim.pod(sim.choice(APP_NAMESPACES))
    ns = pod.namespace
    r = sim.random()
    if r < 0.1:
        sim.write()
        sim.call(t, actor, "delete", "pods", ns, pod.name)
        return
    resource = sim.choice(("pods", "replicasets", "deployments", "jobs", "controllerrevisions"))
    name = pod.workload
    if resource == "replicasets":
        name = f"{pod.workload}-{sim.rs_hash[(ns, pod.workload)]}"
    if r < 0.16:
        message = f'{qualified(resource)} "{name}" not found'
        status = object_failure(404, "NotFound", message, sim.ref(resource, ns, name))
        sim.call(t, actor, "get", resource, ns, name, code=404, status=status)
        return
    sim.call(t, actor, "get", resource, ns, name)


def autoscaler(sim: Simulator, t: int) -> None:
    actor = sim.controllers["horizontal-pod-autoscaler"]
    ns = sim.choice(("web", "orders"))
    workload = sim.choice(WORKLOADS[ns])[0]
    if sim.random() < 0.6:
        sim.call(t, actor, "get", "deployments", ns, workload, "scale")
        return
    sim.write()
    sim.call(t, actor, "update", "horizontalpodautoscalers", ns, workload, "status")


def jobs(sim: Simulator, t: int) -> None:
    ns = "data"
    sim.write()
    if sim.random() < 0.5:
        sim.call(
            t,
            sim.controllers["cronjob-controller"],
            "update",
            "cronjobs",
            ns,
            "etl-nightly",
            "status",
        )
        return
    name = f"etl-nightly-{28_570_000 + sim.randrange(9_999)}"
    sim.call(t, sim.controllers["job-controller"], "update", "jobs", ns, name, "status")


def controller_manager(sim: Simulator, t: int) -> None:
    actor = sim.kcm_informers
    r = sim.random()
    if r < 0.5:
        sim.call(t, actor, "get", "serviceaccounts", sim.choice(sim.namespaces), "default")
    elif r < 0.8:
        resource = sim.choice(("nodes", "persistentvolumes", "namespaces"))
        sim.call(t, actor, "list", resource, query=LIST_QUERY)
    else:
        aggregator = sim.controllers["clusterrole-aggregation-controller"]
        sim.call(t, aggregator, "get", "clusterroles", name=sim.choice(("admin", "edit", "view")))


def scheduler(sim: Simulator, t: int) -> None:
    pod = sim.pod()
    ns = pod.namespace
    sim.write()
    r = sim.random()
    if r < 0.5:
        sim.call(t, sim.scheduler, "create", "pods", ns, pod.name, "binding", code=201)
    elif r < 0.85:
        ref = {
            "resource": "events",
            "namespace": ns,
            "apiGroup": "events.k8s.io",
            "apiVersion": "v1",
        }
        sim.request(
            t, sim.scheduler, "create", f"/apis/events.k8s.io/v1/namespaces/{ns}/events", ref, 201
        )
    else:
        sim.call(t, sim.scheduler, "patch", "pods", ns, pod.name, "status")


_APISERVER_READS = (
    ("flowschemas", "exempt"),
    ("flowschemas", "catch-all"),
    ("flowschemas", "probes"),
    ("prioritylevelconfigurations", "workload-low"),
    ("prioritylevelconfigurations", "global-default"),
    ("clusterroles", "admin"),
    ("clusterroles", "edit"),
    ("clusterroles", "view"),
    ("clusterrolebindings", "cluster-admin"),
    ("clusterroles", "system:discovery"),
)


def apiserver(sim: Simulator, t: int) -> None:
    """Its own controllers on loopback: APF and RBAC bootstrap, the kubernetes service."""
    r = sim.random()
    if r < 0.55:
        resource, name = sim.choice(_APISERVER_READS)
        sim.call(t, sim.apiserver, "get", resource, name=name)
    elif r < 0.8:
        sim.call(
            t,
            sim.apiserver,
            "get",
            sim.choice(("endpoints", "endpointslices", "services")),
            "default",
            "kubernetes",
        )
    else:
        sim.call(t, sim.apiserver, "get", "namespaces", name=sim.choice(sim.namespaces))


# --- workloads' service accounts ----------------------------------------------------


def prometheus(sim: Simulator, t: int) -> None:
    actor = sim.workload_sa["monitoring:prometheus-k8s"]
    resource = sim.choice(("pods", "endpoints", "services", "endpointslices"))
    sim.call(t, actor, "list", resource, sim.choice(sim.namespaces), query=LIST_QUERY)


def kube_state_metrics(sim: Simulator, t: int) -> None:
    actor = sim.workload_sa["monitoring:kube-state-metrics"]
    sim.call(t, actor, "list", sim.choice(WATCHED), query=LIST_QUERY)


def ingress_nginx(sim: Simulator, t: int) -> None:
    actor = sim.workload_sa["ingress-nginx:ingress-nginx"]
    if sim.random() < 0.6:
        lease = ("leases", "ingress-nginx", "ingress-nginx-leader")
        if sim.random() < 0.5:
            sim.write()
            sim.call(t, actor, "update", *lease)
        else:
            sim.call(t, actor, "get", *lease)
        return
    sim.call(t, actor, "list", "ingresses", sim.choice(("web", "orders")), query=LIST_QUERY)


def cert_manager(sim: Simulator, t: int) -> None:
    actor = sim.workload_sa["cert-manager:cert-manager"]
    ns = sim.choice(("web", "orders", "payments", "ingress-nginx"))
    name = f"{sim.pod(ns).workload}-tls"
    r = sim.random()
    if r < 0.45:
        sim.call(t, actor, "get", "secrets", ns, name)
        return
    sim.write()
    if r < 0.6:
        sim.call(t, actor, "update", "secrets", ns, name)
    elif r < 0.85:
        sim.call(t, actor, "update", "leases", "kube-system", "cert-manager-controller")
    else:
        sim.call(t, actor, "update", "certificates", ns, name, "status")


def argocd(sim: Simulator, t: int) -> None:
    actor = sim.workload_sa["argocd:argocd-application-controller"]
    r = sim.random()
    if r < 0.4:
        sim.write()
        sim.call(
            t,
            actor,
            "patch",
            "applications",
            "argocd",
            sim.choice(("web", "orders", "payments", "monitoring")),
        )
    elif r < 0.6:
        name = sim.choice(("argocd-secret", "cluster-prod-eu1", "repo-platform"))
        sim.call(t, actor, "get", "secrets", "argocd", name)
    else:
        resource = sim.choice(
            ("deployments", "services", "configmaps", "ingresses", "servicemonitors")
        )
        sim.call(t, actor, "list", resource, sim.choice(APP_NAMESPACES), query="?limit=500")


def node_agents(sim: Simulator, t: int) -> None:
    if sim.random() < 0.5:
        node = sim.choice(sim.nodes)
        sim.call(t, sim.kube_proxy[node], "get", "nodes", name=node)
        return
    actor = sim.workload_sa["kube-system:coredns"]
    sim.call(
        t, actor, "list", sim.choice(("endpointslices", "services", "namespaces")), query=LIST_QUERY
    )


def metrics_server(sim: Simulator, t: int) -> None:
    """Delegated authentication and authorization for the metrics API."""
    actor = sim.workload_sa["kube-system:metrics-server"]
    resource = "tokenreviews" if sim.random() < 0.5 else "subjectaccessreviews"
    sim.call(t, actor, "create", resource, code=201)


def ci(sim: Simulator, t: int) -> None:
    actor = sim.workload_sa["ci:deployer"]
    ns = sim.choice(("web", "orders"))
    workload = sim.choice(WORKLOADS[ns])[0]
    if sim.random() < 0.5:
        sim.call(t, actor, "get", "deployments", ns, workload)
        return
    sim.write()
    sim.call(t, actor, "patch", "deployments", ns, workload, query=APPLY_QUERY)


def sandbox(sim: Simulator, t: int) -> None:
    """The sandbox's own service account, logged at RequestResponse by the policy."""
    pod = sim.pod("sandbox")
    actor = sim.workload_sa[f"sandbox:{pod.sa}"]
    r = sim.random()
    if r < 0.4:
        sim.token_review(t, actor)
    elif r < 0.7:
        sim.sandbox_secrets(t, actor)
    else:
        listing = {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(sim.rv)},
            "items": [],
        }
        sim.call(
            t,
            actor,
            "list",
            "pods",
            "sandbox",
            query="?limit=500",
            level=REQUEST_RESPONSE,
            response_object=listing,
        )


# --- health checks and the internet -----------------------------------------------------


def health(sim: Simulator, t: int) -> None:
    """The kubelet's probes of the API server pod, and the load balancer's checks."""
    path = sim.choice(("/livez", "/readyz", "/readyz", "/healthz"))
    actor = sim.probe if sim.random() < 0.5 else sim.choice(sim.load_balancers)
    sim.request(t, actor, "get", path, None, lat=300 + sim.randrange(1_500))


def internet_unauthorized(sim: Simulator, t: int) -> None:
    """A scanner with a made-up token: 401."""
    path, target = sim.choice(SCANNER_PATHS)
    verb, ref = scan_target(sim, target)
    sim.unauthorized(t, sim.choice(SCANNER_IPS), sim.choice(SCANNER_AGENTS), path, verb, ref)


def internet_anonymous(sim: Simulator, t: int) -> None:
    """A scanner without credentials: system:anonymous, refused except /version."""
    path, target = sim.choice(SCANNER_PATHS)
    anonymous = sim.probe.but(ips=[sim.choice(SCANNER_IPS)], ua=sim.choice(SCANNER_AGENTS))
    if path == "/version":
        sim.request(t, anonymous, "get", path, None, lat=400 + sim.randrange(900))
        return
    verb, ref = scan_target(sim, target)
    sim.forbid(t, anonymous, verb, path, ref)


def scan_target(
    sim: Simulator, target: tuple[str, str] | None
) -> tuple[str, dict[str, object] | None]:
    if target is None:
        return "get", None
    resource, ns = target
    return "list", sim.ref(resource, ns)


def panic(sim: Simulator, t: int) -> None:
    actor = sim.choice(sim.watchers)
    resource = sim.choice(("applications", "servicemonitors", "certificates"))
    sim.call(t, actor, "list", resource, sim.choice(APP_NAMESPACES), query="?limit=500", panic=True)


# --- people ------------------------------------------------------------------------------

# kubectl commands people run, repeated by how often they run them.
HUMAN_OPS = (
    *("get",) * 6,
    *("list",) * 9,
    *("logs",) * 3,
    *("apply",) * 2,
    "restart",
    *("secrets",) * 2,
    "exec",
    "portforward",
    "attach",
    "watch",
    "delete",
    "nodes",
    "namespaces",
    "clusterroles",
    "pod",
    "create-secret",
    "rolebinding",
    "can-i",
    "impersonate",
)
SUBRESOURCE = {"exec": "exec", "attach": "attach", "portforward": "portforward", "logs": "log"}


def human(sim: Simulator, t: int) -> None:
    person = sim.pick_human()
    ip = person.ips[0] if sim.random() < 0.6 else person.ips[1]
    if sim.random() < 0.3:
        t = kubectl_discovery(sim, t, person, ip)
    if person.role == "sre":
        ns = sim.choice(sim.namespaces)
    elif sim.random() < 0.85:
        ns = sim.choice(person.namespaces)
    else:
        ns = sim.choice(("payments", "kube-system", "monitoring", "data", "web"))
    op = sim.choice(HUMAN_OPS)
    if op == "impersonate" and person.role != "sre" and sim.random() < 0.8:
        op = "get"  # developers rarely try --as
    human_op(sim, t, person, ip, ns, op)


def kubectl_discovery(sim: Simulator, t: int, person: Human, ip: str) -> int:
    """kubectl's aggregated discovery, when its cache is cold."""
    actor = person.actor(ip)
    for path in ("/api?timeout=32s", "/apis?timeout=32s"):
        t = sim.request(t, actor, "get", path, None, lat=1_500 + sim.randrange(6_000))
        t += 2_000 + sim.randrange(8_000)
    return t


def human_op(sim: Simulator, t: int, person: Human, ip: str, ns: str, op: str) -> None:
    if op in ("nodes", "namespaces", "clusterroles"):
        reason = person.reason("", op)
        if reason is None:
            sim.forbid(t, person.actor(ip), "list", sim.uri(op, query="?limit=500"), sim.ref(op))
        else:
            sim.call(t, person.actor(ip, reason), "list", op, query="?limit=500")
        return
    if op == "can-i":
        actor = person.actor(ip, BASIC_USER_REASON)
        sim.call(t, actor, "create", "selfsubjectaccessreviews", code=201)
        return
    if op == "impersonate":
        impersonate(sim, t, person, ip, ns)
        return
    resource = (
        "deployments"
        if op in ("apply", "restart")
        else "rolebindings"
        if op == "rolebinding"
        else "pods"
    )
    if op in ("secrets", "create-secret"):
        resource = "secrets"
    reason = person.reason(ns, resource)
    if reason is None or (op == "secrets" and ns in CRITICAL_NAMESPACES and person.role != "sre"):
        refuse(sim, t, person, ip, ns, op)
        return
    actor = person.actor(ip, reason)
    pod = sim.pod(ns)
    if op == "get":
        if sim.random() < 0.08:
            name = f"{pod.workload}-{sim.suffix(5)}"  # a typo, or a pod gone
            status = object_failure(
                404, "NotFound", f'pods "{name}" not found', sim.ref("pods", ns, name)
            )
            sim.call(t, actor, "get", "pods", ns, name, code=404, status=status)
        else:
            sim.call(t, actor, "get", "pods", ns, pod.name)
    elif op == "list":
        resource = sim.choice(
            ("pods", "deployments", "services", "configmaps", "events", "ingresses", "jobs")
        )
        sim.call(t, actor, "list", resource, ns, query="?limit=500")
    elif op == "secrets":
        name = f"{pod.workload}-credentials"
        if ns == "sandbox":
            secret = sim.stored(sim.secret(ns, name, {"token": 32}), t - 3_600 * US)
            sim.call(
                t, actor, "get", "secrets", ns, name, level=REQUEST_RESPONSE, response_object=secret
            )
        else:
            sim.call(t, actor, "get", "secrets", ns, name)
    elif op in ("apply", "restart"):
        t = sim.call(t, actor, "get", "deployments", ns, pod.workload) + 4_000
        sim.write()
        query = APPLY_QUERY if op == "apply" else "?fieldManager=kubectl-rollout"
        sim.call(t, actor, "patch", "deployments", ns, pod.workload, query=query)
    elif op == "logs":
        if sim.random() < 0.3:
            query = f"?container={pod.container}&follow=true&tailLines=100"
            lat = (5 + sim.randrange(240)) * US + sim.randrange(US)
            sim.call(
                t,
                actor,
                "get",
                "pods",
                ns,
                pod.name,
                "log",
                query,
                lat=lat,
                started=3_000 + sim.randrange(20_000),
            )
        else:
            query = f"?container={pod.container}&tailLines=200"
            sim.call(
                t,
                actor,
                "get",
                "pods",
                ns,
                pod.name,
                "log",
                query,
                lat=20_000 + sim.randrange(200_000),
            )
    elif op in ("exec", "attach"):
        verb = exec_verb(person.ua) if op == "exec" else "create"
        command = "command=sh&" if op == "exec" else ""
        query = f"?{command}container={pod.container}&stdin=true&stdout=true&tty=true"
        lat = (8 + sim.randrange(600)) * US + sim.randrange(US)
        started = 30_000 + sim.randrange(40_000)
        sim.call(
            t, actor, verb, "pods", ns, pod.name, op, query, code=101, lat=lat, started=started
        )
    elif op == "portforward":
        lat = (20 + sim.randrange(1800)) * US + sim.randrange(US)
        started = 20_000 + sim.randrange(30_000)
        sim.call(
            t,
            actor,
            "create",
            "pods",
            ns,
            pod.name,
            "portforward",
            code=101,
            lat=lat,
            started=started,
        )
    elif op == "watch":
        lat = (4 + sim.randrange(170)) * US + sim.randrange(US)
        query = f"?resourceVersion={sim.rv}&watch=true"
        sim.call(
            t,
            actor,
            "watch",
            "pods",
            ns,
            query=query,
            lat=lat,
            started=2_000 + sim.randrange(8_000),
        )
    elif op == "delete":
        sim.write()
        sim.call(t, actor, "delete", "pods", ns, pod.name)
    elif op == "pod":
        privileged = sim.random() < 0.15
        sim.human_pod(t, person, ip, ns, privileged=privileged, compliant=sim.random() < 0.6)
    elif op == "create-secret":
        name = f"{sim.choice(('api', 'db', 'smtp', 'oauth'))}-{sim.suffix(4)}"
        sim.write()
        if ns == "sandbox":
            secret = sim.secret(ns, name, {"password": 24})
            sim.call(
                t,
                actor,
                "create",
                "secrets",
                ns,
                name,
                query=CREATE_QUERY,
                code=201,
                level=REQUEST_RESPONSE,
                request_object=secret,
                response_object=sim.stored(secret, t),
            )
        else:
            sim.request(
                t,
                actor,
                "create",
                sim.uri("secrets", ns, query=CREATE_QUERY),
                sim.ref("secrets", ns, name),
                201,
            )
    elif op == "rolebinding":
        name = f"{sim.choice(('view', 'edit'))}-{sim.suffix(4)}"
        group = "rbac.authorization.k8s.io"
        binding = {
            "kind": "RoleBinding",
            "apiVersion": f"{group}/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
            "subjects": [{"kind": "User", "apiGroup": group, "name": sim.choice(sim.humans).name}],
            "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": "view"},
        }
        sim.write()
        uri = sim.uri("rolebindings", ns, query=CREATE_QUERY)
        sim.request(
            t,
            actor,
            "create",
            uri,
            sim.ref("rolebindings", ns, name),
            201,
            level=REQUEST_RESPONSE,
            request_object=binding,
            response_object=sim.stored(binding, t),
        )


def refuse(sim: Simulator, t: int, person: Human, ip: str, ns: str, op: str) -> None:
    """The RBAC denial of what ``op`` would have done."""
    pod = sim.pod(ns)
    verb, resource, name, sub = "get", "pods", pod.name, SUBRESOURCE.get(op, "")
    if op == "list":
        verb, name = "list", ""
    elif op in ("apply", "restart"):
        verb, resource, name = "patch", "deployments", pod.workload
    elif op == "secrets":
        resource, name = "secrets", f"{pod.workload}-credentials"
    elif op == "create-secret":
        verb, resource, name = "create", "secrets", ""
    elif op == "rolebinding":
        verb, resource, name = "create", "rolebindings", ""
    elif op in ("pod",):
        verb, name = "create", ""
    elif op == "delete":
        verb = "delete"
    elif op == "watch":
        verb, name = "watch", ""
    elif op == "exec":
        verb = exec_verb(person.ua)
    elif op in ("attach", "portforward"):
        verb = "create"
    sim.forbid(
        t,
        person.actor(ip),
        verb,
        sim.uri(resource, ns, name, sub),
        sim.ref(resource, ns, name, sub),
    )


def impersonate(sim: Simulator, t: int, person: Human, ip: str, ns: str) -> None:
    """``kubectl --as``: SREs may (to check a developer's access); others are refused."""
    if person.role != "sre":
        target = sim.choice(sim.humans).name
        status = forbidden(person.name, "impersonate", sim.ref("users", name=target))
        sim.call(
            t,
            person.actor(ip),
            "list",
            "pods",
            ns,
            query="?limit=500",
            code=403,
            status=status,
            annotations={},
            impersonated={"username": target},
        )
        return
    other = sim.choice(sim.developers)
    impersonated = {"username": other.name, "groups": other.user["groups"]}
    reason = other.reason(ns, "pods")
    actor = person.actor(ip, reason or "")
    if reason is None:
        uri = sim.uri("pods", ns, query="?limit=500")
        sim.forbid(
            t, actor.but(reason=""), "list", uri, sim.ref("pods", ns), impersonated=impersonated
        )
        return
    sim.call(t, actor, "list", "pods", ns, query="?limit=500", impersonated=impersonated)


# Relative request rates of the random traffic.
MIX: tuple[tuple[float, Action], ...] = (
    (9.0, kubelet_pod_status),
    (5.0, kubelet_get_pod),
    (2.0, kubelet_token),
    (3.0, kubelet_event),
    (1.0, kubelet_misc),
    (1.3, watch),
    (6.0, endpoints),
    (2.2, replicasets),
    (1.5, deployments),
    (1.0, discovery),
    (2.0, garbage_collector),
    (1.0, autoscaler),
    (0.6, jobs),
    (2.0, controller_manager),
    (2.0, scheduler),
    (3.0, apiserver),
    (4.0, prometheus),
    (2.5, kube_state_metrics),
    (2.0, ingress_nginx),
    (2.5, cert_manager),
    (2.5, argocd),
    (1.2, node_agents),
    (1.0, metrics_server),
    (0.6, ci),
    (0.3, sandbox),
    (5.5, human),
    (3.0, health),
    (1.2, internet_unauthorized),
    (0.6, internet_anonymous),
    (0.01, panic),
)


class Mix:
    """Weighted choice of the next random request."""

    def __init__(self, sim: Simulator) -> None:
        self.actions = [action for _, action in MIX]
        self.cumulative = list(accumulate(weight for weight, _ in MIX))
        self.total = self.cumulative[-1]
        self.random = sim.random

    def pick(self) -> Action:
        return self.actions[bisect(self.cumulative, self.random() * self.total)]
