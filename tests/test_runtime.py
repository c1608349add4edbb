from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from exporter.runtime import BATCH_GC_YOUNG_THRESHOLD, GC_YOUNG_THRESHOLD, defer_gc, tune_gc


class _Node:
    other: object


def _garbage_cycle() -> weakref.ref[_Node]:
    """A weak reference to two objects that only refer to each other (a
    cycle, as a bug in a processor could make): only a collection frees them."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_gc_freezes_start_up_objects_and_still_collects_cycles(restore_gc: None) -> None:
    tune_gc()
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    assert gc.get_freeze_count() > 0

    gone = _garbage_cycle()
    # live allocations alone trigger the young collection
    keep = [[] for _ in range(3 * GC_YOUNG_THRESHOLD)]
    assert gone() is None
    assert len(keep) == 3 * GC_YOUNG_THRESHOLD


def test_replay_threshold_still_collects_cycles(restore_gc: None) -> None:
    """replay's higher threshold: a cycle still goes once enough new
    objects stay alive (a batch's worth), not only at exit."""
    tune_gc(BATCH_GC_YOUNG_THRESHOLD)
    assert gc.get_threshold()[0] == BATCH_GC_YOUNG_THRESHOLD

    gone = _garbage_cycle()
    keep = [[] for _ in range(2 * BATCH_GC_YOUNG_THRESHOLD)]
    assert gone() is None
    assert len(keep) == 2 * BATCH_GC_YOUNG_THRESHOLD


def test_defer_gc_then_tune_gc_collects_start_up_garbage_once(restore_gc: None) -> None:
    """replay starts with defer_gc (rare collections while the rules are
    compiled); tune_gc then collects what start-up left behind, cycles
    included, before freezing the rest."""
    defer_gc()
    assert gc.get_threshold()[0] == BATCH_GC_YOUNG_THRESHOLD

    gone = _garbage_cycle()
    tune_gc(BATCH_GC_YOUNG_THRESHOLD)
    assert gone() is None
