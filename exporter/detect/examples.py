"""`rules test`: every rule's examples, run like `promtool test rules`.

Each example runs against a fresh Detector holding only its rule, with the
rule file's ``example_settings``. A ``match`` example must fire the rule on
its last event and not before; a ``no_match`` example must never fire it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..event import AuditEvent, Decoder, InvalidEvent
from .engine import Detector
from .rules import Example, Rule, RuleFile, RuleSet
from .settings import DetectionSettings, utc_text

BASE_TIME = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC).timestamp()
DEFAULT_GAP = 1.0


@dataclass
class Failure:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class ExampleReport:
    rules: int = 0
    examples: int = 0
    failures: list[Failure] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _uri(obj: dict[str, Any]) -> str:
    ref = obj.get("objectRef")
    if not isinstance(ref, dict) or not ref.get("resource"):
        return "/"
    group = ref.get("apiGroup") or ""
    version = ref.get("apiVersion") or "v1"
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    parts = [base]
    if ref.get("namespace"):
        parts.append(f"namespaces/{ref['namespace']}")
    parts.append(str(ref["resource"]))
    if ref.get("name"):
        parts.append(str(ref["name"]))
    if ref.get("subresource"):
        parts.append(str(ref["subresource"]))
    return "/".join(parts)


def complete_event(event: dict[str, Any], seq: int, ts: float) -> dict[str, Any]:
    """An example event with what the API server always writes filled in."""
    obj = dict(event)
    obj.setdefault("kind", "Event")
    obj.setdefault("apiVersion", "audit.k8s.io/v1")
    obj.setdefault("level", "RequestResponse" if "requestObject" in obj else "Metadata")
    obj.setdefault("auditID", f"00000000-0000-4000-8000-{seq:012d}")
    obj.setdefault("stage", "ResponseComplete")
    obj.setdefault("requestURI", _uri(obj))
    if "stageTimestamp" not in obj:
        obj["stageTimestamp"] = utc_text(ts)
    obj.setdefault("requestReceivedTimestamp", obj["stageTimestamp"])
    if "responseStatus" not in obj and obj["stage"] != "RequestReceived":
        obj["responseStatus"] = {
            "metadata": {},
            "code": 201 if obj.get("verb") == "create" else 200,
        }
    return obj


def _numbered(value: Any, n: int) -> Any:
    """``{{i}}`` in the strings of a repeated event becomes its repetition number."""
    if isinstance(value, str):
        return value.replace("{{i}}", str(n))
    if isinstance(value, dict):
        return {k: _numbered(v, n) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbered(v, n) for v in value]
    return value


def example_events(example: Example, decoder: Decoder | None = None) -> list[AuditEvent]:
    """The example's events, decoded as the pipeline would decode them."""
    decoder = decoder or Decoder()
    out: list[AuditEvent] = []
    ts = BASE_TIME
    seq = 0
    for i, item in enumerate(example.events):
        for r in range(item.repeat):
            if i or r:
                ts += item.after if item.after is not None else DEFAULT_GAP
            seq += 1
            fields = _numbered(item.event, r + 1) if item.repeat > 1 else item.event
            obj = complete_event(fields, seq, ts)
            out.append(decoder.decode_object(obj))
    return out


def run_example(rule: Rule, settings: DetectionSettings, example: Example) -> str | None:
    """None when the example behaves as expected, else what went wrong."""
    try:
        events = example_events(example)
    except InvalidEvent as e:
        return f"the example is not a valid audit event: {e}"
    solo = dataclasses.replace(rule, enabled=True)
    detector = Detector(RuleSet([RuleFile(rule.source, [solo], settings)]), settings)
    fired: list[int] = []
    for i, ev in enumerate(events):
        detector([ev])
        if rule.id in ev.rules:
            fired.append(i + 1)
    n = len(events)
    if example.expect:
        if not fired:
            return f"expected the rule to fire on event {n} of {n}; it never fired"
        if fired != [n]:
            return f"expected the rule to fire on event {n} of {n} only; it fired on {fired}"
        return None
    if fired:
        return f"expected no match; the rule fired on event(s) {fired} of {n}"
    return None


def run_examples(ruleset: RuleSet) -> ExampleReport:
    report = ExampleReport()
    for rf in ruleset.files:
        for rule in rf.rules:
            report.rules += 1
            _test_rule(rule, rf, report)
    return report


def _test_rule(rule: Rule, rf: RuleFile, report: ExampleReport) -> None:
    where = rule.where
    loc = f"{where.file}:{where.pos[0]}: {rule.id}"
    missing = rule.missing(rf.example_settings)
    if missing:
        report.failures.append(
            Failure(rule.id, loc, "needs " + ", ".join(missing) + " in the file's example_settings")
        )
        return
    kinds = {ex.expect for ex in rule.examples}
    if True not in kinds:
        report.failures.append(Failure(rule.id, loc, "has no `match` example"))
    if False not in kinds:
        report.failures.append(Failure(rule.id, loc, "has no `no_match` example"))
    for ex in rule.examples:
        report.examples += 1
        problem = run_example(rule, rf.example_settings, ex)
        if problem is not None:
            w = ex.where
            report.failures.append(
                Failure(rule.id, f"{w.file}:{w.pos[0]}: {rule.id} {w.path}", problem)
            )
