"""Exactly once from the audit log across kill -9.

A real ``kube-audit-exporter run`` tails a corpus-derived log of some 33,000
events, is killed with SIGKILL twice in the middle of the stream and
started again each time, until the log is done. Counters live in memory and
start from zero in each process, so "counted once" means: the sum of what
each lifetime counted equals the number of events; Loki (the in-test
receiver) got each entry once; the stateless rules matched as often as one
uninterrupted run makes them match.

A lifetime is killed only at a moment where its counters are known: after
it took everything written so far (the test writes the log in three parts,
as an API server writes in bursts), or, with Loki, while Loki is down and
the spool is full, so that the tailer holds a refused batch mid-stream and
retries it, and no push Loki took is still waiting for its answer (a kill
then would make the next lifetime send that batch again, as at least once
must). Each lifetime's counters are scraped from /metrics just before
its SIGKILL.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry

from exporter.detect import DetectionSettings, Detector, load_rules
from exporter.event import Decoder
from exporter.metrics import AuditMetrics
from exporter.pipeline import Pipeline
from exporter.redact import Redactor
from tests.conftest import CORPORA
from tests.integration.conftest import Process, exporter_cmd, free_port, poll
from tests.integration.test_end_to_end import scrape
from tests.loki_receiver import LokiReceiver

PERFSPEC = CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    """The perfspec events twice, the second time under other audit IDs."""
    lines = PERFSPEC.read_bytes().splitlines(keepends=True)
    again = [ln.replace(b'"auditID":"', b'"auditID":"again-', 1) for ln in lines]
    return lines + again


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series that have ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def counted(samples: Samples) -> float:
    """Lines the tailer handed on: events, duplicates and invalid lines."""
    return sum(
        total(samples, name, source="logfile")
        for name in (
            "kube_audit_events_total",
            "kube_audit_events_duplicate_total",
            "kube_audit_events_invalid_total",
        )
    )


def stateless_rule_matches(lines: list[bytes]) -> dict[str, float]:
    """rule_matches_total of the stateless rules over one uninterrupted run,
    summed over severities."""
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    detector = Detector(load_rules(None), DetectionSettings(), metrics)
    pipeline = Pipeline(metrics, processors=[Redactor(), detector])
    decoder = Decoder()
    for i in range(0, len(lines), 1000):
        pipeline.process([decoder.decode_line(ln) for ln in lines[i : i + 1000]], "logfile")
    # every severity: a rule's notify_once lowers its repeats to info, and
    # which repeat is the first of its window depends on the lifetimes
    matches: dict[str, float] = {r.id: 0.0 for r in detector.rules if r.state is None}
    for fam in registry.collect():
        for sample in fam.samples:
            if sample.name == "kube_audit_rule_matches_total":
                rule = sample.labels.get("rule", "")
                if rule in matches:
                    matches[rule] += sample.value
    return matches


class Lifetimes:
    """Starts the exporter on one log, again and again, and keeps what each
    lifetime counted (its last scrape before it died)."""

    def __init__(
        self,
        tmp_path: Path,
        spawn: Callable[..., Process],
        loki: LokiReceiver | None,
        parallelism: int = 1,
    ) -> None:
        self.tmp_path = tmp_path
        self.spawn = spawn
        self.loki = loki
        self.parallelism = parallelism
        self.log = tmp_path / "audit.log"
        self.log.write_bytes(b"")
        self.final: list[Samples] = []
        self.proc: Process | None = None
        self.web = 0

    def start(self) -> None:
        self.web = free_port()
        args = [
            "run",
            "--web.listen-address", f"127.0.0.1:{self.web}",
            "--logfile.path", str(self.log),
            "--logfile.checkpoint-file", str(self.tmp_path / "checkpoint.json"),
            "--logfile.poll-interval", "50ms",
            # Only what each batch saves counts: no checkpoint on the clock.
            "--logfile.checkpoint-interval", "1h",
        ]  # fmt: skip
        if self.loki is not None:
            args += [
                "--loki.url", self.loki.url,
                "--loki.batch-wait", "50ms",
                "--loki.backoff-min", "50ms",
                "--loki.backoff-max", "100ms",
                "--spool.dir", str(self.tmp_path / "spool"),
                "--spool.max-bytes", "2MiB",
                "--loki.parallelism", str(self.parallelism),
            ]  # fmt: skip
        self.proc = self.spawn(exporter_cmd(*args), f"exporter-{len(self.final) + 1}")
        poll(lambda: requests.get(self.url("readyz"), timeout=2).ok, what="ready")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web}/{path}"

    def scrape(self) -> Samples:
        return scrape(self.web)

    def output(self) -> str:
        return self.proc.output()[-3000:] if self.proc is not None else ""

    def caught_up(self) -> Samples:
        """The counters once the exporter took everything written so far."""
        size = self.log.stat().st_size

        def done() -> bool:
            return total(self.scrape(), "kube_audit_logfile_offset_bytes") == size

        poll(done, timeout=60, what="the tailer to catch up", on_timeout=self.output)
        # A scrape collects one family after another, not a snapshot: the
        # one that saw the offset at the end may have read the counters
        # before the last batches. One that starts after it is complete.
        return self.scrape()

    def blocked(self) -> Samples:
        """The counters once the tailer holds a batch the full spool refuses
        (Loki is down): nothing more is counted until Loki takes some."""
        last: list[Samples] = []

        def stuck() -> Samples | None:
            s = self.scrape()
            before = last[-1] if last else None
            last.append(s)
            if before is None or total(s, "kube_audit_spool_full_total") < 1:
                return None
            refusing = total(s, "kube_audit_spool_full_total") > total(
                before, "kube_audit_spool_full_total"
            )
            return s if refusing and counted(s) == counted(before) and self.no_push() else None

        seen = poll(stuck, timeout=60, what="a full spool", on_timeout=self.output)
        again = self.scrape()
        assert counted(again) == counted(seen)
        return again

    def no_push(self) -> bool:
        """No push Loki took is waiting for its answer or its ack: every
        request is answered, and the last two refused (the sender acks a
        batch before it starts the next), two per shard with several."""
        if self.loki is None:
            return True
        statuses = self.loki.statuses()
        taken = [i for i, status in enumerate(statuses) if status == 204]
        after = statuses[taken[-1] + 1 :] if taken else statuses
        return 0 not in statuses and after.count(503) >= 2 * self.parallelism

    def kill(self, samples: Samples) -> None:
        """SIGKILL, having counted ``samples`` (scraped while nothing moved)."""
        assert self.proc is not None
        self.proc.proc.send_signal(signal.SIGKILL)
        self.proc.proc.wait(20)
        self.final.append(samples)

    def finish(self, samples: Samples) -> None:
        assert self.proc is not None
        self.proc.proc.send_signal(signal.SIGTERM)
        assert self.proc.proc.wait(30) == 0, self.output()
        self.final.append(samples)

    def write(self, lines: list[bytes]) -> None:
        with open(self.log, "ab") as f:
            f.write(b"".join(lines))

    def sum(self, name: str) -> float:
        return sum(total(s, name, source="logfile") for s in self.final)


def assert_rules_matched_once(runs: Lifetimes, lines: list[bytes]) -> None:
    for rule, expected in stateless_rule_matches(lines).items():
        got = sum(total(s, "kube_audit_rule_matches_total", rule=rule) for s in runs.final)
        assert got == expected, rule


def test_kill9_without_loki_counts_every_event_once(
    tmp_path: Path, spawn: Callable[..., Process], corpus: list[bytes]
) -> None:
    runs = Lifetimes(tmp_path, spawn, loki=None)
    third = len(corpus) // 3
    runs.write(corpus[:third])
    runs.start()
    runs.kill(runs.caught_up())
    runs.write(corpus[third : 2 * third])
    runs.start()
    runs.kill(runs.caught_up())
    runs.write(corpus[2 * third :])
    runs.start()
    runs.finish(runs.caught_up())

    assert [counted(s) for s in runs.final] == [third, third, len(corpus) - 2 * third]
    assert runs.sum("kube_audit_events_total") == len(corpus)
    assert_rules_matched_once(runs, corpus)


@pytest.mark.parametrize("parallelism", [1, 4])
def test_kill9_with_loki_counts_and_sends_every_event_once(
    tmp_path: Path,
    spawn: Callable[..., Process],
    corpus: list[bytes],
    loki: LokiReceiver,
    parallelism: int,
) -> None:
    runs = Lifetimes(tmp_path, spawn, loki, parallelism)
    runs.write(corpus)  # the whole log is there: the tailer is busy throughout
    loki.default = 503  # Loki is down: the spool fills, then the tailer waits
    runs.start()
    first = runs.blocked()
    assert 0 < counted(first) < len(corpus)
    runs.kill(first)

    loki.default = None  # Loki is back; it goes down again partway
    runs.start()
    poll(lambda: loki.count() > counted(first) + 2000, timeout=60, what="Loki to take more")
    loki.default = 503
    second = runs.blocked()
    assert counted(first) + counted(second) < len(corpus)
    runs.kill(second)

    loki.default = None
    runs.start()
    poll(
        lambda: loki.count() >= len(corpus),
        timeout=90,
        what="Loki to hold every entry",
        on_timeout=runs.output,
    )
    third = runs.caught_up()
    poll(lambda: total(runs.scrape(), "kube_audit_spool_entries") == 0, what="an empty spool")
    runs.finish(third)

    assert runs.sum("kube_audit_events_total") == len(corpus)
    assert sum(counted(s) for s in runs.final) == len(corpus)
    # Every entry arrived exactly once: the spool is acknowledged per entry,
    # so a kill with no push in flight resends nothing, even when it comes
    # after part of a spool chunk was sent and before the rest was (with
    # several shards, after a later part was sent and before an earlier).
    assert loki.count() == len(corpus)
    assert len(loki.keys()) == len(corpus)
    assert_rules_matched_once(runs, corpus)
