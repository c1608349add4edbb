"""EKS: CloudWatch Logs exports read by replay, the Firehose HTTP endpoint
delivery receiver, and the CloudWatch Logs pull against moto's server mode
(tests/integration/test_eks_cloudwatch.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import main
from tests.conftest import CORPORA

DEMO = CORPORA / "audit2rbac-demo" / "demo.log"
GROUP = "/aws/eks/demo/cluster"


def demo_lines() -> list[str]:
    return [line for line in DEMO.read_text().splitlines() if line.strip()]


def filter_log_events_output(lines: list[str]) -> dict[str, Any]:
    """What ``aws logs filter-log-events --log-group-name ...`` prints."""
    events = [
        {
            "logStreamName": f"kube-apiserver-audit-{i % 2:032x}",
            "timestamp": 1_700_000_000_000 + i,
            "message": line,
            "ingestionTime": 1_700_000_000_500 + i,
            "eventId": f"{37_000_000_000 + i:056d}",
        }
        for i, line in enumerate(lines)
    ]
    return {
        "events": events,
        "searchedLogStreams": [
            {"logStreamName": f"kube-apiserver-audit-{i:032x}", "searchedCompletely": True}
            for i in range(2)
        ],
    }


def subscription_payload(lines: list[str], stream: str = "kube-apiserver-audit-0") -> bytes:
    """A CloudWatch Logs subscription payload as delivered: gzip'd JSON."""
    doc = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": GROUP,
        "logStream": stream,
        "subscriptionFilters": ["kube-audit-exporter"],
        "logEvents": [
            {"id": f"{37_000_000_000 + i:056d}", "timestamp": 1_700_000_000_000 + i, "message": m}
            for i, m in enumerate(lines)
        ],
    }
    return gzip.compress(json.dumps(doc).encode())


CONTROL_MESSAGE = {
    "messageType": "CONTROL_MESSAGE",
    "owner": "CloudwatchLogs",
    "logGroup": "",
    "logStream": "",
    "subscriptionFilters": [],
    "logEvents": [
        {
            "id": "",
            "timestamp": 1_700_000_000_000,
            "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose.",
        }
    ],
}


def replay_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    status = main(["replay", "--output", "json", *args])
    return status, json.loads(capsys.readouterr().out)


# --- replay of CloudWatch Logs exports ----------------------------------------------


def test_replay_of_filter_log_events_output_matches_the_native_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "filter-log-events.json"
    export.write_text(json.dumps(filter_log_events_output(demo_lines()), indent=4))
    _, native = replay_json(capsys, str(DEMO))
    status, report = replay_json(capsys, str(export))
    assert status == 0
    assert report == native
    assert report["events"] == 757


def test_replay_of_gzipped_subscription_payloads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = demo_lines()
    first = tmp_path / "payload-1.gz"
    first.write_bytes(subscription_payload(lines[:400]))
    second = tmp_path / "payload-2.gz"
    second.write_bytes(subscription_payload(lines[400:], stream="kube-apiserver-audit-1"))
    control = tmp_path / "control.json"
    control.write_text(json.dumps(CONTROL_MESSAGE))
    _, native = replay_json(capsys, str(DEMO))
    status, report = replay_json(capsys, str(first), str(control), str(second))
    assert status == 0
    assert report.pop("files") == 3
    native.pop("files")
    assert report == native


def test_control_message_is_no_event_and_no_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    control = tmp_path / "control.json"
    control.write_text(json.dumps(CONTROL_MESSAGE))
    _, report = replay_json(capsys, str(control))
    assert report["events"] == 0
    assert sum(report["invalid"].values()) == 0


def test_bad_messages_in_an_export_are_refused_and_the_good_ones_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = demo_lines()[:10]
    doc = filter_log_events_output([*lines[:5], "I0101 not json", '{"kind": 3}', *lines[5:]])
    export = tmp_path / "mixed.json"
    export.write_text(json.dumps(doc))
    _, report = replay_json(capsys, str(export))
    assert report["events"] == 10
    assert sum(report["invalid"].values()) == 2


def test_unknown_message_type_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = dict(CONTROL_MESSAGE, messageType="SOMETHING_ELSE")
    export = tmp_path / "odd.json"
    export.write_text(json.dumps(doc))
    _, report = replay_json(capsys, str(export))
    assert report["events"] == 0
    assert report["invalid"] == {"invalid_value": 1}
