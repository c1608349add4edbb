"""Decoding of audit.k8s.io Event and EventList documents (v1 and v1beta1).

The API server writes one Event per line to its log file and POSTs an
``EventList`` (items without ``kind``/``apiVersion``) to its webhook backend.
Everything here turns bytes into :class:`AuditEvent` objects or into an
:class:`InvalidEvent` that says why not; nothing raises past the decoder, so a
bad line never stops the good ones around it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import msgspec
import orjson

from . import accel
from .accel import PURE_PYTHON_ENV as PURE_PYTHON_ENV
from .gke_entry import entry_to_event, is_log_entry
from .jsonsplit import not_a_json_container, split_items, split_lines
from .refusals import INVALID_REASONS as INVALID_REASONS
from .refusals import Batch as Batch
from .refusals import InvalidEvent as InvalidEvent
from .refusals import not_an_object

API_VERSIONS = frozenset({"audit.k8s.io/v1", "audit.k8s.io/v1beta1"})
STAGES = frozenset({"RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"})

# The annotations the authorizer puts on nearly every event. An event whose
# annotation keys are all among these has nothing else for the metrics or the
# rules to look at (latency phases, Pod Security, failed-open webhooks, ...).
COMMON_ANNOTATIONS = frozenset({"authorization.k8s.io/decision", "authorization.k8s.io/reason"})

USER_KINDS = ("human", "serviceaccount", "node", "system", "anonymous", "unauthenticated")

DEFAULT_MAX_EVENT_BYTES = 1 << 20
# A managed cluster's export wraps an event once (AKS ``properties.log``,
# Log Analytics ``log_s``, CloudWatch Logs ``message``); a wrapper in a
# wrapper is tolerated, deeper is refused as too_deep rather than unwrapped
# without end.
MAX_WRAPPERS = 8

# Set on an event whose output had to leave something out (a Loki line over
# its size limit, fields nested too deep to write).
TRUNCATED_ANNOTATION = "kube-audit-exporter/truncated"


class AuditEvent:
    """One decoded audit event.

    ``obj`` is the decoded JSON, untouched (v1beta1 timestamps are back-filled
    into the attributes, never into ``obj``), and ``raw`` the exact bytes it
    came from when the input was one event per line; later stages use them to
    forward the event byte-identical when nothing has to be redacted.
    """

    __slots__ = (
        "_obj",
        "_request",
        "_request_raw",
        "annotations",
        "api_group",
        "audit_id",
        "code",
        "has_body",
        "impersonated_user",
        "level",
        "name",
        "namespace",
        "raw",
        "received_ts",
        "request_uri",
        "resource",
        "rules",
        "severity",
        "source_ip",
        "stage",
        "stage_time",
        "stage_ts",
        "subresource",
        "user_agent",
        "user_kind",
        "username",
        "verb",
    )

    def __init__(self, obj: dict[str, Any], raw: bytes | None = None) -> None:
        self._obj: dict[str, Any] | None = obj
        self._request: Any = _UNPARSED
        self._request_raw: msgspec.Raw | None = None
        self.raw = raw
        # Set by detection: ids of the rules this event matched and the
        # highest severity among them ("" when none).
        self.rules: tuple[str, ...] = ()
        self.severity: str = ""
        # requestObject or responseObject is present (redaction looks there)
        self.has_body: bool = "requestObject" in obj or "responseObject" in obj

        audit_id = obj.get("auditID")
        stage = obj.get("stage")
        verb = obj.get("verb")
        if audit_id is None:
            raise InvalidEvent("missing_field", "auditID is missing")
        if stage is None:
            raise InvalidEvent("missing_field", "stage is missing")
        if verb is None:
            raise InvalidEvent("missing_field", "verb is missing")
        if type(audit_id) is not str or type(stage) is not str or type(verb) is not str:
            raise InvalidEvent("wrong_type", "auditID, stage and verb must be strings")
        if stage not in STAGES:
            raise InvalidEvent("invalid_value", f"unknown stage {stage[:40]!r}")
        self.audit_id: str = audit_id
        self.stage: str = stage
        self.verb: str = verb

        uri = obj.get("requestURI", "")
        self.request_uri: str = uri if type(uri) is str else ""
        agent = obj.get("userAgent", "")
        self.user_agent: str = agent if type(agent) is str else ""

        user = obj.get("user")
        username = ""
        if user is not None:
            if type(user) is not dict:
                raise InvalidEvent("wrong_type", "user must be an object")
            name = user.get("username", "")
            if type(name) is not str:
                raise InvalidEvent("wrong_type", "user.username must be a string")
            username = name
        self.username: str = username
        self.user_kind: str = classify_user(username)

        imp = obj.get("impersonatedUser")
        imp_name = ""
        if imp is not None:
            if type(imp) is not dict:
                raise InvalidEvent("wrong_type", "impersonatedUser must be an object")
            n = imp.get("username", "")
            imp_name = n if type(n) is str else ""
        self.impersonated_user: str = imp_name

        ips = obj.get("sourceIPs")
        source_ip = ""
        if ips is not None:
            if type(ips) is not list:
                raise InvalidEvent("wrong_type", "sourceIPs must be a list")
            # The API server appends the peer address last; earlier entries come
            # from X-Forwarded-For / X-Real-Ip and are whatever the client says.
            if ips and type(ips[-1]) is str:
                source_ip = ips[-1]
        self.source_ip: str = source_ip

        ref = obj.get("objectRef")
        if ref is None:
            self.resource = self.subresource = self.namespace = self.name = self.api_group = ""
        else:
            if type(ref) is not dict:
                raise InvalidEvent("wrong_type", "objectRef must be an object")
            get = ref.get
            resource = get("resource", "")
            subresource = get("subresource", "")
            namespace = get("namespace", "")
            name = get("name", "")
            api_group = get("apiGroup", "")
            if not (
                type(resource) is str
                and type(subresource) is str
                and type(namespace) is str
                and type(name) is str
                and type(api_group) is str
            ):
                raise InvalidEvent("wrong_type", "objectRef fields must be strings")
            self.resource = resource
            self.subresource = subresource
            self.namespace = namespace
            self.name = name
            self.api_group = api_group

        status = obj.get("responseStatus")
        code = 0
        if status is not None:
            if type(status) is not dict:
                raise InvalidEvent("wrong_type", "responseStatus must be an object")
            c = status.get("code", 0)
            if type(c) is not int:
                raise InvalidEvent("wrong_type", "responseStatus.code must be an integer")
            code = c
        self.code: int = code

        ann = obj.get("annotations")
        if ann is not None and type(ann) is not dict:
            raise InvalidEvent("wrong_type", "annotations must be an object")
        self.annotations: dict[str, Any] = ann or {}

        self.received_ts, self.stage_ts = _timestamps(obj)
        # as written, for outputs that keep every digit (Loki's nanoseconds)
        stage_time = obj.get("stageTimestamp")
        self.stage_time: str = stage_time if type(stage_time) is str else ""
        level = obj.get("level")
        self.level: str = level if type(level) is str else ""

    @property
    def obj(self) -> dict[str, Any]:
        """The decoded JSON. Events decoded by the fast path (see _fast_event)
        parse it from ``raw`` on first use: most events never need it."""
        obj = self._obj
        if obj is None:
            obj = self._obj = _parse_accepted(self.raw)  # type: ignore[arg-type]
        return obj

    @property
    def request_body(self) -> Any:
        """``requestObject`` (None when absent). Read from the decoded JSON
        when there is one; otherwise the fast path's bytes of requestObject
        alone are parsed, not the whole event: the rules that read a pod's
        spec need nothing else of an event that also carries the created
        pod as its responseObject. Redaction runs first and parses the
        event whenever it may change something, so this is never a body
        redaction would have changed."""
        obj = self._obj
        if obj is not None:
            return obj.get("requestObject")
        body = self._request
        if body is _UNPARSED:
            raw = self._request_raw
            body = self._request = _parse_accepted(memoryview(raw)) if raw else None
        return body

    def json_annotations(self) -> Any:
        """``annotations`` as the event's JSON has them: the decoder's copy
        while the event is not parsed, its JSON's once it is (redaction may
        have changed them there)."""
        obj = self._obj
        return self.annotations if obj is None else obj.get("annotations")

    def release_request_body(self) -> None:
        """Forget the request body parsed alone (request_body parses it
        again if asked): freed while its memory is still in cache."""
        self._request = _UNPARSED

    @property
    def resource_label(self) -> str:
        """``resource`` or ``resource/subresource``, as the metric label wants it."""
        if self.subresource:
            return f"{self.resource}/{self.subresource}"
        return self.resource

    @property
    def code_class(self) -> str:
        return code_class(self.code)

    def to_bytes(self) -> bytes:
        """The event as JSON bytes: the original line when there was one."""
        if self.raw is not None:
            return self.raw
        return dumps_event(self.obj)

    def __repr__(self) -> str:
        return f"AuditEvent({self.audit_id} {self.stage} {self.verb} {self.request_uri[:60]!r})"


def code_class(code: int) -> str:
    if 200 <= code < 300:
        return "2xx"
    if 300 <= code < 400:
        return "3xx"
    if 400 <= code < 500:
        return "4xx"
    if code >= 500:
        return "5xx"
    # 1xx is a protocol upgrade (exec/attach/portforward answered 101): a success.
    return "2xx" if 100 <= code < 200 else "unknown"


def classify_user(username: str) -> str:
    """One of USER_KINDS for an audit ``user.username``."""
    if not username:
        # A failed authentication is logged with an empty user.
        return "unauthenticated"
    if username == "system:anonymous":
        return "anonymous"
    if username.startswith("system:serviceaccount:"):
        return "serviceaccount"
    if username.startswith("system:node:"):
        return "node"
    if username.startswith("system:"):
        return "system"
    return "human"


# --- timestamps ------------------------------------------------------------

# Events arrive in time order, so the "YYYY-MM-DDTHH:MM:SS" prefix repeats many
# times; caching its epoch value makes parsing a dict lookup plus a fraction.
_SECOND_CACHE: dict[str, float] = {}
_SECOND_CACHE_MAX = 8192


def parse_time(value: Any) -> float:
    """RFC 3339 (as the API server writes it) to seconds since the epoch."""
    if type(value) is not str:
        raise InvalidEvent("wrong_type", "timestamps must be strings")
    head = value[:19]
    base = _SECOND_CACHE.get(head)
    if base is None:
        try:
            if len(head) != 19 or head[10] not in "Tt ":
                raise ValueError(value)
            base = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise InvalidEvent("invalid_value", f"bad timestamp {value[:40]!r}") from None
        if len(_SECOND_CACHE) >= _SECOND_CACHE_MAX:
            _SECOND_CACHE.clear()
        _SECOND_CACHE[head] = base
    if len(value) == 27 and value[26] == "Z" and value[19] == ".":
        # the API server's own form, microseconds: "2024-05-01T10:00:00.123456Z"
        micros = value[20:26]
        if micros.isascii() and micros.isdigit():
            return base + int(micros) * 1e-6
    rest = value[19:]
    if rest == "Z" or rest == "z":
        return base
    if (
        len(rest) > 2
        and rest[0] == "."
        and rest[-1] in "Zz"
        and rest[1:-1].isascii()
        and rest[1:-1].isdigit()
    ):
        frac = rest[1:-1]
        return base + int(frac) / float(10 ** len(frac))
    # An explicit offset or another unusual form: take the slow, exact path.
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InvalidEvent("invalid_value", f"bad timestamp {value[:40]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _timestamps(obj: dict[str, Any]) -> tuple[float, float]:
    received = obj.get("requestReceivedTimestamp")
    stage = obj.get("stageTimestamp")
    if received is not None and stage is not None:
        first = parse_time(received)
        # RequestReceived events carry the same string twice
        return first, first if stage == received else parse_time(stage)
    # audit.k8s.io/v1beta1 written by old API servers: only second-precision
    # ``timestamp`` (request received) and metadata.creationTimestamp (event).
    legacy = obj.get("timestamp")
    meta = obj.get("metadata")
    created = meta.get("creationTimestamp") if type(meta) is dict else None
    if received is None:
        received = legacy if legacy is not None else created
    if stage is None:
        stage = created if created is not None else legacy
    if received is None or stage is None:
        raise InvalidEvent("missing_field", "requestReceivedTimestamp/stageTimestamp are missing")
    return parse_time(received), parse_time(stage)


# --- the fast path -----------------------------------------------------------
#
# Most lines of an audit log are well-formed audit.k8s.io/v1 events. msgspec
# decodes such a line straight into the few typed fields the exporter reads,
# validating their types in C and skipping the request and response bodies
# without building Python objects for them. Anything it refuses (bad JSON, a
# field of another type, v1beta1 without micro timestamps, a wrapped or
# foreign document) takes the general path below, which gives the exact
# reason; so both paths accept and refuse the same inputs.


class _User(msgspec.Struct, gc=False):
    username: str = ""


class _Ref(msgspec.Struct, gc=False):
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    apiGroup: str = ""


class _Status(msgspec.Struct, gc=False):
    code: int = 0


class _Fast(msgspec.Struct, gc=False):
    auditID: str
    # Literal: checked in C, and the same (interned) string object each time
    stage: Literal["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]
    verb: str
    kind: Literal["Event", ""] = ""
    apiVersion: Literal["audit.k8s.io/v1", "audit.k8s.io/v1beta1", ""] = ""
    level: str = ""
    requestURI: str = ""
    userAgent: str = ""
    user: _User | None = None
    impersonatedUser: _User | None = None
    sourceIPs: list[str] | None = None
    objectRef: _Ref | None = None
    responseStatus: _Status | None = None
    annotations: dict[str, str] | None = None
    requestReceivedTimestamp: str = ""
    stageTimestamp: str = ""
    # kept as undecoded bytes: only their presence is read here
    requestObject: msgspec.Raw = msgspec.Raw()
    responseObject: msgspec.Raw = msgspec.Raw()


_decode_fast = msgspec.json.Decoder(_Fast).decode
# Numbers beyond the float range (1e400) are valid JSON that orjson refuses;
# this decoder reads them as infinities.
_decode_lenient = msgspec.json.Decoder(float_hook=float).decode
_new_event = object.__new__


def loads(data: bytes | memoryview) -> Any:
    """Parse JSON: orjson, and msgspec for the valid JSON orjson refuses
    (numbers beyond the float range). Raises orjson.JSONDecodeError."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        try:
            return _decode_lenient(data)
        except (msgspec.DecodeError, RecursionError, ValueError):  # incl. bad UTF-8
            raise e from None


def dumps_event(obj: dict[str, Any]) -> bytes:
    """JSON bytes of a decoded event, whatever its nesting: orjson writes 255
    levels, msgspec as many as the stack allows; fields nested deeper still
    are dropped, and the event says so (TRUNCATED_ANNOTATION)."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        pass
    try:
        return msgspec.json.encode(obj)
    except (RecursionError, TypeError, ValueError):
        pass
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in obj.items():
        try:
            orjson.dumps({key: value})  # at the depth it will have in ``out``
        except orjson.JSONEncodeError:
            dropped.append(key)
        else:
            out[key] = value
    ann = out.get("annotations")
    ann = dict(ann) if type(ann) is dict else {}
    ann[TRUNCATED_ANNOTATION] = f"dropped {','.join(dropped)}: nested too deep to write"
    out["annotations"] = ann
    return orjson.dumps(out)


# AuditEvent._request before requestObject is parsed (it may be null).
_UNPARSED: Any = object()


def _parse_accepted(raw: bytes | memoryview) -> Any:
    """The whole object of a line the fast path accepted: it is valid UTF-8
    and valid JSON, so this never fails."""
    try:
        return loads(raw)
    except orjson.JSONDecodeError:
        # msgspec's depth limit counts the caller's stack too, and this may
        # run deeper than the decode did: a fresh thread has the whole stack.
        result: list[dict[str, Any]] = []
        thread = threading.Thread(target=lambda: result.append(_decode_lenient(raw)))
        thread.start()
        thread.join()
        return result[0]


def _fast_event(line: bytes, ascii: bool | None = None) -> AuditEvent | None:
    """The event in ``line``, or None when the general path must decide.
    ``ascii``: True when the caller knows the line is ASCII (a block of
    lines it asked at once), None to ask the line."""
    try:
        f = _decode_fast(line)
    except (msgspec.DecodeError, RecursionError):
        return None
    if ascii is None:
        ascii = line.isascii()
    if not ascii:
        # msgspec does not check the UTF-8 of the values it skips
        try:
            line.decode()
        except UnicodeDecodeError:
            return None
    received_at = f.requestReceivedTimestamp
    stage_at = f.stageTimestamp
    if not f.kind or not f.apiVersion or not received_at or not stage_at:
        return None
    # _api_time of both, inline (this runs for every event when the C fast
    # path was not built). isdigit() is true of other scripts' digits too,
    # and an ASCII line can hold them as \u escapes: isascii() as well.
    received: float | None = None
    stage_ts: float | None = None
    cache = _SECOND_CACHE
    if ascii and len(received_at) == 27 and received_at[26] == "Z" and received_at[19] == ".":
        base = cache.get(received_at[:19])
        if base is not None:
            micros = received_at[20:26]
            if micros.isascii() and micros.isdigit():
                received = base + int(micros) * 1e-6
    if stage_at == received_at:
        stage_ts = received
    elif ascii and len(stage_at) == 27 and stage_at[26] == "Z" and stage_at[19] == ".":
        base = cache.get(stage_at[:19])
        if base is not None:
            micros = stage_at[20:26]
            if micros.isascii() and micros.isdigit():
                stage_ts = base + int(micros) * 1e-6
    if received is None or stage_ts is None:
        try:
            if received is None:
                received = _api_time(received_at)
            if stage_ts is None:
                stage_ts = received if stage_at == received_at else _api_time(stage_at)
        except InvalidEvent:
            return None
    ev: AuditEvent = _new_event(AuditEvent)
    ev._obj = None
    ev._request = _UNPARSED
    ev._request_raw = f.requestObject
    ev.raw = line
    ev.rules = ()
    ev.severity = ""
    ev.has_body = bool(f.requestObject) or bool(f.responseObject)
    ev.audit_id = f.auditID
    ev.stage = f.stage
    ev.verb = f.verb
    ev.request_uri = f.requestURI
    ev.user_agent = f.userAgent
    user = f.user
    username = user.username if user is not None else ""
    ev.username = username
    kind = _USER_KINDS.get(username)
    if kind is None:
        kind = _user_kind(username)
    ev.user_kind = kind
    imp = f.impersonatedUser
    ev.impersonated_user = imp.username if imp is not None else ""
    ips = f.sourceIPs
    ev.source_ip = ips[-1] if ips else ""
    ref = f.objectRef
    if ref is None:
        ev.resource = ev.subresource = ev.namespace = ev.name = ev.api_group = ""
    else:
        ev.resource = ref.resource
        ev.subresource = ref.subresource
        ev.namespace = ref.namespace
        ev.name = ref.name
        ev.api_group = ref.apiGroup
    status = f.responseStatus
    ev.code = status.code if status is not None else 0
    ev.annotations = f.annotations or {}
    ev.received_ts = received
    ev.stage_ts = stage_ts
    ev.stage_time = stage_at
    ev.level = f.level
    return ev


# username -> classify_user(username): a log has few distinct users
_USER_KINDS: dict[str, str] = {}
_USER_KINDS_MAX = 8192


def _user_kind(username: str) -> str:
    """classify_user, remembered (both fast paths read _USER_KINDS first)."""
    kind = classify_user(username)
    if len(_USER_KINDS) >= _USER_KINDS_MAX:
        _USER_KINDS.clear()
    _USER_KINDS[username] = kind
    return kind


def _api_time(value: str) -> float:
    """parse_time for the API server's own form (microseconds, UTC) when
    its second is cached, with the same arithmetic; parse_time otherwise."""
    if len(value) == 27 and value[26] == "Z" and value[19] == ".":
        base = _SECOND_CACHE.get(value[:19])
        if base is not None:
            micros = value[20:26]
            if micros.isascii() and micros.isdigit():
                return base + int(micros) * 1e-6
    return parse_time(value)


def _fast_lines(
    lines: list[bytes],
    start: int,
    ascii: bool | None,
    cr: bool,
    within: bool,
    limit: int,
    out: list[AuditEvent],
    room: int,
) -> int:
    """From ``lines[start]`` on, append to ``out`` the events of the lines
    the fast path reads, until a line it does not read (empty, not an
    object, longer than ``limit`` unless ``within`` says none is, or handed
    to the general decoder) or ``room`` events; the position of the first
    line not appended. ``ascii`` as for _fast_event; ``cr``: whether a line
    may end with carriage returns (they are left out)."""
    fast = _fast_event
    append = out.append
    appended = 0
    k = max(start, 0)
    n = len(lines)
    while k < n and appended < room:
        line = lines[k]
        if line[:1] != b"{" or not (within or len(line) <= limit):
            break
        ev = fast(line.rstrip(b"\r") if cr and line[-1:] == b"\r" else line, ascii)
        if ev is None:
            break
        append(ev)
        appended += 1
        k += 1
    return k


class FastPath(Protocol):
    def __call__(self, line: bytes, ascii: bool | None = None, /) -> AuditEvent | None: ...


FastLines = Callable[[list[bytes], int, bool | None, bool, bool, int, list[AuditEvent], int], int]

# The fast path's own name, over one line and over a block of lines (the
# replay readers'): in C where exporter._speedups was built and not turned
# off (see exporter.accel; the same results, see tests/test_speedups.py),
# else the Python functions above.
fast_event: FastPath = _fast_event
fast_lines: FastLines = _fast_lines
if accel.compiled is not None:
    accel.compiled.setup(
        AuditEvent, _Fast, _User, _Ref, _Status, _decode_fast,
        (msgspec.DecodeError, RecursionError), _api_time, InvalidEvent,
        _user_kind, _USER_KINDS, _UNPARSED,
    )  # fmt: skip
    fast_event = accel.compiled.fast_event
    fast_lines = accel.compiled.fast_lines
# which one it is, for the tests and the benchmarks
SPEEDUPS = accel.compiled is not None


# --- documents ---------------------------------------------------------------

Item = AuditEvent | InvalidEvent


class Decoder:
    """Turns lines and documents into events, refusing bad input item by item.

    Nothing raises out of a document or a line of JSON lines: each item is
    an event or an InvalidEvent, whatever its nesting (wrappers are unwrapped
    in a loop, documents too deep for the parsers are split by
    :func:`~exporter.jsonsplit.split_items`)."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes

    def decode_line(self, line: bytes) -> AuditEvent:
        """One JSON line of an audit log (the trailing newline may be present);
        raises InvalidEvent."""
        return self._resolve(line, None)

    def decode_object(self, obj: Any, raw: bytes | None = None) -> AuditEvent:
        return self._resolve(obj, raw)

    def decode_record(self, line: bytes) -> Iterator[Item]:
        """One line of JSON lines: an event, or a whole document written on
        one line (an EventList or an array, as a captured webhook body is),
        whose items are yielded in order."""
        try:
            if len(line) <= self.max_event_bytes:
                refused = not_a_json_container(line)
                if refused is not None:
                    yield refused
                    return
                ev = fast_event(line.rstrip(b"\r\n"))
                if ev is not None:
                    yield ev
                    return
            try:
                doc, raw_items = _parse_whole(line)
            except InvalidEvent as e:
                if len(line) > self.max_event_bytes:
                    raise self._too_large(len(line)) from None
                raise e from None
        except InvalidEvent as e:
            yield e
            return
        yield from self._document(doc, raw_items, len(line), line.rstrip(b"\r\n"))

    def decode_document(self, body: bytes) -> Iterator[Item]:
        """A webhook body or a whole file: an Event, an EventList, a JSON array
        of events, or JSON lines (each of which may be one of those), or
        documents written back to back without a separator (Firehose's S3
        objects). Yields events and refusals in input order."""
        stripped = body.strip()
        if not stripped:
            return
        try:
            doc, raw_items = _parse_whole(stripped)
        except InvalidEvent:
            documents = _concatenated(stripped)
            if documents is None:
                yield from self._lines(stripped)
                return
            for document in documents:
                if type(document) is bytes:
                    yield from self.decode_document(document)
                else:
                    yield document  # type: ignore[misc]
            return
        yield from self._document(doc, raw_items, len(stripped), None)

    def _lines(self, data: bytes) -> Iterator[Item]:
        """JSON lines (or garbage): each line stands or falls alone."""
        decode = self.decode_record
        for lineno, line in enumerate(split_lines(data), 1):
            if not line or line.isspace():
                continue
            for item in decode(line):
                if type(item) is not AuditEvent:
                    item.line = lineno  # type: ignore[union-attr]
                yield item

    def _document(
        self, doc: Any, raw_items: list[bytes] | None, size: int, raw: bytes | None
    ) -> Iterator[Item]:
        """The items of a parsed document; ``raw_items`` are its items' bytes
        when they were too deep to parse with it."""
        items: list[Any]
        if type(doc) is list:
            items = doc if raw_items is None else raw_items
        elif is_document(doc):
            key = _items_key(doc)
            if key == "logEvents":
                message_type = doc.get("messageType")
                if message_type == "CONTROL_MESSAGE":
                    return  # CloudWatch Logs checking its destination: no event
                if message_type != "DATA_MESSAGE":
                    yield InvalidEvent(
                        "invalid_value",
                        f"CloudWatch Logs messageType {str(message_type)[:40]!r}",
                    )
                    return
            api_version = doc.get("apiVersion")
            if api_version is not None and api_version not in API_VERSIONS:
                yield InvalidEvent(
                    "unknown_api_version", f"EventList apiVersion {str(api_version)[:60]!r}"
                )
                return
            found = doc.get(key) if raw_items is None else raw_items
            if found is None:
                return  # an empty EventList serialises its items as null
            if type(found) is not list:
                yield InvalidEvent("wrong_type", f"{key} must be a list")
                return
            items = found
            if key in _CLOUDWATCH_KEYS and raw_items is None:
                yield from self._messages(items)
                return
        elif raw_items is not None:
            # split, but not a list: an object whose "items" is too deep
            yield InvalidEvent("too_deep", "nested deeper than the JSON parser goes")
            return
        else:
            # A single event.
            try:
                if size > self.max_event_bytes:
                    raise self._too_large(size)
                yield self._resolve(doc, raw)
            except InvalidEvent as e:
                yield e
            return
        # Only a document larger than the limit can hold an item over it.
        check_size = size > self.max_event_bytes
        for index, item in enumerate(items):
            kind = type(item)
            if kind is not dict and kind is not bytes:
                yield not_an_object(item)
                continue
            try:
                if check_size and kind is dict:
                    n = len(dumps_event(item))
                    if n > self.max_event_bytes:
                        raise self._too_large(n)
                yield self._resolve(item, None)
            except InvalidEvent as e:
                e.line = index
                yield e

    def _messages(self, items: list[Any]) -> Iterator[Item]:
        """CloudWatch Logs events: each ``message`` is the API server's JSON
        line, read as a line of JSON lines is (its fast path); an item
        without a string message is read as any other item."""
        decode = self.decode_record
        for index, item in enumerate(items):
            message = item.get("message") if type(item) is dict else None
            if type(message) is not str:
                try:
                    yield self._resolve(item, None) if type(item) is dict else not_an_object(item)
                except InvalidEvent as e:
                    e.line = index
                    yield e
                continue
            for found in decode(message.encode()):
                if type(found) is not AuditEvent:
                    found.line = index  # type: ignore[union-attr]
                yield found

    def _resolve(self, payload: Any, raw: bytes | None) -> AuditEvent:
        """The event in ``payload`` (a line's bytes or a decoded object),
        unwrapping managed-cluster exports in a loop; raises InvalidEvent,
        and nothing else: an unexpected error is this item's refusal."""
        try:
            return self._unwrapped(payload, raw)
        except InvalidEvent:
            raise
        except Exception as e:  # a decoder bug must not take the batch with it
            raise InvalidEvent(
                "invalid_value", f"undecodable: {type(e).__name__}: {e}"[:200]
            ) from None

    def _unwrapped(self, payload: Any, raw: bytes | None) -> AuditEvent:
        wrappers = 0
        while True:
            if type(payload) is bytes:
                if len(payload) > self.max_event_bytes:
                    raise self._too_large(len(payload))
                line = payload.rstrip(b"\r\n")
                ev = fast_event(line)
                if ev is not None:
                    return ev
                payload, raw = _parse(line), line
            inner = _inner(payload)
            if inner is None:
                return AuditEvent(payload, raw)
            wrappers += 1
            if wrappers > MAX_WRAPPERS:
                raise InvalidEvent("too_deep", f"more than {MAX_WRAPPERS} nested wrappers")
            payload, raw = inner, None

    def _too_large(self, size: int) -> InvalidEvent:
        return InvalidEvent(
            "too_large", f"{size} bytes is over the {self.max_event_bytes} byte limit"
        )


def _inner(obj: Any) -> bytes | dict[str, Any] | None:
    """None when ``obj`` is to be read as an event, the payload when it wraps
    one; raises InvalidEvent when it is neither."""
    if type(obj) is not dict:
        raise not_an_object(obj)
    kind = obj.get("kind", "Event")
    if type(kind) is not str:
        raise InvalidEvent("wrong_type", "kind must be a string")
    if kind != "Event":
        unwrapped = _unwrap(obj)
        if unwrapped is not None:
            return unwrapped
        raise InvalidEvent("not_an_event", f"kind {kind[:40]!r} is not an audit Event")
    api_version = obj.get("apiVersion")
    if api_version is not None and api_version not in API_VERSIONS:
        if type(api_version) is not str:
            raise InvalidEvent("wrong_type", "apiVersion must be a string")
        raise InvalidEvent("unknown_api_version", f"apiVersion {api_version[:60]!r}")
    if "auditID" not in obj and "stage" not in obj:
        unwrapped = _unwrap(obj)
        if unwrapped is not None:
            return unwrapped
        if "kind" not in obj and "apiVersion" not in obj:
            raise InvalidEvent("not_an_event", "no kind, apiVersion, auditID or stage")
    return None


def _parse(line: bytes) -> Any:
    """One JSON value; raises InvalidEvent (invalid_json or too_deep)."""
    try:
        return loads(line)
    except orjson.JSONDecodeError as e:
        if _depth_error(e):
            raise InvalidEvent("too_deep", "nested deeper than the JSON parser goes") from None
        raise InvalidEvent("invalid_json", str(e)) from None


def _parse_whole(data: bytes) -> tuple[Any, list[bytes] | None]:
    """One JSON document, and its items' bytes when it is an array or an
    EventList too deep to parse whole; raises InvalidEvent.

    msgspec first: it builds the objects as it parses, where orjson holds an
    intermediate tree of 16 bytes a value beside them (an EventList of 32
    million integers peaked 500 MB higher); orjson (via loads) decides what
    msgspec refuses, so the accepted documents are those of loads."""
    try:
        return _decode_lenient(data), None
    except (msgspec.DecodeError, RecursionError, ValueError):
        pass
    try:
        return loads(data), None
    except orjson.JSONDecodeError as e:
        if not _depth_error(e):
            raise InvalidEvent("invalid_json", str(e)) from None
    split = split_items(data)
    if split is None:
        raise InvalidEvent("too_deep", "nested deeper than the JSON parser goes")
    skeleton, items = split
    return ([] if skeleton is None else _parse(skeleton)), items


_RAW_DECODE = json.JSONDecoder().raw_decode


def _concatenated(data: bytes) -> Iterator[bytes | InvalidEvent] | None:
    """The documents of ``data`` when it is CloudWatch Logs subscription
    payloads written one after the other with nothing between them, as
    Firehose writes them to S3; None when it is not (JSON lines, garbage, a
    single damaged document). A document that cannot be read ends it, as a
    refusal of the rest."""
    if data[:1] != b"{" or b"}{" not in data:
        return None
    try:
        text = data.decode()
        first, end = _RAW_DECODE(text)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep
        return None
    if type(first) is not dict or "messageType" not in first or text[end : end + 1] != "{":
        return None
    return _documents(text, end)


def _documents(text: str, end: int) -> Iterator[bytes | InvalidEvent]:
    yield text[:end].encode()
    start, size = end, len(text)
    while start < size:
        try:
            _, end = _RAW_DECODE(text, start)
        except (ValueError, RecursionError) as e:
            yield InvalidEvent("invalid_json", f"at character {start}: {str(e)[:100]}")
            return
        yield text[start:end].encode()
        if end < size and text[end] != "{":
            yield InvalidEvent("invalid_json", f"unexpected {text[end]!r} at character {end}")
            return
        start = end


def _depth_error(e: orjson.JSONDecodeError) -> bool:
    return "depth" in e.msg or "recursion" in e.msg.lower()


def is_document(doc: Any) -> bool:
    """Is this decoded JSON a list of events (an array, an EventList, an
    Azure Monitor or CloudWatch Logs export)?"""
    if type(doc) is list:
        return True
    if type(doc) is not dict:
        return False
    if doc.get("kind") == "EventList":
        return True
    # an EventList without kind and apiVersion, Azure Monitor's
    # {"records": [...]} (an Event Hubs message from AKS diagnostic settings),
    # or a CloudWatch Logs export (EKS)
    return _items_key(doc) in doc and "kind" not in doc and "auditID" not in doc


# The documents whose items are CloudWatch Logs events (see _items_key).
_CLOUDWATCH_KEYS = frozenset({"events", "logEvents"})


def _items_key(doc: dict[str, Any]) -> str:
    """Where a document keeps its items: ``items`` (an EventList),
    ``records`` (an Azure Monitor export: diagnostic settings' Event Hubs
    messages and the storage account's blobs of the old format), ``events``
    (the output of ``aws logs filter-log-events`` or ``get-log-events``) or
    ``logEvents`` (a CloudWatch Logs subscription payload, as delivered to
    Firehose, Kinesis or Lambda once gunzipped)."""
    if "messageType" in doc and type(doc.get("logEvents")) is list:
        return "logEvents"
    if "items" not in doc:
        if type(doc.get("events")) is list:
            return "events"
        if "records" in doc:
            return "records"
    return "items"


def _unwrap(obj: dict[str, Any]) -> bytes | dict[str, Any] | None:
    """The audit event inside a managed-cluster export, when ``obj`` is one.

    AKS diagnostic settings (categories kube-audit, kube-audit-admin) wrap the
    API server's JSON line as a string in ``properties.log``; Azure Log
    Analytics queries return it in ``log_s``; CloudWatch Logs (EKS) in
    ``message``. Some exports carry the event as an object instead of a string.
    A GKE Cloud Audit Log entry (``protoPayload`` an AuditLog) is rebuilt as
    an event by :func:`~exporter.gke_entry.entry_to_event`.
    """
    if is_log_entry(obj):
        return entry_to_event(obj)
    props = obj.get("properties")
    if type(props) is dict:
        inner = props.get("log")
        if type(inner) is str:
            return inner.encode()
        if type(inner) is dict:
            return inner  # an event, or another wrapper (counted by the caller)
    if type(obj.get("log_s")) is str:
        return str(obj["log_s"]).encode()
    # A CloudWatch Logs event (EKS control-plane logging): the API server's
    # JSON line in ``message``, beside an integer ``timestamp`` (ms).
    if type(obj.get("message")) is str and type(obj.get("timestamp")) is int:
        return str(obj["message"]).encode()
    return None
