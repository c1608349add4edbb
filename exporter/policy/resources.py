"""The built-in API resources of a Kubernetes release, for checking the
resource names a policy mentions (data: builtin_resources.json)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources as importlib_resources
from typing import Any

DATA_FILE = "builtin_resources.json"

# The verbs the API server puts on resource requests (the eight an audit
# policy names; proxy and connect are rare) and on non-resource requests (the
# lower-cased HTTP method).
RESOURCE_VERBS = (
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
)
NON_RESOURCE_VERBS = ("get", "post", "put", "patch", "delete", "head", "options")


@dataclass(frozen=True)
class Resource:
    group: str
    name: str
    singular: str
    kind: str
    short_names: tuple[str, ...]
    subresources: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """Why a ``resources`` entry names nothing, and what it probably meant."""

    code: str  # unknown-resource, unknown-subresource, wrong-group, unknown-group
    message: str
    suggestion: str = ""


def group_label(group: str) -> str:
    return "the core group" if group == "" else f'group "{group}"'


class BuiltinResources:
    def __init__(self, release: str, resources: list[Resource]) -> None:
        self.release = release
        self.by_group: dict[str, dict[str, Resource]] = {}
        for resource in resources:
            self.by_group.setdefault(resource.group, {})[resource.name] = resource

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BuiltinResources:
        found = []
        for group, items in doc["groups"].items():
            for item in items:
                found.append(
                    Resource(
                        group=group,
                        name=item["resource"],
                        singular=item["singular"],
                        kind=item["kind"],
                        short_names=tuple(item["shortNames"]),
                        subresources=tuple(item["subresources"]),
                    )
                )
        return cls(str(doc["release"]), found)

    def is_builtin_group(self, group: str) -> bool:
        return group in self.by_group

    def _groups_for(self, group: str) -> list[str]:
        return list(self.by_group) if group == "*" else [group]

    def _find(self, group: str, name: str) -> Resource | None:
        for g in self._groups_for(group):
            resource = self.by_group.get(g, {}).get(name)
            if resource is not None:
                return resource
        return None

    def check(self, group: str, pattern: str) -> Problem | None:
        """A problem with ``pattern`` in ``group``, or None when it names
        something (or the group is not built in: custom resources are unknown)."""
        if group == "core":
            return Problem(
                "unknown-group",
                'there is no API group "core": the core group (pods, secrets, ...) is ""',
                'group: ""',
            )
        if group != "*" and group not in self.by_group:
            return None
        if pattern == "*":
            return None
        resource, _, subresource = pattern.partition("/")
        where = "any built-in group" if group == "*" else group_label(group)
        if resource == "*":
            if not subresource or subresource == "*":
                return None  # "*/*" is reported as a pattern that never matches
            for g in self._groups_for(group):
                if any(subresource in r.subresources for r in self.by_group[g].values()):
                    return None
            return Problem(
                "unknown-subresource",
                f'no resource of {where} has a subresource "{subresource}" '
                f"in Kubernetes {self.release}",
            )
        found = self._find(group, resource)
        if found is None:
            return self._unknown_resource(group, resource, subresource, where)
        if subresource and subresource != "*" and subresource not in found.subresources:
            close = difflib.get_close_matches(subresource, found.subresources, n=1, cutoff=0.6)
            known = ", ".join(found.subresources) or "none"
            return Problem(
                "unknown-subresource",
                f'"{found.name}" has no subresource "{subresource}" in Kubernetes '
                f"{self.release} (it has: {known})",
                f"{found.name}/{close[0]}" if close else "",
            )
        return None

    def _unknown_resource(
        self, group: str, resource: str, subresource: str, where: str
    ) -> Problem | None:
        suffix = f"/{subresource}" if subresource else ""
        message = f'"{resource}" is not a resource of {where} in Kubernetes {self.release}'
        candidates = [r for g in self._groups_for(group) for r in self.by_group[g].values()]
        # The singular, the kind or a short name, as kubectl accepts them.
        lowered = resource.lower()
        for r in candidates:
            if lowered in (r.singular, r.kind.lower()) or resource in r.short_names:
                what = (
                    "the singular"
                    if lowered == r.singular
                    else "the kind"
                    if lowered == r.kind.lower()
                    else "a short name kubectl accepts"
                )
                return Problem(
                    "unknown-resource",
                    f"{message}: it is {what}, audit policies need the plural resource name",
                    r.name + suffix,
                )
        if lowered != resource and self._find(group, lowered) is not None:
            return Problem(
                "unknown-resource",
                f"{message}: resource names are lower case",
                lowered + suffix,
            )
        if group == "*":
            # Any group includes custom resources, which can have any name.
            return None
        # The right name in the wrong group (deployments in the core group).
        for other, names in self.by_group.items():
            if other == group:
                continue
            for r in names.values():
                if lowered in (r.name, r.singular, r.kind.lower()):
                    return Problem(
                        "wrong-group",
                        f"{message}: {r.name} is in {group_label(other)}",
                        f'group: "{other}", resources: ["{r.name}{suffix}"]',
                    )
        close = difflib.get_close_matches(lowered, [r.name for r in candidates], n=1, cutoff=0.75)
        return Problem("unknown-resource", message, close[0] + suffix if close else "")


@cache
def builtin_resources() -> BuiltinResources:
    text = (
        importlib_resources.files(__package__ or "exporter.policy")
        .joinpath(DATA_FILE)
        .read_text("utf-8")
    )
    doc: dict[str, Any] = json.loads(text)
    return BuiltinResources.from_json(doc)
