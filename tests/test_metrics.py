from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.event import Decoder
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from tests.test_event import ev


class Harness:
    def __init__(self, **kw: Any) -> None:
        self.registry = CollectorRegistry()
        self.metrics = AuditMetrics(self.registry, **kw)
        self.pipeline = Pipeline(self.metrics, clock=lambda: 1714557700.0)
        self.decoder = Decoder()

    def feed(self, *objs: dict[str, Any], source: str = "replay") -> None:
        body = b"\n".join(orjson.dumps(o) for o in objs)
        self.pipeline.process(self.decoder.decode_document(body), source)

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


def test_a_request_is_counted_once_at_response_complete() -> None:
    h = Harness()
    h.feed(ev(stage="RequestReceived"), ev())
    assert h.value("kube_audit_requests_total", verb="list", resource="pods", code="200",
                   user_kind="human") == 1  # fmt: skip
    assert h.value("kube_audit_events_total", source="replay") == 2
    assert h.value("kube_audit_request_duration_seconds_count", verb="list", resource="pods") == 1
    assert (
        h.value(
            "kube_audit_request_duration_seconds_bucket", verb="list", resource="pods", le="0.25"
        )
        == 1
    )
    assert (
        h.value(
            "kube_audit_request_duration_seconds_bucket", verb="list", resource="pods", le="0.1"
        )
        == 0
    )


def test_failed_authentication_is_counted_once_at_response_started() -> None:
    h = Harness()
    unauth = ev(
        stage="ResponseStarted",
        user={},
        objectRef=None,
        requestURI="/api",
        verb="get",
        sourceIPs=["198.51.100.7"],
        responseStatus={"code": 401},
    )
    del unauth["objectRef"]
    h.feed(unauth)
    assert h.value("kube_audit_requests_total", verb="get", resource="", code="401",
                   user_kind="unauthenticated") == 1  # fmt: skip
    assert h.value("kube_audit_auth_failures_total", reason="unauthenticated", verb="get",
                   resource="", user_kind="unauthenticated") == 1  # fmt: skip
    assert h.value("kube_audit_source_auth_failures_total", source_ip="198.51.100.7",
                   reason="unauthenticated") == 1  # fmt: skip


def test_forbidden_counts_but_an_admission_denial_does_not() -> None:
    h = Harness()
    forbid = {"authorization.k8s.io/decision": "forbid"}
    allow = {"authorization.k8s.io/decision": "allow"}
    h.feed(
        ev(auditID="f", responseStatus={"code": 403}, annotations=forbid),
        ev(auditID="a", responseStatus={"code": 403}, annotations=allow),
    )
    assert h.value("kube_audit_auth_failures_total", reason="forbidden", verb="list",
                   resource="pods", user_kind="human") == 1  # fmt: skip
    assert h.value("kube_audit_requests_total", verb="list", resource="pods", code="403",
                   user_kind="human") == 2  # fmt: skip


def test_long_running_requests_are_not_in_the_latency_histogram() -> None:
    h = Harness()
    h.feed(
        ev(auditID="w", verb="watch", stage="ResponseStarted"),
        ev(auditID="w", verb="watch", stageTimestamp="2024-05-01T10:05:00Z"),
        ev(auditID="x", verb="create",
           objectRef={"resource": "pods", "subresource": "exec", "namespace": "db", "name": "pg-0"},
           responseStatus={"code": 101}),
        ev(auditID="l", verb="get", requestURI="/api/v1/namespaces/a/pods/p/log?follow=true",
           objectRef={"resource": "pods", "subresource": "log", "namespace": "a", "name": "p"}),
    )  # fmt: skip
    assert h.value("kube_audit_requests_total", verb="watch", resource="pods", code="200",
                   user_kind="human") == 1  # fmt: skip
    for verb, resource in (("watch", "pods"), ("create", "pods/exec"), ("get", "pods/log")):
        assert h.value("kube_audit_request_duration_seconds_count", verb=verb,
                       resource=resource) is None  # fmt: skip
    assert h.value("kube_audit_sensitive_operations_total", category="exec", verb="create",
                   resource="pods/exec", code_class="2xx", user_kind="human") == 1  # fmt: skip


def test_panic_is_counted() -> None:
    h = Harness()
    h.feed(ev(stage="Panic", responseStatus={"code": 500}))
    assert h.value("kube_audit_requests_total", verb="list", resource="pods", code="500",
                   user_kind="human") == 1  # fmt: skip


def test_latency_annotations_become_phase_observations() -> None:
    h = Harness()
    h.feed(ev(annotations={
        "apiserver.latency.k8s.io/etcd": "1.5s",
        "apiserver.latency.k8s.io/serialize-response-object": "250ms",
        "apiserver.latency.k8s.io/total": "1m2.5s",
        "apiserver.latency.k8s.io/something-new": "3µs",
        "apiserver.latency.k8s.io/garbage": "fast",
    }))  # fmt: skip
    assert h.value("kube_audit_slow_request_phase_seconds_sum", phase="etcd") == 1.5
    assert h.value(
        "kube_audit_slow_request_phase_seconds_sum", phase="serialize-response-object"
    ) == pytest.approx(0.25)
    assert h.value("kube_audit_slow_request_phase_seconds_sum", phase="total") == 62.5
    assert h.value("kube_audit_slow_request_phase_seconds_count", phase="other") == 1


def test_pod_security_and_failed_open_annotations() -> None:
    h = Harness()
    h.feed(
        ev(auditID="p1", verb="create", annotations={
            "pod-security.kubernetes.io/audit-violations":
                'would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false',
        }),
        ev(auditID="p2", verb="create", responseStatus={
            "code": 403,
            "message": 'pods "x" is forbidden: violates PodSecurity "baseline:v1.29": privileged',
        }, annotations={
            "authorization.k8s.io/decision": "allow",
            "pod-security.kubernetes.io/enforce-policy": "baseline:v1.29",
        }),
        ev(auditID="w1", annotations={
            "failed-open.validating.webhook.admission.k8s.io/round_0_index_1":
                '{"name":"policy.example.com","failurePolicy":"Ignore"}',
        }),
    )  # fmt: skip
    assert h.value("kube_audit_pod_security_violations_total", level="restricted") == 1
    assert h.value("kube_audit_pod_security_violations_total", level="baseline") == 1
    assert h.value("kube_audit_pod_security_violations_total", level="privileged") == 0
    assert h.value("kube_audit_webhook_failed_open_total", webhook="policy.example.com") == 1


def test_capped_families_fold_overflow_into_other() -> None:
    h = Harness(max_users=2, max_source_ips=1)
    for i in range(5):
        h.feed(ev(auditID=f"u{i}", user={"username": f"user-{i}"}, responseStatus={"code": 403},
                  sourceIPs=[f"192.0.2.{i}"]))  # fmt: skip
    assert h.value("kube_audit_user_requests_total", user="user-0", verb="list",
                   code_class="4xx") == 1  # fmt: skip
    assert h.value("kube_audit_user_requests_total", user="__other__", verb="list",
                   code_class="4xx") == 3  # fmt: skip
    assert h.value("kube_audit_source_auth_failures_total", source_ip="__other__",
                   reason="forbidden") == 4  # fmt: skip
    assert h.value("kube_audit_series_overflow_total",
                   metric="kube_audit_user_requests_total", label="user") == 3  # fmt: skip
    assert h.value("kube_audit_series_overflow_total",
                   metric="kube_audit_source_auth_failures_total",
                   label="source_ip") == 4  # fmt: skip


def test_duplicates_are_counted_not_measured() -> None:
    h = Harness()
    h.feed(ev(), source="webhook")
    h.feed(ev(), ev(auditID="new"), source="webhook")
    assert h.value("kube_audit_events_duplicate_total", source="webhook") == 1
    assert h.value("kube_audit_events_total", source="webhook") == 2
    # A reused auditID with a different stageTimestamp is a new request.
    h.feed(ev(stageTimestamp="2024-05-01T11:00:00Z"), source="webhook")
    assert h.value("kube_audit_events_total", source="webhook") == 3


def test_a_pipeline_that_observes_no_batches_still_counts_duplicates() -> None:
    """The report's pipeline (observe_batches off) counts none of the events'
    own families but still deduplicates and counts duplicates."""
    h = Harness()
    h.pipeline.observe_batches = False
    h.feed(ev(), source="webhook")
    h.feed(ev(), ev(auditID="new"), source="webhook")
    assert h.value("kube_audit_events_duplicate_total", source="webhook") == 1
    assert not h.value("kube_audit_events_total", source="webhook")
    h.pipeline.observe_batches = True
    h.feed(ev(auditID="third"), source="webhook")
    assert h.value("kube_audit_events_total", source="webhook") == 1


def test_a_pipeline_that_observes_no_batches_still_counts_future_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Replay without --metrics-out observes no batches: an event stamped
    beyond the skew is still counted and logged, one within it is not."""
    h = Harness(max_future_skew=300.0)
    h.pipeline.observe_batches = False
    # the clock is 1714557700 (10:01:40): 10:06:41 is 301 s ahead, 10:06:39 299 s
    h.feed(
        ev(auditID="far", stageTimestamp="2024-05-01T10:06:41Z"),
        ev(auditID="near", stageTimestamp="2024-05-01T10:06:39Z"),
        ev(auditID="past"),
    )
    assert h.value("kube_audit_events_future_total", source="replay") == 1
    (logged,) = [r for r in caplog.records if "stamped in the future" in r.getMessage()]
    assert logged.__dict__["audit_id"] == "far"
    h.feed(ev(auditID="near2", stageTimestamp="2024-05-01T10:06:39Z"))
    assert h.value("kube_audit_events_future_total", source="replay") == 1
    assert not h.value("kube_audit_events_total", source="replay")


def test_series_exist_at_zero_and_both_formats_render() -> None:
    h = Harness()
    assert h.value("kube_audit_events_invalid_total", source="webhook", reason="too_large") == 0
    assert h.value("kube_audit_events_total", source="logfile") == 0
    assert h.value("kube_audit_build_info", version=__import__("exporter").__version__) == 1
    h.feed(ev())
    assert h.value("kube_audit_last_event_timestamp_seconds", source="replay") == 1714557600.35
    assert h.value("kube_audit_event_lag_seconds_count", source="replay") == 1
    text = generate_latest(h.registry).decode()
    assert "# TYPE kube_audit_requests_total counter" in text
    om = generate_openmetrics(h.registry).decode()
    assert om.endswith("# EOF\n") and "kube_audit_requests_total{" in om


def test_dedupe_window_keeps_the_last_capacity_keys_and_is_bounded() -> None:
    from exporter.pipeline import Deduper

    cap = 3
    d = Deduper(capacity=cap)
    keys = [(f"id-{i}", "ResponseComplete", 1.0) for i in range(20)]
    for i, key in enumerate(keys):
        d.update([key])
        d.update({key})  # seen again: no second slot
        # the last `cap` keys are always remembered ...
        assert all(k in d for k in keys[max(0, i - cap + 1) : i + 1])
        # ... memory stays within two generations ...
        assert len(d) <= 2 * cap
        # ... and a key is forgotten once two generations have passed it
        if i >= 2 * cap:
            assert keys[i - 2 * cap] not in d
    assert d.isdisjoint({("id-0", "ResponseComplete", 1.0), ("new", "Panic", 2.0)})
    assert not d.isdisjoint({keys[-1]})


def test_anonymous_health_probes_are_not_sensitive() -> None:
    h = Harness()
    probe = ev(
        auditID="p", verb="get", requestURI="/readyz?verbose", user={"username": "system:anonymous"}
    )
    del probe["objectRef"]
    h.feed(probe, ev(auditID="a", user={"username": "system:anonymous"}))
    assert h.value("kube_audit_sensitive_operations_total", category="anonymous", verb="get",
                   resource="", code_class="2xx", user_kind="anonymous") is None  # fmt: skip
    assert h.value("kube_audit_sensitive_operations_total", category="anonymous", verb="list",
                   resource="pods", code_class="2xx", user_kind="anonymous") == 1  # fmt: skip


def test_histogram_observe_sorted_equals_one_observe_per_value() -> None:
    import random

    from exporter.metrics import LAG_BUCKETS, _Histogram

    rng = random.Random(7)
    values = [rng.choice([0.0, *LAG_BUCKETS, 1e6]) for _ in range(200)]
    values += [rng.uniform(0, 100_000) for _ in range(800)]
    one = _Histogram("a", "", ("source",), LAG_BUCKETS)
    many = _Histogram("b", "", ("source",), LAG_BUCKETS)
    for v in values:
        one.observe(("x",), v)
    many.observe_sorted(("x",), sorted(values[:500]))
    many.observe_sorted(("x",), sorted(values[500:]))
    many.observe_sorted(("x",), [])
    assert one.values[("x",)][:-1] == many.values[("x",)][:-1]
    assert one.values[("x",)][-1] == pytest.approx(many.values[("x",)][-1])


def test_lag_is_zero_for_events_stamped_ahead_of_our_clock() -> None:
    from exporter.event import Decoder

    m = AuditMetrics(CollectorRegistry(), sources=["replay"])
    d = Decoder()
    now = 1714557600.0
    events = [
        d.decode_object(ev(auditID=f"e{i}", stageTimestamp=stamp))
        for i, stamp in enumerate(
            ["2024-05-01T10:00:05.000000Z", "2024-05-01T09:59:58.000000Z", "2024-05-01T09:00:00Z"]
        )
    ]
    m.observe_batch(events, "replay", now)
    row = m.lag.values[("replay",)]
    # 0 (ahead), 2 s and 3600 s: buckets le=0.1, le=2.5 and le=3600
    assert row[0] == 1 and row[3] == 1 and row[10] == 1 and sum(row[:-1]) == 3
    assert row[-1] == pytest.approx(3602.0)
    assert m.last_event["replay"] == now + 5


def test_tallies_count_request_durations_as_one_request_at_a_time() -> None:
    """A tally's durations are applied per row key at once: rows made,
    buckets counted and sums added (in request order) exactly as with one
    request per tally, also when several keys share a row (folded
    resources; a resource's early and later requests)."""
    import random

    from exporter.event import AuditEvent
    from exporter.labels import LabelBounds
    from exporter.metrics import RequestTally

    rng = random.Random(3)
    decoder = Decoder()
    events: list[AuditEvent] = []
    for i in range(600):
        resource = rng.choice(["pods", "widgets", "gadgets", "gizmos"])
        took = rng.choice([0.1, 0.25, rng.uniform(0.0, 3.0), rng.uniform(0.0, 0.02)])
        obj = ev(
            auditID=f"a-{i}",
            verb=rng.choice(["get", "list", "frobnicate"]),
            objectRef={"resource": resource, "apiGroup": "example.com", "apiVersion": "v1"},
            responseStatus={"code": rng.choice([200, 200, 403, 404])},
            # some very long (a received stamp from long ago): sums of
            # those round, so their order shows in the result
            requestReceivedTimestamp=rng.choice(
                ["2024-05-01T10:00:00Z", f"1970-01-0{rng.randint(1, 9)}T00:00:{took:09.6f}Z"]
            ),
            stageTimestamp=f"2024-05-01T10:00:{took:09.6f}Z",
        )
        decoded = decoder.decode_line(orjson.dumps(obj))
        assert isinstance(decoded, AuditEvent)
        events.append(decoded)

    def exposition(tallies: list[list[AuditEvent]]) -> bytes:
        registry = CollectorRegistry()
        metrics = AuditMetrics(registry, bounds=LabelBounds(max_extra_resources=1))
        for part in tallies:
            tally = RequestTally()
            tally.add_requests(part)
            metrics.apply(tally)
        return generate_latest(registry)

    one_by_one = exposition([[e] for e in events])
    assert b'resource="__other__"' in one_by_one
    assert exposition([events]) == one_by_one
    assert exposition([events[:7], events[7:250], events[250:]]) == one_by_one
