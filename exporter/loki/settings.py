"""The Loki output's options, as one plain frozen dataclass.

The configuration layer (exporter/config.py) maps flags, environment and YAML
onto this; :meth:`LokiSettings.problems` says what is wrong with a value,
each problem located by its field name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from ..redact import Path, RedactionPathError

PUSH_PATH = "/loki/api/v1/push"
OTLP_LOGS_PATH = "/v1/logs"
PROTOCOLS = ("loki", "otlp")
FORMATS = ("protobuf", "json")
FSYNC_POLICIES = ("always", "interval", "never")

# Event fields that may become stream labels: each has few values. Anything
# per-user, per-object or per-request stays in structured metadata.
LABEL_FIELDS = (
    "stage",
    "user_kind",
    "code_class",
    "audit_level",
    "resource",
    "api_group",
    "namespace",
)
FIXED_LABELS = ("service_name", "cluster", "verb", "writer")

# Loki's defaults: max_line_size 256KB (KB = 1000 bytes there) and
# reject_old_samples_max_age 168h.
DEFAULT_LINE_LIMIT = 256_000
DEFAULT_MAX_AGE_SECONDS = 7 * 24 * 3600.0

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-encoding", "content-length", "authorization", "x-scope-orgid"}
)


@dataclass(frozen=True)
class LokiSettings:
    # Where to push: a base URL (``http://loki:3100``, the push path is
    # added) or a full push URL (any URL that already has a path).
    url: str = ""
    # X-Scope-OrgID; empty sends no tenant header.
    tenant: str = ""
    basic_auth_user: str = ""
    basic_auth_password_file: str = ""
    bearer_token_file: str = ""
    # TLS: CA bundle to verify Loki with, client certificate and key.
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False
    connect_timeout: float = 5.0
    timeout: float = 30.0
    # The whole request (connect, send, answer), however the server trickles;
    # 0 takes connect_timeout + timeout.
    deadline: float = 0.0
    # Pushes in flight at once, each for its own share of the streams (by a
    # hash of the stream's labels, so one stream's entries stay in order).
    parallelism: int = 1
    # Extra static headers sent with every push.
    headers: Mapping[str, str] = field(default_factory=dict)
    # protobuf (snappy-compressed logproto.PushRequest) or json (gzip).
    format: str = "protobuf"
    batch_bytes: int = 1 << 20
    batch_wait: float = 1.0
    backoff_min: float = 0.5
    backoff_max: float = 300.0
    # 0 retries without limit: the spool holds the data meanwhile.
    max_retries: int = 0
    spool_dir: str = ""
    spool_max_bytes: int = 1 << 30
    # Size at which a spool segment file is closed and a new one started;
    # 0 picks max_bytes / 16, between 1 MiB and 64 MiB.
    spool_segment_bytes: int = 0
    # always: fsync before submit() returns (durable across power loss);
    # interval: at most every fsync_interval seconds; never: leave it to the OS.
    fsync: str = "always"
    fsync_interval: float = 1.0
    line_limit: int = DEFAULT_LINE_LIMIT
    redact: bool = True
    # resource (``configmaps``, ``pods/exec``, ``*``) -> field paths to redact.
    redact_paths: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # Extra stream labels, from LABEL_FIELDS.
    labels: Sequence[str] = ()
    service_name: str = "kube-audit"
    cluster: str = ""
    # The per-writer stream label ``writer`` (the pod or node in ``run``,
    # ``replay-<host>-<pid>`` in replay), so that writers never share a
    # stream; empty leaves it out.
    writer: str = ""
    # False sends no structured metadata (Loki 2.9, or a schema before v13).
    structured_metadata: bool = True
    # loki: Loki's push API; otlp: OTLP/HTTP logs (Loki's /otlp or a collector).
    protocol: str = "loki"
    # Events older than this are refused by a default Loki; replay warns.
    max_age_warning: float = DEFAULT_MAX_AGE_SECONDS

    @property
    def push_url(self) -> str:
        parts = urlsplit(self.url)
        if self.protocol == "otlp":
            # As OTEL_EXPORTER_OTLP_ENDPOINT: the signal's path is appended
            # (http://loki:3100/otlp -> /otlp/v1/logs), unless already there.
            path = parts.path.rstrip("/")
            if not path.endswith(OTLP_LOGS_PATH):
                parts = parts._replace(path=path + OTLP_LOGS_PATH)
        elif parts.path in ("", "/"):
            parts = parts._replace(path=PUSH_PATH)
        return urlunsplit(parts)

    @property
    def request_deadline(self) -> float:
        return self.deadline if self.deadline > 0 else self.connect_timeout + self.timeout

    @property
    def segment_bytes(self) -> int:
        if self.spool_segment_bytes > 0:
            return self.spool_segment_bytes
        return max(1 << 20, min(64 << 20, self.spool_max_bytes // 16))

    def problems(self) -> list[str]:
        """Every invalid value, as ``field: what is wrong``."""
        out: list[str] = []
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            out.append("url: must be an http:// or https:// URL")
        if self.basic_auth_user and not self.basic_auth_password_file:
            out.append("basic_auth_password_file: required with basic_auth_user")
        if self.basic_auth_password_file and not self.basic_auth_user:
            out.append("basic_auth_user: required with basic_auth_password_file")
        if self.bearer_token_file and self.basic_auth_user:
            out.append("bearer_token_file: cannot be combined with basic auth")
        if bool(self.cert_file) != bool(self.key_file):
            out.append("cert_file: a client certificate needs both cert_file and key_file")
        if self.insecure_skip_verify and self.ca_file:
            out.append("insecure_skip_verify: contradicts ca_file")
        for name in ("connect_timeout", "timeout", "batch_wait", "backoff_min", "fsync_interval"):
            if getattr(self, name) <= 0:
                out.append(f"{name}: must be > 0")
        if self.deadline < 0:
            out.append("deadline: must be >= 0 (0 takes connect_timeout + timeout)")
        if not 1 <= self.parallelism <= 64:
            out.append("parallelism: must be between 1 and 64")
        if self.protocol not in PROTOCOLS:
            out.append(f"protocol: must be one of {', '.join(PROTOCOLS)}")
        if self.backoff_max < self.backoff_min:
            out.append("backoff_max: must be >= backoff_min")
        if self.batch_bytes <= 0:
            out.append("batch_bytes: must be > 0")
        if self.max_retries < 0:
            out.append("max_retries: must be >= 0 (0 retries without limit)")
        if not self.spool_dir:
            out.append("spool_dir: required when Loki is enabled")
        if self.spool_max_bytes < (1 << 16):
            out.append("spool_max_bytes: must be at least 64KiB")
        if self.spool_segment_bytes < 0:
            out.append("spool_segment_bytes: must be >= 0")
        if self.format not in FORMATS:
            out.append(f"format: must be one of {', '.join(FORMATS)}")
        if self.fsync not in FSYNC_POLICIES:
            out.append(f"fsync: must be one of {', '.join(FSYNC_POLICIES)}")
        if self.line_limit < 4096:
            out.append("line_limit: must be at least 4096 bytes")
        if not self.service_name:
            out.append("service_name: must not be empty")
        for label in self.labels:
            if label not in LABEL_FIELDS:
                out.append(
                    f"labels: {label!r} is not a bounded field (one of {', '.join(LABEL_FIELDS)})"
                )
        for name in self.headers:
            if not _HEADER_NAME.match(name):
                out.append(f"headers: {name!r} is not a valid header name")
            elif name.lower() in _RESERVED_HEADERS:
                out.append(f"headers: {name!r} is set by the exporter itself")
        for resource, paths in self.redact_paths.items():
            for p in paths:
                try:
                    Path(p)
                except RedactionPathError as e:
                    out.append(f"redact_paths.{resource}: {e}")
        return out
