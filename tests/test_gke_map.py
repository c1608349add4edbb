"""The GKE mapping: Cloud Audit Log entries to audit.k8s.io/v1 Events, on the
real GKE entries of the corpora and on entries built from Google's documented
format (every verb, subresources, a 403 with its reason, a 401)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter.event import AuditEvent, Decoder, InvalidEvent
from exporter.gke_entry import GRPC_ANNOTATION, entry_to_event
from tests.gke_entries import ELASTIC_GKE, SYSDIG, entry, sysdig_entry, sysdig_files


def decode(obj: dict[str, Any]) -> AuditEvent:
    return Decoder().decode_object(obj)


# --- the real entries ----------------------------------------------------------


@pytest.mark.parametrize("path", sysdig_files(), ids=lambda p: p.stem)
def test_real_entry_agrees_with_the_independent_conversion(path: Path) -> None:
    """Each of the 25 real GKE entries maps to an event whose who/what/where
    agree with the bridge's own conversion of the same entry."""
    ev = decode(sysdig_entry(path))
    theirs = json.loads((SYSDIG / "k8s_audit_events" / path.name).read_text())
    ours = ev.obj
    assert ours["apiVersion"] == "audit.k8s.io/v1"
    assert ev.audit_id == theirs["auditID"]
    assert ev.verb == theirs["verb"]
    assert ev.username == theirs["user"]["username"]
    assert ours["sourceIPs"] == theirs["sourceIPs"]
    assert ev.user_agent == theirs["userAgent"]
    ref = theirs["objectRef"]
    if ref["resource"] == "namespaces" and "name" in ref:
        # the API server's RequestInfo: a namespace is in itself (the bridge
        # leaves it out); see test_real_namespace_is_its_own_namespace
        ref["namespace"] = ref["name"]
    assert (ev.resource, ev.subresource, ev.namespace, ev.name) == (
        ref["resource"],
        ref.get("subresource", ""),
        ref.get("namespace", ""),
        ref.get("name", ""),
    )
    # the bridge writes "core" for the core group; the API server writes nothing
    assert ev.api_group == ("" if ref["apiGroup"] == "core" else ref["apiGroup"])
    for key in ("authorization.k8s.io/decision", "authorization.k8s.io/reason"):
        assert ev.annotations[key] == theirs["annotations"][key]
    assert ev.received_ts == ev.stage_ts == AuditEvent(theirs).received_ts


def test_real_exec_is_an_upgraded_stream_started() -> None:
    ev = decode(sysdig_entry(SYSDIG / "log_entries/exec_pod.json"))
    assert (ev.stage, ev.code, ev.verb, ev.resource_label) == (
        "ResponseStarted",
        101,
        "create",
        "pods/exec",
    )
    assert ev.request_uri == (
        "/api/v1/namespaces/default/pods/hostnetwork-deployment-5dc5447c47-6ssdf/exec"
    )
    # the gRPC code (UNKNOWN) is kept beside the inferred 101
    assert ev.annotations[GRPC_ANNOTATION] == "2"


def test_real_attach_last_entry_completes_the_request() -> None:
    ev = decode(sysdig_entry(SYSDIG / "log_entries/attach_pod.json"))
    assert (ev.stage, ev.code, ev.resource_label) == ("ResponseComplete", 101, "pods/attach")


def test_real_not_found_delete() -> None:
    ev = decode(sysdig_entry(SYSDIG / "log_entries/delete_service_failed_not_found.json"))
    assert (ev.verb, ev.code, ev.stage) == ("delete", 404, "ResponseComplete")
    assert ev.obj["responseStatus"] == {
        "metadata": {},
        "code": 404,
        "status": "Failure",
        "reason": "NotFound",
    }


def test_real_create_with_generated_name_has_bodies_and_201() -> None:
    ev = decode(sysdig_entry(SYSDIG / "log_entries/create_vanilla_pod.json"))
    assert (ev.code, ev.level, ev.name, ev.namespace) == (201, "RequestResponse", "", "default")
    assert ev.user_kind == "serviceaccount"
    assert ev.obj["requestObject"]["kind"] == "Pod"
    assert "@type" not in ev.obj["requestObject"]
    assert "@type" not in ev.obj["responseObject"]
    assert ev.obj["requestURI"] == "/api/v1/namespaces/default/pods"
    assert ev.annotations["authorization.k8s.io/reason"].startswith("RBAC: allowed by")


def test_real_namespace_is_its_own_namespace() -> None:
    ev = decode(sysdig_entry(SYSDIG / "log_entries/create_namespace.json"))
    assert (ev.resource, ev.name, ev.namespace) == ("namespaces", "test-ns", "test-ns")
    assert ev.request_uri == "/api/v1/namespaces/test-ns"


def test_real_rbac_group() -> None:
    ev = decode(sysdig_entry(SYSDIG / "log_entries/modify_system_cluster_role.json"))
    assert (ev.verb, ev.api_group, ev.resource, ev.name, ev.namespace) == (
        "patch",
        "rbac.authorization.k8s.io",
        "clusterroles",
        "system:node-problem-detector",
        "",
    )
    assert ev.request_uri == (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:node-problem-detector"
    )
    assert ev.code == 200


def test_real_elastic_anonymous_forbidden_non_resource_request() -> None:
    """Elastic's GKE sample: an anonymous GET /HNAP1 refused (gRPC 7)."""
    ev = decode(json.loads(ELASTIC_GKE.read_text()))
    assert (ev.verb, ev.code, ev.request_uri, ev.resource) == ("get", 403, "/HNAP1", "")
    assert ev.user_kind == "anonymous"
    assert "objectRef" not in ev.obj
    assert ev.annotations["authorization.k8s.io/decision"] == "forbid"
    assert ev.source_ip == "192.168.1.1"
    assert ev.stage_time == "2021-04-23T14:47:07.535383Z"


# --- entries built from Google's documented format ---------------------------

VERBS = [
    ("get", "core/v1/namespaces/prod/configmaps/app", 200),
    ("list", "core/v1/namespaces/prod/configmaps", 200),
    ("watch", "core/v1/namespaces/prod/configmaps", 200),
    ("create", "core/v1/namespaces/prod/configmaps/app", 201),
    ("update", "core/v1/namespaces/prod/configmaps/app", 200),
    ("patch", "core/v1/namespaces/prod/configmaps/app", 200),
    ("delete", "core/v1/namespaces/prod/configmaps/app", 200),
    ("deletecollection", "core/v1/namespaces/prod/configmaps", 200),
]


@pytest.mark.parametrize(("verb", "name", "code"), VERBS, ids=[v[0] for v in VERBS])
def test_every_verb(verb: str, name: str, code: int) -> None:
    ev = decode(entry(f"io.k8s.core.v1.configmaps.{verb}", name))
    assert (ev.verb, ev.code, ev.resource, ev.namespace) == (verb, code, "configmaps", "prod")
    assert ev.name == ("app" if name.endswith("/app") else "")
    assert ev.request_uri == "/api/v1/namespaces/prod/configmaps" + ("/app" if ev.name else "")
    assert ev.stage == "ResponseComplete"
    assert ev.annotations["authorization.k8s.io/decision"] == "allow"


SUBRESOURCES = [
    ("io.k8s.core.v1.pods.status.patch", "core/v1/namespaces/a/pods/p/status", "pods/status"),
    ("io.k8s.core.v1.pods.log.get", "core/v1/namespaces/a/pods/p/log", "pods/log"),
    (
        "io.k8s.apps.v1.deployments.scale.update",
        "apps/v1/namespaces/a/deployments/d/scale",
        "deployments/scale",
    ),
    (
        "io.k8s.core.v1.pods.eviction.create",
        "core/v1/namespaces/a/pods/p/eviction",
        "pods/eviction",
    ),
    (
        "io.k8s.core.v1.serviceaccounts.token.create",
        "core/v1/namespaces/a/serviceaccounts/s/token",
        "serviceaccounts/token",
    ),
    (
        "io.k8s.core.v1.namespaces.finalize.update",
        "core/v1/namespaces/a/finalize",
        "namespaces/finalize",
    ),
    ("io.k8s.core.v1.nodes.proxy.get", "core/v1/nodes/n1/proxy", "nodes/proxy"),
]


@pytest.mark.parametrize(
    ("method", "name", "label"), SUBRESOURCES, ids=[s[2] for s in SUBRESOURCES]
)
def test_subresources(method: str, name: str, label: str) -> None:
    ev = decode(entry(method, name))
    assert ev.resource_label == label
    group, version = name.split("/")[:2]
    prefix = f"/api/{version}" if group == "core" else f"/apis/{group}/{version}"
    assert ev.request_uri == prefix + "/" + name.split("/", 2)[2]


def test_portforward_upgrade_is_101() -> None:
    ev = decode(
        entry(
            "io.k8s.core.v1.pods.portforward.create",
            "core/v1/namespaces/a/pods/p/portforward",
            status={"code": 2, "message": "UNKNOWN"},
            operation={"id": "pf-1", "producer": "k8s.io", "first": True},
        )
    )
    assert (ev.code, ev.stage, ev.audit_id) == (101, "ResponseStarted", "pf-1")


def test_forbidden_with_its_reason() -> None:
    ev = decode(
        entry(
            "io.k8s.core.v1.secrets.get",
            "core/v1/namespaces/kube-system/secrets/admin-token",
            principal="system:serviceaccount:default:app",
            status={
                "code": 7,
                "message": 'secrets "admin-token" is forbidden: User '
                '"system:serviceaccount:default:app" cannot get resource "secrets"',
            },
            granted=False,
            labels={
                "authorization.k8s.io/decision": "forbid",
                "authorization.k8s.io/reason": "access denied by IAM",
            },
        )
    )
    assert (ev.code, ev.stage, ev.user_kind) == (403, "ResponseComplete", "serviceaccount")
    status = ev.obj["responseStatus"]
    assert status["reason"] == "Forbidden" and status["status"] == "Failure"
    assert status["message"].startswith('secrets "admin-token" is forbidden')
    assert ev.annotations["authorization.k8s.io/decision"] == "forbid"
    assert ev.annotations["authorization.k8s.io/reason"] == "access denied by IAM"
    assert ev.annotations[GRPC_ANNOTATION] == "7"


def test_forbidden_decision_from_authorization_info_without_labels() -> None:
    ev = decode(
        entry(
            "io.k8s.core.v1.pods.delete",
            "core/v1/namespaces/a/pods/p",
            status={"code": 7},
            granted=False,
        )
    )
    assert ev.annotations["authorization.k8s.io/decision"] == "forbid"
    assert "authorization.k8s.io/reason" not in ev.annotations


def test_unauthenticated_is_401_at_response_started_without_user() -> None:
    ev = decode(
        entry(
            "io.k8s.core.v1.namespaces.list",
            "core/v1/namespaces",
            principal=None,
            status={"code": 16, "message": "UNAUTHENTICATED"},
            granted=None,
        )
    )
    assert (ev.code, ev.stage, ev.username, ev.user_kind) == (
        401,
        "ResponseStarted",
        "",
        "unauthenticated",
    )
    assert ev.obj["user"] == {}
    assert ev.obj["responseStatus"] == {
        "metadata": {},
        "code": 401,
        "status": "Failure",
        "reason": "Unauthorized",
    }
    assert "authorization.k8s.io/decision" not in ev.annotations


@pytest.mark.parametrize(
    ("grpc", "http"),
    [(3, 400), (4, 504), (6, 409), (8, 429), (9, 400), (10, 409), (13, 500), (14, 503)],
)
def test_grpc_status_to_http(grpc: int, http: int) -> None:
    ev = decode(
        entry(
            "io.k8s.core.v1.configmaps.update",
            "core/v1/namespaces/a/configmaps/c",
            status={"code": grpc},
        )
    )
    assert ev.code == http


def test_bodies_and_levels() -> None:
    req = {"@type": "core.k8s.io/v1.ConfigMap", "apiVersion": "v1", "kind": "ConfigMap"}
    metadata = decode(entry("io.k8s.core.v1.configmaps.get", "core/v1/namespaces/a/configmaps/c"))
    request = decode(
        entry("io.k8s.core.v1.configmaps.update", "core/v1/namespaces/a/configmaps/c", request=req)
    )
    both = decode(
        entry(
            "io.k8s.core.v1.configmaps.update",
            "core/v1/namespaces/a/configmaps/c",
            request=req,
            response=req,
        )
    )
    assert (metadata.level, request.level, both.level) == ("Metadata", "Request", "RequestResponse")
    assert request.obj["requestObject"] == {"apiVersion": "v1", "kind": "ConfigMap"}
    assert "responseObject" not in request.obj
    assert both.has_body


def test_timestamp_kept_with_every_digit() -> None:
    ev = decode(
        entry(
            "io.k8s.core.v1.pods.get",
            "core/v1/namespaces/a/pods/p",
            timestamp="2024-05-01T10:00:00.123456789Z",
        )
    )
    assert ev.stage_time == ev.obj["requestReceivedTimestamp"] == "2024-05-01T10:00:00.123456789Z"
    assert ev.stage_ts == pytest.approx(1714557600.123456789)


# --- refusals ------------------------------------------------------------------


def _refusal(obj: dict[str, Any]) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as e:
        decode(obj)
    return e.value


def test_other_cloud_audit_logs_are_not_events() -> None:
    gke_api = entry("google.container.v1.ClusterManager.CreateCluster", "projects/p/clusters/c")
    gke_api["resource"]["type"] = "gke_cluster"
    gke_api["protoPayload"]["serviceName"] = "container.googleapis.com"
    assert _refusal(gke_api).reason == "not_an_event"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda e: e["protoPayload"].pop("methodName"), "missing_field"),
        (lambda e: e["protoPayload"].update(methodName=5), "wrong_type"),
        (
            lambda e: e["protoPayload"].update(
                methodName="io.k8s.core.v1.pods.get", resourceName="core/v1/namespaces/a/secrets/s"
            ),
            "invalid_value",
        ),
        (lambda e: e["protoPayload"].update(resourceName="x"), "invalid_value"),
        (lambda e: e["protoPayload"].update(status={"code": 99}), "invalid_value"),
        (lambda e: e["protoPayload"].update(status={"code": "7"}), "wrong_type"),
        (lambda e: e.pop("timestamp"), "missing_field"),
        (lambda e: e.update(timestamp="yesterday"), "invalid_value"),
        (lambda e: (e.pop("operation"), e.pop("insertId")), "missing_field"),
        (lambda e: e["protoPayload"].update(request=[1]), "wrong_type"),
        (lambda e: e["protoPayload"].update(authenticationInfo="alice"), "wrong_type"),
        (lambda e: e.update(labels=["a"]), "wrong_type"),
    ],
)
def test_bad_entries_are_refused_with_a_reason(change: Any, reason: str) -> None:
    bad = entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/p")
    change(bad)
    assert _refusal(bad).reason == reason


def test_bad_entry_among_good_ones_keeps_the_good() -> None:
    good = [
        entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/p", insert_id=f"g{i}")
        for i in range(3)
    ]
    bad = entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/p", status={"code": 99})
    lines = b"\n".join(json.dumps(o).encode() for o in [good[0], bad, good[1], good[2]])
    items = list(Decoder().decode_document(lines))
    assert [type(i).__name__ for i in items] == [
        "AuditEvent",
        "InvalidEvent",
        "AuditEvent",
        "AuditEvent",
    ]


def test_the_mapping_is_the_documented_event() -> None:
    """One entry, the whole event: every field as README.md documents it."""
    got = entry_to_event(
        entry(
            "io.k8s.apps.v1.deployments.scale.patch",
            "apps/v1/namespaces/shop/deployments/web/scale",
            insert_id="8b1c",
            labels={
                "authorization.k8s.io/decision": "allow",
                "authorization.k8s.io/reason": "RBAC: allowed",
            },
            request={"@type": "k8s.io/Patch", "spec": {"replicas": 3}},
        )
    )
    assert got == {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Request",
        "auditID": "8b1c",
        "stage": "ResponseComplete",
        "requestURI": "/apis/apps/v1/namespaces/shop/deployments/web/scale",
        "verb": "patch",
        "user": {"username": "alice@example.com"},
        "sourceIPs": ["203.0.113.7"],
        "userAgent": "kubectl/v1.30.1 (linux/amd64) kubernetes/6911225",
        "objectRef": {
            "resource": "deployments",
            "namespace": "shop",
            "name": "web",
            "apiGroup": "apps",
            "apiVersion": "v1",
            "subresource": "scale",
        },
        "responseStatus": {"metadata": {}, "code": 200},
        "requestObject": {"spec": {"replicas": 3}},
        "requestReceivedTimestamp": "2024-05-01T10:00:00.123456Z",
        "stageTimestamp": "2024-05-01T10:00:00.123456Z",
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": "RBAC: allowed",
        },
    }
