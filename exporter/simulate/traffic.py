"""The generator: requests over event time, each written as the API server's
audit events for it, in stage-timestamp order.

Two heaps drive it. ``sources`` holds the next request time of each request
source (a node's lease loop, a leader election, the random traffic, each
scripted scenario); ``out`` holds emitted events until their stage time has
come, so the ResponseComplete of a watch opened minutes ago comes out between
the requests of now. Time is in integer microseconds.
"""

from __future__ import annotations

import base64
import heapq
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import orjson

from . import mix, scenarios
from .cluster import (
    CONTROLLERS,
    DECISION,
    HUMANS,
    K8S_VERSION,
    LOAD_BALANCER_IPS,
    METADATA,
    PANIC,
    PLATFORM,
    PSA_LEVEL,
    PUBLIC_INFO_REASON,
    REASON,
    REQUEST_RESPONSE,
    RESOURCES,
    RESTRICTED_SECURITY_CONTEXT,
    STATUS_OK,
    UNAUTHORIZED,
    US,
    WATCHED,
    WATCHERS,
    WORKLOAD_AGENTS,
    WORKLOADS,
    Actor,
    Human,
    Pod,
    controller_reason,
    forbidden,
    workload_reason,
)

DEFAULT_START = "2024-05-01T10:00:00Z"
DEFAULT_RATE = 50.0  # events per second of event time
DEFAULT_NODES = 6
DEFAULT_EVENTS = 10_000

V1 = "audit.k8s.io/v1"
LATENCY = "apiserver.latency.k8s.io/"
PSA_ENFORCE = "pod-security.kubernetes.io/enforce-policy"
PSA_AUDIT = "pod-security.kubernetes.io/audit-violations"
FAILED_OPEN = "failed-open.validating.webhook.admission.k8s.io/round_0_index_"
# The API server adds the latency annotations to requests slower than this.
SLOW_US = 500_000
# Median latency per verb (µs); the tail is exponential, 0.6 % are slow.
LATENCY_US = {
    "get": 1_600,
    "list": 7_000,
    "create": 6_500,
    "update": 4_500,
    "patch": 5_500,
    "delete": 6_000,
    "deletecollection": 25_000,
    "watch": 1_200,
}
SLOW_SHARE = 0.006
# Characters Kubernetes uses for generated name suffixes.
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True, slots=True)
class Options:
    """What to simulate. Equal options give an identical stream."""

    events: int = DEFAULT_EVENTS  # stop after this many events; 0 = endless
    seed: int = 1
    start: float = datetime.fromisoformat(DEFAULT_START).timestamp()  # epoch seconds
    rate: float = DEFAULT_RATE  # mean events per second of event time
    nodes: int = DEFAULT_NODES  # worker nodes, besides three control-plane nodes
    request_received: bool = True  # False: the policy omits the RequestReceived stage
    attacks: bool = True  # the scripted attack scenarios

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError("events: must be >= 0")
        if not self.rate > 0:
            raise ValueError("rate: must be > 0")
        if not 1 <= self.nodes <= 250:
            raise ValueError("nodes: must be between 1 and 250")


def simulate(options: Options = Options()) -> Iterator[dict[str, Any]]:
    """Audit events as dicts, in stage-timestamp order.

    Events share nested objects (user, sourceIPs, annotations): read-only."""
    for _, event in Simulator(options).run():
        yield event


def simulate_lines(options: Options = Options()) -> Iterator[bytes]:
    """Audit events as JSON lines, as the API server's log backend writes them."""
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    for _, event in Simulator(options).run():
        yield dumps(event, option=newline)


def simulate_timed_lines(options: Options = Options()) -> Iterator[tuple[float, bytes]]:
    """(stageTimestamp as epoch seconds, JSON line) pairs, for paced output."""
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    for us, event in Simulator(options).run():
        yield us / US, dumps(event, option=newline)


def parse_start(text: str) -> float:
    """``now`` or an RFC 3339 time, as epoch seconds."""
    if text == "now":
        return time.time()
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"start: {text!r} is not an RFC 3339 time or 'now'") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def go_duration(ns: int) -> str:
    """A duration as Go's ``time.Duration.String()`` writes it: "1.5s", "510.2ms", "850µs"."""
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        if ns < 1_000:
            return f"{ns}ns"
        unit, digits = ("µs", 3) if ns < 1_000_000 else ("ms", 6)
        whole, frac = divmod(ns, 10**digits)
        return f"{whole}{_fraction(frac, digits)}{unit}"
    secs, frac = divmod(ns, 1_000_000_000)
    mins, secs = divmod(secs, 60)
    text = f"{secs}{_fraction(frac, 9)}s"
    if mins:
        hours, mins = divmod(mins, 60)
        text = f"{mins}m{text}"
        if hours:
            text = f"{hours}h{text}"
    return text


def _fraction(value: int, digits: int) -> str:
    return "." + f"{value:0{digits}d}".rstrip("0") if value else ""


Source = Callable[[int], int | None]


class Simulator:
    def __init__(self, options: Options) -> None:
        self.opt = options
        rng = random.Random(options.seed)
        self.rng = rng
        self.random = rng.random
        self.randrange = rng.randrange
        self.bits = rng.getrandbits
        self.expo = rng.expovariate
        self.choice = rng.choice
        self.request_received = options.request_received
        self.start = int(options.start * US)
        self.out: list[tuple[int, int, dict[str, Any]]] = []  # (stage µs, seq, event)
        self.sources: list[tuple[int, int, Source]] = []
        self.seq = 0
        self.rv = 48_211_907 + rng.randrange(1_000_000)  # the etcd revision
        self.mean_gap = 1.0
        self._seconds: dict[int, str] = {}
        self._build_cluster()
        self.mix = mix.Mix(self)

    # --- values --------------------------------------------------------------------

    def uuid(self) -> str:
        """A version-4 UUID from the seeded generator."""
        v = (self.bits(128) & ~(0xF << 76) & ~(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
        h = f"{v:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def suffix(self, n: int) -> str:
        return "".join(self.choice(NAME_CHARS) for _ in range(n))

    def ts(self, us: int) -> str:
        """RFC 3339 with microseconds, as metav1.MicroTime marshals."""
        sec, frac = divmod(us, US)
        base = self._seconds.get(sec)
        if base is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            base = self._seconds[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{base}.{frac:06d}Z"

    def ts_seconds(self, us: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us // US))

    def write(self) -> int:
        """A write: the etcd revision moves on."""
        self.rv += 1 + int(self.expo(0.5))
        return self.rv

    def jwt(self) -> str:
        """A token-shaped random string (three base64url parts; not a real JWT)."""
        parts = (
            base64.urlsafe_b64encode(self.rng.randbytes(n)).rstrip(b"=").decode()
            for n in (36, 180, 256)
        )
        return "eyJhbGciOiJSUzI1NiIsImtpZCI6I" + ".".join(parts)

    # --- the cluster ------------------------------------------------------------------

    def _build_cluster(self) -> None:
        v, p = K8S_VERSION, PLATFORM
        self.cp_nodes = ["cp-1", "cp-2", "cp-3"]
        self.workers = [f"worker-{i:02d}" for i in range(1, self.opt.nodes + 1)]
        self.node_ip = {n: f"10.0.0.{11 + i}" for i, n in enumerate(self.cp_nodes)}
        for i, n in enumerate(self.workers):
            self.node_ip[n] = f"10.0.{1 + i // 200}.{10 + i % 200}"
        self.nodes = list(self.node_ip)
        self.node_uid = {n: self.uuid() for n in self.nodes}
        groups = ["system:nodes", "system:authenticated"]
        self.kubelets = {
            n: Actor(
                {"username": f"system:node:{n}", "groups": groups},
                [self.node_ip[n]],
                f"kubelet/{v} {p}",
            )
            for n in self.nodes
        }
        cp = [self.node_ip["cp-1"]]
        kcm = {"username": "system:kube-controller-manager", "groups": ["system:authenticated"]}
        kcm_reason = (
            'RBAC: allowed by ClusterRoleBinding "system:kube-controller-manager" of ClusterRole '
            '"system:kube-controller-manager" to User "system:kube-controller-manager"'
        )
        self.kcm = Actor(kcm, cp, f"kube-controller-manager/{v} {p}/leader-election", kcm_reason)
        self.kcm_informers = self.kcm.but(ua=f"kube-controller-manager/{v} {p}/shared-informers")
        scheduler = {"username": "system:kube-scheduler", "groups": ["system:authenticated"]}
        scheduler_reason = (
            'RBAC: allowed by ClusterRoleBinding "system:kube-scheduler" of ClusterRole '
            '"system:kube-scheduler" to User "system:kube-scheduler"'
        )
        cp2 = [self.node_ip["cp-2"]]
        self.scheduler = Actor(
            scheduler, cp2, f"kube-scheduler/{v} {p}/scheduler", scheduler_reason
        )
        self.scheduler_election = self.scheduler.but(ua=f"kube-scheduler/{v} {p}/leader-election")
        apiserver = {
            "username": "system:apiserver",
            "uid": self.uuid(),
            "groups": ["system:authenticated", "system:masters"],
        }
        self.apiserver = Actor(apiserver, ["::1"], f"kube-apiserver/{v} {p}")
        self.apiserver_lease = f"apiserver-{self.suffix(26)}"
        self.controllers = {name: self._controller(name, cp) for name in CONTROLLERS}
        self._place_pods()
        self.workload_sa: dict[str, Actor] = {}
        for pod in self.pods:
            key = f"{pod.namespace}:{pod.sa}"
            if key not in self.workload_sa:
                self.workload_sa[key] = self._workload_actor(pod, key)
        self.watchers = [self.workload_sa[key] for key in WATCHERS]
        proxier = {
            "username": "system:serviceaccount:kube-system:kube-proxy",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
        }
        proxier_reason = (
            'RBAC: allowed by ClusterRoleBinding "kubeadm:node-proxier" of ClusterRole '
            '"system:node-proxier" to ServiceAccount "kube-proxy/kube-system"'
        )
        self.kube_proxy = {
            n: Actor(
                proxier, [self.node_ip[n]], f"kube-proxy/{v} {p}", proxier_reason
            )  # hostNetwork
            for n in self.nodes
        }
        self.humans = [
            Human(name, groups_, ua, [f"192.0.2.{office}", vpn], role, namespaces)
            for name, groups_, ua, office, vpn, role, namespaces in HUMANS
        ]
        self.human = {h.name: h for h in self.humans}
        self.developers = [h for h in self.humans if h.role == "dev"]
        self.human_weights = list(accumulate(4.0 if h.role == "sre" else 2.0 for h in self.humans))
        anonymous = {"username": "system:anonymous", "groups": ["system:unauthenticated"]}
        self.probe = Actor(anonymous, [self.node_ip["cp-1"]], "kube-probe/1.30", PUBLIC_INFO_REASON)
        self.load_balancers = [self.probe.but(ips=[ip], ua="") for ip in LOAD_BALANCER_IPS]

    def _controller(self, name: str, ips: list[str]) -> Actor:
        user = {
            "username": f"system:serviceaccount:kube-system:{name}",
            "uid": self.uuid(),
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
        }
        agent = f"kube-controller-manager/{K8S_VERSION} {PLATFORM}"
        ua = f"{agent}/system:serviceaccount:kube-system:{name}"
        return Actor(user, ips, ua, controller_reason(name))

    def _place_pods(self) -> None:
        """Pods spread over the workers, with IPs from each node's /24."""
        self.pods: list[Pod] = []
        self.pods_by_ns: dict[str, list[Pod]] = {}
        self.rs_hash: dict[tuple[str, str], str] = {}
        next_host: dict[str, int] = {}
        for ns, workloads in WORKLOADS.items():
            for workload, kind, replicas, sa, container, image in workloads:
                rs = self.suffix(10)
                self.rs_hash[(ns, workload)] = rs
                for i in range(replicas):
                    stateful = kind == "StatefulSet"
                    name = f"{workload}-{i}" if stateful else f"{workload}-{rs}-{self.suffix(5)}"
                    index = self.randrange(len(self.workers))
                    node = self.workers[index]
                    host = next_host.get(node, 2)
                    next_host[node] = host + 1
                    pod = Pod(
                        ns, name, workload, node, f"10.244.{index + 1}.{host}", sa, container, image
                    )
                    self.pods.append(pod)
                    self.pods_by_ns.setdefault(ns, []).append(pod)
        self.namespaces = list(self.pods_by_ns)

    def _workload_actor(self, pod: Pod, key: str) -> Actor:
        """A pod's service account with its bound token's claims (1.30: node and pod)."""
        ns = pod.namespace
        user = {
            "username": f"system:serviceaccount:{ns}:{pod.sa}",
            "uid": self.uuid(),
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{ns}",
                "system:authenticated",
            ],
            "extra": {
                "authentication.kubernetes.io/credential-id": [f"JTI={self.uuid()}"],
                "authentication.kubernetes.io/node-name": [pod.node],
                "authentication.kubernetes.io/node-uid": [self.node_uid[pod.node]],
                "authentication.kubernetes.io/pod-name": [pod.name],
                "authentication.kubernetes.io/pod-uid": [self.uuid()],
            },
        }
        ua = WORKLOAD_AGENTS.get(key, f"{pod.workload}/v0.0.0 (linux/amd64) kubernetes/$Format")
        return Actor(user, [pod.ip], ua, workload_reason(ns, pod.sa))

    def pod(self, namespace: str | None = None) -> Pod:
        return self.choice(self.pods if namespace is None else self.pods_by_ns[namespace])

    def pick_human(self) -> Human:
        i = 0
        x = self.random() * self.human_weights[-1]
        while self.human_weights[i] <= x:
            i += 1
        return self.humans[i]

    # --- requests ------------------------------------------------------------------------

    def ref(
        self, resource: str, namespace: str = "", name: str = "", sub: str = ""
    ) -> dict[str, Any]:
        """An objectRef, fields in the API's order; apiGroup omitted for the core group."""
        group, version, _ = RESOURCES[resource]
        ref: dict[str, Any] = {"resource": resource}
        if namespace:
            ref["namespace"] = namespace
        if name:
            ref["name"] = name
        if group:
            ref["apiGroup"] = group
        ref["apiVersion"] = version
        if sub:
            ref["subresource"] = sub
        return ref

    def uri(
        self, resource: str, namespace: str = "", name: str = "", sub: str = "", query: str = ""
    ) -> str:
        group, version, _ = RESOURCES[resource]
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        if namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{resource}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path + query

    def call(
        self,
        t: int,
        actor: Actor,
        verb: str,
        resource: str,
        namespace: str = "",
        name: str = "",
        sub: str = "",
        query: str = "",
        code: int = 200,
        **kw: Any,
    ) -> int:
        """A resource request; see :meth:`request`."""
        ref = self.ref(resource, namespace, name, sub)
        return self.request(
            t, actor, verb, self.uri(resource, namespace, name, sub, query), ref, code, **kw
        )

    def request(
        self,
        t: int,
        actor: Actor,
        verb: str,
        uri: str,
        ref: dict[str, Any] | None,
        code: int = 200,
        *,
        lat: int = 0,
        level: str = METADATA,
        annotations: dict[str, str] | None = None,
        status: dict[str, Any] | None = None,
        request_object: Any = None,
        response_object: Any = None,
        impersonated: dict[str, Any] | None = None,
        started: int = 0,
        panic: bool = False,
    ) -> int:
        """Emit the events of one request received at ``t`` (µs); returns when it ends.

        ``started`` > 0 makes it long-running: ResponseStarted that many µs
        after ``t``, ResponseComplete at ``t + lat``. ``panic`` ends it in a
        Panic event instead of ResponseComplete."""
        if not lat:
            lat = self.latency(verb)
        audit_id = self.uuid()
        user, ips, ua = actor.user, actor.ips, actor.ua
        received = self.ts(t)
        if self.request_received:
            ev: dict[str, Any] = {
                "kind": "Event",
                "apiVersion": V1,
                "level": level,
                "auditID": audit_id,
                "stage": "RequestReceived",
                "requestURI": uri,
                "verb": verb,
                "user": user,
            }
            if impersonated is not None:
                ev["impersonatedUser"] = impersonated
            ev["sourceIPs"] = ips
            if ua:
                ev["userAgent"] = ua
            if ref is not None:
                if verb == "create" and "name" in ref and "subresource" not in ref:
                    # the name of a created object comes from its body, read later
                    ev["objectRef"] = {k: v for k, v in ref.items() if k != "name"}
                else:
                    ev["objectRef"] = ref
            ev["requestReceivedTimestamp"] = received
            ev["stageTimestamp"] = received
            self.push(t, ev)
        if annotations is None:
            annotations = actor.allowed
        if status is None:
            status = STATUS_OK.get(code) or {"metadata": {}, "code": code}
        stage = "ResponseComplete"
        if panic:
            stage, status, response_object = "Panic", PANIC, None
        elif started:
            ev = self._event(
                "ResponseStarted",
                level,
                audit_id,
                uri,
                verb,
                user,
                impersonated,
                ips,
                ua,
                ref,
                status,
                None,
                None,
                received,
                t + started,
                annotations,
            )
            self.push(t + started, ev)
        elif lat > SLOW_US:
            annotations = self.latency_annotations(annotations, verb, ref, lat)
        ev = self._event(
            stage,
            level,
            audit_id,
            uri,
            verb,
            user,
            impersonated,
            ips,
            ua,
            ref,
            status,
            request_object,
            response_object,
            received,
            t + lat,
            annotations,
        )
        self.push(t + lat, ev)
        return t + lat

    def _event(
        self,
        stage: str,
        level: str,
        audit_id: str,
        uri: str,
        verb: str,
        user: dict[str, Any],
        impersonated: dict[str, Any] | None,
        ips: list[str],
        ua: str,
        ref: dict[str, Any] | None,
        status: dict[str, Any],
        request_object: Any,
        response_object: Any,
        received: str,
        stage_us: int,
        annotations: dict[str, str] | None,
    ) -> dict[str, Any]:
        """One event, its fields in audit.k8s.io/v1 Event's order."""
        ev: dict[str, Any] = {
            "kind": "Event",
            "apiVersion": V1,
            "level": level,
            "auditID": audit_id,
            "stage": stage,
            "requestURI": uri,
            "verb": verb,
            "user": user,
        }
        if impersonated is not None:
            ev["impersonatedUser"] = impersonated
        ev["sourceIPs"] = ips
        if ua:
            ev["userAgent"] = ua
        if ref is not None:
            ev["objectRef"] = ref
        ev["responseStatus"] = status
        if request_object is not None:
            ev["requestObject"] = request_object
        if response_object is not None:
            ev["responseObject"] = response_object
        ev["requestReceivedTimestamp"] = received
        ev["stageTimestamp"] = self.ts(stage_us)
        if annotations:
            ev["annotations"] = annotations
        return ev

    def push(self, us: int, event: dict[str, Any]) -> None:
        self.seq += 1
        heapq.heappush(self.out, (us, self.seq, event))

    def unauthorized(
        self, t: int, ip: str, ua: str, uri: str, verb: str, ref: dict[str, Any] | None
    ) -> None:
        """A failed authentication: one ResponseStarted event with an empty user."""
        lat = 150 + int(self.expo(1 / 400))
        ev: dict[str, Any] = {
            "kind": "Event",
            "apiVersion": V1,
            "level": METADATA,
            "auditID": self.uuid(),
            "stage": "ResponseStarted",
            "requestURI": uri,
            "verb": verb,
            "user": {},
            "sourceIPs": [ip],
        }
        if ua:
            ev["userAgent"] = ua
        if ref is not None:
            ev["objectRef"] = ref
        ev["responseStatus"] = UNAUTHORIZED
        ev["requestReceivedTimestamp"] = self.ts(t)
        ev["stageTimestamp"] = self.ts(t + lat)
        self.push(t + lat, ev)

    def forbid(
        self,
        t: int,
        actor: Actor,
        verb: str,
        uri: str,
        ref: dict[str, Any] | None,
        *,
        reason: str = "",
        impersonated: dict[str, Any] | None = None,
    ) -> int:
        """An authorization denial: 403, decision forbid (RBAC gives no reason
        unless a binding points at a missing role)."""
        path = uri.split("?", 1)[0]
        return self.request(
            t,
            actor,
            verb,
            uri,
            ref,
            403,
            lat=300 + int(self.expo(1 / 900)),
            annotations={DECISION: "forbid", REASON: reason},
            status=forbidden(actor.name, verb, ref, path, reason),
            impersonated=impersonated,
        )

    def latency(self, verb: str) -> int:
        if self.random() < SLOW_SHARE:
            return SLOW_US + int(self.expo(1 / 900_000))
        return int(LATENCY_US.get(verb, 3_000) * (0.35 + self.expo(1.4)))

    def latency_annotations(
        self, base: dict[str, str], verb: str, ref: dict[str, Any] | None, lat_us: int
    ) -> dict[str, str]:
        """apiserver.latency.k8s.io/* for a slow request: the phases that took
        time (Go durations, nanoseconds) and the total."""
        rnd = self.random
        total = lat_us * 1000 + self.randrange(1000)
        ann = dict(base)
        rest = total
        if rnd() < 0.3:
            wait = int(total * (0.1 + 0.5 * rnd()))
            ann[LATENCY + "apf-queue-wait"] = go_duration(wait)
            rest -= wait
        resource = ref.get("resource", "") if ref else ""
        if verb in ("create", "update", "patch") and resource in ("pods", "deployments"):
            mutating = int(rest * (0.05 + 0.2 * rnd()))
            validating = int(rest * (0.1 + 0.4 * rnd()))
            ann[LATENCY + "mutating-webhook"] = go_duration(mutating)
            ann[LATENCY + "validating-webhook"] = go_duration(validating)
            rest -= mutating + validating
        ann[LATENCY + "etcd"] = go_duration(int(rest * (0.55 + 0.4 * rnd())))
        if verb in ("get", "list"):
            ann[LATENCY + "transform-response-object"] = go_duration(int(rest * 0.02 * rnd()) + 900)
            ann[LATENCY + "serialize-response-object"] = go_duration(
                int(rest * 0.08 * rnd()) + 5_000
            )
        ann[LATENCY + "response-write"] = go_duration(int(20_000 + 400_000 * rnd()))
        ann[LATENCY + "total"] = go_duration(total)
        return ann

    # --- the main loop ----------------------------------------------------------------------

    def run(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(stage µs, event) pairs in stage order, ``events`` of them (0: endless)."""
        opt = self.opt
        start = self.start
        self._schedule_periodic()
        self._open_watches_before_start()
        if opt.attacks:
            scenarios.schedule(self)
        # The random traffic fills the rate left by the periodic traffic; a
        # request averages ~2.05 events with RequestReceived, ~1.07 without.
        per_request = 2.05 if self.request_received else 1.07
        periodic = (len(self.nodes) * 0.2 + 1.1) * (2 if self.request_received else 1)
        self.mean_gap = US * per_request / max(opt.rate - periodic, opt.rate * 0.15)
        self.add_source(start + int(self.expo(1 / self.mean_gap)), self._random_request)
        sources, out = self.sources, self.out
        pop = heapq.heappop
        limit = opt.events or -1
        emitted = 0
        while sources:
            t, _, source = pop(sources)
            while out and out[0][0] <= t:
                us, _, ev = pop(out)
                if us < start:
                    continue  # before the log began
                yield us, ev
                emitted += 1
                if emitted == limit:
                    return
            nxt = source(t)
            if nxt is not None:
                self.add_source(nxt, source)

    def add_source(self, t: int, source: Source) -> None:
        self.seq += 1
        heapq.heappush(self.sources, (t, self.seq, source))

    def _random_request(self, t: int) -> int:
        self.mix.pick()(self, t)
        return t + 1 + int(self.expo(1 / self.mean_gap))

    def _schedule_periodic(self) -> None:
        for node in self.nodes:
            self.add_source(self.start + self.randrange(10 * US), self._node_loop(node))
        for actor, name in (
            (self.kcm, "kube-controller-manager"),
            (self.scheduler_election, "kube-scheduler"),
        ):
            self.add_source(self.start + self.randrange(2 * US), self._leader_election(actor, name))
        self.add_source(self.start + self.randrange(10 * US), self._apiserver_identity)

    def _node_loop(self, node: str) -> Source:
        """The kubelet renews its lease and reads its node every 10 s, and
        reports its status every 5 minutes."""
        kubelet = self.kubelets[node]
        ticks = [self.randrange(30)]

        def tick(t: int) -> int:
            self.write()
            self.call(t, kubelet, "update", "leases", "kube-node-lease", node, query="?timeout=10s")
            get_at = t + 2_000 + self.randrange(400_000)
            self.call(
                get_at, kubelet, "get", "nodes", name=node, query="?resourceVersion=0&timeout=10s"
            )
            ticks[0] += 1
            if ticks[0] % 30 == 0:
                self.write()
                self.call(
                    t + 600_000,
                    kubelet,
                    "patch",
                    "nodes",
                    name=node,
                    sub="status",
                    query="?timeout=10s",
                )
            return t + 10 * US + self.randrange(-20_000, 20_000)

        return tick

    def _leader_election(self, actor: Actor, name: str) -> Source:
        """The leader renews its lease every 2 s (client-go's RetryPeriod)."""

        def tick(t: int) -> int:
            self.write()
            self.call(t, actor, "update", "leases", "kube-system", name, query="?timeout=5s")
            return t + 2 * US + self.randrange(-5_000, 5_000)

        return tick

    def _apiserver_identity(self, t: int) -> int:
        self.write()
        self.call(t, self.apiserver, "update", "leases", "kube-system", self.apiserver_lease)
        return t + 10 * US

    def _open_watches_before_start(self) -> None:
        """The log begins mid-stream: watches opened up to 10 minutes before
        it complete in it (their earlier stages fall before the start)."""
        for _ in range(6 + len(self.nodes) * 2):
            self.watch(self.start - self.randrange(1, 600 * US))

    def watch(self, t: int) -> None:
        """An informer's watch, 5 to 10 minutes long as client-go's reflector asks."""
        kind = self.random()
        if kind < 0.45:
            # kubelets watch each ConfigMap and Secret their pods mount, by name
            pod = self.pod()
            resource = "configmaps" if self.random() < 0.6 else "secrets"
            name = "kube-root-ca.crt" if resource == "configmaps" else f"{pod.workload}-tls"
            query = (
                f"?allowWatchBookmarks=true&fieldSelector=metadata.name%3D{name}"
                f"&resourceVersion={self.rv}"
            )
            self._watch(t, self.kubelets[pod.node], resource, pod.namespace, query)
            return
        actor = self.kcm_informers if kind < 0.75 else self.choice(self.watchers)
        resource = self.choice(WATCHED)
        namespace = ""
        if RESOURCES[resource][2] and self.random() < 0.3:
            namespace = self.choice(self.namespaces)
        self._watch(
            t, actor, resource, namespace, f"?allowWatchBookmarks=true&resourceVersion={self.rv}"
        )

    def _watch(self, t: int, actor: Actor, resource: str, namespace: str, query: str) -> None:
        timeout = 300 + self.randrange(300)
        query += f"&timeout={timeout // 60}m{timeout % 60}s&timeoutSeconds={timeout}&watch=true"
        lat = timeout * US + self.randrange(2_000)
        started = 800 + self.randrange(3_000)
        self.call(t, actor, "watch", resource, namespace, query=query, lat=lat, started=started)

    # --- objects ---------------------------------------------------------------------------

    def secret(self, ns: str, name: str, keys: dict[str, int]) -> dict[str, Any]:
        data = {k: base64.b64encode(self.rng.randbytes(n)).decode() for k, n in keys.items()}
        kind = "kubernetes.io/dockerconfigjson" if ".dockerconfigjson" in keys else "Opaque"
        meta = {"name": name, "namespace": ns, "creationTimestamp": None}
        return {"kind": "Secret", "apiVersion": "v1", "metadata": meta, "data": data, "type": kind}

    def stored(self, obj: dict[str, Any], t: int) -> dict[str, Any]:
        """The object as the API server answers a write: uid, resourceVersion, creation time."""
        meta = {k: v for k, v in obj["metadata"].items() if k != "creationTimestamp"}
        meta["uid"] = self.uuid()
        meta["resourceVersion"] = str(self.rv)
        meta["creationTimestamp"] = self.ts_seconds(t)
        return {**obj, "metadata": meta}

    def pod_spec(
        self, pod: Pod, *, privileged: bool = False, compliant: bool = True
    ) -> dict[str, Any]:
        sc: dict[str, Any] = dict(RESTRICTED_SECURITY_CONTEXT) if compliant else {}
        if privileged:
            sc = {"privileged": True}
        container = {
            "name": pod.container,
            "image": pod.image,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
            "securityContext": sc,
        }
        return {
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420}}],
            "containers": [container],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": pod.sa,
            "securityContext": {"runAsNonRoot": True} if compliant else {},
            "schedulerName": "default-scheduler",
        }

    def pod_security(
        self, base: dict[str, str], ns: str, container: str, compliant: bool, privileged: bool
    ) -> dict[str, str]:
        """Pod Security admission's annotations: the enforced level, and what
        the pod would violate at the audited level (restricted)."""
        level = PSA_LEVEL.get(ns, "baseline")
        ann = dict(base)
        ann[PSA_ENFORCE] = f"{level}:latest"
        if not compliant and level != "privileged":
            c = container
            parts = [
                f'allowPrivilegeEscalation != false (container "{c}" must set '
                "securityContext.allowPrivilegeEscalation=false)",
                f'unrestricted capabilities (container "{c}" must set '
                'securityContext.capabilities.drop=["ALL"])',
                f'runAsNonRoot != true (pod or container "{c}" must set '
                "securityContext.runAsNonRoot=true)",
                f'seccompProfile (pod or container "{c}" must set '
                'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
            ]
            if privileged:
                parts.insert(
                    0, f'privileged (container "{c}" must not set securityContext.privileged=true)'
                )
            ann[PSA_AUDIT] = 'would violate PodSecurity "restricted:latest": ' + ", ".join(parts)
        return ann

    def replicaset_pod(self, t: int, failed_open: bool = False) -> int:
        """The ReplicaSet controller creates a pod (RequestResponse by policy)."""
        template = self.pod(self.choice(("web", "orders", "payments", "data", "monitoring")))
        ns = template.namespace
        rs_hash = self.rs_hash[(ns, template.workload)]
        rs = f"{template.workload}-{rs_hash}"
        actor = self.controllers["replicaset-controller"]
        owner = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": rs,
            "uid": self.uuid(),
            "controller": True,
            "blockOwnerDeletion": True,
        }
        meta = {
            "generateName": f"{rs}-",
            "namespace": ns,
            "creationTimestamp": None,
            "labels": {"app.kubernetes.io/name": template.workload, "pod-template-hash": rs_hash},
            "ownerReferences": [owner],
        }
        obj = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": meta,
            "spec": self.pod_spec(template),
            "status": {},
        }
        stored = self.stored(obj, t)
        stored["metadata"]["name"] = f"{rs}-{self.suffix(5)}"
        stored["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        ann = self.pod_security(actor.allowed, ns, template.container, True, False)
        lat = self.latency("create")
        if failed_open:
            # The policy webhook timed out (failurePolicy Ignore): the request
            # went through after its 10 s timeout.
            ann[FAILED_OPEN + "0"] = "validation.gatekeeper.sh"
            lat = 10_020_000 + self.randrange(90_000)
        self.write()
        return self.call(
            t,
            actor,
            "create",
            "pods",
            ns,
            code=201,
            level=REQUEST_RESPONSE,
            annotations=ann,
            request_object=obj,
            response_object=stored,
            lat=lat,
        )

    def human_pod(
        self, t: int, human: Human, ip: str, ns: str, *, privileged: bool, compliant: bool
    ) -> int:
        """``kubectl run``: a debug pod, sometimes privileged or not hardened."""
        template = self.pod(ns)
        name = f"debug-{self.suffix(5)}"
        pod = Pod(
            ns,
            name,
            "debug",
            template.node,
            "",
            "default",
            "debug",
            "docker.io/library/busybox:1.36",
        )
        meta = {"name": name, "namespace": ns, "creationTimestamp": None, "labels": {"run": name}}
        spec = self.pod_spec(pod, privileged=privileged, compliant=compliant)
        obj = {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": {}}
        reason = human.reason(ns, "pods")
        if reason is None:
            return self.forbid(
                t, human.actor(ip), "create", self.uri("pods", ns), self.ref("pods", ns)
            )
        actor = human.actor(ip, reason)
        ann = self.pod_security(actor.allowed, ns, "debug", compliant, privileged)
        query = "?fieldManager=kubectl-run"
        level = PSA_LEVEL.get(ns, "baseline")
        self.write()
        if privileged and level != "privileged":
            message = (
                f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": '
                'privileged (container "debug" must not set securityContext.privileged=true)'
            )
            status = {
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "Forbidden",
                "details": {"name": name, "kind": "pods"},
                "code": 403,
            }
            return self.call(
                t,
                actor,
                "create",
                "pods",
                ns,
                query=query,
                code=403,
                level=REQUEST_RESPONSE,
                annotations=ann,
                status=status,
                request_object=obj,
                response_object=status,
            )
        stored = self.stored(obj, t)
        stored["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        return self.call(
            t,
            actor,
            "create",
            "pods",
            ns,
            query=query,
            code=201,
            level=REQUEST_RESPONSE,
            annotations=ann,
            request_object=obj,
            response_object=stored,
        )

    def token_request(self, t: int, pod: Pod, level: str = METADATA) -> int:
        """The kubelet asks for a pod's projected service-account token."""
        kubelet = self.kubelets[pod.node]
        ns = pod.namespace
        request_object = response_object = None
        if level == REQUEST_RESPONSE:
            spec = {
                "audiences": ["https://kubernetes.default.svc.cluster.local"],
                "expirationSeconds": 3607,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": pod.name,
                    "uid": self.uuid(),
                },
            }
            kind = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1"}
            request_object = {
                **kind,
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": {"token": "", "expirationTimestamp": None},
            }
            response_object = {
                **kind,
                "metadata": {
                    "name": pod.sa,
                    "namespace": ns,
                    "creationTimestamp": self.ts_seconds(t),
                },
                "spec": spec,
                "status": {
                    "token": self.jwt(),
                    "expirationTimestamp": self.ts_seconds(t + 3607 * US),
                },
            }
        return self.call(
            t,
            kubelet,
            "create",
            "serviceaccounts",
            ns,
            pod.sa,
            "token",
            code=201,
            level=level,
            request_object=request_object,
            response_object=response_object,
        )

    def token_review(self, t: int, actor: Actor) -> int:
        """A TokenReview at RequestResponse: the reviewed token is in the log."""
        token = self.jwt()
        kind = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1"}
        review = {
            **kind,
            "metadata": {"creationTimestamp": None},
            "spec": {"token": token},
            "status": {"user": {}},
        }
        reviewed = {
            "username": "system:serviceaccount:monitoring:prometheus-k8s",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:monitoring",
                "system:authenticated",
            ],
        }
        status = {
            "authenticated": True,
            "user": reviewed,
            "audiences": ["https://kubernetes.default.svc.cluster.local"],
        }
        answer = {**review, "status": status}
        return self.call(
            t,
            actor,
            "create",
            "tokenreviews",
            code=201,
            level=REQUEST_RESPONSE,
            request_object=review,
            response_object=answer,
        )

    def sandbox_secrets(self, t: int, actor: Actor) -> int:
        """``list secrets`` in the sandbox: every item's data is in the log."""
        ns = "sandbox"
        day_before = t - 86_400 * US
        items = [
            self.stored(self.secret(ns, n, dict.fromkeys(keys, 16)), day_before)
            for n, keys in (
                ("playground-db", ("username", "password")),
                ("playground-api-key", ("api-key",)),
                ("registry-pull", (".dockerconfigjson",)),
            )
        ]
        listing = {
            "kind": "SecretList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }
        return self.call(
            t,
            actor,
            "list",
            "secrets",
            ns,
            query="?limit=500",
            level=REQUEST_RESPONSE,
            response_object=listing,
        )
