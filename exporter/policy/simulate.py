"""``policy simulate``: what a policy would have done to recorded events.

Each recorded event is evaluated as the API server would have evaluated its
request; the event is *written* when the level is not None and its stage is
not omitted. Its size under the new policy is estimated from the recorded
event: request and response bodies are removed below Request and
RequestResponse, and managed fields when they are omitted. When the new level
needs bodies the recording does not have (recorded at Metadata, simulated at
RequestResponse), the estimate is a lower bound and the event is counted in
``bodiesUnknown``.

``--output json`` writes JSON lines: one object per event, in input order,

    {"auditID": ..., "stage": ..., "level": ..., "rule": 3, "omitStages": [...]}

(``rule`` is the 0-based index of the deciding rule, null when none matched;
with ``--compare`` each also has ``"compare": {"level", "rule", "omitStages"}``
for the second policy), then one last object ``{"summary": {...}}`` with
``events``, ``invalid`` (per reason), ``recordedBytes``, ``levels``,
``written`` (events, bytes, bodiesUnknown), ``rules`` (per rule: index, line,
level, matched, written, bytes, bodiesUnknown), ``default`` (the same for
events no rule matched), ``neverMatched`` (rule indexes), ``noisiest`` (user,
verb, resource, events, bytes, rules, suggestion, insertBefore, note) and, with
``--compare``, ``compare`` (written, delta, changed, transitions, examples).
An event counts as written when its level is not None and its stage is not
omitted; ``notWritten`` in transitions means it is not.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..event import AuditEvent, dumps_event
from .attributes import attributes_from_event
from .evaluate import Attributes, Decision, Evaluator
from .lint import SENSITIVE
from .model import (
    LEVEL_METADATA,
    LEVEL_NONE,
    LEVEL_ORDER,
    LEVEL_REQUEST,
    LEVEL_REQUEST_RESPONSE,
    LEVELS,
    Policy,
)

READ_VERBS = frozenset({"get", "list", "watch", "head", "options"})
NOT_WRITTEN = "notWritten"


@dataclass(frozen=True)
class EventResult:
    audit_id: str
    stage: str
    decision: Decision
    written: bool
    bytes: int  # estimated size of the written event; 0 when it is not written
    bodies_unknown: bool

    @property
    def effective_level(self) -> str:
        return self.decision.level if self.written else NOT_WRITTEN

    def to_dict(self) -> dict[str, Any]:
        """The per-event record of ``--output json``."""
        return {
            "auditID": self.audit_id,
            "stage": self.stage,
            "level": self.decision.level,
            "rule": self.decision.rule,
            "omitStages": list(self.decision.omit_stages),
        }


@dataclass
class Volume:
    matched: int = 0  # events this rule decided
    written: int = 0  # of those, events that would be written
    bytes: int = 0
    bodies_unknown: int = 0

    def add(self, result: EventResult) -> None:
        self.matched += 1
        if result.written:
            self.written += 1
            self.bytes += result.bytes
            self.bodies_unknown += int(result.bodies_unknown)

    def to_dict(self) -> dict[str, int]:
        return {
            "matched": self.matched,
            "written": self.written,
            "bytes": self.bytes,
            "bodiesUnknown": self.bodies_unknown,
        }


@dataclass(frozen=True)
class NoiseKey:
    """A (user, verb, resource) combination; ``user`` is None for a request
    without one (failed authentication)."""

    user: str | None
    verb: str
    resource_request: bool
    group: str
    resource: str  # "pods" or "pods/log"; "" for non-resource requests
    path: str  # the URL path of a non-resource request

    @property
    def label(self) -> str:
        if not self.resource_request:
            return self.path
        return f"{self.group}/{self.resource}" if self.group else self.resource

    @classmethod
    def of(cls, attrs: Attributes) -> NoiseKey:
        user = attrs.user.name if attrs.user is not None else None
        if attrs.resource_request:
            resource = attrs.resource
            if attrs.subresource:
                resource += "/" + attrs.subresource
            return cls(user, attrs.verb, True, attrs.api_group, resource, "")
        return cls(user, attrs.verb, False, "", "", attrs.path)


@dataclass
class Noise:
    events: int = 0
    bytes: int = 0
    rules: set[int] = field(default_factory=set)
    levels: set[str] = field(default_factory=set)


def is_sensitive(key: NoiseKey) -> bool:
    """Secrets, ConfigMaps, TokenReviews, TokenRequests: the linter's list."""
    return key.resource_request and any(
        key.group == t.group
        and key.resource == (f"{t.resource}/{t.subresource}" if t.subresource else t.resource)
        for t in SENSITIVE
    )


def _advice(key: NoiseKey, noise: Noise) -> dict[str, Any]:
    """The suggestion for a noisy combination, in line with the linter and
    the recommended policy: reads of ordinary objects may go (None); writes
    and secrets stay audited, at Metadata when they are logged with bodies
    now, else as they are (no suggestion, a note says why)."""
    sensitive = is_sensitive(key)
    write = key.verb not in READ_VERBS
    if not sensitive and not write:
        return {"suggestion": suggested_rule(key)}
    why = (
        "secrets and tokens: a None rule would hide who accessed them"
        if sensitive
        else "these are writes: a None rule would lose who changed what"
    )
    if max((LEVEL_ORDER[level] for level in noise.levels), default=0) > LEVEL_ORDER[LEVEL_METADATA]:
        return {
            "suggestion": suggested_rule(key, LEVEL_METADATA),
            "note": f"{why}; Metadata keeps who did what without the bodies",
        }
    return {"suggestion": None, "note": f"{why}; already at Metadata, keep it"}


def _strip_managed_fields(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    out = dict(body)
    meta = out.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    items = out.get("items")
    if isinstance(items, list):
        out["items"] = [_strip_managed_fields(item) for item in items]
    return out


def estimate_size(event: dict[str, Any], level: str, omit_managed_fields: bool) -> tuple[int, bool]:
    """(bytes of the event written at ``level``, whether bodies it needs are
    missing from the recording)."""
    if level == LEVEL_NONE:
        return 0, False
    target = LEVEL_ORDER[level]
    recorded = event.get("level")
    recorded_order = LEVEL_ORDER.get(recorded, 0) if isinstance(recorded, str) else 0
    bodies_unknown = target >= LEVEL_ORDER[LEVEL_REQUEST] and recorded_order < target
    out = dict(event)
    out["level"] = level
    if target < LEVEL_ORDER[LEVEL_REQUEST]:
        out.pop("requestObject", None)
    if target < LEVEL_ORDER[LEVEL_REQUEST_RESPONSE]:
        out.pop("responseObject", None)
    if omit_managed_fields:
        for key in ("requestObject", "responseObject"):
            if key in out:
                out[key] = _strip_managed_fields(out[key])
    return len(dumps_event(out)) + 1, bodies_unknown


def suggested_rule(key: NoiseKey, level: str = LEVEL_NONE) -> str:
    """A rule (YAML) for exactly this combination: ``level: None`` silences
    it, ``level: Metadata`` keeps who did what without the bodies."""
    q = json.dumps
    lines = [f"- level: {level}"]
    if key.user is not None:
        lines.append(f"  users: [{q(key.user)}]")
    lines.append(f"  verbs: [{q(key.verb)}]")
    if key.resource_request:
        lines.append("  resources:")
        lines.append(f"    - group: {q(key.group)}")
        lines.append(f"      resources: [{q(key.resource)}]")
    else:
        lines.append(f"  nonResourceURLs: [{q(key.path)}]")
    return "\n".join(lines) + "\n"


class Simulation:
    """Evaluates events one by one and keeps the volume per rule."""

    def __init__(self, policy: Policy, source: str = "", top: int = 10) -> None:
        self.policy = policy
        self.source = source
        self.top = top
        self.evaluator = Evaluator(policy)
        self.rules = [Volume() for _ in policy.rules]
        self.default = Volume()
        self.levels: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.events = 0
        self.recorded_bytes = 0
        self.noise: dict[NoiseKey, Noise] = {}

    def add(self, event: AuditEvent) -> EventResult:
        attrs = attributes_from_event(event)
        decision = self.evaluator.decide(attrs)
        written = decision.writes(event.stage)
        size, unknown = (0, False)
        if written:
            size, unknown = estimate_size(event.obj, decision.level, decision.omit_managed_fields)
        result = EventResult(event.audit_id, event.stage, decision, written, size, unknown)
        self.events += 1
        self.recorded_bytes += len(event.to_bytes()) + 1
        self.levels[decision.level] += 1
        volume = self.default if decision.rule is None else self.rules[decision.rule]
        volume.add(result)
        if written:
            noise = self.noise.setdefault(NoiseKey.of(attrs), Noise())
            noise.events += 1
            noise.bytes += size
            noise.levels.add(decision.level)
            if decision.rule is not None:
                noise.rules.add(decision.rule)
        return result

    def add_invalid(self, reason: str, count: int = 1) -> None:
        self.invalid[reason] += count

    @property
    def written(self) -> Volume:
        total = Volume()
        for volume in [*self.rules, self.default]:
            total.matched += volume.matched
            total.written += volume.written
            total.bytes += volume.bytes
            total.bodies_unknown += volume.bodies_unknown
        return total

    def never_matched(self) -> list[int]:
        return [i for i, volume in enumerate(self.rules) if volume.matched == 0]

    def noisiest(self) -> list[dict[str, Any]]:
        ranked = sorted(self.noise.items(), key=lambda kv: (-kv[1].events, -kv[1].bytes))
        out = []
        for key, noise in ranked[: self.top]:
            entry: dict[str, Any] = {
                "user": key.user,
                "verb": key.verb,
                "resource": key.label,
                "events": noise.events,
                "bytes": noise.bytes,
                "rules": sorted(noise.rules),
            }
            if key.user is None:
                entry["suggestion"] = None
                entry["note"] = (
                    "requests without a user (failed authentication): a rule cannot select "
                    "them by user, and dropping them hides attacks"
                )
            else:
                entry.update(_advice(key, noise))
                entry["insertBefore"] = min(noise.rules) if noise.rules else None
            out.append(entry)
        return out

    def summary(self) -> dict[str, Any]:
        rules = []
        for i, (rule, volume) in enumerate(zip(self.policy.rules, self.rules, strict=True)):
            rules.append(
                {
                    "index": i,
                    "line": rule.location.line if rule.location else None,
                    "level": rule.level,
                    **volume.to_dict(),
                }
            )
        written = self.written
        return {
            "policy": self.source,
            "events": self.events,
            "invalid": dict(sorted(self.invalid.items())),
            "recordedBytes": self.recorded_bytes,
            "levels": {level: self.levels.get(level, 0) for level in LEVELS},
            "written": {
                "events": written.written,
                "bytes": written.bytes,
                "bodiesUnknown": written.bodies_unknown,
            },
            "rules": rules,
            "default": {"level": LEVEL_NONE, **self.default.to_dict()},
            "neverMatched": self.never_matched(),
            "noisiest": self.noisiest(),
        }


class Comparison:
    """Two policies over the same events, and where they differ."""

    def __init__(self, base: Simulation, other: Simulation, examples: int = 10) -> None:
        self.base = base
        self.other = other
        self.max_examples = examples
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.changed = 0
        self.examples: list[dict[str, Any]] = []

    def add(self, event: AuditEvent) -> tuple[EventResult, EventResult]:
        a = self.base.add(event)
        b = self.other.add(event)
        if a.effective_level != b.effective_level:
            self.changed += 1
            self.transitions[(a.effective_level, b.effective_level)] += 1
            if len(self.examples) < self.max_examples:
                self.examples.append(
                    {
                        "auditID": event.audit_id,
                        "stage": event.stage,
                        "verb": event.verb,
                        "requestURI": event.request_uri,
                        "user": event.username or None,
                        "from": {"level": a.effective_level, "rule": a.decision.rule},
                        "to": {"level": b.effective_level, "rule": b.decision.rule},
                    }
                )
        return a, b

    def add_invalid(self, reason: str, count: int = 1) -> None:
        self.base.add_invalid(reason, count)
        self.other.add_invalid(reason, count)

    def summary(self) -> dict[str, Any]:
        a = self.base.written
        b = self.other.written
        return {
            "policy": self.other.source,
            "written": {"events": b.written, "bytes": b.bytes, "bodiesUnknown": b.bodies_unknown},
            "delta": {"events": b.written - a.written, "bytes": b.bytes - a.bytes},
            "changed": self.changed,
            "transitions": [
                {"from": f, "to": t, "events": n}
                for (f, t), n in sorted(self.transitions.items(), key=lambda kv: -kv[1])
            ],
            "examples": self.examples,
        }
