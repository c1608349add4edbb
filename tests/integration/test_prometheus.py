"""A real Prometheus scrapes the running exporter, fed by the webhook over
mutual TLS with real audit events; PromQL returns the expected counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import requests

from tests.conftest import CORPORA
from tests.integration.conftest import (
    client_tls,
    exporter_cmd,
    free_port,
    need,
    poll,
    webhook_flags,
)
from tests.tlsutil import make_pki


def test_prometheus_scrapes_webhook_fed_counts(tmp_path: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    prometheus = need("prometheus")
    pki = make_pki(tmp_path)
    web_port, hook_port, prom_port = free_port(), free_port(), free_port()
    exporter = spawn(
        exporter_cmd(
            "run",
            "--web.listen-address",
            f"127.0.0.1:{web_port}",
            *webhook_flags(pki, hook_port),
        ),
        "exporter",
    )
    poll(
        lambda: requests.get(f"http://127.0.0.1:{web_port}/readyz", timeout=2).ok,
        what=f"exporter ready\n{exporter.output()}",
    )

    # The real audit2rbac log, sent as the API server sends it: EventLists of
    # at most 400 items without kind/apiVersion.
    lines = (CORPORA / "audit2rbac-demo" / "demo.log").read_bytes().splitlines()
    items = []
    for line in lines:
        obj = json.loads(line)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        items.append(obj)
    expected: Counter[str] = Counter()
    for obj in items:
        if obj["stage"] == "ResponseComplete":
            expected[obj["verb"]] += 1
    session = requests.Session()
    tls = client_tls(pki)
    for i in range(0, len(items), 400):
        body = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items[i : i + 400]}
        r = session.post(f"https://127.0.0.1:{hook_port}/audit", json=body, timeout=30, **tls)
        assert r.status_code == 200, r.text

    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: kube-audit-exporter\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{web_port}']}}]\n"
    )
    prom = spawn(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        "prometheus",
    )
    api = f"http://127.0.0.1:{prom_port}/api/v1/query"

    def query(q: str) -> dict[str, float] | None:
        r = requests.get(api, params={"query": q}, timeout=5)
        if r.status_code != 200:
            return None
        result = r.json()["data"]["result"]
        return {s["metric"].get("verb", ""): float(s["value"][1]) for s in result} or None

    got = poll(
        lambda: query('sum by (verb) (kube_audit_requests_total{job="kube-audit-exporter"})'),
        timeout=60,
        what=f"Prometheus to scrape\n{prom.output()[-2000:]}",
    )
    assert got == {verb: float(n) for verb, n in expected.items()}
    total = poll(lambda: query('sum(kube_audit_events_total{source="webhook"})'))
    assert total == {"": float(len(items))}
    up = poll(lambda: query('up{job="kube-audit-exporter"}'))
    assert up == {"": 1.0}
    assert exporter.alive()
