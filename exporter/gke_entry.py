"""GKE: a Cloud Audit Log entry of a Kubernetes API request, as an audit.k8s.io/v1 Event.

GKE writes each request to its API server as a Cloud Logging ``LogEntry``
(``resource.type`` ``k8s_cluster``) whose ``protoPayload`` is a
``google.cloud.audit.AuditLog`` (``serviceName`` ``k8s.io``). The original
audit event is not kept; :func:`entry_to_event` rebuilds it field by field,
as README.md's "GKE" section documents. What the entry does not carry
(groups, impersonation, the query string, the latency) is left out rather
than invented; where a value is inferred (101 for an upgraded stream, 201
for a create) the table below says so.

The path of ``resourceName`` is read with the API server's own rules
(k8s.io/apiserver's RequestInfoFactory): after the group and version,
``namespaces/<ns>/`` scopes what follows unless it is one of the namespace's
own subresources (``status``, ``finalize``); then resource, name, subresource.

Nothing here raises anything but :class:`~exporter.refusals.InvalidEvent`,
so a bad entry is refused and counted like any other bad input.
"""

from __future__ import annotations

from typing import Any

from .refusals import InvalidEvent

AUDIT_LOG_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"
RESOURCE_TYPE = "k8s_cluster"
SERVICE_NAME = "k8s.io"
METHOD_PREFIX = "io.k8s."

# google.rpc.Code -> the HTTP code and Kubernetes Status reason the API server
# gives for it (google/rpc/code.proto documents each code's HTTP mapping).
GRPC_TO_HTTP: dict[int, tuple[int, str]] = {
    0: (200, ""),
    1: (499, ""),  # CANCELLED: the client went away
    2: (500, "InternalError"),  # UNKNOWN
    3: (400, "BadRequest"),  # INVALID_ARGUMENT (also 422 Invalid, see README)
    4: (504, "Timeout"),  # DEADLINE_EXCEEDED
    5: (404, "NotFound"),
    6: (409, "AlreadyExists"),
    7: (403, "Forbidden"),  # PERMISSION_DENIED
    8: (429, "TooManyRequests"),  # RESOURCE_EXHAUSTED
    9: (400, "BadRequest"),  # FAILED_PRECONDITION
    10: (409, "Conflict"),  # ABORTED
    11: (400, "BadRequest"),  # OUT_OF_RANGE
    12: (501, ""),  # UNIMPLEMENTED
    13: (500, "InternalError"),  # INTERNAL
    14: (503, "ServiceUnavailable"),  # UNAVAILABLE
    15: (500, "InternalError"),  # DATA_LOSS
    16: (401, "Unauthorized"),  # UNAUTHENTICATED
}
GRPC_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
# Subresources answered by upgrading the connection (101 Switching Protocols,
# which has no gRPC code: GKE writes UNKNOWN).
UPGRADE_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
# A namespace's own subresources (RequestInfoFactory's namespaceSubresources).
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
# The annotation that keeps a failed request's gRPC code: several HTTP codes
# share one gRPC code (400 and 422 are both INVALID_ARGUMENT).
GRPC_ANNOTATION = "kube-audit-exporter/grpc-code"
DECISION = "authorization.k8s.io/decision"
REASON = "authorization.k8s.io/reason"


def is_log_entry(obj: dict[str, Any]) -> bool:
    """Does this decoded JSON look like a Cloud Logging LogEntry with an
    AuditLog payload (whatever its resource)?"""
    payload = obj.get("protoPayload")
    return type(payload) is dict and payload.get("@type") == AUDIT_LOG_TYPE


def entry_to_event(entry: dict[str, Any]) -> dict[str, Any]:
    """The audit.k8s.io/v1 Event of a GKE Kubernetes audit LogEntry (REST
    JSON, as ``gcloud logging read --format=json``, a Cloud Storage sink or a
    Pub/Sub sink write it). Raises InvalidEvent."""
    payload = entry.get("protoPayload")
    if type(payload) is not dict or payload.get("@type") != AUDIT_LOG_TYPE:
        raise InvalidEvent("not_an_event", "a LogEntry without an AuditLog protoPayload")
    resource = entry.get("resource")
    rtype = resource.get("type") if type(resource) is dict else None
    service = payload.get("serviceName", SERVICE_NAME)
    if rtype != RESOURCE_TYPE or service != SERVICE_NAME:
        raise InvalidEvent(
            "not_an_event",
            f"Cloud Audit Log of {str(service)[:40]!r} on {str(rtype)[:40]!r}, "
            "not a Kubernetes API request (k8s.io on k8s_cluster)",
        )
    method = _string(payload, "methodName", "protoPayload.methodName")
    if not method.startswith(METHOD_PREFIX) or method.count(".") < 2:
        raise InvalidEvent("invalid_value", f"methodName {method[:60]!r} is not io.k8s.*")
    verb = method.rsplit(".", 1)[1]
    if not verb:
        raise InvalidEvent("invalid_value", f"methodName {method[:60]!r} has no verb")
    name = payload.get("resourceName", "")
    if type(name) is not str:
        raise InvalidEvent("wrong_type", "protoPayload.resourceName must be a string")
    stamp = _string(entry, "timestamp", "timestamp")
    operation = entry.get("operation")
    if operation is not None and type(operation) is not dict:
        raise InvalidEvent("wrong_type", "operation must be an object")
    op = operation or {}
    audit_id = op.get("id") or entry.get("insertId")
    if type(audit_id) is not str or not audit_id:
        raise InvalidEvent("missing_field", "neither operation.id nor insertId is set")

    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": _level(payload),
        "auditID": audit_id,
        "stage": "",
        "requestURI": "",
        "verb": verb,
        "user": _user(payload),
    }
    ref: dict[str, str] | None = None
    if method.count(".") == 2:
        # io.k8s.<verb>: a non-resource URL (/healthz, /version, /HNAP1)
        event["requestURI"] = "/" + name.lstrip("/")
    else:
        ref, uri = _object_ref(name, method, verb)
        event["requestURI"] = uri
    meta = payload.get("requestMetadata")
    if meta is not None and type(meta) is not dict:
        raise InvalidEvent("wrong_type", "protoPayload.requestMetadata must be an object")
    if meta:
        ip = meta.get("callerIp")
        if type(ip) is str and ip:
            event["sourceIPs"] = [ip]
        agent = meta.get("callerSuppliedUserAgent")
        if type(agent) is str and agent:
            event["userAgent"] = agent
    if ref is not None:
        event["objectRef"] = ref
    grpc = _grpc_code(payload)
    code, reason = _http_code(grpc, verb, ref)
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if code >= 400:
        status["status"] = "Failure"
        message = _message(payload)
        if message:
            status["message"] = message
        if reason:
            status["reason"] = reason
    event["responseStatus"] = status
    for key, field in (("request", "requestObject"), ("response", "responseObject")):
        body = payload.get(key)
        if body is None:
            continue
        if type(body) is not dict:
            raise InvalidEvent("wrong_type", f"protoPayload.{key} must be an object")
        event[field] = {k: v for k, v in body.items() if k != "@type"}
    event["requestReceivedTimestamp"] = stamp
    event["stageTimestamp"] = stamp
    # Failed authentication is logged once, at ResponseStarted (as the API
    # server does); a long-running request's first entry is its start.
    if code == 401 or (op.get("first") is True and op.get("last") is not True):
        event["stage"] = "ResponseStarted"
    else:
        event["stage"] = "ResponseComplete"
    annotations = _annotations(entry, payload)
    if grpc:
        annotations[GRPC_ANNOTATION] = str(grpc)
    if annotations:
        event["annotations"] = annotations
    return event


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        raise InvalidEvent("missing_field", f"{where} is missing")
    if type(value) is not str:
        raise InvalidEvent("wrong_type", f"{where} must be a string")
    return value


def _level(payload: dict[str, Any]) -> str:
    if payload.get("response") is not None:
        return "RequestResponse"
    if payload.get("request") is not None:
        return "Request"
    return "Metadata"


def _user(payload: dict[str, Any]) -> dict[str, Any]:
    info = payload.get("authenticationInfo")
    if info is None:
        return {}
    if type(info) is not dict:
        raise InvalidEvent("wrong_type", "protoPayload.authenticationInfo must be an object")
    email = info.get("principalEmail")
    if email is None or email == "":
        return {}
    if type(email) is not str:
        raise InvalidEvent("wrong_type", "authenticationInfo.principalEmail must be a string")
    return {"username": email}


def _object_ref(name: str, method: str, verb: str) -> tuple[dict[str, str], str]:
    """objectRef and the request path of ``resourceName``
    (``<group>/<version>/[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]``)."""
    parts = name.strip("/").split("/")
    if len(parts) < 3 or not all(parts[:3]):
        raise InvalidEvent("invalid_value", f"resourceName {name[:80]!r} is not group/version/...")
    group, version, rest = parts[0], parts[1], parts[2:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    obj_name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    expected = f".{resource}.{subresource}.{verb}" if subresource else f".{resource}.{verb}"
    if not method.endswith(expected):
        raise InvalidEvent(
            "invalid_value",
            f"methodName {method[:80]!r} does not name the resource of {name[:80]!r}",
        )
    api_group = "" if group == "core" else group
    ref: dict[str, str] = {"resource": resource}
    if namespace:
        ref["namespace"] = namespace
    if obj_name:
        ref["name"] = obj_name
    if api_group:
        ref["apiGroup"] = api_group
    ref["apiVersion"] = version
    if subresource:
        ref["subresource"] = subresource
    path = [f"/api/{version}" if not api_group else f"/apis/{api_group}/{version}"]
    if namespace and not (resource == "namespaces" and obj_name == namespace):
        path.append(f"namespaces/{namespace}")
    path.append(resource)
    if obj_name:
        path.append(obj_name)
    if subresource:
        path.append(subresource)
    return ref, "/".join(path)


def _grpc_code(payload: dict[str, Any]) -> int:
    status = payload.get("status")
    if status is None:
        return 0
    if type(status) is not dict:
        raise InvalidEvent("wrong_type", "protoPayload.status must be an object")
    code = status.get("code", 0)
    if type(code) is not int:
        raise InvalidEvent("wrong_type", "protoPayload.status.code must be an integer")
    if code not in GRPC_TO_HTTP:
        raise InvalidEvent("invalid_value", f"unknown gRPC status code {code}")
    return code


def _http_code(grpc: int, verb: str, ref: dict[str, str] | None) -> tuple[int, str]:
    """The HTTP code and Status reason for a gRPC code, with the two codes
    gRPC cannot say inferred from the request."""
    subresource = ref.get("subresource", "") if ref is not None else ""
    if subresource in UPGRADE_SUBRESOURCES and grpc in (0, 2):
        return 101, ""
    if grpc == 0 and verb == "create" and ref is not None:
        return 201, ""
    return GRPC_TO_HTTP[grpc]


def _message(payload: dict[str, Any]) -> str:
    """The status message, unless it only names the gRPC code again."""
    status = payload.get("status") or {}
    message = status.get("message", "")
    if type(message) is not str or message in GRPC_NAMES:
        return ""
    return message


def _annotations(entry: dict[str, Any], payload: dict[str, Any]) -> dict[str, str]:
    """The entry's labels (GKE writes the event's annotations there), with
    the authorization decision from authorizationInfo when no label has it."""
    labels = entry.get("labels")
    if labels is not None and type(labels) is not dict:
        raise InvalidEvent("wrong_type", "labels must be an object")
    annotations = {str(k): v for k, v in (labels or {}).items() if type(v) is str}
    checks = payload.get("authorizationInfo")
    if DECISION not in annotations and type(checks) is list and checks:
        granted = all(type(c) is dict and c.get("granted") is True for c in checks)
        annotations[DECISION] = "allow" if granted else "forbid"
    return annotations
