"""The audit Policy as the API server holds it after decoding (audit.k8s.io/v1).

Field names follow the Go types in k8s.io/apiserver/pkg/apis/audit/v1
(``Policy``, ``PolicyRule``, ``GroupResources``). Each object also remembers
where it came from in the file, so that problems can be reported with a line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Levels in increasing order of detail; comparisons use LEVEL_ORDER.
LEVEL_NONE = "None"
LEVEL_METADATA = "Metadata"
LEVEL_REQUEST = "Request"
LEVEL_REQUEST_RESPONSE = "RequestResponse"
LEVELS = (LEVEL_NONE, LEVEL_METADATA, LEVEL_REQUEST, LEVEL_REQUEST_RESPONSE)
LEVEL_ORDER = {level: i for i, level in enumerate(LEVELS)}

# Stages in the order a request goes through them.
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
STAGE_ORDER = {stage: i for i, stage in enumerate(STAGES)}

API_VERSION_V1 = "audit.k8s.io/v1"
API_VERSION_V1BETA1 = "audit.k8s.io/v1beta1"


@dataclass(frozen=True)
class Location:
    """1-based line and column in the policy file."""

    line: int
    column: int


@dataclass(frozen=True)
class GroupResources:
    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyRule:
    level: str = ""
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()
    # None when the rule does not say: the policy's value applies.
    omit_managed_fields: bool | None = None
    location: Location | None = None

    @property
    def is_catch_all(self) -> bool:
        """True when the rule has no selector at all and so matches every request."""
        return not (
            self.users
            or self.user_groups
            or self.verbs
            or self.resources
            or self.namespaces
            or self.non_resource_urls
        )


@dataclass(frozen=True)
class Policy:
    api_version: str = API_VERSION_V1
    rules: tuple[PolicyRule, ...] = ()
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool = False
    # Where each decoded field was found: "rules[0].resources[1].group" -> Location.
    locations: dict[str, Location] = field(default_factory=dict, compare=False)

    def location(self, path: str) -> Location | None:
        """The location of ``path``, or of its nearest enclosing field that has one."""
        while True:
            loc = self.locations.get(path)
            if loc is not None:
                return loc
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                return self.locations.get("")
            path = path[:cut]
