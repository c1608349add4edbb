"""``run --workers N``: N exporter processes serving the same webhook port,
and one ``/metrics`` for all of them.

The parent (the supervisor) runs no source itself. It starts N workers, each
``kube-audit-exporter run`` with the same command line and environment, and:

- each worker binds the webhook with ``SO_REUSEPORT``, so the kernel spreads
  the API server's connections over them;
- each worker serves its own ``/metrics`` on an ephemeral loopback port and
  tells the supervisor which one (a line on its stdout); the supervisor's
  ``web.listen_address`` serves ``/metrics`` by scraping every worker and
  summing the samples of each series (a documented alternative to
  prometheus-client's multiprocess mode, which cannot hold this exporter's
  custom collectors): counters, histograms and most gauges add up; gauges
  that are points in time (``*_timestamp_seconds``, ``build_info``,
  ``detect_rule_active``) take the largest value;
- a worker that dies is started again, counted in
  ``kube_audit_worker_restarts_total`` and logged; a restarted worker's
  counters start from zero, which Prometheus reads as a counter reset;
- SIGTERM is passed to every worker, each drains (answers what it took,
  flushes its spool) and the supervisor exits when they have.

Deduplication and stateful detection are shared between workers only
through ``state.url`` (Redis/Valkey); without it each worker has its own, and
the supervisor says so when it starts.

What a process must own alone is split per worker (:func:`worker_config`):
worker 0 keeps ``spool.dir`` and the ``loki.writer`` label of a single
process, so going from one worker to several continues the same spool;
worker k > 0 spools in ``spool.dir/worker-k`` and writes the Loki stream
``<writer>-w<k>`` (Loki refuses entries "too far behind" the newest of a
stream, so two writers never share one). ``spool.max_bytes`` is divided
between the workers, so the volume sized for it still holds them all. A
spool left by a worker that no longer runs (fewer workers than before) is
logged at start. Pull sources (log file, CloudWatch,
Pub/Sub pull, AKS) would read the same data N times: ``--workers`` serves
the webhook only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from typing import IO

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .config import Config
from .httpserver import Limits
from .metrics import HTTPMetrics
from .web import MetricsServer

log = logging.getLogger(__name__)

# Set by the supervisor in a worker's environment: the worker's number.
WORKER_ENV = "KUBE_AUDIT_INTERNAL_WORKER"
# Set for workers: listening sockets take SO_REUSEPORT (see httpserver._bind).
REUSE_PORT_ENV = "KUBE_AUDIT_INTERNAL_REUSE_PORT"
# The line a worker prints when its /metrics listens: "<prefix><port>".
READY_PREFIX = "kube-audit-exporter worker metrics port "

# Gauges whose workers' values are points in time or flags, not amounts.
_MAX_GAUGES = (
    "_timestamp_seconds",
    "_start_time_seconds",
    "_build_info",
    "_detect_rule_active",
)


def check(cfg: Config) -> list[str]:
    """Why this configuration cannot run with several workers (empty: it can)."""
    problems = []
    if not cfg.webhook.listen_address:
        problems.append("--workers serves the webhook: set webhook.listen_address")
    pulled = {
        "logfile.path": cfg.logfile.path,
        "eks.log_group": cfg.eks.log_group,
        "eks.firehose_listen_address": cfg.eks.firehose_listen_address,
        "gke.subscription": cfg.gke.subscription,
        "gke.push_listen_address": cfg.gke.push_listen_address,
        "aks.storage_account_url": cfg.aks.storage_account_url,
        "aks.eventhub_namespace": cfg.aks.eventhub_namespace,
    }
    for key, value in pulled.items():
        if value:
            problems.append(f"{key}: --workers above 1 serves the webhook only")
    return problems


def worker_config(cfg: Config, number: int, workers: int) -> Config:
    """The configuration of worker ``number`` of ``workers``: its own
    loopback /metrics, spool directory, share of the spool's size, Loki
    writer label and first_seen file (see the module's docstring)."""
    web = dataclasses.replace(cfg.web, listen_address="127.0.0.1:0")
    spool = cfg.spool
    if spool.dir:
        spool = dataclasses.replace(
            spool,
            dir=spool.dir if number == 0 else os.path.join(spool.dir, f"worker-{number}"),
            max_bytes=max(spool.max_bytes // max(workers, 1), 1),
        )
    loki = cfg.loki
    if number:
        loki = dataclasses.replace(loki, writer=f"{loki.writer or socket.gethostname()}-w{number}")
    state = cfg.state
    if number and state.first_seen_file:
        state = dataclasses.replace(
            state, first_seen_file=f"{state.first_seen_file}.worker-{number}"
        )
    return dataclasses.replace(cfg, web=web, spool=spool, loki=loki, state=state)


_WORKER_DIR = re.compile(r"^worker-(\d+)$")


def orphaned_spools(spool_dir: str, workers: int) -> list[str]:
    """The spool directories of workers numbered ``workers`` or above that
    still hold entries: nobody sends them until that many workers run."""
    if not spool_dir:
        return []
    try:
        names = os.listdir(spool_dir)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        m = _WORKER_DIR.match(name)
        if m is None or int(m.group(1)) < workers:
            continue
        path = os.path.join(spool_dir, name)
        try:
            if any(f.endswith(".seg") for f in os.listdir(path)):
                found.append(path)
        except OSError:
            continue
    return found


def warn_orphaned_spools(spool_dir: str, workers: int) -> None:
    for path in orphaned_spools(spool_dir, workers):
        log.warning(
            "a spool of a worker that no longer runs holds entries that nobody sends: "
            "run with more workers until it drains, or move its *.seg files away",
            extra={"spool": path, "workers": workers},
        )


class _Worker:
    def __init__(self, number: int) -> None:
        self.number = number
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.ready = threading.Event()


class Supervisor:
    """Starts, watches and stops the workers; serves their summed metrics."""

    def __init__(self, cfg: Config, argv: Sequence[str], workers: int) -> None:
        self.cfg = cfg
        self.argv = list(argv)
        self.workers = [_Worker(i) for i in range(workers)]
        self.restarts = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.http_metrics = HTTPMetrics()
        self.registry.register(_Summed(self))
        self.web = MetricsServer(
            cfg.web.listen_address,
            self.registry,
            self.ready,
            limits=Limits(
                max_connections=cfg.web.max_connections,
                header_timeout=cfg.web.header_timeout,
                read_timeout=cfg.web.read_timeout,
                idle_timeout=cfg.web.idle_timeout,
            ),
            # not registered: its families are merged with the workers' (one each)
            http_metrics=self.http_metrics,
        )
        self._watcher = threading.Thread(target=self._watch, name="workers", daemon=True)

    def ready(self) -> bool:
        return not self.stopping.is_set() and all(
            w.ready.is_set() and w.proc is not None and w.proc.poll() is None for w in self.workers
        )

    def start(self) -> None:
        state_url = getattr(getattr(self.cfg, "state", None), "url", "")
        if not state_url:
            log.warning(
                "several workers without state.url: deduplication and detection state "
                "are per worker (a retried batch or one user's events that reach two "
                "workers are not seen together); set state.url to share them",
                extra={"workers": len(self.workers)},
            )
        warn_orphaned_spools(self.cfg.spool.dir, len(self.workers))
        for w in self.workers:
            self._spawn(w)
        self.web.start()
        self._watcher.start()
        log.info(
            "workers started",
            extra={"workers": len(self.workers), "metrics": self.cfg.web.listen_address},
        )

    def _spawn(self, w: _Worker) -> None:
        env = dict(os.environ)
        env[WORKER_ENV] = str(w.number)
        env[REUSE_PORT_ENV] = "1"
        w.ready.clear()
        w.port = None
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", *self.argv],
            env=env,
            stdout=subprocess.PIPE,
        )
        w.proc = proc
        assert proc.stdout is not None
        threading.Thread(
            target=self._read_port, args=(w, proc.stdout), name=f"worker-{w.number}", daemon=True
        ).start()

    def _read_port(self, w: _Worker, out: IO[bytes]) -> None:
        for raw in out:
            line = raw.decode(errors="replace").strip()
            if line.startswith(READY_PREFIX):
                w.port = int(line[len(READY_PREFIX) :])
                w.ready.set()

    def _watch(self) -> None:
        """Start again the workers that die (until stop)."""
        while not self.stopping.wait(0.2):
            for w in self.workers:
                proc = w.proc
                if proc is None or proc.poll() is None:
                    continue
                with self._lock:
                    if self.stopping.is_set():
                        return
                    self.restarts += 1
                log.warning(
                    "worker exited; starting it again",
                    extra={"worker": w.number, "pid": proc.pid, "exit": proc.returncode},
                )
                self._spawn(w)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to every worker; wait for them to drain, then kill what is left."""
        with self._lock:
            self.stopping.set()
        procs = [w.proc for w in self.workers if w.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killed", extra={"pid": proc.pid})
                proc.kill()
                proc.wait()
        self.web.shutdown(10.0)
        log.info("workers stopped")

    # --- metrics ---------------------------------------------------------------------------

    def scrape(self) -> list[list[Metric]]:
        """Each ready worker's metric families (a worker that does not
        answer is left out of this scrape, and logged)."""
        found = []
        for w in self.workers:
            port = w.port
            if port is None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError as e:
                log.warning(
                    "worker metrics unreadable", extra={"worker": w.number, "error": str(e)}
                )
                continue
            found.append(list(text_string_to_metric_families(text)))
        return found


class _Summed(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        yield from merge([*sup.scrape(), list(sup.http_metrics.collect())])
        up = GaugeMetricFamily(
            "kube_audit_workers", "Worker processes running and serving, of those configured."
        )
        up.add_metric([], float(sum(1 for w in sup.workers if w.ready.is_set())))
        yield up
        restarts = CounterMetricFamily(
            "kube_audit_worker_restarts", "Worker processes that exited and were started again."
        )
        restarts.add_metric([], float(sup.restarts))
        yield restarts


def merge(scrapes: Sequence[Sequence[Metric]]) -> Iterator[Metric]:
    """One family per name, each series' samples summed over the workers
    (the largest value for gauges that are points in time), in first-seen
    order."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for scrape in scrapes:
        for fam in scrape:
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            take_max = fam.type == "gauge" and fam.name.endswith(_MAX_GAUGES)
            series = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(s.labels.items()))
                if key not in series:
                    series[key] = s.value
                elif s.name.endswith("_created"):
                    series[key] = min(series[key], s.value)
                elif take_max:
                    series[key] = max(series[key], s.value)
                else:
                    series[key] += s.value
    for name, fam in families.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
        yield fam
