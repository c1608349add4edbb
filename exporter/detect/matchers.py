"""Conditions over an audit event: parsed (and validated) when rules load,
compiled once into a Python function when a Detector is built.

A condition is a mapping; all its entries must hold:

- ``<field path>: <field condition>`` (see paths.py for paths);
- ``any: [condition, ...]`` at least one holds, ``all: [...]`` every one holds,
  ``not: condition`` it does not hold.

A field condition is a value (equality), a list of values (any of them), or a
mapping of operators, all of which must hold:

- ``eq``: a value or list (as above); ``glob``: shell patterns (``system:*``);
  ``regex``: Python regular expressions, searched (anchor with ``^...$``);
  ``cidr``: networks, or ``$trusted_networks``, ``$pod_cidrs``, ``$node_cidrs``,
  ``$cluster_networks`` from the settings; ``gt``, ``gte``, ``lt``, ``lte``:
  numbers. A field that yields several values (``[*]``, lists) matches when one
  value satisfies all of these together.
- ``exists: true|false``: the path yields a value, or none (``absent: true`` is
  the same as ``exists: false``).
- ``not: <field condition>``: the inner condition does not hold (for lists:
  no value satisfies it; ``user.groups: {not: system:masters}``).

Strings compare exactly and case-sensitively; ``true`` never equals ``1``.
For fields the decoder parses (verb, objectRef.*, user.username, ...), an
empty string or a code of 0 counts as absent.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any

from ..event import COMMON_ANNOTATIONS, AuditEvent
from .located import Where
from .paths import (
    ATTRIBUTE_FIELDS,
    DERIVED,
    PathError,
    compile_event_getter,
    compile_getter,
    parse,
)
from .settings import NETWORK_SETTINGS, Network, parse_network

VALUE_OPS = ("eq", "glob", "regex", "cidr", "gt", "gte", "lt", "lte")
FIELD_OPS = (*VALUE_OPS, "exists", "absent", "not")
COMBINATORS = ("any", "all", "not")

Scalar = str | int | float | bool


# --- syntax tree ------------------------------------------------------------------


@dataclass
class FieldCond:
    eq: tuple[Scalar, ...] | None = None
    globs: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()  # literal networks and $references
    compare: tuple[tuple[str, float], ...] = ()
    exists: bool | None = None
    negated: list[FieldCond] = field(default_factory=list)

    def value_ops(self) -> bool:
        return bool(self.eq is not None or self.globs or self.regexes or self.cidrs or self.compare)


@dataclass
class Field:
    path: str
    cond: FieldCond


@dataclass
class And:
    items: list[Node]


@dataclass
class Or:
    items: list[Node]


@dataclass
class Not:
    item: Node


Node = Field | And | Or | Not


# --- parsing ----------------------------------------------------------------------


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


class Parser:
    """Validates conditions, collecting located problems."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self.references: set[str] = set()  # settings and derived values used

    def condition(self, doc: Any, where: Where) -> Node:
        where = where.at(doc)
        if not isinstance(doc, dict) or not doc:
            self.problems.append(where("a condition is a non-empty mapping of field paths"))
            return And([])
        items: list[Node] = []
        for key, value in doc.items():
            w = where.key(doc, key)
            if key in ("any", "all"):
                if not isinstance(value, list) or not value:
                    self.problems.append(w(f"{key}: takes a non-empty list of conditions"))
                    continue
                subs = [self.condition(v, w.item(value, i)) for i, v in enumerate(value)]
                items.append(Or(subs) if key == "any" else And(subs))
            elif key == "not":
                items.append(Not(self.condition(value, w)))
            else:
                items.append(self.field(key, value, w))
        return And(items) if len(items) != 1 else items[0]

    def field(self, path: Any, value: Any, where: Where) -> Field:
        if not isinstance(path, str):
            self.problems.append(where(f"{path!r} is not a field path"))
            return Field("", FieldCond())
        if path.startswith("$") and path.split(".")[0].split("[")[0] not in (
            *DERIVED,
            *(k for k in ATTRIBUTE_FIELDS if k.startswith("$")),
            "$pod_spec",
            "$containers",
        ):
            known = sorted({*DERIVED, *(k for k in ATTRIBUTE_FIELDS if k.startswith("$"))})
            self.problems.append(
                where(f"unknown derived field {path!r} (known: {', '.join(known)})")
            )
            return Field(path, FieldCond())
        if path in DERIVED:
            self.references.add(path)
        elif path not in ATTRIBUTE_FIELDS:
            try:
                parse(path)
            except PathError as e:
                self.problems.append(where(str(e)))
                return Field(path, FieldCond())
        cond = self.field_cond(value, where.at(value))
        attr = ATTRIBUTE_FIELDS.get(path)
        if attr is not None and attr[1] is str and cond.compare:
            self.problems.append(where(f"{path} is a string; gt/gte/lt/lte need a number field"))
        return Field(path, cond)

    def field_cond(self, value: Any, where: Where) -> FieldCond:
        if _is_scalar(value) or isinstance(value, list):
            return FieldCond(eq=self.values(value, where))
        if not isinstance(value, dict) or not value:
            self.problems.append(
                where("a field condition is a value, a list or a mapping of operators")
            )
            return FieldCond()
        cond = FieldCond()
        for op, arg in value.items():
            w = where.key(value, op)
            if op == "eq":
                cond.eq = self.values(arg, w)
            elif op in ("glob", "regex"):
                pats = self.strings(arg, w)
                if op == "regex":
                    for p in pats:
                        try:
                            re.compile(p)
                        except re.error as e:
                            self.problems.append(w(f"{p!r} is not a regular expression: {e}"))
                    cond.regexes = pats
                else:
                    cond.globs = pats
            elif op == "cidr":
                items = self.strings(arg, w)
                for item in items:
                    if item.startswith("$"):
                        name = item[1:]
                        if name not in NETWORK_SETTINGS:
                            self.problems.append(
                                w(
                                    f"unknown network list {item!r} (known: "
                                    + ", ".join("$" + n for n in NETWORK_SETTINGS)
                                    + ")"
                                )
                            )
                        else:
                            self.references.add(item)
                    else:
                        try:
                            parse_network(item)
                        except ValueError as e:
                            self.problems.append(w(str(e)))
                cond.cidrs = items
            elif op in ("gt", "gte", "lt", "lte"):
                if isinstance(arg, bool) or not isinstance(arg, (int, float)):
                    self.problems.append(w(f"{op} takes a number"))
                else:
                    cond.compare = (*cond.compare, (op, float(arg)))
            elif op in ("exists", "absent"):
                if not isinstance(arg, bool):
                    self.problems.append(w(f"{op} takes true or false"))
                else:
                    cond.exists = arg if op == "exists" else not arg
            elif op == "not":
                cond.negated.append(self.field_cond(arg, w.at(arg)))
            else:
                self.problems.append(w(f"unknown operator {op!r} (known: {', '.join(FIELD_OPS)})"))
        return cond

    def values(self, value: Any, where: Where) -> tuple[Scalar, ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            self.problems.append(where("an empty list matches nothing"))
        out: list[Scalar] = []
        for i, v in enumerate(items):
            if not _is_scalar(v):
                w = where.item(value, i) if isinstance(value, list) else where
                self.problems.append(w(f"{v!r} is not a value (string, number or boolean)"))
            else:
                out.append(v)
        return tuple(out)

    def strings(self, value: Any, where: Where) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            self.problems.append(where("an empty list matches nothing"))
        out: list[str] = []
        for i, v in enumerate(items):
            if not isinstance(v, str):
                w = where.item(value, i) if isinstance(value, list) else where
                self.problems.append(w(f"{v!r} is not a string"))
            else:
                out.append(v)
        return tuple(out)


# --- prefilter (index) ------------------------------------------------------------

# The Detector indexes rules by a few cheap attributes of the event; a rule is
# a candidate for an event only when its condition can hold for those values.
# ``impersonated`` says whether impersonatedUser is set. The last two are
# bit masks worked out once per distinct value (see IndexAtoms):
# ``extra_annotations`` has bit 0 set when the event has annotations besides
# the authorizer's decision and reason (almost every event has only those
# two), and one bit per annotation test a rule makes; ``principal`` one bit
# per test a rule makes on the user name, the user agent or the source
# address, set when it holds.
DIMS = (
    "stage",
    "verb",
    "resource",
    "subresource",
    "user_kind",
    "code",
    "impersonated",
    "extra_annotations",
    "principal",
)
DIM_FIELDS = {
    "stage": "stage",
    "verb": "verb",
    "objectRef.resource": "resource",
    "objectRef.subresource": "subresource",
    "$user_kind": "user_kind",
    "responseStatus.code": "code",
}
# The attributes whose tests the ``principal`` dimension holds (see IndexAtoms).
PRINCIPAL_FIELDS = ("user.username", "userAgent", "$source_ip")

Pred = Callable[[Any], bool]
# A necessary condition on the index key (a tuple in DIMS order); None: any key.
Constraint = Callable[[tuple[Any, ...]], bool] | None


class KeyClasses:
    """Index keys that no rule tells apart, mapped to one class key.

    Most resources and response codes appear in no rule; the Detector works
    out a key's candidate rules once per class rather than once per key (a
    real log has a hundred resources and a handful of codes). A resource is its own
    class when some condition on ``objectRef.resource`` names it, otherwise
    its class is the answers of the conditions' patterns; a code is its own
    class when a condition names it or compares with it, otherwise its class
    is its place among those numbers. Every condition the index evaluates on
    these dimensions (see _field_constraint) answers alike within a class.
    """

    def __init__(self, nodes: list[Node]) -> None:
        names: set[str] = {""}  # "" is absent
        patterns: list[Callable[[str], Any]] = []
        numbers: set[float] = {0.0}  # 0 is absent
        self.resources = True
        for cond in _conds(nodes, "objectRef.resource"):
            if cond.eq is not None:
                names.update(v for v in cond.eq if isinstance(v, str))
            if cond.globs:
                patterns.append(_glob_regex(cond.globs).match)
            if cond.regexes:
                patterns.append(_any_regex(cond.regexes).search)
            if cond.cidrs:
                self.resources = False  # an address test on a resource: no classes
        for cond in _conds(nodes, "responseStatus.code"):
            if cond.eq is not None:
                numbers.update(
                    float(v)
                    for v in cond.eq
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                )
            numbers.update(num for _, num in cond.compare)
        self.names = frozenset(names)
        self.patterns = tuple(patterns)
        self.numbers = frozenset(numbers)
        self.bounds = sorted(numbers)

    def resource(self, value: str) -> Any:
        if not self.resources or value in self.names:
            return value
        return tuple(p(value) is not None for p in self.patterns)

    def code(self, value: int) -> Any:
        if value in self.numbers:
            return value
        return ("between", bisect_left(self.bounds, value))

    def __call__(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        r, c = DIMS.index("resource"), DIMS.index("code")
        out = list(key)
        out[r] = self.resource(key[r])
        out[c] = self.code(key[c])
        return tuple(out)


# bit 0 of the extra_annotations dimension: an annotation beyond the common two
EXTRA_ANNOTATIONS = 1
# distinct values of each principal attribute (user names, user agents,
# source addresses) and annotation key sets remembered before starting over
ATOM_CACHE_MAX = 16_384


class IndexAtoms:
    """The tests rules make on the principal (user name, user agent, source
    address) and on annotation keys, each worked out once per distinct value
    and kept as one bit of the index key (the ``principal`` and
    ``extra_annotations`` dimensions).

    Without them a rule that tests only the user agent is a candidate for
    every event, and a rule that reads one annotation for every event that
    carries any other (Pod Security's annotations come with most writes of
    pods). A real log has few distinct (user, user agent, address) triples and
    annotation key sets. A principal bit is the rule's own field test, as
    the rule compiles it, so the index answers exactly for it; an
    annotation bit is exact for ``annotations.@keys`` tests and says "this
    key is present" for a test on one annotation's value."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # (position of the attribute in the principal triple, its test)
        self.principal: list[tuple[int, Callable[[str], Any]]] = []
        self.annotation: list[Callable[[list[str]], bool]] = []
        self.named: dict[str, int] = {}  # annotation key -> its bit
        # a test that holds on the common annotations alone: then the key set
        # of every event matters, not only of those with other annotations
        self.common_matters = False
        # per principal attribute (PRINCIPAL_FIELDS' order): value -> its bits
        self.principals: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
        self.triples: dict[tuple[str, str, str], int] = {}
        self.annotation_sets: dict[tuple[str, ...], int] = {}

    def principal_bit(self, path: str, cond: FieldCond) -> int:
        comp = Compiler(self.ctx)
        src = comp.attr_cond("v", ATTRIBUTE_FIELDS[path][1], cond)
        test = eval(compile(f"lambda v: {src}", "<index>", "eval"), comp.namespace)
        return self._principal_bit(PRINCIPAL_FIELDS.index(path), test)

    def _principal_bit(self, position: int, test: Callable[[str], Any]) -> int:
        self.principal.append((position, test))
        self.triples.clear()
        for cache in self.principals:
            cache.clear()
        return 1 << (len(self.principal) - 1)

    def derived_bit(self, path: str, cond: FieldCond) -> int:
        """A bit for a test of a derived value that the user name tells
        (paths.Derived.by_username): set when the test can hold for some
        event of the user, exactly when it holds if the name decides."""
        by_name = DERIVED[path].by_username
        assert by_name is not None
        values_of = by_name(self.ctx.derived)
        test = Compiler(self.ctx).value_test_full(cond)

        def holds(username: str) -> bool:
            values = values_of(username)
            return True if values is None else test(values)

        return self._principal_bit(PRINCIPAL_FIELDS.index("user.username"), holds)

    def named_bit(self, key: str) -> int:
        bit = self.named.get(key)
        if bit is None:
            bit = self.named[key] = self._annotation_bit(lambda keys: key in keys)
        return bit

    def keys_bit(self, cond: FieldCond) -> int:
        return self._annotation_bit(Compiler(self.ctx).value_test_full(cond))

    def _annotation_bit(self, test: Callable[[list[str]], bool]) -> int:
        self.annotation.append(test)
        self.annotation_sets.clear()
        common = sorted(COMMON_ANNOTATIONS)
        if any(test(keys) for keys in ([], common[:1], common[1:], common)):
            self.common_matters = True
        return 1 << len(self.annotation)  # bit 0 is EXTRA_ANNOTATIONS

    def principal_class(self, triple: tuple[str, str, str]) -> int:
        """The principal dimension for (user name, user agent, source address)."""
        found = self.triples.get(triple)
        if found is None:
            found = 0
            for position, (cache, value) in enumerate(zip(self.principals, triple, strict=True)):
                bits = cache.get(value)
                found |= self.value_bits(position, value) if bits is None else bits
            if len(self.triples) >= ATOM_CACHE_MAX:
                self.triples.clear()
            self.triples[triple] = found
        return found

    def value_bits(self, position: int, value: str) -> int:
        """The bits of the tests on one principal attribute that hold for
        ``value`` (remembered, like the other values, up to ATOM_CACHE_MAX)."""
        found = 0
        for n, (at, test) in enumerate(self.principal):
            if at == position and test(value):
                found |= 1 << n
        cache = self.principals[position]
        if len(cache) >= ATOM_CACHE_MAX:
            cache.clear()
        cache[value] = found
        return found

    def annotation_class(self, annotations: dict[str, Any]) -> int:
        """The extra_annotations dimension for an event's annotations."""
        keys = tuple(annotations)
        found = self.annotation_sets.get(keys)
        if found is None:
            names = list(keys)
            found = 0 if COMMON_ANNOTATIONS.issuperset(names) else EXTRA_ANNOTATIONS
            for n, test in enumerate(self.annotation, 1):
                if test(names):
                    found |= 1 << n
            if len(self.annotation_sets) >= ATOM_CACHE_MAX:
                self.annotation_sets.clear()
            self.annotation_sets[keys] = found
        return found


def _fields(nodes: list[Node]) -> Iterator[Field]:
    """Every field test in ``nodes``, under any and/or/not."""
    for node in nodes:
        if isinstance(node, Field):
            yield node
        elif isinstance(node, Not):
            yield from _fields([node.item])
        else:
            yield from _fields(node.items)


def _conds(nodes: list[Node], path: str) -> list[FieldCond]:
    """Every field condition on ``path`` in ``nodes``, negated ones too."""
    out: list[FieldCond] = []

    def cond(c: FieldCond) -> None:
        out.append(c)
        for n in c.negated:
            cond(n)

    for f in _fields(nodes):
        if f.path == path:
            cond(f.cond)
    return out


def _annotation_key(path: str) -> str | None:
    """The annotation a path reads (``annotations["k"]`` or ``annotations.k``),
    "*" for ``annotations.@keys`` / ``annotations.*``, else None."""
    try:
        steps = parse(path)
    except PathError:
        return None
    if len(steps) != 2 or steps[0] != ("key", "annotations"):
        return None
    if steps[1][0] == "key":
        return str(steps[1][1])
    if steps[1][0] in ("keys", "values"):
        return "*"
    return None


def _requires_value(c: FieldCond) -> bool:
    """The field condition can only hold when the field has a value."""
    return bool(c.value_ops() or c.exists is True)


def constraints(node: Node, ctx: Context) -> Constraint:
    """A necessary condition on the index key for ``node`` to hold, compiled
    into one function (None: any key)."""
    comp = Compiler(ctx)
    src = _constraint_src(node, comp)
    if src is None:
        return None
    fn: Callable[[tuple[Any, ...]], bool] = eval(
        compile(f"lambda k: {src}", "<index>", "eval"), comp.namespace
    )
    return fn


def _constraint_src(node: Node, comp: Compiler) -> str | None:
    """``constraints`` as the source of an expression over the key ``k``."""
    if isinstance(node, Field):
        return _field_constraint(node, comp)
    if isinstance(node, Not):
        inner = node.item
        exact = _exact_constraint(inner, comp) if isinstance(inner, Field) else None
        return None if exact is None else f"(not {exact})"
    subs = [_constraint_src(item, comp) for item in node.items]
    if isinstance(node, And):
        parts = [p for p in subs if p is not None]
        return "(" + " and ".join(parts) + ")" if parts else None
    # one of the alternatives holds: constrained only when every one is
    if not subs or any(p is None for p in subs):
        return None
    return "(" + " or ".join(p for p in subs if p is not None) + ")"


def constraint_dims(nodes: list[Node]) -> frozenset[int]:
    """The positions in the index key that ``constraints`` of ``nodes`` may
    read (more is safe, fewer is not): see _field_constraint."""
    dims: set[int] = set()
    for cond_path in _paths(nodes):
        dim = DIM_FIELDS.get(cond_path)
        if dim is not None:
            dims.add(DIMS.index(dim))
        elif cond_path in PRINCIPAL_FIELDS or (
            cond_path in DERIVED and DERIVED[cond_path].by_username is not None
        ):
            dims.add(DIMS.index("principal"))
        elif cond_path.startswith("impersonatedUser."):
            dims.add(DIMS.index("impersonated"))
        elif cond_path.startswith("annotations"):
            dims.add(DIMS.index("extra_annotations"))
    return frozenset(dims)


def _paths(nodes: list[Node]) -> list[str]:
    return [f.path for f in _fields(nodes)]


def merge_and(*subs: Constraint) -> Constraint:
    preds = [p for p in subs if p is not None]
    if not preds:
        return None
    if len(preds) == 1:
        return preds[0]
    return lambda k: all(p(k) for p in preds)


def merge_union(subs: list[Constraint]) -> Constraint:
    """One of ``subs`` holds: constrained only when every alternative is."""
    if not subs or any(p is None for p in subs):
        return None
    preds = [p for p in subs if p is not None]
    return lambda k: any(p(k) for p in preds)


def _exact_constraint(node: Field, comp: Compiler) -> str | None:
    """The field test on the index key when the key holds everything it
    reads (so that its negation is a constraint too), else None."""
    dim = DIM_FIELDS.get(node.path)
    c = node.cond
    if dim is not None:
        typ = ATTRIBUTE_FIELDS[node.path][1]
        return comp.attr_cond(f"k[{DIMS.index(dim)}]", typ, c)
    atoms = comp.ctx.atoms
    if node.path in PRINCIPAL_FIELDS:
        return f"(k[{DIMS.index('principal')}] & {atoms.principal_bit(node.path, c)} != 0)"
    derived = DERIVED.get(node.path)
    if derived is not None and derived.username_decides:
        return f"(k[{DIMS.index('principal')}] & {atoms.derived_bit(node.path, c)} != 0)"
    if (
        node.path.startswith("annotations")
        and _annotation_key(node.path) == "*"
        and parse(node.path)[1] == ("keys",)
    ):
        bit = atoms.keys_bit(c)
        return f"(k[{DIMS.index('extra_annotations')}] & {bit} != 0)"
    return None


def _field_constraint(node: Field, comp: Compiler) -> str | None:
    exact = _exact_constraint(node, comp)
    if exact is not None:
        return exact
    c = node.cond
    derived = DERIVED.get(node.path)
    if derived is not None and derived.by_username is not None:
        # the user name tells whether the test can hold (not whether it does)
        return f"(k[{DIMS.index('principal')}] & {comp.ctx.atoms.derived_bit(node.path, c)} != 0)"
    if node.path.startswith("impersonatedUser.") and _requires_value(c):
        return f"(k[{DIMS.index('impersonated')}] is True)"
    key = _annotation_key(node.path) if node.path.startswith("annotations") else None
    if key is not None and key != "*" and key not in COMMON_ANNOTATIONS and _requires_value(c):
        bit = comp.ctx.atoms.named_bit(key)
        return f"(k[{DIMS.index('extra_annotations')}] & {bit} != 0)"
    return None


# --- compilation -------------------------------------------------------------------


class Context:
    """What compiled conditions need from the settings: named networks and
    the derived values that depend on configuration."""

    def __init__(self, networks: Callable[[str], tuple[Network, ...]], derived: Any) -> None:
        self.networks = networks
        self.derived = derived
        # the index's tests on the principal and the annotations (see IndexAtoms)
        self.atoms = IndexAtoms(self)


def _ip_in(nets: tuple[Network, ...]) -> Callable[[Any], bool]:
    cache: dict[str, bool] = {}

    def test(v: Any) -> bool:
        if type(v) is not str:
            return False
        hit = cache.get(v)
        if hit is not None:
            return hit
        text = v.strip("[]").split("%", 1)[0]
        try:
            ip: Any = ipaddress.ip_address(text)
        except ValueError:
            result = False
        else:
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            result = any(ip.version == n.version and ip in n for n in nets)
        if len(cache) >= 10_000:
            cache.clear()
        cache[v] = result
        return result

    return test


def _eq_sets(
    values: tuple[Scalar, ...],
) -> tuple[frozenset[str], frozenset[float], frozenset[bool]]:
    strs = frozenset(v for v in values if isinstance(v, str))
    nums = frozenset(
        float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
    )
    bools = frozenset(v for v in values if isinstance(v, bool))
    return strs, nums, bools


def _compare(op: str, num: float) -> Callable[[Any], bool]:
    def test(v: Any) -> bool:
        if type(v) is not int and type(v) is not float:
            return False
        if op == "gt":
            return bool(v > num)
        if op == "gte":
            return bool(v >= num)
        if op == "lt":
            return bool(v < num)
        return bool(v <= num)

    return test


_CMP_SRC = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


# Paths starting here read the request or response body, which only events
# with ``has_body`` carry (the Metadata level has none).
_BODY_STEPS = (("key", "requestObject"), ("key", "responseObject"))


class Compiler:
    """Turns a syntax tree into the source of one Python expression over
    ``ev``; constants live in ``namespace`` (never spliced into the source)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.namespace: dict[str, Any] = {}
        self._n = 0

    def const(self, value: Any) -> str:
        name = f"_k{self._n}"
        self._n += 1
        self.namespace[name] = value
        return name

    def expr(self, node: Node) -> str:
        if isinstance(node, Field):
            return self.field(node)
        if isinstance(node, Not):
            return f"(not {self.expr(node.item)})"
        if not node.items:
            return "True"
        parts = [self.expr(i) for i in _by_cost(node.items)]
        joiner = " and " if isinstance(node, And) else " or "
        return "(" + joiner.join(parts) + ")"

    # fields -----------------------------------------------------------

    def field(self, node: Field) -> str:
        attr = ATTRIBUTE_FIELDS.get(node.path)
        if attr is not None:
            return self.attr_cond(f"ev.{attr[0]}", attr[1], node.cond)
        return self.generic_cond(self.getter(node.path), node.cond)

    def getter(self, path: str) -> str:
        if path in DERIVED:
            fn = DERIVED[path].make(self.ctx.derived)
            return self.const(fn) + "(ev)"
        steps = parse(path)
        of_event = compile_event_getter(steps)
        if of_event is not None:
            # the request body alone, or the decoded annotations: no need to
            # parse the rest of the event
            if steps[0] in _BODY_STEPS:
                return f"({self.const(of_event)}(ev) if ev.has_body else [])"
            return self.const(of_event) + "(ev)"
        get = compile_getter(steps)
        if steps[0] in _BODY_STEPS:
            # without a body these paths yield nothing: no need to parse the event
            return f"({self.const(get)}(ev.obj) if ev.has_body else [])"
        return self.const(get) + "(ev.obj)"

    def attr_cond(self, ref: str, typ: type, c: FieldCond) -> str:
        absent = '""' if typ is str else "0"
        parts: list[str] = []
        if c.value_ops():
            parts.append(f"{ref} != {absent}")
            parts.extend(self.attr_value_tests(ref, typ, c))
        if c.exists is not None:
            parts.append(f"{ref} {'!=' if c.exists else '=='} {absent}")
        for neg in c.negated:
            parts.append(f"(not {self.attr_cond(ref, typ, neg)})")
        if not parts:
            return "True"
        return "(" + " and ".join(parts) + ")"

    def attr_value_tests(self, ref: str, typ: type, c: FieldCond) -> list[str]:
        out: list[str] = []
        if c.eq is not None:
            vals: list[str | int]
            if typ is str:
                vals = [v for v in c.eq if isinstance(v, str) and v]
            else:
                vals = [
                    int(v)
                    for v in c.eq
                    if isinstance(v, (int, float))
                    and not isinstance(v, bool)
                    and float(v).is_integer()
                ]
            if not vals:
                out.append("False")
            elif len(vals) == 1:
                out.append(f"{ref} == {self.const(vals[0])}")
            else:
                out.append(f"{ref} in {self.const(frozenset(vals))}")
        if typ is str:
            if c.globs:
                out.append(f"{self.const(_memo(_glob_regex(c.globs).match))}({ref})")
            if c.regexes:
                out.append(f"{self.const(_memo(_any_regex(c.regexes).search))}({ref})")
            if c.cidrs:
                out.append(f"{self.const(_ip_in(self.networks(c.cidrs)))}({ref})")
        else:
            if c.globs or c.regexes or c.cidrs:
                out.append("False")
            for op, num in c.compare:
                out.append(f"{ref} {_CMP_SRC[op]} {self.const(num)}")
        return out

    def networks(self, items: tuple[str, ...]) -> tuple[Network, ...]:
        nets: list[Network] = []
        for item in items:
            if item.startswith("$"):
                nets.extend(self.ctx.networks(item[1:]))
            else:
                nets.append(parse_network(item))
        return tuple(nets)

    def generic_cond(self, getter: str, c: FieldCond) -> str:
        test = self.value_test(c)
        name = self.const(_field_fn(test, c.exists, [self.value_test_full(n) for n in c.negated]))
        # the values are computed once and shared by every part of the condition
        return f"{name}({getter})"

    def value_test(self, c: FieldCond) -> Callable[[Any], bool] | None:
        if not c.value_ops():
            return None
        tests: list[Callable[[Any], bool]] = []
        if c.eq is not None:
            strs, nums, bools = _eq_sets(c.eq)

            def eq(v: Any) -> bool:
                t = type(v)
                if t is str:
                    return v in strs
                if t is bool:
                    return v in bools
                if t is int or t is float:
                    return float(v) in nums
                return False

            tests.append(eq)
        if c.globs:
            gm = _glob_regex(c.globs).match
            tests.append(lambda v: type(v) is str and gm(v) is not None)
        if c.regexes:
            rs = _any_regex(c.regexes).search
            tests.append(lambda v: type(v) is str and rs(v) is not None)
        if c.cidrs:
            tests.append(_ip_in(self.networks(c.cidrs)))
        for op, num in c.compare:
            tests.append(_compare(op, num))
        if len(tests) == 1:
            return tests[0]
        return lambda v: all(t(v) for t in tests)

    def value_test_full(self, c: FieldCond) -> Callable[[list[Any]], bool]:
        """A whole field condition as a function of the list of values."""
        return _field_fn(self.value_test(c), c.exists, [self.value_test_full(n) for n in c.negated])


def _field_fn(
    test: Callable[[Any], bool] | None,
    exists: bool | None,
    negated: list[Callable[[list[Any]], bool]],
) -> Callable[[list[Any]], bool]:
    def fn(values: list[Any]) -> bool:
        if exists is not None and bool(values) != exists:
            return False
        if test is not None:
            for v in values:
                if test(v):
                    break
            else:
                return False
        return all(not n(values) for n in negated)

    return fn


def _memo(search: Callable[[str], Any]) -> Callable[[str], bool]:
    """A pattern test remembering its answers: parsed attributes (user agents,
    user names, URIs of the same clients) repeat all day."""
    cache: dict[str, bool] = {}

    def test(v: str) -> bool:
        hit = cache.get(v)
        if hit is None:
            hit = search(v) is not None
            if len(cache) >= 10_000:
                cache.clear()
            cache[v] = hit
        return hit

    return test


def _glob_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{translate(p)})" for p in patterns), re.DOTALL)


def _any_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    if len(patterns) == 1:
        return re.compile(patterns[0])
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def _cost(node: Node) -> int:
    """Evaluation order within an and/or: parsed attributes first, then plain
    paths into the JSON, then derived values that compute more."""
    if isinstance(node, Field):
        if node.path in ATTRIBUTE_FIELDS:
            return 0
        if node.path == "$control_plane":
            return 1
        return 3 if node.path in DERIVED else 2
    if isinstance(node, Not):
        return _cost(node.item)
    return max((_cost(i) for i in node.items), default=0)


def _by_cost(items: list[Node]) -> list[Node]:
    return sorted(items, key=_cost)


def compile_predicate(
    match: Node | None, excepts: list[Node], ctx: Context, name: str = "rule"
) -> Callable[[AuditEvent], bool]:
    """One function: ``match`` holds and none of ``excepts`` does."""
    comp = Compiler(ctx)
    parts = []
    if match is not None:
        parts.append(comp.expr(match))
    if excepts:
        parts.append("not (" + " or ".join(comp.expr(e) for e in excepts) + ")")
    body = " and ".join(parts) if parts else "True"
    src = f"def {_ident(name)}(ev):\n    return {body}\n"
    code = compile(src, f"<rule {name}>", "exec")
    ns = dict(comp.namespace)
    exec(code, ns)  # source built from validated syntax; constants by name
    fn: Callable[[AuditEvent], bool] = ns[_ident(name)]
    fn.__doc__ = src
    return fn


def _ident(name: str) -> str:
    return "rule_" + re.sub(r"\W", "_", name)
