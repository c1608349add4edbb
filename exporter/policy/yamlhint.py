"""A hint for the most common way policy YAML breaks: a list with no key.

Policies copied from articles and chat answers often lose the keys that own
their lists (``omitStages:``, ``rules:``, ``resources:``), which leaves a
``- item`` directly under a ``key: value`` line. The YAML parser then reports
something like "expected <block end>, but found '<block sequence start>'",
which does not say what is missing. This module finds every list that starts
without a key and guesses the key from what the list holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import LEVELS, STAGES

_VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)
_BLOCK_SCALAR = re.compile(r":\s*[|>][0-9+-]*\s*$")


@dataclass(frozen=True)
class OrphanList:
    """A list starting at ``line``/``column`` (1-based) with no key of its own."""

    line: int
    column: int
    key: str  # the key it most likely needs, "" when it cannot be guessed
    holds: str  # what the items look like, for the message


def _strip_comment(text: str) -> str:
    """``text`` without a trailing ``# comment`` (a ``#`` inside quotes stays)."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _guess(item: str) -> tuple[str, str]:
    """(key, description) for a list whose first item's text is ``item``."""
    key = item.split(":", 1)[0].strip() if ":" in item and not item.startswith(("'", '"')) else ""
    if key == "level":
        return "rules", "rules"
    if key in ("group", "resources", "resourceNames"):
        return "resources", "group/resources entries"
    value = _unquote(item.strip())
    if value in STAGES:
        return "omitStages", "stages"
    if value.startswith("/") or value == "*":
        return "nonResourceURLs", "URL paths"
    if value in _VERBS:
        return "verbs", "verbs"
    if value in LEVELS:
        return "", "levels"
    return "", "items"


def orphan_lists(text: str) -> list[OrphanList]:
    """Every block list in ``text`` whose first item is not under a ``key:``."""
    lines: list[tuple[int, int, str]] = []  # (1-based line, indent, content)
    block_indent: int | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        indent = len(raw) - len(raw.lstrip(" "))
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue  # inside a literal or folded block scalar
            block_indent = None
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        content = _strip_comment(raw[indent:])
        lines.append((number, indent, content))
        if _BLOCK_SCALAR.search(content):
            block_indent = indent
    found: list[OrphanList] = []
    # For each item line (by index into ``lines``): the key its list belongs to,
    # known from the owner line or guessed from the items.
    list_key: dict[int, str] = {}
    for i, (number, indent, content) in enumerate(lines):
        if not (content == "-" or content.startswith("- ")):
            continue
        item = content[1:].strip()
        key, holds = _guess(item)
        # The nearest earlier line at this indentation or less is either the
        # previous item of the same list, or the line that owns the list.
        j = i - 1
        while j >= 0 and lines[j][1] > indent:
            j -= 1
        if j < 0:
            list_key[i] = key
            continue  # a list at the top of the document
        _, owner_indent, owner = lines[j]
        owner_is_item = owner == "-" or owner.startswith("- ")
        if owner_is_item and owner_indent == indent:
            # A later item of the same list. When its items change kind (stages,
            # then rules), a key between them is missing.
            previous = list_key.get(j, "")
            if key and previous and key != previous:
                found.append(OrphanList(number, indent + 1, key, holds))
                list_key[i] = key
            else:
                list_key[i] = previous or key
            continue
        if owner.endswith(":"):
            # "key:" or "- key:": the list has its owner.
            list_key[i] = owner.rstrip(":").lstrip("- ").strip()
            continue
        if owner.endswith("-"):
            list_key[i] = key  # a list nested in a bare "-" item
            continue
        found.append(OrphanList(number, indent + 1, key, holds))
        list_key[i] = key
    return found


def missing_key_hint(text: str) -> str:
    """A sentence naming the keys the orphan lists need, or "" when there are none."""
    orphans = orphan_lists(text)
    if not orphans:
        return ""
    by_key: dict[str, list[OrphanList]] = {}
    for orphan in orphans:
        by_key.setdefault(orphan.key, []).append(orphan)
    parts = []
    for key, group in by_key.items():
        where = _lines_phrase([o.line for o in group])
        holds = group[0].holds
        if key:
            parts.append(f"`{key}:` before the list of {holds} at {where}")
        else:
            parts.append(f"a key before the list of {holds} at {where}")
    return "a list must be the value of a key; add " + _join(parts)


def _lines_phrase(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    return "lines " + _join([str(n) for n in numbers])


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]
