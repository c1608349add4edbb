"""Process-wide settings for the long-running and batch commands."""

from __future__ import annotations

import gc

# Young-generation collections: one per this many new container objects.
# An event with a body parses into a few hundred dicts and lists that live
# until its batch is done: a lower threshold walks each batch's bodies over
# and over, and moves them into the older generations to be walked again.
GC_YOUNG_THRESHOLD = 100_000
# Older generations: collected after this many collections of the one below.
GC_OLDER_THRESHOLD = 100


def tune_gc() -> None:
    """Fit the garbage collector to the event path.

    Each event allocates objects that die with its batch and form no
    cycles (a few for a Metadata event, hundreds for one with a body), so
    the default thresholds (700, 10, 10) make Python walk the live batch
    over and over: about a tenth of replay's time, more with bodies.
    Objects made at start-up (configuration, compiled rules, imported
    modules) are frozen out of every collection, and young collections run
    every GC_YOUNG_THRESHOLD allocations. Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(
        GC_YOUNG_THRESHOLD, max(older, GC_OLDER_THRESHOLD), max(oldest, GC_OLDER_THRESHOLD)
    )
