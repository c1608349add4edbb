"""Rule files: loading, validation with located errors, the rule set.

A rule file is a YAML mapping::

    example_settings:          # optional: detection settings for `rules test`
      trusted_networks: [10.20.0.0/16]
    rules:
      - id: secret-deleted-by-human          # lower-case letters, digits, dashes
        title: Secret deleted by a person
        severity: warning                    # info, warning or critical
        mitre: T1485                         # ATT&CK technique(s)
        description: Why this matters and what to check.
        kind: match                          # match (default), threshold, sequence, first_seen
        stages: [ResponseComplete]           # default: ResponseStarted, ResponseComplete, Panic
        match: {verb: delete, objectRef.resource: secrets, $user_kind: human}
        except:                              # allow-list: any condition here suppresses
          - {objectRef.namespace: scratch}
        rationale: Why this severity.        # the reasoning behind `severity`
        peers:                               # the peer rules it corresponds to
          falco: [Falco k8saudit rule name]  # falco, sigma, elastic; {} when none
          sigma: [SigmaHQ rule title]
          elastic: [Elastic rule name]
        notify_once:                         # optional: one notification per group and window
          per: [user.username]               # paths: the group
          window: 1h
        refused:                             # optional: a refused attempt rates differently
          severity: info                     # the attempt (401/403) is reconnaissance...
          repeated: {count: 3, window: 10m}  # ...unless one user repeats it (optional)
          examples: {match: [...], no_match: [...]}
        examples:
          match: [<event>, ...]              # each must fire the rule
          no_match: [<event>, ...]           # none may fire it

Outcome changes severity: a ``refused`` section splits the rule in two (three
with ``repeated``). The rule itself keeps its severity for requests that
succeeded (code below 400, or no code yet: other failures such as 404 or 409
changed nothing and fire neither); ``<id>-refused`` takes the same condition on refused requests
(responseStatus.code 401 or 403) at ``refused.severity``; and
``<id>-refused-repeated``, a threshold per user, rises back to the rule's
severity when one user is refused ``count`` times within ``window``. Its
examples are the refused examples, repeated ``count`` times (fires) and
``count - 1`` times (does not). Only ``kind: match`` rules take ``refused``.

One notification per group: with ``notify_once``, the rule's first match
for a group (the values of the ``per`` paths, "" where a path yields
nothing) rates at the rule's severity and is notified; the group's further
matches within ``window`` of it (event time) are still matches, marked on
the event and counted in rule_matches_total, but at ``info`` and not
notified. After the window the next match is notified again. A chart install
that brings a mutating and a validating webhook is one notification, not
five. The groups are kept in this process's memory (bounded by
detect.max_state_entries): with several replicas each notifies once. Only
rules above info take it; a ``refused`` variant at info drops it.

Stateful kinds, all on event time (stageTimestamp):

- ``threshold``: ``group_by`` (paths), ``window`` and ``count``: fires when
  ``count`` matching events of one group fall within ``window``, then starts
  counting afresh. With ``distinct`` (paths), it counts distinct values of
  those paths instead of events (ten different secrets, not one read ten times).
- ``sequence``: ``group_by``, ``window`` and ``steps`` (each ``name``,
  ``match``, optional ``count``): fires when the steps happen in order within
  ``window`` of the sequence's first event. ``match``/``except`` at the top
  apply to every step.
- ``first_seen``: ``group_by`` (the key), ``value`` (a path), ``ttl`` and
  optional ``learning``: fires when the key shows a value not seen for it
  within ``ttl``; during the first ``learning`` after the rule's first event
  values are only remembered.

Examples of stateful rules are lists of events: ``{events: [<event> |
{event: <event>, after: 30s, repeat: 3}, ...]}`` (``{{i}}`` in a repeated
event's strings is its repetition number); a ``match`` example must fire on
its last event and not before. Example events are audit events in
YAML; auditID, stage (ResponseComplete), timestamps (one second apart from
2024-05-01T10:00:00Z, or ``after`` the previous) and apiVersion are filled in
when missing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..duration import parse_duration
from ..event import STAGES
from . import located
from .errors import RuleError
from .located import LDict, LList, Where
from .matchers import And, Field, FieldCond, Node, Parser
from .paths import ATTRIBUTE_FIELDS, DERIVED, PathError, parse
from .settings import SEVERITIES, SEVERITY_RANK, DetectionSettings

KINDS = ("match", "threshold", "sequence", "first_seen")
DEFAULT_STAGES = frozenset({"ResponseStarted", "ResponseComplete", "Panic"})
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_MITRE = re.compile(r"^T\d{4}(?:\.\d{3})?$")
PEERS = ("falco", "sigma", "elastic")
# what "refused" means for the refused variants: authentication or authorization said no
REFUSED_CODES = (401, 403)
_RULE_KEYS = (
    "id",
    "title",
    "severity",
    "mitre",
    "description",
    "kind",
    "stages",
    "match",
    "except",
    "group_by",
    "window",
    "count",
    "distinct",
    "steps",
    "value",
    "ttl",
    "learning",
    "examples",
    "enabled",
    "rationale",
    "peers",
    "refused",
    "notify_once",
)
_KIND_KEYS = {
    "match": (),
    "threshold": ("group_by", "window", "count", "distinct"),
    "sequence": ("group_by", "window", "steps"),
    "first_seen": ("group_by", "value", "ttl", "learning"),
}
_STATE_KEYS = ("group_by", "window", "count", "distinct", "steps", "value", "ttl", "learning")


@dataclass
class Step:
    name: str
    match: Node
    count: int = 1


@dataclass
class ExampleEvent:
    event: dict[str, Any]
    after: float | None = None
    repeat: int = 1


@dataclass
class Example:
    expect: bool  # True: must fire (on the last event), False: must never fire
    events: list[ExampleEvent]
    where: Where


@dataclass
class Refused:
    """A rule's ``refused:`` section."""

    severity: str
    count: int = 0  # 0: no repeated variant
    window: float = 0.0
    examples: list[Example] = field(default_factory=list)


@dataclass
class Rule:
    id: str
    title: str
    severity: str
    description: str
    where: Where
    mitre: tuple[str, ...] = ()
    kind: str = "match"
    stages: frozenset[str] = DEFAULT_STAGES
    match: Node | None = None
    excepts: list[Node] = field(default_factory=list)
    group_by: tuple[str, ...] = ()
    window: float = 0.0
    count: int = 1
    distinct: tuple[str, ...] = ()
    steps: list[Step] = field(default_factory=list)
    value: str = ""
    ttl: float = 0.0
    learning: float = 0.0
    enabled: bool = True
    examples: list[Example] = field(default_factory=list)
    references: frozenset[str] = frozenset()
    source: str = ""
    rationale: str = ""
    peers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    refused: Refused | None = None
    # for the variants a `refused:` section makes: the rule they come from
    variant_of: str = ""
    # notify_once: the group's paths and the window (0: every match notifies)
    notify_per: tuple[str, ...] = ()
    notify_window: float = 0.0

    @property
    def stateful(self) -> bool:
        return self.kind != "match"

    def requirements(self) -> list[str]:
        """The settings this rule needs (``trusted_networks``...)."""
        out: list[str] = []
        for ref in sorted(self.references):
            if ref in DERIVED:
                out.extend(DERIVED[ref].requires)
            elif ref.startswith("$"):
                out.append(ref[1:])
        return sorted(set(out))

    def missing(self, settings: DetectionSettings) -> list[str]:
        """Settings this rule needs that are empty: it is inactive then."""
        return [r for r in self.requirements() if not settings.is_set(r)]


@dataclass
class RuleFile:
    path: str
    rules: list[Rule]
    example_settings: DetectionSettings


@dataclass
class RuleSet:
    files: list[RuleFile]

    @property
    def rules(self) -> list[Rule]:
        return [r for f in self.files for r in f.rules]

    def __len__(self) -> int:
        return sum(len(f.rules) for f in self.files)

    def get(self, rule_id: str) -> Rule | None:
        for r in self.rules:
            if r.id == rule_id:
                return r
        return None

    def __add__(self, other: RuleSet) -> RuleSet:
        merged = RuleSet(self.files + other.files)
        _check_unique(merged.rules)
        return merged


# --- loading -------------------------------------------------------------------------


def default_rule_files() -> list[str]:
    """The shipped rule files (package data), in a stable order."""
    root = resources.files("exporter.detect") / "rules"
    return sorted(str(p) for p in root.iterdir() if p.name.endswith(".yaml"))


def load_rules(paths: Sequence[str] | None = None, *, with_defaults: bool = False) -> RuleSet:
    """Load and validate rule files (None: the default set). Raise RuleError
    listing every problem of every file, each located."""
    files: list[str] = []
    if paths is None or with_defaults:
        files.extend(default_rule_files())
    files.extend(paths or ())
    problems: list[str] = []
    loaded: list[RuleFile] = []
    for path in files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            problems.append(f"{path}: cannot read: {e.strerror}")
            continue
        except UnicodeDecodeError:
            problems.append(f"{path}: not UTF-8 text")
            continue
        rf = _parse_cached(text, _display(path), problems)
        if rf is not None:
            loaded.append(rf)
    if not problems:
        try:
            _check_unique([r for f in loaded for r in f.rules])
        except RuleError as e:
            problems.extend(e.problems)
    if problems:
        raise RuleError(problems)
    return RuleSet(loaded)


# A rule file parsed without problems, by (text, shown path): start-up
# validates the configuration and then builds the detector from the same
# files, and the YAML parse is most of the cost. Rules are not changed once
# parsed, so sharing them is safe.
_PARSED: dict[tuple[str, str], RuleFile] = {}
_PARSED_MAX = 256


def _parse_cached(text: str, path: str, problems: list[str]) -> RuleFile | None:
    key = (text, path)
    rf = _PARSED.get(key)
    if rf is not None:
        return rf
    if path.startswith("<default>/"):
        # a shipped file as shipped: parsed ahead of time (see .shipped)
        from .shipped import lookup

        rf = lookup(path, text)
        if rf is not None:
            _PARSED[key] = rf
            return rf
    before = len(problems)
    rf = parse_rule_file(text, path, problems)
    if rf is not None and len(problems) == before:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = rf
    return rf


def _display(path: str) -> str:
    """Shipped files are shown as ``<default>/name.yaml``."""
    p = Path(path)
    if (
        p.parent.name == "rules"
        and p.parent.parent.name == "detect"
        and p.parent.parent.parent.name == "exporter"
    ):
        return f"<default>/{p.name}"
    return path


def _check_unique(rules: Iterable[Rule]) -> None:
    seen: dict[str, Rule] = {}
    problems: list[str] = []
    for r in rules:
        first = seen.get(r.id)
        if first is not None:
            problems.append(
                r.where(
                    f"duplicate rule id {r.id!r} "
                    f"(first defined at {first.where.file}:{first.where.pos[0]})"
                )
            )
        else:
            seen[r.id] = r
    if problems:
        raise RuleError(problems)


def parse_rule_file(text: str, path: str, problems: list[str]) -> RuleFile | None:
    import yaml  # (see located.load)

    try:
        doc = located.load(text)
    except yaml.YAMLError as e:
        problems.append(located.yaml_problem(path, e))
        return None
    top = Where(path)
    if not isinstance(doc, LDict):
        problems.append(top("the top level must be a mapping with a `rules:` list"))
        return None
    for key in doc:
        if key not in ("rules", "example_settings"):
            problems.append(top.unknown_key(doc, key, ("rules", "example_settings")))
    settings = DetectionSettings()
    if "example_settings" in doc:
        try:
            settings = DetectionSettings.from_config(doc["example_settings"], source=path)
        except RuleError as e:
            problems.extend(p.replace(": detect.", ": example_settings.", 1) for p in e.problems)
    raw = doc.get("rules")
    if "rules" not in doc:
        problems.append(top.at(doc)("a rule file needs a `rules:` list"))
        return None
    if not isinstance(raw, LList):
        problems.append(top.key(doc, "rules").at(raw)(f"must be a list of rules, not {_kind(raw)}"))
        return None
    rules: list[Rule] = []
    where_rules = top.key(doc, "rules")
    for i, item in enumerate(raw):
        rule = parse_rule(item, where_rules.item(raw, i).at(item), problems)
        if rule is not None:
            for r in expand_refused(rule):
                r.source = path
                rules.append(r)
    return RuleFile(path, rules, settings)


def parse_rule(doc: Any, where: Where, problems: list[str]) -> Rule | None:
    if not isinstance(doc, LDict):
        problems.append(where("a rule is a mapping"))
        return None
    before = len(problems)
    rid = doc.get("id")
    if isinstance(rid, str) and _ID.match(rid):
        where = Where(where.file, f"{where.path} ({rid})", where.pos)
    else:
        problems.append(
            where.key(doc, "id")(
                f"{rid!r} is not a rule id (lower-case letters, digits and dashes)"
            )
        )
        rid = ""
    for key in doc:
        if key not in _RULE_KEYS:
            problems.append(where.unknown_key(doc, key, _RULE_KEYS))
    kind = doc.get("kind", "match")
    if kind not in KINDS:
        problems.append(where.key(doc, "kind")(f"must be one of {', '.join(KINDS)}, not {kind!r}"))
        kind = "match"
    for key in _STATE_KEYS:
        if key in doc and key not in _KIND_KEYS[kind]:
            problems.append(where.key(doc, key)(f"not used by kind {kind}"))
    title = _text(doc, "title", where, problems)
    description = _text(doc, "description", where, problems)
    severity = doc.get("severity")
    if severity not in SEVERITIES:
        problems.append(
            where.key(doc, "severity")(f"must be one of {', '.join(SEVERITIES)}, not {severity!r}")
        )
    mitre: tuple[str, ...] = ()
    if "mitre" in doc:
        raw = doc["mitre"]
        items = raw if isinstance(raw, list) else [raw]
        for m in items:
            if not isinstance(m, str) or not _MITRE.match(m):
                problems.append(
                    where.key(doc, "mitre")(
                        f"{m!r} is not an ATT&CK technique id (T1234 or T1234.001)"
                    )
                )
        mitre = tuple(m for m in items if isinstance(m, str))
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(where.key(doc, "enabled")(f"must be true or false, not {enabled!r}"))
        enabled = True
    stages = DEFAULT_STAGES
    if "stages" in doc:
        raw = doc["stages"]
        items = raw if isinstance(raw, list) else [raw]
        w = where.key(doc, "stages")
        known = ", ".join(sorted(STAGES))
        if not items:
            problems.append(w(f"must list at least one stage (known: {known})"))
        for i, s in enumerate(items):
            if not isinstance(s, str) or s not in STAGES:
                wi = w.item(raw, i) if isinstance(raw, list) else w
                problems.append(wi(f"unknown stage {s!r} (known: {known})"))
        stages = frozenset(s for s in items if s in STAGES)

    parser = Parser(problems)
    match: Node | None = None
    if "match" in doc:
        match = parser.condition(doc["match"], where.key(doc, "match"))
    elif kind != "sequence":
        problems.append(where("a rule needs a `match:` condition"))
    excepts: list[Node] = []
    if "except" in doc:
        raw = doc["except"]
        w = where.key(doc, "except")
        # An allow-list that names an empty setting simply allows nothing more:
        # its references do not make the rule inactive.
        exc_parser = Parser(problems)
        if isinstance(raw, LDict):
            excepts = [exc_parser.condition(raw, w)]
        elif isinstance(raw, LList) and raw:
            excepts = [exc_parser.condition(c, w.item(raw, i)) for i, c in enumerate(raw)]
        else:
            problems.append(w.at(raw)("must be a condition or a list of conditions"))

    rule = Rule(
        id=rid,
        title=title,
        severity=severity if severity in SEVERITIES else "info",
        description=description,
        where=where,
        mitre=mitre,
        kind=kind,
        stages=stages,
        match=match,
        excepts=excepts,
        enabled=enabled,
    )
    if kind != "match":
        _parse_state(doc, rule, where, parser, problems)
    rule.references = frozenset(parser.references)
    rule.examples = _parse_examples(doc.get("examples"), where.key(doc, "examples"), problems)
    if "rationale" in doc:
        rule.rationale = _text(doc, "rationale", where, problems)
    if "peers" in doc:
        rule.peers = _parse_peers(doc["peers"], where.key(doc, "peers"), problems)
    if "notify_once" in doc:
        w = where.key(doc, "notify_once")
        _parse_notify_once(doc["notify_once"], w, rule, parser, problems)
        rule.references = frozenset(parser.references)
    if "refused" in doc:
        w = where.key(doc, "refused")
        if kind != "match":
            problems.append(w("only kind match rules take `refused:`"))
        else:
            rule.refused = _parse_refused(doc["refused"], w, rule, problems)
    if len(problems) > before:
        return None
    return rule


def _parse_notify_once(
    doc: Any, where: Where, rule: Rule, parser: Parser, problems: list[str]
) -> None:
    if not isinstance(doc, LDict) or "per" not in doc or "window" not in doc:
        problems.append(where.at(doc)("must be {per: [field paths], window: DURATION}"))
        return
    for key in doc:
        if key not in ("per", "window"):
            problems.append(where.unknown_key(doc, key, ("per", "window")))
    if rule.severity == "info":
        problems.append(where("an info rule notifies nobody: notify_once needs a higher severity"))
    before = len(problems)
    per = _paths(doc, "per", where, problems, parser)
    if not per and len(problems) == before:
        problems.append(where.key(doc, "per")("must name at least one field path"))
    rule.notify_per = per
    rule.notify_window = _positive(doc, "window", where, problems, duration=True)


def _parse_peers(doc: Any, where: Where, problems: list[str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(doc, LDict):
        problems.append(
            where.at(doc)(f"must be a mapping of {', '.join(PEERS)} to rule names ({{}}: none)")
        )
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for key, value in doc.items():
        if key not in PEERS:
            problems.append(where.unknown_key(doc, key, PEERS))
            continue
        items = value if isinstance(value, list) else [value]
        names = [v for v in items if isinstance(v, str) and v.strip()]
        if not items or len(names) != len(items):
            problems.append(where.key(doc, key)("must be a rule name or a list of rule names"))
        out[str(key)] = tuple(" ".join(n.split()) for n in names)
    return out


def _parse_refused(doc: Any, where: Where, rule: Rule, problems: list[str]) -> Refused | None:
    if not isinstance(doc, LDict):
        problems.append(where.at(doc)("must be a mapping with `severity:`"))
        return None
    for key in doc:
        if key not in ("severity", "repeated", "examples"):
            problems.append(where.unknown_key(doc, key, ("severity", "repeated", "examples")))
    severity = doc.get("severity")
    if severity not in SEVERITIES:
        problems.append(
            where.key(doc, "severity")(f"must be one of {', '.join(SEVERITIES)}, not {severity!r}")
        )
        return None
    if SEVERITY_RANK[severity] >= SEVERITY_RANK[rule.severity]:
        problems.append(
            where.key(doc, "severity")(
                f"a refused attempt rates below the rule's own severity ({rule.severity})"
            )
        )
    out = Refused(severity)
    if "repeated" in doc:
        rep = doc["repeated"]
        w = where.key(doc, "repeated")
        if not isinstance(rep, LDict) or set(rep) != {"count", "window"}:
            problems.append(w.at(rep)("must be {count: N, window: DURATION}"))
        else:
            out.count = int(_positive(rep, "count", w, problems, duration=False))
            out.window = _positive(rep, "window", w, problems, duration=True)
            if out.count and out.count < 2:
                problems.append(w.key(rep, "count")("a repetition needs a count of at least 2"))
    out.examples = _parse_examples(doc.get("examples"), where.key(doc, "examples"), problems)
    return out


def expand_refused(rule: Rule) -> list[Rule]:
    """The rule, and the variants its ``refused:`` section asks for (see the
    module docstring)."""
    spec = rule.refused
    if spec is None or rule.match is None:
        return [rule]
    refused = Field("responseStatus.code", FieldCond(eq=REFUSED_CODES))
    # the rule itself: requests that succeeded (or have no outcome yet); other
    # failures (404, 409, 422) changed nothing and are neither variant's
    not_refused = Field(
        "responseStatus.code", FieldCond(negated=[FieldCond(compare=(("gte", 400.0),))])
    )
    base = dataclasses.replace(rule, match=And([rule.match, not_refused]))
    why = (
        f"A refused attempt: authorization or authentication held, so it is reconnaissance "
        f"rather than a change, rated {spec.severity} where success is {rule.severity}."
    )
    attempt = dataclasses.replace(
        rule,
        id=f"{rule.id}-refused",
        title=f"{rule.title} (refused)",
        severity=spec.severity,
        match=And([rule.match, refused]),
        description=f"{rule.description} This one was refused (401 or 403).",
        rationale=why
        + (
            f" {spec.count} refusals for one user within {format_duration(spec.window)} "
            f"are {rule.id}-refused-repeated ({rule.severity})."
            if spec.count
            else ""
        ),
        examples=spec.examples,
        refused=None,
        variant_of=rule.id,
    )
    if spec.severity == "info":  # nobody is notified of it anyway
        attempt.notify_per, attempt.notify_window = (), 0.0
    out = [base, attempt]
    if spec.count:
        gap = spec.window / spec.count
        examples: list[Example] = []
        for ex in spec.examples:
            if ex.expect and len(ex.events) == 1:
                ev = ex.events[0].event
                examples.append(Example(True, [ExampleEvent(ev, gap, spec.count)], ex.where))
                examples.append(Example(False, [ExampleEvent(ev, gap, spec.count - 1)], ex.where))
        out.append(
            dataclasses.replace(
                rule,
                id=f"{rule.id}-refused-repeated",
                title=f"{rule.title} (refused repeatedly)",
                kind="threshold",
                match=And([rule.match, refused]),
                group_by=("user.username",),
                window=spec.window,
                count=spec.count,
                description=(
                    f"{rule.description} One user was refused this {spec.count} times within "
                    f"{format_duration(spec.window)}: not a mistake but a search for a way in."
                ),
                rationale=(
                    f"Repeated refusals are persistence, not a typo: back to the rule's own "
                    f"severity ({rule.severity})."
                ),
                examples=examples,
                refused=None,
                variant_of=rule.id,
            )
        )
    return out


def format_duration(seconds: float) -> str:
    """600 -> "10m", 90 -> "90s", 7200 -> "2h"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _text(doc: LDict, key: str, where: Where, problems: list[str]) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or not v.strip():
        problems.append(where.key(doc, key)("must be a non-empty string"))
        return ""
    return " ".join(v.split())


def _paths(
    doc: LDict, key: str, where: Where, problems: list[str], parser: Parser
) -> tuple[str, ...]:
    raw = doc.get(key)
    w = where.key(doc, key)
    if raw is None:
        problems.append(where(f"kind {doc.get('kind')} needs `{key}:`"))
        return ()
    items = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for i, p in enumerate(items):
        wi = w.item(raw, i) if isinstance(raw, list) else w
        if not isinstance(p, str):
            problems.append(wi(f"{p!r} is not a field path"))
            continue
        try:
            if p in DERIVED:
                parser.references.add(p)
            elif p not in ATTRIBUTE_FIELDS:
                if p.startswith("$") and not p.startswith(("$pod_spec", "$containers")):
                    raise PathError(f"unknown derived field {p!r}")
                parse(p)
        except PathError as e:
            problems.append(wi(str(e)))
            continue
        out.append(p)
    return tuple(out)


def _positive(doc: LDict, key: str, where: Where, problems: list[str], *, duration: bool) -> float:
    raw = doc.get(key)
    w = where.key(doc, key)
    if raw is None:
        problems.append(where(f"kind {doc.get('kind')} needs `{key}:`"))
        return 0.0
    try:
        if duration:
            v = parse_duration(raw)
        else:
            if type(raw) is not int:
                raise ValueError(f"{raw!r} is not an integer")
            v = float(raw)
    except ValueError as e:
        problems.append(w(str(e)))
        return 0.0
    if v <= 0:
        problems.append(w(f"must be > 0, not {raw!r}"))
    return v


def _parse_state(doc: LDict, rule: Rule, where: Where, parser: Parser, problems: list[str]) -> None:
    rule.group_by = _paths(doc, "group_by", where, problems, parser)
    if rule.kind == "threshold":
        rule.window = _positive(doc, "window", where, problems, duration=True)
        rule.count = int(_positive(doc, "count", where, problems, duration=False))
        if "distinct" in doc:
            rule.distinct = _paths(doc, "distinct", where, problems, parser)
    elif rule.kind == "sequence":
        rule.window = _positive(doc, "window", where, problems, duration=True)
        raw = doc.get("steps")
        w = where.key(doc, "steps")
        if raw is None:
            problems.append(where("kind sequence needs `steps:`, a list of at least two steps"))
            return
        if not isinstance(raw, LList) or len(raw) < 2:
            has = f"{len(raw)}" if isinstance(raw, LList) else _kind(raw)
            problems.append(w.at(raw)(f"a sequence needs a list of at least two steps, not {has}"))
            return
        names: dict[str, int] = {}
        for i, item in enumerate(raw):
            wi = w.item(raw, i).at(item)
            if not isinstance(item, LDict):
                problems.append(wi("a step is a mapping with name, match and optional count"))
                continue
            for key in item:
                if key not in ("name", "match", "count"):
                    problems.append(wi.unknown_key(item, key, ("name", "match", "count")))
            name = item.get("name", f"step{i + 1}")
            if not isinstance(name, str):
                problems.append(wi.key(item, "name")(f"must be a string, not {name!r}"))
            elif name in names:
                problems.append(
                    wi.key(item, "name")(f"{name!r} is already the name of steps[{names[name]}]")
                )
            names.setdefault(str(name), i)
            if "match" not in item:
                problems.append(wi("a step needs `match:`"))
                continue
            count = item.get("count", 1)
            if type(count) is not int or count < 1:
                problems.append(wi.key(item, "count")(f"must be an integer >= 1, not {count!r}"))
                count = 1
            rule.steps.append(
                Step(str(name), parser.condition(item["match"], wi.key(item, "match")), count)
            )
    else:
        before = len(problems)
        values = _paths(doc, "value", where, problems, parser)
        if len(values) == 1:
            rule.value = values[0]
        elif len(problems) == before:
            # [] or several paths (a bad path was reported by _paths)
            problems.append(
                where.key(doc, "value")(f"takes exactly one field path, not {len(values)}")
            )
        rule.ttl = _positive(doc, "ttl", where, problems, duration=True)
        if "learning" in doc:
            try:
                rule.learning = parse_duration(doc["learning"])
                if rule.learning < 0:
                    raise ValueError(f"must be >= 0, not {doc['learning']!r}")
            except ValueError as e:
                problems.append(where.key(doc, "learning")(str(e)))


def _kind(value: Any) -> str:
    """What a YAML value is, for a message: "a mapping", "a string", ..."""
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return repr(value)


def plain(value: Any) -> Any:
    """Located YAML containers as plain dicts and lists (the decoder checks
    ``type(x) is dict``)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _parse_examples(doc: Any, where: Where, problems: list[str]) -> list[Example]:
    if doc is None:
        return []
    if not isinstance(doc, LDict):
        problems.append(where.at(doc)("must be a mapping with `match:` and `no_match:` lists"))
        return []
    out: list[Example] = []
    for key in doc:
        if key not in ("match", "no_match"):
            problems.append(where.unknown_key(doc, key, ("match", "no_match")))
            continue
        items = doc[key]
        w = where.key(doc, key)
        if not isinstance(items, LList):
            problems.append(w.at(items)("must be a list of examples"))
            continue
        for i, item in enumerate(items):
            wi = w.item(items, i).at(item)
            ex = _example(item, key == "match", wi, problems)
            if ex is not None:
                out.append(ex)
    return out


def _example(item: Any, expect: bool, where: Where, problems: list[str]) -> Example | None:
    if not isinstance(item, LDict):
        problems.append(where("an example is an event (a mapping) or {events: [...]}"))
        return None
    if "events" not in item:
        return Example(expect, [ExampleEvent(plain(item))], where)
    if len(item) != 1:
        problems.append(where("an {events: [...]} example takes no other keys"))
        return None
    raw = item["events"]
    w = where.key(item, "events")
    if not isinstance(raw, LList) or not raw:
        problems.append(w.at(raw)("must be a non-empty list of events"))
        return None
    events: list[ExampleEvent] = []
    for i, ev in enumerate(raw):
        wi = w.item(raw, i).at(ev)
        if not isinstance(ev, LDict):
            problems.append(wi("an event is a mapping"))
            continue
        if "event" not in ev:
            events.append(ExampleEvent(plain(ev)))
            continue
        for key in ev:
            if key not in ("event", "after", "repeat"):
                problems.append(wi.unknown_key(ev, key, ("event", "after", "repeat")))
        after: float | None = None
        if "after" in ev:
            try:
                after = parse_duration(ev["after"])
            except ValueError as e:
                problems.append(wi.key(ev, "after")(str(e)))
        repeat = ev.get("repeat", 1)
        if type(repeat) is not int or repeat < 1:
            problems.append(wi.key(ev, "repeat")(f"must be an integer >= 1, not {repeat!r}"))
            repeat = 1
        if not isinstance(ev["event"], LDict):
            problems.append(wi.key(ev, "event")("must be a mapping"))
            continue
        events.append(ExampleEvent(plain(ev["event"]), after, repeat))
    return Example(expect, events, where)
