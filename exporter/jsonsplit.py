"""Cutting JSON input into the pieces the decoder takes one at a time,
without parsing it: the lines of JSON lines (:func:`split_lines`), the items
of a document too deep for the parsers (:func:`split_items`), and the quick
refusal of a line that cannot be an object (:func:`not_a_json_container`).

orjson stops at 1024 levels and msgspec at Python's recursion limit, and both
refuse the whole document. An EventList with one absurdly nested item must
not lose the good items beside it, so :func:`split_items` finds the items'
bytes without parsing them: one pass of a regular expression over the
strings and brackets, counting depth iteratively, whatever the nesting.
Each item is then decoded (or refused) on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import orjson

from .accel import split_newlines
from .refusals import InvalidEvent, not_an_object

# A string (escapes included), a run of opening or closing brackets, or a
# separator. Everything else (numbers, literals, whitespace) is skipped.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{]+|[\]}]+|[,:]')
# an EventList's items; an Azure Monitor export's (Event Hubs) records
_ITEMS_KEYS = (b'"items"', b'"records"')
# JSON lines are split this many bytes at a time, not all at once.
LINES_BLOCK = 1 << 20


def split_items(doc: bytes) -> tuple[bytes | None, list[bytes]] | None:
    """The items of ``doc``, a JSON array or an object with an ``items`` array
    (an EventList) or a ``records`` array (an Azure Monitor export), as byte
    strings, and the object with its items array emptied (None for an
    array), to be parsed for kind and apiVersion.

    None when ``doc`` is not one such value (JSON lines, garbage, a
    truncated document). Items are not checked: each is parsed on its own.
    """
    doc = doc.strip()
    top = doc[:1]
    if top == b"[":
        items_depth = 1
        array_start = 0
    elif top == b"{":
        items_depth = 0  # not found yet
        array_start = -1
    else:
        return None
    items: list[bytes] = []
    item_from = 1  # where the current item starts (after '[' or ',')
    depth = 0
    key = b""  # the last string at depth 1 of an object
    value_of_items = False  # just past '"items":' at depth 1
    end = -1  # index past the top-level value's closing bracket
    skeleton = b""
    for m in _TOKENS.finditer(doc):
        tok = m.group()
        c = tok[0]
        if end >= 0:
            return None  # something after the value: not one document
        if c == 0x22:  # '"'
            if depth == 1 and items_depth != 1:
                key = tok
                value_of_items = False
            continue
        if c == 0x5B or c == 0x7B:  # '[' or '{' run
            if depth == 1 and value_of_items and c == 0x5B and items_depth == 0:
                items_depth = 2
                array_start = m.start()
                item_from = array_start + 1
            value_of_items = False
            depth += len(tok)
            continue
        if c == 0x5D or c == 0x7D:  # ']' or '}' run
            new_depth = depth - len(tok)
            if items_depth and depth >= items_depth > new_depth:
                # this run closes the items array
                close = m.start() + depth - items_depth
                _append(items, doc, item_from, close)
                if items_depth == 1:
                    end = close + 1
                else:
                    skeleton = doc[: array_start + 1] + doc[close:]
                    items_depth = -1  # done; the rest is the object's
            if new_depth <= 0:
                if new_depth < 0:
                    return None
                end = m.end()
            depth = new_depth
            continue
        if c == 0x3A:  # ':'
            value_of_items = depth == 1 and key in _ITEMS_KEYS
            continue
        # ','
        if depth == items_depth:
            _append(items, doc, item_from, m.start())
            item_from = m.end()
        elif depth == 1:
            value_of_items = False
    if end < 0 or doc[end:].strip():
        return None
    if top == b"[":
        return None, items
    if items_depth != -1:
        return None  # an object without an items array
    return skeleton, items


def _append(items: list[bytes], doc: bytes, start: int, stop: int) -> None:
    item = doc[start:stop].strip()
    if item or items:
        items.append(item)  # an empty item between commas is kept: it is refused


def split_lines(data: bytes) -> Iterator[bytes]:
    """The lines of ``data``, split a block at a time: a body of millions of
    short lines never becomes one list of millions of byte strings."""
    start, size = 0, len(data)
    while start < size:
        end = data.find(b"\n", start + LINES_BLOCK)
        if end < 0:
            end = size
        yield from split_newlines(data, start, end)
        start = end + 1


# The bytes a JSON scalar can start with: such a line is parsed to tell
# wrong_type (valid JSON, not an object) from invalid_json.
_SCALAR_STARTS = frozenset(b'"-0123456789tfn')


def not_a_json_container(line: bytes) -> InvalidEvent | None:
    """The refusal of a line that cannot be an object or an array, found
    without running the parsers (garbage costs one comparison, not three
    failed parses); None when the line may be one."""
    first = line[:1]
    if first.isspace():
        first = line.lstrip()[:1]
    if first == b"{" or first == b"[" or not first:
        return None
    if first[0] in _SCALAR_STARTS:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
        else:
            return not_an_object(value)
    return InvalidEvent("invalid_json", f"not a JSON object: starts with {first!r}")
