"""The running exporter: the configured sources, the pipeline and the
endpoints, started together and stopped in order (stop accepting, drain,
checkpoint, close the sinks, then the metrics endpoint)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from . import __version__
from .assembly import build_pipeline as build_pipeline
from .config import (
    Config,
    audit_metrics,
)
from .detect import Detector
from .event import Decoder
from .httpserver import Limits
from .loki.sink import LokiSink
from .metrics import HTTPMetrics
from .sources import aks, aks_eventhub
from .sources.aks import AzureBlobStore, BlobArchiveSource
from .sources.aks_eventhub import EventHubSource
from .sources.eks import FirehoseReceiver
from .sources.eks_cloudwatch import CloudWatchSource, make_client
from .sources.gke import OIDCVerifier, PubSubPull, PubSubPushServer
from .sources.logfile import LogFileSource
from .sources.webhook import WebhookServer
from .web import MetricsServer

T = TypeVar("T")

log = logging.getLogger(__name__)


class App:
    def __init__(self, cfg: Config, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        sources = [
            name
            for name, on in (
                ("webhook", bool(cfg.webhook.listen_address)),
                ("logfile", bool(cfg.logfile.path)),
                ("eks", bool(cfg.eks.log_group or cfg.eks.firehose_listen_address)),
                ("gke", bool(cfg.gke.subscription or cfg.gke.push_listen_address)),
                ("aks", bool(cfg.aks.storage_account_url or cfg.aks.eventhub_namespace)),
            )
            if on
        ]
        self.metrics = audit_metrics(cfg, self.registry, sources)
        self.decoder = Decoder(cfg.events.max_bytes)
        self.pipeline, self.notifier = build_pipeline(cfg, self.metrics, live=True)
        self._ready = threading.Event()
        self.http_metrics = HTTPMetrics(self.registry)
        self.web = _listening("web.listen_address", MetricsServer)(
            cfg.web.listen_address,
            self.registry,
            self._ready.is_set,
            limits=Limits(
                max_connections=cfg.web.max_connections,
                header_timeout=cfg.web.header_timeout,
                read_timeout=cfg.web.read_timeout,
                idle_timeout=cfg.web.idle_timeout,
            ),
            http_metrics=self.http_metrics,
        )
        self.webhook: WebhookServer | None = None
        if cfg.webhook.listen_address:
            w = cfg.webhook
            self.webhook = _listening("webhook.listen_address", WebhookServer)(
                listen_address=w.listen_address,
                path=w.path,
                pipeline=self.pipeline,
                decoder=self.decoder,
                metrics=self.metrics,
                tls_cert_file=w.tls_cert_file or None,
                tls_key_file=w.tls_key_file or None,
                client_ca_file=w.client_ca_file or None,
                insecure=w.insecure,
                max_body_bytes=w.max_body_bytes,
                read_timeout=w.read_timeout,
                max_connections=w.max_connections,
                handshake_timeout=w.handshake_timeout,
                header_timeout=w.header_timeout,
                idle_timeout=w.idle_timeout,
                max_header_bytes=w.max_header_bytes,
                workers=w.workers,
                http_metrics=self.http_metrics,
            )
        self.logfile: LogFileSource | None = None
        if cfg.logfile.path:
            f = cfg.logfile
            marks = [s.spool.last_mark() for s in self.pipeline.sinks if isinstance(s, LokiSink)]
            self.logfile = LogFileSource(
                path=f.path,
                checkpoint_file=f.checkpoint_file or None,
                start_at=f.start_at,
                pipeline=self.pipeline,
                decoder=self.decoder,
                metrics=self.metrics,
                poll_interval=f.poll_interval,
                checkpoint_interval=f.checkpoint_interval,
                resume_mark=marks[0] if marks else None,
            )
        self.firehose: FirehoseReceiver | None = None
        self.cloudwatch: CloudWatchSource | None = None
        self._start_eks(cfg)
        self.gke_push, self.gke_pull = self._gke_sources()
        self.aks = self._aks_sources(cfg)

    def _aks_sources(self, cfg: Config) -> list[BlobArchiveSource | EventHubSource]:
        """The AKS archive reader and Event Hubs consumer, as configured (the
        Azure SDK is imported only when one is)."""
        a = cfg.aks
        found: list[BlobArchiveSource | EventHubSource] = []
        if a.storage_account_url:
            found.append(
                BlobArchiveSource(
                    AzureBlobStore(aks.blob_service(a.storage_account_url)),
                    categories=a.categories,
                    prefix=a.prefix,
                    checkpoint_file=a.checkpoint_file or None,
                    start_at=a.start_at,
                    poll_interval=a.poll_interval,
                    pipeline=self.pipeline,
                    decoder=self.decoder,
                    metrics=self.metrics,
                )
            )
        if a.eventhub_namespace:
            store = aks_eventhub.checkpoint_store(
                a.eventhub_checkpoint_account_url, a.eventhub_checkpoint_container
            )
            client = aks_eventhub.eventhub_client(
                a.eventhub_namespace, a.eventhub_name, a.eventhub_consumer_group, store
            )
            start = "-1" if a.eventhub_start_at == "beginning" else "@latest"
            found.append(
                EventHubSource(
                    client,
                    starting_position=start,
                    pipeline=self.pipeline,
                    decoder=self.decoder,
                    metrics=self.metrics,
                )
            )
        return found

    def _start_eks(self, cfg: Config) -> None:
        """The EKS sources, when configured: Firehose's push receiver and
        the CloudWatch Logs pull (boto3 imported only for the latter)."""
        e = cfg.eks
        if e.firehose_listen_address:
            with open(e.firehose_access_key_file, encoding="utf-8") as f:
                access_key = f.read().strip()
            if not access_key:
                raise ValueError(
                    f"eks.firehose_access_key_file: {e.firehose_access_key_file} is empty"
                )
            self.firehose = _listening("eks.firehose_listen_address", FirehoseReceiver)(
                listen_address=e.firehose_listen_address,
                path=e.firehose_path,
                pipeline=self.pipeline,
                decoder=self.decoder,
                metrics=self.metrics,
                access_key=access_key,
                stream_prefix=e.stream_prefix,
                tls_cert_file=e.firehose_tls_cert_file or None,
                tls_key_file=e.firehose_tls_key_file or None,
                insecure=e.firehose_insecure,
                max_body_bytes=e.firehose_max_body_bytes,
                http_metrics=self.http_metrics,
            )
        if e.log_group:
            marks = [s.spool.last_mark() for s in self.pipeline.sinks if isinstance(s, LokiSink)]
            self.cloudwatch = CloudWatchSource(
                client=make_client(e.region, e.endpoint_url),
                log_group=e.log_group,
                stream_prefix=e.stream_prefix,
                pipeline=self.pipeline,
                decoder=self.decoder,
                metrics=self.metrics,
                checkpoint_file=e.checkpoint_file or None,
                start_at=e.start_at,
                poll_interval=e.poll_interval,
                backoff_max=e.backoff_max,
                resume_mark=marks[0] if marks else None,
            )

    def _gke_sources(self) -> tuple[PubSubPushServer | None, PubSubPull | None]:
        """The GKE source's Pub/Sub push endpoint and pull, as configured."""
        g = self.cfg.gke
        push = pull = None
        if g.push_listen_address:
            verifier = None
            if not g.push_allow_unauthenticated:
                verifier = OIDCVerifier(
                    g.push_audience,
                    service_account=g.push_service_account,
                    certs_url=g.push_certs_url,
                )
            w = self.cfg.webhook  # the HTTP limits are the webhook's
            push = _listening("gke.push_listen_address", PubSubPushServer)(
                verifier=verifier,
                listen_address=g.push_listen_address,
                path=g.push_path,
                pipeline=self.pipeline,
                decoder=self.decoder,
                metrics=self.metrics,
                tls_cert_file=g.push_tls_cert_file or None,
                tls_key_file=g.push_tls_key_file or None,
                client_ca_file=None,
                insecure=g.push_insecure_http,
                max_body_bytes=w.max_body_bytes,
                read_timeout=w.read_timeout,
                max_connections=w.max_connections,
                header_timeout=w.header_timeout,
                idle_timeout=w.idle_timeout,
                workers=w.workers,
                http_metrics=self.http_metrics,
            )
        if g.subscription:
            pull = PubSubPull(
                subscription=g.subscription,
                pipeline=self.pipeline,
                decoder=self.decoder,
                metrics=self.metrics,
                max_messages=g.max_messages,
                max_bytes=g.max_bytes,
                batch_size=g.batch_size,
                flush_interval=g.flush_interval,
            )
        return push, pull

    def start(self) -> None:
        log.info(
            "starting kube-audit-exporter",
            extra={"version": __version__, "config": self.cfg.redacted()},
        )
        self.web.start()
        if self.notifier is not None:
            self.notifier.start()
        if self.webhook is not None:
            self.webhook.start()
            log.info("webhook listening", extra={"address": _fmt(self.webhook.address)})
        if self.logfile is not None:
            self.logfile.start()
            log.info("tailing audit log", extra={"path": self.cfg.logfile.path})
        if self.firehose is not None:
            self.firehose.start()
            log.info("firehose receiver listening", extra={"address": _fmt(self.firehose.address)})
        if self.cloudwatch is not None:
            self.cloudwatch.start()
            log.info("reading CloudWatch Logs", extra={"log_group": self.cfg.eks.log_group})
        if self.gke_push is not None:
            self.gke_push.start()
            log.info("GKE Pub/Sub push listening", extra={"address": _fmt(self.gke_push.address)})
        if self.gke_pull is not None:
            self.gke_pull.start()
            log.info("pulling GKE audit entries", extra={"subscription": self.cfg.gke.subscription})
        for source in self.aks:
            source.start()
            log.info("reading AKS audit logs", extra={"from": type(source).__name__})
        self._ready.set()
        log.info("ready", extra={"metrics": _fmt(self.web.address)})

    def stop(self, timeout: float = 10.0) -> None:
        log.info("shutting down")
        self._ready.clear()
        if self.webhook is not None:
            self.webhook.shutdown(timeout)
        if self.logfile is not None:
            self.logfile.stop(timeout)
        if self.firehose is not None:
            self.firehose.shutdown(timeout)
        if self.cloudwatch is not None:
            self.cloudwatch.stop(timeout)
        if self.gke_push is not None:
            self.gke_push.shutdown(timeout)
        if self.gke_pull is not None:
            self.gke_pull.stop(timeout)
        for source in self.aks:
            source.stop(timeout)
        self.pipeline.close(timeout)
        for processor in self.pipeline.processors:
            if isinstance(processor, Detector):
                processor.save_state()
        if self.pipeline.state is not None:
            self.pipeline.state.close()
        if self.notifier is not None:
            self.notifier.close(timeout)
        self.web.shutdown(timeout)
        log.info("stopped")


class ListenError(OSError):
    """A server could not bind: names the option and the address."""

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


def _listening(key: str, server: Callable[..., T]) -> Callable[..., T]:
    """``server`` whose bind failure ("Address already in use") says which
    address it was and which option sets it."""

    def make(*args: Any, **kwargs: Any) -> T:
        address = kwargs.get("listen_address", args[0] if args else "")
        try:
            return server(*args, **kwargs)
        except ListenError:
            raise
        except OSError as e:
            if e.errno is None or e.filename is not None:
                raise  # not the socket: a certificate file, say
            raise ListenError(
                e.errno, f"cannot listen on {address} ({key}): {e.strerror or e}"
            ) from e

    return make


def _fmt(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
