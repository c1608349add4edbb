"""Patches are bodies: JSON Patch, merge patch, strategic merge patch and
server-side apply are evaluated as the object they produce, as far as the
audit level shows it."""

from __future__ import annotations

from pathlib import Path

from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.detect.patches import apply_json_patch, patched_view, request_object
from tests.detect_helpers import event, rules_from

ROLE = {"resource": "clusterroles", "apiGroup": "rbac.authorization.k8s.io", "name": "view"}


def test_json_patch_values_land_at_their_paths_in_an_empty_object() -> None:
    ops = [
        {"op": "add", "path": "/rules/0/verbs/-", "value": "*"},
        {"op": "add", "path": "/rules/0/resources", "value": ["secrets"]},
        {"op": "replace", "path": "/metadata/labels/a~1b", "value": "c"},
        {"op": "remove", "path": "/rules/1"},
        {"op": "copy", "from": "/rules/0", "path": "/rules/2"},
        {"op": "add", "path": "no-slash", "value": 1},
        "not an operation",
    ]
    assert apply_json_patch(ops) == {
        "rules": [{"verbs": ["*"], "resources": ["secrets"]}],
        "metadata": {"labels": {"a/b": "c"}},
    }
    # a huge index is an append, not an allocation
    assert apply_json_patch([{"op": "add", "path": "/items/99999999", "value": 1}]) == {
        "items": [1]
    }
    # the whole document replaced
    assert apply_json_patch([{"op": "replace", "path": "", "value": {"a": 1}}]) == {"a": 1}


def test_merge_and_strategic_patches_drop_deletions_and_directives() -> None:
    patch = {
        "metadata": {"annotations": {"gone": None}},
        "spec": {
            "$setElementOrder/containers": [{"name": "a"}],
            "containers": [
                {"name": "a", "image": "nginx"},
                {"name": "b", "$patch": "delete"},
            ],
            "$retainKeys": ["containers"],
        },
    }
    assert patched_view(patch) == {
        "metadata": {"annotations": {}},
        "spec": {"containers": [{"name": "a", "image": "nginx"}]},
    }


def test_a_successful_patch_is_read_from_its_response_and_a_refused_one_from_the_patch() -> None:
    role = {"kind": "ClusterRole", "rules": [{"verbs": ["*"]}]}
    assert patched_view({"metadata": {"labels": {"a": "b"}}}, role) is role
    status = {"kind": "Status", "code": 403}
    assert patched_view([{"op": "add", "path": "/x", "value": 1}], status) == {"x": 1}


def test_only_patches_are_viewed_and_the_event_is_left_alone() -> None:
    body = [{"op": "add", "path": "/rules/0/verbs/-", "value": "*"}]
    obj = {"verb": "patch", "requestObject": body}
    assert request_object(obj) == {"rules": [{"verbs": ["*"]}]}
    assert obj["requestObject"] is body and body[0]["value"] == "*"
    update = {"verb": "update", "requestObject": {"rules": [{"verbs": None}]}}
    assert request_object(update) is update["requestObject"]


def test_wildcard_escalation_sent_as_each_patch_type_fires() -> None:
    det = Detector(load_rules(None), DetectionSettings())
    bodies = [
        ([{"op": "add", "path": "/rules/0/verbs/-", "value": "*"}], None),  # JSON Patch
        ({"rules": [{"resources": ["*"], "verbs": ["get"]}]}, None),  # merge patch
        ({"rules": [{"verbs": ["*"]}], "$setElementOrder/rules": []}, None),  # strategic
        (
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole"},  # apply
            {"kind": "ClusterRole", "rules": [{"verbs": ["*"], "resources": ["pods"]}]},
        ),
    ]
    for body, response in bodies:
        fields = {"verb": "patch", "user": {"username": "mallory"}, "objectRef": ROLE}
        fields["requestObject"] = body
        if response is not None:
            fields["responseObject"] = response
        ev = event(**fields)
        det([ev])
        assert "role-with-wildcard" in ev.rules, body
        assert ev.severity == "warning"
    harmless = event(
        verb="patch",
        user={"username": "mallory"},
        objectRef=ROLE,
        requestObject=[{"op": "remove", "path": "/rules/0/verbs/0"}],
    )
    det([harmless])
    assert "role-with-wildcard" not in harmless.rules


def test_pod_spec_rules_see_a_json_patch_to_a_workload(tmp_path: Path) -> None:
    det = Detector(load_rules(None), DetectionSettings())
    ev = event(
        verb="patch",
        user={"username": "alice"},
        objectRef={"resource": "deployments", "apiGroup": "apps", "namespace": "shop", "name": "w"},
        requestObject=[
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/securityContext",
                "value": {"privileged": True},
            },
            {"op": "replace", "path": "/spec/template/spec/hostPID", "value": True},
        ],
    )
    det([ev])
    assert {"privileged-container", "pod-host-pid"} <= set(ev.rules)
    # a rule's own paths into requestObject see the same view
    ruleset = rules_from(
        tmp_path,
        "rules:\n"
        "  - id: r\n    title: t\n    severity: info\n    description: d\n"
        "    match: {requestObject.spec.template.spec.hostPID: true}\n",
    )
    solo = Detector(ruleset, DetectionSettings())
    again = event(
        **{k: v for k, v in ev.obj.items() if k in ("verb", "objectRef", "user")},
        requestObject=ev.obj["requestObject"],
    )
    solo([again])
    assert again.rules == ("r",)
