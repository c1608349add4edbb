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
from . import proto
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
# Metadata with few values: their encoded fields are cached.
_CACHED_METADATA = frozenset(
    {"user_kind", "namespace", "resource", "subresource", "code", "stage", "detected_level"}
)
_PAIR_CACHE_MAX = 65536
_T_TIMESTAMP = proto.tag(1, proto.LEN)
_T_LINE = proto.tag(2, proto.LEN)
_T_METADATA = proto.tag(3, proto.LEN)


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
        self._prefixes: dict[str, bytes] = {}
        self._pairs: dict[tuple[str, str], bytes] = {}
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
                self._prefixes.clear()
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
            # set by detection; empty (and so left out) when nothing matched
            ("rules", ",".join(ev.rules)),
            ("severity", ev.severity),
        ]
        if self.metadata_hook is not None:
            pairs.extend(self.metadata_hook(ev))
        pairs.append(("detected_level", detected_level(ev.code)))
        return tuple((k, v) for k, v in pairs if v)

    def build(self, ev: AuditEvent) -> Entry:
        return Entry(self.labels(ev), timestamp_ns(ev), self.line(ev), self.metadata(ev))

    def record(self, ev: AuditEvent) -> bytes:
        """The spool record for ``ev``: the same bytes as
        ``encode_record(self.build(ev))``, built without the detour."""
        labels = self.labels(ev)
        prefix = self._prefixes.get(labels)
        if prefix is None:
            raw = labels.encode()
            prefix = self._prefixes[labels] = proto.varint(len(raw)) + raw
        ts = proto.timestamp(timestamp_ns(ev))
        line = self.line(ev)
        parts = [prefix, _T_TIMESTAMP, proto.varint(len(ts)), ts]
        if line:
            parts += (_T_LINE, proto.varint(len(line)), line)
        cache = self._pairs
        for name, value in self.metadata(ev):
            key = (name, value)
            field = cache.get(key)
            if field is None:
                pair = proto.label_pair(name.encode(), value.encode())
                field = _T_METADATA + proto.varint(len(pair)) + pair
                if name in _CACHED_METADATA:
                    if len(cache) >= _PAIR_CACHE_MAX:
                        cache.clear()
                    cache[key] = field
            parts.append(field)
        return b"".join(parts)


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
# An entry as the spool stores it: the stream's label string, then the entry
# already encoded as Loki's EntryAdapter, so that a push is concatenation:
#   varint len(labels) | labels | EntryAdapter


def split_record(buf: bytes) -> tuple[bytes, bytes]:
    """(label string, encoded EntryAdapter) of a spool record."""
    n, pos = proto.read_varint(buf, 0)
    if pos + n > len(buf):
        raise ValueError("record shorter than its labels")
    return buf[pos : pos + n], buf[pos + n :]


def encode_record(entry: Entry) -> bytes:
    labels = entry.labels.encode()
    body = proto.entry(
        entry.ts_ns, entry.line, [(k.encode(), v.encode()) for k, v in entry.metadata]
    )
    return proto.varint(len(labels)) + labels + body


def decode_record(buf: bytes) -> Entry:
    """The inverse of :func:`encode_record`; ValueError on a damaged record."""
    labels, body = split_record(buf)
    try:
        ts_ns, line, meta = proto.decode_entry(body)
        return Entry(labels.decode(), ts_ns, line, tuple((k.decode(), v.decode()) for k, v in meta))
    except UnicodeDecodeError as e:
        raise ValueError(f"damaged record: {e}") from None
