"""AKS through Event Hubs: the diagnostic setting's stream (see :mod:`.aks`).

Each message's body is ``{"records": [...]}``, one record per audit event
(``properties.log``). The consumer (azure-eventhub's
``EventHubConsumerClient`` with the blob checkpoint store, built by
:func:`eventhub_client`; partitions are shared among replicas through the
store) hands a batch per partition to :meth:`EventHubSource.on_event_batch`,
which decodes it, offers it again while the pipeline refuses it, and only
then moves the partition's checkpoint. No Event Hubs emulator runs in the
tests: :func:`eventhub_client` is the thin, untested adapter; everything
else is tested with a double of the client, and the checkpoint store
against Azurite.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import Metric

from ..event import Batch, Decoder, InvalidEvent
from ..logs import RateLimitedLog
from ..metrics import AuditMetrics
from ..pipeline import Pipeline
from .aks import (
    CONNECTION_STRING_ENV,
    SOURCE,
    StartError,
    azure_module,
    blob_service,
    describe,
    errors_family,
)

log = logging.getLogger(__name__)

# The longest pause before the Event Hubs consumer is started again.
MAX_RESTART_PAUSE = 60.0


class PartitionContext(Protocol):
    """What the source uses of azure-eventhub's ``PartitionContext``."""

    @property
    def partition_id(self) -> str: ...

    def update_checkpoint(self, event: Any = None, **kwargs: Any) -> None: ...


class ConsumerClient(Protocol):
    """What the source uses of azure-eventhub's ``EventHubConsumerClient``."""

    def receive_batch(self, on_event_batch: Callable[..., None], **kwargs: Any) -> None: ...

    def close(self) -> None: ...


def event_body(event: Any) -> bytes:
    """An EventData's body as bytes (a data body is bytes or a list of
    bytes sections); raises InvalidEvent for another body type."""
    try:
        body = event.body
    except ValueError:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    try:
        return b"".join(body)
    except TypeError:
        raise InvalidEvent(
            "wrong_type", f"an Event Hubs body must be data, not {type(body).__name__}"
        ) from None


class EventHubSource:
    """Consumes AKS diagnostic records from an Event Hub.

    The client (:func:`eventhub_client`, or a test double) calls
    :meth:`on_event_batch` with a partition's events. A batch the pipeline
    refuses (a full spool) is offered again every ``retry_interval`` until it
    is taken (the partition waits meanwhile); only then is the partition's
    checkpoint moved past it. A batch redelivered after a restart from an
    older checkpoint is recognised by the pipeline's dedupe."""

    def __init__(
        self,
        client: ConsumerClient,
        *,
        pipeline: Pipeline,
        decoder: Decoder,
        metrics: AuditMetrics,
        starting_position: str = "-1",
        max_batch_size: int = 300,
        retry_interval: float = 1.0,
    ) -> None:
        self.client = client
        self.pipeline = pipeline
        self.decoder = decoder
        self.starting_position = starting_position
        self.max_batch_size = max_batch_size
        self.retry_interval = retry_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._log = RateLimitedLog(log)
        metrics.add_state(self._collect)

    def on_event_batch(self, context: PartitionContext, events: list[Any]) -> None:
        if not events:
            return
        batch = Batch()
        for event in events:
            try:
                batch.add_all(self.decoder.decode_document(event_body(event)))
            except InvalidEvent as e:
                batch.add(e)
        where = f"eventhub partition {context.partition_id}"
        while True:
            result = self.pipeline.process(batch, SOURCE, where)
            if not result.refused:
                break
            self._count("refused")
            if self._stop.wait(self.retry_interval):
                return  # stopping: the checkpoint stays before this batch
        try:
            context.update_checkpoint(events[-1])
        except Exception as e:
            # taken, but the checkpoint did not move: a restart redelivers
            # this batch, and the pipeline's dedupe drops it
            self._count("checkpoint")
            self._log.warning("AKS Event Hubs: checkpoint failed", where=where, error=describe(e))

    def on_error(self, context: PartitionContext | None, error: Exception) -> None:
        self._count("receive")
        where = "eventhub" if context is None else f"eventhub partition {context.partition_id}"
        self._log.warning("AKS Event Hubs: receive failed", where=where, error=describe(error))

    def run(self) -> None:
        """Receive until :meth:`stop` (blocks; the client runs a thread per
        partition it owns). The client retries what it can and reports it
        to :meth:`on_error`; should ``receive_batch`` itself fail, it is
        counted, logged and called again after a growing pause (1 s to
        ``MAX_RESTART_PAUSE``)."""
        pause = self.retry_interval
        while not self._stop.is_set():
            try:
                self.client.receive_batch(
                    self.on_event_batch,
                    max_batch_size=self.max_batch_size,
                    starting_position=self.starting_position,
                    on_error=self.on_error,
                )
                return  # the client was closed
            except Exception as e:
                self.on_error(None, e)
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, MAX_RESTART_PAUSE)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="aks-eventhub", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self.client.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _count(self, operation: str) -> None:
        with self._lock:
            self._errors[operation] += 1

    def _collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = Counter(self._errors)
        yield errors_family("aks_eventhub_errors", counts, "receive, checkpoint, refused")


def checkpoint_store(
    account_url: str, container: str, environ: Mapping[str, str] | None = None
) -> Any:
    """azure-eventhub's blob checkpoint store in ``container`` (created when
    missing), from ``AZURE_STORAGE_CONNECTION_STRING`` when it is set, else
    with the default credential chain."""
    env = os.environ if environ is None else environ
    store_mod = azure_module("azure.eventhub.extensions.checkpointstoreblob")
    exceptions = azure_module("azure.core.exceptions")
    service = blob_service(account_url, env)
    try:
        service.create_container(container)
    except exceptions.ResourceExistsError:
        pass
    except exceptions.AzureError as e:
        raise StartError(
            f"aks.eventhub_checkpoint_container: cannot create {container!r}: {describe(e)}"
        ) from None
    conn = env.get(CONNECTION_STRING_ENV)
    if conn:
        return store_mod.BlobCheckpointStore.from_connection_string(conn, container)
    identity = azure_module("azure.identity")
    return store_mod.BlobCheckpointStore(
        account_url, container, credential=identity.DefaultAzureCredential()
    )


def eventhub_client(
    namespace: str, eventhub: str, consumer_group: str, store: Any
) -> ConsumerClient:  # pragma: no cover - AMQP: no emulator here
    """The consumer: ``namespace`` is the fully qualified host
    (``<ns>.servicebus.windows.net``); credentials from the default chain."""
    hub = azure_module("azure.eventhub")
    identity = azure_module("azure.identity")
    client: ConsumerClient = hub.EventHubConsumerClient(
        fully_qualified_namespace=namespace,
        eventhub_name=eventhub,
        consumer_group=consumer_group,
        credential=identity.DefaultAzureCredential(),
        checkpoint_store=store,
    )
    return client
