"""GKE Cloud Audit Log entries for the tests: the real ones of the shared
corpora (sysdig-stackdriver-webhook-bridge stores them as Go structs, turned
back into the REST JSON that Cloud Logging exports), and entries built from
Google's documented LogEntry / AuditLog format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.gke_entry import AUDIT_LOG_TYPE
from tests.conftest import CORPORA

SYSDIG = CORPORA / "sysdig-stackdriver-webhook-bridge"
ELASTIC_GKE = (
    CORPORA
    / "elastic-integrations/packages/gcp/data_stream/audit/_dev/test/pipeline"
    / "test-k8s-nonmatching-resourcename.log"
)


def sysdig_entry(path: Path) -> dict[str, Any]:
    """One corpus file as the LogEntry JSON that `gcloud logging read` prints."""
    doc = json.loads(path.read_text())
    e = doc["Entry"]
    entry: dict[str, Any] = {
        "insertId": e["InsertID"],
        "logName": e["LogName"].replace(
            "cloudaudit.googleapis.com/", "cloudaudit.googleapis.com%2F"
        ),
        "operation": e["Operation"],
        "protoPayload": {"@type": AUDIT_LOG_TYPE, **json.loads(doc["AuditPayload"])},
        "resource": e["Resource"],
        "timestamp": e["Timestamp"],
    }
    if e.get("Labels"):
        entry["labels"] = e["Labels"]
    return entry


def sysdig_files() -> list[Path]:
    files = sorted((SYSDIG / "log_entries").glob("*.json"))
    assert len(files) == 25, f"the GKE corpus is incomplete under {SYSDIG}"
    return files


def entry(
    method: str,
    resource_name: str,
    *,
    insert_id: str = "e-1",
    status: dict[str, Any] | None = None,
    principal: str | None = "alice@example.com",
    labels: dict[str, str] | None = None,
    operation: dict[str, Any] | None = None,
    granted: bool | None = True,
    request: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    timestamp: str = "2024-05-01T10:00:00.123456Z",
    caller_ip: str = "203.0.113.7",
) -> dict[str, Any]:
    """A LogEntry shaped as Google's documentation shows a GKE Kubernetes
    audit entry (k8s.io on k8s_cluster, operation.id = insertId, first and
    last true for a request answered at once)."""
    payload: dict[str, Any] = {
        "@type": AUDIT_LOG_TYPE,
        "serviceName": "k8s.io",
        "methodName": method,
        "resourceName": resource_name,
        "authenticationInfo": {} if principal is None else {"principalEmail": principal},
        "requestMetadata": {
            "callerIp": caller_ip,
            "callerSuppliedUserAgent": "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225",
        },
    }
    if status is not None:
        payload["status"] = status
    if granted is not None:
        payload["authorizationInfo"] = [
            {"permission": method, "resource": resource_name, "granted": granted}
        ]
    if request is not None:
        payload["request"] = request
    if response is not None:
        payload["response"] = response
    doc: dict[str, Any] = {
        "insertId": insert_id,
        "logName": "projects/demo/logs/cloudaudit.googleapis.com%2Factivity",
        "operation": operation
        if operation is not None
        else {"id": insert_id, "producer": "k8s.io", "first": True, "last": True},
        "protoPayload": payload,
        "receiveTimestamp": "2024-05-01T10:00:01.5Z",
        "resource": {
            "type": "k8s_cluster",
            "labels": {"cluster_name": "demo", "location": "europe-west1", "project_id": "demo"},
        },
        "timestamp": timestamp,
    }
    if labels is not None:
        doc["labels"] = labels
    return doc
