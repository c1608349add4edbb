"""Rule files: the default set passes its own examples, every rule is
complete, and malformed files are refused with located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.detect import RuleError, load_rules
from exporter.detect.cli import cmd_list, cmd_test
from exporter.detect.examples import run_examples
from exporter.detect.rules import KINDS
from exporter.detect.settings import SEVERITIES


def test_every_default_rule_passes_its_examples() -> None:
    report = run_examples(load_rules(None))
    assert report.failures == []
    assert report.rules >= 60
    assert report.examples >= 2 * report.rules


def test_every_default_rule_is_complete() -> None:
    rules = load_rules(None).rules
    assert len({r.id for r in rules}) == len(rules)
    for r in rules:
        assert r.title and r.description and r.mitre, r.id
        assert r.severity in SEVERITIES and r.kind in KINDS
        assert {True, False} <= {ex.expect for ex in r.examples}, r.id


def test_critical_is_used_sparingly() -> None:
    rules = load_rules(None).rules
    critical = [r.id for r in rules if r.severity == "critical"]
    assert 0 < len(critical) <= len(rules) // 8, critical


def test_default_set_covers_the_issue() -> None:
    ids = {r.id for r in load_rules(None).rules}
    for rule_id in (
        "pod-exec-or-attach",
        "pod-port-forward",
        "ephemeral-container-added",
        "secret-read-by-human",
        "secret-enumeration",
        "secret-deleted-by-human",
        "cluster-admin-binding",
        "role-with-wildcard",
        "role-grants-exec",
        "role-grants-secrets",
        "system-role-modified",
        "rbac-binding-changed",
        "privileged-container",
        "sensitive-host-path-mount",
        "pod-host-network",
        "pod-host-pid",
        "pod-host-ipc",
        "dangerous-capabilities",
        "pod-in-kube-system-by-non-system",
        "anonymous-request-allowed",
        "impersonation-by-non-system",
        "admission-webhook-changed",
        "admission-webhook-failed-open",
        "nodeport-service",
        "ingress-without-tls",
        "configmap-with-credentials",
        "token-requested-by-human",
        "csr-approved-by-non-controller",
        "csr-for-system-masters",
        "events-deleted",
        "permission-enumeration",
        "offensive-tool-user-agent",
        "legacy-service-account-token-used",
        "stale-service-account-token-used",
        "pod-security-violation",
        "auth-failure-burst",
        "forbidden-burst",
        "untrusted-then-trusted-access",
        "human-writer-new-source",
        "service-account-token-outside-cluster",
        "critical-workload-principal-not-allowed",
        "critical-workload-outside-window",
    ):
        assert rule_id in ids


MALFORMED = """\
rules:
  - id: ok-rule
    title: fine
    severity: info
    description: fine
    match: {verb: create}
  - id: Bad_Id
    title: t
    severity: severe
    description: d
    match:
      verb: {eqq: create}
      objectRef.name: {regex: "("}
      "requestObject..spec": 1
      $nope: 1
      $source_ip: {cidr: [10.0.0/8, $office]}
    window: 5m
  - id: seq
    title: t
    severity: info
    description: d
    kind: sequence
    group_by: [user.username]
    window: soon
    steps:
      - {name: only, match: {verb: get}}
"""


def test_malformed_rule_file_gives_located_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MALFORMED)
    with pytest.raises(RuleError) as info:
        load_rules([str(path)])
    problems = info.value.problems
    text = "\n".join(problems)

    def has(fragment: str, line: int) -> None:
        assert any(p.startswith(f"{path}:{line}:") and fragment in p for p in problems), (
            fragment,
            line,
            text,
        )

    has("rules[1].id: 'Bad_Id' is not a rule id", 7)
    has("severity: must be one of info, warning, critical, not 'severe'", 9)
    has("match.verb.eqq: unknown operator 'eqq'", 12)
    has("'(' is not a regular expression", 13)
    has("expected a field name", 14)
    has("unknown derived field '$nope'", 15)
    has("'10.0.0/8' is not a network", 16)
    has("unknown network list '$office'", 16)
    has("window: not used by kind match", 17)
    has("rules[2] (seq).window: 'soon' is not a duration", 24)
    has("a sequence needs a list of at least two steps", 26)
    assert len(problems) == 11, text


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("rules:\n  - id: x\n   title: y\n")
    with pytest.raises(RuleError) as info:
        load_rules([str(path)])
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:3:") and "not valid YAML" in problem


def test_duplicate_ids_across_files_are_refused(tmp_path: Path) -> None:
    rule = "rules:\n  - {id: same, title: t, severity: info, description: d, match: {verb: get}}\n"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(rule)
    b.write_text(rule)
    with pytest.raises(RuleError) as info:
        load_rules([str(a), str(b)])
    assert any("duplicate rule id 'same'" in p and str(b) in p for p in info.value.problems)


def test_user_rules_can_extend_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "rules:\n  - {id: my-rule, title: t, severity: info, description: d, match: {verb: get}}\n"
    )
    only = load_rules([str(path)])
    both = load_rules([str(path)], with_defaults=True)
    assert [r.id for r in only.rules] == ["my-rule"]
    assert len(both) == len(load_rules(None)) + 1


class _Args:
    def __init__(self, files: list[str], output: str = "text") -> None:
        self.files = files
        self.output = output


def test_rules_test_command_reports_failing_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "rules:\n"
        "  - id: deletes\n"
        "    title: t\n"
        "    severity: info\n"
        "    description: d\n"
        "    match: {verb: delete}\n"
        "    examples:\n"
        "      match: [{verb: get}]\n"
        "      no_match: [{verb: list}]\n"
    )
    assert cmd_test(_Args([str(path)])) == 1  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert f"FAILED: {path}:8: deletes" in out and "never fired" in out
    assert "1 rules, 2 examples, 1 failures" in out


def test_rules_test_and_list_on_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_test(_Args([])) == 0  # type: ignore[arg-type]
    assert capsys.readouterr().out.startswith("SUCCESS: ")
    assert cmd_list(_Args([])) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "untrusted-then-trusted-access" in out and "needs detect.trusted_networks" in out


def test_invalid_files_exit_1_with_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MALFORMED)
    assert cmd_test(_Args([str(path)])) == 1  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err.startswith("rules are invalid:") and f"{path}:12:" in err


def test_rules_subcommands_are_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import main

    assert main(["rules", "test"]) == 0
    assert capsys.readouterr().out.startswith("SUCCESS: ")
    assert main(["rules", "list", "--output", "json"]) == 0
    assert '"id": "secret-deleted-by-human"' in capsys.readouterr().out


def test_rules_list_names_configuration_keys_and_takes_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.cli import main

    assert main(["rules", "list"]) == 0
    out = capsys.readouterr().out
    assert "cluster_networks" not in out  # no such configuration key
    assert "[inactive: needs detect.pod_cidrs or detect.node_cidrs]" in out
    assert "116 rules, 106 active" in out
    config = tmp_path / "c.yaml"
    config.write_text(
        "detect:\n  trusted_networks: [192.0.2.0/24]\n  node_cidrs: [10.0.0.0/16]\n"
        "  disabled_rules: [secret-deleted-by-human]\n"
    )
    assert main(["rules", "list", "--config.file", str(config)]) == 0
    out = capsys.readouterr().out
    assert "needs detect.trusted_networks" not in out
    assert "needs detect.pod_cidrs" not in out
    assert "[inactive: disabled by detect.disabled_rules]" in out
    assert "[inactive: needs detect.critical_workloads]" in out
    demo = Path(__file__).resolve().parent.parent / "demo" / "config.yaml"
    assert main(["rules", "list", "--config.file", str(demo)]) == 0
    out = capsys.readouterr().out
    # the demo sets every setting but the site allow-lists, which stay inactive until set
    assert "116 rules, 110 active" in out
    assert "[inactive: needs detect.allowed_users]" in out
