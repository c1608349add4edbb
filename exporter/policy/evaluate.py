"""Which level a request gets: kube-apiserver's policy rule evaluation.

The semantics are those of k8s.io/apiserver/pkg/audit/policy/checker.go:

- rules are tried in order and the first match decides; no match is level None
  with the policy's omitStages;
- ``users`` is an exact match on the user name, ``userGroups`` matches when the
  user is in any of them; a request without a user (failed authentication)
  never matches a rule that has either;
- ``verbs`` is an exact match;
- a rule with ``resources`` or ``namespaces`` matches resource requests only;
  ``namespaces: [""]`` matches cluster-scoped requests and requests across all
  namespaces (both have an empty namespace);
- in ``resources``, the group must equal the request's (an omitted group is
  the core group ""; ``*`` matches any group, kube-apiserver v1.36+), an empty
  resource list matches every resource of the group, ``pods`` matches pods but
  not ``pods/log``, ``pods/*`` matches pods and all its subresources, ``*/log``
  the log subresource of anything, ``*`` everything; ``resourceNames`` must
  contain the request's name (a create of a new object has none);
- a rule with only ``nonResourceURLs`` matches non-resource requests whose path
  equals an entry, or starts with an entry's text before a trailing ``*``;
- a rule with none of these matches everything (given users, groups, verbs);
- the omitted stages are the union of the policy's and the rule's;
  omitManagedFields is the rule's when it says, otherwise the policy's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import LEVEL_NONE, STAGE_ORDER, GroupResources, Policy, PolicyRule

GROUP_WILDCARD = "*"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attributes:
    """The authorizer attributes the API server evaluates the policy against."""

    verb: str
    user: User | None = None
    resource_request: bool = False
    path: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True)
class Decision:
    level: str
    rule: int | None  # index of the deciding rule; None when no rule matched
    omit_stages: tuple[str, ...]
    omit_managed_fields: bool

    def writes(self, stage: str) -> bool:
        """Whether an event at ``stage`` is written under this decision."""
        return self.level != LEVEL_NONE and stage not in self.omit_stages


def _stages(*lists: tuple[str, ...]) -> tuple[str, ...]:
    union = {stage for stages in lists for stage in stages}
    return tuple(sorted(union, key=lambda s: (STAGE_ORDER.get(s, len(STAGE_ORDER)), s)))


class Evaluator:
    """A policy ready for evaluation (omitStages unions computed once)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._decisions = [
            Decision(
                level=rule.level,
                rule=i,
                omit_stages=_stages(policy.omit_stages, rule.omit_stages),
                omit_managed_fields=(
                    rule.omit_managed_fields
                    if rule.omit_managed_fields is not None
                    else policy.omit_managed_fields
                ),
            )
            for i, rule in enumerate(policy.rules)
        ]
        self._default = Decision(
            level=LEVEL_NONE,
            rule=None,
            omit_stages=_stages(policy.omit_stages),
            omit_managed_fields=policy.omit_managed_fields,
        )

    def decide(self, attrs: Attributes) -> Decision:
        for rule, decision in zip(self.policy.rules, self._decisions, strict=True):
            if rule_matches(rule, attrs):
                return decision
        return self._default


def evaluate(policy: Policy, attrs: Attributes) -> Decision:
    """The decision for one request (build an Evaluator for many)."""
    return Evaluator(policy).decide(attrs)


def rule_matches(rule: PolicyRule, attrs: Attributes) -> bool:
    user = attrs.user
    if rule.users and (user is None or user.name not in rule.users):
        return False
    if rule.user_groups and (
        user is None or not any(group in rule.user_groups for group in user.groups)
    ):
        return False
    if rule.verbs and attrs.verb not in rule.verbs:
        return False
    if rule.namespaces or rule.resources:
        return _matches_resource(rule, attrs)
    if rule.non_resource_urls:
        return _matches_non_resource(rule, attrs)
    return True


def path_matches(path: str, spec: str) -> bool:
    if spec == "*" or spec == path:
        return True
    return spec.endswith("*") and path.startswith(spec.rstrip("*"))


def _matches_non_resource(rule: PolicyRule, attrs: Attributes) -> bool:
    if attrs.resource_request:
        return False
    return any(path_matches(attrs.path, spec) for spec in rule.non_resource_urls)


def _matches_resource(rule: PolicyRule, attrs: Attributes) -> bool:
    if not attrs.resource_request:
        return False
    if rule.namespaces and attrs.namespace not in rule.namespaces:
        return False
    if not rule.resources:
        return True
    return any(group_resources_match(gr, attrs) for gr in rule.resources)


def resource_pattern_matches(pattern: str, resource: str, subresource: str) -> bool:
    """Whether a ``resources`` entry (``pods``, ``pods/log``, ``*``, ``pods/*``,
    ``*/log``) matches a request for ``resource``/``subresource``."""
    combined = f"{resource}/{subresource}" if subresource else resource
    if pattern == combined or pattern == "*":
        return True
    if subresource and pattern.startswith("*/") and subresource == pattern[2:]:
        return True
    return pattern.endswith("/*") and resource == pattern[:-2]


def group_resources_match(gr: GroupResources, attrs: Attributes) -> bool:
    if gr.group != attrs.api_group and gr.group != GROUP_WILDCARD:
        return False
    if not gr.resources:
        return True
    if gr.resource_names and attrs.name not in gr.resource_names:
        return False
    return any(
        resource_pattern_matches(pattern, attrs.resource, attrs.subresource)
        for pattern in gr.resources
    )
