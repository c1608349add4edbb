"""A pipeline sink for tests that can be full, as the Loki spool is when its
disk is: while ``full``, every batch is refused before the processors see it."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.event import AuditEvent


class Spool:
    keeps_marks = False

    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.taken: list[AuditEvent] = []

    def admit(self, events: Sequence[AuditEvent]) -> bool:
        return not self.full

    def submit(self, events: Sequence[AuditEvent], mark: bytes | None = None) -> bool:
        self.taken.extend(events)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        return True
