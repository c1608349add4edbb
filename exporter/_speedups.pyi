from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from .event import AuditEvent

def setup(*args: Any) -> None: ...
def fast_event(line: bytes, ascii: bool | None = None, /) -> AuditEvent | None: ...
def split_newlines(data: bytes, start: int = 0, end: int = ..., /) -> list[bytes]: ...
def ascii_cr(data: bytes, start: int = 0, end: int = ..., /) -> tuple[bool, bool]: ...
def key_hashes(events: Sequence[Any], /) -> bytes: ...
def scan_hits(
    events: Sequence[Any],
    keys: Sequence[Any],
    index: dict[Any, tuple[tuple[Callable[[Any], object], int], ...]],
    missing: Callable[[Any], tuple[tuple[Callable[[Any], object], int], ...]],
    /,
) -> list[tuple[int, tuple[int, ...]]]: ...
def seen_before(table: bytearray, hashes: Any, others: tuple[bytearray, ...], /) -> list[int]: ...
def hashes_in(tables: tuple[bytearray, ...], hashes: Any, /) -> list[int]: ...
def table_len(table: bytearray, /) -> int: ...
def table_hashes(table: bytearray, /) -> bytes: ...
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
def index_keys(
    events: Sequence[Any],
    triples: dict[Any, int],
    principal_class: Callable[[Any], int],
    annotation_class: Callable[[Any], int],
    common: AbstractSet[str],
    all_annotations: bool,
    one: Callable[[Any], Any],
    /,
) -> list[Any]: ...
