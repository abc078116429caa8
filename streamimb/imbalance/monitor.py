"""Concept-drift watch on one model's class-conditional error rates, fed a batch at a time.

Under a pure prevalence shift a model's error rate *within* each class stays put; under concept drift it
rises. `ClassErrorMonitor` keeps, per class, a fast and a slow exponentially decayed error rate (half-lives in
labelled events of that class) and reports drift when the fast rate exceeds the slow one by at least
``margin`` and by ``z`` standard errors. One update per batch costs a few numpy operations, whatever the
batch size.

>>> import numpy as np
>>> monitor = ClassErrorMonitor()
>>> rng = np.random.default_rng(0)
>>> y = np.zeros(500, dtype=int)
>>> [monitor.update(rng.random(500) < 0.1, y) for _ in range(20)].count(True)
0
>>> any(monitor.update(rng.random(500) < 0.5, y) for _ in range(3))
True
"""

from __future__ import annotations

import math

import numpy as np

from streamimb.jit import jit

__all__ = ["ClassErrorMonitor", "update_monitors", "watch_errors"]

FAST, SLOW, MARGIN, Z, MIN_MASS = 200.0, 4000.0, 0.1, 4.0, 50.0


@jit
def watch_errors(
    mass: np.ndarray,
    errors: np.ndarray,
    rows: np.ndarray,
    wrong: np.ndarray,
    fast: float,
    slow: float,
    margin: float,
    z: float,
    min_mass: float,
    rose: np.ndarray,
) -> None:
    """Add ``rows`` events (``wrong`` of them errors; shaped groups x classes) to the [fast, slow] decayed
    ``mass`` and ``errors`` (shaped 2 x groups x classes, updated in place), each decaying by the events
    added to it; ``rose[g]``: some class of group g has a fast error rate above the slow one by ``margin``
    and by ``z`` binomial standard errors (at the slow rate, over the fast mass), with at least
    ``min_mass`` events in both windows."""
    n_groups, n_classes = rows.shape
    for g in range(n_groups):
        rose[g] = False
        for c in range(n_classes):
            r = rows[g, c]
            keep_fast, keep_slow = 2.0 ** (-r / fast), 2.0 ** (-r / slow)
            m_fast = mass[0, g, c] * keep_fast + r
            m_slow = mass[1, g, c] * keep_slow + r
            e_fast = errors[0, g, c] * keep_fast + wrong[g, c]
            e_slow = errors[1, g, c] * keep_slow + wrong[g, c]
            mass[0, g, c], mass[1, g, c] = m_fast, m_slow
            errors[0, g, c], errors[1, g, c] = e_fast, e_slow
            rate_fast = e_fast / m_fast if m_fast > 0 else 0.0
            rate_slow = e_slow / m_slow if m_slow > 0 else 0.0
            rise = rate_fast - rate_slow
            spread = math.sqrt(max(rate_slow * (1.0 - rate_slow), 1e-4) / max(m_fast, 1.0))
            if rise >= margin and rise >= z * spread and min(m_fast, m_slow) >= min_mass:
                rose[g] = True


class ClassErrorMonitor:
    """Fast-vs-slow decayed error rates per class (see the module docstring).

    Parameters
    ----------
    fast, slow
        Half-lives, in labelled events of the class, of the recent and the reference error rate.
    margin
        Smallest rise of the error rate that counts as drift.
    z
        Standard errors (binomial, at the reference rate, over the fast window's mass) the rise must exceed.
    min_mass
        Decayed events a class needs in both windows before it is judged.
    """

    def __init__(
        self,
        fast: float = 200.0,
        slow: float = 4000.0,
        margin: float = 0.1,
        z: float = 4.0,
        min_mass: float = 50.0,
    ) -> None:
        self.fast = fast
        self.slow = slow
        self.margin = margin
        self.z = z
        self.min_mass = min_mass
        self._mass = np.zeros((2, 0))
        self._errors = np.zeros((2, 0))

    def update(self, wrong: np.ndarray, y: np.ndarray) -> bool:
        """Feed a batch (``wrong`` per row, ``y`` class indices); True when some class's error rate rose."""
        k = max(self._mass.shape[1], int(y.max()) + 1 if len(y) else 0)
        if k > self._mass.shape[1]:
            pad = ((0, 0), (0, k - self._mass.shape[1]))
            self._mass, self._errors = np.pad(self._mass, pad), np.pad(self._errors, pad)
        n = np.bincount(y, minlength=k).astype(float)[None]
        e = np.bincount(y, weights=wrong.astype(float), minlength=k)[None]
        rose = np.zeros(1, dtype=bool)
        mass, errors = self._mass[:, None], self._errors[:, None]  # one group
        watch_errors(mass, errors, n, e, self.fast, self.slow, self.margin, self.z, self.min_mass, rose)
        return bool(rose[0])


def update_monitors(
    monitors: list[ClassErrorMonitor], wrong: np.ndarray, known: np.ndarray, y: np.ndarray
) -> list[bool]:
    """``monitor.update(wrong[g][known[g]], y[known[g]])`` for each monitor g of a group fed the same rows
    (``wrong`` and ``known`` shaped monitors x rows, ``y`` class indices), in one compiled pass; a monitor
    without a known row is left as it is and reports nothing.

    >>> group = [ClassErrorMonitor(), ClassErrorMonitor()]
    >>> rng = np.random.default_rng(1)
    >>> y, known = np.zeros(500, dtype=int), np.ones((2, 500), dtype=bool)
    >>> _ = [update_monitors(group, rng.random((2, 500)) < 0.1, known, y) for _ in range(20)]
    >>> update_monitors(group, np.vstack([rng.random(500) < 0.6, rng.random(500) < 0.1]), known, y)
    [True, False]
    """
    settings = {(m.fast, m.slow, m.margin, m.z, m.min_mass) for m in monitors}
    if len(settings) != 1:  # set up differently: one at a time
        pairs = zip(monitors, wrong, known, strict=True)
        return [bool(k.any()) and m.update(w[k], y[k]) for m, w, k in pairs]
    fast, slow, margin, z, min_mass = settings.pop()
    k = max(max(m._mass.shape[1] for m in monitors), int(y.max()) + 1 if len(y) else 0)
    one_hot = np.zeros((len(y), k))
    one_hot[np.arange(len(y)), y] = 1.0
    rows = known.astype(np.float64) @ one_hot  # per monitor and class: the known rows (exact counts)
    errors_in = (wrong & known).astype(np.float64) @ one_hot
    mass, errors = np.zeros((2, len(monitors), k)), np.zeros((2, len(monitors), k))
    for g, m in enumerate(monitors):
        mass[:, g, : m._mass.shape[1]], errors[:, g, : m._errors.shape[1]] = m._mass, m._errors
    rose = np.zeros(len(monitors), dtype=bool)
    watch_errors(mass, errors, rows, errors_in, fast, slow, margin, z, min_mass, rose)
    for g, m in enumerate(monitors):
        m._mass, m._errors = mass[:, g].copy(), errors[:, g].copy()
    return (rose & known.any(axis=1)).tolist()
