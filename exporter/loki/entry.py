"""From an audit event to a Loki entry: stream labels, timestamp, line and
structured metadata, and the compact record that the spool stores.

Stream labels are bounded by the process's shared
:class:`~exporter.labels.LabelBounds` (the metrics use the same one): a made-up
verb is ``other``, a resource, API group or namespace beyond the bounds is
``__other__``, and each fold is reported through ``on_fold``.

The line is the event's JSON: the original bytes when the event came as one
line and nothing was redacted, else the event serialised again. A line over
the limit is shrunk (request/response bodies dropped first) and marked with
the annotation ``kube-audit-exporter/truncated``; the event is never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..event import TRUNCATED_ANNOTATION, AuditEvent, dumps_event
from ..labels import OTHER, OTHER_VALUE, LabelBounds
from . import proto
from .settings import LokiSettings

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
    "rule_severity",
    "detected_level",
)

# Returns extra structured metadata for an event, or nothing.
MetadataHook = Callable[[AuditEvent], Iterable[tuple[str, str]]]

# Called with (label, raw value) when a stream label value was folded.
FoldHook = Callable[[str, str], None]

_LABEL_CACHE_MAX = 4096
# Encoded structured metadata fields are cached per value: up to this many
# values for the fields with few values, fewer for the per-user, per-object
# ones (user, name, source_ip), whose caches are emptied when full.
_CACHE_MAX = 65536
_UNBOUNDED_CACHE_MAX = 16384
_SECONDS_CACHE_MAX = 8192
varint = proto.varint
_SMALL = [bytes([n]) for n in range(128)]
_T_TIMESTAMP = proto.tag(1, proto.LEN)
_T_LINE = proto.tag(2, proto.LEN)
_T_METADATA = proto.tag(3, proto.LEN)
_T_NAME = proto.tag(1, proto.LEN)
_T_VALUE = proto.tag(2, proto.LEN)
_T_SECONDS = proto.tag(1, proto.VARINT)
_T_NANOS = proto.tag(2, proto.VARINT)


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
    value = ev.stage_time
    if len(value) >= 20 and value[-1] in "Zz":
        base = _epoch_seconds(value[:19])
        if base is not None:
            frac = value[19:-1]
            if frac == "":
                return base * 1_000_000_000
            if frac[0] == "." and 1 < len(frac) <= 10 and frac[1:].isascii() and frac[1:].isdigit():
                return base * 1_000_000_000 + int(frac[1:].ljust(9, "0"))
    # v1beta1 events and unusual forms: the decoder's float, to the microsecond.
    return round(ev.stage_ts * 1_000_000) * 1000


def _epoch_seconds(head: str) -> int | None:
    """``2006-01-02T15:04:05`` (UTC) as seconds since the epoch, cached."""
    base = _SECOND_NS.get(head)
    if base is None:
        try:
            base = int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp())
        except ValueError:
            return None
        if len(_SECOND_NS) > _SECONDS_CACHE_MAX:
            _SECOND_NS.clear()
        _SECOND_NS[head] = base
    return base


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
    size = len(dumps_event(obj))
    out = {k: v for k, v in obj.items() if k not in ("requestObject", "responseObject")}
    dropped = [k for k in ("requestObject", "responseObject") if k in obj]
    note = f"dropped {','.join(dropped) or 'nothing'} to fit {limit} bytes (was {size})"

    def mark(o: dict[str, Any], text: str) -> bytes:
        ann = o.get("annotations")
        ann = dict(ann) if type(ann) is dict else {}
        ann[TRUNCATED_ANNOTATION] = text
        o["annotations"] = ann
        return dumps_event(o)

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


def _cut(node: Any, budget: int, depth: int = 0) -> Any:
    if type(node) is str:
        return node if len(node) <= budget else node[:budget] + "...(cut)"
    if type(node) in (dict, list) and depth >= 32:
        return "...(cut)"
    if type(node) is dict:
        return {k[:budget]: _cut(v, budget, depth + 1) for k, v in list(node.items())[:64]}
    if type(node) is list:
        return [_cut(v, budget, depth + 1) for v in node[:16]]
    return node


class EntryBuilder:
    """Turns events into entries according to the settings."""

    def __init__(
        self,
        settings: LokiSettings,
        metadata_hook: MetadataHook | None = None,
        *,
        bounds: LabelBounds | None = None,
        on_fold: FoldHook | None = None,
    ) -> None:
        self.bounds = bounds or LabelBounds()
        self.on_fold = on_fold
        self.service_name = settings.service_name
        self.cluster = settings.cluster
        self.writer = settings.writer
        # False: entries carry no structured metadata (a Loki without it).
        self.with_metadata = settings.structured_metadata
        self.extra_labels: Sequence[str] = tuple(settings.labels)
        self.line_limit = settings.line_limit
        self.metadata_hook = metadata_hook
        # The bounded verb (and the extra labels' bounded values) -> the
        # rendered stream selector, and for record() -> the encoded stream
        # prefix; "2006-01-02T15:04:05" -> the encoded seconds field;
        # per metadata field, value -> the encoded field (code: by number).
        self._labels: dict[object, str] = {}
        self._prefixes: dict[object, bytes] = {}
        self._seconds: dict[str, bytes] = {}
        # audit_id's field up to its value, by the value's length (a UUID's 36).
        self._audit_heads = {36: _metadata_field(_H_AUDIT_ID, "x" * 36)[:-36]}
        self._caches: tuple[dict[Any, bytes], ...] = tuple({} for _ in range(11))
        self.shrunk = 0

    def stream_key(self, ev: AuditEvent) -> object:
        """The bounded verb, or a tuple of it and the extra labels' bounded
        values: what identifies the event's stream."""
        verb = self.bounds.verb(ev.verb)
        if verb is OTHER_VALUE:
            self._fold("verb", ev.verb)
        if not self.extra_labels:
            return verb
        return (verb, *[self._label_value(ev, n) for n in self.extra_labels])

    def labels(self, ev: AuditEvent) -> str:
        return self._render(self.stream_key(ev))

    def _render(self, key: object) -> str:
        rendered = self._labels.get(key)
        if rendered is None:
            values = key if type(key) is tuple else (key,)
            pairs = [
                ("service_name", self.service_name),
                ("cluster", self.cluster),
                ("verb", values[0]),
                ("writer", self.writer),
                *zip(self.extra_labels, values[1:], strict=True),
            ]
            rendered = render_labels(pairs)
            if len(self._labels) >= _LABEL_CACHE_MAX:
                self._labels.clear()
            self._labels[key] = rendered
        return rendered

    def _fold(self, label: str, value: str) -> None:
        if self.on_fold is not None:
            self.on_fold(label, value)

    def _label_value(self, ev: AuditEvent, name: str) -> str:
        """The bounded value of the extra stream label ``name``."""
        b = self.bounds
        if name == "stage":
            return ev.stage  # the decoder accepts the four stages only
        if name == "user_kind":
            return ev.user_kind
        if name == "code_class":
            return b.code_class(ev.code) if ev.code else ""
        if name == "audit_level":
            value = b.audit_level(ev.level)
            raw = ev.level
        elif name == "resource":
            value = b.resource(ev.resource, "", ev.code)
            raw = ev.resource
        elif name == "api_group":
            value = b.api_group(ev.api_group, ev.code)
            raw = ev.api_group
        elif name == "namespace":
            value = b.namespace(ev.namespace, ev.code)
            raw = ev.namespace
        else:
            raise ValueError(f"{name!r} is not a label field")
        if value is OTHER or value is OTHER_VALUE:
            self._fold(name, raw)
        return value

    def line(self, ev: AuditEvent) -> bytes:
        line = ev.to_bytes()
        if len(line) > self.line_limit:
            self.shrunk += 1
            return shrink(ev.obj, self.line_limit)
        return line

    def metadata(self, ev: AuditEvent) -> tuple[tuple[str, str], ...]:
        if not self.with_metadata:
            return ()
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
            ("rule_severity", ev.severity),
        ]
        if self.metadata_hook is not None:
            pairs.extend(self.metadata_hook(ev))
        pairs.append(("detected_level", detected_level(ev.code)))
        return tuple((k, v) for k, v in pairs if v)

    def build(self, ev: AuditEvent) -> Entry:
        return Entry(self.labels(ev), timestamp_ns(ev), self.line(ev), self.metadata(ev))

    def record(self, ev: AuditEvent) -> bytes:
        """The spool record for ``ev``: the same bytes as
        ``encode_record(self.build(ev))``, built without the detour.

        This runs once per event sent: stream prefixes, timestamp seconds and
        the structured metadata fields that repeat are cached as encoded
        bytes, and the record is one join of them."""
        key = self.stream_key(ev)
        prefix = self._prefixes.get(key)
        if prefix is None:
            raw = self._render(key).encode()
            if len(self._prefixes) >= _LABEL_CACHE_MAX:
                self._prefixes.clear()
            prefix = self._prefixes[key] = proto.varint(len(raw)) + raw
        parts = [prefix]
        # The timestamp: the common RFC 3339 form here, the rest by proto.
        stamp = ev.stage_time
        seconds = None
        nanos = 0
        if len(stamp) >= 20 and stamp[-1] in "Zz":
            seconds = self._seconds.get(stamp[:19]) or self._seconds_field(stamp[:19])
            frac = stamp[19:-1]
            if not frac:
                pass
            elif (
                frac[0] == "." and 1 < len(frac) <= 10 and frac[1:].isascii() and frac[1:].isdigit()
            ):
                nanos = int(frac[1:].ljust(9, "0"))
            else:
                seconds = None
        if seconds is None:
            ts = proto.timestamp(timestamp_ns(ev))
            parts += (_T_TIMESTAMP, varint(len(ts)), ts)
        elif nanos:
            nanos_varint = varint(nanos)
            parts += (
                _T_TIMESTAMP,
                _SMALL[len(seconds) + 1 + len(nanos_varint)],
                seconds,
                _T_NANOS,
                nanos_varint,
            )
        else:
            parts += (_T_TIMESTAMP, _SMALL[len(seconds)], seconds)
        line = self.line(ev)
        n = len(line)
        if n:
            parts += (_T_LINE, _SMALL[n] if n < 128 else varint(n), line)
        if not self.with_metadata:
            return b"".join(parts)
        cached = self._cached
        c = self._caches
        put = parts.append
        # In DESIGN.md's order, empty values left out, as metadata() does.
        value: str = ev.username
        if value:
            put(c[0].get(value) or cached(c[0], _H_USER, value, _UNBOUNDED_CACHE_MAX))
        value = ev.user_kind
        if value:
            put(c[1].get(value) or cached(c[1], _H_USER_KIND, value, _CACHE_MAX))
        value = ev.namespace
        if value:
            put(c[2].get(value) or cached(c[2], _H_NAMESPACE, value, _CACHE_MAX))
        value = ev.resource
        if value:
            put(c[3].get(value) or cached(c[3], _H_RESOURCE, value, _CACHE_MAX))
        value = ev.subresource
        if value:
            put(c[4].get(value) or cached(c[4], _H_SUBRESOURCE, value, _CACHE_MAX))
        value = ev.name
        if value:
            put(c[5].get(value) or cached(c[5], _H_NAME, value, _UNBOUNDED_CACHE_MAX))
        code = ev.code
        if code:
            put(c[6].get(code) or self._code_field(code))
        value = ev.audit_id
        if value:
            raw = value.encode()
            head = self._audit_heads.get(len(raw))
            if head is None:
                put(_metadata_field(_H_AUDIT_ID, value))
            else:
                parts += (head, raw)
        value = ev.source_ip
        if value:
            put(c[7].get(value) or cached(c[7], _H_SOURCE_IP, value, _UNBOUNDED_CACHE_MAX))
        value = ev.stage
        if value:
            put(c[8].get(value) or cached(c[8], _H_STAGE, value, _CACHE_MAX))
        if ev.rules:
            value = ",".join(ev.rules)
            put(c[9].get(value) or cached(c[9], _H_RULES, value, _CACHE_MAX))
        value = ev.severity
        if value:
            put(c[10].get(value) or cached(c[10], _H_SEVERITY, value, _CACHE_MAX))
        if self.metadata_hook is not None:
            for name, value in self.metadata_hook(ev):
                if value:
                    put(_metadata_field(_metadata_head(name), value))
        put(_LEVEL_FIELDS[0 if code >= 500 else 1 if code >= 400 else 2])
        return b"".join(parts)

    @staticmethod
    def _cached(cache: dict[str, bytes], head: bytes, value: str, limit: int) -> bytes:
        """The field for ``value``, encoded and remembered (a cache miss)."""
        field = _metadata_field(head, value)
        if len(cache) >= limit:
            cache.clear()
        cache[value] = field
        return field

    def _code_field(self, code: int) -> bytes:
        cache = self._caches[6]
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        field = cache[code] = _metadata_field(_H_CODE, str(code))
        return field

    def _seconds_field(self, head: str) -> bytes | None:
        """Timestamp.seconds for ``2006-01-02T15:04:05`` (UTC), encoded and
        cached; None when it does not parse or is not after the epoch (left
        to proto.timestamp)."""
        base = _epoch_seconds(head)
        if base is None or base <= 0:
            return None
        if len(self._seconds) >= _SECONDS_CACHE_MAX:
            self._seconds.clear()
        field = self._seconds[head] = _T_SECONDS + varint(base)
        return field


def _metadata_head(name: str) -> bytes:
    """A LabelPairAdapter up to its value: name field, then the value's tag."""
    raw = name.encode()
    return (_T_NAME + varint(len(raw)) + raw if raw else b"") + _T_VALUE


def _metadata_field(head: bytes, value: str) -> bytes:
    """One structuredMetadata field of an EntryAdapter (tag, length, pair)."""
    raw = value.encode()
    n = len(raw)
    size = len(head) + 1 + n
    if size < 128:
        return b"".join((_T_METADATA, _SMALL[size], head, _SMALL[n], raw))
    pair = head + varint(n) + raw
    return _T_METADATA + varint(len(pair)) + pair


_H_USER = _metadata_head("user")
_H_USER_KIND = _metadata_head("user_kind")
_H_NAMESPACE = _metadata_head("namespace")
_H_RESOURCE = _metadata_head("resource")
_H_SUBRESOURCE = _metadata_head("subresource")
_H_NAME = _metadata_head("name")
_H_CODE = _metadata_head("code")
_H_AUDIT_ID = _metadata_head("audit_id")
_H_SOURCE_IP = _metadata_head("source_ip")
_H_STAGE = _metadata_head("stage")
_H_RULES = _metadata_head("rules")
# Not "severity": Loki's level detection reads that field (log_level_fields),
# and Loki 3.1 to 3.4 would then add a second detected_level.
_H_SEVERITY = _metadata_head("rule_severity")
_LEVEL_FIELDS = tuple(
    _metadata_field(_metadata_head("detected_level"), level) for level in ("error", "warn", "info")
)


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


def without_metadata(buf: bytes) -> bytes:
    """A spool record again without its structured metadata (for a Loki
    that refuses it); ValueError on a damaged record."""
    entry = decode_record(buf)
    if not entry.metadata:
        return buf
    return encode_record(Entry(entry.labels, entry.ts_ns, entry.line))


def decode_record(buf: bytes) -> Entry:
    """The inverse of :func:`encode_record`; ValueError on a damaged record."""
    labels, body = split_record(buf)
    try:
        ts_ns, line, meta = proto.decode_entry(body)
        return Entry(labels.decode(), ts_ns, line, tuple((k.decode(), v.decode()) for k, v in meta))
    except UnicodeDecodeError as e:
        raise ValueError(f"damaged record: {e}") from None
