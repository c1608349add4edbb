"""The Loki output: protobuf + snappy push, batching, retries and a disk spool."""

from __future__ import annotations

from .client import LokiSetupError
from .settings import LokiSettings
from .sink import LokiSink

__all__ = ["LokiSettings", "LokiSetupError", "LokiSink"]
