"""``kube-audit-exporter replay``: historical logs through the same pipeline,
as fast as possible, with a report that answers an auditor's questions."""

from __future__ import annotations

import gzip
import heapq
import io
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast

import orjson

from .event import AuditEvent, Decoder, InvalidEvent
from .metrics import counts_as_request, is_long_running
from .sensitive import categories

BATCH_LINES = 1000
SNIFF_BYTES = 1 << 16

Item = AuditEvent | InvalidEvent


class Progress:
    """A one-line progress indicator on stderr, only when it is a terminal."""

    def __init__(self, total_bytes: int | None, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.total = total_bytes
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, done_bytes: int, events: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        rate = events / max(now - self.start, 1e-9)
        size = f"{done_bytes / 1e6:,.1f} MB"
        if self.total:
            pct = min(100.0, 100.0 * done_bytes / self.total)
            width = 30
            filled = int(width * pct / 100)
            size = f"[{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}% {size}"
        self.stream.write(f"\r{size}  {events:,} events  {rate:,.0f}/s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class _Counting(io.RawIOBase):
    """Counts the compressed bytes read, for progress on .gz files."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        return n


def open_input(path: str) -> tuple[IO[bytes], _Counting | None, int | None]:
    """(binary stream, byte counter, total size) for a path, ``.gz`` or ``-``."""
    if path == "-":
        return sys.stdin.buffer, None, None
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    size: int | None
    try:
        import os

        size = os.fstat(raw.fileno()).st_size
    except OSError:
        size = None
    counter = _Counting(raw)
    if path.endswith(".gz"):
        gz = gzip.GzipFile(fileobj=io.BufferedReader(counter))
        return cast(IO[bytes], gz), counter, size
    return io.BufferedReader(counter, buffer_size=1 << 20), counter, size


def read_batches(
    stream: IO[bytes], decoder: Decoder, batch_lines: int = BATCH_LINES
) -> Iterator[list[Item]]:
    """Batches of decoded items from JSON lines, or from one JSON document
    (a pretty-printed Event, an EventList, an array) when the input starts
    with a value that spans lines."""
    head = stream.read(SNIFF_BYTES)
    if not head:
        return
    if _starts_multiline_document(head):
        body = head + stream.read()
        items = list(decoder.decode_document(body))
        for i in range(0, len(items), batch_lines):
            yield items[i : i + batch_lines]
        return
    batch: list[Item] = []
    decode = decoder.decode_line
    lineno = 0
    for line in _lines(head, stream):
        lineno += 1
        if not line.strip():
            continue
        try:
            batch.append(decode(line))
        except InvalidEvent as e:
            e.line = lineno
            batch.append(e)
        if len(batch) >= batch_lines:
            yield batch
            batch = []
    if batch:
        yield batch


def _lines(head: bytes, stream: IO[bytes]) -> Iterator[bytes]:
    nl = head.rfind(b"\n")
    if nl < 0:
        rest = stream.readline()
        yield head + rest
        yield from stream
        return
    yield from head[: nl + 1].splitlines(keepends=True)
    tail = head[nl + 1 :]
    if tail:
        yield tail + stream.readline()
    yield from stream


def _starts_multiline_document(head: bytes) -> bool:
    text = head.lstrip()
    if not text or text[:1] not in (b"{", b"["):
        return False
    first = text.split(b"\n", 1)[0]
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return True  # the first line is not a value by itself
    return False


# --- the report ---------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Report:
    """What an auditor asks of a log, accumulated batch by batch with bounded
    memory (counters of distinct values; lists capped)."""

    max_rows: int = 1000
    files: int = 0
    events: int = 0
    requests: int = 0
    duplicates: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    first_ts: float | None = None
    last_ts: float | None = None
    by_request: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    users: Counter[str] = field(default_factory=Counter)
    user_agents: Counter[str] = field(default_factory=Counter)
    auth_failures_by_user: Counter[tuple[str, str]] = field(default_factory=Counter)
    auth_failures_by_ip: Counter[tuple[str, str]] = field(default_factory=Counter)
    sensitive_counts: Counter[str] = field(default_factory=Counter)
    sensitive: list[dict[str, Any]] = field(default_factory=list)
    _slowest: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    _seq: int = 0

    def __call__(self, events: list[AuditEvent]) -> None:
        """A pipeline processor: sees each accepted, non-duplicate batch."""
        for ev in events:
            self.events += 1
            ts = ev.stage_ts
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
            if not counts_as_request(ev):
                continue
            self.requests += 1
            code = str(ev.code) if ev.code else "unknown"
            self.by_request[(ev.verb, ev.resource_label, code)] += 1
            who = ev.username or "(unauthenticated)"
            self.users[who] += 1
            if ev.user_agent:
                self.user_agents[ev.user_agent] += 1
            if ev.code in (401, 403):
                reason = "unauthenticated" if ev.code == 401 else "forbidden"
                self.auth_failures_by_user[(who, reason)] += 1
                if ev.source_ip:
                    self.auth_failures_by_ip[(ev.source_ip, reason)] += 1
            cats = categories(ev)
            if cats:
                for c in cats:
                    self.sensitive_counts[c] += 1
                if len(self.sensitive) < self.max_rows:
                    self.sensitive.append({"categories": list(cats), **_who_what(ev)})
            if ev.stage == "ResponseComplete" and not is_long_running(ev):
                self._seq += 1
                took = ev.stage_ts - ev.received_ts
                if len(self._slowest) < 10:
                    heapq.heappush(self._slowest, (took, self._seq, _who_what(ev)))
                elif took > self._slowest[0][0]:
                    heapq.heapreplace(self._slowest, (took, self._seq, _who_what(ev)))

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        return {
            "files": self.files,
            "events": self.events,
            "requests": self.requests,
            "duplicates": self.duplicates,
            "invalid": dict(sorted(self.invalid.items())),
            "first_event": _iso(self.first_ts) if self.first_ts is not None else None,
            "last_event": _iso(self.last_ts) if self.last_ts is not None else None,
            "requests_by_verb_resource_code": [
                {"verb": v, "resource": r, "code": c, "count": n}
                for (v, r, c), n in sorted(self.by_request.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "top_users": [{"user": u, "count": n} for u, n in self.users.most_common(top)],
            "top_user_agents": [
                {"user_agent": u, "count": n} for u, n in self.user_agents.most_common(top)
            ],
            "auth_failures_by_user": [
                {"user": u, "reason": r, "count": n}
                for (u, r), n in self.auth_failures_by_user.most_common(top)
            ],
            "auth_failures_by_source_ip": [
                {"source_ip": ip, "reason": r, "count": n}
                for (ip, r), n in self.auth_failures_by_ip.most_common(top)
            ],
            "sensitive_operations": {
                "counts": dict(sorted(self.sensitive_counts.items())),
                "events": self.sensitive,
            },
            "slowest_requests": [
                {"duration_seconds": round(d, 6), **row}
                for d, _, row in sorted(self._slowest, key=lambda t: (-t[0], t[1]))
            ],
        }


def _who_what(ev: AuditEvent) -> dict[str, Any]:
    return {
        "time": _iso(ev.stage_ts),
        "user": ev.username or "(unauthenticated)",
        "impersonated_user": ev.impersonated_user or None,
        "verb": ev.verb,
        "resource": ev.resource_label,
        "namespace": ev.namespace or None,
        "name": ev.name or None,
        "code": ev.code,
        "source_ip": ev.source_ip or None,
        "user_agent": ev.user_agent or None,
        "audit_id": ev.audit_id,
    }


def render_text(d: dict[str, Any], top: int = 10) -> str:
    out: list[str] = []
    add = out.append
    add(
        f"{d['events']:,} events ({d['requests']:,} requests) from {d['files']} file(s), "
        f"{d['first_event'] or '-'} .. {d['last_event'] or '-'}"
    )
    invalid = d["invalid"]
    add(
        f"invalid inputs: {sum(invalid.values()):,}"
        + (" (" + ", ".join(f"{k} {v:,}" for k, v in invalid.items()) + ")" if invalid else "")
        + f"; duplicates dropped: {d['duplicates']:,}"
    )

    def table(title: str, rows: list[dict[str, Any]], cols: list[str]) -> None:
        add("")
        add(title)
        if not rows:
            add("  (none)")
            return
        cells = [[_cell(r.get(c)) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        header = "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))
        add(("  " + header).rstrip())
        for row in cells:
            add("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

    table(
        f"Requests by verb, resource and code (top {top * 2})",
        d["requests_by_verb_resource_code"][: top * 2],
        ["count", "verb", "resource", "code"],
    )
    table("Top users", d["top_users"], ["count", "user"])
    table("Top user agents", d["top_user_agents"], ["count", "user_agent"])
    table("Auth failures by user", d["auth_failures_by_user"], ["count", "reason", "user"])
    table(
        "Auth failures by source IP",
        d["auth_failures_by_source_ip"],
        ["count", "reason", "source_ip"],
    )
    sens = d["sensitive_operations"]
    counts = sens["counts"]
    add("")
    add(
        "Sensitive operations: "
        + (", ".join(f"{k} {v:,}" for k, v in counts.items()) if counts else "none")
    )
    # Up to ``top`` rows of each category, so one busy category cannot hide the others.
    shown: Counter[str] = Counter()
    rows = []
    for r in sens["events"]:
        if all(shown[c] >= top for c in r["categories"]):
            continue
        shown.update(r["categories"])
        rows.append({**r, "categories": ",".join(r["categories"])})
    if rows:
        table(
            f"Sensitive operations (first {top} of each kind; --output json lists more)",
            rows,
            ["time", "categories", "user", "verb", "resource", "namespace", "name", "code",
             "source_ip"],
        )  # fmt: skip
    table(
        "Slowest requests",
        d["slowest_requests"],
        ["duration_seconds", "time", "user", "verb", "resource", "namespace", "name", "code"],
    )
    return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
