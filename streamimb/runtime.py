"""Process-wide settings for the streaming loops (``streamimb run``, ``streamimb replay``).

The cyclic garbage collector's full passes walk every tracked object: after start-up that is some 200,000
of them (modules, functions, river's and numba's internals), about 0.1 s a pass, which at a pass every few
tens of thousands of events costs about 5 us an event on the card stream. ``freeze_startup_heap`` moves what
exists once the loop starts into the permanent generation (``gc.freeze``), so later passes walk only what
the stream allocates. Objects are still freed as usual when their last reference goes; only cycles
among what was frozen are never collected, and start-up leaves none (it collects first).

>>> freeze_startup_heap()
>>> freeze_startup_heap()  # once a process: later calls do nothing
>>> import gc
>>> gc.get_freeze_count() > 0
True
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]

_frozen = False


def freeze_startup_heap() -> None:
    """Collect, then freeze every object alive now (once a process)."""
    global _frozen
    if _frozen:
        return
    gc.collect()
    gc.freeze()
    _frozen = True
