"""Online SMOTE: synthetic minority samples from a bounded buffer of recent minority examples.

For every labelled event of a class smaller than the largest, `OnlineSMOTE` draws
`n ~ floor(r) + Bernoulli(frac(r))` synthetic samples with `r = clip(ratio · π_max / π_y - 1, 0, max_rate)`,
so the synthetic rate follows the current imbalance. Each synthetic sample lies on the segment between
the new example and one of its `k_neighbors` nearest neighbours among the buffered examples of its class
(distances on features standardised by the buffer's spread). Numeric features are interpolated; other
features are copied from whichever endpoint is nearer to the synthetic point.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable
from typing import Any

import numpy as np
from river import base

from streamimb.imbalance.priors import PriorTracker
from streamimb.imbalance.strategy import ImbalanceStrategy, learn_weighted

__all__ = ["MinorityBuffer", "OnlineSMOTE", "interpolate"]


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def interpolate(a: dict, b: dict, u: float) -> dict:
    """The point `a + u · (b - a)` for numeric features; other features from the nearer endpoint.

    >>> interpolate({"x": 0.0, "c": "red"}, {"x": 10.0, "c": "blue"}, 0.3)
    {'x': 3.0, 'c': 'red'}
    """
    out = {}
    for k in [*a, *(k for k in b if k not in a)]:
        va, vb = a.get(k), b.get(k)
        if _is_number(va) and _is_number(vb):
            out[k] = va + u * (vb - va)
        elif va is None:
            out[k] = vb
        elif vb is None:
            out[k] = va
        else:
            out[k] = va if u < 0.5 else vb
    return out


class MinorityBuffer:
    """A bounded ring buffer of recent examples of one class, with a numeric matrix for neighbour search.

    >>> buf = MinorityBuffer(capacity=3)
    >>> for i in range(5):
    ...     buf.add({"x": float(i)})
    >>> len(buf), sorted(p["x"] for p in buf.points)
    (3, [2.0, 3.0, 4.0])
    >>> [p["x"] for p in buf.neighbours({"x": 4.1}, k=2)]
    [4.0, 3.0]
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.points: list[dict] = []
        self._keys: list[Hashable] = []
        self._index: dict[Hashable, int] = {}
        self._matrix = np.full((capacity, 0), np.nan)
        self._next = 0

    def __len__(self) -> int:
        return len(self.points)

    def _vector(self, x: dict) -> np.ndarray:
        for k, v in x.items():
            if _is_number(v) and k not in self._index:
                self._index[k] = len(self._keys)
                self._keys.append(k)
                self._matrix = np.hstack([self._matrix, np.full((self.capacity, 1), np.nan)])
        vec = np.full(len(self._keys), np.nan)
        for k, j in self._index.items():
            v = x.get(k)
            if _is_number(v):
                vec[j] = float(v)
        return vec

    def add(self, x: dict) -> None:
        """Append `x`, evicting the oldest example once full."""
        vec = self._vector(x)
        if len(self.points) < self.capacity:
            self.points.append(x)
            slot = len(self.points) - 1
        else:
            slot = self._next
            self.points[slot] = x
            self._next = (self._next + 1) % self.capacity
        self._matrix[slot] = vec

    def neighbours(self, x: dict, k: int) -> list[dict]:
        """The `k` buffered examples nearest to `x` (standardised Euclidean distance, NaNs ignored)."""
        n = len(self.points)
        if n == 0:
            return []
        vec = self._vector(x)
        m = self._matrix[:n]
        scale = np.nanstd(m, axis=0) if n > 1 else np.ones(m.shape[1])
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        diff = (m - vec) / scale
        dist = np.nansum(diff * diff, axis=1)
        order = np.argsort(dist, kind="stable")[:k]
        return [self.points[i] for i in order]


class OnlineSMOTE(ImbalanceStrategy):
    """Online SMOTE ("smote"): learn each event, plus synthetic samples of the rarer classes.

    Parameters
    ----------
    classifier
        Any river classifier.
    k_neighbors
        Neighbours (within the buffer) a synthetic sample may interpolate towards.
    buffer_size
        Recent examples kept per class (memory bound).
    ratio
        Target mass of each smaller class relative to the largest (1 = balanced).
    max_rate
        Cap on synthetic samples per real example.
    half_life, time_based, tracker, update_tracker, correct, drift_reset, drift_delta, calibrate, seed
        See `ImbalanceStrategy`.

    Examples
    --------
    >>> import random
    >>> from river import tree
    >>> rng = random.Random(0)
    >>> model = OnlineSMOTE(tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3), seed=0)
    >>> for _ in range(3000):
    ...     x = {"v": rng.random()}
    ...     model.learn_one(x, "rare" if x["v"] > 0.97 else "common")
    >>> model.predict_one({"v": 0.99}), model.predict_one({"v": 0.2})
    ('rare', 'common')
    """

    _batch_form = False  # synthetic samples are drawn from a per-event buffer

    def __init__(
        self,
        classifier: base.Classifier,
        k_neighbors: int = 5,
        buffer_size: int = 200,
        ratio: float = 1.0,
        max_rate: float = 20.0,
        half_life: float = 2000.0,
        time_based: bool = False,
        tracker: PriorTracker | None = None,
        update_tracker: bool = True,
        correct: bool = True,
        drift_reset: bool = False,
        drift_delta: float = 0.002,
        calibrate: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            classifier=classifier,
            half_life=half_life,
            time_based=time_based,
            tracker=tracker,
            update_tracker=update_tracker,
            correct=correct,
            drift_reset=drift_reset,
            drift_delta=drift_delta,
            calibrate=calibrate,
            seed=seed,
        )
        self.k_neighbors = k_neighbors
        self.buffer_size = buffer_size
        self.ratio = ratio
        self.max_rate = max_rate
        self._buffers: dict[Hashable, MinorityBuffer] = {}
        self.n_synthetic = 0

    def buffer(self, y: Hashable) -> MinorityBuffer | None:
        """The buffer of class `y` (None before its first example)."""
        return self._buffers.get(y)

    def synthetic_rate(self, y: Hashable) -> float:
        """Expected synthetic samples per real example of class `y` under the current priors."""
        priors = self.priors()
        p = priors.get(y, 0.0)
        if p <= 0.0:
            return 0.0
        return min(max(self.ratio * max(priors.values()) / p - 1.0, 0.0), self.max_rate)

    def _on_reset(self) -> None:
        self._buffers.clear()  # buffered examples belong to the old concept

    def synthesize(self, x: dict, y: Hashable, n: int) -> list[dict]:
        """`n` synthetic samples between `x` and its neighbours in the buffer of class `y`."""
        buf = self._buffers.get(y)
        if buf is None or n <= 0 or len(buf) == 0:
            return []
        near = buf.neighbours(x, self.k_neighbors)
        return [interpolate(x, near[self._rng.randrange(len(near))], self._rng.random()) for _ in range(n)]

    def _learn(self, x: dict, y: Hashable, w: float) -> None:
        self.n_fits += learn_weighted(self._model, x, y, w, self._use_w, self._rng)
        rate = self.synthetic_rate(y)
        n = int(rate)
        n += self._rng.random() < rate - n
        synthetic = self.synthesize(x, y, n)
        for z in synthetic:
            self.n_fits += learn_weighted(self._model, z, y, w, self._use_w, self._rng)
        self.n_synthetic += len(synthetic)
        # expected fed mass: the real example plus the synthetic rate (zero until a buffer exists)
        self._record_fed({y: w * (1.0 + (rate if y in self._buffers else 0.0))})
        buf = self._buffers.get(y)
        if buf is None:
            buf = self._buffers[y] = MinorityBuffer(self.buffer_size)
        if rate > 0.0 or len(buf) > 0:
            buf.add(x)
