"""The one small interface between the state's users and where it lives.

A stateful rule describes itself once (:class:`RuleSpec`) and, per batch,
hands what each matching event does to its state (:class:`Observation`).
The answers come back in the same order: True where the observation fired
the rule (the count reached, the last step taken, a first sighting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

# (auditID, stage, stageTimestamp): what makes a retried event a duplicate
DedupeKey = tuple[str, str, float]

KINDS = ("threshold", "distinct", "sequence", "first_seen")


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A stateful rule's parameters. ``window`` is the threshold's or the
    sequence's window, or the first_seen TTL; ``counts`` the sequence's
    per-step counts."""

    rule: str
    kind: str
    window: float
    count: int = 0
    counts: tuple[int, ...] = ()
    learning: float = 0.0


class Observation(NamedTuple):
    """One event's effect on one rule's state.

    ``group``: the rule's group_by values; ``t``: the event's stageTimestamp;
    ``value``: the distinct values (joined) or the first_seen value;
    ``steps``: for a sequence, the bit mask of the steps the event matches;
    ``member``: the event's identity, so that counting the same event twice
    (two replicas racing on one retried batch) counts it once.
    """

    spec: RuleSpec
    group: tuple[str, ...]
    t: float
    value: str = ""
    steps: int = 0
    member: str = ""


class SharedState(Protocol):
    """State shared by replicas. Each method is one round trip, and answers
    ``None`` when the store cannot be reached: the caller then uses its
    local state for that batch."""

    def observe(self, observations: list[Observation]) -> list[bool] | None:
        """Applies each observation in order; True where a rule fired."""
        ...

    def seen(self, keys: list[DedupeKey]) -> set[DedupeKey] | None:
        """Which of ``keys`` some replica already took."""
        ...

    def remember(self, keys: list[DedupeKey]) -> bool:
        """Records ``keys`` as taken (after the batch is safely stored)."""
        ...

    def close(self) -> None: ...
