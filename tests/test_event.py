from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from exporter.event import (
    AuditEvent,
    Decoder,
    InvalidEvent,
    classify_user,
    code_class,
    parse_time,
)
from tests.conftest import CORPORA


def ev(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": "a-1",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/default/pods",
        "verb": "list",
        "user": {"username": "alice", "groups": ["system:authenticated"]},
        "sourceIPs": ["203.0.113.9", "10.0.0.1"],
        "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2024-05-01T10:00:00.100000Z",
        "stageTimestamp": "2024-05-01T10:00:00.350000Z",
    }
    base.update(over)
    return base


def line(obj: Any) -> bytes:
    return orjson.dumps(obj)


def test_v1_event_fields() -> None:
    e = Decoder().decode_line(line(ev()) + b"\n")
    assert (e.audit_id, e.stage, e.verb, e.code) == ("a-1", "ResponseComplete", "list", 200)
    assert e.resource_label == "pods" and e.namespace == "default"
    assert e.user_kind == "human"
    # Only the last sourceIP is the peer the API server saw.
    assert e.source_ip == "10.0.0.1"
    assert e.stage_ts - e.received_ts == pytest.approx(0.25)
    assert e.raw == line(ev())  # newline stripped, bytes otherwise untouched


def test_v1beta1_backfills_timestamps_from_the_real_corpus() -> None:
    first = (CORPORA / "audit2rbac-demo" / "demo.log").read_bytes().split(b"\n", 1)[0]
    e = Decoder().decode_line(first)
    assert "stageTimestamp" not in e.obj  # the object is not rewritten
    assert e.received_ts == parse_time("2017-09-11T19:55:05Z")
    assert e.stage_ts == parse_time("2017-09-11T19:55:05Z")
    assert e.impersonated_user == "bob"


def test_eventlist_items_without_kind_as_the_webhook_sends_them() -> None:
    items = [ev(auditID=f"id-{i}") for i in range(3)]
    for item in items:
        del item["kind"], item["apiVersion"]
    body = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})
    out = list(Decoder().decode_document(body))
    assert [type(x) for x in out] == [AuditEvent] * 3
    assert [x.audit_id for x in out if isinstance(x, AuditEvent)] == ["id-0", "id-1", "id-2"]


def test_document_forms_array_single_and_json_lines() -> None:
    d = Decoder()
    assert len(list(d.decode_document(orjson.dumps([ev(), ev(auditID="b")])))) == 2
    assert len(list(d.decode_document(json.dumps(ev(), indent=2).encode()))) == 1
    lines = line(ev()) + b"\n" + line(ev(auditID="b")) + b"\n\n"
    assert len(list(d.decode_document(lines))) == 2
    assert list(d.decode_document(b"  \n")) == []
    empty = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": None})
    assert list(d.decode_document(empty)) == []


def test_bad_line_in_the_middle_does_not_stop_the_good_ones() -> None:
    body = b"\n".join([line(ev(auditID="1")), b'{"auditID": "trunc', line(ev(auditID="3"))])
    out = list(Decoder().decode_document(body))
    assert [x.audit_id if isinstance(x, AuditEvent) else x.reason for x in out] == [
        "1",
        "invalid_json",
        "3",
    ]
    err = out[1]
    assert isinstance(err, InvalidEvent) and err.line == 2


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"kind": 0}, "wrong_type"),
        (["not", "an", "object"], "wrong_type"),
        (ev(apiVersion="audit.k8s.io/v1alpha1"), "unknown_api_version"),
        (ev(kind="Status"), "not_an_event"),
        ({"protoPayload": {}}, "not_an_event"),
        ({k: v for k, v in ev().items() if k != "auditID"}, "missing_field"),
        ({k: v for k, v in ev().items() if k != "stage"}, "missing_field"),
        ({k: v for k, v in ev().items() if k != "verb"}, "missing_field"),
        (
            {k: v for k, v in ev().items() if not k.endswith("Timestamp")},
            "missing_field",
        ),
        (ev(stage="Whenever"), "invalid_value"),
        (ev(stageTimestamp="yesterday"), "invalid_value"),
        (ev(stageTimestamp=12), "wrong_type"),
        # non-ASCII digits pass str.isdigit() but not int()
        (ev(stageTimestamp="2024-05-01T10:00:00.12345²Z"), "invalid_value"),
        (ev(stageTimestamp="2024-05-01T10:00:00.²Z"), "invalid_value"),
        (ev(user="alice"), "wrong_type"),
        (ev(sourceIPs="10.0.0.1"), "wrong_type"),
        (ev(responseStatus={"code": "200"}), "wrong_type"),
        (ev(objectRef=[]), "wrong_type"),
        (ev(annotations=["x"]), "wrong_type"),
        (ev(verb=7), "wrong_type"),
    ],
)
def test_invalid_events_are_refused_with_a_reason(obj: Any, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        Decoder().decode_line(line(obj))
    assert info.value.reason == reason


def test_size_limit_applies_to_lines_and_eventlist_items() -> None:
    d = Decoder(max_event_bytes=2048)
    big = ev(auditID="big", annotations={"x": "y" * 4000})
    with pytest.raises(InvalidEvent) as info:
        d.decode_line(line(big))
    assert info.value.reason == "too_large"
    body = orjson.dumps({"kind": "EventList", "items": [ev(auditID="ok"), big, ev(auditID="ok2")]})
    out = list(d.decode_document(body))
    assert [x.audit_id if isinstance(x, AuditEvent) else x.reason for x in out] == [
        "ok",
        "too_large",
        "ok2",
    ]


def test_aks_diagnostic_wrapper_is_unwrapped() -> None:
    inner = line(ev(auditID="aks"))
    wrapped = {"category": "kube-audit", "properties": {"log": inner.decode()}}
    e = Decoder().decode_line(line(wrapped))
    assert e.audit_id == "aks" and e.raw == inner


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2024-05-01T10:00:00Z", 1714557600.0),
        ("2024-05-01T10:00:00.5Z", 1714557600.5),
        ("2024-05-01T10:00:00.123456Z", 1714557600.123456),
        ("2024-05-01T12:00:00+02:00", 1714557600.0),
        ("2024-05-01T10:00:00.250000+00:00", 1714557600.25),
    ],
)
def test_parse_time(text: str, epoch: float) -> None:
    assert parse_time(text) == pytest.approx(epoch)


@pytest.mark.parametrize(
    ("username", "kind"),
    [
        ("", "unauthenticated"),
        ("system:anonymous", "anonymous"),
        ("system:serviceaccount:kube-system:default", "serviceaccount"),
        ("system:node:worker-1", "node"),
        ("system:kube-scheduler", "system"),
        ("alice@example.com", "human"),
    ],
)
def test_classify_user(username: str, kind: str) -> None:
    assert classify_user(username) == kind


def test_code_class() -> None:
    assert [code_class(c) for c in (101, 200, 201, 304, 403, 429, 500, 0)] == [
        "2xx", "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "unknown",
    ]  # fmt: skip
