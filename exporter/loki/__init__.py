"""The Loki output: protobuf + snappy push, batching, retries and a disk spool.

The names below are imported on first use: the configuration reads
``exporter.loki.settings`` without the HTTP client (requests) that only
the sink needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import LokiSettings

if TYPE_CHECKING:
    from .client import LokiSetupError
    from .sink import LokiSink

__all__ = ["LokiSettings", "LokiSetupError", "LokiSink"]


def __getattr__(name: str) -> Any:
    if name == "LokiSetupError":
        from .client import LokiSetupError

        return LokiSetupError
    if name == "LokiSink":
        from .sink import LokiSink

        return LokiSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
