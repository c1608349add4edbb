"""Outcome changes severity: a rule's `refused:` section splits it into the
rule (success), `-refused` (a lower severity) and `-refused-repeated` (back
to the rule's severity when one user keeps trying)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.detect import DetectionSettings, RuleError, load_rules
from tests.detect_helpers import detector, event, rules_from

RULE = """\
rules:
  - id: admin-grant
    title: Grant of admin
    severity: warning
    rationale: Full control handed over.
    peers:
      falco: [Attach to cluster-admin Role]
      elastic: persistence_cluster_admin_rolebinding_created
    description: d
    match: {verb: create, objectRef.resource: clusterrolebindings}
    refused:
      severity: info
      repeated: {count: 3, window: 10m}
      examples:
        match:
          - {verb: create, user: {username: eve}, responseStatus: {code: 403},
             objectRef: {resource: clusterrolebindings}}
        no_match:
          - {verb: create, user: {username: eve}, objectRef: {resource: clusterrolebindings}}
"""


def grant(code: int, at: float = 0.0, user: str = "eve") -> object:
    return event(
        at=at,
        verb="create",
        user={"username": user},
        responseStatus={"code": code},
        objectRef={"resource": "clusterrolebindings"},
    )


def test_refused_attempts_rate_lower_unless_repeated(tmp_path: Path) -> None:
    ruleset = rules_from(tmp_path, RULE)
    assert [(r.id, r.severity, r.kind) for r in ruleset.rules] == [
        ("admin-grant", "warning", "match"),
        ("admin-grant-refused", "info", "match"),
        ("admin-grant-refused-repeated", "warning", "threshold"),
    ]
    assert {r.variant_of for r in ruleset.rules} == {"", "admin-grant"}
    assert ruleset.rules[0].peers == {
        "falco": ("Attach to cluster-admin Role",),
        "elastic": ("persistence_cluster_admin_rolebinding_created",),
    }
    det, _, registry = detector(ruleset)
    ok = grant(201)
    det([ok])
    assert ok.rules == ("admin-grant",) and ok.severity == "warning"
    # a conflict changed nothing: neither variant
    conflict = grant(409)
    det([conflict])
    assert conflict.rules == ()
    first, second, third = grant(403, 10), grant(403, 20), grant(403, 30)
    for ev in (first, second):
        det([ev])
        assert ev.rules == ("admin-grant-refused",) and ev.severity == "info"
    det([third])
    assert set(third.rules) == {"admin-grant-refused", "admin-grant-refused-repeated"}
    assert third.severity == "warning"
    assert (
        registry.get_sample_value(
            "kube_audit_rule_matches_total", {"rule": "admin-grant-refused", "severity": "info"}
        )
        == 3.0
    )


def test_the_repeated_variant_gets_examples_from_the_refused_ones(tmp_path: Path) -> None:
    from exporter.detect.examples import run_examples

    ruleset = rules_from(tmp_path, RULE)
    repeated = ruleset.rules[2]
    assert [(ex.expect, ex.events[0].repeat) for ex in repeated.examples] == [(True, 3), (False, 2)]
    report = run_examples(ruleset)
    # the rule itself has no examples here; both variants' examples pass
    assert [f.rule for f in report.failures] == ["admin-grant", "admin-grant"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{severity: critical}", "a refused attempt rates below the rule's own severity (warning)"),
        ("{severity: loud}", "must be one of info, warning, critical"),
        ("{severity: info, repeated: {count: 1, window: 1m}}", "a count of at least 2"),
        ("{severity: info, repeated: 3}", "must be {count: N, window: DURATION}"),
        ("{severity: info, colour: red}", "unknown key"),
    ],
)
def test_a_bad_refused_section_is_located(tmp_path: Path, section: str, message: str) -> None:
    text = (
        "rules:\n  - {id: r, title: t, severity: warning, description: d,\n"
        f"     match: {{verb: create}}, refused: {section}}}\n"
    )
    with pytest.raises(RuleError) as e:
        rules_from(tmp_path, text)
    assert any(message in p and "refused" in p for p in e.value.problems), e.value.problems


def test_only_match_rules_take_refused_and_peers_are_checked(tmp_path: Path) -> None:
    text = (
        "rules:\n  - {id: r, title: t, severity: warning, description: d, kind: threshold,\n"
        "     match: {verb: create}, group_by: [verb], window: 1m, count: 2,\n"
        "     refused: {severity: info}, peers: {splunk: [x]}}\n"
    )
    with pytest.raises(RuleError) as e:
        rules_from(tmp_path, text)
    text_problems = "\n".join(e.value.problems)
    assert "only kind match rules take `refused:`" in text_problems
    assert "peers.splunk: unknown key" in text_problems


def test_every_shipped_rule_explains_its_severity_and_names_its_peers() -> None:
    for rule in load_rules(None).rules:
        assert rule.rationale, rule.id
        for peer, names in rule.peers.items():
            assert peer in ("falco", "sigma", "elastic") and names, rule.id


def test_rules_list_prints_the_peer_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import main

    assert main(["rules", "list", "--peers"]) == 0
    out = capsys.readouterr().out
    assert "Falco k8saudit: Attach to cluster-admin Role" in out
    assert "why info: A refused attempt" in out
    assert "variant of: cluster-admin-binding" in out
    assert main(["rules", "list", "--output", "json"]) == 0
    assert '"variant_of": "cluster-admin-binding"' in capsys.readouterr().out


def test_settings_are_untouched_by_the_variants() -> None:
    # variants need the same settings as their rule
    rules = {r.id: r for r in load_rules(None).rules}
    assert rules["disallowed-node-joined-refused"].missing(DetectionSettings()) == ["allowed_nodes"]
