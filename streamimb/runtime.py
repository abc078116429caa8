"""Process-wide settings for the streaming loops (``streamimb run``, ``streamimb replay``).

The cyclic garbage collector costs a streaming loop in two ways:

* its full passes walk every tracked object: after start-up that is some 200,000 of them (modules,
  functions, river's and numba's internals), about 0.1 s a pass, which at a pass every few tens of thousands
  of events costs about 5 us an event on the card stream. ``prepare_gc_for_streaming`` moves what exists
  once the loop starts into the permanent generation (``gc.freeze``), so later passes walk only what the
  stream allocates. Only cycles among what was frozen are never collected, and start-up leaves none (it
  collects first);
* its young passes run every 700 container allocations by default, and a batch of 500 events allocates
  tens of thousands (events, feature dicts, verdicts): on the card stream they took about 12% of batch
  mode's time. The youngest generation is collected every ``YOUNG_THRESHOLD`` allocations instead (the
  older ones every ``OLDER_THRESHOLD`` passes of the one below), which measured the same as no collection
  at all. Objects are still freed as usual when their last reference goes; only cyclic garbage waits a
  little longer.

>>> prepare_gc_for_streaming()
>>> prepare_gc_for_streaming()  # once a process: later calls do nothing
>>> import gc
>>> gc.get_freeze_count() > 0, gc.get_threshold()[0] == YOUNG_THRESHOLD
(True, True)
"""

from __future__ import annotations

import gc

__all__ = ["OLDER_THRESHOLD", "YOUNG_THRESHOLD", "prepare_gc_for_streaming"]

YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLD = 20

_prepared = False


def prepare_gc_for_streaming() -> None:
    """Collect, freeze every object alive now, and collect young objects less often (once a process)."""
    global _prepared
    if _prepared:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    _prepared = True
