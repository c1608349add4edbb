"""One frozen, validated configuration: flags > environment > YAML file > defaults.

The dataclasses below are the single source of truth: each field's metadata
gives its help text and kind, and from that come the YAML key
(``webhook.listen_address``), the flag (``--webhook.listen-address``) and the
environment variable (``KUBE_AUDIT_WEBHOOK_LISTEN_ADDRESS``). Every problem is
reported with its location, all at once, and the caller exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import socket
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .detect import DetectionSettings, RuleError, RuleSet, load_rules, located
from .detect.located import LDict, LList
from .duration import parse_duration
from .labels import LabelBounds
from .logs import safe_url
from .loki.settings import FORMATS, FSYNC_POLICIES, LABEL_FIELDS, LokiSettings
from .metrics import AuditMetrics
from .sources.gke_token import GOOGLE_CERTS_URL
from .state import StateSettings, url_problem

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

ENV_PREFIX = "KUBE_AUDIT_"


class ConfigError(Exception):
    """All the problems found, each located (``loki.batch_size: must be > 0``)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def opt(
    help: str,
    *,
    kind: str | None = None,
    choices: Sequence[str] = (),
    minimum: float | None = None,
    secret: bool = False,
) -> dict[str, Any]:
    """Field metadata. ``kind`` refines the Python type: "duration" (Go
    duration or seconds), "bytes" (1048576, 1MiB, 64Mi, 1GB), "address"
    (host:port, :port, [v6]:port), "file" (must exist and be readable)."""
    return {
        "help": help,
        "kind": kind,
        "choices": tuple(choices),
        "minimum": minimum,
        "secret": secret,
    }


def _duration(default: float, help: str) -> Any:
    """A duration option of the HTTP listeners."""
    return field(default=default, metadata=opt(help, kind="duration", minimum=0.01))


# The same deadlines on both listeners (exporter.httpserver.Limits); a field
# each, since a dataclass takes over the Field it is given.
def _header_timeout() -> Any:
    return _duration(10.0, "How long a request head may take to arrive.")


def _idle_timeout() -> Any:
    return _duration(90.0, "How long a keep-alive connection may idle.")


# Where a source with a checkpoint starts (the log file, the AKS archive).
START_AT = opt(
    "checkpoint: resume from the checkpoint (the beginning when there is none); "
    "beginning or end: ignore it.",
    choices=("checkpoint", "beginning", "end"),
)


@dataclass(frozen=True)
class WebConfig:
    listen_address: str = field(
        default="0.0.0.0:9784",
        metadata=opt("Address for /metrics, /healthz and /readyz.", kind="address"),
    )
    max_connections: int = field(
        default=4096,
        metadata=opt("Open connections at most; over it the oldest idle one is cut.", minimum=1),
    )
    header_timeout: float = _header_timeout()
    read_timeout: float = _duration(30.0, "How long a whole request may take to arrive.")
    idle_timeout: float = _idle_timeout()


@dataclass(frozen=True)
class WebhookConfig:
    listen_address: str = field(
        default="",
        metadata=opt("Address of the audit webhook receiver; empty disables it.", kind="address"),
    )
    path: str = field(default="/audit", metadata=opt("URL path the API server POSTs to."))
    tls_cert_file: str = field(
        default="",
        metadata=opt("Serving certificate (PEM); reloaded when it changes.", kind="file"),
    )
    tls_key_file: str = field(
        default="", metadata=opt("Private key of the serving certificate (PEM).", kind="file")
    )
    client_ca_file: str = field(
        default="",
        metadata=opt(
            "CA bundle for client certificates; when set, a client certificate is mandatory.",
            kind="file",
        ),
    )
    insecure: bool = field(
        default=False, metadata=opt("Serve plain HTTP instead of HTTPS. For tests only.")
    )
    max_body_bytes: int = field(
        default=64 << 20,
        metadata=opt("Largest request body accepted (413 above).", kind="bytes", minimum=1024),
    )
    read_timeout: float = field(
        default=30.0,
        metadata=opt(
            "How long a connection may take to send a request.", kind="duration", minimum=0.01
        ),
    )
    max_connections: int = field(
        default=4096,
        metadata=opt(
            "Open connections at most; over it the oldest one still in its handshake "
            "or idle is cut.",
            minimum=1,
        ),
    )
    handshake_timeout: float = _duration(5.0, "How long a TLS handshake may take.")
    header_timeout: float = _header_timeout()
    idle_timeout: float = _idle_timeout()
    max_header_bytes: int = field(
        default=8190,
        metadata=opt(
            "Longest request line or header field (431 above).", kind="bytes", minimum=256
        ),
    )
    workers: int = field(
        default=2,
        metadata=opt("Threads that decode and process batches at once.", minimum=1),
    )


@dataclass(frozen=True)
class LogfileConfig:
    path: str = field(
        default="",
        metadata=opt("The API server's --audit-log-path to tail; empty disables it."),
    )
    checkpoint_file: str = field(
        default="",
        metadata=opt("Where the read position is kept; empty means no checkpoint."),
    )
    start_at: str = field(default="checkpoint", metadata=START_AT)
    poll_interval: float = field(
        default=0.25,
        metadata=opt(
            "How often the file is checked for new lines.", kind="duration", minimum=0.001
        ),
    )
    checkpoint_interval: float = field(
        default=5.0,
        metadata=opt("How often the checkpoint is written.", kind="duration", minimum=0.01),
    )


@dataclass(frozen=True)
class EksConfig:
    """EKS: the audit log group in CloudWatch Logs, pulled, and Firehose's
    HTTP endpoint delivery, pushed (exporter/sources/eks.py, eks_cloudwatch.py)."""

    log_group: str = field(
        default="",
        metadata=opt(
            "CloudWatch Logs group to pull, /aws/eks/<cluster>/cluster; empty disables the pull."
        ),
    )
    stream_prefix: str = field(
        default="kube-apiserver-audit-",
        metadata=opt("Only streams whose name starts with this are read."),
    )
    region: str = field(
        default="", metadata=opt("AWS region; empty uses the SDK's default (AWS_REGION, ...).")
    )
    endpoint_url: str = field(
        default="",
        metadata=opt("CloudWatch Logs endpoint URL (a VPC endpoint, an emulator); empty: AWS's."),
    )
    checkpoint_file: str = field(
        default="",
        metadata=opt("Where the per-stream cursors are kept; empty means no checkpoint."),
    )
    start_at: str = field(
        default="checkpoint",
        metadata=opt(
            "checkpoint: resume from the checkpoint (now when there is none); now; "
            "or an RFC 3339 time (2024-05-01T10:00:00Z) to read from."
        ),
    )
    poll_interval: float = field(
        default=5.0,
        metadata=opt("How often the streams are listed and read.", kind="duration", minimum=0.01),
    )
    backoff_max: float = field(
        default=300.0,
        metadata=opt(
            "Longest wait after throttled or failed calls (doubling from 1s).",
            kind="duration",
            minimum=0.01,
        ),
    )
    firehose_listen_address: str = field(
        default="",
        metadata=opt(
            "Address of the Firehose HTTP endpoint delivery receiver; empty disables it.",
            kind="address",
        ),
    )
    firehose_path: str = field(
        default="/firehose", metadata=opt("URL path Firehose POSTs to (part of its endpoint URL).")
    )
    firehose_access_key_file: str = field(
        default="",
        metadata=opt(
            "File holding the Firehose stream's access key (X-Amz-Firehose-Access-Key).",
            kind="file",
        ),
    )
    firehose_tls_cert_file: str = field(
        default="",
        metadata=opt("Serving certificate (PEM) of the Firehose receiver.", kind="file"),
    )
    firehose_tls_key_file: str = field(
        default="", metadata=opt("Private key of that certificate (PEM).", kind="file")
    )
    firehose_insecure: bool = field(
        default=False,
        metadata=opt("Serve the receiver as plain HTTP (TLS ends at a load balancer)."),
    )
    firehose_max_body_bytes: int = field(
        default=96 << 20,
        metadata=opt(
            "Largest request body once gunzipped (413 above).", kind="bytes", minimum=1024
        ),
    )


@dataclass(frozen=True)
class AksConfig:
    """AKS diagnostic settings (categories kube-audit, kube-audit-admin): the
    storage account archive and/or an Event Hub. Credentials come from the
    Azure SDK's default chain (Workload Identity), never from here."""

    storage_account_url: str = field(
        default="",
        metadata=opt(
            "Storage account the diagnostic setting archives to "
            "(https://<account>.blob.core.windows.net); empty disables the archive."
        ),
    )
    categories: tuple[str, ...] = field(
        default=("kube-audit", "kube-audit-admin"),
        metadata=opt(
            "Categories to read (repeatable): containers insights-logs-<category>.",
            kind="list",
        ),
    )
    prefix: str = field(
        default="",
        metadata=opt(
            "Only blobs under this prefix (resourceId=/SUBSCRIPTIONS/.../MANAGEDCLUSTERS/<name>/)."
        ),
    )
    checkpoint_file: str = field(
        default="",
        metadata=opt("Where the archive's read positions are kept; empty means none."),
    )
    start_at: str = field(default="checkpoint", metadata=START_AT)
    poll_interval: float = field(
        default=30.0,
        metadata=opt("How often the archive is listed.", kind="duration", minimum=0.01),
    )
    eventhub_namespace: str = field(
        default="",
        metadata=opt(
            "Event Hubs namespace (<ns>.servicebus.windows.net); empty disables Event Hubs."
        ),
    )
    eventhub_name: str = field(default="", metadata=opt("The Event Hub the setting sends to."))
    eventhub_consumer_group: str = field(
        default="$Default", metadata=opt("The consumer group to read as.")
    )
    eventhub_checkpoint_account_url: str = field(
        default="",
        metadata=opt("Storage account for the Event Hubs checkpoints and partition ownership."),
    )
    eventhub_checkpoint_container: str = field(
        default="kube-audit-exporter-checkpoints",
        metadata=opt("Container for them (created when missing)."),
    )
    eventhub_start_at: str = field(
        default="beginning",
        metadata=opt(
            "Where a partition without a checkpoint starts: beginning (the hub's "
            "retention) or end.",
            choices=("beginning", "end"),
        ),
    )


@dataclass(frozen=True)
class GKEConfig:
    """GKE audit entries from a Cloud Logging sink to Pub/Sub (exporter/sources/gke.py)."""

    subscription: str = field(
        default="",
        metadata=opt(
            "Pub/Sub subscription to pull, projects/<project>/subscriptions/<name>; "
            "empty disables the pull."
        ),
    )
    max_messages: int = field(
        default=1000,
        metadata=opt("Flow control: messages leased at once at most.", minimum=1),
    )
    max_bytes: int = field(
        default=64 << 20,
        metadata=opt(
            "Flow control: bytes of messages leased at once at most.", kind="bytes", minimum=1024
        ),
    )
    batch_size: int = field(
        default=500,
        metadata=opt("Pulled messages processed (and acknowledged) together.", minimum=1),
    )
    flush_interval: float = field(
        default=0.5,
        metadata=opt(
            "How long a batch of pulled messages waits to fill.", kind="duration", minimum=0.001
        ),
    )
    push_listen_address: str = field(
        default="",
        metadata=opt("Address of the Pub/Sub push endpoint; empty disables it.", kind="address"),
    )
    push_path: str = field(default="/pubsub", metadata=opt("URL path of the push endpoint."))
    push_audience: str = field(
        default="",
        metadata=opt(
            "Audience the push subscription's OIDC token must carry (its push endpoint URL "
            "unless the subscription set another)."
        ),
    )
    push_service_account: str = field(
        default="",
        metadata=opt("Service account email the push token must be issued for."),
    )
    push_certs_url: str = field(
        default=GOOGLE_CERTS_URL,
        metadata=opt("Where Google's token signing certificates are fetched."),
    )
    push_tls_cert_file: str = field(
        default="", metadata=opt("Serving certificate of the push endpoint (PEM).", kind="file")
    )
    push_tls_key_file: str = field(
        default="", metadata=opt("Private key of the push serving certificate.", kind="file")
    )
    push_insecure_http: bool = field(
        default=False,
        metadata=opt(
            "Serve the push endpoint over plain HTTP (behind a load balancer that "
            "terminates HTTPS)."
        ),
    )
    push_allow_unauthenticated: bool = field(
        default=False,
        metadata=opt("Accept pushes without a verified OIDC token. For tests only."),
    )


_LOKI = LokiSettings()


@dataclass(frozen=True)
class LokiConfig:
    url: str = field(
        default="",
        metadata=opt(
            "Loki base URL (the push path is added) or push URL; empty disables the Loki path."
        ),
    )
    tenant: str = field(default="", metadata=opt("X-Scope-OrgID tenant; empty sends none."))
    basic_auth_user: str = field(default="", metadata=opt("Basic auth user name."))
    basic_auth_password_file: str = field(
        default="", metadata=opt("File holding the basic auth password.", kind="file")
    )
    bearer_token_file: str = field(
        default="", metadata=opt("File holding a bearer token.", kind="file")
    )
    ca_file: str = field(default="", metadata=opt("CA bundle to verify Loki with.", kind="file"))
    cert_file: str = field(default="", metadata=opt("Client certificate for Loki.", kind="file"))
    key_file: str = field(default="", metadata=opt("Key of the client certificate.", kind="file"))
    insecure_skip_verify: bool = field(
        default=False, metadata=opt("Do not verify Loki's certificate.")
    )
    connect_timeout: float = field(
        default=_LOKI.connect_timeout,
        metadata=opt("Connect timeout of a push.", kind="duration"),
    )
    timeout: float = field(
        default=_LOKI.timeout, metadata=opt("Read timeout of a push.", kind="duration")
    )
    headers: tuple[str, ...] = field(
        default=(),
        metadata=opt("Extra static headers, each Name=value (repeatable).", kind="list"),
    )
    format: str = field(
        default=_LOKI.format,
        metadata=opt("Push encoding: protobuf (snappy) or json (gzip).", choices=FORMATS),
    )
    batch_bytes: int = field(
        default=_LOKI.batch_bytes, metadata=opt("A batch is sent at this size.", kind="bytes")
    )
    batch_wait: float = field(
        default=_LOKI.batch_wait,
        metadata=opt("...or when its oldest entry waited this long.", kind="duration"),
    )
    backoff_min: float = field(
        default=_LOKI.backoff_min, metadata=opt("First retry delay.", kind="duration")
    )
    backoff_max: float = field(
        default=_LOKI.backoff_max, metadata=opt("Longest retry delay.", kind="duration")
    )
    max_retries: int = field(
        default=_LOKI.max_retries,
        metadata=opt("Retries of one batch; 0 retries forever (the spool holds it).", minimum=0),
    )
    line_limit: int = field(
        default=_LOKI.line_limit,
        metadata=opt(
            "Loki's max_line_size: larger events lose their bodies and are marked.", kind="bytes"
        ),
    )
    redact: bool = field(
        default=True, metadata=opt("Redact Secret data and tokens before anything leaves.")
    )
    redact_paths: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "Extra paths to redact, each resource=path "
            "(configmaps=requestObject.data.password; * for every resource; repeatable).",
            kind="list",
        ),
    )
    labels: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            f"Extra stream labels from the bounded fields {', '.join(LABEL_FIELDS)}.",
            kind="list",
        ),
    )
    service_name: str = field(
        default=_LOKI.service_name, metadata=opt("The service_name stream label.")
    )
    writer: str = field(
        default="",
        metadata=opt(
            "The writer stream label, so that writers never share a stream; empty takes "
            "the host name in run (the pod name in Kubernetes) and replay-<host>-<pid> "
            "in replay."
        ),
    )
    structured_metadata: bool = field(
        default=_LOKI.structured_metadata,
        metadata=opt(
            "Send structured metadata (false for Loki 2.9, or Loki 3 on a schema before v13)."
        ),
    )
    parallelism: int = field(
        default=_LOKI.parallelism,
        metadata=opt("Pushes in flight at once, each for its share of the streams (1 to 64)."),
    )
    deadline: float = field(
        default=_LOKI.deadline,
        metadata=opt(
            "Deadline of a whole push request however slowly Loki answers; "
            "0 takes connect_timeout + timeout.",
            kind="duration",
        ),
    )


_OTLP = LokiSettings(protocol="otlp")


@dataclass(frozen=True)
class OtlpConfig:
    url: str = field(
        default="",
        metadata=opt(
            "OTLP/HTTP endpoint (/v1/logs is added: http://loki:3100/otlp, "
            "http://collector:4318); empty disables the OTLP output."
        ),
    )
    format: str = field(
        default=_OTLP.format,
        metadata=opt("Request encoding: protobuf or json (both gzip-compressed).", choices=FORMATS),
    )
    tenant: str = field(default="", metadata=opt("X-Scope-OrgID tenant; empty sends none."))
    basic_auth_user: str = field(default="", metadata=opt("Basic auth user name."))
    basic_auth_password_file: str = field(
        default="", metadata=opt("File holding the basic auth password.", kind="file")
    )
    bearer_token_file: str = field(
        default="", metadata=opt("File holding a bearer token.", kind="file")
    )
    ca_file: str = field(
        default="", metadata=opt("CA bundle to verify the receiver with.", kind="file")
    )
    cert_file: str = field(default="", metadata=opt("Client certificate.", kind="file"))
    key_file: str = field(default="", metadata=opt("Key of the client certificate.", kind="file"))
    insecure_skip_verify: bool = field(
        default=False, metadata=opt("Do not verify the receiver's certificate.")
    )
    headers: tuple[str, ...] = field(
        default=(),
        metadata=opt("Extra static headers, each Name=value (repeatable).", kind="list"),
    )
    connect_timeout: float = field(
        default=_OTLP.connect_timeout, metadata=opt("Connect timeout.", kind="duration")
    )
    timeout: float = field(default=_OTLP.timeout, metadata=opt("Read timeout.", kind="duration"))
    deadline: float = field(
        default=_OTLP.deadline,
        metadata=opt(
            "Deadline of a whole request; 0 takes connect_timeout + timeout.", kind="duration"
        ),
    )
    batch_bytes: int = field(
        default=_OTLP.batch_bytes, metadata=opt("A batch is sent at this size.", kind="bytes")
    )
    batch_wait: float = field(
        default=_OTLP.batch_wait,
        metadata=opt("...or when its oldest record waited this long.", kind="duration"),
    )
    parallelism: int = field(
        default=_OTLP.parallelism,
        metadata=opt("Requests in flight at once (1 to 64)."),
    )
    service_name: str = field(
        default=_OTLP.service_name, metadata=opt("The service.name resource attribute.")
    )


@dataclass(frozen=True)
class SpoolConfig:
    dir: str = field(
        default="",
        metadata=opt("Directory of the durable Loki spool; required with loki.url."),
    )
    max_bytes: int = field(
        default=_LOKI.spool_max_bytes,
        metadata=opt(
            "Spool size; when full the webhook answers 503 and the tailer waits.", kind="bytes"
        ),
    )
    fsync: str = field(
        default=_LOKI.fsync,
        metadata=opt("always (durable on power loss), interval or never.", choices=FSYNC_POLICIES),
    )
    fsync_interval: float = field(
        default=_LOKI.fsync_interval,
        metadata=opt("With fsync=interval, how often.", kind="duration"),
    )


@dataclass(frozen=True)
class RulesConfig:
    file: tuple[str, ...] = field(
        default=(),
        metadata=opt("Detection rule files (repeatable); they replace the defaults.", kind="list"),
    )
    include_defaults: bool = field(
        default=False,
        metadata=opt("Load the shipped default rules as well as rules.file."),
    )


@dataclass(frozen=True)
class DetectConfig:
    trusted_networks: tuple[str, ...] = field(
        default=(),
        metadata=opt("CIDRs administrators legitimately come from.", kind="list"),
    )
    pod_cidrs: tuple[str, ...] = field(
        default=(), metadata=opt("The cluster's pod network CIDRs.", kind="list")
    )
    node_cidrs: tuple[str, ...] = field(
        default=(), metadata=opt("Node and control-plane address CIDRs.", kind="list")
    )
    critical_workloads: tuple[Any, ...] = field(
        default=(),
        metadata=opt(
            "Objects only some principals may touch, at some times: a YAML list of "
            "{name, namespaces, resources, names, allowed_principals, allowed_windows, "
            "timezone} (a YAML/JSON string in flags and environment).",
            kind="yaml",
        ),
    )
    disabled_rules: tuple[str, ...] = field(
        default=(), metadata=opt("Rule ids switched off.", kind="list")
    )
    max_state_entries: int = field(
        default=100_000,
        metadata=opt("State kept per stateful rule; the oldest is evicted and counted.", minimum=1),
    )
    alert_min_severity: str = field(
        default="warning",
        metadata=opt(
            "Matches at or above this severity go to Alertmanager.",
            choices=("info", "warning", "critical"),
        ),
    )
    allowed_users: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "Site allow-list: user name globs (or group:NAME) that may use the cluster; "
            "enables disallowed-user.",
            kind="list",
        ),
    )
    allowed_images: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "Site allow-list: image registries, repositories or globs pods may run; "
            "enables disallowed-image.",
            kind="list",
        ),
    )
    allowed_namespaces: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "Site allow-list: namespace name globs that may be created; "
            "enables disallowed-namespace-created.",
            kind="list",
        ),
    )
    allowed_nodes: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "Site allow-list: node name globs that may join; enables disallowed-node-joined.",
            kind="list",
        ),
    )


@dataclass(frozen=True)
class AlertmanagerConfig:
    url: tuple[str, ...] = field(
        default=(),
        metadata=opt("Alertmanager base URLs (repeatable; each gets every alert).", kind="list"),
    )
    link_template: str = field(
        default="",
        metadata=opt(
            "Link in each alert, with ${audit_id}, ${cluster}, ... (e.g. Grafana Explore)."
        ),
    )
    resolve_after: float = field(
        default=900.0,
        metadata=opt("An alert's endsAt is the event time plus this.", kind="duration"),
    )


@dataclass(frozen=True)
class EventsConfig:
    max_bytes: int = field(
        default=1 << 20,
        metadata=opt(
            "Largest single audit event accepted; larger ones are counted too_large.",
            kind="bytes",
            minimum=1024,
        ),
    )
    dedupe_capacity: int = field(
        default=100_000,
        metadata=opt(
            "How many recent (auditID, stage, stageTimestamp) keys are remembered, at "
            "least, to drop retried events (up to twice as many are kept; 0: only "
            "within one batch).",
            minimum=0,
        ),
    )
    max_future_skew: float = field(
        default=300.0,
        metadata=opt(
            "How far in the future an event may be stamped and still move "
            "last_event_timestamp_seconds; later ones are counted in events_future_total.",
            kind="duration",
            minimum=0,
        ),
    )


_STATE = StateSettings()


@dataclass(frozen=True)
class StateConfig:
    url: str = field(
        default="",
        metadata=opt(
            "Redis or Valkey (redis://[user:pass@]HOST:PORT/DB, rediss:// for TLS, "
            "unix:///path.sock) where replicas and workers share the dedupe window and "
            "the stateful rules' state; empty keeps state in this process's memory."
        ),
    )
    prefix: str = field(
        default=_STATE.prefix,
        metadata=opt("Prefix of every key written (several exporters can share one Redis)."),
    )
    timeout: float = field(
        default=_STATE.timeout,
        metadata=opt(
            "Deadline of connecting and of one round trip; past it the batch uses "
            "this process's state.",
            kind="duration",
            minimum=0.001,
        ),
    )
    dedupe_ttl: float = field(
        default=_STATE.dedupe_ttl,
        metadata=opt(
            "How long the shared dedupe window remembers a stored event's key.",
            kind="duration",
            minimum=1,
        ),
    )
    tls_ca_file: str = field(
        default="",
        metadata=opt("CA bundle that verifies a rediss:// server (PEM).", kind="file"),
    )
    first_seen_file: str = field(
        default="",
        metadata=opt(
            "Without state.url: where first_seen rules' memory survives restarts "
            "(default first-seen.json in spool.dir, else beside "
            "logfile.checkpoint_file; neither: not kept)."
        ),
    )
    save_interval: float = field(
        default=60.0,
        metadata=opt(
            "How often state.first_seen_file is rewritten (and at shutdown).",
            kind="duration",
            minimum=1,
        ),
    )


@dataclass(frozen=True)
class MetricsConfig:
    max_users: int = field(
        default=1000,
        metadata=opt("Distinct users in user_requests_total before __other__.", minimum=1),
    )
    max_source_ips: int = field(
        default=1000,
        metadata=opt(
            "Distinct source IPs in source_auth_failures_total before __other__.", minimum=1
        ),
    )
    max_extra_resources: int = field(
        default=100,
        metadata=opt(
            "Resources (and API groups) beyond the built-in ones kept as label values, "
            "first seen on an authorized request, before __other__ (metrics and Loki).",
            minimum=0,
        ),
    )
    max_namespaces: int = field(
        default=500,
        metadata=opt(
            "Namespaces kept as Loki stream label values, first seen on an authorized "
            "request, before __other__.",
            minimum=0,
        ),
    )
    max_webhooks: int = field(
        default=100,
        metadata=opt(
            "Admission webhook names in webhook_failed_open_total before __other__.", minimum=0
        ),
    )


@dataclass(frozen=True)
class LogConfig:
    format: str = field(default="logfmt", metadata=opt("Log format.", choices=("logfmt", "json")))
    level: str = field(
        default="info",
        metadata=opt("Log level.", choices=("debug", "info", "warning", "error")),
    )


@dataclass(frozen=True)
class Config:
    cluster: str = field(default="", metadata=opt("Name of the cluster, added to Loki streams."))
    web: WebConfig = field(default_factory=WebConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    logfile: LogfileConfig = field(default_factory=LogfileConfig)
    eks: EksConfig = field(default_factory=EksConfig)
    gke: GKEConfig = field(default_factory=GKEConfig)
    aks: AksConfig = field(default_factory=AksConfig)
    loki: LokiConfig = field(default_factory=LokiConfig)
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    state: StateConfig = field(default_factory=StateConfig)

    def redacted(self) -> dict[str, Any]:
        """The configuration as a flat dict for the start-up log line."""
        out: dict[str, Any] = {}
        for o in OPTIONS:
            value = o.get(self)
            if o.secret and value:
                value = "<redacted>"
            elif o.name == "url" and value:
                # no user:password in logs (Loki's URL, each Alertmanager's)
                value = safe_url(value) if isinstance(value, str) else [safe_url(v) for v in value]
            out[o.key] = value
        return out


@dataclass(frozen=True)
class Option:
    key: str  # "webhook.listen_address"
    section: str | None
    name: str
    type: type
    kind: str | None
    default: Any
    help: str
    choices: tuple[str, ...]
    minimum: float | None
    secret: bool

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").upper()

    @property
    def dest(self) -> str:
        return "cfg__" + self.key.replace(".", "__")

    def get(self, cfg: Config) -> Any:
        obj: Any = getattr(cfg, self.section) if self.section else cfg
        return getattr(obj, self.name)


def _section_class(f: dataclasses.Field[Any]) -> Any:
    factory: Any = f.default_factory
    return type(factory())


_TYPES = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "tuple[str, ...]": tuple,
    "tuple[Any, ...]": tuple,
}


def _options() -> tuple[Option, ...]:
    out: list[Option] = []

    def walk(cls: Any, section: str | None) -> None:
        for f in dataclasses.fields(cls):
            ftype = f.type if isinstance(f.type, type) else None
            if ftype is None and isinstance(f.type, str):
                ftype = _TYPES.get(f.type)
            if ftype is None:
                # a nested section
                walk(_section_class(f), f.name)
                continue
            meta = f.metadata
            default = f.default
            out.append(
                Option(
                    key=f"{section}.{f.name}" if section else f.name,
                    section=section,
                    name=f.name,
                    type=ftype,
                    kind=meta.get("kind"),
                    default=default,
                    help=meta.get("help", ""),
                    choices=meta.get("choices", ()),
                    minimum=meta.get("minimum"),
                    secret=meta.get("secret", False),
                )
            )

    walk(Config, None)
    return tuple(out)


OPTIONS = _options()
OPTIONS_BY_KEY = {o.key: o for o in OPTIONS}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip
_ADDRESS = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5})$")


def parse_size(value: Any) -> int:
    if type(value) is int:
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size (e.g. 1048576, 512KiB, 64MiB, 1GiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])


def parse_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean (true or false)")


def _convert(o: Option, value: Any) -> Any:
    if o.kind == "yaml":
        # a structure in the file; a YAML (or JSON) string in flags and env
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            value = value[-1]  # a repeated flag: the last one wins
        if isinstance(value, str):
            import yaml  # (see located.load)

            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ValueError(f"not valid YAML: {getattr(e, 'problem', e)}") from None
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ValueError("must be a list")
        return tuple(value)
    if o.kind == "list":
        # YAML: a list; environment: comma-separated; flags: repeated.
        if value is None:
            return ()
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, (list, tuple)):
            raise ValueError("must be a list")
        return tuple(str(v).strip() for v in value if str(v).strip())
    if o.kind == "bytes":
        return parse_size(value)
    if o.kind == "duration":
        return parse_duration(value)
    if o.type is bool:
        return parse_bool(value)
    if o.type is int:
        if type(value) is bool:
            raise ValueError(f"{value!r} is not an integer")
        try:
            return int(str(value), 10) if not isinstance(value, int) else value
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
    if o.type is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number") from None
    if o.type is str:
        if isinstance(value, (dict, list)):
            raise ValueError("must be a string")
        return "" if value is None else str(value)
    raise AssertionError(o.type)


# Where each value of the configuration file is: "detect.trusted_networks",
# and "detect.trusted_networks[1]" for an item, to (line, column).
Positions = dict[str, tuple[int, int]]


def _did_you_mean(key: str) -> str:
    known = [*OPTIONS_BY_KEY, *{o.section for o in OPTIONS if o.section}]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _plain(value: Any) -> Any:
    """A loaded value without its positions (plain dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _record(path: str, value: Any, pos: tuple[int, int], positions: Positions) -> None:
    positions[path] = pos
    if isinstance(value, LDict):
        for k, v in value.items():
            _record(f"{path}.{k}", v, value.key_pos.get(k, value.pos), positions)
    elif isinstance(value, LList):
        for i, v in enumerate(value):
            item_pos = value.item_pos[i] if i < len(value.item_pos) else value.pos
            _record(f"{path}[{i}]", v, item_pos, positions)


def _flatten(doc: LDict, problems: list[str], where: str, positions: Positions) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    sections = {o.section for o in OPTIONS if o.section}

    def at(container: LDict, key: Any) -> str:
        line, col = container.key_pos.get(key, container.pos)
        return f"{where}:{line}:{col}"

    def unknown(full: str, container: LDict, key: Any) -> None:
        problems.append(f"{full}: unknown key (from {at(container, key)}){_did_you_mean(full)}")

    for key, value in doc.items():
        if key in sections:
            if value is None:
                continue
            if not isinstance(value, LDict):
                problems.append(f"{key}: must be a mapping (from {at(doc, key)})")
                continue
            for sub, subvalue in value.items():
                full = f"{key}.{sub}"
                if full not in OPTIONS_BY_KEY:
                    unknown(full, value, sub)
                else:
                    flat[full] = _plain(subvalue)
                    _record(full, subvalue, value.key_pos.get(sub, value.pos), positions)
        elif key in OPTIONS_BY_KEY:
            flat[key] = _plain(value)
            _record(str(key), value, doc.key_pos.get(key, doc.pos), positions)
        else:
            unknown(str(key), doc, key)
    return flat


def load_file(path: str, problems: list[str], positions: Positions | None = None) -> dict[str, Any]:
    """The file's options as a flat dict (``loki.url``); problems located
    at ``file:line:col``; where each value is goes into ``positions``."""
    import yaml  # (see located.load)

    try:
        with open(path, "rb") as fh:
            doc = located.load(fh.read())
    except OSError as e:
        problems.append(f"config.file: cannot read {path}: {e.strerror}")
        return {}
    except yaml.YAMLError as e:
        problems.append(f"config.file: {located.yaml_problem(path, e)}")
        return {}
    if doc is None:
        return {}
    if not isinstance(doc, LDict):
        problems.append(f"config.file: {path}: the top level must be a mapping")
        return {}
    return _flatten(doc, problems, path, {} if positions is None else positions)


# The sections only ``run`` uses (its sources and its HTTP endpoints): replay
# and the offline tools neither take nor show their flags.
SOURCE_SECTIONS = ("web", "webhook", "logfile", "eks", "gke", "aks")


def add_flags(
    parser: argparse.ArgumentParser,
    *,
    exclude: Collection[str] = (),
    only: Collection[str] | None = None,
) -> None:
    """Add ``--config.file`` and one flag per option (defaults suppressed, so
    that only what was given on the command line takes precedence), grouped
    by section. ``exclude`` leaves sections out (``""`` is the top level),
    ``only`` keeps just those: a subcommand shows the flags it uses."""
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default=None,
        metavar="FILE",
        help=f"YAML configuration file (env {ENV_PREFIX}CONFIG_FILE).",
    )
    groups: dict[str, Any] = {}
    for o in OPTIONS:
        section = o.section or ""
        if section in exclude or (only is not None and section not in only):
            continue
        if section not in groups:
            title = f"{section} options" if section else "general options"
            groups[section] = parser.add_argument_group(title)
        group = groups[section]
        text = f"{o.help} (env {o.env}; default {o.default!r})"
        if o.kind == "list":
            group.add_argument(
                o.flag, dest=o.dest, action="append", default=argparse.SUPPRESS,
                metavar=o.name.upper(), help=text,
            )  # fmt: skip
        elif o.type is bool:
            group.add_argument(
                o.flag,
                dest=o.dest,
                nargs="?",
                const="true",
                default=argparse.SUPPRESS,
                metavar="BOOL",
                help=text,
            )
        else:
            group.add_argument(
                o.flag,
                dest=o.dest,
                default=argparse.SUPPRESS,
                metavar=o.name.upper(),
                choices=o.choices or None,
                help=text,
            )


def load(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    check_files: Callable[[str], bool] | None = None,
    *,
    skip: Collection[str] = (),
) -> Config:
    """Build the configuration from parsed flags, the environment and the file
    they name; raise ConfigError listing every problem. The sections in
    ``skip`` (``SOURCE_SECTIONS`` for replay) keep their defaults: a command
    that does not use them neither reads nor validates them (a shared file's
    webhook certificates need not exist where replay runs); their unknown
    keys are still reported."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    config_file = getattr(args, "config_file", None) or environ.get(ENV_PREFIX + "CONFIG_FILE")
    layers: list[tuple[str, dict[str, Any]]] = []
    positions: Positions = {}
    if config_file:
        layers.append((config_file, load_file(config_file, problems, positions)))
    env_layer = {o.key: environ[o.env] for o in OPTIONS if o.env in environ}
    layers.append(("environment", env_layer))
    if args is not None:
        flag_layer = {o.key: getattr(args, o.dest) for o in OPTIONS if hasattr(args, o.dest)}
        layers.append(("flags", flag_layer))

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, layer in layers:
        for key, raw in layer.items():
            o = OPTIONS_BY_KEY[key]
            if (o.section or "") in skip:
                continue
            src = o.flag if where == "flags" else o.env if where == "environment" else where
            if key in positions and where == config_file:
                src = "{}:{}:{}".format(where, *positions[key])
            try:
                values[key] = _convert(o, raw)
                origin[key] = src
            except ValueError as e:
                problems.append(f"{key}: {e} (from {src})")

    for key, value in values.items():
        o = OPTIONS_BY_KEY[key]
        if o.choices and value not in o.choices:
            problems.append(
                f"{key}: must be one of {', '.join(o.choices)}, not {value!r} (from {origin[key]})"
            )
        if o.minimum is not None and value < o.minimum:
            problems.append(f"{key}: must be >= {o.minimum:g} (from {origin[key]})")
        if o.kind == "address" and value and not _ADDRESS.match(value):
            problems.append(
                f"{key}: {value!r} is not host:port, :port or [v6]:port (from {origin[key]})"
            )
        if o.kind == "file" and value and not (check_files or _readable)(value):
            problems.append(f"{key}: cannot read {value} (from {origin[key]})")

    cfg = _build(values)
    file_pos = {k: "{}:{}:{}".format(config_file, *pos) for k, pos in positions.items()}
    problems.extend(_locate(p, origin, file_pos) for p in _cross_checks(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


_PATH = re.compile(r"^([a-z_]+(?:\.[a-z_]+)?)((?:\[\d+\]|\.[A-Za-z_]+)*): ")


def _locate(problem: str, origin: Mapping[str, str], file_pos: Mapping[str, str]) -> str:
    """A cross-check's ``key...: message`` with where the value came from:
    the flag, the variable, or file:line:col (of the list item or nested
    key when the message names one)."""
    m = _PATH.match(problem)
    if m is None or "(from " in problem or m.group(1) not in origin:
        return problem
    key, path = m.group(1), m.group(1) + m.group(2)
    src = origin[key]
    if key in file_pos and src == file_pos[key]:
        # the most precise position the file has for this path
        while path not in file_pos:
            path = re.sub(r"(\[\d+\]|\.[A-Za-z_]+)$", "", path)
        src = file_pos[path]
    return f"{problem} (from {src})"


def _readable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _build(values: Mapping[str, Any]) -> Config:
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in values.items():
        o = OPTIONS_BY_KEY[key]
        if o.section:
            sections.setdefault(o.section, {})[o.name] = value
        else:
            top[o.name] = value
    nested = {
        f.name: _section_class(f)(**sections.get(f.name, {}))
        for f in dataclasses.fields(Config)
        if f.name in sections
    }
    return Config(**top, **nested)


def _cross_checks(cfg: Config) -> Iterator[str]:
    w = cfg.webhook
    if w.listen_address:
        has_tls = bool(w.tls_cert_file or w.tls_key_file)
        if w.insecure and has_tls:
            yield "webhook.insecure: contradicts webhook.tls_cert_file/tls_key_file; choose one"
        if not w.insecure and not (w.tls_cert_file and w.tls_key_file):
            yield (
                "webhook.tls_cert_file: the webhook needs a certificate and key "
                "(or webhook.insecure for plain HTTP)"
            )
        if w.insecure and w.client_ca_file:
            yield "webhook.client_ca_file: client certificates need TLS; webhook.insecure is set"
        if not w.path.startswith("/"):
            yield f"webhook.path: must start with '/', not {w.path!r}"
        if w.listen_address == cfg.web.listen_address:
            yield "webhook.listen_address: must differ from web.listen_address"
    if cfg.loki.url:
        for key in ("headers", "redact_paths"):
            for item in _pairs(getattr(cfg.loki, key))[1]:
                yield f"loki.{key}: {item!r} is not name=value"
        # replay makes a temporary spool; run requires one (require_source)
        settings = loki_settings(cfg, spool_dir=cfg.spool.dir or "-")
        for problem in settings.problems():
            name = problem.split(":", 1)[0]
            if name.startswith("spool_") or name.startswith("fsync"):
                key = "spool." + name.removeprefix("spool_")
            elif name.startswith("redact_paths"):
                key = "loki.redact_paths"
            else:
                key = "loki." + name
            yield key + ":" + problem.split(":", 1)[1]
    if cfg.otlp.url:
        for item in _pairs(cfg.otlp.headers)[1]:
            yield f"otlp.headers: {item!r} is not name=value"
        settings = otlp_settings(cfg, spool_dir=cfg.spool.dir or "-")
        for problem in settings.problems():
            name, rest = problem.split(":", 1)
            if name.startswith("spool_") or name.startswith("fsync"):
                continue  # said for spool.* by the Loki check, or fine
            if name in ("backoff_max", "backoff_min", "max_retries", "line_limit"):
                continue  # loki.*, said above
            yield "otlp." + name + ":" + rest
    yield from _detection_problems(cfg)
    if cfg.logfile.checkpoint_file and not cfg.logfile.path:
        yield "logfile.checkpoint_file: set without logfile.path"
    yield from _eks_problems(cfg)
    yield from _gke_problems(cfg.gke)
    yield from _aks_problems(cfg.aks)
    yield from _state_problems(cfg.state)


def _state_problems(st: StateConfig) -> Iterator[str]:
    if st.url:
        problem = url_problem(st.url)
        if problem:
            yield f"state.url: {problem}"
        elif st.tls_ca_file and not st.url.startswith("rediss://"):
            yield "state.tls_ca_file: set without a rediss:// state.url"
        if st.first_seen_file:
            yield "state.first_seen_file: first_seen state lives in state.url; unset one"
    elif st.tls_ca_file:
        yield "state.tls_ca_file: set without state.url"


def state_settings(cfg: Config) -> StateSettings:
    st = cfg.state
    return StateSettings(
        url=st.url,
        prefix=st.prefix,
        timeout=st.timeout,
        dedupe_ttl=st.dedupe_ttl,
        tls_ca_file=st.tls_ca_file,
    )


def first_seen_path(cfg: Config) -> str:
    """Where first_seen rules' memory is kept without state.url ("" when
    nowhere): state.first_seen_file, else beside the spool or the log
    file's checkpoint."""
    if cfg.state.url:
        return ""
    if cfg.state.first_seen_file:
        return cfg.state.first_seen_file
    if cfg.spool.dir:
        return os.path.join(cfg.spool.dir, "first-seen.json")
    if cfg.logfile.checkpoint_file:
        return os.path.join(os.path.dirname(cfg.logfile.checkpoint_file), "first-seen.json")
    return ""


def _eks_problems(cfg: Config) -> Iterator[str]:
    e = cfg.eks
    if e.log_group:
        # here, not at the top: the EKS sources import the HTTP server (aiohttp)
        from .sources.eks_cloudwatch import parse_start_at

        try:
            parse_start_at(e.start_at)
        except ValueError as err:
            yield f"eks.start_at: {err}"
    elif e.checkpoint_file:
        yield "eks.checkpoint_file: set without eks.log_group"
    if not e.firehose_listen_address:
        return
    if not e.firehose_access_key_file:
        yield (
            "eks.firehose_access_key_file: required with eks.firehose_listen_address "
            "(the key set on the Firehose stream's HTTP endpoint)"
        )
    has_tls = bool(e.firehose_tls_cert_file or e.firehose_tls_key_file)
    if e.firehose_insecure and has_tls:
        yield "eks.firehose_insecure: contradicts eks.firehose_tls_cert_file/tls_key_file"
    if not e.firehose_insecure and not (e.firehose_tls_cert_file and e.firehose_tls_key_file):
        yield (
            "eks.firehose_tls_cert_file: the Firehose receiver needs a certificate and key "
            "(or eks.firehose_insecure behind a load balancer that ends TLS)"
        )
    if not e.firehose_path.startswith("/"):
        yield f"eks.firehose_path: must start with '/', not {e.firehose_path!r}"
    for other in ("web", "webhook"):
        if e.firehose_listen_address == getattr(cfg, other).listen_address:
            yield f"eks.firehose_listen_address: must differ from {other}.listen_address"


def _gke_problems(g: GKEConfig) -> Iterator[str]:
    if g.subscription and not re.fullmatch(r"projects/[^/]+/subscriptions/[^/]+", g.subscription):
        yield (
            f"gke.subscription: must be projects/<project>/subscriptions/<name>, "
            f"got {g.subscription!r}"
        )
    push = {
        "push_audience": g.push_audience,
        "push_service_account": g.push_service_account,
        "push_tls_cert_file": g.push_tls_cert_file,
        "push_tls_key_file": g.push_tls_key_file,
        "push_insecure_http": g.push_insecure_http,
        "push_allow_unauthenticated": g.push_allow_unauthenticated,
    }
    if not g.push_listen_address:
        for key, value in push.items():
            if value:
                yield f"gke.{key}: set without gke.push_listen_address"
        return
    if not g.push_path.startswith("/"):
        yield f"gke.push_path: must start with '/', got {g.push_path!r}"
    if g.push_allow_unauthenticated:
        if g.push_audience or g.push_service_account:
            yield "gke.push_allow_unauthenticated: contradicts gke.push_audience"
    elif not g.push_audience:
        yield (
            "gke.push_audience: required to verify the push subscription's OIDC token "
            "(or set gke.push_allow_unauthenticated)"
        )
    if g.push_insecure_http:
        if g.push_tls_cert_file or g.push_tls_key_file:
            yield "gke.push_insecure_http: cannot be combined with gke.push_tls_cert_file"
    elif not (g.push_tls_cert_file and g.push_tls_key_file):
        yield (
            "gke.push_tls_cert_file: a certificate and key are required "
            "(gke.push_tls_cert_file, gke.push_tls_key_file), or gke.push_insecure_http "
            "behind a load balancer that terminates HTTPS"
        )


def _aks_problems(a: AksConfig) -> Iterator[str]:
    for key in ("storage_account_url", "eventhub_checkpoint_account_url"):
        url = getattr(a, key)
        if "?" in url or "sig=" in url:
            # a SAS URL: the token would be in the start-up log line
            yield (
                f"aks.{key}: must not carry a query (a SAS token); credentials come "
                "from the Azure default chain (Workload Identity)"
            )
        elif url and not re.match(r"^https?://[^/\s]+", url):
            yield f"aks.{key}: {safe_url(url)!r} is not an http(s) URL"
    for category in a.categories:
        if category not in ("kube-audit", "kube-audit-admin"):
            yield f"aks.categories: {category!r} is not kube-audit or kube-audit-admin"
    if a.storage_account_url and not a.categories:
        yield "aks.categories: empty; name kube-audit, kube-audit-admin or both"
    if a.checkpoint_file and not a.storage_account_url:
        yield "aks.checkpoint_file: set without aks.storage_account_url"
    if a.eventhub_namespace:
        if "/" in a.eventhub_namespace or "." not in a.eventhub_namespace:
            yield (
                f"aks.eventhub_namespace: {a.eventhub_namespace!r} is not a fully qualified "
                "host (<ns>.servicebus.windows.net)"
            )
        if not a.eventhub_name:
            yield "aks.eventhub_name: required with aks.eventhub_namespace"
        if not a.eventhub_checkpoint_account_url:
            yield (
                "aks.eventhub_checkpoint_account_url: required with aks.eventhub_namespace "
                "(checkpoints and partition ownership across replicas)"
            )
    elif a.eventhub_name:
        yield "aks.eventhub_name: set without aks.eventhub_namespace"


def _pairs(items: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """name=value items, and the malformed ones (left out of the pairs)."""
    pairs: list[tuple[str, str]] = []
    bad: list[str] = []
    for item in items:
        name, sep, value = item.partition("=")
        if sep and name.strip():
            pairs.append((name.strip(), value.strip()))
        else:
            bad.append(item)
    return pairs, bad


def loki_settings(cfg: Config, *, spool_dir: str | None = None) -> LokiSettings:
    """The Loki output's settings from the configuration."""
    lk, sp = cfg.loki, cfg.spool
    paths: dict[str, list[str]] = {}
    for resource, path in _pairs(lk.redact_paths)[0]:
        paths.setdefault(resource, []).append(path)
    return LokiSettings(
        url=lk.url,
        tenant=lk.tenant,
        basic_auth_user=lk.basic_auth_user,
        basic_auth_password_file=lk.basic_auth_password_file,
        bearer_token_file=lk.bearer_token_file,
        ca_file=lk.ca_file,
        cert_file=lk.cert_file,
        key_file=lk.key_file,
        insecure_skip_verify=lk.insecure_skip_verify,
        connect_timeout=lk.connect_timeout,
        timeout=lk.timeout,
        headers=dict(_pairs(lk.headers)[0]),
        format=lk.format,
        batch_bytes=lk.batch_bytes,
        batch_wait=lk.batch_wait,
        backoff_min=lk.backoff_min,
        backoff_max=lk.backoff_max,
        max_retries=lk.max_retries,
        spool_dir=sp.dir if spool_dir is None else spool_dir,
        spool_max_bytes=sp.max_bytes,
        fsync=sp.fsync,
        fsync_interval=sp.fsync_interval,
        line_limit=lk.line_limit,
        redact=lk.redact,
        redact_paths=paths,
        labels=lk.labels,
        service_name=lk.service_name,
        cluster=cfg.cluster,
        writer=lk.writer or socket.gethostname(),
        structured_metadata=lk.structured_metadata,
        parallelism=lk.parallelism,
        deadline=lk.deadline,
    )


def otlp_settings(cfg: Config, *, spool_dir: str | None = None) -> LokiSettings:
    """The OTLP output's settings: its own endpoint, batching and spool (the
    ``otlp`` subdirectory of spool.dir); redaction, retries, the line limit
    and the spool's size and fsync policy as for Loki."""
    o, lk, sp = cfg.otlp, cfg.loki, cfg.spool
    base = sp.dir if spool_dir is None else spool_dir
    return LokiSettings(
        protocol="otlp",
        url=o.url,
        tenant=o.tenant,
        basic_auth_user=o.basic_auth_user,
        basic_auth_password_file=o.basic_auth_password_file,
        bearer_token_file=o.bearer_token_file,
        ca_file=o.ca_file,
        cert_file=o.cert_file,
        key_file=o.key_file,
        insecure_skip_verify=o.insecure_skip_verify,
        connect_timeout=o.connect_timeout,
        timeout=o.timeout,
        deadline=o.deadline,
        headers=dict(_pairs(o.headers)[0]),
        format=o.format,
        batch_bytes=o.batch_bytes,
        batch_wait=o.batch_wait,
        parallelism=o.parallelism,
        backoff_min=lk.backoff_min,
        backoff_max=lk.backoff_max,
        max_retries=lk.max_retries,
        spool_dir=os.path.join(base, "otlp") if base else "",
        spool_max_bytes=sp.max_bytes,
        fsync=sp.fsync,
        fsync_interval=sp.fsync_interval,
        line_limit=lk.line_limit,
        redact=lk.redact,
        service_name=o.service_name,
        cluster=cfg.cluster,
    )


def detection_settings(cfg: Config) -> DetectionSettings:
    """Detection's settings; raises RuleError listing located problems."""
    d, am = cfg.detect, cfg.alertmanager
    return DetectionSettings.from_config(
        {
            "trusted_networks": list(d.trusted_networks),
            "pod_cidrs": list(d.pod_cidrs),
            "node_cidrs": list(d.node_cidrs),
            "critical_workloads": list(d.critical_workloads),
            "disabled_rules": list(d.disabled_rules),
            "max_state_entries": d.max_state_entries,
            "alert_min_severity": d.alert_min_severity,
            "allowed_users": list(d.allowed_users),
            "allowed_images": list(d.allowed_images),
            "allowed_namespaces": list(d.allowed_namespaces),
            "allowed_nodes": list(d.allowed_nodes),
        },
        {
            "url": list(am.url),
            "link_template": am.link_template,
            "resolve_after": am.resolve_after,
        },
        cluster=cfg.cluster,
        source="configuration",
    )


def audit_metrics(
    cfg: Config, registry: CollectorRegistry | None, sources: Sequence[str]
) -> AuditMetrics:
    """The metrics as configured: the per-user and per-address caps, the
    label bounds shared with the Loki stream labels, the clock skew."""
    m = cfg.metrics
    bounds = LabelBounds(
        max_extra_resources=m.max_extra_resources,
        max_namespaces=m.max_namespaces,
        max_webhooks=m.max_webhooks,
    )
    return AuditMetrics(
        registry,
        max_users=m.max_users,
        max_source_ips=m.max_source_ips,
        sources=sources,
        bounds=bounds,
        max_future_skew=cfg.events.max_future_skew,
    )


def rule_set(cfg: Config) -> RuleSet:
    """The configured rules (the defaults when rules.file is empty); raises
    RuleError listing every problem, located by file and line."""
    if not cfg.rules.file:
        return load_rules(None)
    return load_rules(list(cfg.rules.file), with_defaults=cfg.rules.include_defaults)


def _detection_problems(cfg: Config) -> Iterator[str]:
    try:
        settings = detection_settings(cfg)
    except RuleError as e:
        yield from (p.removeprefix("configuration: ") for p in e.problems)
        return
    try:
        ruleset = rule_set(cfg)
    except RuleError as e:
        yield from (f"rules.file: {p}" for p in e.problems)
        return
    known = {r.id for r in ruleset.rules}
    for rule_id in settings.disabled_rules:
        if rule_id not in known:
            yield f"detect.disabled_rules: no rule {rule_id!r} is loaded"


def require_source(cfg: Config) -> None:
    """What ``run`` needs beyond a valid configuration: a source, and a
    spool directory when events go to Loki."""
    problems = []
    if not (
        cfg.webhook.listen_address
        or cfg.logfile.path
        or cfg.eks.log_group
        or cfg.eks.firehose_listen_address
        or cfg.gke.subscription
        or cfg.gke.push_listen_address
        or cfg.aks.storage_account_url
        or cfg.aks.eventhub_namespace
    ):
        problems.append(
            "webhook.listen_address: no source configured; set it, logfile.path, "
            "eks.log_group, eks.firehose_listen_address, gke.subscription, "
            "gke.push_listen_address, aks.storage_account_url or aks.eventhub_namespace"
        )
    if cfg.loki.url and not cfg.spool.dir:
        problems.append("spool.dir: required with loki.url (the durable buffer for Loki)")
    if cfg.otlp.url and not cfg.spool.dir:
        problems.append("spool.dir: required with otlp.url (the durable buffer for OTLP)")
    if problems:
        raise ConfigError(problems)
