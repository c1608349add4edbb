"""replay over every file of the real corpora: totals equal an independent count."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import main
from tests.conftest import CORPORA


def corpus_files() -> list[Path]:
    files = sorted(p for p in CORPORA.rglob("*") if p.is_file() and p.suffix != ".md")
    if not files:
        raise RuntimeError(f"no corpus files under {CORPORA} (set KUBE_AUDIT_CORPORA)")
    return files


def _objects(data: bytes) -> tuple[list[Any], Counter[str]]:
    """Independent reading: one JSON document, or else JSON lines."""
    bad: Counter[str] = Counter()
    try:
        doc = json.loads(data)
    except ValueError:
        objs = []
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                objs.append(json.loads(line))
            except ValueError:
                bad["invalid_json"] += 1
        return objs, bad
    if isinstance(doc, list):
        return doc, bad
    if isinstance(doc, dict) and doc.get("kind") == "EventList":
        return doc.get("items") or [], bad
    return [doc], bad


def _audit_event(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    props = obj.get("properties")
    if isinstance(props, dict) and "log" in props:
        inner = props["log"]
        return json.loads(inner) if isinstance(inner, str) else inner
    if isinstance(obj.get("log_s"), str):
        return json.loads(obj["log_s"])
    if "auditID" in obj and "stage" in obj:
        return obj
    return _gke_event(obj.get("protoPayload"), obj)


# gRPC codes of the GKE corpus entries, by google/rpc/code.proto's HTTP mapping
_GKE_HTTP = {0: 200, 5: 404, 7: 403, 16: 401}


def _gke_event(payload: Any, entry: dict[str, Any]) -> dict[str, Any] | None:
    """The few fields the count needs of a GKE Cloud Audit Log entry (a
    non-resource request: methodName io.k8s.<verb>, no objectRef)."""
    if not isinstance(payload, dict) or entry.get("resource", {}).get("type") != "k8s_cluster":
        return None
    method = payload["methodName"].split(".")
    assert len(method) == 3, "only the non-resource entry of elastic-integrations is counted here"
    return {
        "auditID": entry["operation"]["id"],
        "stage": "ResponseComplete",
        "stageTimestamp": entry["timestamp"],
        "verb": method[-1],
        "responseStatus": {"code": _GKE_HTTP[payload.get("status", {}).get("code", 0)]},
    }


def independent_count(path: Path) -> tuple[Counter[tuple[str, str, str]], Counter[str], int]:
    objs, bad = _objects(path.read_bytes())
    requests: Counter[tuple[str, str, str]] = Counter()
    seen: set[tuple[str, str, str]] = set()
    duplicates = 0
    for obj in objs:
        ev = _audit_event(obj)
        if ev is None:
            bad["wrong_type" if isinstance(obj, dict) and "kind" in obj else "not_an_event"] += 1
            continue
        ts = ev.get("stageTimestamp") or ev.get("metadata", {}).get("creationTimestamp")
        key = (ev["auditID"], ev["stage"], ts)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        code = (ev.get("responseStatus") or {}).get("code", 0)
        stage = ev["stage"]
        if stage in ("ResponseComplete", "Panic") or (stage == "ResponseStarted" and code == 401):
            ref = ev.get("objectRef") or {}
            resource = ref.get("resource", "")
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            requests[(ev["verb"], resource, str(code) if code else "unknown")] += 1
    return requests, bad, duplicates


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: str(p.relative_to(CORPORA)))
def test_replay_totals_equal_independent_count(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics_out = tmp_path / "metrics.prom"
    status = main(["replay", "--output", "json", "--metrics-out", str(metrics_out), str(path)])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    want, want_bad, want_dups = independent_count(path)

    rows = report["requests_by_verb_resource_code"]
    got = Counter({(r["verb"], r["resource"], r["code"]): r["count"] for r in rows})
    assert got == want
    assert report["invalid"] == dict(want_bad)
    assert report["duplicates"] == want_dups

    # The exposition agrees with the report.
    exposed: Counter[tuple[str, str, str]] = Counter()
    invalid: Counter[str] = Counter()
    for fam in text_string_to_metric_families(metrics_out.read_text()):
        for s in fam.samples:
            if s.name == "kube_audit_requests_total":
                exposed[(s.labels["verb"], s.labels["resource"], s.labels["code"])] += int(s.value)
            elif s.name == "kube_audit_events_invalid_total" and s.value:
                invalid[s.labels["reason"]] += int(s.value)
    assert exposed == want
    assert invalid == want_bad


def test_corpora_cover_the_interesting_cases() -> None:
    """Guard against a vacuous parametrisation: the corpora hold real requests,
    refusals of several kinds and duplicates."""
    total: Counter[tuple[str, str, str]] = Counter()
    bad: Counter[str] = Counter()
    for path in corpus_files():
        r, b, _ = independent_count(path)
        total.update(r)
        bad.update(b)
    assert sum(total.values()) > 10_000
    assert {"invalid_json", "wrong_type", "not_an_event"} <= set(bad)
