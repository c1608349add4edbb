"""The chart over a release's life: the chart-made certificates
(webhook.tls.source generate), made by the hook Job's script exactly as the
rendered ConfigMap ships it, run against a fake API server on loopback, then
checked with real X.509 verification and accepted by the real exporter; and
upgrades rendered by real Helm against the same fake API server."""

from __future__ import annotations

import base64
import datetime
import http.client
import http.server
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python as helm
import pytest
import yaml
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from .conftest import Process, free_port, poll
from .test_helm import (
    DEFAULT,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    _chart,
    exporter_config,
    find,
    materialize_pod_filesystem,
    merged,
    objects,
    one,
    render_raw,
    rendered_scenario,
    rooted_config,
    scenario_values,
)

FULL = f"{RELEASE}-kube-audit-exporter"
CA, TLS, APISERVER = f"{FULL}-ca", f"{FULL}-tls", f"{FULL}-apiserver"


class FakeAPIServer:
    """Just enough of a Kubernetes API server on loopback: discovery of v1,
    and GET, POST and PUT of Secrets (with resourceVersion checks) and GET of
    Services in one namespace, for the certgen script and Helm's lookup."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"secrets": {}, "services": {}}
        self.writes: list[tuple[str, str]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "code": code,
                                  "status": "Failure", "reason": reason})  # fmt: skip

            def _where(self) -> tuple[str, str] | None:
                parts = self.path.split("?")[0].split("/")
                # /api/v1/namespaces/NS/RESOURCE[/NAME]
                if parts[1:4] != ["api", "v1", "namespaces"] or len(parts) < 6:
                    return None
                if parts[4] != NAMESPACE or parts[5] not in fake.objects:
                    return None
                return parts[5], parts[6] if len(parts) > 6 else ""

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/api/v1":
                    resources = [
                        {"name": r, "singularName": r[:-1], "namespaced": True,
                         "kind": r[:-1].capitalize(), "verbs": ["get", "create", "update"]}
                        for r in fake.objects
                    ]  # fmt: skip
                    return self._send(200, {"kind": "APIResourceList", "groupVersion": "v1",
                                            "resources": resources})  # fmt: skip
                where = self._where()
                if where and where[1] in fake.objects[where[0]]:
                    return self._send(200, fake.objects[where[0]][where[1]])
                return self._status(404, "NotFound")

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length", "0"))
                body: dict[str, Any] = json.loads(self.rfile.read(length))
                return body

            def do_POST(self) -> None:
                where = self._where()
                if not where or where[1]:
                    return self._status(404, "NotFound")
                obj = self._body()
                name = obj["metadata"]["name"]
                if name in fake.objects[where[0]]:
                    return self._status(409, "AlreadyExists")
                obj["metadata"]["resourceVersion"] = "1"
                fake.objects[where[0]][name] = obj
                fake.writes.append(("create", name))
                return self._send(201, obj)

            def do_PUT(self) -> None:
                where = self._where()
                if not where or where[1] not in fake.objects[where[0]]:
                    return self._status(404, "NotFound")
                obj = self._body()
                old = fake.objects[where[0]][where[1]]
                if obj["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"]:
                    return self._status(409, "Conflict")
                obj["metadata"]["resourceVersion"] = str(
                    int(old["metadata"]["resourceVersion"]) + 1
                )
                fake.objects[where[0]][where[1]] = obj
                fake.writes.append(("update", where[1]))
                return self._send(200, obj)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.kubeconfig = yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "unused"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        })  # fmt: skip

    @property
    def secrets(self) -> dict[str, dict[str, Any]]:
        return self.objects["secrets"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeAPIServer]:
    server = FakeAPIServer()
    yield server
    server.close()


def run_certgen(objs: Any, api: FakeAPIServer, tmp: Path) -> subprocess.CompletedProcess[str]:
    """The hook Job: its ConfigMap's script and spec, run as its command says."""
    [job] = find(objs, "Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    cm = one(objs, "ConfigMap", job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"])
    mount = container["volumeMounts"][0]["mountPath"]
    for key, text in cm["data"].items():
        (tmp / key).write_text(text)
    assert container["command"][0] == "python"
    args = [str(tmp / Path(a).relative_to(mount)) for a in container["command"][1:]]
    result = subprocess.run(
        [sys.executable, *args, "--api-url", api.url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result


def made(objs: Any, tmp: Path) -> list[dict[str, Any]]:
    """The rendered objects plus the Secrets the hook Job makes."""
    server = FakeAPIServer()
    try:
        run_certgen(objs, server, tmp)
        return [*objs, *server.secrets.values()]
    finally:
        server.close()


def _cert(secret: dict[str, Any], key: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def _usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def kubeconfig(objs: Any) -> dict[str, Any]:
    secret = one(objs, "Secret", APISERVER)
    config: dict[str, Any] = yaml.safe_load(base64.b64decode(secret["data"]["webhook.kubeconfig"]))
    return config


def _subject(host: str) -> x509.GeneralName:
    import ipaddress

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


GENERATED = [
    s
    for s in SCENARIOS
    if scenario_values(s).get("mode", "webhook") == "webhook"
    and scenario_values(s).get("webhook", {}).get("tls", {}).get("source", "generate") == "generate"
]


def test_rendering_holds_no_key_material_and_is_repeatable() -> None:
    """GitOps: `helm template` twice gives the same output, and no private
    key is in it (they are made in the cluster by the hook Job)."""
    values = scenario_values("webhook-default")
    first, second = render_raw(values), render_raw(values)
    assert first == second
    text = "\n".join(first.values())
    assert "PRIVATE KEY-----" not in text.replace('"-----BEGIN', "")  # the script's own strings
    for obj in objects(first):
        if obj["kind"] == "Secret":
            assert not {"tls.key", "client.key"} & set(obj.get("data", {})), obj["metadata"]
    job = one(objects(first), "Job")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert hooks == ["pre-install", "pre-upgrade"]


@pytest.mark.parametrize("name", GENERATED)
def test_kubeconfig_ca_signed_the_serving_and_client_certificates(
    name: str, tmp_path: Path
) -> None:
    objs = made(rendered_scenario(name), tmp_path)
    config = kubeconfig(objs)
    cluster = config["clusters"][0]["cluster"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(cluster["certificate-authority-data"]))
    tls = one(objs, "Secret", TLS)
    serving = _cert(tls, "tls.crt")
    store = verification.Store([ca])
    now = datetime.datetime.now(datetime.UTC)
    host = urlsplit(cluster["server"]).hostname
    assert host is not None
    # the chain and the name the API server will check
    (
        verification.PolicyBuilder().store(store).time(now)
        .build_server_verifier(_subject(host)).verify(serving, [])
    )  # fmt: skip
    # the exporter verifies the client against the CA it mounts as client-ca.crt
    assert _cert(tls, "ca.crt") == ca
    user = config["users"][0]["user"]
    client = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    verification.PolicyBuilder().store(store).time(now).build_client_verifier().verify(client, [])
    # separate usages: the serving key is no client credential, and back
    assert _usages(serving) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _usages(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(verification.VerificationError):
        verification.PolicyBuilder().store(store).time(now).build_client_verifier().verify(
            serving, []
        )
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{FULL}.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)


def test_a_host_name_is_in_the_generated_certificate(tmp_path: Path) -> None:
    values = {"webhook": {"apiServer": {"host": "audit.cluster.internal"}}}
    objs = made(objects(render_raw(values)), tmp_path)
    serving = _cert(one(objs, "Secret", TLS), "tls.crt")
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "audit.cluster.internal" in sans.get_values_for_type(x509.DNSName)
    server = kubeconfig(objs)["clusters"][0]["cluster"]["server"]
    assert server == "https://audit.cluster.internal:8443/audit"


def test_certificates_are_kept_and_only_what_changed_is_made_anew(
    api: FakeAPIServer, tmp_path: Path
) -> None:
    """Every upgrade runs the Job: a second run writes nothing; a new name
    re-signs only the serving certificate with the kept CA, so the client
    certificate and the kubeconfig on the control-plane nodes stay valid."""
    base = scenario_values("webhook-default")
    first = run_certgen(objects(render_raw(base)), api, tmp_path)
    assert sorted(api.writes) == [("create", APISERVER), ("create", CA), ("create", TLS)]
    assert "made (missing)" in first.stdout
    assert "PRIVATE" not in first.stdout + first.stderr
    before = {n: s["data"] for n, s in api.secrets.items()}
    for s in api.secrets.values():
        assert s["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    api.writes.clear()
    again = run_certgen(objects(render_raw({**base, "podLabels": {"x": "y"}})), api, tmp_path)
    assert api.writes == [] and "every certificate kept" in again.stdout

    renamed = merged(base, {"webhook": {"tls": {"extraDNSNames": ["audit.example.org"]}}})
    out = run_certgen(objects(render_raw(renamed)), api, tmp_path)
    assert api.writes == [("update", TLS)], out.stdout
    assert "names or addresses changed" in out.stdout
    after = {n: s["data"] for n, s in api.secrets.items()}
    assert after[CA] == before[CA] and after[APISERVER] == before[APISERVER]
    assert after[TLS]["tls.crt"] != before[TLS]["tls.crt"]
    serving = _cert(api.secrets[TLS], "tls.crt")
    serving.verify_directly_issued_by(_cert(api.secrets[CA], "tls.crt"))


def test_a_certificate_near_its_end_is_renewed(api: FakeAPIServer, tmp_path: Path) -> None:
    objs = objects(render_raw(scenario_values("webhook-default")))
    run_certgen(objs, api, tmp_path)
    before = api.secrets[APISERVER]["data"]["client.crt"]
    # the made certificates end in 3650 days: with renewBeforeDays beyond
    # that, every leaf and the CA are due
    tls = {"validityDays": 7300, "certgen": {"renewBeforeDays": 3700}}
    values = merged(scenario_values("webhook-default"), {"webhook": {"tls": tls}})
    out = run_certgen(objects(render_raw(values)), api, tmp_path)
    assert "CA " in out.stdout and "copy it to the control-plane nodes again" in out.stdout
    assert api.secrets[APISERVER]["data"]["client.crt"] != before


def test_the_job_is_hardened_and_outside_the_exporters_network_policy() -> None:
    objs = rendered_scenario("webhook-default")
    job = one(objs, "Job")
    spec = job["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    [container] = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    for np in find(objs, "NetworkPolicy"):
        selector = np["spec"]["podSelector"]["matchLabels"]
        assert not all(pod_labels.get(k) == v for k, v in selector.items())
    for svc in find(objs, "Service"):
        assert not all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    [role] = find(objs, "Role")
    named = next(r for r in role["rules"] if "get" in r["verbs"])
    assert sorted(named["resourceNames"]) == sorted([CA, TLS, APISERVER])


def _get(address: str, path: str) -> int:
    conn = http.client.HTTPConnection(address, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _post_event_list(ctx: ssl.SSLContext, port: int, server_name: str, path: str) -> int:
    """POST an EventList to 127.0.0.1:port presenting ``server_name`` (SNI and
    certificate check), as the API server would connect to the Service."""
    body = json.dumps({
        "kind": "EventList", "apiVersion": "audit.k8s.io/v1",
        "items": [{
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": "5f0ae7e1-0000-4000-8000-000000000001", "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/default/pods", "verb": "list",
            "user": {"username": "admin", "groups": ["system:masters"]},
            "sourceIPs": ["10.0.0.1"], "responseStatus": {"code": 200},
            "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
            "requestReceivedTimestamp": "2024-05-01T10:00:00.000000Z",
            "stageTimestamp": "2024-05-01T10:00:00.010000Z",
        }],
    }).encode()  # fmt: skip
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.sock = tls
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        status = conn.getresponse().status
        conn.close()
        return status


def test_the_exporter_accepts_the_api_server_with_the_made_material(tmp_path: Path) -> None:
    """End to end: the real exporter, started with the rendered configuration
    and the certificates the Job made, accepts a batch from a client that uses
    only the kubeconfig (its CA, its client certificate, its server name), and
    refuses one without the client certificate."""
    (tmp_path / "job").mkdir()
    objs = made(rendered_scenario("webhook-default"), tmp_path / "job")
    root = tmp_path / "pod"
    materialize_pod_filesystem(objs, root)
    config = rooted_config(objs, root)
    web, hook = free_port(), free_port()
    config["web"]["listen_address"] = f"127.0.0.1:{web}"
    config["webhook"]["listen_address"] = f"127.0.0.1:{hook}"
    assert exporter_config(objs)["webhook"]["client_ca_file"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    kc = kubeconfig(objs)
    cluster, user = kc["clusters"][0]["cluster"], kc["users"][0]["user"]
    server = urlsplit(cluster["server"])
    for key, suffix in [("client-certificate-data", "crt"), ("client-key-data", "key")]:
        (tmp_path / f"client.{suffix}").write_bytes(base64.b64decode(user[key]))
    exporter = Process(
        [sys.executable, "-m", "exporter.cli", "run", f"--config.file={path}"], tmp_path / "log"
    )
    try:
        poll(lambda: _get(f"127.0.0.1:{web}", "/readyz") == 200, what="exporter ready",
             on_timeout=exporter.output)  # fmt: skip

        def post(with_cert: bool) -> int:
            ctx = ssl.create_default_context(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            )
            if with_cert:
                ctx.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
            return _post_event_list(ctx, hook, server.hostname or "", server.path)

        assert post(with_cert=True) == 200
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            post(with_cert=False)
    finally:
        exporter.stop()


def test_an_upgrade_that_would_change_the_cluster_ip_is_refused(api: FakeAPIServer) -> None:
    """A Service's clusterIP is immutable: an upgrade to another address
    fails before anything is applied, and says which address to keep."""
    api.objects["services"][FULL] = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": FULL, "namespace": NAMESPACE, "resourceVersion": "1"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.200.10"},
    }  # fmt: skip
    with helm.Config(kubeconfig_content=api.kubeconfig, namespace=NAMESPACE) as cfg:

        def upgrade(values: dict[str, Any]) -> dict[str, str]:
            out: dict[str, str] = cfg.render(
                _chart(), values, name=RELEASE, namespace=NAMESPACE, is_upgrade=True
            )
            return out

        upgrade(DEFAULT)  # the same address
        moved = merged(DEFAULT, {"webhook": {"service": {"clusterIP": "10.96.200.99"}}})
        with pytest.raises(helm.HelmRenderError) as e:
            upgrade(moved)
        assert "already has clusterIP 10.96.200.10" in str(e.value)
        assert "webhook.service.clusterIP=10.96.200.10" in str(e.value)
    # helm template (no cluster) renders it: rendering stays repeatable
    render_raw(moved)


# --- NOTES: the node steps run as written on a fresh node -----------------------------

FAKE_KUBECTL = """#!/usr/bin/env python3
import json, re, sys
args = sys.argv[1:]
objs = json.load(open(%r))
ns = args[args.index("-n") + 1]
kind, name = args[args.index("get") + 1], args[args.index("get") + 2]
path = args[args.index("-o") + 1]
key = re.fullmatch(r"jsonpath=\\{\\.data\\.(.+)\\}", path).group(1).replace("\\\\.", ".")
for o in objs:
    meta = o["metadata"]
    if o["kind"].lower() == kind and meta["name"] == name and meta.get("namespace", ns) == ns:
        sys.stdout.write(o["data"][key])
        sys.exit(0)
sys.stderr.write(f"Error from server (NotFound): {kind} {name} not found\\n")
sys.exit(1)
"""


def node_commands(notes: str) -> list[str]:
    """The shell commands NOTES gives for the node's files (steps up to 3):
    lines indented by exactly two spaces, with their continuations."""
    commands: list[str] = []
    current: list[str] = []
    for line in notes.split("\n3. ")[0].splitlines():
        if current or (line.startswith("  ") and not line.startswith("   ")):
            current.append(line)
            text = "\n".join(current)
            if not text.endswith("\\") and text.count("(") <= text.count(")"):
                commands.append(text.strip())
                current = []
    return commands


def run_node_steps(objs: list[dict[str, Any]], notes: str, tmp: Path) -> Path:
    """Run NOTES' node commands with / moved to tmp/node (nothing of
    /etc/kubernetes/audit exists yet) and a kubectl that answers from objs."""
    root = tmp / "node"
    (root / "etc" / "kubernetes").mkdir(parents=True)
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (tmp / "objects.json").write_text(json.dumps(objs))
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL % str(tmp / "objects.json"))
    kubectl.chmod(0o755)
    script = "\n".join(c.replace("/etc/kubernetes", f"{root}/etc/kubernetes")
                       for c in node_commands(notes))  # fmt: skip
    assert "kubectl" in script
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp)}
    result = subprocess.run(["bash", "-c", f"set -euo pipefail; umask 022\n{script}"],
                            capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr + "\n" + script
    return root / "etc" / "kubernetes" / "audit"


def _notes_of(values: dict[str, Any]) -> str:
    return next(v for k, v in render_raw(values).items() if k.endswith("NOTES.txt"))


def test_the_notes_node_steps_work_on_a_fresh_node(tmp_path: Path) -> None:
    """The directory does not exist yet, and the kubeconfig holding the client
    key ends up readable by root only."""
    (tmp_path / "job").mkdir()
    objs = made(rendered_scenario("webhook-default"), tmp_path / "job")
    audit = run_node_steps(objs, _notes_of(DEFAULT), tmp_path)
    policy = one(objs, "ConfigMap", f"{FULL}-audit-policy")["data"]["policy.yaml"]
    assert (audit / "policy.yaml").read_text() == policy
    kubeconfig_file = audit / "webhook.kubeconfig"
    assert yaml.safe_load(kubeconfig_file.read_text())["kind"] == "Config"
    assert kubeconfig_file.stat().st_mode & 0o777 == 0o600
    assert audit.stat().st_mode & 0o777 == 0o700


def test_the_notes_node_steps_fetch_cert_manager_files(tmp_path: Path) -> None:
    values = scenario_values("webhook-certmanager")
    objs = list(rendered_scenario("webhook-certmanager"))
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    # what cert-manager writes into the Certificates' Secrets
    for cert in find(objs, "Certificate"):
        objs.append({"kind": "Secret", "metadata": {"name": cert["spec"]["secretName"],
                     "namespace": NAMESPACE}, "data": {"tls.crt": pem, "tls.key": pem,
                     "ca.crt": pem}})  # fmt: skip
    audit = run_node_steps(objs, _notes_of(values), tmp_path)
    config = yaml.safe_load((audit / "webhook.kubeconfig").read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    node_root = str(tmp_path / "node")
    for path in (cluster["certificate-authority"], user["client-certificate"], user["client-key"]):
        assert Path(node_root + path).is_file(), path
    assert Path(node_root + user["client-key"]).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mode", ["webhook", "logfile"])
def test_the_notes_separate_the_static_pod_manifest_from_cluster_configuration(mode: str) -> None:
    """Flags in the manifest, name/value pairs in ClusterConfiguration, and
    the step that makes a running API server see a ClusterConfiguration."""
    text = _notes_of(DEFAULT if mode == "webhook" else {"mode": "logfile"})
    manifest, _, cluster_config = text.partition("b. kubeadm's ClusterConfiguration")
    assert "- --audit-policy-file=/etc/kubernetes/audit/policy.yaml" in manifest
    assert "{name: audit-policy-file, value: /etc/kubernetes/audit/policy.yaml}" in cluster_config
    assert "--audit-policy-file" not in cluster_config.split("k3s:")[0]
    assert "does not touch a running API server" in cluster_config
    assert "kubeadm init phase control-plane apiserver --config" in cluster_config
    assert ("pod-security.kubernetes.io/enforce=privileged" in text) == (mode == "logfile")
