"""Shared state without a server: the state section's checks, first_seen
kept across restarts in a file, the in-memory fallback, and a store that
cannot be reached (no server listens on its port)."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.cli import build_parser
from exporter.config import ConfigError, first_seen_path, load
from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.event import Decoder
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from exporter.state import DedupeKey, Observation, StateSettings, url_problem
from exporter.state.persist import FirstSeenFile
from exporter.state.redis_store import RedisStore
from tests.detect_helpers import event, rules_from

ROOT = Path(__file__).resolve().parents[1]

FIRST_SEEN = """
rules:
  - id: new-source
    title: t
    severity: warning
    description: d
    kind: first_seen
    match: {verb: create}
    group_by: [user.username]
    value: $source_ip
    ttl: 30d
"""


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["check-config", *argv])


def create(at: float, ip: str, user: str = "alice") -> object:
    return event(at, verb="create", user={"username": user}, sourceIPs=[ip],
                 objectRef={"resource": "configmaps", "namespace": "a", "name": "x"})  # fmt: skip


# --- configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://cache:6379", "must start with redis://, rediss:// or unix://"),
        ("redis://:6379/0", "needs a host"),
        ("redis://cache:6379/zero", "database number"),
        ("unix://", "socket path"),
        ("redis://cache:6379/0?password=hunter2", "user part"),
    ],
)
def test_a_bad_state_url_is_refused_at_start_without_quoting_it(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(parse("--state.url", url), {})
    (found,) = [p for p in e.value.problems if p.startswith("state.url")]
    assert problem in found
    assert "hunter2" not in found


@pytest.mark.parametrize(
    "url", ["redis://cache:6379/0", "rediss://u:p@cache.example:6380/2", "unix:///run/r.sock"]
)
def test_good_state_urls(url: str) -> None:
    assert url_problem(url) is None


def test_the_state_url_comes_from_the_environment_and_its_password_is_redacted() -> None:
    cfg = load(parse(), {"KUBE_AUDIT_STATE_URL": "redis://exporter:s3cret@cache:6379/1"})
    assert cfg.state.url == "redis://exporter:s3cret@cache:6379/1"
    shown = json.dumps(cfg.redacted())
    assert "s3cret" not in shown
    assert "redis://***@cache:6379/1" in shown


def test_state_options_that_contradict_each_other() -> None:
    with pytest.raises(ConfigError) as e:
        load(parse("--state.tls-ca-file", __file__), {})
    assert e.value.problems[0].startswith("state.tls_ca_file: set without state.url")
    with pytest.raises(ConfigError) as e:
        load(parse("--state.url", "redis://c:6379", "--state.tls-ca-file", __file__), {})
    assert e.value.problems[0].startswith("state.tls_ca_file: set without a rediss:// state.url")
    with pytest.raises(ConfigError) as e:
        load(parse("--state.url", "redis://c:6379", "--state.first-seen-file", "/x"), {})
    assert any(p.startswith("state.first_seen_file:") for p in e.value.problems)


def test_first_seen_file_defaults_beside_the_spool_or_the_checkpoint(tmp_path: Path) -> None:
    cfg = load(parse("--spool.dir", str(tmp_path / "spool")), {})
    assert first_seen_path(cfg) == str(tmp_path / "spool" / "first-seen.json")
    log = tmp_path / "audit.log"
    log.touch()
    cfg = load(
        parse("--logfile.path", str(log), "--logfile.checkpoint-file", str(tmp_path / "c.json")),
        {},
    )
    assert first_seen_path(cfg) == str(tmp_path / "first-seen.json")
    assert first_seen_path(load(parse(), {})) == ""
    assert first_seen_path(load(parse("--state.url", "redis://c:6379"), {})) == ""


# --- first_seen across restarts --------------------------------------------------


def test_first_seen_survives_a_restart_in_its_file(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, FIRST_SEEN)
    path = tmp_path / "first-seen.json"
    clock = [0.0]

    def detector() -> Detector:
        return Detector(
            rules,
            DetectionSettings(),
            first_seen_file=FirstSeenFile(str(path)),
            save_interval=60,
            monotonic=lambda: clock[0],
        )

    first = detector()
    ev = create(0, "198.51.100.7")
    first([ev])  # type: ignore[list-item]
    assert "new-source" in ev.rules  # type: ignore[attr-defined]
    assert not path.exists()  # not before save_interval
    clock[0] = 61
    first([create(10, "198.51.100.7")])  # type: ignore[list-item]
    assert path.exists()
    assert not list(tmp_path.glob(".first-seen.*"))  # no temporary file left

    again = detector()  # the process restarted
    ev = create(20, "198.51.100.7")
    again([ev])  # type: ignore[list-item]
    assert "new-source" not in ev.rules  # type: ignore[attr-defined]
    ev = create(30, "198.51.100.8")
    again([ev])  # type: ignore[list-item]
    assert "new-source" in ev.rules  # type: ignore[attr-defined]
    # the shutdown save keeps the newest sighting, even before the interval
    again.save_state()
    data = json.loads(path.read_text())
    pairs = {(tuple(k), v) for k, v, _ in data["rules"]["new-source"]["seen"]}
    assert pairs == {(("alice",), "198.51.100.7"), (("alice",), "198.51.100.8")}


def test_the_first_seen_file_is_bounded_by_max_state_entries(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, FIRST_SEEN)
    path = tmp_path / "first-seen.json"
    big = Detector(rules, DetectionSettings(), first_seen_file=FirstSeenFile(str(path)))
    big([create(i, f"198.51.100.{i}") for i in range(50)])  # type: ignore[misc]
    big.save_state()
    small = Detector(
        rules,
        DetectionSettings(max_state_entries=10),
        first_seen_file=FirstSeenFile(str(path)),
    )
    state = small.rules[0].state
    assert state is not None and state.entries == 10
    # the newest ten were kept: the 49th address is known, the first is new again
    ev = create(100, "198.51.100.49")
    small([ev])  # type: ignore[list-item]
    assert "new-source" not in ev.rules  # type: ignore[attr-defined]
    ev = create(101, "198.51.100.0")
    small([ev])  # type: ignore[list-item]
    assert "new-source" in ev.rules  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"version": 99, "rules": {}}', b'{"version": 1, "rules": 7}']
)
def test_an_unusable_first_seen_file_is_logged_and_the_rules_learn_afresh(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    rules = rules_from(tmp_path, FIRST_SEEN)
    path = tmp_path / "first-seen.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        det = Detector(rules, DetectionSettings(), first_seen_file=FirstSeenFile(str(path)))
    ev = create(0, "198.51.100.7")
    det([ev])  # type: ignore[list-item]
    assert "new-source" in ev.rules  # type: ignore[attr-defined]
    if content.startswith(b"{not"):
        assert any("first_seen state not restored" in m for m in caplog.messages)


def test_malformed_entries_in_the_file_are_skipped(tmp_path: Path) -> None:
    rules = rules_from(tmp_path, FIRST_SEEN)
    path = tmp_path / "first-seen.json"
    seen = [[["alice"], "198.51.100.7", 0], ["bad"], [["bob"], 5, 0], [["carol"], "x", "t"]]
    path.write_text(json.dumps({"version": 1, "rules": {"new-source": {"seen": seen}}}))
    det = Detector(rules, DetectionSettings(), first_seen_file=FirstSeenFile(str(path)))
    state = det.rules[0].state
    assert state is not None and state.entries == 1


# --- the fallback while the store is unreachable --------------------------------


class Unreachable:
    """A shared store that never answers."""

    def __init__(self) -> None:
        self.calls = 0

    def observe(self, observations: list[Observation]) -> list[bool] | None:
        self.calls += 1
        return None

    def seen(self, keys: list[DedupeKey]) -> set[DedupeKey] | None:
        return None

    def remember(self, keys: list[DedupeKey]) -> bool:
        return False

    def close(self) -> None:
        pass


def _matches(shared: Unreachable | None) -> dict[str, float]:
    d = json.loads(json.dumps({"trusted_networks": ["192.0.2.0/24", "10.8.0.0/16"]}))
    settings = DetectionSettings.from_config(d, {}, cluster="demo", source="t")
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    det = Detector(load_rules(None), settings, metrics, shared=shared)
    pipeline = Pipeline(metrics, processors=[det], state=shared)
    decoder = Decoder()
    with gzip.open(ROOT / "demo" / "audit.log.gz") as f:
        lines = f.read().splitlines()
    for i in range(0, len(lines), 300):
        pipeline.process([decoder.decode_line(ln) for ln in lines[i : i + 300]], "webhook")
    out = {}
    for m in registry.collect():
        for s in m.samples:
            if s.name == "kube_audit_rule_matches_total":
                out[s.labels["rule"]] = s.value
    return out


def test_while_the_store_is_unreachable_rules_run_on_local_memory_as_without_one() -> None:
    store = Unreachable()
    assert _matches(store) == _matches(None)
    assert store.calls > 0


def test_an_unreachable_server_degrades_visibly_and_never_logs_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    now = [0.0]
    settings = StateSettings(url=f"redis://u:pw-9f3k@127.0.0.1:{port}/0", timeout=0.2)
    store = RedisStore(settings, clock=lambda: now[0])
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    metrics.add_state(store.collect)
    with caplog.at_level(logging.INFO):
        assert not store.check()
        assert store.seen([("a", "ResponseComplete", 1.0)]) is None
        assert not store.remember([("a", "ResponseComplete", 1.0)])
        now[0] += 60
        assert store.seen([("a", "ResponseComplete", 1.0)]) is None
    assert registry.get_sample_value("kube_audit_state_backend_up") == 0.0
    failed = "kube_audit_state_operations_failed_total"
    assert registry.get_sample_value(failed, {"op": "connect"}) == 1.0
    # the second call came within the backoff: not tried, only counted
    assert registry.get_sample_value(failed, {"op": "dedupe_check"}) == 1.0
    assert registry.get_sample_value(failed, {"op": "dedupe_mark"}) == 0.0
    fallbacks = "kube_audit_state_fallbacks_total"
    assert registry.get_sample_value(fallbacks, {"op": "dedupe_mark"}) == 1.0
    lines = [r for r in caplog.records if r.name == "exporter.state.redis_store"]
    assert len(lines) == 1  # one line per transition, not one per call
    text = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    assert "pw-9f3k" not in text
    assert "***@127.0.0.1" in text
