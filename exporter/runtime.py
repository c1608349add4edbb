"""Process-wide settings for the long-running and batch commands."""

from __future__ import annotations

import gc

# Young-generation collections: one per this many new container objects.
GC_YOUNG_THRESHOLD = 10_000
# The same for replay, whose batches die whole before the next is read: a
# batch of events with bodies makes tens of thousands of container objects
# (their parsed JSON), which a threshold of 10,000 walks, promotes and walks
# again while the batch is alive (a tenth of the time on bodies). The count
# is of live objects (allocations less deallocations), so above what a
# batch holds, collections are rare.
BATCH_GC_YOUNG_THRESHOLD = 100_000


def tune_gc(young: int = GC_YOUNG_THRESHOLD) -> None:
    """Fit the garbage collector to the event path.

    Each event allocates a few objects that die with its batch and form no
    cycles, so the default young-generation threshold (700) makes Python
    walk the live batch over and over: about a tenth of replay's time.
    Objects made at start-up (configuration, compiled rules, imported
    modules) are frozen out of every collection, and young collections run
    every ``young`` allocations (net of deallocations). Cycles are still
    collected.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, max(older, 20), max(oldest, 100))


def defer_gc() -> None:
    """Collect rarely while a command starts (its configuration, its rules
    and their compilation make objects that live on): tune_gc, called once
    it has started, collects them once and freezes them."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(BATCH_GC_YOUNG_THRESHOLD, older, oldest)
