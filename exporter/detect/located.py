"""YAML documents that remember where each value came from.

Mappings and sequences are loaded as :class:`LDict` and :class:`LList`, which
carry the line and column of themselves and of each key or item, so that a
problem found later ("not a CIDR") can be reported at its place in the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import yaml


class LDict(dict[Any, Any]):
    """A mapping with ``pos`` (line, column) and ``key_pos`` for each key."""

    pos: tuple[int, int] = (0, 0)
    key_pos: dict[Any, tuple[int, int]]

    def __init__(self) -> None:
        super().__init__()
        self.key_pos = {}


class LList(list[Any]):
    """A sequence with ``pos`` and ``item_pos`` for each item."""

    pos: tuple[int, int] = (0, 0)
    item_pos: list[tuple[int, int]]

    def __init__(self) -> None:
        super().__init__()
        self.item_pos = []


def _pos(node: yaml.Node) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, loader: Any) -> None:
        import yaml

        self.loader = loader
        self.mapping = yaml.MappingNode
        self.sequence = yaml.SequenceNode
        self.error = yaml.constructor.ConstructorError

    def build(self, node: yaml.Node) -> Any:
        if isinstance(node, self.mapping):
            out = LDict()
            out.pos = _pos(node)
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self.error(
                        None, None, "merge keys (<<) are not supported", key_node.start_mark
                    )
                key = self.build(key_node)
                if isinstance(key, (LDict, LList)):
                    raise self.error(None, None, "a key must be a scalar", key_node.start_mark)
                if key in out:
                    raise self.error(None, None, f"duplicate key {key!r}", key_node.start_mark)
                out[key] = self.build(value_node)
                out.key_pos[key] = _pos(key_node)
            return out
        if isinstance(node, self.sequence):
            seq = LList()
            seq.pos = _pos(node)
            for item in node.value:
                seq.append(self.build(item))
                seq.item_pos.append(_pos(item))
            return seq
        return self.loader.construct_object(node, deep=True)


def load(text: str | bytes) -> Any:
    """Parse one YAML document; raise yaml.YAMLError with a mark on failure.
    (PyYAML is imported here, when there is YAML to read: it is about a
    tenth of replay's start-up, which with the defaults reads none.)"""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml when present
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _Builder(loader).build(node)
    finally:
        loader.dispose()


def yaml_problem(path: str, e: yaml.YAMLError) -> str:
    """A YAML syntax error as ``file:line:col: not valid YAML: ...``."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    loc = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e)
    return f"{path}{loc}: not valid YAML: {problem}"


class Where:
    """A location in a loaded document: the file, a position and a dotted
    path (``rules[3].match.verb``) for messages."""

    __slots__ = ("file", "path", "pos")

    def __init__(self, file: str, path: str = "", pos: tuple[int, int] = (0, 0)) -> None:
        self.file = file
        self.path = path
        self.pos = pos

    def __eq__(self, other: object) -> bool:
        if type(other) is not Where:
            return NotImplemented
        return (self.file, self.path, self.pos) == (other.file, other.path, other.pos)

    def __hash__(self) -> int:
        return hash((self.file, self.path, self.pos))

    def __repr__(self) -> str:
        return f"Where({self.file!r}, {self.path!r}, {self.pos!r})"

    def key(self, container: Any, key: Any, label: str | None = None) -> Where:
        """The place of ``container[key]`` (a mapping value)."""
        pos = self.pos
        if isinstance(container, LDict):
            pos = container.key_pos.get(key, container.pos)
        name = label if label is not None else str(key)
        path = f"{self.path}.{name}" if self.path else name
        return Where(self.file, path, pos)

    def item(self, container: Any, index: int) -> Where:
        pos = self.pos
        if isinstance(container, LList) and index < len(container.item_pos):
            pos = container.item_pos[index]
        return Where(self.file, f"{self.path}[{index}]", pos)

    def at(self, value: Any) -> Where:
        """The same path, positioned at ``value`` when it is a loaded container."""
        if isinstance(value, (LDict, LList)):
            return Where(self.file, self.path, value.pos)
        return self

    def unknown_key(self, container: Any, key: Any, known: Sequence[str]) -> str:
        """The problem of an unknown ``container[key]``, at the key, with the
        known key it was probably meant to be (``severty``: ``severity``)."""
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return self.key(container, key)(f"unknown key ({hint}known: {', '.join(known)})")

    def __call__(self, message: str) -> str:
        line, col = self.pos
        loc = f"{self.file}:{line}:{col}" if line else self.file
        return f"{loc}: {self.path}: {message}" if self.path else f"{loc}: {message}"
