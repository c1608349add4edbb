from typing import Any

from .event import AuditEvent

def setup(*args: Any) -> None: ...
def fast_event(line: bytes, ascii: bool | None = None, /) -> AuditEvent | None: ...
def split_newlines(data: bytes, /) -> list[bytes]: ...
def contains_any(data: bytes, needles: tuple[bytes, ...], /) -> bool: ...
def fast_lines(
    lines: list[bytes],
    start: int,
    ascii: bool | None,
    cr: bool,
    within: bool,
    limit: int,
    out: list[AuditEvent],
    room: int,
    /,
) -> int: ...
