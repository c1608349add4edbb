"""Detection settings from configuration, with located errors; alert links."""

from __future__ import annotations

import pytest

from exporter.detect import DetectionSettings, Detector, RuleError, load_rules
from exporter.detect.alerts import build_alert
from exporter.detect.engine import Match
from exporter.detect.located import load
from tests.detect_helpers import event


def test_settings_from_config() -> None:
    s = DetectionSettings.from_config(
        {
            "trusted_networks": ["10.20.0.0/16", "2001:db8::/32"],
            "pod_cidrs": "10.244.0.0/16",
            "critical_workloads": [
                {
                    "name": "db",
                    "namespaces": ["payments"],
                    "names": ["postgres-*"],
                    "allowed_principals": ["group:dba"],
                    "allowed_windows": ["Mon-Fri 08:00-18:00"],
                    "timezone": "Europe/Berlin",
                }
            ],
            "max_state_entries": 500,
            "alert_min_severity": "critical",
        },
        {"url": ["http://am-0:9093", "http://am-1:9093"], "resolve_after": "30m"},
        cluster="prod",
    )
    assert s.trusted_networks == ("10.20.0.0/16", "2001:db8::/32")
    assert s.pod_cidrs == ("10.244.0.0/16",)
    assert s.critical_workloads[0].allowed_windows[0].days == frozenset(range(5))
    assert s.alertmanager_urls == ("http://am-0:9093", "http://am-1:9093")
    assert s.alert_resolve_after == 1800.0 and s.cluster == "prod"
    assert s.max_state_entries == 500 and s.alert_min_severity == "critical"


def test_settings_errors_are_located() -> None:
    doc = load(
        """\
detect:
  trusted_networks: [10.0.0.0/8, 10.300.0.0/16]
  max_state_entries: 0
  alert_min_severity: loud
  surprise: 1
  critical_workloads:
    - name: db
      allowed_windows: ["Mon-Fry 08:00-18:00"]
      timezone: Mars/Olympus
alertmanager:
  url: [ftp://am]
  resolve_after: soon
"""
    )
    with pytest.raises(RuleError) as info:
        DetectionSettings.from_config(doc["detect"], doc["alertmanager"], source="cfg.yaml")
    problems = info.value.problems
    expected = [
        ("cfg.yaml:2:", "detect.trusted_networks[1]: '10.300.0.0/16' is not a network"),
        ("cfg.yaml:3:", "detect.max_state_entries: must be an integer >= 1"),
        ("cfg.yaml:4:", "detect.alert_min_severity: must be one of info, warning, critical"),
        ("cfg.yaml:5:", "detect.surprise: unknown key"),
        ("cfg.yaml:8:", "'fry' is not a day"),
        ("cfg.yaml:9:", "timezone: 'Mars/Olympus' is not a time zone"),
        ("cfg.yaml:7:", "name at least one of namespaces, resources or names"),
        ("cfg.yaml:11:", "'ftp://am' (item 0) is not an http(s) URL"),
        ("cfg.yaml:12:", "alertmanager.resolve_after: 'soon' is not a duration"),
    ]
    for where, what in expected:
        assert any(p.startswith(where) and what in p for p in problems), (where, what, problems)
    assert len(problems) == len(expected), problems


def test_alert_for_an_unauthenticated_burst_and_its_link() -> None:
    settings = DetectionSettings(
        alert_link_template="https://g.example/explore?q=%7Baudit_id%3D%22${audit_id}%22%7D"
        "&from=$from_ms&to=${to_ms}&c=${cluster}&u=${user}",
        cluster="lab one",
    )
    rule = load_rules(None).get("auth-failure-burst")
    assert rule is not None
    ev = event(
        at=30,
        verb="list",
        stage="ResponseStarted",
        user={},
        responseStatus={"code": 401},
        sourceIPs=["203.0.113.50"],
        requestURI="/api/v1/secrets?limit=500",
        auditID="a&b c",
    )
    alert = build_alert(Match(rule, ev, ("203.0.113.50",)), settings, now=0.0)
    assert "user" not in alert["labels"] and alert["labels"]["cluster"] == "lab one"
    ann = alert["annotations"]
    assert ann["summary"] == (
        "Burst of failed authentications from one address: an unauthenticated client did "
        "list on the URL /api/v1/secrets."
    )
    assert "20 matching requests for $source_ip=203.0.113.50 within 5m" in ann["description"]
    ms = int(ev.stage_ts * 1000)
    assert ann["link"] == (
        "https://g.example/explore?q=%7Baudit_id%3D%22a%26b%20c%22%7D"
        f"&from={ms - 300000}&to={ms + 300000}&c=lab%20one&u="
    )
    assert alert["endsAt"] == "2024-05-01T10:15:30.000Z"  # event time + 15m (resolve_after)


def test_min_severity_filters_notifications() -> None:
    sent: list[dict[str, object]] = []

    class Notifier:
        def send(self, alert: dict[str, object]) -> bool:
            sent.append(alert)
            return True

    det = Detector(
        load_rules(None), DetectionSettings(alert_min_severity="critical"), None, Notifier()
    )
    det(
        [
            event(
                verb="delete",
                user={"username": "alice"},
                objectRef={"resource": "secrets", "namespace": "x", "name": "y"},
            )
        ]
    )
    assert sent == []


def test_alert_end_follows_the_injected_clock_for_live_events() -> None:
    sent: list[dict[str, object]] = []

    class Notifier:
        def send(self, alert: dict[str, object]) -> bool:
            sent.append(alert)
            return True

    ev = event(
        verb="delete",
        user={"username": "alice"},
        objectRef={"resource": "secrets", "namespace": "x", "name": "y"},
    )
    wall = ev.stage_ts + 3600.0  # an hour after the event, e.g. replaying a log
    det = Detector(load_rules(None), DetectionSettings(), None, Notifier(), clock=lambda: wall)
    det([ev])
    (alert,) = sent
    assert alert["startsAt"] == "2024-05-01T10:00:00.000Z"
    assert alert["endsAt"] == "2024-05-01T11:15:00.000Z"  # wall clock + resolve_after
