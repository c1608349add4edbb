"""AKS: audit events from an AKS cluster's diagnostic settings.

AKS sends its control plane's audit log to wherever a diagnostic setting
says, in two categories: ``kube-audit`` (every event) and ``kube-audit-admin``
(the same without get and list). Each record wraps the API server's JSON line
as a string in ``properties.log`` (:func:`exporter.event._unwrap` takes it
out). Two of the destinations are read here:

- **The storage account archive** (:class:`BlobArchiveSource`). Azure Monitor
  appends one record per line to an hourly append blob per cluster and
  category, in the container ``insights-logs-<category>``::

      resourceId=/SUBSCRIPTIONS/<sub>/RESOURCEGROUPS/<rg>/PROVIDERS/
        MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/<name>/y=2025/m=10/d=07/h=16/m=00/PT1H.json

  The source lists the containers every ``poll_interval``, reads what each
  blob gained since the checkpoint (ranged GETs, whole lines only) and keeps,
  per *stream* (container + resourceId, i.e. one cluster's category), the
  offsets of its newest :data:`KEEP_BLOBS` blobs: a record Azure appends
  late to the previous hour is still read; older blobs are done. The
  checkpoint moves only past batches the pipeline took (saved before the
  metrics count them, as the log file source does), so a refused batch or a
  restart reads the same records again and nothing is counted twice.

- **Event Hubs** (:mod:`.aks_eventhub`): each message's body is
  ``{"records": [...]}``, consumed with azure-eventhub and its blob
  checkpoint store.

This module holds the archive reader and what both share: the source name,
the SDK import, the storage client, error descriptions without credentials.

The Azure SDKs are the optional extra ``[aks]``, imported only here and only
when a source is built. Credentials come from the SDK's default chain
(``DefaultAzureCredential``: Azure Workload Identity, managed identity, ...);
``AZURE_STORAGE_CONNECTION_STRING``, when set, is used for the storage
account instead (the Azure CLI's variable; Azurite in tests). No credential
is ever logged.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..event import Batch, Decoder, InvalidEvent
from ..logs import RateLimitedLog
from ..metrics import PREFIX, AuditMetrics
from ..pipeline import Mark, Pipeline
from . import checkpoint as ckpt

log = logging.getLogger(__name__)

SOURCE = "aks"
CATEGORIES = ("kube-audit", "kube-audit-admin")
# Per stream, the newest blobs whose offsets are kept: the current hour and
# two before it, for records Azure Monitor appends late.
KEEP_BLOBS = 3
# Bytes fetched per ranged GET, and records handed to the pipeline per batch.
READ_BYTES = 4 << 20
# A container is listed whole at the first poll and every FULL_LIST_EVERY
# polls (new clusters appear there); in between only the days its known
# streams are at, up to today, when they are at most NARROW_DAYS.
FULL_LIST_EVERY = 20
NARROW_DAYS = 3
_DAY = re.compile(r"/y=(\d{4})/m=(\d{2})/d=(\d{2})/")
BATCH_LINES = 1000
CHECKPOINT_VERSION = 1
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"


class StartError(ValueError):
    """A source that cannot start (reported, exit 1): a missing SDK, a
    checkpoint it cannot use, a container it cannot create."""


class MissingExtra(StartError):
    """The Azure SDK is not installed."""


def container_name(category: str) -> str:
    """The storage container diagnostic settings write ``category`` to."""
    return f"insights-logs-{category}"


def stream_of(container: str, blob: str) -> str:
    """The stream a blob belongs to: its container and everything before the
    hour path (``/y=``), i.e. one cluster's one category."""
    cut = blob.find("/y=")
    return f"{container}/{blob[:cut] if cut >= 0 else os.path.dirname(blob)}"


# --- the archive's checkpoint --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchiveCheckpoint:
    """Per stream, blob name -> bytes read (always at a record boundary);
    blobs of a stream older than its oldest kept one are done. ``seq``
    counts the batches the pipeline took."""

    streams: dict[str, dict[str, int]] = field(default_factory=dict)
    seq: int = 0

    def dump(self) -> bytes:
        doc = {"version": CHECKPOINT_VERSION, "kind": "aks-blob", "seq": self.seq}
        doc["streams"] = self.streams
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def parse(cls, data: bytes) -> ArchiveCheckpoint:
        """Raises CheckpointError when ``data`` is not one."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ckpt.CheckpointError(f"not JSON: {e}") from None
        if type(doc) is not dict or doc.get("kind") != "aks-blob":
            raise ckpt.CheckpointError("not an AKS archive checkpoint (kind: aks-blob)")
        if doc.get("version") != CHECKPOINT_VERSION:
            raise ckpt.CheckpointError(f"version: {doc.get('version')!r} is not 1")
        seq, streams = doc.get("seq"), doc.get("streams")
        if type(seq) is not int or seq < 0:
            raise ckpt.CheckpointError("seq: must be an integer >= 0")
        if type(streams) is not dict:
            raise ckpt.CheckpointError("streams: must be an object")
        for name, blobs in streams.items():
            if type(blobs) is not dict or not all(
                type(v) is int and v >= 0 for v in blobs.values()
            ):
                raise ckpt.CheckpointError(f"streams.{name}: must map blob names to offsets")
        return cls(streams, seq)


# --- the storage account archive ----------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobInfo:
    name: str
    size: int


class BlobStore(Protocol):
    """What the archive reader needs of a storage account (a
    :class:`AzureBlobStore` over azure-storage-blob, or a test double)."""

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]: ...

    def read(self, container: str, blob: str, offset: int, length: int) -> bytes: ...


class AzureBlobStore:
    """:class:`BlobStore` over azure-storage-blob's ``BlobServiceClient``.
    A missing container lists as empty (no record was written to it yet)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        from azure.core.exceptions import ResourceNotFoundError

        self._not_found = ResourceNotFoundError

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
        client = self.service.get_container_client(container)
        try:
            return [
                BlobInfo(b.name, b.size)
                for b in client.list_blobs(name_starts_with=prefix or None)
                if b.name.endswith(".json")
            ]
        except self._not_found:
            return []

    def read(self, container: str, blob: str, offset: int, length: int) -> bytes:
        client = self.service.get_blob_client(container, blob)
        data: bytes = client.download_blob(offset=offset, length=length).readall()
        return data


def azure_module(module: str) -> Any:
    """Import an Azure SDK module, or say which extra brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(
            f"the AKS source needs the Azure SDK ({e.name} is missing): "
            "pip install 'kube-audit-exporter[aks]'"
        ) from None


def blob_service(account_url: str, environ: Mapping[str, str] | None = None) -> Any:
    """A ``BlobServiceClient`` for ``account_url``: from
    ``AZURE_STORAGE_CONNECTION_STRING`` when it is set, else with the
    default credential chain (Workload Identity in a pod)."""
    env = os.environ if environ is None else environ
    blob = azure_module("azure.storage.blob")
    conn = env.get(CONNECTION_STRING_ENV)
    if conn:
        return blob.BlobServiceClient.from_connection_string(conn)
    identity = azure_module("azure.identity")
    return blob.BlobServiceClient(account_url, credential=identity.DefaultAzureCredential())


class BlobArchiveSource:
    """Tails the hourly ``PT1H.json`` append blobs of both categories.

    :meth:`poll_once` is one deterministic step (list, read, hand on, save
    the checkpoint); :meth:`start` runs it on a thread every
    ``poll_interval`` seconds."""

    def __init__(
        self,
        store: BlobStore,
        *,
        pipeline: Pipeline,
        decoder: Decoder,
        metrics: AuditMetrics,
        categories: Iterable[str] = CATEGORIES,
        prefix: str = "",
        checkpoint_file: str | None = None,
        start_at: str = "checkpoint",
        poll_interval: float = 30.0,
        batch_lines: int = BATCH_LINES,
        read_bytes: int = READ_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if start_at not in ("checkpoint", "beginning", "end"):
            raise ValueError(f"start_at: {start_at!r} is not checkpoint, beginning or end")
        self.store = store
        self.pipeline = pipeline
        self.decoder = decoder
        self.containers = [container_name(c) for c in categories]
        self.prefix = prefix
        self.checkpoint_file = checkpoint_file
        self.poll_interval = poll_interval
        self.batch_lines = batch_lines
        self.read_bytes = read_bytes
        self.clock = clock
        self._polls = 0
        self._errors: Counter[str] = Counter()
        self._log = RateLimitedLog(log)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._checkpoint_at = 0.0
        loaded = self._load() if start_at == "checkpoint" and checkpoint_file else None
        self._ck = loaded or ArchiveCheckpoint()
        # "end": the streams there at the first poll start at their end
        self._skip_existing = start_at == "end"
        self._listed: set[str] = set()  # containers listed once (start_at end)
        self._errors_lock = threading.Lock()
        metrics.add_state(self._collect)

    # -- running -----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aks-archive", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as e:  # never let the thread die: the next poll goes on
                self._error("poll", error=describe(e))
            self._stop.wait(self.poll_interval)

    def poll_once(self) -> int:
        """Read what every stream gained; the events the pipeline took."""
        taken = 0
        for container in self.containers:
            try:
                blobs = self._list(container)
            except Exception as e:  # the SDK's errors have no common base here
                self._error("list", container=container, error=describe(e))
                continue
            streams: dict[str, list[BlobInfo]] = {}
            for b in blobs:
                streams.setdefault(stream_of(container, b.name), []).append(b)
            first = container not in self._listed
            self._listed.add(container)
            for stream, found in sorted(streams.items()):
                found.sort(key=lambda b: b.name)
                if first and self._skip_existing and stream not in self._ck.streams:
                    self._set(stream, {b.name: b.size for b in found[-KEEP_BLOBS:]})
                    continue
                try:
                    taken += self._read_stream(container, stream, found)
                except _Refused as e:
                    # the pipeline is full: everything waits for the next poll
                    return taken + e.taken
        self._polls += 1
        return taken

    def _list(self, container: str) -> list[BlobInfo]:
        """The container's blobs: all of them, or (most polls) only those of
        the days its known streams are at, up to today: a year of hourly
        blobs is not listed twice a minute."""
        narrow = self._narrow_prefixes(container)
        if narrow is None:
            return self.store.list_blobs(container, self.prefix)
        found: list[BlobInfo] = []
        for prefix in narrow:
            found += self.store.list_blobs(container, prefix)
        return found

    def _narrow_prefixes(self, container: str) -> list[str] | None:
        """The day prefixes to list, or None for a full listing."""
        if container not in self._listed or self._polls % FULL_LIST_EVERY == 0:
            return None
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        prefixes: list[str] = []
        head = container + "/"
        for stream, blobs in self._ck.streams.items():
            if not stream.startswith(head) or not blobs:
                continue
            m = _DAY.search(min(blobs))
            if m is None:
                return None
            day = date(int(m[1]), int(m[2]), int(m[3]))
            if (today - day).days >= NARROW_DAYS or day > today:
                return None
            resource = stream[len(head) :]
            while day <= today:
                prefixes.append(f"{resource}/y={day.year:04d}/m={day.month:02d}/d={day.day:02d}/")
                day += timedelta(days=1)
        return prefixes or None  # no stream known yet: look at everything

    def _read_stream(self, container: str, stream: str, found: list[BlobInfo]) -> int:
        known = self._ck.streams.get(stream, {})
        floor = min(known) if known else ""
        taken = 0
        for b in found:
            if b.name < floor:
                continue  # older than every kept blob: done
            offset = known.get(b.name, 0)
            if b.size <= offset:
                continue
            n = self._read_blob(container, stream, b, offset)
            if n is None:
                break  # a read failed: this stream goes on at the next poll
            taken += n
            known = self._ck.streams.get(stream, {})
        return taken

    def _read_blob(self, container: str, stream: str, b: BlobInfo, offset: int) -> int | None:
        """Hand on the whole records of ``b`` from ``offset``; the events
        taken, None when a read failed. Raises _Refused when the pipeline
        refused a batch."""
        taken = 0
        carry = b""
        skipping = False  # inside a record over the size limit, until its newline
        pos = offset  # where ``carry`` starts in the blob
        limit = self.decoder.max_event_bytes
        while pos + len(carry) < b.size:
            start = pos + len(carry)
            try:
                data = self.store.read(
                    container, b.name, start, min(self.read_bytes, b.size - start)
                )
            except Exception as e:
                self._error("read", blob=f"{container}/{b.name}", error=describe(e))
                return None
            if not data:
                break
            at_end = start + len(data) >= b.size
            buf = carry + data
            batch = Batch()
            consumed = 0
            if skipping:
                nl = buf.find(b"\n")
                if nl < 0:
                    pos += len(buf)
                    carry = b""
                    self._advance(stream, b.name, pos)
                    continue
                consumed = nl + 1
                skipping = False
            last_nl = buf.rfind(b"\n")
            lines_end = last_nl + 1 if last_nl >= consumed else consumed
            cursor = consumed
            while cursor < lines_end:
                nl = buf.index(b"\n", cursor)
                line = buf[cursor:nl]
                cursor = nl + 1
                if line.strip():
                    batch.add_all(self.decoder.decode_record(line))
                    if batch.inputs >= self.batch_lines and cursor < lines_end:
                        taken += self._hand_on(
                            container, stream, b.name, pos + cursor, batch, taken
                        )
                        batch = Batch()
            tail = buf[lines_end:]
            if at_end and tail.strip() and _complete_json(tail):
                # the last record of a blob may come without its newline
                batch.add_all(self.decoder.decode_record(tail))
                lines_end = len(buf)
            elif len(tail) > limit:
                batch.add(InvalidEvent("too_large", f"a record over {limit} bytes"))
                lines_end = len(buf)
                skipping = True
            if batch.inputs:
                taken += self._hand_on(container, stream, b.name, pos + lines_end, batch, taken)
            else:
                self._advance(stream, b.name, pos + lines_end)
            pos += lines_end
            carry = buf[lines_end:]
        return taken

    def _hand_on(
        self, container: str, stream: str, blob: str, offset: int, batch: Batch, taken: int
    ) -> int:
        """Submit ``batch`` (the records up to ``offset``); the events taken.
        Raises _Refused (with the ``taken`` before it) when refused."""
        if not self._submit(stream, blob, offset, batch, container):
            raise _Refused(taken)
        return len(batch)

    def _submit(self, stream: str, blob: str, offset: int, batch: Batch, container: str) -> bool:
        after = self._advanced(stream, blob, offset)
        saved: list[bool] = []
        mark = None
        if self.checkpoint_file and not any(s.keeps_marks for s in self.pipeline.sinks):
            mark = Mark(after.dump(), lambda: saved.append(self._save(after)))
        result = self.pipeline.process(batch, SOURCE, f"{container}/{blob}", mark=mark)
        if result.refused:
            self._error("refused", blob=f"{container}/{blob}")
            return False
        self._ck = after
        if self.checkpoint_file and not saved:
            self._save(after)
        return True

    def _advanced(self, stream: str, blob: str, offset: int) -> ArchiveCheckpoint:
        """The checkpoint with ``blob`` of ``stream`` read to ``offset``."""
        blobs = dict(self._ck.streams.get(stream, {}))
        blobs[blob] = offset
        for old in sorted(blobs)[:-KEEP_BLOBS]:
            del blobs[old]
        streams = dict(self._ck.streams)
        streams[stream] = blobs
        return ArchiveCheckpoint(streams, self._ck.seq + 1)

    def _advance(self, stream: str, blob: str, offset: int) -> None:
        """Move past bytes that held no record (blank lines)."""
        self._ck = self._advanced(stream, blob, offset)

    def _set(self, stream: str, blobs: dict[str, int]) -> None:
        streams = dict(self._ck.streams)
        streams[stream] = blobs
        self._ck = ArchiveCheckpoint(streams, self._ck.seq)
        if self.checkpoint_file:
            self._save(self._ck)

    # -- the checkpoint file -------------------------------------------------

    @property
    def position(self) -> ArchiveCheckpoint:
        return self._ck

    def _load(self) -> ArchiveCheckpoint | None:
        assert self.checkpoint_file
        try:
            data = ckpt.read_small(self.checkpoint_file, 1 << 24)
            return None if data is None else ArchiveCheckpoint.parse(data)
        except (OSError, ckpt.CheckpointError) as e:
            # fail fast at start-up: reading everything again would count it twice
            raise StartError(
                f"aks.checkpoint_file: {self.checkpoint_file}: {describe(e)}"
            ) from None

    def _save(self, ck: ArchiveCheckpoint) -> bool:
        assert self.checkpoint_file
        try:
            ckpt.write_atomic(self.checkpoint_file, ck.dump())
        except OSError as e:
            self._error("checkpoint", checkpoint=self.checkpoint_file, error=describe(e))
            return False
        self._checkpoint_at = time.time()
        return True

    # -- errors and state ----------------------------------------------------

    def _error(self, operation: str, **context: str) -> None:
        with self._errors_lock:
            self._errors[operation] += 1
        if operation != "refused":
            self._log.warning(f"AKS archive: {operation} failed", **context)

    def _collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            PREFIX + "aks_archive_checkpoint_timestamp_seconds",
            "When the AKS archive checkpoint was last written (Unix time; 0 before the first).",
            value=self._checkpoint_at,
        )
        yield GaugeMetricFamily(
            PREFIX + "aks_archive_streams",
            "Streams (cluster and category) of the AKS storage archive being followed.",
            value=len(self._ck.streams),
        )
        with self._errors_lock:
            counts = Counter(self._errors)
        yield errors_family("aks_archive_errors", counts, "list, read, checkpoint, poll, refused")


class _Refused(Exception):
    """The pipeline refused a batch; ``taken`` events were taken before it."""

    def __init__(self, taken: int) -> None:
        super().__init__(taken)
        self.taken = taken


def errors_family(name: str, counts: Counter[str], operations: str) -> CounterMetricFamily:
    family = CounterMetricFamily(
        PREFIX + name,
        f"AKS source errors, by operation ({operations}).",
        labels=("operation",),
    )
    for operation, count in sorted(dict(counts).items()):
        family.add_metric((operation,), count)
    return family


def _complete_json(data: bytes) -> bool:
    """Whether ``data`` is one whole JSON value (a record without its
    newline: no prefix of a JSON object parses)."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


# Credentials an Azure error message could quote: a SAS token's signature
# (and its other fields, harmless but noisy), an account key, a connection
# string's keys.
_SECRETS = re.compile(r"(?i)\b(sig|AccountKey|SharedAccessSignature|SharedAccessKey)=[^&;\s'\"]*")


def describe(e: BaseException) -> str:
    """An error in one line, for logs, with credentials it quotes masked."""
    text = str(e).splitlines()[0][:300] if str(e) else ""
    masked = _SECRETS.sub(r"\1=<redacted>", text)
    return f"{type(e).__name__}: {masked}"
