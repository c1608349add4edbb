"""`rules import-sigma`: Sigma rules for Kubernetes audit logs, written for
these tests in Sigma's own format, become rule files that load and match the
events they describe; what cannot be translated is reported with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.detect.sigma import import_files, render
from tests.detect_helpers import event

CASES = Path(__file__).resolve().parent / "sigma_cases"
TRANSLATABLE = str(CASES / "translatable.yml")
UNTRANSLATABLE = str(CASES / "untranslatable.yml")


def test_each_rule_is_translated_or_skipped_with_its_reason() -> None:
    result = {t.title: t for t in import_files([TRANSLATABLE, UNTRANSLATABLE])}
    translated = {title for title, t in result.items() if t.rule is not None}
    assert translated == {
        "Secrets Listed With A Generic HTTP Client",
        "Exec Into A Pod In A System Namespace Running A Shell",
        "Pod With A hostPath Volume From Outside The Cluster",
        "Anonymous Or Unnamed Access",
        # the base rule of a correlation is an ordinary rule
        "Many Secrets Read",
    }
    why = {title: " ".join(t.reasons) for title, t in result.items() if t.rule is None}
    assert "keyword search 'mimikatz' without a field" in why["Keyword Search For Mimikatz"]
    assert "product 'windows'" in why["Windows Process Creation"]
    assert "'ALLOW' can never be one" in why["Status Written As A Word"]
    assert "'CommandLine' is not a path into an audit event" in why["Field Unknown To Audit Events"]
    assert "expansion (base64offset" in why["Base64 Encoded Token In The URI"]
    assert "fieldref" in why["Same User Agent As Username"]
    assert "correlation rule" in why["Secret Burst Correlation"]
    # level, ATT&CK tag and the peer mapping carry over
    first = result["Secrets Listed With A Generic HTTP Client"].rule
    assert first is not None
    assert first["severity"] == "warning"  # Sigma high
    assert first["mitre"] == "T1552.007"
    assert first["peers"] == {
        "sigma": [
            "Secrets Listed With A Generic HTTP Client (6f1f3c1e-0d6a-4d51-9a53-1c2b8f1e0001)"
        ]
    }
    assert result["Anonymous Or Unnamed Access"].rule["severity"] == "info"  # type: ignore[index]


@pytest.fixture
def imported(tmp_path: Path) -> Detector:
    out = tmp_path / "sigma.yaml"
    out.write_text(render(import_files([TRANSLATABLE])))
    ruleset = load_rules([str(out)])
    assert len(ruleset) == 4
    return Detector(ruleset, DetectionSettings())


def matched(det: Detector, **fields: object) -> set[str]:
    ev = event(**fields)
    det([ev])
    return set(ev.rules)


def test_translated_rules_load_and_match_what_they_describe(imported: Detector) -> None:
    secrets = "sigma-secrets-listed-with-a-generic-http-client"
    base = {"verb": "list", "user": {"username": "bob"}, "objectRef": {"resource": "secrets"}}
    # startswith is case-insensitive, as in Sigma
    assert secrets in matched(imported, userAgent="CURL/8.5.0", **base)
    assert secrets in matched(imported, userAgent="python-requests/2.31", **base)
    assert secrets not in matched(imported, userAgent="kubectl/v1.30.1", **base)
    # the filter: refused requests (401, '403' as a string in Sigma) are left out
    assert secrets not in matched(
        imported, userAgent="curl/8.5.0", responseStatus={"code": 403}, **base
    )

    shell = "sigma-exec-into-a-pod-in-a-system-namespace-running-a-sh"
    exec_ref = {"resource": "pods", "subresource": "exec", "namespace": "kube-system", "name": "x"}
    assert shell in matched(
        imported,
        verb="create",
        user={"username": "mallory"},
        objectRef=exec_ref,
        requestURI="/api/v1/namespaces/kube-system/pods/x/exec?command=%2fBIN%2fbash&stdin=true",
    )
    assert shell not in matched(
        imported,
        verb="create",
        user={"username": "mallory"},
        objectRef=exec_ref,
        requestURI="/api/v1/namespaces/kube-system/pods/x/exec?command=ls&stdin=true",
    )

    host_path = "sigma-pod-with-a-hostpath-volume-from-outside-the-cluste"
    pod = {
        "verb": "create",
        "user": {"username": "alice"},
        "objectRef": {"resource": "pods", "namespace": "shop"},
        "requestObject": {"kind": "Pod", "spec": {"volumes": [{"hostPath": {"path": "/etc"}}]}},
    }
    assert host_path in matched(imported, sourceIPs=["198.51.100.4"], **pod)
    assert host_path not in matched(imported, sourceIPs=["10.1.2.3"], **pod)

    anonymous = "sigma-anonymous-or-unnamed-access"
    assert anonymous in matched(
        imported, verb="get", user={"username": "system:anonymous"}, userAgent="x"
    )
    assert anonymous in matched(imported, verb="get", user={"username": "alice"})
    assert anonymous not in matched(
        imported, verb="get", user={"username": "alice"}, userAgent="kubectl/v1.30"
    )


def test_imported_rules_have_no_examples_and_rules_test_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.cli import main

    out = tmp_path / "sigma.yaml"
    assert main(["rules", "import-sigma", TRANSLATABLE, UNTRANSLATABLE, "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "5 of 12 rules translated" in err
    assert "why: keyword search 'mimikatz'" in err
    assert "note: field 'hostPath' read as $pod_spec.volumes[*].hostPath.path" in err
    assert out.read_text().startswith("# Generated by `kube-audit-exporter rules import-sigma`")
    assert main(["rules", "test", str(out)]) == 1
    assert "has no `match` example" in capsys.readouterr().out


def test_nothing_translatable_exits_1_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.cli import main

    only_windows = tmp_path / "win.yml"
    only_windows.write_text(
        "title: W\nlogsource: {product: windows}\n"
        "detection: {sel: {Image: x}, condition: sel}\nlevel: low\n"
    )
    assert main(["rules", "import-sigma", str(only_windows), str(tmp_path / "missing.yml")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot read the file" in captured.err
    assert "0 of 2 rules translated" in captured.err
