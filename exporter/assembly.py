"""The pipeline as configured: redaction, detection, the sinks (Loki,
OTLP) and the Alertmanager notifier, for ``run`` (exporter/app.py),
``replay`` and ``report``.

Each optional part is imported only when the configuration asks for it:
``replay`` without Loki, OTLP, Alertmanager or Redis starts without the
HTTP clients and the Redis client (see ``python -X importtime``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .config import (
    Config,
    detection_settings,
    first_seen_path,
    loki_settings,
    otlp_settings,
    rule_set,
    state_settings,
)
from .detect import Detector
from .logs import safe_url
from .metrics import AuditMetrics
from .pipeline import Pipeline, Processor, Sink
from .redact import Redactor

if TYPE_CHECKING:
    from .alertmanager import Alertmanager
    from .state.persist import FirstSeenFile
    from .state.redis_store import RedisStore

# the lines it logs are the running exporter's
log = logging.getLogger("exporter.app")


def build_pipeline(
    cfg: Config, metrics: AuditMetrics, *, spool_dir: str | None = None, live: bool = False
) -> tuple[Pipeline, Alertmanager | None]:
    """decode -> redact -> detect -> sinks -> metrics, as configured, and the
    Alertmanager notifier (not started) when URLs are set. Shared by ``run``
    and ``replay``; ``live`` (``run``) adds the state that outlives the
    process: the shared store (state.url) or the first_seen file. Raises
    LokiSetupError, RuleError or ValueError."""
    settings = loki_settings(cfg, spool_dir=spool_dir)
    processors: list[Processor] = []
    if settings.redact:
        # First, so that nothing after it (Loki, Alertmanager, logs) sees secrets.
        processors.append(Redactor(settings.redact_paths))
    detection = detection_settings(cfg)
    notifier = None
    if detection.alertmanager_urls:
        from .alertmanager import Alertmanager

        notifier = Alertmanager(detection.alertmanager_urls, metrics)
    ruleset = rule_set(cfg)
    shared: RedisStore | None = None
    first_seen: FirstSeenFile | None = None
    if live and cfg.state.url:
        from .state.redis_store import RedisStore

        shared = RedisStore(state_settings(cfg))
        metrics.add_state(shared.collect)
        reachable = shared.check()
        log.info(
            "state shared through Redis/Valkey",
            extra={"state_url": shared.where, "reachable": reachable},
        )
    elif live and first_seen_path(cfg):
        from .state.persist import FirstSeenFile

        first_seen = FirstSeenFile(first_seen_path(cfg))
    processors.append(
        Detector(
            ruleset,
            detection,
            metrics,
            notifier,
            shared=shared,
            first_seen_file=first_seen,
            save_interval=cfg.state.save_interval,
        )
    )
    log.info(
        "detection rules loaded",
        extra={
            "rules": len(ruleset.rules),
            "alertmanager": [safe_url(u) for u in detection.alertmanager_urls],
        },
    )
    sinks: list[Sink] = []
    if settings.url:
        from .loki.sink import LokiSink

        sinks.append(LokiSink(settings, metrics, redact=False))
        log.info("pushing to Loki", extra={"url": safe_url(settings.push_url)})
    else:
        log.info("loki.url is empty: events are not sent to Loki")
    otlp = otlp_settings(cfg, spool_dir=spool_dir)
    if otlp.url:
        from .otlp import otlp_sink

        sinks.append(otlp_sink(otlp, metrics, redact=False))
        log.info("sending OTLP logs", extra={"url": safe_url(otlp.push_url)})
    pipeline = Pipeline(
        metrics,
        processors=processors,
        sinks=sinks,
        dedupe_capacity=cfg.events.dedupe_capacity,
        state=shared,
    )
    return pipeline, notifier
