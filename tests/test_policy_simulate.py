"""policy simulate over the real corpora, checked against an independent count."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import exporter.policy
from exporter.event import AuditEvent, Decoder
from exporter.policy import cli as policy_cli
from exporter.policy.simulate import estimate_size
from tests.conftest import CORPORA

POLICIES = Path(exporter.policy.__file__).parent / "policies"
SHIPPED = [POLICIES / "recommended.yaml", POLICIES / "minimal.yaml"]


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPORA.rglob("*") if p.is_file() and p.suffix != ".md")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kube-audit-exporter")
    policy_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def simulate_json(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    code, out, _ = run(capsys, "policy", "simulate", "--output", "json", *argv)
    lines = [json.loads(line) for line in out.splitlines()]
    return code, lines[:-1], lines[-1]["summary"]


# --- an independent evaluation, for the features the shipped policies use ----


def independent_rule(rules: list[dict[str, Any]], ev: dict[str, Any]) -> int | None:
    """The index of the first rule matching a recorded event: users, userGroups,
    verbs, resources by group and exact (sub)resource name, non-resource URLs
    exact or with a trailing *."""
    user = (ev.get("user") or {}).get("username") or None
    groups = set((ev.get("user") or {}).get("groups") or [])
    ref = ev.get("objectRef")
    path = ev.get("requestURI", "").split("?")[0]
    for index, rule in enumerate(rules):
        if "users" in rule and (user is None or user not in rule["users"]):
            continue
        if "userGroups" in rule and (user is None or not groups & set(rule["userGroups"])):
            continue
        if "verbs" in rule and ev["verb"] not in rule["verbs"]:
            continue
        if "resources" in rule:
            if ref is None:
                continue
            name = ref.get("resource", "")
            if ref.get("subresource"):
                name += "/" + ref["subresource"]
            if not any(
                gr.get("group", "") == ref.get("apiGroup", "")
                and ("resources" not in gr or name in gr["resources"])
                for gr in rule["resources"]
            ):
                continue
        elif "nonResourceURLs" in rule:
            if ref is not None:
                continue
            if not any(
                path == url or (url.endswith("*") and path.startswith(url[:-1]))
                for url in rule["nonResourceURLs"]
            ):
                continue
        return index
    return None


def independent_count(policy_path: Path) -> tuple[Counter[int | None], Counter[int | None], int]:
    """(events per deciding rule, written events per rule, events) over the corpora."""
    doc = yaml.safe_load(policy_path.read_text())
    rules = doc["rules"]
    assert not any("namespaces" in r or "omitStages" in r for r in rules), "extend the count"
    assert not any(
        "resourceNames" in gr or any("*" in res for res in gr.get("resources", []))
        for r in rules
        for gr in r.get("resources", [])
    ), "extend the count"
    omitted = set(doc.get("omitStages", []))
    matched: Counter[int | None] = Counter()
    written: Counter[int | None] = Counter()
    events = 0
    decoder = Decoder()
    for path in corpus_files():
        for item in decoder.decode_document(path.read_bytes()):
            if not isinstance(item, AuditEvent):
                continue
            events += 1
            index = independent_rule(rules, item.obj)
            matched[index] += 1
            level = rules[index]["level"] if index is not None else "None"
            if level != "None" and item.stage not in omitted:
                written[index] += 1
    return matched, written, events


@pytest.mark.parametrize("policy", SHIPPED, ids=lambda p: p.stem)
def test_per_rule_counts_equal_an_independent_count(
    policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(p) for p in corpus_files()]
    code, events, summary = simulate_json(capsys, "--policy", str(policy), *files)
    assert code == 0
    matched, written, total = independent_count(policy)

    assert len(events) == summary["events"] == total > 17_000
    per_event: Counter[int | None] = Counter(e["rule"] for e in events)
    assert per_event == matched
    for rule in summary["rules"]:
        assert rule["matched"] == matched[rule["index"]], rule
        assert rule["written"] == written[rule["index"]], rule
    assert summary["default"]["matched"] == matched[None]
    assert summary["written"]["events"] == sum(written.values())
    assert summary["neverMatched"] == [
        r["index"] for r in summary["rules"] if not matched[r["index"]]
    ]
    # Every rule of the shipped policies has work to do on real traffic,
    # except the ones for traffic these captures do not have.
    assert sum(matched.values()) - matched[None] > 0.9 * total


def test_per_event_records_have_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    log = CORPORA / "audit2rbac-demo" / "demo.log"
    _, events, summary = simulate_json(capsys, "--policy", str(SHIPPED[0]), str(log))
    assert len(events) == 757
    for record in events:
        assert set(record) == {"auditID", "stage", "level", "rule", "omitStages"}
        assert record["rule"] is None or isinstance(record["rule"], int)
        assert record["omitStages"] == ["RequestReceived"]
    assert set(summary) >= {"events", "levels", "written", "rules", "neverMatched", "noisiest"}
    first = json.loads(log.read_text().splitlines()[0])
    assert events[0]["auditID"] == first["auditID"]
    assert events[0]["stage"] == first["stage"]


def test_compare_shows_the_difference(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(p) for p in corpus_files()]
    recommended, minimal = (str(p) for p in SHIPPED)
    _, events, summary = simulate_json(
        capsys, "--policy", recommended, "--compare", minimal, *files
    )
    compare = summary["compare"]
    assert compare["policy"] == minimal

    def outcome(level: str, stages: list[str], stage: str) -> str:
        return level if level != "None" and stage not in stages else "notWritten"

    changed = Counter(
        (
            outcome(e["level"], e["omitStages"], e["stage"]),
            outcome(e["compare"]["level"], e["compare"]["omitStages"], e["stage"]),
        )
        for e in events
    )
    differing = {k: n for k, n in changed.items() if k[0] != k[1]}
    assert compare["changed"] == sum(differing.values()) > 0
    assert {(t["from"], t["to"]): t["events"] for t in compare["transitions"]} == differing
    # minimal drops reads and bodies: fewer events written, and smaller.
    assert compare["delta"]["events"] < 0
    assert compare["delta"]["bytes"] < 0
    assert ("RequestResponse", "Metadata") in differing


def test_a_suggested_rule_silences_its_combination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log")
    policy = SHIPPED[0]
    _, _, summary = simulate_json(capsys, "--policy", str(policy), log)
    noisiest = [n for n in summary["noisiest"] if n["suggestion"]]
    top = noisiest[0]
    assert top["events"] == max(n["events"] for n in noisiest)
    doc = yaml.safe_load(policy.read_text())
    [suggested] = yaml.safe_load(top["suggestion"])
    assert suggested["level"] == "None"
    doc["rules"].insert(top["insertBefore"], suggested)
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    _, _, after = simulate_json(capsys, "--policy", str(changed), log)
    inserted = after["rules"][top["insertBefore"]]
    assert inserted["level"] == "None"
    assert inserted["matched"] >= top["events"]
    assert after["written"]["events"] == summary["written"]["events"] - top["events"]


def test_a_failed_authentication_has_no_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": "5b7c6f1e-2a7e-4a8e-9d7e-0c1b2a3d4e5f",
        "stage": "ResponseStarted",
        "requestURI": "/api/v1/namespaces/kube-system/secrets",
        "verb": "list",
        "user": {},
        "sourceIPs": ["203.0.113.7"],
        "objectRef": {"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "status": "Failure", "code": 401},
        "requestReceivedTimestamp": "2024-05-01T08:00:00.000000Z",
        "stageTimestamp": "2024-05-01T08:00:00.000100Z",
    }
    log = tmp_path / "audit.log"
    log.write_bytes(orjson.dumps(event) + b"\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
        "- level: None\n  users: ['']\n"
        "- level: None\n  userGroups: [system:unauthenticated]\n"
        "- level: Metadata\n"
    )
    _, [record], summary = simulate_json(capsys, "--policy", str(policy), str(log))
    assert (record["level"], record["rule"]) == ("Metadata", 2)
    [noisy] = summary["noisiest"]
    assert noisy["user"] is None
    assert noisy["suggestion"] is None


def test_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    log = str(CORPORA / "audit2rbac-demo" / "demo.log")
    code, out, _ = run(capsys, "policy", "simulate", "--policy", str(SHIPPED[0]), log)
    assert code == 0
    lines = out.splitlines()
    assert sum(" -> " in line for line in lines) >= 757
    assert any("by rules[" in line for line in lines)
    for heading in ("Volume per rule:", "Noisiest (user, verb, resource)", "Suggested rules"):
        assert heading in out
    assert "Rules that never matched:" in out
    code, summary_only, _ = run(
        capsys, "policy", "simulate", "--summary-only", "--policy", str(SHIPPED[0]), log
    )
    assert summary_only.splitlines()[0].startswith(f"{SHIPPED[0]}: 9 rules; 757 events")


def test_a_policy_the_api_server_refuses_is_not_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n")
    code, out, err = run(
        capsys,
        "policy",
        "simulate",
        "--policy",
        str(policy),
        str(CORPORA / "audit2rbac-demo" / "demo.log"),
    )
    assert code == 2
    assert out == ""
    assert "0 rules" in err


def test_an_unreadable_log_is_reported_and_the_rest_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(CORPORA / "audit2rbac-demo" / "demo.log")
    code, out, err = run(
        capsys,
        "policy",
        "simulate",
        "--output",
        "json",
        "--policy",
        str(SHIPPED[1]),
        str(tmp_path / "missing.log"),
        log,
    )
    assert code == 2
    assert "missing.log" in err
    assert json.loads(out.splitlines()[-1])["summary"]["events"] == 757


# --- size estimates ------------------------------------------------------------


def falco_event(name: str) -> dict[str, Any]:
    [item] = Decoder().decode_document(
        (CORPORA / "falco-k8s-audit-trace-files" / name).read_bytes()
    )
    assert isinstance(item, AuditEvent)
    return item.obj


def test_size_estimates_drop_the_bodies_a_level_does_not_keep() -> None:
    obj = falco_event("create_configmap.json")
    assert obj["level"] == "RequestResponse"
    assert "requestObject" in obj and "responseObject" in obj
    full, unknown = estimate_size(obj, "RequestResponse", False)
    assert (full, unknown) == (len(orjson.dumps(obj)) + 1, False)
    request, _ = estimate_size(obj, "Request", False)
    metadata, _ = estimate_size(obj, "Metadata", False)
    without = {k: v for k, v in obj.items() if k not in ("requestObject", "responseObject")}
    assert metadata == len(orjson.dumps({**without, "level": "Metadata"})) + 1
    assert metadata < request < full
    assert estimate_size(obj, "None", False) == (0, False)


def test_size_estimates_say_when_bodies_are_missing() -> None:
    obj = json.loads((CORPORA / "audit2rbac-demo" / "demo.log").read_text().splitlines()[0])
    assert obj["level"] == "Metadata"
    assert estimate_size(obj, "RequestResponse", False)[1] is True
    assert estimate_size(obj, "Metadata", False)[1] is False


def test_omit_managed_fields_shrinks_the_bodies() -> None:
    managed = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {}}}]
    obj = {
        "level": "RequestResponse",
        "auditID": "x",
        "stage": "ResponseComplete",
        "verb": "update",
        "responseObject": {"metadata": {"name": "a", "managedFields": managed}, "data": {}},
        "requestObject": {"kind": "List", "items": [{"metadata": {"managedFields": managed}}]},
    }
    kept, _ = estimate_size(obj, "RequestResponse", False)
    omitted, _ = estimate_size(obj, "RequestResponse", True)
    assert kept == len(orjson.dumps(obj)) + 1
    stripped = {
        **obj,
        "responseObject": {"metadata": {"name": "a"}, "data": {}},
        "requestObject": {"kind": "List", "items": [{"metadata": {}}]},
    }
    assert omitted == len(orjson.dumps(stripped)) + 1
    assert obj["responseObject"]["metadata"]["managedFields"] == managed  # not modified


def test_suggestions_never_silence_secrets_or_writes(capsys: pytest.CaptureFixture[str]) -> None:
    """On this log the noisiest combinations under the recommended policy are
    an operator's get/update/delete of secrets: the linter and the policy
    keep those at Metadata, so no None rule may be suggested for them."""
    log = str(CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log")
    policy = next(p for p in SHIPPED if p.name == "recommended.yaml")
    _, _, summary = simulate_json(capsys, "--policy", str(policy), log)
    secrets = [n for n in summary["noisiest"] if n["resource"] == "secrets"]
    assert {n["verb"] for n in secrets} >= {"get", "update", "delete"}
    for n in summary["noisiest"]:
        suggestion = yaml.safe_load(n["suggestion"])[0] if n["suggestion"] else None
        if n["resource"] == "secrets" or n["verb"] not in ("get", "list", "watch"):
            assert suggestion is None or suggestion["level"] == "Metadata", n
            assert "None rule would" in n["note"]
    assert any(n["suggestion"] and "level: None" in n["suggestion"] for n in summary["noisiest"])


def test_secrets_logged_with_bodies_get_a_metadata_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n"
    )
    _, _, summary = simulate_json(capsys, "--policy", str(policy), "--top", "20", log)
    secrets = [n for n in summary["noisiest"] if n["resource"] == "secrets"]
    assert len(secrets) >= 3
    for n in secrets:
        assert yaml.safe_load(n["suggestion"])[0]["level"] == "Metadata"
