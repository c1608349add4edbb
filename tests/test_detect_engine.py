"""The Detector in the pipeline, over real audit events from the corpora:
what it marks on events for Loki, what it counts, what it notifies, and
what it never puts into a notification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import exporter.event as event_module
from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.detect.engine import Match
from exporter.event import AuditEvent, Decoder, InvalidEvent
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from tests.conftest import CORPORA
from tests.detect_helpers import event, rules_from

FALCO = CORPORA / "falco-k8s-audit-trace-files"


class Collecting:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def send(self, alert: dict[str, Any]) -> bool:
        self.alerts.append(alert)
        return True


def corpus_events(path: Path) -> list[AuditEvent]:
    return [e for e in Decoder().decode_document(path.read_bytes()) if isinstance(e, AuditEvent)]


def run_file(name: str, settings: DetectionSettings | None = None) -> list[AuditEvent]:
    det = Detector(load_rules(None), settings or DetectionSettings())
    events = corpus_events(FALCO / name)
    det(events)
    return events


@pytest.mark.parametrize(
    ("name", "expected", "severity"),
    [
        ("exec_pod.json", {"pod-exec-or-attach", "exec-shell-or-tool"}, "info"),
        ("attach_pod.json", {"pod-exec-or-attach"}, "info"),
        ("create_nginx_pod_privileged.json", {"privileged-container"}, "warning"),
        ("create_nginx_pod_privileged_2nd_container.json", {"privileged-container"}, "warning"),
        (
            "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json",
            {"privileged-container"},
            "warning",
        ),
        ("create_nginx_pod_sensitive_mount.json", {"sensitive-host-path-mount"}, "warning"),
        (
            "create_nginx_pod_sensitive_mount_2nd_container.json",
            {"sensitive-host-path-mount"},
            "warning",
        ),
        ("create_nginx_pod_hostnetwork.json", {"pod-host-network"}, "warning"),
        ("create_nginx_service_nodeport.json", {"nodeport-service"}, "warning"),
        ("create_configmap_sensitive_values.json", {"configmap-with-credentials"}, "warning"),
        (
            "attach_cluster_admin_role.json",
            {"cluster-admin-binding", "rbac-binding-changed"},
            "warning",
        ),
        ("create_cluster_role_wildcard_verbs.json", {"role-with-wildcard"}, "warning"),
        ("create_cluster_role_wildcard_resources.json", {"role-with-wildcard"}, "warning"),
        ("create_cluster_role_pod_exec.json", {"role-grants-exec"}, "warning"),
        ("create_cluster_role_write_privileges.json", {"role-with-write-access"}, "info"),
        ("modify_cluster_role_node_problem_detector.json", {"system-role-modified"}, "warning"),
        ("anonymous_creates_namespace_foo.json", {"anonymous-request-allowed"}, "warning"),
        (
            "create_serviceaccount_kube_system_namespace.json",
            {"serviceaccount-created-in-kube-namespace", "serviceaccount-created"},
            "warning",
        ),
        ("delete_secret.json", {"secret-deleted-by-human"}, "warning"),
        ("create_secret.json", {"secret-modified-by-human"}, "info"),
        ("delete_namespace_foo.json", {"namespace-deleted"}, "info"),
    ],
)
def test_real_events_match_their_rules(name: str, expected: set[str], severity: str) -> None:
    ev = run_file(name)[0]
    assert expected <= set(ev.rules), ev.rules
    assert ev.severity == severity


@pytest.mark.parametrize(
    "name",
    [
        "create_nginx_pod_unprivileged.json",
        "create_nginx_pod_nohostnetwork.json",
        "create_nginx_pod_unsensitive_mount.json",
        "create_nginx_service_nonodeport.json",
        "create_configmap_no_sensitive_values.json",
        "create_service_account_token_secret.json",
        "some-user_creates_namespace_foo.json",
    ],
)
def test_real_benign_events_stay_quiet(name: str) -> None:
    # the lifecycle inventory (info) records every creation; nothing else fires
    inventory = {"default-admin-account-used", "object-created", "object-deleted"}
    for ev in run_file(name):
        assert [r for r in ev.rules if r not in inventory] == []


def test_detector_in_the_pipeline_marks_counts_and_notifies() -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    notifier = Collecting()
    settings = DetectionSettings(cluster="lab", alert_min_severity="warning")
    det = Detector(load_rules(None), settings, metrics, notifier)
    pipeline = Pipeline(metrics, processors=[det])
    items: list[AuditEvent | InvalidEvent] = []
    for name in ("delete_secret.json", "create_secret.json", "fal_01_003.json"):
        items.extend(Decoder().decode_document((FALCO / name).read_bytes()))
    result = pipeline.process(items, "replay")
    assert result.accepted == 2 and result.invalid == 1

    def matches(rule: str, severity: str) -> float | None:
        return registry.get_sample_value(
            "kube_audit_rule_matches_total", {"rule": rule, "severity": severity}
        )

    assert matches("secret-deleted-by-human", "warning") == 1.0
    assert matches("secret-modified-by-human", "info") == 1.0
    # every active rule's series exists from the start
    assert matches("csr-for-system-masters", "critical") == 0.0
    # only the warning reached the notifier (info is below alert_min_severity)
    rules = [a["labels"]["rule"] for a in notifier.alerts]
    assert rules == ["secret-deleted-by-human"]
    alert = notifier.alerts[0]
    assert alert["labels"] == {
        "alertname": "KubeAuditDetectionSecretDeletedByHuman",
        "rule": "secret-deleted-by-human",
        "severity": "warning",
        "cluster": "lab",
        "namespace": "default",
        "resource": "secrets",
        "user": "minikube-user",
    }
    ann = alert["annotations"]
    assert ann["summary"] == (
        "Secret deleted by a person: minikube-user (human) did delete on secrets "
        "default/example-secret."
    )
    assert "from 192.168.64.1 at 2020-04-21T17:58:49.696Z (answered 200" in ann["description"]
    assert ann["audit_id"] and alert["startsAt"] == "2020-04-21T17:58:49.696Z"


def test_alerts_never_carry_request_bodies_or_commands() -> None:
    notifier = Collecting()
    det = Detector(load_rules(None), DetectionSettings(alert_min_severity="info"), None, notifier)
    det(corpus_events(FALCO / "create_configmap_sensitive_values.json"))
    det(
        [
            event(
                verb="create",
                stage="ResponseStarted",
                responseStatus={"code": 101},
                user={"username": "alice"},
                objectRef={
                    "resource": "pods",
                    "subresource": "exec",
                    "namespace": "db",
                    "name": "pg-0",
                },
                requestURI="/api/v1/namespaces/db/pods/pg-0/exec?command=sh&command=-c&"
                "command=mysql+-pHunter2secret&stdin=true",
            )
        ]
    )
    assert {a["labels"]["rule"] for a in notifier.alerts} >= {
        "configmap-with-credentials",
        "exec-shell-or-tool",
    }
    text = json.dumps(notifier.alerts)
    for secret in ("MY-KEY", "MY-ID", "aws_secret_access_key", "Hunter2secret", "mysql"):
        assert secret not in text


def test_long_running_request_matches_once(tmp_path: Path) -> None:
    det = Detector(load_rules(None), DetectionSettings())
    started = corpus_events(FALCO / "exec_pod.json")[0]
    complete_obj = dict(
        started.obj, stage="ResponseComplete", stageTimestamp="2018-10-26T13:40:00Z"
    )
    complete = Decoder().decode_object(complete_obj)
    det([started])
    det([complete])
    assert "pod-exec-or-attach" in started.rules
    assert complete.rules == ()


def test_a_failing_rule_is_counted_and_the_batch_goes_on(tmp_path: Path) -> None:
    ruleset = rules_from(
        tmp_path,
        "rules:\n"
        "  - {id: boom, title: t, severity: info, description: d, match: {verb: get}}\n"
        "  - {id: ok, title: t, severity: info, description: d, match: {verb: get}}\n",
    )
    registry = CollectorRegistry()
    det = Detector(ruleset, DetectionSettings(), AuditMetrics(registry))

    def explode(ev: AuditEvent) -> bool:
        raise RuntimeError("bad rule")

    det.rules[0].run = explode
    det._index.clear()
    events = [event(verb="get"), event(verb="get")]
    det(events)
    assert all(ev.rules == ("ok",) for ev in events)
    assert registry.get_sample_value("kube_audit_detect_errors_total", {"rule": "boom"}) == 2.0


def test_disabled_rules_and_missing_settings_are_inactive() -> None:
    det = Detector(load_rules(None), DetectionSettings(disabled_rules=("pod-exec-or-attach",)))
    assert det.inactive["pod-exec-or-attach"] == "listed in detect.disabled_rules"
    assert det.inactive["untrusted-then-trusted-access"] == "needs detect.trusted_networks"
    assert "critical-workload-outside-window" in det.inactive
    full = Detector(
        load_rules(None),
        DetectionSettings.from_config(
            {
                "trusted_networks": ["10.0.0.0/8"],
                "pod_cidrs": ["10.244.0.0/16"],
                "critical_workloads": [{"name": "db", "namespaces": ["db"]}],
                "allowed_users": ["alice"],
                "allowed_images": ["registry.example.com/"],
                "allowed_namespaces": ["shop"],
                "allowed_nodes": ["worker-*"],
            }
        ),
    )
    assert full.inactive == {}


def test_on_match_sees_stateful_context(tmp_path: Path) -> None:
    seen: list[Match] = []
    det = Detector(load_rules(None), DetectionSettings(), on_match=seen.append)
    for i in range(20):
        det(
            [
                event(
                    at=i,
                    verb="list",
                    stage="ResponseStarted",
                    user={},
                    responseStatus={"code": 401},
                    sourceIPs=["203.0.113.50"],
                )
            ]
        )
    burst = [m for m in seen if m.rule.id == "auth-failure-burst"]
    assert len(burst) == 1 and burst[0].group == ("203.0.113.50",)


def test_the_detector_releases_the_request_body_of_events_that_matched_nothing() -> None:
    """A body parsed alone for the rules is let go once they are done with an
    event that matched nothing (it is freed while in cache); an event that
    matched keeps it for its alert and the report."""
    import orjson

    from exporter.detect.examples import BASE_TIME, complete_event

    def pod(privileged: bool) -> AuditEvent:
        spec = {"containers": [{"name": "a", "image": "nginx",
                                "securityContext": {"privileged": privileged}}]}  # fmt: skip
        fields = {
            "verb": "create",
            "user": {"username": "alice"},
            "objectRef": {"resource": "pods", "namespace": "shop", "name": "p"},
            "requestObject": {"kind": "Pod", "spec": spec},
        }
        return Decoder().decode_line(orjson.dumps(complete_event(fields, 1, BASE_TIME)))

    det = Detector(load_rules(None), DetectionSettings())
    plain, privileged = pod(False), pod(True)
    det([plain, privileged])
    assert plain.rules == () and privileged.rules and "privileged-container" in privileged.rules
    assert plain._request is event_module._UNPARSED  # released
    assert privileged._request is not event_module._UNPARSED  # kept
    assert plain.request_body == {"kind": "Pod", "spec": plain.request_body["spec"]}
    assert plain._obj is None and privileged._obj is None
