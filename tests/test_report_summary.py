"""The replay summary's tables (exporter/report/summary.py) against a
reference written the plain way, one event after the other, over the
simulator's events cut into batches of several sizes: the same counts,
in the same first-seen order (most_common breaks ties by it), and the same
ten slowest requests, the earlier first among equals."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from exporter.event import AuditEvent, Decoder
from exporter.metrics import LONG_RUNNING_SUBRESOURCES, LONG_RUNNING_VERBS, counts_as_request
from exporter.report import Report
from exporter.simulate import Options, simulate_lines


def simulated(count: int, seed: int) -> list[AuditEvent]:
    decoder = Decoder()
    return [decoder.decode_line(line) for line in simulate_lines(Options(events=count, seed=seed))]


def reference(events: list[AuditEvent]) -> dict[str, Any]:
    by_request: Counter[tuple[str, str, str, int]] = Counter()
    users: Counter[str] = Counter()
    agents: Counter[str] = Counter()
    by_user: Counter[tuple[str, str]] = Counter()
    by_ip: Counter[tuple[str, str]] = Counter()
    timed: list[tuple[float, int, str]] = []
    for position, ev in enumerate(ev for ev in events if counts_as_request(ev)):
        by_request[(ev.verb, ev.resource, ev.subresource, ev.code)] += 1
        users[ev.username or "(unauthenticated)"] += 1
        if ev.user_agent:
            agents[ev.user_agent] += 1
        if ev.code in (401, 403):
            reason = "unauthenticated" if ev.code == 401 else "forbidden"
            by_user[(ev.username or "(unauthenticated)", reason)] += 1
            if ev.source_ip:
                by_ip[(ev.source_ip, reason)] += 1
        long_running = (
            ev.verb in LONG_RUNNING_VERBS
            or ev.subresource in LONG_RUNNING_SUBRESOURCES
            or (ev.subresource == "log" and "follow=true" in ev.request_uri)
        )
        if ev.stage == "ResponseComplete" and not long_running:
            timed.append((ev.stage_ts - ev.received_ts, position, ev.audit_id))
    slowest = [audit_id for _, _, audit_id in sorted(timed, key=lambda t: (-t[0], t[1]))[:10]]
    return {
        "by_request": list(by_request.items()),
        "users": list(users.items()),
        "agents": list(agents.items()),
        "by_user": list(by_user.items()),
        "by_ip": list(by_ip.items()),
        "slowest": slowest,
    }


def summarised(events: list[AuditEvent], batch: int) -> dict[str, Any]:
    report = Report()
    for start in range(0, len(events), batch):
        report(events[start : start + batch])
    ordered = sorted(report._slowest, key=lambda t: (-t[0], -t[1]))
    return {
        "by_request": list(report.by_request.items()),
        "users": list(report.users.items()),
        "agents": list(report.user_agents.items()),
        "by_user": list(report.auth_failures_by_user.items()),
        "by_ip": list(report.auth_failures_by_ip.items()),
        "slowest": [row["audit_id"] for _, _, row in ordered],
    }


@pytest.mark.parametrize("batch", [1, 7, 250, 100_000])
def test_tables_and_slowest_are_the_plain_ones(batch: int) -> None:
    events = simulated(6_000, seed=21)
    # ties: copies of the slowest requests with the same duration, later
    # in the input (fresh audit IDs): the earlier ones stay first
    timed = [ev for ev in events if ev.stage == "ResponseComplete" and ev.verb == "get"]
    slow = sorted(timed, key=lambda ev: ev.stage_ts - ev.received_ts)[-3:]
    decoder = Decoder()
    for n, ev in enumerate(slow):
        raw = ev.to_bytes().replace(ev.audit_id.encode(), f"tie-{n}".encode())
        events.append(decoder.decode_line(raw))
    expected = reference(events)
    assert len(expected["slowest"]) == 10 and expected["by_user"]
    assert summarised(events, batch) == expected


def test_merged_job_reports_keep_the_order() -> None:
    """replay --jobs merges reports of consecutive chunks (Report.merge):
    the ten slowest of the whole, the earlier first among equals."""
    events = simulated(3_000, seed=4)
    whole = summarised(events, 500)
    merged = Report()
    for start in range(0, len(events), 1_000):
        part = Report()
        for at in range(start, min(start + 1_000, len(events)), 500):
            part(events[at : at + 500])
        merged.merge(part)
    ordered = sorted(merged._slowest, key=lambda t: (-t[0], -t[1]))
    assert [row["audit_id"] for _, _, row in ordered] == whole["slowest"]
    assert list(merged.by_request.items()) == whole["by_request"]


@pytest.mark.parametrize("batch", [1, 3])
def test_fewer_than_ten_timed_requests_are_all_kept(batch: int) -> None:
    """Until ten are kept, every timed request gets in, however short."""
    events = simulated(200, seed=8)
    decoder = Decoder()
    base = next(ev for ev in events if ev.stage == "ResponseComplete" and ev.verb == "get")
    raw = base.to_bytes()
    # nine requests, each shorter than the one before
    shorter = []
    for n in range(9):
        line = raw.replace(base.audit_id.encode(), f"short-{n}".encode()).replace(
            base.stage_time.encode(), f"{base.stage_time[:20]}{900_000 - n * 1000:06d}Z".encode()
        )
        shorter.append(decoder.decode_line(line))
    expected = reference(shorter)
    assert len(expected["slowest"]) == 9
    assert summarised(shorter, batch) == expected
