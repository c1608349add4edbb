"""From an audit event to a Loki entry: stream labels, timestamp, line and
structured metadata, and the compact record that the spool stores.

The line is the event's JSON: the original bytes when the event came as one
line and nothing was redacted, else the event serialised again. A line over
the limit is shrunk (request/response bodies dropped first) and marked with
the annotation ``kube-audit-exporter/truncated``; the event is never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ..event import AuditEvent
from .settings import LokiSettings

TRUNCATED_ANNOTATION = "kube-audit-exporter/truncated"

# Structured metadata, in the order DESIGN.md lists it.
METADATA_FIELDS = (
    "user",
    "user_kind",
    "namespace",
    "resource",
    "subresource",
    "name",
    "code",
    "audit_id",
    "source_ip",
    "stage",
    "rules",
    "severity",
    "detected_level",
)

# Returns extra structured metadata for an event (the detection stage's
# ``rules`` and ``severity``), or nothing.
MetadataHook = Callable[[AuditEvent], Iterable[tuple[str, str]]]

_VERB = re.compile(r"^[A-Za-z]{1,40}$")
_LABEL_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Entry:
    """One Loki entry. ``labels`` is the rendered stream selector."""

    labels: str
    ts_ns: int
    line: bytes
    metadata: tuple[tuple[str, str], ...] = ()


# --- label strings ------------------------------------------------------------


def _quote(value: str) -> str:
    """A label value as a Go-syntax double-quoted string, as Loki parses it."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return '"' + value + '"'
    out = ['"']
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render_labels(labels: Iterable[tuple[str, str]]) -> str:
    """``{a="1", b="2"}``: sorted by name, empty values left out (Loki treats
    an empty value as an absent label)."""
    pairs = sorted((k, v) for k, v in labels if v)
    return "{" + ", ".join(f"{k}={_quote(v)}" for k, v in pairs) + "}"


# --- timestamps -----------------------------------------------------------------

_SECOND_NS: dict[str, int] = {}


def timestamp_ns(ev: AuditEvent) -> int:
    """stageTimestamp in integer nanoseconds, exact to the digits written
    (the float ``stage_ts`` only carries microseconds reliably)."""
    value = ev.obj.get("stageTimestamp")
    if type(value) is str and len(value) >= 20 and value[-1] in "Zz":
        head = value[:19]
        base = _SECOND_NS.get(head)
        if base is None:
            try:
                base = int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp())
            except ValueError:
                base = None
            else:
                if len(_SECOND_NS) > 8192:
                    _SECOND_NS.clear()
                _SECOND_NS[head] = base
        if base is not None:
            frac = value[19:-1]
            if frac == "":
                return base * 1_000_000_000
            if frac[0] == "." and 1 < len(frac) <= 10 and frac[1:].isdigit():
                return base * 1_000_000_000 + int(frac[1:].ljust(9, "0"))
    # v1beta1 events and unusual forms: the decoder's float, to the microsecond.
    return round(ev.stage_ts * 1_000_000) * 1000


# --- lines -------------------------------------------------------------------


def detected_level(code: int) -> str:
    if code >= 500:
        return "error"
    if code >= 400:
        return "warn"
    return "info"


def shrink(obj: dict[str, Any], limit: int) -> bytes:
    """The event's JSON within ``limit`` bytes, keeping what an auditor needs
    first: bodies go, then annotations and status details, then long strings
    are cut. The result says what was dropped."""
    size = len(orjson.dumps(obj))
    out = {k: v for k, v in obj.items() if k not in ("requestObject", "responseObject")}
    dropped = [k for k in ("requestObject", "responseObject") if k in obj]
    note = f"dropped {','.join(dropped) or 'nothing'} to fit {limit} bytes (was {size})"

    def mark(o: dict[str, Any], text: str) -> bytes:
        ann = o.get("annotations")
        ann = dict(ann) if type(ann) is dict else {}
        ann[TRUNCATED_ANNOTATION] = text
        o["annotations"] = ann
        return orjson.dumps(o)

    line = mark(out, note)
    if len(line) <= limit:
        return line
    # Annotations (other than ours) and status details can be large too.
    ann: dict[str, Any] = out["annotations"]
    keep = {k: v for k, v in ann.items() if k.startswith("kube-audit-exporter/")}
    out["annotations"] = keep
    status = out.get("responseStatus")
    if type(status) is dict:
        out["responseStatus"] = {k: status[k] for k in ("code", "status", "reason") if k in status}
    note += "; dropped annotations and status details"
    line = mark(out, note)
    if len(line) <= limit:
        return line
    # Last resort: every string cut short, lists cut to their first items.
    budget = max(64, limit // 64)
    line = mark(_cut(out, budget), note + "; cut long values")
    if len(line) <= limit:
        return line
    core = {
        k: obj[k]
        for k in ("kind", "apiVersion", "level", "auditID", "stage", "verb", "stageTimestamp")
        if k in obj
    }
    return mark(_cut(core, budget), note + "; kept only the event's identity")


def _cut(node: Any, budget: int) -> Any:
    if type(node) is str:
        return node if len(node) <= budget else node[:budget] + "...(cut)"
    if type(node) is dict:
        return {k[:budget]: _cut(v, budget) for k, v in list(node.items())[:64]}
    if type(node) is list:
        return [_cut(v, budget) for v in node[:16]]
    return node


class EntryBuilder:
    """Turns events into entries according to the settings."""

    def __init__(self, settings: LokiSettings, metadata_hook: MetadataHook | None = None) -> None:
        self.service_name = settings.service_name
        self.cluster = settings.cluster
        self.extra_labels: Sequence[str] = tuple(settings.labels)
        self.line_limit = settings.line_limit
        self.metadata_hook = metadata_hook
        self._labels: dict[tuple[str, ...], str] = {}
        self.shrunk = 0

    def labels(self, ev: AuditEvent) -> str:
        verb = ev.verb if _VERB.match(ev.verb) else "other"
        values = [verb]
        for name in self.extra_labels:
            values.append(_label_value(ev, name))
        key = tuple(values)
        rendered = self._labels.get(key)
        if rendered is None:
            pairs = [
                ("service_name", self.service_name),
                ("cluster", self.cluster),
                ("verb", verb),
                *zip(self.extra_labels, values[1:], strict=True),
            ]
            rendered = render_labels(pairs)
            if len(self._labels) >= _LABEL_CACHE_MAX:
                self._labels.clear()
            self._labels[key] = rendered
        return rendered

    def line(self, ev: AuditEvent) -> bytes:
        line = ev.to_bytes()
        if len(line) > self.line_limit:
            self.shrunk += 1
            return shrink(ev.obj, self.line_limit)
        return line

    def metadata(self, ev: AuditEvent) -> tuple[tuple[str, str], ...]:
        pairs = [
            ("user", ev.username),
            ("user_kind", ev.user_kind),
            ("namespace", ev.namespace),
            ("resource", ev.resource),
            ("subresource", ev.subresource),
            ("name", ev.name),
            ("code", str(ev.code) if ev.code else ""),
            ("audit_id", ev.audit_id),
            ("source_ip", ev.source_ip),
            ("stage", ev.stage),
        ]
        if self.metadata_hook is not None:
            pairs.extend(self.metadata_hook(ev))
        pairs.append(("detected_level", detected_level(ev.code)))
        return tuple((k, v) for k, v in pairs if v)

    def build(self, ev: AuditEvent) -> Entry:
        return Entry(self.labels(ev), timestamp_ns(ev), self.line(ev), self.metadata(ev))


def _label_value(ev: AuditEvent, name: str) -> str:
    if name == "stage":
        return ev.stage
    if name == "user_kind":
        return ev.user_kind
    if name == "code_class":
        return ev.code_class if ev.code else ""
    if name == "audit_level":
        level = ev.obj.get("level")
        return level if type(level) is str else ""
    if name == "resource":
        return ev.resource
    if name == "api_group":
        return ev.api_group
    if name == "namespace":
        return ev.namespace
    raise ValueError(f"{name!r} is not a label field")


# --- spool records ---------------------------------------------------------------
#
# An entry as the spool stores it:
#   varint len(labels) labels | varint ts_ns | varint n |
#   n x (varint len(name) name varint len(value) value) | line (the rest)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def encode_record(entry: Entry) -> bytes:
    labels = entry.labels.encode()
    parts = [_uvarint(len(labels)), labels, _uvarint(entry.ts_ns), _uvarint(len(entry.metadata))]
    for name, value in entry.metadata:
        n = name.encode()
        v = value.encode()
        parts += (_uvarint(len(n)), n, _uvarint(len(v)), v)
    parts.append(entry.line)
    return b"".join(parts)


def decode_record(buf: bytes) -> Entry:
    """The inverse of :func:`encode_record`; ValueError on a damaged record."""
    try:
        n, pos = _read_uvarint(buf, 0)
        labels = buf[pos : pos + n].decode()
        pos += n
        ts_ns, pos = _read_uvarint(buf, pos)
        count, pos = _read_uvarint(buf, pos)
        meta: list[tuple[str, str]] = []
        for _ in range(count):
            n, pos = _read_uvarint(buf, pos)
            name = buf[pos : pos + n].decode()
            pos += n
            n, pos = _read_uvarint(buf, pos)
            value = buf[pos : pos + n].decode()
            pos += n
            meta.append((name, value))
        if pos > len(buf):
            raise ValueError("record shorter than its fields")
    except (IndexError, UnicodeDecodeError) as e:
        raise ValueError(f"damaged record: {e}") from None
    return Entry(labels, ts_ns, bytes(buf[pos:]), tuple(meta))
