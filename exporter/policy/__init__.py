"""Audit policy tooling: kube-apiserver's decoding, validation and evaluation
of audit.k8s.io Policy files, a linter and a simulator over recorded events."""

from __future__ import annotations

from .attributes import attributes_from_event
from .evaluate import Attributes, Decision, Evaluator, User, evaluate, rule_matches
from .findings import ERROR, WARNING, Finding
from .lint import LintReport, lint_file, lint_text
from .loader import LoadResult, load_policy, load_policy_file
from .model import GroupResources, Policy, PolicyRule
from .simulate import Comparison, EventResult, Simulation
from .validation import validate

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
