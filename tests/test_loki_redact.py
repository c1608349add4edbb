"""Redaction: what is removed, what is kept, and byte identity otherwise."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.event import AuditEvent, Decoder
from exporter.loki.settings import LokiSettings
from exporter.redact import REDACTED, RedactionPathError, Redactor
from tests.loki_corpus import corpus_events


def event(**fields: Any) -> AuditEvent:
    obj: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": "id-1",
        "stage": "ResponseComplete",
        "verb": "get",
        "requestReceivedTimestamp": "2024-01-01T00:00:00.000001Z",
        "stageTimestamp": "2024-01-01T00:00:00.000002Z",
    }
    obj.update(fields)
    return Decoder().decode_line(orjson.dumps(obj))


def test_corpus_events_without_secrets_keep_their_bytes(corpora: Path) -> None:
    redactor = Redactor()
    changed = []
    for c in corpus_events(corpora):
        before = c.event.to_bytes()
        if redactor.redact(c.event):
            changed.append(c.where)
        else:
            assert c.event.to_bytes() == before
            if c.line is not None:
                assert c.event.raw == c.line
    # Only the RequestResponse secret creates of the small samples carry values.
    assert changed and all("alcideio-rbac-tool" in w for w in changed)


def test_secret_in_a_watch_event_and_a_table_row_is_found() -> None:
    secret = {"kind": "Secret", "apiVersion": "v1", "data": {"k": "c2VjcmV0"}}
    ev = event(
        objectRef={"resource": "secrets"},
        responseObject={
            "kind": "Table",
            "rows": [{"cells": ["a"], "object": copy.deepcopy(secret)}],
            "watch": {"type": "ADDED", "object": copy.deepcopy(secret)},
        },
    )
    assert Redactor().redact(ev)
    assert b"c2VjcmV0" not in ev.to_bytes()
    assert ev.raw is None


def test_configmaps_are_not_secrets_unless_configured() -> None:
    body = {"kind": "ConfigMap", "data": {"password": "visible"}}
    ev = event(objectRef={"resource": "configmaps"}, requestObject=body)
    raw = ev.to_bytes()
    assert not Redactor().redact(ev)
    assert ev.to_bytes() == raw
    r = Redactor({"configmaps": ["requestObject.data", "responseObject.items[*].data"]})
    assert r.redact(ev)
    assert ev.obj["requestObject"]["data"] == {"password": REDACTED}
    assert ev.obj["annotations"]["kube-audit-exporter/redacted"] == "requestObject"


def test_extra_paths_by_subresource_and_for_every_event() -> None:
    ev = event(
        objectRef={"resource": "pods", "subresource": "exec"},
        requestURI="/api/v1/namespaces/a/pods/p/exec?command=secret-arg",
        requestObject={"spec": {"containers": [{"env": [{"name": "A", "value": "v1"}]}]}},
    )
    r = Redactor(
        {
            "pods/exec": ["requestURI"],
            "*": ["requestObject.spec.containers[*].env[*].value"],
        }
    )
    assert r.redact(ev)
    assert ev.obj["requestURI"] == REDACTED
    assert ev.obj["requestObject"]["spec"]["containers"][0]["env"][0] == {
        "name": "A",
        "value": REDACTED,
    }


def test_redaction_is_idempotent() -> None:
    ev = event(
        objectRef={"resource": "secrets"},
        requestObject={"kind": "Secret", "data": {"a": "eA=="}, "stringData": {"b": "y"}},
    )
    r = Redactor()
    assert r.redact(ev)
    once = orjson.dumps(ev.obj)
    assert not r.redact(ev)
    assert orjson.dumps(ev.obj) == once


def test_unparseable_last_applied_annotation_is_replaced_whole() -> None:
    annotation = "kubectl.kubernetes.io/last-applied-configuration"
    ev = event(
        objectRef={"resource": "secrets"},
        requestObject={
            "kind": "Secret",
            "metadata": {"annotations": {annotation: '{"data": {"k": "dmFsdWU='}},
        },
    )
    assert Redactor().redact(ev)
    assert ev.obj["requestObject"]["metadata"]["annotations"][annotation] == REDACTED


@pytest.mark.parametrize("path", ["", ".a", "a.", "a..b", "a[0]", "a b"])
def test_bad_extra_paths_are_refused(path: str) -> None:
    with pytest.raises(RedactionPathError):
        Redactor({"configmaps": [path]})


def test_settings_report_every_problem_with_its_field() -> None:
    s = LokiSettings(
        url="loki:3100",
        batch_bytes=0,
        labels=("user",),
        headers={"Authorization": "x"},
        redact_paths={"configmaps": ["a..b"]},
        fsync="sometimes",
        basic_auth_user="u",
    )
    problems = "\n".join(s.problems())
    for field in (
        "url:",
        "batch_bytes:",
        "labels:",
        "headers:",
        "redact_paths.configmaps:",
        "fsync:",
        "basic_auth_password_file:",
        "spool_dir:",
    ):
        assert field in problems
    ok = LokiSettings(url="http://loki:3100", spool_dir="/tmp/x")
    assert ok.problems() == []
    assert ok.push_url == "http://loki:3100/loki/api/v1/push"
    assert LokiSettings(url="https://x/custom/push").push_url == "https://x/custom/push"
