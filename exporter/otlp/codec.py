"""Audit events as OTLP log records, and OTLP/HTTP request bodies.

A spool record is one encoded ``LogRecord`` (opentelemetry-proto's
``logs/v1/logs.proto``)::

    LogRecord { fixed64 time_unix_nano = 1; SeverityNumber severity_number = 2;
                string severity_text = 3; AnyValue body = 5;
                repeated KeyValue attributes = 6; }
    KeyValue  { string key = 1; AnyValue value = 2; }
    AnyValue  { oneof { string string_value = 1; int64 int_value = 3; ... } }

- time: the event's stageTimestamp, to the nanosecond;
- body: the event's JSON line, redacted, shrunk like Loki's over the limit;
- attributes (semantic conventions' names): ``user.name``,
  ``client.address`` (the last source IP), ``user_agent.original``,
  ``url.path`` (requestURI without its query), ``http.response.status_code``;
- severity: ERROR for 5xx, WARN for 4xx, INFO otherwise.

A request wraps the records in one ``ResourceLogs`` whose resource has only
``service.name`` and ``k8s.cluster.name`` (Loki makes a stream label of each
resource attribute, so nothing per event goes there) and one ``ScopeLogs``
(scope ``kube-audit-exporter``). Protobuf or OTLP/JSON, gzip-compressed.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from typing import Any

import orjson
import requests

from .. import __version__
from ..event import AuditEvent
from ..loki import proto
from ..loki.encode import Body
from ..loki.entry import EntryBuilder, timestamp_ns
from ..loki.settings import LokiSettings
from ..loki.sink import LokiSink
from ..metrics import AuditMetrics

_I64 = 1
_T_TIME = proto.tag(1, _I64)
_T_SEVERITY_NUMBER = proto.tag(2, proto.VARINT)
_T_SEVERITY_TEXT = proto.tag(3, proto.LEN)
_T_BODY = proto.tag(5, proto.LEN)
_T_ATTRIBUTE = proto.tag(6, proto.LEN)
_FIXED64 = struct.Struct("<Q")

# (severity_number, severity_text): SeverityNumber's INFO, WARN, ERROR.
_SEVERITIES = ((9, "INFO"), (13, "WARN"), (17, "ERROR"))
_SEVERITY_FIELDS = tuple(
    _T_SEVERITY_NUMBER + proto.varint(n) + proto.len_field(3, text.encode())
    for n, text in _SEVERITIES
)

SCOPE_NAME = "kube-audit-exporter"


def _string_value(value: str) -> bytes:
    return proto.len_field(1, value.encode())


def _key_value(key: str, value: bytes) -> bytes:
    """A KeyValue: ``value`` is an encoded AnyValue."""
    return proto.len_field(1, key.encode()) + proto.len_field(2, value)


def _attribute(key: str, value: bytes) -> bytes:
    """A LogRecord's attributes field."""
    return proto.len_field(6, _key_value(key, value))


def _int_value(n: int) -> bytes:
    return proto.varint_field(3, n)


class OtlpCodec:
    """The :class:`~exporter.loki.codec.Codec` of OTLP/HTTP logs."""

    name = "otlp"

    def __init__(self, settings: LokiSettings, builder: EntryBuilder | None = None) -> None:
        # The Loki entry builder's line (redacted JSON, shrunk over the limit).
        self.builder = builder or EntryBuilder(settings)
        resource = [("service.name", settings.service_name)]
        if settings.cluster:
            resource.append(("k8s.cluster.name", settings.cluster))
        self.resource = resource
        # Resource { repeated KeyValue attributes = 1; }
        self._resource = b"".join(
            proto.len_field(1, _key_value(k, _string_value(v))) for k, v in resource
        )
        self._scope = proto.len_field(1, SCOPE_NAME.encode()) + proto.len_field(
            2, __version__.encode()
        )

    def record(self, ev: AuditEvent) -> bytes:
        code = ev.code
        parts = [
            _T_TIME,
            _FIXED64.pack(timestamp_ns(ev) & 0xFFFFFFFFFFFFFFFF),
            _SEVERITY_FIELDS[2 if code >= 500 else 1 if code >= 400 else 0],
            proto.len_field(5, _string_value_bytes(self.builder.line(ev))),
        ]
        if ev.username:
            parts.append(_attribute("user.name", _string_value(ev.username)))
        if ev.source_ip:
            parts.append(_attribute("client.address", _string_value(ev.source_ip)))
        if ev.user_agent:
            parts.append(_attribute("user_agent.original", _string_value(ev.user_agent)))
        if ev.request_uri:
            path = ev.request_uri.split("?", 1)[0]
            parts.append(_attribute("url.path", _string_value(path)))
        if code:
            parts.append(_attribute("http.response.status_code", _int_value(code)))
        return b"".join(parts)

    def decodes(self, record: bytes) -> bool:
        try:
            decode_log_record(record)
        except ValueError:
            return False
        return True

    def stream(self, record: bytes) -> bytes:
        # One resource, so one Loki stream whatever the shard: spread the
        # records by their time (the first field).
        return record[:9]

    def without_metadata(self, record: bytes) -> bytes:
        return record

    def encode(self, records: Sequence[bytes], fmt: str) -> Body:
        if fmt == "json":
            raw = self.json_payload(records)
            ctype = "application/json"
        else:
            raw = self.protobuf_payload(records)
            ctype = "application/x-protobuf"
        return Body(gzip.compress(raw, compresslevel=1), ctype, "gzip", len(raw))

    def protobuf_payload(self, records: Sequence[bytes]) -> bytes:
        """An ExportLogsServiceRequest: one ResourceLogs, one ScopeLogs."""
        for r in records:
            if not r or r[0] != _T_TIME[0]:
                raise ValueError("not a log record of ours")
        logs = b"".join(proto.len_field(2, r) for r in records)
        scope_logs = proto.len_field(1, self._scope) + logs
        resource_logs = proto.len_field(1, self._resource) + proto.len_field(2, scope_logs)
        return proto.len_field(1, resource_logs)

    def json_payload(self, records: Sequence[bytes]) -> bytes:
        """The same request in OTLP/JSON (lowerCamelCase names, 64-bit
        integers as strings, as the OTLP specification says)."""
        log_records = [decode_log_record(r) for r in records]
        doc = {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [
                            {"key": k, "value": {"stringValue": v}} for k, v in self.resource
                        ]
                    },
                    "scopeLogs": [
                        {
                            "scope": {"name": SCOPE_NAME, "version": __version__},
                            "logRecords": log_records,
                        }
                    ],
                }
            ]
        }
        return orjson.dumps(doc)


def _string_value_bytes(line: bytes) -> bytes:
    return proto.len_field(1, line)


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(number, wire type, value) of a message with varint, fixed64 and
    length-delimited fields; ValueError on anything else or truncation."""
    out: list[tuple[int, int, Any]] = []
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = proto.read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == proto.VARINT:
            value, pos = proto.read_varint(buf, pos)
            out.append((number, wire, value))
        elif wire == _I64:
            if pos + 8 > n:
                raise ValueError("truncated fixed64")
            out.append((number, wire, _FIXED64.unpack_from(buf, pos)[0]))
            pos += 8
        elif wire == proto.LEN:
            size, pos = proto.read_varint(buf, pos)
            if pos + size > n:
                raise ValueError("truncated field")
            out.append((number, wire, buf[pos : pos + size]))
            pos += size
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def _any_value(buf: bytes) -> dict[str, Any]:
    for number, _, value in _fields(buf):
        if number == 1:
            return {"stringValue": value.decode("utf-8", "replace")}
        if number == 3:
            return {"intValue": str(value - (1 << 64) if value >= 1 << 63 else value)}
    return {}


def decode_log_record(record: bytes) -> dict[str, Any]:
    """One of our LogRecords in OTLP/JSON form; ValueError when damaged."""
    out: dict[str, Any] = {}
    attributes: list[dict[str, Any]] = []
    for number, wire, value in _fields(record):
        if number == 1 and wire == _I64:
            out["timeUnixNano"] = str(value)
        elif number == 2 and wire == proto.VARINT:
            out["severityNumber"] = value
        elif number == 3 and wire == proto.LEN:
            out["severityText"] = value.decode()
        elif number == 5 and wire == proto.LEN:
            out["body"] = _any_value(value)
        elif number == 6 and wire == proto.LEN:
            key = ""
            any_value: dict[str, Any] = {}
            for n, _, v in _fields(value):
                if n == 1:
                    key = v.decode()
                elif n == 2:
                    any_value = _any_value(v)
            attributes.append({"key": key, "value": any_value})
    if "timeUnixNano" not in out:
        raise ValueError("a log record without its time")
    if attributes:
        out["attributes"] = attributes
    return out


def otlp_sink(
    settings: LokiSettings,
    metrics: AuditMetrics | None = None,
    *,
    session: requests.Session | None = None,
    start: bool = True,
    redact: bool | None = None,
) -> LokiSink:
    """The OTLP output: the Loki output's spool and sender with this codec."""
    builder = EntryBuilder(settings)
    return LokiSink(
        settings,
        metrics,
        codec=OtlpCodec(settings, builder),
        session=session,
        start=start,
        redact=redact,
    )
