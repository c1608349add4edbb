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
    # fewer than one warning (or critical) per 10,000 benign events, on each
    # benign source and on all of them together; the real clusters' corpora
    # and the simulator's benign run are among them
    benign_sources = [s for s in sources if s.benign]
    assert {"audit2rbac", "perfspec", "sim benign"} <= {s.name for s in benign_sources}
    for source in benign_sources:
        assert source.warnings * 10_000 < source.events, (source.name, source.loud)
        # what is notified is what the counts say ran above info
        for rule_id, n in source.loud.items():
            assert severity[rule_id] != "info" and n <= source.counts[rule_id]
    total = sum(s.warnings for s in benign_sources)
    assert total * 10_000 < sum(s.events for s in benign_sources)
    # grouping is not blindness: perfspec's five webhook changes are all
    # matched, one of them notified
    perfspec = by_name["perfspec"]
    assert perfspec.counts["admission-webhook-changed"] == 5
    assert perfspec.loud["admission-webhook-changed"] == 1
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
