"""The monitoring mixin against real components.

One stack for the module: the exporter (webhook over mutual TLS, a log file,
Loki to an in-test receiver that decodes what Loki decodes, a real
Alertmanager), fed with the shared corpora and the simulator's traffic; a
real Prometheus scraping it every second and evaluating the generated
recording rules and alerts (every `for` overridden to 0s through the mixin's
config); a real Alertmanager delivering to a webhook receiver in the test.

- every PromQL expression of every panel, variable, recording rule and alert
  (template variables substituted as Grafana would) runs through the HTTP
  API: none fails, every panel query returns data, the core panels a value;
- every rule evaluates without error in Prometheus;
- the LogQL of the dashboards and the Loki rules names only labels and
  structured metadata the exporter really pushed;
- a planted event matching a critical default rule's example arrives at the
  webhook receiver once, as the exporter's own KubeAuditDetection<Rule>
  notification, and the mixin's fallback KubeAuditCriticalDetectionUndelivered
  stays quiet because the exporter delivered it;
- the panels that split a metric's resource label for their data links give
  Loki's resource and subresource (pods and exec for pods/exec).
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
import yaml

from exporter.detect.examples import complete_event
from exporter.detect.rules import Rule, load_rules
from tests.integration.conftest import (
    Process,
    exporter_cmd,
    free_port,
    need,
    poll,
    run_alertmanager,
)
from tests.loki_receiver import LokiReceiver
from tests.test_mixin import (
    RENAMED_METADATA,
    dashboards,
    load_generator,
    logql_expressions,
    logql_problems,
    panels_of,
    promql_expressions,
    rendered_config,
)
from tests.tlsutil import make_pki

JOB = "kube-audit-exporter"
# What Grafana puts in place of the variables for a 6-hour dashboard with
# every cluster and the one job selected.
SUBSTITUTIONS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "10m",
    "$cluster": ".*",
    "$job": f"({JOB})",
    "$quantile": "0.99",
}
# Panels that must show a value (finite, above zero) once the corpora are in.
# Among them the counts of events whose series their first event creates (a
# failed-open webhook, exec): the dashboards count those as the alerts do,
# so a one-off event shows.
CORE_PANELS = {
    "kube-audit-overview.json": [
        "Requests",
        "403 ratio",
        "Latency p99",
        "Auth failures",
        "Users seen",
        "Requests by verb",
        "Requests by resource (top 10)",
        "Requests by code",
        "Server errors and refusals",
        "Latency quantiles",
        "Latency by verb ($quantile)",
        "Latency by resource ($quantile, top 10)",
        "Time spent per phase of slow requests",
        "Phase duration p99",
        "Top users",
        "Requests by user kind",
    ],
    "kube-audit-security.json": [
        "Failed authentications (401)",
        "Refused by authorization (403)",
        "Warning detections",
        "Pod Security violations",
        "401 and 403 over time",
        "Refusals by user kind and resource (top 10)",
        "Top users answered 4xx",
        "Top source addresses of auth failures",
        "Rule matches by severity",
        "Rule matches by rule",
        "Sensitive operations by category",
        "Sensitive operations in detail",
        "RBAC changes",
        "Exec, attach and port-forward",
        "Failed-open webhook calls",
        "Pod Security violations by level",
    ],
    "kube-audit-exporter-health.json": [
        "Exporters up",
        "Version",
        "Events ingested",
        "Newest event age",
        "Loki sender up",
        "Events by source",
        "Refused inputs by reason",
        "Duplicate and future events",
        "Event lag",
        "Webhook answers by code",
        "Log file rotations and errors",
        "Entries",
        "Pushes by code",
        "Push duration",
        "Spool size",
        "Notifications sent",
    ],
}


# Panels that rightly show nothing in this stack: the managed sources (EKS,
# GKE, AKS), the OTLP output, --workers and the shared state (state.url) are
# not configured, no TLS handshake fails, and an exporter that just started
# has evicted no detection state.
EMPTY_HERE = {
    "kube-audit-exporter-health.json: Managed source answers and messages",
    "kube-audit-exporter-health.json: Managed source errors",
    "kube-audit-exporter-health.json: AKS archive checkpoint age",
    "kube-audit-exporter-health.json: Webhook TLS handshake failures",
    "kube-audit-exporter-health.json: OTLP entries",
    "kube-audit-exporter-health.json: OTLP pushes",
    "kube-audit-exporter-health.json: OTLP push duration and entry latency",
    "kube-audit-exporter-health.json: OTLP bytes pushed",
    "kube-audit-exporter-health.json: OTLP sender up by instance",
    "kube-audit-exporter-health.json: OTLP spool size",
    "kube-audit-exporter-health.json: OTLP spool entries",
    "kube-audit-exporter-health.json: OTLP oldest spool entry age",
    "kube-audit-exporter-health.json: OTLP spool full and damaged records",
    "kube-audit-exporter-health.json: Workers serving",
    "kube-audit-exporter-health.json: Worker restarts",
    "kube-audit-exporter-health.json: Shared state up by instance",
    "kube-audit-exporter-health.json: Shared state round trips",
    "kube-audit-exporter-health.json: Shared state failures and fallbacks",
}
# The fallback alert keeps its `for`: it gives the direct notification time.
KEEP_FOR = {"KubeAuditCriticalDetectionUndelivered"}


class AlertSink:
    """Alertmanager's webhook receiver: keeps every alert it is sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alerts: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink.lock:
                    sink.alerts.extend(json.loads(body)["alerts"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def named(self, alertname: str) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.alerts if a["labels"].get("alertname") == alertname]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    prometheus: str
    metrics: str
    webhook: str
    tls: dict[str, Any]
    loki: LokiReceiver
    sink: AlertSink
    exporter: Process
    prom_process: Process
    processes: list[Process] = field(default_factory=list)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        r = requests.get(f"{self.prometheus}/api/v1/query", params=params, timeout=10)
        assert r.status_code == 200, f"{expr}\n{r.text}"
        body = r.json()
        assert body["status"] == "success", f"{expr}\n{body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def post(self, items: list[dict[str, Any]]) -> None:
        body = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}
        r = requests.post(self.webhook, json=body, **self.tls)
        assert r.status_code == 200, r.text

    def rules_evaluated_after(self, t: float) -> list[dict[str, Any]] | None:
        """Every rule, once each has been evaluated after time ``t``."""
        r = requests.get(f"{self.prometheus}/api/v1/rules", timeout=10).json()
        rules = [rule for g in r["data"]["groups"] for rule in g["rules"]]
        for rule in rules:
            last = rule.get("lastEvaluation", "")
            if not last.startswith("20") or _epoch(last) <= t:
                return None
        return rules

    def scrape(self) -> str:
        return requests.get(self.metrics, timeout=5).text


def _epoch(rfc3339: str) -> float:
    """Prometheus's timestamps (nanoseconds, Z) as Unix time."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert m is not None, rfc3339
    base = datetime.fromisoformat(m.group(1) + m.group(3).replace("Z", "+00:00"))
    return base.timestamp() + float(m.group(2) or 0)


def events_of(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            obj = json.loads(line)
            obj.pop("kind", None)
            obj.pop("apiVersion", None)
            out.append(obj)
    return out


def falco_lines(directory: Path) -> list[bytes]:
    """The falco trace files as JSON lines, the malformed fal_01_003.json
    (which the exporter refuses) last."""
    lines = []
    for path in sorted(directory.glob("*.json"), key=lambda p: p.name == "fal_01_003.json"):
        text = path.read_text()
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        lines.extend(json.dumps(d, separators=(",", ":")).encode() + b"\n" for d in docs)
    assert len(lines) > 50, directory
    return lines


def critical_rule() -> Rule:
    """A default rule of severity critical that needs no settings."""
    candidates = [
        r
        for r in load_rules().rules
        if r.severity == "critical" and r.kind == "match" and not r.requirements()
    ]
    assert candidates, "no critical default rule without settings"
    return candidates[0]


def sample_count(metrics_text: str, name: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, corpora: Path, push_pb2: ModuleType
) -> Iterator[Stack]:
    prometheus = need("prometheus")
    tmp = tmp_path_factory.mktemp("mixin")
    pki = make_pki(tmp / "pki")
    loki = LokiReceiver(push_pb2)
    sink = AlertSink()
    processes: list[Process] = []

    def start(args: list[str], name: str) -> Process:
        p = Process(args, tmp / f"{name}.log")
        processes.append(p)
        return p

    try:
        # Alertmanager, delivering at once to the sink.
        (tmp / "alertmanager.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "sink",
                        "group_by": ["alertname", "rule"],
                        "group_wait": "1s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [{"name": "sink", "webhook_configs": [{"url": sink.url}]}],
                }
            )
        )
        am_url, _ = run_alertmanager(start, tmp / "alertmanager.yml", tmp / "am")

        # The exporter: webhook, log file, Loki, Alertmanager.
        web, hook = free_port(), free_port()
        audit_log = tmp / "audit.log"
        audit_log.write_bytes(b"")
        exporter = start(
            exporter_cmd(
                "run",
                "--cluster=mixin",
                f"--web.listen-address=127.0.0.1:{web}",
                f"--webhook.listen-address=127.0.0.1:{hook}",
                f"--webhook.tls-cert-file={pki.server.cert_file}",
                f"--webhook.tls-key-file={pki.server.key_file}",
                f"--webhook.client-ca-file={pki.ca.cert_file}",
                f"--logfile.path={audit_log}",
                f"--logfile.checkpoint-file={tmp / 'checkpoint.json'}",
                "--logfile.start-at=beginning",
                f"--loki.url={loki.url}",
                f"--spool.dir={tmp / 'spool'}",
                "--spool.fsync=never",
                f"--alertmanager.url={am_url}",
            ),
            "exporter",
        )
        metrics = f"http://127.0.0.1:{web}/metrics"
        poll(
            lambda: requests.get(f"http://127.0.0.1:{web}/readyz", timeout=2).ok,
            what="exporter ready",
            on_timeout=exporter.output,
        )

        # Prometheus with the generated rules, every `for` set to 0s.
        gen = load_generator()
        names = sorted(set(rendered_config()["alerts"]) - KEEP_FOR)
        override = (
            "{ _config+:: { alerts+: { "
            + ", ".join(f"{n}+: {{ 'for': '0s' }}" for n in names)
            + " } } }"
        )
        files = gen.outputs(override)
        rule_files = []
        for rel in ("prometheus/rules.yaml", "prometheus/alerts.yaml"):
            path = tmp / "rules" / rel.replace("/", "-")
            path.parent.mkdir(exist_ok=True)
            path.write_text(files[rel])
            rule_files.append(str(path))
        prom_port = free_port()
        (tmp / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": rule_files,
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [am_url.removeprefix("http://")]}]}
                        ]
                    },
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{web}"]}]}
                    ],
                }
            )
        )
        prom = start(
            [
                prometheus,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            "prometheus",
        )
        s = Stack(
            prometheus=f"http://127.0.0.1:{prom_port}",
            metrics=metrics,
            webhook=f"https://127.0.0.1:{hook}/audit",
            tls={
                "verify": str(pki.ca.cert_file),
                "cert": (str(pki.client.cert_file), str(pki.client.key_file)),
                "timeout": 60,
            },
            loki=loki,
            sink=sink,
            exporter=exporter,
            prom_process=prom,
            processes=processes,
        )
        poll(
            lambda: requests.get(f"{s.prometheus}/-/ready", timeout=2).ok,
            timeout=60,
            what="Prometheus ready",
            on_timeout=prom.output,
        )
        # Prometheus has seen the counters at zero before anything arrives,
        # so that increase() and rate() see the events arrive.
        rule_id = critical_rule().id
        poll(
            lambda: s.query(f'kube_audit_rule_matches_total{{job="{JOB}", rule="{rule_id}"}} == 0'),
            timeout=60,
            what="Prometheus to scrape the exporter",
            on_timeout=lambda: prom.output()[-3000:],
        )

        # The corpora, as the API server sends them (EventLists of 400), and
        # the falco traces through the log file, in two halves with a scrape
        # between them, so that series created by the first half grow in
        # the second and rate() sees them move; the log rotates in between.
        start_at = datetime.fromtimestamp(time.time() - 600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        simulated = tmp / "simulated.log"
        sim = start(
            [
                sys.executable,
                "-m",
                "exporter.cli",
                "simulate",
                "--events=6000",
                "--seed=7",
                f"--start={start_at}",
                f"--output={simulated}",
            ],
            "simulate",
        )
        assert sim.proc.wait(120) == 0, sim.output()
        sources = [
            events_of(corpora / "audit2rbac-demo" / "demo.log"),
            events_of(corpora / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"),
            events_of(simulated),
        ]
        falco = falco_lines(corpora / "falco-k8s-audit-trace-files")
        webhook_total = (
            f'sum(kube_audit_events_total{{job="{JOB}", source="webhook"}})'
            f' + sum(kube_audit_events_duplicate_total{{job="{JOB}", source="webhook"}})'
            f' + sum(kube_audit_events_invalid_total{{job="{JOB}", source="webhook"}})'
        )
        offset = f'kube_audit_logfile_offset_bytes{{job="{JOB}"}}'
        posted = 0
        for half in (0, 1):
            items = [e for events in sources for e in events[half::2]]
            for i in range(0, len(items), 400):
                s.post(items[i : i + 400])
            posted += len(items)
            lines = falco[: len(falco) // 2] if half == 0 else falco[len(falco) // 2 :]
            if half == 1:
                audit_log.rename(tmp / "audit-2024-05-01T10-00-00.000.log")
            audit_log.write_bytes(b"".join(lines))
            poll(
                lambda n=posted: (
                    s.query(f"{webhook_total} == {n}")
                    and s.query(f"{offset} == {audit_log.stat().st_size}")
                ),
                timeout=90,
                what=f"Prometheus to see half {half} of the events",
                on_timeout=lambda: exporter.output()[-3000:],
            )
        s.post(sources[0][:400])  # a retried batch: duplicates
        fed = time.time()
        # Several scrapes and rule evaluations after the last batch, so that
        # every new series has the samples rate() needs.
        poll(
            lambda: s.query(f'timestamp(up{{job="{JOB}"}}) > {fed + 3}'),
            timeout=60,
            what="Prometheus to scrape after the last batch",
        )
        poll(lambda: s.rules_evaluated_after(fed + 4), timeout=60, what="rule evaluations")
        yield s
    finally:
        for p in reversed(processes):
            p.stop()
        loki.close()
        sink.close()


def substitute(expr: str) -> str:
    for var, value in SUBSTITUTIONS.items():
        expr = expr.replace(var, value)
    # ($1, $2: label_replace's capture groups)
    assert not re.search(r"\$[A-Za-z_{]", expr), expr
    return expr


def label_values_selector(query: str) -> str:
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
    assert m is not None, query
    return m.group(1)


def test_every_promql_expression_runs_and_every_panel_has_data(stack: Stack) -> None:
    # Recording rules need a few evaluations over the new data.
    poll(
        lambda: stack.query(
            'verb_quantile:kube_audit_request_duration_seconds:histogram_quantile{verb="get"} > 0'
        ),
        timeout=60,
        what="recording rules over the corpora",
    )
    # Evaluate at a successful scrape: on a loaded machine a scrape can time
    # out (1 s), and Prometheus then marks every series of the target stale.
    [good] = poll(
        lambda: stack.query(f'timestamp(up{{job="{JOB}"}} == 1)'),
        timeout=60,
        what="a successful scrape",
    )
    at = float(good["value"][1])
    failures = []
    empty = []
    results: dict[str, list[dict[str, Any]]] = {}
    for where, expr in promql_expressions():
        query = expr
        if where.split(": ", 1)[1].startswith("variable "):
            query = label_values_selector(expr)
        query = substitute(query)
        try:
            result = stack.query(query, at=at)
        except AssertionError as e:
            failures.append(f"{where}: {e}")
            continue
        results.setdefault(where, []).extend(result)
        is_rule = where.startswith("prometheus/")
        if not result and not is_rule and where not in EMPTY_HERE:
            empty.append(f"{where}: {query}")
    assert not failures, "\n".join(failures)
    assert not empty, "panels without data:\n" + "\n".join(empty)

    no_value = []
    boards = dashboards()
    for board, titles in CORE_PANELS.items():
        known = {p["title"] for p in panels_of(boards[board])}
        for title in titles:
            assert title in known, f"{board}: no panel {title!r}"
            values = [float(sample["value"][1]) for sample in results.get(f"{board}: {title}", [])]
            if not any(math.isfinite(v) and v > 0 for v in values):
                no_value.append(f"{board}: {title}: {values}")
    assert not no_value, "core panels without a value:\n" + "\n".join(no_value)


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    rules = poll(lambda: stack.rules_evaluated_after(0), timeout=30, what="rule evaluations")
    config = rendered_config()
    enabled = {k for k, v in config["alerts"].items() if v["enabled"]}
    assert {r["name"] for r in rules if r["type"] == "alerting"} == enabled
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad


def test_queries_name_only_metrics_the_exporter_exposes(stack: Stack) -> None:
    exposed = set()
    for line in stack.scrape().splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exposed.add(name)
            if kind == "counter":
                exposed.add(name + "_total")
            if kind == "histogram":
                exposed.update(name + s for s in ("_bucket", "_sum", "_count"))
    used = set()
    for _, expr in promql_expressions():
        for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
            if name.startswith("kube_audit_") and ":" not in name:
                used.add(name)
    assert len(used) > 30
    # the managed sources (EKS, GKE, AKS), the shared state (state.url), the
    # OTLP output and the workers' supervisor are not configured in this stack
    managed = (
        "kube_audit_eks_",
        "kube_audit_gke_",
        "kube_audit_aks_",
        "kube_audit_state_",
        "kube_audit_otlp_",
        "kube_audit_worker",
    )
    assert {n for n in used - exposed if not n.startswith(managed)} == set()


def test_logql_names_only_labels_and_metadata_the_exporter_pushed(stack: Stack) -> None:
    events = sample_count(stack.scrape(), "kube_audit_events_total")
    poll(
        lambda: stack.loki.count() >= events,
        timeout=120,
        what=f"Loki to receive {events:.0f} entries",
    )
    with stack.loki.lock:
        received = list(stack.loki.received)
    labels = set().union(*(r.labels for r in received))
    metadata = {RENAMED_METADATA.get(k, k) for r in received for k in r.metadata}
    assert labels == {"service_name", "cluster", "verb", "writer"}
    assert {r.labels["service_name"] for r in received} == {"kube-audit"}
    assert {"rules", "rule_severity", "user", "source_ip", "subresource"} <= metadata
    service_name = rendered_config()["lokiServiceName"]
    problems = {
        where: p
        for where, expr in logql_expressions()
        if (p := logql_problems(expr, service_name, labels, metadata))
    }
    assert not problems


def test_planted_critical_event_pages_once_through_the_exporters_notification(
    stack: Stack,
) -> None:
    from exporter.detect.alerts import alertname

    rule = critical_rule()
    name = alertname(rule.id)
    assert name.startswith("KubeAuditDetection")
    assert not stack.sink.named(name)
    example = next(e for e in rule.examples if e.expect)
    planted = complete_event(example.events[-1].event, 1, time.time())
    planted["auditID"] = str(uuid.uuid4())
    planted.pop("kind")
    planted.pop("apiVersion")
    stack.post([planted])

    def delivered() -> list[dict[str, Any]]:
        return [a for a in stack.sink.named(name) if a["status"] == "firing"]

    alerts = poll(
        delivered,
        timeout=90,
        what=f"{name} at the webhook receiver",
        on_timeout=lambda: f"{stack.sink.alerts}\n{stack.exporter.output()[-3000:]}",
    )
    alert = alerts[0]
    assert alert["labels"]["rule"] == rule.id
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["cluster"] == "mixin"
    assert alert["annotations"]["audit_id"] == planted["auditID"]

    # The mixin's fallback sees the match and the delivery: it stays quiet.
    undelivered = next(
        r["expr"]
        for g in yaml.safe_load(load_generator().outputs()["prometheus/alerts.yaml"])["groups"]
        for r in g["rules"]
        if r["alert"] == "KubeAuditCriticalDetectionUndelivered"
    )
    matched = (
        f'sum(increase(kube_audit_rule_matches_total{{job="{JOB}", rule="{rule.id}"}}[15m])) > 0'
    )
    poll(lambda: stack.query(matched), timeout=60, what="the match in Prometheus")
    poll(
        lambda: stack.query(f'sum(kube_audit_alertmanager_alerts_sent_total{{job="{JOB}"}}) > 0'),
        timeout=60,
        what="the delivery in Prometheus",
    )
    assert stack.query(matched)
    assert [r for r in stack.query(undelivered) if r["metric"].get("rule") == rule.id] == []
    # and no mixin alert of that name reached Alertmanager
    assert not stack.sink.named("KubeAuditCriticalDetectionUndelivered")


def test_split_resource_labels_are_lokis_resource_and_subresource(stack: Stack) -> None:
    """The label_replace the dashboards wrap around resource panels, run by
    Prometheus on the corpora's series: pods/exec becomes pods and exec, a
    plain resource keeps no subresource."""
    from tests.test_mixin_links import split_regexes

    exprs = [e for w, e in promql_expressions() if "Requests by resource" in w and split_regexes(e)]
    assert exprs
    query = substitute(exprs[0]).replace("topk(10,", "topk(10000,")
    result = stack.query(query)
    pairs = {(r["metric"].get("resource", ""), r["metric"].get("subresource", "")) for r in result}
    assert ("pods", "") in pairs
    assert all("/" not in res for res, _ in pairs), pairs
    raw = stack.query(f'sum by (resource) (kube_audit_requests_total{{job="{JOB}"}})')
    labels = {r["metric"].get("resource", "") for r in raw}
    for res, sub in pairs:
        assert (f"{res}/{sub}" if sub else res) in labels, (res, sub)


def test_every_data_link_on_a_prometheus_panel_opens_events_loki_received(stack: Stack) -> None:
    """Each series a Prometheus panel with a data link really returns, its
    labels put into the link as Grafana would, opens the Explorer on events
    that the exporter pushed to Loki in this stack: the numbers and the
    events behind them agree on real data."""
    from tests.test_mixin_links import EXPLORER, Pushed, explorer_query, fill, links, select

    events = sample_count(stack.scrape(), "kube_audit_events_total")
    poll(lambda: stack.loki.count() >= events, timeout=120, what="Loki to receive every entry")
    with stack.loki.lock:
        received = list(stack.loki.received)
    entries = [
        Pushed(
            dict(r.labels),
            {RENAMED_METADATA.get(k, k): v for k, v in r.metadata.items()},
            r.line.decode("utf-8", "replace"),
            None,  # type: ignore[arg-type]
        )
        for r in received
    ]
    boards = dashboards()
    # an hour covers everything this stack sent, so counts over a window see it
    wide = {"$__interval": "1h", "$__range": "1h"}
    checked, failures = 0, []
    for link in links():
        if link.board == EXPLORER:
            continue
        panel = next(p for p in panels_of(boards[link.board]) if p["title"] == link.panel)
        fields = [
            m.group(1)
            for _, t in link.params
            if (m := re.fullmatch(r"\$\{__(?:field\.labels|data\.fields)\.(\w+)\}", t))
        ]
        if not fields:
            continue
        for target in panel["targets"]:
            if target["datasource"]["type"] != "prometheus":
                continue
            expr = target["expr"]
            for var, value in wide.items():
                expr = expr.replace(var, value)
            for series in stack.query(substitute(expr))[:20]:
                labels = series["metric"]
                row = {f: labels.get(f, "") for f in fields}
                if any(v in ("__other__", "other") for v in row.values()):
                    continue  # folded: the Explorer has the exact values instead
                if any(not row[f] for f in fields if f not in ("subresource", "namespace", "name")):
                    continue  # a series of the panel without that label (a total line)
                params = fill(link, row)
                checked += 1
                if not select(explorer_query(params), entries):
                    failures.append(f"{link}: {params} opens no event")
    assert checked >= 20, checked
    assert not failures, "\n".join(failures)
