"""A deterministic simulator of a Kubernetes API server's audit stream.

``kube-audit-exporter simulate`` writes audit.k8s.io/v1 events as the API
server's log backend does (one ``Event`` per line), or POSTs them as its
webhook backend does (``EventList`` batches). The same seed and options give
the same bytes, so the stream serves as demo data, test input and benchmark
load. :func:`simulate` (dicts) and :func:`simulate_lines` (JSON lines) are the
library entry points; :class:`WebhookSender` is the batching client.

What is simulated, from the API server's documented behaviour (v1.30):

- One API server's log. A request is a ``RequestReceived`` +
  ``ResponseComplete`` pair (the policy default; ``request_received=False``
  omits the first, as ``omitStages`` does). Long-running requests (watch,
  exec, attach, portforward, ``logs -f``) add ``ResponseStarted`` (200, or
  101 for a protocol upgrade) and complete minutes later. A failed
  authentication is one ``ResponseStarted`` event, code 401, ``user`` {}; a
  panic is ``RequestReceived`` then ``Panic`` (500). Events come in
  stage-timestamp order, so the stages of long requests interleave with
  later traffic; the log starts mid-stream (watches opened before it end in it).
- The traffic of a small production cluster: kubelets (``system:node:<name>``:
  node leases every 10 s, node status, pod status patches, token requests,
  per-object watches), kube-controller-manager and its controllers' service
  accounts, kube-scheduler (bindings; leader election every 2 s),
  ``system:apiserver`` on loopback, workloads' service accounts (Prometheus,
  kube-state-metrics, ingress-nginx, cert-manager, Argo CD, CoreDNS,
  kube-proxy, metrics-server, CI), people using ``kubectl`` from the office
  and the VPN (with RBAC denials), health checks (anonymous) and internet
  scanners (401s, anonymous 403s).
- The audit policy: ``RequestResponse`` for pod and RBAC writes and for
  everything in namespace ``sandbox`` or by its service accounts (a debugging
  rule left in place: Secret ``data``, TokenRequest ``status.token`` and
  TokenReview ``spec.token`` reach the log, which is what redaction is for);
  ``Metadata`` for everything else, secrets included.
- Annotations: the authorization decision and reason; ``apiserver.latency.
  k8s.io/*`` on ResponseComplete of requests slower than 500 ms (Go
  durations); Pod Security ``enforce-policy`` and ``audit-violations``;
  ``failed-open.validating.webhook.admission.k8s.io/round_0_index_N`` when a
  webhook with failurePolicy Ignore timed out.
- Attacks, once per stream (see :mod:`.scenarios`): an anonymous request
  allowed by a bad binding; a burst of 401s from one internet address
  followed by a success for a person from the VPN; a pod's service-account
  token used from outside the pod network; ``exec`` into the database of the
  critical namespace ``payments`` by a developer; a cluster-admin
  ClusterRoleBinding created by the CI service account, then used;
  impersonation (one refused, one allowed).

Networks (see :mod:`.cluster`): nodes in ``10.0.0.0/16``, pods in
``10.244.0.0/16``, office ``192.0.2.0/24``, VPN ``10.8.0.0/16``; internet
addresses come from the documentation ranges ``203.0.113.0/24`` and
``198.51.100.0/24``. All names, addresses, tokens and secret values are
invented by the seeded generator.
"""

from __future__ import annotations

from .cli import register, run
from .cluster import (
    ADMIN_BINDING,
    ANONYMOUS_ATTACKER_IP,
    BRUTE_FORCE_FAILURES,
    BRUTE_FORCE_IP,
    CRITICAL_NAMESPACES,
    ESCALATED_USER,
    ESCALATING_SA,
    EXEC_TARGET,
    EXEC_USER,
    INTERNET_CIDRS,
    NODE_CIDR,
    OFFICE_CIDR,
    POD_CIDR,
    STOLEN_TOKEN_IP,
    STOLEN_TOKEN_USER,
    TRUSTED_CIDRS,
    VPN_CIDR,
)
from .traffic import (
    DEFAULT_EVENTS,
    DEFAULT_NODES,
    DEFAULT_RATE,
    DEFAULT_START,
    Options,
    go_duration,
    parse_start,
    simulate,
    simulate_lines,
    simulate_timed_lines,
)
from .webhook import SendStats, WebhookSender, event_list

__all__ = [
    "ADMIN_BINDING",
    "ANONYMOUS_ATTACKER_IP",
    "BRUTE_FORCE_FAILURES",
    "BRUTE_FORCE_IP",
    "CRITICAL_NAMESPACES",
    "DEFAULT_EVENTS",
    "DEFAULT_NODES",
    "DEFAULT_RATE",
    "DEFAULT_START",
    "ESCALATED_USER",
    "ESCALATING_SA",
    "EXEC_TARGET",
    "EXEC_USER",
    "INTERNET_CIDRS",
    "NODE_CIDR",
    "OFFICE_CIDR",
    "POD_CIDR",
    "STOLEN_TOKEN_IP",
    "STOLEN_TOKEN_USER",
    "TRUSTED_CIDRS",
    "VPN_CIDR",
    "Options",
    "SendStats",
    "WebhookSender",
    "event_list",
    "go_duration",
    "parse_start",
    "register",
    "run",
    "simulate",
    "simulate_lines",
    "simulate_timed_lines",
]
