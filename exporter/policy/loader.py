"""Decoding a Policy file the way kube-apiserver does.

kube-apiserver (k8s.io/apiserver/pkg/audit/policy/reader.go) converts the YAML
to JSON (go-yaml v2 rules: ``yes``/``no``/``on``/``off``/``y``/``n`` are
booleans, timestamp-like values stay strings) and decodes it first *strictly*.
If the strict decoder fails only because of unknown or duplicate fields, it
logs "Audit policy contains errors, falling back to lenient decoding" and
decodes again leniently: unknown fields are dropped and, for duplicate keys,
the last one wins. A mis-indented ``verbs:`` is therefore silently ignored and
the rule matches every verb. Any other decoding error (a list where a string
belongs, a number where a list belongs) makes the API server refuse the file.

Here, everything the strict decoder rejects is a warning (the server starts,
but not with the policy that was written) and everything else that stops the
server is an error. The decoded policy is the lenient one: what the server
would actually run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .findings import ERROR, WARNING, Finding
from .model import (
    API_VERSION_V1,
    API_VERSION_V1BETA1,
    GroupResources,
    Location,
    Policy,
    PolicyRule,
)
from .yamlhint import missing_key_hint, orphan_lists

POLICY_FIELDS = ("apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields")
RULE_FIELDS = (
    "level",
    "users",
    "userGroups",
    "verbs",
    "resources",
    "namespaces",
    "nonResourceURLs",
    "omitStages",
    "omitManagedFields",
)
GROUP_RESOURCES_FIELDS = ("group", "resources", "resourceNames")
# Fields whose loss makes a rule match more than written.
_SELECTORS = (
    "users",
    "userGroups",
    "verbs",
    "resources",
    "namespaces",
    "nonResourceURLs",
    "group",
    "resourceNames",
)
# metav1.ObjectMeta, which Policy embeds as ``metadata``: field -> JSON type.
OBJECT_META_FIELDS = {
    "name": "string",
    "generateName": "string",
    "namespace": "string",
    "selfLink": "string",
    "uid": "string",
    "resourceVersion": "string",
    "generation": "number",
    "creationTimestamp": "string",
    "deletionTimestamp": "string",
    "deletionGracePeriodSeconds": "number",
    "labels": "map",
    "annotations": "map",
    "ownerReferences": "list",
    "finalizers": "list",
    "managedFields": "list",
}
_FIELDS_BY_OWNER = {
    "the Policy": POLICY_FIELDS,
    "a rule": RULE_FIELDS,
    "a resources entry": GROUP_RESOURCES_FIELDS,
}

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"

REFUSED = "kube-apiserver refuses to start with this policy"
_TOO_DEEP = "the YAML nests too deeply, or a merge key (<<) includes its own mapping"


@dataclass
class LoadResult:
    """The lenient decoding (``policy``) and every problem found on the way.

    ``policy`` is None only when the file is not a YAML mapping at all; when
    ``accepted`` is False it is a best effort, for further diagnosis only.
    """

    source: str
    policy: Policy | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """Whether kube-apiserver would load the file (perhaps leniently)."""
        return self.policy is not None and not any(f.severity == ERROR for f in self.findings)


def load_policy_file(path: str | Path) -> LoadResult:
    """Read and decode a policy file; an unreadable file is an error finding."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        finding = Finding(ERROR, "read", f"cannot read the file: {e.strerror or e}")
        return LoadResult(str(path), None, [finding])
    return load_policy(data, str(path))


def load_policy(data: bytes | str, source: str = "<policy>") -> LoadResult:
    """Decode policy YAML (or JSON) the way kube-apiserver does."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            finding = Finding(ERROR, "encoding", f"not UTF-8: {e.reason} at byte {e.start}")
            return LoadResult(source, None, [finding])
    else:
        text = data
    try:
        documents = [doc for doc in yaml.compose_all(text, Loader=yaml.SafeLoader)]
    except yaml.MarkedYAMLError as e:
        return LoadResult(source, None, [_syntax_finding(e, text)])
    except yaml.YAMLError as e:
        return LoadResult(source, None, [Finding(ERROR, "yaml-syntax", f"invalid YAML: {e}")])
    except RecursionError:
        return LoadResult(source, None, [Finding(ERROR, "yaml-syntax", _TOO_DEEP)])
    if not documents:
        message = "the file is empty: Object 'Kind' is missing"
        return LoadResult(source, None, [Finding(ERROR, "kind", message, line=1, column=1)])
    decoder = _Decoder()
    if len(documents) > 1:
        extra = documents[1]
        decoder.add(
            WARNING,
            "extra-document",
            "",
            extra,
            f"{len(documents) - 1} more YAML document(s) after the first are ignored: "
            "kube-apiserver reads only the first",
        )
    try:
        policy = decoder.policy(documents[0])
    except RecursionError:
        # A merge key that includes its own mapping (<<: *self).
        return LoadResult(source, None, [Finding(ERROR, "yaml-syntax", _TOO_DEEP)])
    return LoadResult(source, policy, _with_key_hints(decoder.findings, text))


def _with_key_hints(findings: list[Finding], text: str) -> list[Finding]:
    """Decoding errors where a list lost its key (valid YAML, wrong shape:
    rules under omitStages) get the same hint as the syntax errors."""
    if not any(f.code == "decode" and not f.hint for f in findings):
        return findings
    orphans = {o.line: o for o in orphan_lists(text) if o.key}
    out = []
    for f in findings:
        orphan = orphans.get(f.line) if f.line is not None else None
        if f.code == "decode" and not f.hint and orphan is not None:
            hint = f"a list must be the value of a key; add `{orphan.key}:` before line {f.line}"
            f = replace(f, hint=hint)
        out.append(f)
    return out


def _syntax_finding(e: yaml.MarkedYAMLError, text: str) -> Finding:
    mark = e.problem_mark or e.context_mark
    problem = e.problem or "invalid YAML"
    message = f"invalid YAML: {problem}"
    if e.context and e.context_mark is not None:
        message += (
            f" ({e.context} started at line {e.context_mark.line + 1},"
            f" column {e.context_mark.column + 1})"
        )
    hint = missing_key_hint(text)
    if not hint and "\t" in text:
        hint = "YAML does not allow tabs for indentation; use spaces"
    return Finding(
        ERROR,
        "yaml-syntax",
        f"{message}; {REFUSED}",
        line=mark.line + 1 if mark is not None else None,
        column=mark.column + 1 if mark is not None else None,
        hint=hint,
    )


def _kind_of(node: yaml.Node) -> str:
    """The JSON type a node becomes: string, number, bool, null, list, map."""
    if isinstance(node, yaml.MappingNode):
        return "map"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    assert isinstance(node, yaml.ScalarNode)
    if node.style is None and node.value in ("y", "Y", "n", "N"):
        return "bool"  # go-yaml v2 (YAML 1.1) reads these as booleans
    if node.tag == _NULL:
        return "null"
    if node.tag == _BOOL:
        return "bool"
    if node.tag == _INT:
        # PyYAML knows YAML 1.1 sexagesimal ints (1:20); go-yaml keeps them strings.
        return "string" if ":" in node.value else "number"
    if node.tag == _FLOAT:
        return "number"
    # str, and timestamps: go-yaml v2 decodes timestamp-like values into
    # interface{} as strings, so JSON sees a string.
    return "string"


_KIND_NAMES = {
    "string": "a string",
    "number": "a number",
    "bool": "a boolean",
    "null": "null",
    "list": "a list",
    "map": "a mapping",
}


def _bool_value(node: yaml.ScalarNode) -> bool:
    return node.value.lower() in ("y", "yes", "true", "on")


def _key_text(node: yaml.Node) -> str:
    """A mapping key as the JSON key YAMLToJSON makes of it."""
    if not isinstance(node, yaml.ScalarNode):
        return "<complex key>"
    kind = _kind_of(node)
    if kind == "bool":
        return "true" if _bool_value(node) else "false"
    if kind == "null":
        return "null"
    return str(node.value)


class _Decoder:
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.locations: dict[str, Location] = {}

    # --- bookkeeping -------------------------------------------------------

    def add(
        self, severity: str, code: str, path: str, node: yaml.Node, message: str, hint: str = ""
    ) -> None:
        mark = node.start_mark
        where = f"{path}: " if path else ""
        self.findings.append(
            Finding(
                severity,
                code,
                where + message,
                field=path,
                line=mark.line + 1,
                column=mark.column + 1,
                hint=hint,
            )
        )

    def mark(self, path: str, node: yaml.Node) -> None:
        self.locations[path] = Location(node.start_mark.line + 1, node.start_mark.column + 1)

    def type_error(self, path: str, node: yaml.Node, expected: str, hint: str = "") -> None:
        found = _KIND_NAMES[_kind_of(node)]
        message = f"expected {expected}, found {found}; {REFUSED}"
        self.add(ERROR, "decode", path, node, message, hint=hint)

    # --- mappings ----------------------------------------------------------

    def _pairs(self, node: yaml.MappingNode) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """Key/value pairs in order, with ``<<`` merge keys expanded (explicit
        keys win over merged ones, as in go-yaml)."""
        explicit = [(k, v) for k, v in node.value if k.tag != _MERGE]
        names = {_key_text(k) for k, _ in explicit}
        for key, value in node.value:
            if key.tag != _MERGE:
                continue
            sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    for name, k, v in self._pairs(source):
                        if name not in names:
                            names.add(name)
                            yield name, k, v
        for key, value in explicit:
            yield _key_text(key), key, value

    def fields(
        self, node: yaml.MappingNode, path: str, known: tuple[str, ...], owner: str
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The known fields of a mapping (last one wins); unknown and duplicate
        fields are reported as the strict decoder's errors."""
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        seen: dict[str, yaml.Node] = {}
        for name, key, value in self._pairs(node):
            child = f"{path}.{name}" if path else name
            first = seen.get(name)
            if first is not None:
                self.add(
                    WARNING,
                    "duplicate-field",
                    child,
                    key,
                    f"duplicate field {name!r} (first at line {first.start_mark.line + 1}): "
                    "kube-apiserver falls back to lenient decoding and keeps only the last one",
                )
            seen[name] = key
            if name in known:
                out[name] = (key, value)
                continue
            hint = _unknown_field_hint(name, known, owner)
            consequence = ""
            if owner in ("a rule", "a resources entry") and any(
                f"{field!r}" in hint for field in _SELECTORS
            ):
                consequence = ", so the rule matches requests this field was meant to exclude"
            self.add(
                WARNING,
                "unknown-field",
                child,
                key,
                f"unknown field {name!r} in {owner}: kube-apiserver falls back to lenient "
                f"decoding and drops it{consequence}",
                hint=hint,
            )
            self._duplicates(value, child)
        return out

    def _duplicates(self, node: yaml.Node, path: str) -> None:
        """Duplicate keys anywhere below an unknown field or in free-form maps
        (the strict YAML-to-JSON conversion rejects them everywhere)."""
        stack: list[tuple[yaml.Node, str]] = [(node, path)]
        visited: set[int] = set()
        while stack:
            current, where = stack.pop()
            if id(current) in visited:
                continue
            visited.add(id(current))
            if isinstance(current, yaml.MappingNode):
                seen: set[str] = set()
                for name, key, value in self._pairs(current):
                    if name in seen:
                        self.add(
                            WARNING,
                            "duplicate-field",
                            f"{where}.{name}",
                            key,
                            f"duplicate key {name!r}: kube-apiserver falls back to lenient "
                            "decoding and keeps only the last one",
                        )
                    seen.add(name)
                    stack.append((value, f"{where}.{name}"))
            elif isinstance(current, yaml.SequenceNode):
                for i, item in enumerate(current.value):
                    stack.append((item, f"{where}[{i}]"))

    # --- typed values ------------------------------------------------------

    def string(self, node: yaml.Node, path: str) -> str | None:
        kind = _kind_of(node)
        if kind == "null":
            return ""
        if kind != "string":
            self.type_error(path, node, "a string")
            return None
        assert isinstance(node, yaml.ScalarNode)
        return str(node.value)

    def strings(self, node: yaml.Node, path: str) -> tuple[str, ...]:
        kind = _kind_of(node)
        if kind == "null":
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.type_error(path, node, "a list of strings")
            return ()
        out = []
        for i, item in enumerate(node.value):
            item_path = f"{path}[{i}]"
            self.mark(item_path, item)
            value = self.string(item, item_path)
            if value is not None:
                out.append(value)
        return tuple(out)

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        kind = _kind_of(node)
        if kind == "null":
            return None
        if kind != "bool":
            self.type_error(path, node, "true or false")
            return None
        assert isinstance(node, yaml.ScalarNode)
        return _bool_value(node)

    # --- the schema --------------------------------------------------------

    def policy(self, root: yaml.Node) -> Policy | None:
        self.mark("", root)
        if not isinstance(root, yaml.MappingNode):
            self.add(
                ERROR,
                "decode",
                "",
                root,
                f"a Policy must be a YAML mapping (apiVersion, kind, rules), "
                f"found {_KIND_NAMES[_kind_of(root)]}; {REFUSED}",
            )
            return None
        fields = self.fields(root, "", POLICY_FIELDS, "the Policy")
        for name, (key, _) in fields.items():
            self.mark(name, key)

        api_version = self._type_meta(root, fields, "apiVersion")
        kind = self._type_meta(root, fields, "kind")
        if api_version is not None and kind is not None:
            self._check_group_version(root, fields, api_version, kind)

        if "metadata" in fields:
            self._object_meta(fields["metadata"][1])

        rules: list[PolicyRule] = []
        if "rules" in fields:
            node = fields["rules"][1]
            if isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    rules.append(self.rule(item, f"rules[{i}]"))
            elif _kind_of(node) != "null":
                self.type_error("rules", node, "a list of rules")
        omit_stages: tuple[str, ...] = ()
        if "omitStages" in fields:
            omit_stages = self.strings(fields["omitStages"][1], "omitStages")
        omit_managed_fields = False
        if "omitManagedFields" in fields:
            omit_managed_fields = bool(
                self.boolean(fields["omitManagedFields"][1], "omitManagedFields")
            )
        return Policy(
            api_version=api_version or API_VERSION_V1,
            rules=tuple(rules),
            omit_stages=omit_stages,
            omit_managed_fields=omit_managed_fields,
            locations=self.locations,
        )

    def _type_meta(
        self, root: yaml.Node, fields: dict[str, tuple[yaml.Node, yaml.Node]], name: str
    ) -> str | None:
        what = "Kind" if name == "kind" else "apiVersion"
        code = "kind" if name == "kind" else "api-version"
        if name not in fields:
            self.add(ERROR, code, "", root, f"Object '{what}' is missing; {REFUSED}")
            return None
        value = self.string(fields[name][1], name)
        if value == "":
            self.add(ERROR, code, name, fields[name][1], f"Object '{what}' is missing; {REFUSED}")
            return None
        return value

    def _check_group_version(
        self,
        root: yaml.Node,
        fields: dict[str, tuple[yaml.Node, yaml.Node]],
        api_version: str,
        kind: str,
    ) -> None:
        version_node = fields["apiVersion"][1]
        if api_version == API_VERSION_V1BETA1:
            self.add(
                WARNING,
                "deprecated-version",
                "apiVersion",
                version_node,
                f"{API_VERSION_V1BETA1} is accepted here, but kube-apiserver removed it in v1.24 "
                "(kubernetes/kubernetes#108092): v1.24 and later refuse this file",
                hint=f"use apiVersion: {API_VERSION_V1}; the fields are the same",
            )
        elif api_version != API_VERSION_V1:
            self.add(
                ERROR,
                "api-version",
                "apiVersion",
                version_node,
                f'no kind "{kind}" is registered for version "{api_version}"; {REFUSED}',
                hint=f"use apiVersion: {API_VERSION_V1}",
            )
            return
        if kind != "Policy":
            self.add(
                ERROR,
                "kind",
                "kind",
                fields["kind"][1],
                f'no kind "{kind}" is registered for version "{api_version}"; {REFUSED}',
                hint="use kind: Policy",
            )

    def _object_meta(self, node: yaml.Node) -> None:
        if _kind_of(node) == "null":
            return
        if not isinstance(node, yaml.MappingNode):
            self.type_error("metadata", node, "a mapping")
            return
        known = tuple(OBJECT_META_FIELDS)
        fields = self.fields(node, "metadata", known, "metadata")
        for name, (_, value) in fields.items():
            path = f"metadata.{name}"
            expected = OBJECT_META_FIELDS[name]
            kind = _kind_of(value)
            if kind == "null":
                continue
            if expected == "map":
                if not isinstance(value, yaml.MappingNode):
                    self.type_error(path, value, "a mapping of strings")
                    continue
                self._duplicates(value, path)
                for key_name, _, item in self._pairs(value):
                    if _kind_of(item) not in ("string", "null"):
                        self.type_error(f"{path}.{key_name}", item, "a string")
            elif expected == "list" and name == "finalizers":
                self.strings(value, path)
            elif kind != expected:
                self.type_error(path, value, _KIND_NAMES[expected])

    def rule(self, node: yaml.Node, path: str) -> PolicyRule:
        self.mark(path, node)
        location = Location(node.start_mark.line + 1, node.start_mark.column + 1)
        if _kind_of(node) == "null":
            return PolicyRule(location=location)
        if not isinstance(node, yaml.MappingNode):
            self.type_error(path, node, "a rule (a mapping)")
            return PolicyRule(location=location)
        fields = self.fields(node, path, RULE_FIELDS, "a rule")
        values: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for name, (key, value) in fields.items():
            self.mark(f"{path}.{name}", key)
            values[name] = (key, value)

        def strings(name: str) -> tuple[str, ...]:
            if name not in values:
                return ()
            return self.strings(values[name][1], f"{path}.{name}")

        level = ""
        if "level" in values:
            level = self.string(values["level"][1], f"{path}.level") or ""
        resources: list[GroupResources] = []
        if "resources" in values:
            node_resources = values["resources"][1]
            if isinstance(node_resources, yaml.SequenceNode):
                for i, item in enumerate(node_resources.value):
                    resources.append(self.group_resources(item, f"{path}.resources[{i}]"))
            elif _kind_of(node_resources) != "null":
                self.type_error(f"{path}.resources", node_resources, "a list of resources entries")
        omit_managed_fields = None
        if "omitManagedFields" in values:
            omit_managed_fields = self.boolean(
                values["omitManagedFields"][1], f"{path}.omitManagedFields"
            )
        return PolicyRule(
            level=level,
            users=strings("users"),
            user_groups=strings("userGroups"),
            verbs=strings("verbs"),
            resources=tuple(resources),
            namespaces=strings("namespaces"),
            non_resource_urls=strings("nonResourceURLs"),
            omit_stages=strings("omitStages"),
            omit_managed_fields=omit_managed_fields,
            location=location,
        )

    def group_resources(self, node: yaml.Node, path: str) -> GroupResources:
        self.mark(path, node)
        if _kind_of(node) == "null":
            return GroupResources()
        if not isinstance(node, yaml.MappingNode):
            hint = ""
            if isinstance(node, yaml.ScalarNode) and _kind_of(node) == "string":
                hint = f'write it as {{group: "", resources: ["{node.value}"]}}'
            self.type_error(path, node, "a mapping with group, resources, resourceNames", hint)
            return GroupResources()
        fields = self.fields(node, path, GROUP_RESOURCES_FIELDS, "a resources entry")
        for name, (key, _) in fields.items():
            self.mark(f"{path}.{name}", key)
        group = ""
        if "group" in fields:
            group = self.string(fields["group"][1], f"{path}.group") or ""
        resources: tuple[str, ...] = ()
        if "resources" in fields:
            resources = self.strings(fields["resources"][1], f"{path}.resources")
        names: tuple[str, ...] = ()
        if "resourceNames" in fields:
            names = self.strings(fields["resourceNames"][1], f"{path}.resourceNames")
        return GroupResources(group=group, resources=resources, resource_names=names)


def _unknown_field_hint(name: str, known: tuple[str, ...], owner: str) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    for other, other_fields in _FIELDS_BY_OWNER.items():
        if other != owner and name in other_fields:
            return f"{name!r} is a field of {other}: check its indentation"
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return f"field names are case-sensitive: {lowered[name.lower()]!r}"
    return ""
