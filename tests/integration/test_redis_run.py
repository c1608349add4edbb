"""Two real ``kube-audit-exporter run`` processes behind one (imagined)
Service, each with its webhook, sharing one real redis-server: the API
server's batches land on either; a held-back attack split between them
fires once, a batch retried on the other one counts once, and Redis killed
and restarted mid-stream is survived, shown on /metrics, and recovered
from without a restart. The server wants a password, which the exporters'
logs never show."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from exporter.event import Decoder
from tests.integration.conftest import Process, exporter_cmd, free_port, poll
from tests.integration.test_end_to_end import scrape
from tests.integration.test_kill9 import total
from tests.integration.test_redis_state import ATTACK_RULES, DEMO_LOG, Replica, attack_objects
from tests.redis_server import RedisServer

BATCH = 100


PASSWORD = "pw-4d1f9a"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, password=PASSWORD)
    server.start()
    yield server
    server.kill()


class Exporter:
    def __init__(self, spawn: Callable[..., Process], name: str, state_url: str) -> None:
        self.web, self.hook = free_port(), free_port()
        self.proc = spawn(
            exporter_cmd(
                "run",
                "--web.listen-address", f"127.0.0.1:{self.web}",
                "--webhook.listen-address", f"127.0.0.1:{self.hook}",
                "--webhook.insecure",
                "--state.url", state_url,
                "--state.timeout", "200ms",
                "--detect.trusted-networks", "192.0.2.0/24",
                "--detect.trusted-networks", "10.8.0.0/16",
            ),
            name,
        )  # fmt: skip

    def ready(self) -> bool:
        r = requests.get(f"http://127.0.0.1:{self.web}/readyz", timeout=2)
        return r.status_code == 200

    def post(self, items: list[dict[str, Any]]) -> None:
        body = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}
        r = requests.post(f"http://127.0.0.1:{self.hook}/audit", json=body, timeout=10)
        assert r.status_code == 200, (r.status_code, r.text, self.proc.output()[-2000:])

    def metric(self, name: str, **labels: str) -> float:
        return total(scrape(self.web), name, **labels)


def objects(limit: int, spare: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The demo log's first ``limit`` events with the attack, in time order,
    and the ``spare`` events after them."""
    with gzip.open(DEMO_LOG) as f:
        lines = f.read().splitlines()
    out = [json.loads(ln) for ln in lines[:limit]] + attack_objects()
    more = [json.loads(ln) for ln in lines[limit : limit + spare]]
    for obj in out + more:
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
    return sorted(out, key=lambda o: o["stageTimestamp"]), more


def chunks(items: list[dict[str, Any]], size: int = BATCH) -> list[list[dict[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def test_two_run_processes_share_state_through_redis_and_survive_its_restart(
    redis_server: RedisServer, spawn: Callable[..., Process]
) -> None:
    a = Exporter(spawn, "a", redis_server.url)
    b = Exporter(spawn, "b", redis_server.url)
    for x in (a, b):
        poll(x.ready, 60, "the exporter to be ready", x.proc.output)

    # the attack spans the stream's first 360 s (9,000 events at 25/s)
    items, spare = objects(10_000, 3_000)
    first, down = chunks(items[:9_500]), chunks(items[9_500:])
    for i, part in enumerate(first):
        (a, b)[i % 2].post(part)
    b.post(first[0])  # A took it, its answer was lost: the API server retries on B

    # what one exporter alone finds in the same stream
    decoder = Decoder()
    one = Replica(None)
    for part in first:
        one.pipeline.process([decoder.decode_object(o) for o in part], "webhook")
    taken = sum(len(p) for p in first)
    assert (
        a.metric("kube_audit_events_total", source="webhook")
        + b.metric("kube_audit_events_total", source="webhook")
        == taken
    )
    assert b.metric("kube_audit_events_duplicate_total", source="webhook") == len(first[0])
    for rule_id in ATTACK_RULES:
        both = a.metric("kube_audit_rule_matches_total", rule=rule_id) + b.metric(
            "kube_audit_rule_matches_total", rule=rule_id
        )
        assert both == one.matches(rule_id) >= 1, rule_id

    redis_server.kill()
    for i, part in enumerate(down):
        (a, b)[i % 2].post(part)  # still answered 200: metrics go on
    for x in (a, b):
        assert x.metric("kube_audit_state_backend_up") == 0.0
        assert x.metric("kube_audit_state_operations_failed_total") >= 1.0
        assert x.proc.alive()

    redis_server.start()
    sent = iter(chunks(spare, 10))

    def recovered(x: Exporter) -> bool:
        x.post(next(sent))  # a call is what tries the store again
        return x.metric("kube_audit_state_backend_up") == 1.0

    for x in (a, b):
        poll(lambda x=x: recovered(x), 60, "the shared state to be back", x.proc.output)
    for x in (a, b):
        log = x.proc.output()
        assert log.count("shared state unreachable") == 1
        assert log.count("shared state reachable again") == 1
        # the URL is logged, the password never (start-up, errors, recovery)
        assert "***@127.0.0.1" in log
        assert PASSWORD not in log
        assert PASSWORD not in requests.get(f"http://127.0.0.1:{x.web}/metrics", timeout=5).text
