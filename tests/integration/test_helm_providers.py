"""The chart's managed-cluster modes (eks, gke, aks), rendered by real Helm:
one Deployment of `kube-audit-exporter run` per intake with the matching
source of the exporter's configuration, the service-account annotations of
each identity scheme, the push receivers' Service and Ingress, no credential
in a ConfigMap, and NOTES that say what to switch on at the provider. The
ci/<provider>-*-values.yaml scenarios also go through every check of
test_helm.py (lint, Kubernetes schemas, check-config in a pod-like
filesystem, Pod Security)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from .test_helm import (
    RELEASE,
    SCENARIOS,
    _chart,
    check_config,
    exporter_config,
    find,
    materialize_pod_filesystem,
    merged,
    notes,
    objects,
    one,
    pod_environment,
    pod_spec,
    render_raw,
    rendered_scenario,
    rooted_config,
    scenario_values,
    workload,
)

FULL = f"{RELEASE}-kube-audit-exporter"
PROVIDER_SCENARIOS = [s for s in SCENARIOS if s.split("-")[0] in ("eks", "gke", "aks")]
# mode, intake: the scenario that shows it
INTAKES = {
    ("eks", "firehose"): "eks-firehose",
    ("eks", "cloudwatch"): "eks-cloudwatch",
    ("gke", "push"): "gke-push",
    ("gke", "pull"): "gke-pull",
    ("aks", "eventhub"): "aks-eventhub",
    ("aks", "archive"): "aks-archive",
}
# the keys of the exporter's configuration that switch each intake on
SOURCE_KEY = {
    "firehose": ("eks", "firehose_listen_address"),
    "cloudwatch": ("eks", "log_group"),
    "push": ("gke", "push_listen_address"),
    "pull": ("gke", "subscription"),
    "eventhub": ("aks", "eventhub_namespace"),
    "archive": ("aks", "storage_account_url"),
}
SINGLETONS = {"cloudwatch", "archive"}
PUSH = {"firehose": "/firehose", "push": "/pubsub"}
# the least each intake needs (the contradiction tests take one key away)
MINIMAL: dict[tuple[str, str], dict[str, Any]] = {
    ("eks", "firehose"): {"eks": {"firehose": {"accessKeySecret": {"name": "fh"}}}},
    ("eks", "cloudwatch"): {"eks": {"cloudwatch": {"logGroup": "/aws/eks/demo/cluster"}}},
    ("gke", "push"): {"gke": {"push": {"audience": "https://audit.example.com/pubsub"}}},
    ("gke", "pull"): {"gke": {"pull": {"subscription": "projects/p/subscriptions/s"}}},
    ("aks", "eventhub"): {"aks": {"eventhub": {
        "namespace": "ns.servicebus.windows.net", "name": "hub",
        "checkpointAccountUrl": "https://acct.blob.core.windows.net"}}},
    ("aks", "archive"): {"aks": {"archive": {
        "storageAccountUrl": "https://acct.blob.core.windows.net"}}},
}  # fmt: skip


def minimal(mode: str, intake: str, *more: dict[str, Any]) -> dict[str, Any]:
    values = merged({"mode": mode, mode: {"intake": intake}}, MINIMAL[(mode, intake)])
    return merged(values, *more)


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    return objects(render_raw(values))


def test_every_intake_has_a_ci_scenario() -> None:
    assert sorted(INTAKES.values()) == sorted(PROVIDER_SCENARIOS)
    for (mode, intake), name in INTAKES.items():
        values = scenario_values(name)
        assert (values["mode"], values[mode]["intake"]) == (mode, intake)


@pytest.mark.parametrize(("mode", "intake"), sorted(INTAKES))
def test_each_intake_is_a_deployment_running_its_source_alone(mode: str, intake: str) -> None:
    objs = rendered_scenario(INTAKES[(mode, intake)])
    wl = workload(objs)
    assert wl["kind"] == "Deployment"
    assert wl["metadata"]["labels"]["app.kubernetes.io/component"] == f"{mode}-{intake}"
    [container] = pod_spec(objs)["containers"]
    assert container["args"][0] == "run"
    config = exporter_config(objs)
    # the mode's section, and in it only what this intake uses
    assert {"webhook", "logfile", "eks", "gke", "aks"} & set(config) == {mode}
    section, key = SOURCE_KEY[intake]
    assert config[section][key]
    for other, (other_section, other_key) in SOURCE_KEY.items():
        if other != intake and other_section == section:
            assert other_key not in config[section], other
    # nothing of webhook mode comes along
    for kind, name in [("Secret", f"{FULL}-apiserver"), ("ConfigMap", f"{FULL}-audit-policy"),
                       ("ConfigMap", f"{FULL}-certgen"), ("StatefulSet", FULL)]:  # fmt: skip
        assert not find(objs, kind, name), (kind, name)
    assert not find(objs, "Job")


@pytest.mark.parametrize(("mode", "intake"), sorted(INTAKES))
def test_single_replica_intakes_keep_their_checkpoint_on_a_claim(mode: str, intake: str) -> None:
    """CloudWatch and the AKS archive poll with a checkpoint file one pod
    owns: one replica, Recreate, the checkpoint on a kept claim, no PDB. The
    others scale: two replicas by default, a PDB, spread over nodes."""
    objs = rendered_scenario(INTAKES[(mode, intake)])
    wl = workload(objs)
    spec = pod_spec(objs)
    [state] = [v for v in spec["volumes"] if v["name"] == "state"]
    values = scenario_values(INTAKES[(mode, intake)])
    if intake in SINGLETONS:
        assert wl["spec"]["replicas"] == 1
        assert wl["spec"]["strategy"] == {"type": "Recreate"}
        assert not find(objs, "PodDisruptionBudget")
        claim = one(objs, "PersistentVolumeClaim", f"{FULL}-state")
        assert state["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        checkpoint = exporter_config(objs)[mode]["checkpoint_file"]
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "state")
        assert checkpoint.startswith(mount["mountPath"] + "/")
    else:
        assert wl["spec"]["replicas"] == values.get("replicas", 2) >= 2
        assert wl["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        pdb = one(objs, "PodDisruptionBudget")
        assert pdb["spec"]["minAvailable"] == 1
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
        assert not find(objs, "PersistentVolumeClaim")


@pytest.mark.parametrize("intake", ["cloudwatch", "archive"])
def test_a_single_replica_intake_refuses_more_replicas(intake: str) -> None:
    mode = "eks" if intake == "cloudwatch" else "aks"
    with pytest.raises(helm.HelmRenderError) as e:
        render(minimal(mode, intake, {"replicas": 2}))
    assert f"replicas: 2 contradicts {mode}.intake: {intake}" in str(e.value)
    render(minimal(mode, intake, {"replicas": 1}))


# --- identity ------------------------------------------------------------------


def service_account(objs: Any) -> dict[str, Any]:
    return one(objs, "ServiceAccount", FULL)


def test_irsa_annotates_the_service_account_and_pod_identity_needs_nothing() -> None:
    role = {"eks": {"roleArn": "arn:aws:iam::123456789012:role/audit"}}
    irsa = render(minimal("eks", "cloudwatch", role))
    assert service_account(irsa)["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/audit"
    }
    pod_identity = render(minimal("eks", "cloudwatch"))
    assert "annotations" not in service_account(pod_identity)["metadata"]
    for objs in (irsa, pod_identity):
        # the identity webhooks project their own token; ours stays unmounted
        assert pod_spec(objs)["automountServiceAccountToken"] is False
        assert not any(k.startswith("azure.") for k in
                       workload(objs)["spec"]["template"]["metadata"]["labels"])  # fmt: skip
    text = notes(minimal("eks", "cloudwatch"))
    assert "aws eks create-pod-identity-association" in text
    assert f"--namespace kube-audit --service-account {FULL}" in text


def test_gke_workload_identity_annotates_the_service_account() -> None:
    objs = rendered_scenario("gke-pull")
    assert service_account(objs)["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "kube-audit-exporter@my-project.iam.gserviceaccount.com"
    }
    text = notes(scenario_values("gke-pull"))
    assert f"serviceAccount:PROJECT.svc.id.goog[kube-audit/{FULL}]" in text


def test_azure_workload_identity_annotates_the_account_and_labels_the_pods() -> None:
    objs = rendered_scenario("aks-archive")
    assert service_account(objs)["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "00000000-1111-2222-3333-444444444444",
        "azure.workload.identity/tenant-id": "55555555-6666-7777-8888-999999999999",
    }
    labels = workload(objs)["spec"]["template"]["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"
    # never a selector label: the selector of a Deployment is immutable
    assert "azure.workload.identity/use" not in workload(objs)["spec"]["selector"]["matchLabels"]
    without = render(minimal("aks", "archive"))
    assert "annotations" not in service_account(without)["metadata"]
    assert (
        "azure.workload.identity/use"
        not in workload(without)["spec"]["template"]["metadata"]["labels"]
    )


def test_user_annotations_are_kept_beside_the_identity_annotation() -> None:
    values = minimal("gke", "pull", {
        "gke": {"gcpServiceAccount": "a@p.iam.gserviceaccount.com"},
        "serviceAccount": {"annotations": {"example.com/team": "sec"}}})  # fmt: skip
    assert service_account(render(values))["metadata"]["annotations"] == {
        "example.com/team": "sec",
        "iam.gke.io/gcp-service-account": "a@p.iam.gserviceaccount.com",
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"eks": {"roleArn": "arn:aws:iam::123456789012:role/x"}},
         "eks.roleArn: set, but mode is webhook"),
        (minimal("gke", "pull", {"gke": {"gcpServiceAccount": "a@p.iam.gserviceaccount.com"},
                                 "serviceAccount": {"create": False}}),
         "gke.gcpServiceAccount: the chart annotates only a ServiceAccount it creates"),
    ],
)  # fmt: skip
def test_identity_values_that_would_do_nothing_are_refused(
    values: dict[str, Any], message: str
) -> None:
    base = {} if "mode" in values else {"webhook": {"service": {"clusterIP": "10.96.200.10"}}}
    with pytest.raises(helm.HelmRenderError) as e:
        render(merged(base, values))
    assert message in str(e.value)


# --- the push receivers ----------------------------------------------------------


@pytest.mark.parametrize("intake", ["firehose", "push"])
def test_the_push_receiver_is_reached_through_service_and_ingress(intake: str) -> None:
    mode = "eks" if intake == "firehose" else "gke"
    objs = rendered_scenario(INTAKES[(mode, intake)])
    config = exporter_config(objs)[mode]
    prefix = "firehose_" if intake == "firehose" else "push_"
    [container] = pod_spec(objs)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port_name = "firehose" if intake == "firehose" else "pubsub"
    assert config[prefix + "listen_address"] == f":{ports[port_name]}"
    assert config[prefix + "path"] == PUSH[intake]
    svc = one(objs, "Service", FULL)
    [svc_port] = svc["spec"]["ports"]
    assert svc_port["targetPort"] == port_name
    ingress = one(objs, "Ingress", FULL)
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "audit.example.com"
    [path] = rule["http"]["paths"]
    assert path["path"] == PUSH[intake]
    assert path["backend"]["service"] == {"name": FULL, "port": {"name": svc_port["name"]}}
    # TLS ends at the Ingress: plain HTTP to the pods, said explicitly
    assert config[prefix + ("insecure" if intake == "firehose" else "insecure_http")] is True
    assert "tls" not in {v["name"] for v in pod_spec(objs)["volumes"]}
    # the NetworkPolicy lets the deliveries in
    np = one(objs, "NetworkPolicy")
    assert {"port": port_name, "protocol": "TCP"} in [
        p for rule in np["spec"]["ingress"] for p in rule["ports"]
    ]


@pytest.mark.parametrize("intake", ["firehose", "push"])
def test_a_receiver_certificate_comes_from_an_existing_secret(intake: str, tmp_path: Path) -> None:
    mode = "eks" if intake == "firehose" else "gke"
    objs = render(minimal(mode, intake, {"receiver": {"tls": {"existingSecret": "rcv-tls"}}}))
    config = exporter_config(objs)[mode]
    prefix = "firehose_" if intake == "firehose" else "push_"
    assert config[prefix + "tls_cert_file"] == "/etc/kube-audit-exporter/tls/tls.crt"
    assert config[prefix + "tls_key_file"] == "/etc/kube-audit-exporter/tls/tls.key"
    assert not any(k.endswith("insecure") or k.endswith("insecure_http") for k in config)
    [tls] = [v for v in pod_spec(objs)["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == "rcv-tls"
    root = tmp_path / "pod"
    materialize_pod_filesystem(objs, root)
    result = check_config(rooted_config(objs, root), tmp_path, pod_environment(objs))
    assert result.returncode == 0, result.stderr


def test_a_load_balancer_service_can_be_restricted_to_the_provider_ranges() -> None:
    ranges = ["3.228.170.0/26", "3.228.170.64/26"]
    values = minimal("eks", "firehose", {"receiver": {"service": {
        "type": "LoadBalancer", "port": 443, "loadBalancerSourceRanges": ranges,
        "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "external"},
    }}})  # fmt: skip
    svc = one(render(values), "Service", FULL)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["loadBalancerSourceRanges"] == ranges
    assert svc["spec"]["ports"][0]["port"] == 443


def test_the_firehose_access_key_is_a_mounted_secret_never_a_value() -> None:
    objs = rendered_scenario("eks-firehose")
    [volume] = [v for v in pod_spec(objs)["volumes"] if v["name"] == "firehose-access-key"]
    assert volume["secret"]["secretName"] == "firehose-access-key"
    assert volume["secret"]["items"] == [{"key": "access-key", "path": "access-key"}]
    mount = next(
        m for m in pod_spec(objs)["containers"][0]["volumeMounts"] if m["name"] == volume["name"]
    )
    assert mount["readOnly"] is True
    key_file = exporter_config(objs)["eks"]["firehose_access_key_file"]
    assert key_file == f"{mount['mountPath']}/access-key"


def test_the_gke_push_audience_is_the_public_url_unless_given() -> None:
    objs = rendered_scenario("gke-push")
    config = exporter_config(objs)["gke"]
    assert config["push_audience"] == "https://audit.example.com/pubsub"
    assert config["push_service_account"] == "pubsub-push@my-project.iam.gserviceaccount.com"
    text = notes(scenario_values("gke-push"))
    assert "--push-endpoint=https://audit.example.com/pubsub" in text
    assert "--push-auth-token-audience=https://audit.example.com/pubsub" in text
    given = minimal("gke", "push", {"gke": {"push": {"audience": "k8s-audit"}}})
    assert exporter_config(render(given))["gke"]["push_audience"] == "k8s-audit"


# --- no credentials in ConfigMaps, egress to the cloud ----------------------------


def test_no_credential_value_reaches_a_config_map_or_a_pod_spec() -> None:
    """Credentials are Secret references (volumes, secretKeyRef) or come
    from the identity webhooks; no ConfigMap and no env value holds one."""
    for name in PROVIDER_SCENARIOS:
        objs = rendered_scenario(name)
        text = json.dumps([o for o in objs if o["kind"] == "ConfigMap"])
        for word in ("password", "secret", "access_key\"", "AccountKey", "SharedAccessKey",
                     "sig=", "private_key", "redis://"):  # fmt: skip
            assert word not in text, (name, word)
        for var in pod_spec(objs)["containers"][0]["env"]:
            if "value" in var:
                assert "PASSWORD" not in var["name"] or "$(" in var["value"], var
        assert not find(objs, "Secret"), name  # the chart makes none in these modes


@pytest.mark.parametrize(("mode", "intake"), sorted(INTAKES))
def test_network_policy_lets_the_intake_reach_its_cloud(mode: str, intake: str) -> None:
    objs = rendered_scenario(INTAKES[(mode, intake)])
    np = one(objs, "NetworkPolicy")
    open_ports = {p["port"] for r in np["spec"]["egress"] if "to" not in r for p in r["ports"]}
    if intake == "firehose":
        # it only receives: no cloud API, no identity endpoint
        assert 443 not in open_ports
        assert not any("to" in r for r in np["spec"]["egress"])
    else:
        assert 443 in open_ports
    assert (5671 in open_ports) == (intake == "eventhub")  # Event Hubs' AMQP
    blocks = {b["ipBlock"]["cidr"] for r in np["spec"]["egress"] for b in r.get("to", [])}
    if mode == "eks" and intake == "cloudwatch":
        assert blocks == {"169.254.170.23/32"}  # the EKS Pod Identity agent
    elif intake == "pull":
        assert blocks == {"169.254.169.254/32", "169.254.169.252/32"}  # GKE metadata server
    else:
        assert blocks == set()


# --- configuration checks ---------------------------------------------------------


def test_check_config_catches_a_key_the_exporter_does_not_know(tmp_path: Path) -> None:
    """The rendered provider sections are read by the exporter's own loader
    (test_helm's check-config on every scenario); a misspelt key fails it."""
    objs = rendered_scenario("eks-firehose")
    root = tmp_path / "pod"
    materialize_pod_filesystem(objs, root)
    config = rooted_config(objs, root)
    config["eks"]["firehose_acces_key_file"] = config["eks"].pop("firehose_access_key_file")
    result = check_config(config, tmp_path, pod_environment(objs))
    assert result.returncode == 1
    assert "eks.firehose_acces_key_file: unknown key" in result.stderr


@pytest.mark.parametrize(
    ("mode", "intake", "drop", "message"),
    [
        ("eks", "firehose", ("eks", "firehose", "accessKeySecret", "name"),
         "eks.firehose.accessKeySecret.name: required with eks.intake firehose"),
        ("eks", "cloudwatch", ("eks", "cloudwatch", "logGroup"),
         "eks.cloudwatch.logGroup: required with eks.intake cloudwatch"),
        ("gke", "push", ("gke", "push", "audience"),
         "gke.push.audience: required with gke.intake push"),
        ("gke", "pull", ("gke", "pull", "subscription"),
         "gke.pull.subscription: required with gke.intake pull"),
        ("aks", "eventhub", ("aks", "eventhub", "checkpointAccountUrl"),
         "aks.eventhub.checkpointAccountUrl: required with aks.intake eventhub"),
        ("aks", "archive", ("aks", "archive", "storageAccountUrl"),
         "aks.archive.storageAccountUrl: required with aks.intake archive"),
    ],
)  # fmt: skip
def test_an_intake_without_its_required_value_fails_clearly(
    mode: str, intake: str, drop: tuple[str, ...], message: str
) -> None:
    values = minimal(mode, intake)
    node = values
    for part in drop[:-1]:
        node = node[part]
    del node[drop[-1]]
    with pytest.raises(helm.HelmRenderError) as e:
        render(values)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (minimal("eks", "firehose", {"receiver": {"ingress": {"enabled": True}}}),
         "receiver.ingress.host: required with receiver.ingress.enabled"),
        (minimal("gke", "pull", {"receiver": {"ingress": {"enabled": True, "host": "a.b"}}}),
         "receiver.ingress.enabled: the receiver serves the push intakes"),
        (minimal("aks", "archive", {"state": {"type": "hostPath"}}),
         "state.type: hostPath is for mode logfile; in mode aks"),
        (minimal("gke", "pull", {"state": {"type": "persistentVolumeClaim"}}),
         "state.type: persistentVolumeClaim with replicas: 2 in mode gke"),
        (minimal("gke", "pull", {"replicas": 1}),
         "podDisruptionBudget.minAvailable: 1 with replicas: 1 would block"),
        (minimal("eks", "firehose", {"config": {"eks": {"firehose_insecure": False}}}),
         "config.eks.firehose_insecure: the chart sets this key"),
        (minimal("aks", "eventhub", {"config": {"aks": {"storage_account_url": "https://x"}}}),
         "config.aks.storage_account_url: the chart sets this key"),
    ],
)  # fmt: skip
def test_provider_contradictions_fail_with_a_clear_message(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError) as e:
        render(values)
    assert message in str(e.value)


def test_tunables_of_the_provider_sections_pass_through_config() -> None:
    objs = rendered_scenario("gke-pull")
    assert exporter_config(objs)["gke"] == {
        "subscription": "projects/my-project/subscriptions/k8s-audit-pull",
        "max_messages": 2000,
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "eks", "eks": {"intake": "kinesis"}}, "/eks/intake"),
        ({"mode": "eks", "eks": {"roleArn": "audit-role"}}, "/eks/roleArn"),
        ({"mode": "gke", "gke": {"pull": {"subscription": "k8s-audit"}}},
         "/gke/pull/subscription"),
        ({"mode": "gke", "gke": {"gcpServiceAccount": "audit@gmail.com"}},
         "/gke/gcpServiceAccount"),
        ({"mode": "aks", "aks": {"clientId": "my-app"}}, "/aks/clientId"),
        ({"mode": "aks", "aks": {"archive": {"categories": ["kube-apiserver"]}}},
         "/aks/archive/categories/0"),
        ({"mode": "aks", "aks": {"archive": {"storageAccountUrl": "https://a.blob/?sig=x"}}},
         "/aks/archive/storageAccountUrl"),
        ({"mode": "aws"}, "/mode"),
    ],
)  # fmt: skip
def test_schema_rejects_invalid_provider_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as e:
        _chart().validate_schema(values)
    assert message in str(e.value)


# --- NOTES: what to switch on at the provider ------------------------------------


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("eks-firehose", ['"types":["audit"]', "aws logs put-subscription-filter",
                          "HTTP endpoint destination", "https://audit.example.com/firehose",
                          "Secret firehose-access-key (key access-key)", "GZIP"]),
        ("eks-cloudwatch", ['"types":["audit"]', "/aws/eks/demo/cluster",
                            "logs:DescribeLogStreams and logs:GetLogEvents",
                            "eks.amazonaws.com/role-arn"]),
        ("gke-push", ["DATA_READ and DATA_WRITE", "gcloud logging sinks create",
                      'resource.labels.cluster_name="prod-gke"', "roles/pubsub.publisher",
                      "gcloud pubsub subscriptions create k8s-audit-push",
                      "--push-auth-service-account=pubsub-push@my-project"]),
        ("gke-pull", ["DATA_READ and DATA_WRITE", "gcloud logging sinks create",
                      "gcloud pubsub subscriptions create k8s-audit-pull",
                      "roles/pubsub.subscriber"]),
        ("aks-eventhub", ["az monitor diagnostic-settings create", "kube-audit-admin",
                          '"category":"kube-audit"', "--event-hub aks-audit",
                          "Azure Event Hubs Data Receiver", "Storage Blob Data Contributor",
                          "az identity federated-credential create"]),
        ("aks-archive", ["az monitor diagnostic-settings create", "kube-audit-admin",
                         "--storage-account", "Storage Blob Data Reader",
                         "az identity federated-credential create"]),
    ],
)  # fmt: skip
def test_notes_say_what_to_switch_on_at_the_provider(name: str, needles: list[str]) -> None:
    text = notes(scenario_values(name))
    for needle in needles:
        assert needle in text, needle
    # nothing of the self-managed instructions
    assert "control-plane node" not in text and "kube-apiserver.yaml" not in text


def test_notes_warn_when_answered_events_wait_on_an_empty_dir() -> None:
    """The scalable intakes keep the Loki spool on an emptyDir by default:
    the loss on a pod deletion during a Loki outage is said plainly."""
    assert "WARNING: the Loki spool is on an emptyDir" in notes(scenario_values("eks-firehose"))
    assert "acknowledged to the provider" in notes(scenario_values("aks-eventhub"))
    assert "WARNING" not in notes(scenario_values("eks-cloudwatch"))  # on its claim
    assert "WARNING" not in notes(scenario_values("gke-pull"))  # no Loki


def test_the_readme_provider_sections_name_the_chart_values() -> None:
    """The README's Helm part for managed clusters installs what the chart
    renders: its example values files pass the schema and render."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Managed clusters with the chart") :]
    section = section[: section.index("\n## ")]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    assert len(blocks) >= 3
    for block in blocks:
        values = yaml.safe_load(block)
        _chart().validate_schema(values)
        render(values)
