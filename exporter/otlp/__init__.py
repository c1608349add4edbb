"""The OTLP logs output: the same redacted, spooled events as the Loki
output, sent as OTLP/HTTP log records to Loki 3's ``/otlp/v1/logs`` or any
OpenTelemetry collector (and from there to Elasticsearch or a SIEM)."""

from __future__ import annotations

from .codec import OtlpCodec, otlp_sink

__all__ = ["OtlpCodec", "otlp_sink"]
