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

import numpy as np

__all__ = ["ClassErrorMonitor", "decay_into", "error_rose"]

FAST, SLOW, MARGIN, Z, MIN_MASS = 200.0, 4000.0, 0.1, 4.0, 50.0


def decay_into(
    mass: np.ndarray, errors: np.ndarray, rows: np.ndarray, wrong: np.ndarray, fast: float, slow: float
) -> tuple[np.ndarray, np.ndarray]:
    """Add ``rows`` events (``wrong`` of them errors) to [fast, slow] decayed ``mass`` and ``errors``
    (first axis: fast, slow), decaying by the events added."""
    decay = 2.0 ** (-np.asarray(rows)[None] / np.array([fast, slow]).reshape((2,) + (1,) * np.ndim(rows)))
    return mass * decay + rows, errors * decay + wrong


def error_rose(mass: np.ndarray, errors: np.ndarray, margin: float, z: float, min_mass: float) -> np.ndarray:
    """Where the fast error rate exceeds the slow one by ``margin`` and by ``z`` standard errors, with at
    least ``min_mass`` events in both windows (arrays shaped like ``mass[0]``)."""
    rate = np.divide(errors, mass, out=np.zeros_like(mass), where=mass > 0)
    fast, slow = rate
    rise = fast - slow
    spread = np.sqrt(np.maximum(slow * (1.0 - slow), 1e-4) / np.maximum(mass[0], 1.0))
    return (rise >= margin) & (rise >= z * spread) & (mass.min(axis=0) >= min_mass)


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
        n = np.bincount(y, minlength=k).astype(float)
        e = np.bincount(y, weights=wrong.astype(float), minlength=k)
        self._mass, self._errors = decay_into(self._mass, self._errors, n, e, self.fast, self.slow)
        return bool(np.any(error_rose(self._mass, self._errors, self.margin, self.z, self.min_mass)))
