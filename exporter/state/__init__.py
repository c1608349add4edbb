"""Where shared state lives: in memory (one process), or Redis/Valkey
(``state.url``) for every replica and worker.

Two things are state: the dedupe window of (auditID, stage, stageTimestamp)
keys (exporter.pipeline) and the stateful rules' windows, sequences and
first sightings (exporter.detect). Both go through :class:`SharedState`, one
round trip per batch for each, so a rule never knows where its state lives:

- without ``state.url`` nothing here is used: the pipeline's Deduper and the
  rules' in-memory states (exporter.detect.state) hold everything, and
  first_seen rules are kept across restarts in a file (:mod:`.persist`);
- with it, :class:`~.redis_store.RedisStore` runs each state transition as
  one atomic Lua script, so two replicas touching one key never interleave,
  and a threshold or sequence that fires fires once for all of them. While
  Redis is unreachable it answers ``None`` and the callers use their local
  state: detection degrades (visible in ``kube_audit_state_backend_up``),
  metrics and Loki go on, and it reconnects with backoff on its own.
"""

from __future__ import annotations

from .ops import DedupeKey, Observation, RuleSpec, SharedState
from .settings import StateSettings, url_problem

__all__ = [
    "DedupeKey",
    "Observation",
    "RuleSpec",
    "SharedState",
    "StateSettings",
    "url_problem",
]
