"""Compiled loops: numba's ``njit``, cached on disk where a cache directory can be written.

Some algorithms are sequential by nature (a half-space tree's missing-feature rule depends on the rows
learned just before); numba runs them row by row at compiled speed. The first call in a process compiles
(a second or two) unless an earlier process left its cache next to the module or in the user cache
(``NUMBA_CACHE_DIR`` chooses another place); on a read-only file system every process compiles.

>>> @jit
... def total(xs):
...     s = 0.0
...     for x in xs:
...         s += x
...     return s
>>> import numpy as np
>>> total(np.arange(4.0))
6.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba

__all__ = ["jit"]


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit(fn)``, with an on-disk cache when one is available."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # no writable cache location ("no locator available")
        return numba.njit(nogil=True)(fn)
