"""Real audit events from ../shared/corpora, with the bytes they came from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from exporter.event import AuditEvent, Decoder, InvalidEvent

SKIP_SUFFIXES = (".md", ".csv")


@dataclass
class CorpusEvent:
    where: str
    # The exact input line when the file is JSON lines, else None.
    line: bytes | None
    event: AuditEvent


def _json_lines(data: bytes) -> list[bytes] | None:
    lines = [ln.rstrip(b"\r") for ln in data.split(b"\n") if ln.strip()]
    for ln in lines:
        try:
            if type(orjson.loads(ln)) is not dict:
                return None
        except orjson.JSONDecodeError:
            return None
    return lines


def corpus_events(root: Path) -> list[CorpusEvent]:
    decoder = Decoder()
    out: list[CorpusEvent] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix in SKIP_SUFFIXES:
            continue
        data = path.read_bytes()
        rel = str(path.relative_to(root))
        lines = _json_lines(data)
        if lines is not None:
            for i, ln in enumerate(lines, 1):
                try:
                    ev = decoder.decode_line(ln)
                except InvalidEvent:
                    continue
                out.append(CorpusEvent(f"{rel}:{i}", ln if ev.raw == ln else None, ev))
            continue
        for item in decoder.decode_document(data):
            if isinstance(item, AuditEvent):
                out.append(CorpusEvent(rel, None, item))
    return out


def expected_ts_ns(obj: dict[str, object]) -> int:
    """The entry timestamp the exporter promises: stageTimestamp to the
    nanosecond (v1beta1: metadata.creationTimestamp, then timestamp)."""
    value = obj.get("stageTimestamp")
    if not isinstance(value, str):
        meta = obj.get("metadata")
        value = meta.get("creationTimestamp") if isinstance(meta, dict) else None
    if not isinstance(value, str):
        value = obj.get("timestamp")
    assert isinstance(value, str), obj
    head, _, rest = value.partition(".")
    if not rest:
        head = value.rstrip("Zz")
        rest = "Z"
    seconds = int(datetime.strptime(head[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    digits = rest.rstrip("Zz")
    return seconds * 1_000_000_000 + (int(digits.ljust(9, "0")) if digits else 0)


# Kinds whose bodies carry secret values: what redaction is tested on.
SECRET_KINDS = (b'"Secret"', b'"SecretList"', b'"TokenRequest"', b'"TokenReview"')


def unique_events(corpora: Path, n: int) -> list[AuditEvent]:
    """The first ``n`` perfspec events with distinct (auditID, stage)."""
    path = corpora / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"
    decoder = Decoder()
    out: list[AuditEvent] = []
    seen: set[tuple[str, str]] = set()
    with open(path, "rb") as f:
        for line in f:
            ev = decoder.decode_line(line)
            if (ev.audit_id, ev.stage) not in seen:
                seen.add((ev.audit_id, ev.stage))
                out.append(ev)
                if len(out) == n:
                    break
    return out
