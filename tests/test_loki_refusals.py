"""Loki's refusals, as real Loki setups answer them (the receiver emulates
each with Loki's own messages), and the sender's parallel pushes: every
event arrives, or is counted lost for a stated reason."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from exporter.event import AuditEvent, Decoder
from exporter.loki import LokiSettings, LokiSink
from exporter.loki.entry import EntryBuilder, decode_record
from tests.loki_corpus import unique_events
from tests.loki_receiver import LokiReceiver, wait_for
from tests.sinks import open_sink, sink_settings, value
from tests.tlsutil import PKI


def settings(tmp_path: Path, loki: LokiReceiver, spool: str = "spool", **kw: Any) -> LokiSettings:
    return sink_settings(tmp_path, loki.url, spool, **kw)


def at(events: list[AuditEvent], start: datetime, verb: str | None = None) -> list[AuditEvent]:
    """The events again with stageTimestamps one millisecond apart from
    ``start`` (and one verb, so one stream per writer, when given)."""
    decoder = Decoder()
    out = []
    for i, ev in enumerate(events):
        obj = dict(ev.obj)
        stamp = start + timedelta(milliseconds=i)
        obj["stageTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if verb is not None:
            obj["verb"] = verb
        out.append(decoder.decode_line(orjson.dumps(obj)))
    return out


# --- structured metadata -------------------------------------------------------


def test_loki_without_structured_metadata_gets_every_entry_resent_without_it(
    tmp_path: Path,
    loki: LokiReceiver,
    corpora: Path,
    sinks: list[LokiSink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    loki.allow_structured_metadata = False
    registry = CollectorRegistry()
    events = unique_events(corpora, 600)
    sink = open_sink(
        sinks,
        settings(tmp_path, loki, batch_bytes=32 << 10, parallelism=3),
        registry,
    )
    for i in range(0, len(events), 100):
        assert sink.submit(events[i : i + 100])
    assert sink.close(timeout=30)
    # Every event arrived once, without metadata; none counted as refused.
    lines = Counter(r.line for r in loki.received)
    assert lines == Counter(ev.to_bytes() for ev in events)
    assert all(not r.metadata for r in loki.received)
    assert value(registry, "kube_audit_loki_entries_sent_total") == 600
    assert (
        sum(
            value(registry, "kube_audit_loki_entries_rejected_total", reason=r)
            for r in ("structured_metadata", "other")
        )
        == 0
    )
    assert value(registry, "kube_audit_loki_structured_metadata") == 0
    resent = value(registry, "kube_audit_loki_entries_resent_without_metadata_total")
    assert 0 < resent < 600  # the first pushes only: later entries go without it
    # Said once, however many pushes were refused.
    said = [r for r in caplog.records if "refuses structured metadata" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_structured_metadata_switched_off_sends_none_and_draws_no_refusal(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    loki.allow_structured_metadata = False
    registry = CollectorRegistry()
    events = unique_events(corpora, 100)
    sink = open_sink(sinks, settings(tmp_path, loki, structured_metadata=False), registry)
    assert sink.submit(events)
    assert sink.close(timeout=10)
    assert set(loki.statuses()) == {204}
    assert loki.count() == 100
    assert value(registry, "kube_audit_loki_structured_metadata") == 0
    assert value(registry, "kube_audit_loki_entries_resent_without_metadata_total") == 0


def test_rule_severity_replaces_severity_in_structured_metadata() -> None:
    ev = Decoder().decode_line(
        b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1",'
        b'"stage":"ResponseComplete","verb":"delete","requestURI":"/api/v1/namespaces/x",'
        b'"user":{"username":"alice"},"responseStatus":{"code":200},'
        b'"requestReceivedTimestamp":"2024-01-01T00:00:00.000000Z",'
        b'"stageTimestamp":"2024-01-01T00:00:00.000001Z"}'
    )
    ev.rules = ("namespace-deleted",)
    ev.severity = "critical"
    builder = EntryBuilder(LokiSettings(url="http://x", spool_dir="-", writer="pod-a"))
    meta = dict(builder.metadata(ev))
    assert meta["rule_severity"] == "critical" and "severity" not in meta
    # The spool record (the fast path) says the same.
    assert dict(decode_record(builder.record(ev)).metadata) == meta
    assert 'writer="pod-a"' in builder.labels(ev)


# --- writers and "too far behind" ----------------------------------------------


def test_each_writer_has_its_own_streams_so_a_backfill_is_not_too_far_behind(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    # Loki's default max_chunk_age is 2h: entries an hour behind their
    # stream's newest are refused.
    loki.max_chunk_age = 7200.0
    now = datetime.now(UTC).replace(tzinfo=None)
    base = unique_events(corpora, 300)
    live = at(base[:150], now, verb="get")
    old = at(base[150:], now - timedelta(hours=3), verb="get")

    registry = CollectorRegistry()
    webhook = open_sink(sinks, settings(tmp_path, loki, "a", writer="pod-a"), registry)
    assert webhook.submit(live)
    assert webhook.close(timeout=10)
    registry2 = CollectorRegistry()
    replay = open_sink(sinks, settings(tmp_path, loki, "b", writer="replay-h-1"), registry2)
    assert replay.submit(old)
    assert replay.close(timeout=10)
    assert loki.count() == 300
    assert {r.labels["writer"] for r in loki.received} == {"pod-a", "replay-h-1"}

    # The same backfill into the live writer's stream: refused, and counted.
    registry3 = CollectorRegistry()
    again = at(base[150:], now - timedelta(hours=3, seconds=1), verb="get")
    shared = open_sink(sinks, settings(tmp_path, loki, "c", writer="pod-a"), registry3)
    assert shared.submit(again)
    assert shared.close(timeout=10)
    assert loki.count() == 300
    refused = value(registry3, "kube_audit_loki_entries_rejected_total", reason="too_far_behind")
    assert refused == 150
    assert value(registry3, "kube_audit_loki_entries_sent_total") == 0


# --- 260, 404 ------------------------------------------------------------------


def test_260_blocked_ingestion_is_counted_as_refused_not_as_sent(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    loki.blocked_until = "2030-01-01T00:00:00Z"
    registry = CollectorRegistry()
    sink = open_sink(sinks, settings(tmp_path, loki), registry)
    assert sink.submit(unique_events(corpora, 50))
    assert sink.close(timeout=10)
    assert set(loki.statuses()) == {260}
    assert value(registry, "kube_audit_loki_entries_sent_total") == 0
    reason = "blocked_ingestion"
    assert value(registry, "kube_audit_loki_entries_rejected_total", reason=reason) == 50
    assert value(registry, "kube_audit_loki_push_failures_total", reason="blocked") >= 1
    assert value(registry, "kube_audit_loki_requests_total", code="260") >= 1


def test_a_404_for_a_few_seconds_without_credential_files_is_retried_until_it_passes(
    tmp_path: Path,
    loki: LokiReceiver,
    corpora: Path,
    sinks: list[LokiSink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    loki.not_found_until = time.monotonic() + 2.0
    registry = CollectorRegistry()
    sink = open_sink(
        sinks,
        settings(tmp_path, loki, backoff_min=0.05, backoff_max=0.4),
        registry,
    )
    assert sink.submit(unique_events(corpora, 40))
    wait_for(lambda: sink.stopped_reason == "not_found")
    assert value(registry, "kube_audit_loki_sender_up") == 0
    wait_for(lambda: loki.count() == 40, timeout=60)
    wait_for(lambda: value(registry, "kube_audit_loki_sender_up") == 1)
    statuses = loki.statuses()
    assert statuses[0] == 404 and statuses[-1] == 204 and statuses.count(204) == 1
    assert value(registry, "kube_audit_loki_entries_sent_total") == 40
    said = [r for r in caplog.records if "REFUSED THE EXPORTER" in r.getMessage()]
    assert len(said) == 1  # once per stop, not per retry


# --- parallel pushes, deadline, proxies -------------------------------------------


def test_parallel_pushes_are_in_flight_together_and_keep_each_streams_order(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    events = unique_events(corpora, 2000)
    # The first two pushes are held: both in flight at once, from two shards.
    loki.script.extend(["hold", "hold"])
    sink = open_sink(
        sinks,
        settings(tmp_path, loki, batch_bytes=16 << 10, parallelism=4),
        registry,
    )
    for i in range(0, len(events), 200):
        assert sink.submit(events[i : i + 200])
    wait_for(lambda: loki.held == 2, what="two pushes in flight at once")
    # Nothing is acknowledged before Loki answered for it (Loki holds an
    # entry before it answers): the held pushes' entries are still spooled.
    left = sink.undelivered()
    assert left > 0 and 2000 - left <= loki.count()
    loki.release()
    assert sink.close(timeout=60)
    assert loki.keys() == Counter(r.key for r in loki.received)
    assert Counter(r.line for r in loki.received) == Counter(ev.to_bytes() for ev in events)
    # Each stream's entries arrived in spool order.
    order = {ev.to_bytes(): i for i, ev in enumerate(events)}
    per_stream: dict[str, list[int]] = defaultdict(list)
    for r in loki.received:
        per_stream[r.selector].append(order[r.line])
    assert len(per_stream) > 1
    for seq in per_stream.values():
        assert seq == sorted(seq)
    assert value(registry, "kube_audit_loki_entries_sent_total") == 2000
    assert value(registry, "kube_audit_spool_entries") == 0


def test_a_restart_after_parallel_pushes_resends_only_what_loki_had_not_answered_for(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    events = unique_events(corpora, 1500)
    # The first push stays in flight, with the first records of its streams;
    # the other shards go on meanwhile, with records from before and after.
    loki.script.extend(["hold"])
    s = settings(tmp_path, loki, batch_bytes=16 << 10, parallelism=4)
    first = open_sink(sinks, s, CollectorRegistry())
    for i in range(0, len(events), 250):
        assert first.submit(events[i : i + 250])
    wait_for(lambda: loki.held == 1 and loki.count() > 0, what="other shards' answers")
    # From now on Loki takes nothing; wait until the sender has acknowledged
    # everything Loki took, then stop it dead (as kill -9 would).
    loki.not_found_until = float("inf")
    wait_for(lambda: first.undelivered() + loki.count() == len(events), what="the acks")
    first.abandon()
    loki.release()  # the held push is answered 404: Loki never took it
    wait_for(lambda: 0 not in loki.statuses(), what="the held push's answer")
    took = loki.count()
    assert 0 < took < len(events)
    # Loki's answers for records behind one still in flight are on disk.
    acked = (Path(s.spool_dir) / "acked").read_bytes()
    assert int.from_bytes(acked[4:8], "little") > 0

    loki.not_found_until = None
    registry = CollectorRegistry()
    second = open_sink(sinks, settings(tmp_path, loki, parallelism=4), registry)
    assert second.undelivered() == len(events) - took
    assert second.close(timeout=60)
    # Every entry arrived exactly once over the two lifetimes.
    assert Counter(r.line for r in loki.received) == Counter(ev.to_bytes() for ev in events)
    assert value(registry, "kube_audit_loki_entries_sent_total") == len(events) - took


def test_bytes_sent_and_entry_latency_are_counted(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    loki.script.extend([500])
    sink = open_sink(sinks, settings(tmp_path, loki, batch_bytes=64 << 10), registry)
    assert sink.submit(unique_events(corpora, 500))
    assert sink.close(timeout=20)
    reqs = loki.requests
    assert value(registry, "kube_audit_loki_request_bytes_total") == sum(len(r.body) for r in reqs)
    ok = [r for r in reqs if r.status == 204]
    assert value(registry, "kube_audit_loki_sent_bytes_total") == sum(len(r.payload) for r in ok)
    assert value(registry, "kube_audit_loki_entry_latency_seconds_count") == 500
    assert value(registry, "kube_audit_loki_entry_latency_seconds_sum") >= 0


def test_an_answer_trickling_in_is_cut_at_the_request_deadline_and_sent_again(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    registry = CollectorRegistry()
    loki.script.extend(["trickle"])
    # No read ever waits for 30s: only the deadline ends the first push.
    sink = open_sink(sinks, settings(tmp_path, loki, timeout=30.0, deadline=0.5), registry)
    assert sink.submit(unique_events(corpora, 20))
    wait_for(lambda: loki.count() == 20, timeout=60)
    assert value(registry, "kube_audit_loki_push_failures_total", reason="timeout") == 1
    assert value(registry, "kube_audit_loki_requests_total", code="timeout") == 1
    assert sink.close(timeout=10)


def test_pushes_go_through_the_proxy_from_the_environment(
    tmp_path: Path,
    loki: LokiReceiver,
    corpora: Path,
    sinks: list[LokiSink],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # loki.invalid does not resolve: only the proxy (the receiver) can answer.
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, loki.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    registry = CollectorRegistry()
    sink = open_sink(
        sinks,
        settings(tmp_path, loki, url="http://loki.invalid:3100"),
        registry,
    )
    assert sink.submit(unique_events(corpora, 10))
    assert sink.close(timeout=10)
    assert loki.count() == 10


def test_no_proxy_sends_directly(
    tmp_path: Path,
    loki: LokiReceiver,
    corpora: Path,
    sinks: list[LokiSink],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A proxy that refuses every connection, and Loki's host exempted from it.
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    registry = CollectorRegistry()
    sink = open_sink(sinks, settings(tmp_path, loki), registry)
    assert sink.submit(unique_events(corpora, 10))
    assert sink.close(timeout=10)
    assert loki.count() == 10
    assert value(registry, "kube_audit_loki_push_failures_total", reason="connection") == 0


# --- the writer label's defaults -------------------------------------------------


def test_replay_writes_its_own_streams_and_run_defaults_to_the_host_name(
    tmp_path: Path, loki: LokiReceiver
) -> None:
    import socket
    import subprocess
    import sys

    from exporter.config import load, loki_settings
    from tests.conftest import CORPORA, ROOT

    demo = CORPORA / "audit2rbac-demo" / "demo.log"
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "replay", "--loki.url", loki.url, str(demo)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    writers = {r.labels.get("writer") for r in loki.received}
    assert len(writers) == 1
    writer = writers.pop()
    assert writer is not None and writer.startswith(f"replay-{socket.gethostname()}-")
    # run: the host name (the pod name in Kubernetes), unless set.
    cfg = load(None, environ={"KUBE_AUDIT_LOKI_URL": loki.url})
    assert loki_settings(cfg, spool_dir="x").writer == socket.gethostname()
    # The chart sets the pod or node name through the environment.
    cfg = load(None, environ={"KUBE_AUDIT_LOKI_URL": loki.url, "KUBE_AUDIT_LOKI_WRITER": "node-1"})
    assert loki_settings(cfg, spool_dir="x").writer == "node-1"


def test_drain_waits_out_a_passing_404_but_not_refused_credentials(
    tmp_path: Path, loki: LokiReceiver, corpora: Path, sinks: list[LokiSink]
) -> None:
    loki.not_found_until = time.monotonic() + 1.0
    sink = open_sink(
        sinks,
        settings(tmp_path, loki, backoff_min=0.05, backoff_max=0.2),
        CollectorRegistry(),
    )
    assert sink.submit(unique_events(corpora, 30))
    assert sink.drain(timeout=60, stall=30)  # replay ends only when Loki has them
    assert loki.count() == 30
    assert 404 in loki.statuses()

    # A refused token: replay gives up at once (exit 3), whatever the stall.
    loki.expected_auth = "Bearer right"
    token = tmp_path / "token"
    token.write_text("wrong\n")
    other = open_sink(
        sinks,
        settings(tmp_path, loki, "spool2", bearer_token_file=str(token)),
        CollectorRegistry(),
    )
    assert other.submit(unique_events(corpora, 5))
    assert not other.drain(timeout=60, stall=30)
    assert other.stopped_reason == "unauthorized"


def test_the_request_deadline_cuts_a_trickling_answer_over_tls_too(
    tmp_path: Path,
    tls_loki: tuple[LokiReceiver, PKI],
    corpora: Path,
    sinks: list[LokiSink],
) -> None:
    loki, pki = tls_loki
    loki.script.extend(["trickle"])
    registry = CollectorRegistry()
    s = settings(
        tmp_path,
        loki,
        timeout=30.0,
        deadline=0.5,
        ca_file=str(pki.ca.cert_file),
        cert_file=str(pki.client.cert_file),
        key_file=str(pki.client.key_file),
    )
    sink = open_sink(sinks, s, registry)
    assert sink.submit(unique_events(corpora, 20))
    wait_for(lambda: loki.count() == 20, timeout=60)
    assert value(registry, "kube_audit_loki_push_failures_total", reason="timeout") == 1
