"""Errors raised while loading rules and detection settings, each located."""

from __future__ import annotations

from collections.abc import Sequence


class RuleError(Exception):
    """Every problem found in a rule file or in the detection settings.

    Each problem names where it is (``rules.yaml:12:7: rules[3] (pod-exec).match.verb:
    unknown operator 'eqq'``), like the configuration's errors; the caller prints
    them all and exits 1.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)
