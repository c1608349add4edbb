"""Redaction of secret values from audit events, before any output sees them.

A pipeline stage (a :data:`exporter.pipeline.Processor`): it changes the
events in place, so Loki, Alertmanager and the exporter's own logs all get the
redacted form. What is redacted, by default:

- Secret ``data`` and ``stringData`` values (keys are kept), wherever a
  Secret appears in ``requestObject``/``responseObject``: the object itself,
  the items of a SecretList, any nested object of kind Secret (a WatchEvent,
  a Table row, a List), a patch sent to ``secrets`` (merge patch or JSON
  patch), and the copy kubectl keeps in the
  ``kubectl.kubernetes.io/last-applied-configuration`` annotation;
- TokenRequest ``status.token`` (``serviceaccounts/token``);
- TokenReview ``spec.token``;
- extra paths per resource from the configuration.

An event where nothing had to change keeps its original bytes (``raw``), so
its Loki line stays byte-identical to the input. A changed event loses
``raw`` (it is serialised again from ``obj``) and carries the annotation
``kube-audit-exporter/redacted`` naming the bodies that were changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from .accel import contains_any
from .event import AuditEvent

REDACTED = "[REDACTED]"
REDACTED_ANNOTATION = "kube-audit-exporter/redacted"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
BODIES = ("requestObject", "responseObject")

_SEGMENT = re.compile(r"^([A-Za-z0-9_\-.:/]+?|\*)(\[\*\])?$")


class RedactionPathError(ValueError):
    """An extra redaction path that cannot be parsed."""


class Path:
    """A field path into an event: ``responseObject.items[*].data``.

    Segments are separated by dots; ``name[*]`` means every element of the
    list ``name``; a segment ``*`` means every value of an object. Whatever
    the path reaches is redacted: a scalar is replaced, an object keeps its
    keys with every value replaced, a list has every element replaced.
    """

    __slots__ = ("segments", "text")

    def __init__(self, text: str) -> None:
        if not text or text.startswith(".") or text.endswith(".") or ".." in text:
            raise RedactionPathError(f"{text!r}: not a dotted field path")
        segments: list[tuple[str, bool]] = []
        for part in text.split("."):
            m = _SEGMENT.match(part)
            if m is None:
                raise RedactionPathError(f"{text!r}: bad segment {part!r}")
            segments.append((m.group(1), m.group(2) is not None))
        self.text = text
        self.segments = tuple(segments)

    def apply(self, root: dict[str, Any]) -> bool:
        return _apply(root, self.segments, 0)

    def __repr__(self) -> str:
        return f"Path({self.text!r})"


def _apply(node: Any, segments: tuple[tuple[str, bool], ...], i: int) -> bool:
    if i == len(segments):
        return _blank(node)
    name, each = segments[i]
    if type(node) is not dict:
        return False
    children: Iterable[tuple[Any, Any]]
    if name == "*":
        children = list(node.items())
    elif name in node:
        children = [(name, node[name])]
    else:
        return False
    changed = False
    last = i + 1 == len(segments)
    for key, child in children:
        if each:
            if type(child) is not list:
                continue
            for j, item in enumerate(child):
                if last and _scalar(item):
                    if item != REDACTED:
                        child[j] = REDACTED
                        changed = True
                elif _apply(item, segments, i + 1):
                    changed = True
        elif last and _scalar(child):
            if child is not None and child != REDACTED:
                node[key] = REDACTED
                changed = True
        elif _apply(child, segments, i + 1):
            changed = True
    return changed


def _scalar(value: Any) -> bool:
    return type(value) not in (dict, list)


def _blank(node: Any) -> bool:
    """Replace every value inside a container reached by a path."""
    changed = False
    if type(node) is dict:
        for key, value in node.items():
            if value is not None and value != REDACTED:
                node[key] = REDACTED
                changed = True
    elif type(node) is list:
        for j, value in enumerate(node):
            if value is not None and value != REDACTED:
                node[j] = REDACTED
                changed = True
    return changed


def _blank_values(obj: dict[str, Any], key: str) -> bool:
    """Secret ``data``/``stringData``: keep the keys, replace the values."""
    value = obj.get(key)
    if value is None:
        return False
    if type(value) is dict:
        return _blank(value)
    if value != REDACTED:
        obj[key] = REDACTED
        return True
    return False


def _redact_field(obj: dict[str, Any], parent: str, key: str) -> bool:
    inner = obj.get(parent)
    if type(inner) is not dict or key not in inner:
        return False
    if inner[key] is None or inner[key] == REDACTED:
        return False
    inner[key] = REDACTED
    return True


def _redact_secret(obj: dict[str, Any]) -> bool:
    changed = _blank_values(obj, "data")
    changed = _blank_values(obj, "stringData") or changed
    meta = obj.get("metadata")
    if type(meta) is dict:
        ann = meta.get("annotations")
        if type(ann) is dict and type(ann.get(LAST_APPLIED)) is str:
            text = ann[LAST_APPLIED]
            cleaned = _redact_embedded_secret(text)
            if cleaned != text:
                ann[LAST_APPLIED] = cleaned
                changed = True
    return changed


def _redact_embedded_secret(text: str) -> str:
    """The JSON copy of a Secret inside an annotation, redacted; the whole
    value is replaced when it cannot be parsed."""
    if text == REDACTED:
        return text
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return REDACTED
    if type(doc) is not dict:
        return REDACTED
    if not _walk(doc, "Secret"):
        return text
    out = orjson.dumps(doc).decode()
    return out + "\n" if text.endswith("\n") else out


def _walk(root: Any, implied: str | None) -> bool:
    """Redact every secret value under ``root``. ``implied`` is the kind a
    node without ``kind`` is known to have (SecretList items, patches).
    Iterative: a body nested a thousand levels deep is walked like any other."""
    changed = False
    pending: list[tuple[Any, str | None]] = [(root, implied)]
    while pending:
        node, implied = pending.pop()
        if type(node) is dict:
            kind = node.get("kind")
            if type(kind) is not str:
                kind = implied
            item_kind: str | None = None
            if kind == "Secret":
                changed = _redact_secret(node) or changed
            elif kind == "SecretList":
                item_kind = "Secret"
            elif kind == "TokenRequest":
                changed = _redact_field(node, "status", "token") or changed
            elif kind == "TokenReview":
                changed = _redact_field(node, "spec", "token") or changed
            for key, value in node.items():
                if type(value) is dict:
                    pending.append((value, None))
                elif type(value) is list:
                    pending.append((value, item_kind if key == "items" else None))
        elif type(node) is list:
            if implied == "Secret" and node and all(type(op) is dict and "op" in op for op in node):
                # A JSON patch (RFC 6902) sent to a Secret: every value may be secret.
                for op in node:
                    if "value" in op and op["value"] is not None and op["value"] != REDACTED:
                        op["value"] = REDACTED
                        changed = True
                continue
            for item in node:
                if type(item) in (dict, list):
                    pending.append((item, implied))
    return changed


def _no_secret_kind(raw: bytes | None) -> bool:
    """True when the event's bytes (``raw`` is the exact line ``obj`` was
    parsed from) cannot hold a ``kind`` that redaction acts on: none of the
    kinds' names appears, and no ``\\u`` escape could spell one. A name (and
    the key ``kind``) is ASCII, and an escape that stands for an ASCII
    character is ``\\u00XX``: others (``\\u2028``, emoji) cannot spell one,
    and the four-byte needle is searched faster than ``\\u``."""
    return raw is not None and not contains_any(raw, _KIND_NEEDLES)


# the needles of _no_secret_kind: memmem (C) searches each faster than
# Python, whose search of "\\u00" stops at every "0" of the line
_KIND_NEEDLES = (b"Secret", b"TokenRe", b"\\u00")


def _implied_kind(ev: AuditEvent) -> str | None:
    """What a body without ``kind`` is, from the request's objectRef."""
    if ev.resource == "secrets" and not ev.subresource:
        return "Secret"
    if ev.resource == "serviceaccounts" and ev.subresource == "token":
        return "TokenRequest"
    if ev.resource == "tokenreviews":
        return "TokenReview"
    return None


class Redactor:
    """Removes secret values from events in place; a pipeline Processor.

    ``extra_paths`` maps a resource (``configmaps``), a resource with its
    subresource (``pods/exec``) or ``*`` (every event) to field paths into
    the event (``requestObject.data``, ``responseObject.items[*].data``).
    """

    def __init__(self, extra_paths: Mapping[str, Sequence[str]] | None = None) -> None:
        self.extra: dict[str, tuple[Path, ...]] = {}
        for resource, paths in (extra_paths or {}).items():
            if not resource:
                raise RedactionPathError("an empty resource name")
            self.extra[resource] = tuple(Path(p) for p in paths)
        self._any = self.extra.get("*", ())
        self.redacted_events = 0

    def __call__(self, events: list[AuditEvent]) -> None:
        redact = self.redact
        if self.extra:
            for ev in events:
                redact(ev)
            return
        for ev in events:
            if ev.has_body:  # nothing else can hold a secret without extra paths
                redact(ev)

    def redact(self, ev: AuditEvent) -> bool:
        """Redact one event; True when something was changed."""
        paths: tuple[Path, ...] = ()
        if self.extra:
            paths = self.extra.get(ev.resource_label, ())
            if ev.subresource:
                paths = paths + self.extra.get(ev.resource, ())
            paths += self._any
        if not ev.has_body and not paths:
            # nothing to look at: leave the event (and its lazy JSON) alone
            return False
        implied = _implied_kind(ev) if ev.has_body else None
        if not paths and implied is None and _no_secret_kind(ev.raw):
            # no body can be (or hold) a Secret, TokenRequest or TokenReview:
            # nothing to walk, and the lazy JSON stays unparsed
            return False
        obj = ev.obj
        changed: list[str] = []
        if ev.has_body:
            for key in BODIES:
                body = obj.get(key)
                if type(body) in (dict, list) and _walk(body, implied):
                    changed.append(key)
        for path in paths:
            if path.apply(obj):
                changed.append(path.segments[0][0])
        if not changed:
            return False
        ev.raw = None
        ann = obj.get("annotations")
        if type(ann) is not dict:
            ann = obj["annotations"] = {}
        names = set(changed)
        previous = ann.get(REDACTED_ANNOTATION)
        if type(previous) is str and previous:
            names.update(previous.split(","))
        ann[REDACTED_ANNOTATION] = ",".join(sorted(names))
        self.redacted_events += 1
        return True
