"""Audit policy evaluation, case by case, as kube-apiserver documents it.

Each case is a policy, a request and the expected decision. The semantics are
those of k8s.io/apiserver/pkg/audit/policy/checker.go and the field comments
of audit.k8s.io/v1 PolicyRule and GroupResources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from exporter.event import AuditEvent, Decoder
from exporter.policy import Attributes, Policy, User, attributes_from_event, evaluate, load_policy

ALICE = User("alice", ("dev", "system:authenticated"))
BOB = User("bob", ("ops", "system:authenticated"))


def pods(**kw: Any) -> Attributes:
    """A request for pods in namespace default by alice, overridable."""
    base: dict[str, Any] = {
        "verb": "get",
        "user": ALICE,
        "resource_request": True,
        "path": "/api/v1/namespaces/default/pods/web",
        "api_group": "",
        "resource": "pods",
        "subresource": "",
        "namespace": "default",
        "name": "web",
    }
    base.update(kw)
    return Attributes(**base)


def non_resource(path: str, verb: str = "get", user: User | None = ALICE) -> Attributes:
    return Attributes(verb=verb, user=user, resource_request=False, path=path)


def policy(rules: str, head: str = "") -> Policy:
    text = f"apiVersion: audit.k8s.io/v1\nkind: Policy\n{head}rules:\n{rules}"
    loaded = load_policy(text)
    assert loaded.accepted, loaded.findings
    assert loaded.policy is not None
    return loaded.policy


@dataclass(frozen=True)
class Case:
    rules: str
    request: Attributes
    level: str
    rule: int | None
    head: str = ""
    omit_stages: tuple[str, ...] | None = None
    omit_managed_fields: bool | None = None


CASES: dict[str, Case] = {
    # --- order -------------------------------------------------------------
    "first matching rule wins": Case(
        "- level: RequestResponse\n  verbs: [get]\n- level: Metadata\n",
        pods(),
        "RequestResponse",
        0,
    ),
    "a later rule decides when earlier ones do not match": Case(
        "- level: RequestResponse\n  verbs: [delete]\n- level: Metadata\n",
        pods(),
        "Metadata",
        1,
    ),
    "no matching rule means level None": Case(
        "- level: Metadata\n  verbs: [delete]\n",
        pods(),
        "None",
        None,
    ),
    "a rule with no selector matches a resource request": Case(
        "- level: Request\n", pods(), "Request", 0
    ),
    "a rule with no selector matches a non-resource request": Case(
        "- level: Request\n", non_resource("/version"), "Request", 0
    ),
    # --- users and groups --------------------------------------------------
    "users is an exact match": Case("- level: Metadata\n  users: [alice]\n", pods(), "Metadata", 0),
    "users does not match another user": Case(
        "- level: Metadata\n  users: [alice]\n", pods(user=BOB), "None", None
    ),
    "users is not a prefix match": Case(
        "- level: Metadata\n  users: [ali]\n", pods(), "None", None
    ),
    "userGroups matches when the user is in any of them": Case(
        "- level: Metadata\n  userGroups: [ops, dev]\n", pods(), "Metadata", 0
    ),
    "userGroups does not match a user in none of them": Case(
        "- level: Metadata\n  userGroups: [ops]\n", pods(), "None", None
    ),
    "users and userGroups must both match": Case(
        "- level: Metadata\n  users: [alice]\n  userGroups: [ops]\n", pods(), "None", None
    ),
    "a request without a user never matches users": Case(
        "- level: Request\n  users: ['']\n- level: Metadata\n",
        pods(user=None),
        "Metadata",
        1,
    ),
    "a request without a user never matches userGroups": Case(
        "- level: Request\n  userGroups: [system:unauthenticated]\n- level: Metadata\n",
        pods(user=None),
        "Metadata",
        1,
    ),
    "a request without a user matches a rule without users": Case(
        "- level: Request\n  verbs: [get]\n", pods(user=None), "Request", 0
    ),
    # --- verbs ----------------------------------------------------------------
    "verbs is an exact match": Case(
        "- level: Metadata\n  verbs: [list, get]\n", pods(), "Metadata", 0
    ),
    "verbs does not match another verb": Case(
        "- level: Metadata\n  verbs: [list]\n", pods(), "None", None
    ),
    "verbs has no wildcard": Case("- level: Metadata\n  verbs: ['*']\n", pods(), "None", None),
    "verbs apply to non-resource requests": Case(
        "- level: Metadata\n  verbs: [post]\n", non_resource("/logs", verb="post"), "Metadata", 0
    ),
    # --- groups -----------------------------------------------------------------
    "an omitted group is the core group": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods]\n", pods(), "Metadata", 0
    ),
    "the core group does not match a named group": Case(
        "- level: Metadata\n  resources:\n  - resources: [deployments]\n",
        pods(api_group="apps", resource="deployments"),
        "None",
        None,
    ),
    "a named group matches only itself": Case(
        "- level: Metadata\n  resources:\n  - group: apps\n    resources: [pods]\n",
        pods(),
        "None",
        None,
    ),
    "group * matches a named group": Case(
        "- level: Metadata\n  resources:\n  - group: '*'\n    resources: [deployments]\n",
        pods(api_group="apps", resource="deployments"),
        "Metadata",
        0,
    ),
    "group * matches the core group": Case(
        "- level: Metadata\n  resources:\n  - group: '*'\n    resources: [pods]\n",
        pods(),
        "Metadata",
        0,
    ),
    "a group without resources matches every resource of the group": Case(
        "- level: Metadata\n  resources:\n  - group: apps\n",
        pods(api_group="apps", resource="deployments", subresource="scale"),
        "Metadata",
        0,
    ),
    "any of several resources entries may match": Case(
        "- level: Metadata\n  resources:\n  - group: apps\n    resources: [deployments]\n"
        "  - group: ''\n    resources: [pods]\n",
        pods(),
        "Metadata",
        0,
    ),
    # --- resources and subresources --------------------------------------------
    "pods matches pods": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods]\n", pods(), "Metadata", 0
    ),
    "pods does not match pods/log": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods]\n",
        pods(subresource="log"),
        "None",
        None,
    ),
    "pods/log matches pods/log": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods/log]\n",
        pods(subresource="log"),
        "Metadata",
        0,
    ),
    "pods/log does not match pods": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods/log]\n", pods(), "None", None
    ),
    "pods/* matches pods": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods/*]\n", pods(), "Metadata", 0
    ),
    "pods/* matches pods/exec": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods/*]\n",
        pods(subresource="exec", verb="create"),
        "Metadata",
        0,
    ),
    "pods/* does not match services": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods/*]\n",
        pods(resource="services"),
        "None",
        None,
    ),
    "*/log matches pods/log": Case(
        "- level: Metadata\n  resources:\n  - resources: ['*/log']\n",
        pods(subresource="log"),
        "Metadata",
        0,
    ),
    "*/log does not match pods": Case(
        "- level: Metadata\n  resources:\n  - resources: ['*/log']\n", pods(), "None", None
    ),
    "*/log does not match pods/exec": Case(
        "- level: Metadata\n  resources:\n  - resources: ['*/log']\n",
        pods(subresource="exec"),
        "None",
        None,
    ),
    "* matches a resource": Case(
        "- level: Metadata\n  resources:\n  - resources: ['*']\n", pods(), "Metadata", 0
    ),
    "* matches a subresource": Case(
        "- level: Metadata\n  resources:\n  - resources: ['*']\n",
        pods(subresource="status", verb="update"),
        "Metadata",
        0,
    ),
    "*/* matches nothing": Case(
        "- level: Metadata\n  resources:\n  - resources: ['*/*']\n",
        pods(subresource="log"),
        "None",
        None,
    ),
    "a resource rule never matches a non-resource request": Case(
        "- level: Metadata\n  resources:\n  - resources: ['*']\n",
        non_resource("/api/v1/pods"),
        "None",
        None,
    ),
    # --- resourceNames ---------------------------------------------------------
    "resourceNames matches the named object": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods]\n    resourceNames: [web]\n",
        pods(),
        "Metadata",
        0,
    ),
    "resourceNames does not match another object": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods]\n    resourceNames: [db]\n",
        pods(),
        "None",
        None,
    ),
    "resourceNames never match a create": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods]\n    resourceNames: [web]\n",
        pods(verb="create", name="", path="/api/v1/namespaces/default/pods"),
        "None",
        None,
    ),
    "resourceNames match a create on a named subresource": Case(
        "- level: Metadata\n  resources:\n  - resources: [serviceaccounts/token]\n"
        "    resourceNames: [default]\n",
        pods(verb="create", resource="serviceaccounts", subresource="token", name="default"),
        "Metadata",
        0,
    ),
    "resourceNames does not match a list": Case(
        "- level: Metadata\n  resources:\n  - resources: [pods]\n    resourceNames: [web]\n",
        pods(verb="list", name=""),
        "None",
        None,
    ),
    # --- namespaces ------------------------------------------------------------
    "namespaces matches the namespace": Case(
        "- level: Metadata\n  namespaces: [default]\n", pods(), "Metadata", 0
    ),
    "namespaces does not match another namespace": Case(
        "- level: Metadata\n  namespaces: [kube-system]\n", pods(), "None", None
    ),
    "namespaces does not match a cluster-scoped request": Case(
        "- level: Metadata\n  namespaces: [default]\n",
        pods(resource="nodes", namespace="", name="n1"),
        "None",
        None,
    ),
    'namespaces [""] matches a cluster-scoped request': Case(
        "- level: Metadata\n  namespaces: ['']\n",
        pods(resource="nodes", namespace="", name="n1"),
        "Metadata",
        0,
    ),
    'namespaces [""] matches a request across all namespaces': Case(
        "- level: Metadata\n  namespaces: ['']\n",
        pods(verb="list", namespace="", name="", path="/api/v1/pods"),
        "Metadata",
        0,
    ),
    'namespaces [""] does not match a namespaced request': Case(
        "- level: Metadata\n  namespaces: ['']\n", pods(), "None", None
    ),
    "namespaces never match a non-resource request": Case(
        "- level: Metadata\n  namespaces: ['']\n", non_resource("/healthz"), "None", None
    ),
    "namespaces and resources must both match": Case(
        "- level: Metadata\n  namespaces: [default]\n  resources:\n  - resources: [secrets]\n",
        pods(),
        "None",
        None,
    ),
    # --- non-resource URLs ------------------------------------------------------
    "a non-resource URL matches exactly": Case(
        "- level: Metadata\n  nonResourceURLs: [/metrics]\n",
        non_resource("/metrics"),
        "Metadata",
        0,
    ),
    "a non-resource URL without * is not a prefix": Case(
        "- level: Metadata\n  nonResourceURLs: [/metrics]\n",
        non_resource("/metrics/slis"),
        "None",
        None,
    ),
    "a trailing * matches the path itself": Case(
        "- level: Metadata\n  nonResourceURLs: [/healthz*]\n",
        non_resource("/healthz"),
        "Metadata",
        0,
    ),
    "a trailing * matches sub-paths": Case(
        "- level: Metadata\n  nonResourceURLs: [/healthz*]\n",
        non_resource("/healthz/etcd"),
        "Metadata",
        0,
    ),
    "a trailing * is a plain prefix, not a path segment": Case(
        "- level: Metadata\n  nonResourceURLs: [/healthz*]\n",
        non_resource("/healthzfoo"),
        "Metadata",
        0,
    ),
    "a /* prefix does not match the bare path": Case(
        "- level: Metadata\n  nonResourceURLs: [/api/*]\n", non_resource("/api"), "None", None
    ),
    "* matches every non-resource URL": Case(
        "- level: Metadata\n  nonResourceURLs: ['*']\n",
        non_resource("/anything/at/all"),
        "Metadata",
        0,
    ),
    "a non-resource URL rule never matches a resource request": Case(
        "- level: Metadata\n  nonResourceURLs: ['*']\n", pods(), "None", None
    ),
    # --- stages and managed fields ---------------------------------------------
    "omitStages is the union of the policy's and the rule's": Case(
        "- level: Metadata\n  omitStages: [Panic, ResponseStarted]\n",
        pods(),
        "Metadata",
        0,
        head="omitStages: [RequestReceived, ResponseStarted]\n",
        omit_stages=("RequestReceived", "ResponseStarted", "Panic"),
    ),
    "omitStages of the policy alone when the rule has none": Case(
        "- level: Metadata\n",
        pods(),
        "Metadata",
        0,
        head="omitStages: [RequestReceived]\n",
        omit_stages=("RequestReceived",),
    ),
    "omitStages of the rule alone when the policy has none": Case(
        "- level: Metadata\n  omitStages: [RequestReceived]\n",
        pods(),
        "Metadata",
        0,
        omit_stages=("RequestReceived",),
    ),
    "no match carries the policy's omitStages": Case(
        "- level: Metadata\n  verbs: [delete]\n  omitStages: [Panic]\n",
        pods(),
        "None",
        None,
        head="omitStages: [RequestReceived]\n",
        omit_stages=("RequestReceived",),
    ),
    "omitManagedFields of the rule wins over the policy's": Case(
        "- level: RequestResponse\n  omitManagedFields: false\n",
        pods(),
        "RequestResponse",
        0,
        head="omitManagedFields: true\n",
        omit_managed_fields=False,
    ),
    "omitManagedFields of the policy when the rule does not say": Case(
        "- level: RequestResponse\n",
        pods(),
        "RequestResponse",
        0,
        head="omitManagedFields: true\n",
        omit_managed_fields=True,
    ),
    "omitManagedFields defaults to false": Case(
        "- level: RequestResponse\n", pods(), "RequestResponse", 0, omit_managed_fields=False
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_evaluation(case: Case) -> None:
    decision = evaluate(policy(case.rules, case.head), case.request)
    assert (decision.level, decision.rule) == (case.level, case.rule)
    if case.omit_stages is not None:
        assert decision.omit_stages == case.omit_stages
    if case.omit_managed_fields is not None:
        assert decision.omit_managed_fields is case.omit_managed_fields


# --- attributes derived from recorded events ----------------------------------


def event(**fields: Any) -> AuditEvent:
    obj: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": "00000000-0000-0000-0000-000000000001",
        "stage": "ResponseComplete",
        "verb": "get",
        "requestURI": "/api/v1/namespaces/default/pods/web",
        "user": {"username": "alice", "groups": ["dev", "system:authenticated"]},
        "objectRef": {
            "resource": "pods",
            "namespace": "default",
            "name": "web",
            "apiVersion": "v1",
        },
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2024-05-01T08:00:00.000000Z",
        "stageTimestamp": "2024-05-01T08:00:00.010000Z",
    }
    obj.update(fields)
    return Decoder().decode_object({k: v for k, v in obj.items() if v is not None})


def test_failed_authentication_is_evaluated_without_a_user() -> None:
    ev = event(
        stage="ResponseStarted",
        user={},
        responseStatus={"metadata": {}, "status": "Failure", "code": 401},
    )
    attrs = attributes_from_event(ev)
    assert attrs.user is None
    p = policy(
        "- level: None\n  users: ['']\n- level: None\n  userGroups: ['']\n- level: Metadata\n"
    )
    assert evaluate(p, attrs).rule == 2


def test_the_authenticated_user_decides_not_the_impersonated_one() -> None:
    ev = event(impersonatedUser={"username": "bob", "groups": ["ops"]})
    p = policy("- level: Request\n  users: [bob]\n- level: Metadata\n  users: [alice]\n")
    assert evaluate(p, attributes_from_event(ev)).rule == 1


def test_groups_come_from_the_recorded_user() -> None:
    p = policy("- level: Request\n  userGroups: [dev]\n")
    assert evaluate(p, attributes_from_event(event())).level == "Request"


def test_a_create_has_no_name_even_when_the_event_records_it() -> None:
    # The API server copies the created object's name into objectRef after
    # evaluating the policy; the POST to the collection had none.
    ev = event(
        verb="create",
        requestURI="/api/v1/namespaces/default/pods",
        objectRef={"resource": "pods", "namespace": "default", "name": "web", "apiVersion": "v1"},
    )
    attrs = attributes_from_event(ev)
    assert attrs.name == ""
    p = policy("- level: Request\n  resources:\n  - resources: [pods]\n    resourceNames: [web]\n")
    assert evaluate(p, attrs).level == "None"


def test_a_create_on_a_named_subresource_keeps_the_name() -> None:
    ev = event(
        verb="create",
        requestURI="/api/v1/namespaces/default/pods/web/eviction",
        objectRef={
            "resource": "pods",
            "namespace": "default",
            "name": "web",
            "subresource": "eviction",
            "apiVersion": "v1",
        },
    )
    assert attributes_from_event(ev).name == "web"


def test_a_watch_keeps_the_name_of_its_field_selector() -> None:
    ev = event(
        verb="watch",
        requestURI="/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dcfg&watch=1",
        objectRef={"resource": "configmaps", "namespace": "default", "name": "cfg"},
    )
    assert attributes_from_event(ev).name == "cfg"


def test_a_namespace_is_in_its_own_namespace() -> None:
    ev = event(
        requestURI="/api/v1/namespaces/kube-system",
        objectRef={"resource": "namespaces", "name": "kube-system", "apiVersion": "v1"},
    )
    attrs = attributes_from_event(ev)
    assert (attrs.namespace, attrs.name, attrs.resource) == (
        "kube-system",
        "kube-system",
        "namespaces",
    )


def test_a_non_resource_path_has_no_query_and_is_decoded() -> None:
    ev = event(requestURI="/healthz/poststarthook%2Fx?verbose=1", objectRef=None)
    attrs = attributes_from_event(ev)
    assert not attrs.resource_request
    assert attrs.path == "/healthz/poststarthook/x"
    assert evaluate(policy("- level: None\n  nonResourceURLs: [/healthz*]\n"), attrs).rule == 0


def test_a_resource_url_without_object_ref_is_read_from_the_url() -> None:
    ev = event(requestURI="/apis/apps/v1/namespaces/web/deployments/api/scale", objectRef=None)
    attrs = attributes_from_event(ev)
    assert attrs.resource_request
    assert (attrs.api_group, attrs.namespace, attrs.resource, attrs.name, attrs.subresource) == (
        "apps",
        "web",
        "deployments",
        "api",
        "scale",
    )
