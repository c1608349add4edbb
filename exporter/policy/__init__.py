"""Audit policy tooling: kube-apiserver's decoding, validation and evaluation
of audit.k8s.io Policy files, a linter and a simulator over recorded events."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# imported now: the function ``evaluate`` shares its module's name, which an
# import of the module would otherwise leave on the package in its place
from .evaluate import Attributes, Decision, Evaluator, User, evaluate, rule_matches

if TYPE_CHECKING:
    from .attributes import attributes_from_event
    from .findings import ERROR, WARNING, Finding
    from .lint import LintReport, lint_file, lint_text
    from .loader import LoadResult, load_policy, load_policy_file
    from .model import GroupResources, Policy, PolicyRule
    from .simulate import Comparison, EventResult, Simulation
    from .validation import validate

# The names below, each imported from its module when first used: the
# metrics' label bounds need only .resources, and every command starts
# with them (the package's modules are about 25 ms of each start).
_HOMES = {
    "attributes_from_event": "attributes",
    "ERROR": "findings",
    "WARNING": "findings",
    "Finding": "findings",
    "LintReport": "lint",
    "lint_file": "lint",
    "lint_text": "lint",
    "LoadResult": "loader",
    "load_policy": "loader",
    "load_policy_file": "loader",
    "GroupResources": "model",
    "Policy": "model",
    "PolicyRule": "model",
    "Comparison": "simulate",
    "EventResult": "simulate",
    "Simulation": "simulate",
    "validate": "validation",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ERROR",
    "WARNING",
    "Attributes",
    "Comparison",
    "Decision",
    "Evaluator",
    "EventResult",
    "Finding",
    "GroupResources",
    "LintReport",
    "LoadResult",
    "Policy",
    "PolicyRule",
    "Simulation",
    "User",
    "attributes_from_event",
    "evaluate",
    "lint_file",
    "lint_text",
    "load_policy",
    "load_policy_file",
    "rule_matches",
    "validate",
]
