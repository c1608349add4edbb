"""LokiSink end to end against the in-test Loki receiver."""

from __future__ import annotations

import base64
import copy
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from exporter.event import AuditEvent, Decoder, classify_user
from exporter.logs import LogfmtFormatter
from exporter.loki import LokiSettings, LokiSink
from exporter.loki import sink as sink_mod
from exporter.metrics import AuditMetrics
from tests.loki_corpus import (
    SECRET_KINDS,
    CorpusEvent,
    corpus_events,
    expected_ts_ns,
    unique_events,
)
from tests.loki_receiver import LokiReceiver, basic_auth, wait_for
from tests.sinks import CLUSTER, open_sink, sink_settings
from tests.tlsutil import PKI

FALCO = "falco-k8s-audit-trace-files"


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def settings(tmp_path: Path, loki: LokiReceiver, **kw: Any) -> LokiSettings:
    return sink_settings(tmp_path, loki.url, **kw)


def submit_all(sink: LokiSink, events: list[AuditEvent], batch: int = 400) -> None:
    for i in range(0, len(events), batch):
        assert sink.submit(events[i : i + batch])


def expected_metadata(obj: dict[str, Any]) -> dict[str, str]:
    user = (obj.get("user") or {}).get("username", "")
    ref = obj.get("objectRef") or {}
    code = (obj.get("responseStatus") or {}).get("code", 0)
    ips = obj.get("sourceIPs") or []
    level = "error" if code >= 500 else "warn" if code >= 400 else "info"
    md = {
        "user": user,
        "user_kind": classify_user(user),
        "namespace": ref.get("namespace", ""),
        "resource": ref.get("resource", ""),
        "subresource": ref.get("subresource", ""),
        "name": ref.get("name", ""),
        "code": str(code) if code else "",
        "audit_id": obj["auditID"],
        "source_ip": ips[-1] if ips else "",
        "stage": obj["stage"],
        "detected_level": level,
    }
    return {k: v for k, v in md.items() if v}


def formatted_logs(caplog: pytest.LogCaptureFixture) -> str:
    fmt = LogfmtFormatter()
    return "\n".join(fmt.format(r) for r in caplog.records)


# --- round trip ----------------------------------------------------------------


def test_every_corpus_event_arrives_exactly_as_sent(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    events = corpus_events(corpora)
    # Independent expectations, computed before the sink (and its redaction) sees them.
    expected: Counter[tuple[str, int, str]] = Counter()
    inputs: dict[str, CorpusEvent] = {}
    for c in events:
        obj = c.event.obj
        expected[(obj["verb"], expected_ts_ns(obj), obj["auditID"] + obj["stage"])] += 1
        inputs.setdefault(obj["auditID"] + obj["stage"] + str(expected_ts_ns(obj)), c)
    originals = {id(c.event): copy.deepcopy(c.event.obj) for c in events}
    sink = open_sink(sinks, settings(tmp_path, loki, batch_wait=0.2))
    submit_all(sink, [c.event for c in events])
    wait_for(lambda: loki.count() >= len(events), what="every corpus event")
    got = list(loki.received)
    assert len(got) == len(events)
    assert (
        Counter(
            (r.labels["verb"], r.ts_ns, r.metadata["audit_id"] + r.metadata["stage"]) for r in got
        )
        == expected
    )
    identical = 0
    by_key: dict[tuple[int, bytes], CorpusEvent] = {}
    for c in events:
        original = originals[id(c.event)]
        by_key[(expected_ts_ns(original), c.line or orjson.dumps(original))] = c
    for r in got:
        assert r.labels == {
            "service_name": "kube-audit",
            "cluster": CLUSTER,
            "verb": r.labels["verb"],
        }
        match = by_key.get((r.ts_ns, r.line))
        if match is None:
            # Only events with secrets in their bodies may differ from the input.
            src = inputs[r.metadata["audit_id"] + r.metadata["stage"] + str(r.ts_ns)]
            assert src.line is not None and any(k in src.line for k in SECRET_KINDS), src.where
            continue
        identical += 1
        assert r.metadata == expected_metadata(originals[id(match.event)]), match.where
    assert identical >= len(events) - 5
    assert loki.keys() == Counter(r.key for r in got)
    # One stream per verb (and the fixed labels), nothing unbounded.
    assert {r.selector for r in got} == {
        f'{{cluster="{CLUSTER}", service_name="kube-audit", verb="{v}"}}' for v, _, _ in expected
    }
    assert sink.close(timeout=5)


def test_json_lines_stay_byte_identical_in_json_format(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    events = [c for c in corpus_events(corpora / FALCO) if c.line is not None]
    sink = open_sink(sinks, settings(tmp_path, loki, format="json"))
    submit_all(sink, [c.event for c in events])
    wait_for(lambda: loki.count() == len(events))
    lines = Counter(r.line for r in loki.received)
    assert lines == Counter(c.line for c in events)
    assert {r.headers["content-encoding"] for r in loki.requests} == {"gzip"}


# --- secrets --------------------------------------------------------------------

PLANTED = "hunter2-planted-secret-value"
PLANTED_B64 = base64.b64encode(PLANTED.encode()).decode()
TOKEN = "eyJhbGciOiJSUzI1NiJ9.planted-service-account-token.c2lnbmF0dXJl"
REVIEW_TOKEN = "planted-token-under-review-0123456789"


def _secret(name: str) -> dict[str, Any]:
    applied = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"password": PLANTED_B64},
        "stringData": {"plain": PLANTED},
    }
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": orjson.dumps(applied).decode()
                + "\n"
            },
        },
        "data": {"password": PLANTED_B64},
        "stringData": {"plain": PLANTED},
        "type": "Opaque",
    }


def planted_events(corpora: Path) -> list[AuditEvent]:
    """Real Secret and token events from the corpora, raised to level
    RequestResponse with planted secret values in their bodies."""
    decoder = Decoder()
    out: list[AuditEvent] = []
    for name in (
        "create_secret.json",
        "create_kube_system_secret.json",
        "create_service_account_token_secret.json",
    ):
        obj = orjson.loads((corpora / FALCO / name).read_bytes())
        obj["level"] = "RequestResponse"
        obj["requestObject"] = _secret(obj["objectRef"]["name"])
        obj["responseObject"] = _secret(obj["objectRef"]["name"])
        out.append(decoder.decode_line(orjson.dumps(obj)))
    base = orjson.loads((corpora / FALCO / "create_secret.json").read_bytes())
    # list secrets: a SecretList whose items carry no kind.
    listed = copy.deepcopy(base)
    listed.update(verb="list", auditID="list-1", level="RequestResponse")
    listed["objectRef"] = {"resource": "secrets", "namespace": "default", "apiVersion": "v1"}
    items = [_secret("a"), _secret("b")]
    for item in items:
        del item["kind"], item["apiVersion"]
    listed["responseObject"] = {"kind": "SecretList", "apiVersion": "v1", "items": items}
    # patch a secret: a JSON patch and a merge patch.
    jpatch = copy.deepcopy(base)
    jpatch.update(verb="patch", auditID="patch-1", level="Request")
    jpatch["requestObject"] = [{"op": "replace", "path": "/data/password", "value": PLANTED_B64}]
    mpatch = copy.deepcopy(base)
    mpatch.update(verb="patch", auditID="patch-2", level="Request")
    mpatch["requestObject"] = {"stringData": {"plain": PLANTED}}
    # A TokenRequest (serviceaccounts/token) and a TokenReview.
    treq = copy.deepcopy(base)
    treq.update(auditID="token-1", level="RequestResponse")
    treq["objectRef"] = {
        "resource": "serviceaccounts",
        "subresource": "token",
        "namespace": "default",
        "name": "default",
        "apiVersion": "v1",
    }
    treq["requestObject"] = {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "spec": {"audiences": ["api"], "expirationSeconds": 3600},
    }
    treq["responseObject"] = {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "spec": {"audiences": ["api"]},
        "status": {"token": TOKEN, "expirationTimestamp": "2020-04-21T18:57:05Z"},
    }
    review = copy.deepcopy(base)
    review.update(auditID="review-1", level="RequestResponse")
    review["objectRef"] = {"resource": "tokenreviews", "apiGroup": "authentication.k8s.io"}
    review["requestObject"] = {
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "spec": {"token": REVIEW_TOKEN},
    }
    review["responseObject"] = {
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "spec": {"token": REVIEW_TOKEN},
        "status": {"authenticated": True, "user": {"username": "system:serviceaccount:a:b"}},
    }
    for obj in (listed, jpatch, mpatch, treq, review):
        out.append(decoder.decode_line(orjson.dumps(obj)))
    return out


def test_secret_values_reach_neither_loki_nor_the_logs(
    tmp_path: Path,
    loki: LokiReceiver,
    corpora: Path,
    sinks: list[LokiSink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rbac = corpora / "small-samples" / "alcideio-rbac-tool" / "testdata-01.json"
    real = [Decoder().decode_line(ln) for ln in rbac.read_bytes().splitlines()]
    real_secret = real[2].obj["requestObject"]["data"]["secret"]
    events = planted_events(corpora) + real
    # A 400 and a 500 on the way, so the error paths log too.
    loki.script.extend([500, 429])
    loki.refuse = lambda r: (
        "entry for stream '{}' has timestamp too old"
        if "list-1" in r.metadata.get("audit_id", "")
        else None
    )
    sink = open_sink(sinks, settings(tmp_path, loki))
    assert sink.submit(events)
    wait_for(lambda: loki.count() == len(events) - 1)
    assert sink.close(timeout=5)
    values = [PLANTED, PLANTED_B64, TOKEN, REVIEW_TOKEN, real_secret]
    pushed = list(loki.all_bytes())
    spooled = b"".join(p.read_bytes() for p in (tmp_path / "spool").glob("*"))
    logs = formatted_logs(caplog)
    for value in values:
        for blob in pushed:
            assert value.encode() not in blob
        assert value.encode() not in spooled
        assert value not in logs
    # The redacted lines still say what happened and what was removed.
    lines = {r.metadata["audit_id"]: orjson.loads(r.line) for r in loki.received}
    created = lines["55a81824-ab56-46c5-8b02-96336f5e78d7"]
    assert created["requestObject"]["data"] == {"password": "[REDACTED]"}
    assert created["annotations"]["kube-audit-exporter/redacted"] == "requestObject,responseObject"
    assert lines["token-1"]["responseObject"]["status"]["token"] == "[REDACTED]"
    assert lines["review-1"]["requestObject"]["spec"]["token"] == "[REDACTED]"
    assert lines["patch-1"]["requestObject"][0]["value"] == "[REDACTED]"


# --- delivery ------------------------------------------------------------------------


def test_429_and_500_storm_loses_and_duplicates_nothing(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    events = unique_events(corpora, 3000)
    loki.script.extend([429, 500, 429, 503, "reset", 500, 429])
    sink = open_sink(sinks, settings(tmp_path, loki, batch_bytes=64 << 10), metrics=metrics)
    submit_all(sink, events, batch=250)
    wait_for(lambda: loki.count() >= len(events))
    assert sink.close(timeout=5)
    assert set(loki.keys().values()) == {1}
    assert loki.audit_ids() == Counter(ev.audit_id for ev in events)
    value = registry.get_sample_value
    assert value("kube_audit_loki_retries_total") == 7
    assert value("kube_audit_loki_entries_sent_total") == len(events)
    assert value("kube_audit_loki_requests_total", {"code": "429"}) == 3
    assert value("kube_audit_loki_requests_total", {"code": "connection_error"}) == 1
    assert value("kube_audit_loki_push_failures_total", {"reason": "http_5xx"}) == 3
    assert value("kube_audit_spool_entries") == 0
    assert value("kube_audit_spool_bytes") == 0
    assert value("kube_audit_loki_push_duration_seconds_count") == len(loki.requests)


def test_loki_down_for_a_while_then_up_delivers_everything(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    events = unique_events(corpora, 500)
    loki.default = 503
    sink = open_sink(sinks, settings(tmp_path, loki))
    submit_all(sink, events, batch=50)
    wait_for(lambda: len(loki.requests) >= 5, what="several failed pushes")
    assert loki.count() == 0
    loki.default = None
    wait_for(lambda: loki.count() >= len(events))
    assert sink.close(timeout=5)
    assert loki.audit_ids() == Counter(ev.audit_id for ev in events)


def test_400_is_not_retried_and_refusals_are_counted(
    tmp_path: Path,
    loki: LokiReceiver,
    corpora: Path,
    sinks: list[LokiSink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    events = unique_events(corpora, 200)
    cutoff = sorted(expected_ts_ns(e.obj) for e in events)[50]

    def refuse(r: Any) -> str | None:
        if r.ts_ns < cutoff:
            return (
                f"entry for stream '{r.selector}' has timestamp too old: {r.ts_ns}, "
                f"oldest acceptable timestamp is: {cutoff}"
            )
        if r.line.count(b"a") > 10_000:
            return f"Max entry size '100' bytes exceeded for stream '{r.selector}'"
        return None

    loki.refuse = refuse
    sink = open_sink(
        sinks,
        settings(tmp_path, loki, batch_wait=3600.0),
        metrics=AuditMetrics(registry),
        clock=Clock(),
    )
    assert sink.submit(events)
    assert sink.close(timeout=5)
    assert loki.statuses() == [400]
    assert loki.count() == 150
    value = registry.get_sample_value
    reason = {"reason": "greater_than_max_sample_age"}
    assert value("kube_audit_loki_entries_rejected_total", reason) == 50
    assert value("kube_audit_loki_entries_sent_total") == 150
    assert value("kube_audit_loki_retries_total") == 0
    assert value("kube_audit_spool_entries") == 0
    assert "greater_than_max_sample_age=50" in formatted_logs(caplog)


def test_413_splits_the_batch_until_it_fits(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    events = unique_events(corpora, 400)
    huge = copy.deepcopy(events[0].obj)
    huge["auditID"] = "huge"
    huge["requestObject"] = {"kind": "ConfigMap", "data": {"k": "v" * 150_000}}
    events.append(Decoder().decode_line(orjson.dumps(huge)))
    loki.max_body = 40_000
    sink = open_sink(
        sinks,
        settings(tmp_path, loki, batch_wait=3600.0),
        metrics=AuditMetrics(registry),
        clock=Clock(),
    )
    assert sink.submit(events)
    assert sink.close(timeout=10)
    statuses = Counter(loki.statuses())
    assert statuses[413] >= 3 and statuses[204] >= 3
    ids = loki.audit_ids()
    assert ids == Counter(ev.audit_id for ev in events[:-1])
    value = registry.get_sample_value
    assert value("kube_audit_loki_entries_rejected_total", {"reason": "too_large"}) == 1
    assert value("kube_audit_loki_entries_sent_total") == 400


def test_401_stops_loudly_and_resumes_when_the_token_changes(
    tmp_path: Path,
    loki: LokiReceiver,
    corpora: Path,
    sinks: list[LokiSink],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sink_mod, "CREDENTIALS_POLL", 0.02)
    registry = CollectorRegistry()
    token = tmp_path / "token"
    token.write_text("expired-token-value\n")
    loki.expected_auth = "Bearer fresh-token-value"
    events = unique_events(corpora, 20)
    sink = open_sink(
        sinks,
        # A backoff far longer than the test: only the token's change resumes.
        settings(
            tmp_path, loki, bearer_token_file=str(token), backoff_min=600.0, backoff_max=600.0
        ),
        metrics=AuditMetrics(registry),
    )
    assert sink.submit(events)
    wait_for(lambda: sink.stopped_reason == "unauthorized")
    assert registry.get_sample_value("kube_audit_loki_sender_up") == 0
    assert registry.get_sample_value("kube_audit_spool_entries") == 20
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("LOKI REFUSED" in r.getMessage() for r in errors)
    token.write_text("fresh-token-value\n")
    wait_for(lambda: registry.get_sample_value("kube_audit_loki_sender_up") == 1)
    assert loki.count() == 20
    # One refused push, then one that worked: no retry storm while stopped.
    assert loki.statuses() == [401, 204]
    logs = formatted_logs(caplog)
    assert "expired-token-value" not in logs and "fresh-token-value" not in logs


def test_tenant_basic_auth_and_extra_headers_are_sent(
    tmp_path: Path,
    loki: LokiReceiver,
    corpora: Path,
    sinks: list[LokiSink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = tmp_path / "password"
    password.write_text("s3cret-basic-password\n")
    loki.expected_auth = basic_auth("exporter", "s3cret-basic-password")
    loki.expected_tenant = "team-a"
    s = settings(
        tmp_path,
        loki,
        tenant="team-a",
        basic_auth_user="exporter",
        basic_auth_password_file=str(password),
        headers={"X-Custom": "yes"},
    )
    sink = open_sink(sinks, s)
    assert sink.submit(unique_events(corpora, 5))
    wait_for(lambda: loki.count() == 5)
    headers = loki.requests[0].headers
    assert headers["x-scope-orgid"] == "team-a"
    assert headers["x-custom"] == "yes"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["user-agent"].startswith("kube-audit-exporter/")
    assert "s3cret-basic-password" not in formatted_logs(caplog)
    assert "s3cret-basic-password" not in repr(s)


def test_a_slow_loki_times_out_and_the_batch_is_sent_again(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    # The first push is answered only after the test has seen it time out.
    loki.script.append("hold")
    events = unique_events(corpora, 10)
    sink = open_sink(sinks, settings(tmp_path, loki, timeout=0.2), metrics=AuditMetrics(registry))
    assert sink.submit(events)
    wait_for(lambda: registry.get_sample_value("kube_audit_loki_entries_sent_total") == 10)
    pushes = len(loki.requests)
    assert loki.held == 1 and loki.statuses()[0] == 0  # still unanswered
    # Every push before the answered one timed out: the held one surely, and
    # on a loaded machine perhaps a resend as well, each counted once.
    timeouts = registry.get_sample_value("kube_audit_loki_requests_total", {"code": "timeout"})
    assert timeouts == pushes - 1 >= 1
    assert loki.statuses()[-1] == 204
    # The timed-out push lands when Loki finally answers it: Loki deduplicates
    # it by (stream, timestamp, line), which a resent entry repeats exactly.
    loki.release()
    wait_for(lambda: loki.count() == 10 * pushes)
    assert set(loki.keys().values()) == {pushes}


def test_close_waits_for_the_push_in_flight_and_then_nothing_runs(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    """A push still in flight when close() gives up waiting for the spool
    to drain is waited for (within the HTTP timeouts), so no pusher thread
    outlives the sink to touch its closed spool or log after it stopped;
    what was not acknowledged stays in the spool for the next start."""
    loki.script.append("hold")
    sink = open_sink(sinks, settings(tmp_path, loki, timeout=30))
    assert sink.submit(unique_events(corpora, 5))
    wait_for(lambda: loki.held == 1)

    # Loki answers the held push once close() has stopped waiting for the
    # spool to drain (the sink is stopping), whatever the machine's load
    def answer_when_stopping() -> None:
        sink._stop.wait(30)
        loki.release()

    threading.Thread(target=answer_when_stopping, daemon=True).start()
    assert not sink.close(timeout=0.1)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(f"{sink.name}-")]
    assert loki.statuses() == [204]


# --- the spool behind the sink -------------------------------------------------------


def test_unacknowledged_entries_are_sent_by_the_next_sink(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    events = unique_events(corpora, 300)
    s = settings(tmp_path, loki, batch_bytes=8 << 10)
    first = open_sink(sinks, s)
    submit_all(first, events[:100], batch=100)
    wait_for(lambda: loki.count() == 100)
    loki.default = 500
    submit_all(first, events[100:], batch=100)
    wait_for(lambda: len(loki.requests) > 3 + loki.statuses().count(204))
    # The process dies: no close, no flush; the sender just stops.
    first._stop.set()
    first.wake()
    first._thread.join(5)
    sinks.remove(first)
    loki.default = None
    second = open_sink(sinks, s)
    wait_for(lambda: {ev.audit_id for ev in events} <= set(loki.audit_ids()))
    assert second.close(timeout=5)
    # Entries acknowledged before the crash were not sent again.
    got = Counter((r.metadata["audit_id"], r.metadata["stage"]) for r in loki.received)
    assert all(got[(ev.audit_id, ev.stage)] == 1 for ev in events[:100])


CHILD = textwrap.dedent(
    """
    import sys
    from exporter.event import Decoder
    from exporter.loki import LokiSettings, LokiSink
    url, spool, path = sys.argv[1:4]
    sink = LokiSink(LokiSettings(url=url, spool_dir=spool, batch_bytes=16384, batch_wait=0.01))
    decoder = Decoder()
    batch = []
    done = 0
    with open(path, "rb") as f:
        for line in f:
            batch.append(decoder.decode_line(line))
            if len(batch) == 100:
                while not sink.admit(batch):
                    sink.wait_for_room(1.0)
                assert sink.submit(batch)
                done += len(batch)
                batch = []
                print(done, flush=True)
    sink.close(timeout=60)
    print("closed", flush=True)
    """
)


def test_kill_9_mid_stream_then_restart_loses_nothing(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    source = corpora / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"
    spool = str(tmp_path / "spool")
    # A few pushes are answered, then none until the kill: it surely lands
    # with entries acknowledged and entries in flight, however loaded the
    # machine is.
    loki.script.extend([204, 204, 204])
    loki.default = "hold"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, loki.url, spool, str(source)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert child.stdout is not None
    submitted = 0
    for line in child.stdout:
        submitted = int(line)
        if submitted >= 6000:
            break
    wait_for(lambda: loki.held > 0, timeout=60, what="the child's fourth push, held")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert 0 < loki.count() < submitted
    loki.default = None
    loki.release()  # the dead child's held pushes may land too, as in life
    decoder = Decoder()
    with open(source, "rb") as f:
        lines = [f.readline() for _ in range(submitted)]
    wanted = Counter(decoder.decode_line(ln).audit_id for ln in lines)
    sink = open_sink(sinks, LokiSettings(url=loki.url, spool_dir=spool, batch_wait=0.01))
    wait_for(lambda: all(loki.audit_ids()[k] >= n for k, n in wanted.items()), timeout=60)
    assert sink.close(timeout=10)


def test_full_spool_refuses_then_accepts_after_loki_catches_up(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    loki.default = 500
    events = unique_events(corpora, 2000)
    sink = open_sink(
        sinks,
        settings(tmp_path, loki, spool_max_bytes=1 << 16, spool_segment_bytes=8192),
        metrics=AuditMetrics(registry),
    )
    taken = 0
    while taken < len(events) and sink.admit(events[taken : taken + 20]):
        assert sink.submit(events[taken : taken + 20])
        taken += 20
    assert 0 < taken < len(events)
    assert not sink.admit(events[taken : taken + 20])
    assert registry.get_sample_value("kube_audit_spool_full_total") == 2
    assert registry.get_sample_value("kube_audit_spool_entries") == taken
    assert (registry.get_sample_value("kube_audit_spool_bytes") or 0) > 0
    loki.default = None
    assert sink.wait_for_room(timeout=20)
    assert sink.admit(events[taken : taken + 20])
    assert sink.submit(events[taken : taken + 20])
    wait_for(lambda: loki.count() == taken + 20)


# --- batching --------------------------------------------------------------------------


def test_batches_are_cut_at_the_byte_size(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    events = unique_events(corpora, 400)
    total = sum(len(ev.to_bytes()) for ev in events)
    sink = open_sink(
        sinks,
        settings(tmp_path, loki, batch_bytes=8192, batch_wait=3600.0),
        clock=Clock(),
    )
    assert sink.submit(events)
    # Time stands still: only the size can cut batches (the last, partial
    # one waits for close()).
    wait_for(lambda: loki.count() > 0 and loki.count() + sink.pending_entries == 400)
    assert all(len(r.payload) < 2 * 8192 for r in loki.requests)
    assert len(loki.requests) >= total // 8192 - 1
    assert sink.close(timeout=5)
    assert loki.count() == 400


def test_a_small_batch_waits_for_batch_wait(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    clock = Clock()
    sink = open_sink(sinks, settings(tmp_path, loki, batch_wait=5.0), clock=clock)
    assert sink.submit(unique_events(corpora, 3))
    wait_for(lambda: sink.pending_entries == 3, what="the sender holding the batch")
    sink.wake()
    wait_for(lambda: sink.pending_entries == 3)
    assert loki.count() == 0
    clock.t += 5.0
    sink.wake()
    wait_for(lambda: loki.count() == 3)
    assert len(loki.requests) == 1


def test_close_flushes_what_waits_and_reports_leftovers(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    events = unique_events(corpora, 50)
    sink = open_sink(sinks, settings(tmp_path, loki, batch_wait=3600.0), clock=Clock())
    assert sink.submit(events[:25])
    assert sink.close(timeout=5)
    assert loki.count() == 25
    loki.default = 500
    again = open_sink(sinks, settings(tmp_path, loki))
    assert again.submit(events[25:])
    assert not again.close(timeout=0.2)
    loki.default = None
    last = open_sink(sinks, settings(tmp_path, loki))
    wait_for(lambda: loki.count() == 50)
    assert last.close(timeout=5)


def test_oversized_event_arrives_shrunk_and_marked(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    obj = copy.deepcopy(unique_events(corpora, 1)[0].obj)
    obj["requestObject"] = {"kind": "ConfigMap", "data": {"k": "v" * 300_000}}
    ev = Decoder().decode_line(orjson.dumps(obj))
    sink = open_sink(sinks, settings(tmp_path, loki), metrics=AuditMetrics(registry))
    assert sink.submit([ev])
    wait_for(lambda: loki.count() == 1)
    line = loki.received[0].line
    assert len(line) <= 256_000
    out = orjson.loads(line)
    assert "requestObject" not in out and out["auditID"] == obj["auditID"]
    assert "kube-audit-exporter/truncated" in out["annotations"]
    assert registry.get_sample_value("kube_audit_loki_entries_shrunk_total") == 1


# --- TLS -------------------------------------------------------------------------------


def test_tls_with_a_private_ca_and_a_client_certificate(
    tmp_path: Path,
    tls_loki: tuple[LokiReceiver, PKI],
    corpora: Path,
    sinks: list[LokiSink],
) -> None:
    loki, pki = tls_loki
    sink = open_sink(
        sinks,
        settings(
            tmp_path,
            loki,
            ca_file=str(pki.ca.cert_file),
            cert_file=str(pki.client.cert_file),
            key_file=str(pki.client.key_file),
        ),
    )
    assert sink.submit(unique_events(corpora, 10))
    wait_for(lambda: loki.count() == 10)


def test_tls_verification_failure_is_retried_and_counted(
    tmp_path: Path,
    tls_loki: tuple[LokiReceiver, PKI],
    corpora: Path,
    sinks: list[LokiSink],
) -> None:
    loki, pki = tls_loki
    registry = CollectorRegistry()
    # No ca_file: the system trust store does not know the test CA.
    s = settings(
        tmp_path,
        loki,
        cert_file=str(pki.client.cert_file),
        key_file=str(pki.client.key_file),
    )
    sink = open_sink(sinks, s, metrics=AuditMetrics(registry))
    assert sink.submit(unique_events(corpora, 3))
    wait_for(
        lambda: (
            (
                registry.get_sample_value("kube_audit_loki_push_failures_total", {"reason": "tls"})
                or 0
            )
            >= 2
        )
    )
    assert loki.count() == 0
    assert registry.get_sample_value("kube_audit_spool_entries") == 3


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_insecure_skip_verify_accepts_an_unknown_ca(
    tmp_path: Path,
    tls_loki: tuple[LokiReceiver, PKI],
    corpora: Path,
    sinks: list[LokiSink],
) -> None:
    loki, pki = tls_loki
    s = settings(
        tmp_path,
        loki,
        insecure_skip_verify=True,
        cert_file=str(pki.client.cert_file),
        key_file=str(pki.client.key_file),
    )
    sink = open_sink(sinks, s)
    assert sink.submit(unique_events(corpora, 4))
    wait_for(lambda: loki.count() == 4)


def test_drain_sends_a_partial_batch_without_waiting_for_batch_wait(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    """replay ends with drain(): the last, partial batch goes out at once
    instead of after batch_wait (an hour here), and nothing is left behind."""
    events = [c.event for c in corpus_events(corpora / "audit2rbac-demo")][:50]
    sink = open_sink(sinks, settings(tmp_path, loki, batch_wait=3600.0))
    submit_all(sink, events)
    assert sink.drain(timeout=30.0)
    assert loki.count() == len(events)
    assert sink.pending_entries == 0


def test_drain_gives_up_when_loki_answers_nothing_for_the_stall_time(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    events = [c.event for c in corpus_events(corpora / "audit2rbac-demo")][:50]
    loki.default = 503
    sink = open_sink(sinks, settings(tmp_path, loki))
    submit_all(sink, events)
    assert sink.drain(stall=0.2) is False
    assert sink.stalled and sink.last_failure == "http_5xx"
    assert sink.undelivered() == 50
    loki.default = None  # Loki is back: the same sink delivers everything
    assert sink.drain(stall=30.0) is True
    assert not sink.stalled and sink.undelivered() == 0
    assert loki.count() == 50
