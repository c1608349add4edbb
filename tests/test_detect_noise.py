"""docs/noise-report.md is what the default rules produce today on the
corpora and the simulator, and benign traffic stays below warning except
where the report explains why."""

from __future__ import annotations

from pathlib import Path

from exporter.detect import load_rules
from exporter.detect.noise import WHY_BENIGN, collect, render
from tests.conftest import CORPORA

REPORT = Path(__file__).resolve().parent.parent / "docs" / "noise-report.md"


def test_noise_report_is_up_to_date() -> None:
    ruleset = load_rules(None)
    sources = collect(ruleset, CORPORA)
    expected = render(sources, ruleset)
    assert REPORT.read_text() == expected, (
        "docs/noise-report.md is stale: python -m exporter.detect.noise > docs/noise-report.md"
    )
    severity = {r.id: r.severity for r in ruleset.rules}
    by_name = {s.name: s for s in sources}
    # benign simulated traffic raises nothing critical, and every warning is explained
    benign = by_name["sim benign"].counts
    assert not [r for r in benign if severity[r] == "critical"]
    # fewer than one warning per 10,000 benign simulated events
    loud = sum(n for r, n in benign.items() if severity[r] != "info")
    assert loud * 10_000 < by_name["sim benign"].events, benign
    for source in sources:
        if source.benign:
            for rule_id in source.counts:
                if severity[rule_id] != "info":
                    assert rule_id in WHY_BENIGN, (source.name, rule_id)
    # and every scripted attack is seen at warning or above
    attacks = by_name["sim+attacks"].counts
    for rule_id in (
        "auth-failure-burst",
        "anonymous-request-allowed",
        "service-account-token-outside-cluster",
        "critical-workload-principal-not-allowed",
        "cluster-admin-binding",
        "impersonation-of-privileged-identity",
        "refused-unusual-user-agent",
        "secret-read-by-scripted-client",
    ):
        assert attacks[rule_id] > 0, rule_id
