"""Process-wide settings for the long-running and batch commands."""

from __future__ import annotations

import gc

# Young-generation collections: one per this many new container objects.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Fit the garbage collector to the event path.

    Each event allocates a few objects that die with its batch and form no
    cycles, so the default young-generation threshold (700) makes Python
    walk the live batch over and over: about a tenth of replay's time.
    Objects made at start-up (configuration, compiled rules, imported
    modules) are frozen out of every collection, and young collections run
    every GC_YOUNG_THRESHOLD allocations. Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, max(older, 20), max(oldest, 100))
