"""The chart with several replicas, rendered by real Helm: webhook mode as a
StatefulSet whose replicas each keep their own Loki spool on a claim (and the
documented emptyDir opt-out), two replicas with a PodDisruptionBudget and
topology spread, the shared state's URL only in the environment (from values
or an existing Secret), and each pod's Loki writer from the downward API."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import helm_python as helm
import pytest

from .test_helm import (
    DEFAULT,
    RELEASE,
    exporter_config,
    find,
    merged,
    notes,
    objects,
    one,
    pod_environment,
    pod_spec,
    render_raw,
    rendered_scenario,
    scenario_values,
    workload,
)

FULL = f"{RELEASE}-kube-audit-exporter"
STATE_PATH = "/var/lib/kube-audit-exporter"


def render(*values: dict[str, Any]) -> list[dict[str, Any]]:
    return objects(render_raw(merged(DEFAULT, *values)))


def env_vars(objs: Any) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(objs)["containers"][0]["env"]}


# --- webhook mode: a StatefulSet with a spool per replica ---------------------------


def test_webhook_mode_keeps_each_replicas_spool_on_its_own_claim() -> None:
    objs = rendered_scenario("webhook-default")
    sts = workload(objs)
    assert sts["kind"] == "StatefulSet" and not find(objs, "Deployment")
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    # governed by a Service the chart renders, which selects these pods
    governing = one(objs, "Service", sts["spec"]["serviceName"])
    assert governing["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain", "whenScaled": "Retain"}  # fmt: skip
    spec = pod_spec(objs)
    # the claim, not a pod volume, backs the state mount
    assert "state" not in {v["name"] for v in spec["volumes"]}
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "state")
    assert mount["mountPath"] == STATE_PATH
    # no single claim for all replicas
    assert not find(objs, "PersistentVolumeClaim")


def test_the_spool_is_on_the_claim() -> None:
    objs = render({"loki": {"url": "http://loki:3100"}})
    assert exporter_config(objs)["spool"]["dir"] == f"{STATE_PATH}/spool"
    assert "WARNING" not in notes(merged(DEFAULT, {"loki": {"url": "http://loki:3100"}}))


def test_claim_size_and_class_come_from_values() -> None:
    pvc = {"storageClassName": "fast-ssd", "size": "10Gi", "accessModes": ["ReadWriteOncePod"]}
    objs = render({"state": {"persistentVolumeClaim": pvc}, "spool": {"maxBytes": "8GiB"}})
    [claim] = workload(objs)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOncePod"]
    assert exporter_config(objs).get("spool", {}).get("max_bytes", "8GiB") == "8GiB"


def test_the_empty_dir_opt_out_is_explicit_and_warned_about() -> None:
    values = {"state": {"type": "emptyDir"}, "loki": {"url": "http://loki:3100"}}
    objs = render(values)
    sts = workload(objs)
    assert sts["kind"] == "StatefulSet"
    assert "volumeClaimTemplates" not in sts["spec"]
    [state] = [v for v in pod_spec(objs)["volumes"] if v["name"] == "state"]
    assert state["emptyDir"] == {"sizeLimit": "2Gi"}
    text = notes(merged(DEFAULT, values))
    assert "WARNING: the Loki spool is on an emptyDir" in text
    assert "answered 200 to the API server" in text and "are lost" in text


def test_one_replica_may_use_an_existing_claim_but_replicas_never_share_one() -> None:
    one_replica = {"replicas": 1, "podDisruptionBudget": {"enabled": False},
                   "state": {"persistentVolumeClaim": {"existingClaim": "spool"}}}  # fmt: skip
    objs = render(one_replica)
    assert "volumeClaimTemplates" not in workload(objs)["spec"]
    [state] = [v for v in pod_spec(objs)["volumes"] if v["name"] == "state"]
    assert state["persistentVolumeClaim"] == {"claimName": "spool"}
    with pytest.raises(helm.HelmRenderError) as e:
        render({"state": {"persistentVolumeClaim": {"existingClaim": "spool"}}})
    assert "would make the replicas share one spool" in str(e.value)
    assert "leave existingClaim empty (a claim per replica)" in str(e.value)


# --- two replicas, PDB, topology spread -------------------------------------------


def test_webhook_mode_defaults_to_two_spread_replicas_with_a_pdb() -> None:
    objs = rendered_scenario("webhook-default")
    assert "replicas" not in scenario_values("webhook-default")
    sts = workload(objs)
    assert sts["spec"]["replicas"] == 2
    pdb = one(objs, "PodDisruptionBudget", FULL)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]
    [spread] = pod_spec(objs)["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    # a zone spread of the user's own is taken as given, with the pods' selector
    zones = {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
         "whenUnsatisfiable": "DoNotSchedule"}]}  # fmt: skip
    [spread] = pod_spec(render(zones))["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


def test_three_replicas_get_three_claims_and_keep_the_pdb() -> None:
    objs = rendered_scenario("everything")
    assert workload(objs)["spec"]["replicas"] == 3
    assert len(workload(objs)["spec"]["volumeClaimTemplates"]) == 1  # one per replica
    assert one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


# --- the shared state's URL: environment only ---------------------------------------


def test_a_state_url_from_values_is_an_environment_variable_only() -> None:
    url = "redis://audit-redis-master.redis.svc:6379/0"
    objs = render({"state": {"url": url}})
    assert env_vars(objs)["KUBE_AUDIT_STATE_URL"] == {"name": "KUBE_AUDIT_STATE_URL", "value": url}
    assert "state" not in exporter_config(objs)
    for cm in find(objs, "ConfigMap"):
        assert "redis://" not in json.dumps(cm)


def test_a_state_password_from_a_secret_is_put_into_the_url_by_the_kubelet() -> None:
    """Bitnami's redis chart keeps the password under `redis-password`: the
    pod gets it by secretKeyRef and Kubernetes' $(VAR) expansion builds the
    URL, so the password is in no manifest."""
    state = {"url": "redis://audit-redis-master.redis.svc:6379/0",
             "existingSecret": "audit-redis", "passwordKey": "redis-password"}  # fmt: skip
    objs = render({"state": state})
    names = [v["name"] for v in pod_spec(objs)["containers"][0]["env"]]
    # the password variable is defined before the URL that refers to it
    assert names.index("STATE_URL_PASSWORD") < names.index("KUBE_AUDIT_STATE_URL")
    assert env_vars(objs)["STATE_URL_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "audit-redis", "key": "redis-password"}}  # fmt: skip
    env = pod_environment(objs)
    secret = env["STATE_URL_PASSWORD"]
    assert secret == "placeholderauditredisredispassword"
    parts = urlsplit(env["KUBE_AUDIT_STATE_URL"])
    assert (parts.scheme, parts.hostname, parts.port, parts.path, parts.password) == (
        "redis", "audit-redis-master.redis.svc", 6379, "/0", secret)  # fmt: skip
    assert "audit-redis" not in json.dumps([c for c in find(objs, "ConfigMap")])
    # a user name (Redis ACLs) stays in front of the password
    acl = render({"state": dict(state, url="rediss://exporter@valkey.valkey.svc:6380/1")})
    value = env_vars(acl)["KUBE_AUDIT_STATE_URL"]["value"]
    assert value == "rediss://exporter:$(STATE_URL_PASSWORD)@valkey.valkey.svc:6380/1"


def test_a_whole_state_url_may_come_from_a_secret() -> None:
    objs = render({"state": {"existingSecret": "state-url", "urlKey": "url"}})
    assert env_vars(objs)["KUBE_AUDIT_STATE_URL"] == {
        "name": "KUBE_AUDIT_STATE_URL",
        "valueFrom": {"secretKeyRef": {"name": "state-url", "key": "url"}},
    }
    assert "STATE_URL_PASSWORD" not in env_vars(objs)


def test_the_network_policy_lets_the_pods_reach_the_shared_state() -> None:
    def egress_ports(state: dict[str, Any]) -> set[int]:
        np = one(render({"state": state}), "NetworkPolicy")
        return {p["port"] for r in np["spec"]["egress"] for p in r.get("ports", [])}

    assert 6379 in egress_ports({"url": "redis://redis.redis.svc/0"})
    assert 6380 in egress_ports({"url": "rediss://valkey.valkey.svc:6380/0"})
    assert 6379 in egress_ports({"existingSecret": "s", "urlKey": "url"})
    assert 6379 not in egress_ports({})


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"url": "redis://:hunter2@redis:6379/0"}, "state.url: carries a password"),
        ({"url": "redis://default:hunter2@redis:6379/0"}, "state.url: carries a password"),
        ({"url": "redis://redis:6379/0", "existingSecret": "s"},
         "state.existingSecret: set exactly one of state.passwordKey"),
        ({"url": "redis://redis:6379/0", "existingSecret": "s", "passwordKey": "p",
          "urlKey": "u"}, "state.existingSecret: set exactly one of state.passwordKey"),
        ({"url": "redis://redis:6379/0", "passwordKey": "p"},
         "state.existingSecret: required with state.passwordKey or state.urlKey"),
        ({"url": "redis://redis:6379/0", "existingSecret": "s", "urlKey": "u"},
         "state.url: set, but state.urlKey takes the whole URL"),
        ({"url": "unix:///run/redis.sock", "existingSecret": "s", "passwordKey": "p"},
         "state.passwordKey needs a redis:// or rediss:// URL"),
        ({"existingSecret": "s", "passwordKey": "p"},
         "state.passwordKey needs a redis:// or rediss:// URL"),
    ],
)  # fmt: skip
def test_state_contradictions_fail_with_a_clear_message(
    state: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError) as e:
        render({"state": state})
    assert message in str(e.value)
    assert "hunter2" not in str(e.value)


def test_the_schema_refuses_a_state_url_of_another_scheme() -> None:
    from .test_helm import _chart

    with pytest.raises(helm.HelmValuesError) as e:
        _chart().validate_schema({"state": {"url": "http://redis:6379"}})
    assert "/state/url" in str(e.value)
    _chart().validate_schema({"state": {"url": "unix:///run/redis/redis.sock?db=0"}})


# --- each pod its own Loki writer ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field"),
    [("webhook-default", "metadata.name"), ("minimal", "metadata.name"),
     ("logfile", "spec.nodeName"), ("logfile-nonroot", "spec.nodeName"),
     ("eks-firehose", "metadata.name"), ("gke-pull", "metadata.name"),
     ("aks-archive", "metadata.name")],
)  # fmt: skip
def test_each_pod_names_its_loki_writer_from_the_downward_api(name: str, field: str) -> None:
    objs = rendered_scenario(name)
    assert env_vars(objs)["KUBE_AUDIT_LOKI_WRITER"]["valueFrom"] == {
        "fieldRef": {"fieldPath": field}}  # fmt: skip
    env = pod_environment(objs, pod="audit-kube-audit-exporter-1", node="cp-2")
    assert env["KUBE_AUDIT_LOKI_WRITER"] == (
        "cp-2" if field == "spec.nodeName" else "audit-kube-audit-exporter-1"
    )


def test_extra_env_comes_after_the_charts_own_variables() -> None:
    objs = rendered_scenario("everything")
    names = [v["name"] for v in pod_spec(objs)["containers"][0]["env"]]
    assert names[0] == "KUBE_AUDIT_LOKI_WRITER" and names[-1] == "KUBE_AUDIT_LOG_LEVEL"


def test_config_cannot_set_what_the_environment_carries() -> None:
    with pytest.raises(helm.HelmRenderError) as e:
        render({"config": {"loki": {"writer": "x"}}})
    assert "config.loki.writer: the chart sets this key" in str(e.value)


def test_notes_say_whether_the_replicas_share_their_state() -> None:
    alone = notes(DEFAULT)
    assert "Replicas: 2. Shared state is off" in alone
    assert "counted again" in alone
    shared = notes(merged(DEFAULT, {"state": {"url": "redis://redis:6379/0"}}))
    assert "Replicas: 2. They share the dedupe window" in shared
    assert "Shared state is off" not in shared
    single = merged(DEFAULT, {"replicas": 1, "podDisruptionBudget": {"enabled": False}})
    assert "Replicas:" not in notes(single)
