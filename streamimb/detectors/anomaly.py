"""One-class anomaly detectors, each with the preprocessing it needs; higher scores are more anomalous.

>>> detector = build_detector("half_space_trees", seed=1)
>>> for i in range(300):
...     detector.learn_one({"a": (i % 10) / 10})
>>> detector.score_one({"a": 0.5}) < detector.score_one({"a": 50.0})
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from river import anomaly, base, compose, preprocessing


class SquashScaler(base.Transformer):
    """Standardise, then squash into (0, 1) with a logistic curve.

    Unlike min-max scaling, a value far outside the range seen so far lands near 0 or 1, in the sparse
    edge of the unit cube, where half-space trees see it as anomalous instead of lumping it with the
    largest normal values.

    >>> s = SquashScaler()
    >>> for v in (1.0, 2.0, 3.0):
    ...     s.learn_one({"a": v})
    >>> round(s.transform_one({"a": 2.0})["a"], 3), s.transform_one({"a": 1e6})["a"] > 0.999
    (0.5, True)
    """

    def __init__(self, spread: float = 2.0) -> None:
        self.spread = spread
        self._standard = preprocessing.StandardScaler()

    def learn_one(self, x: dict) -> None:
        self._standard.learn_one(x)

    def transform_one(self, x: dict) -> dict:
        z = self._standard.transform_one(x)
        return {k: 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, v / self.spread)))) for k, v in z.items()}


def half_space_trees(
    n_trees: int = 25, height: int = 8, window_size: int = 250, seed: int | None = 42
) -> base.AnomalyDetector:
    """river HalfSpaceTrees behind a SquashScaler (the trees assume features in [0, 1]).

    Keep ``height`` near 8: the cost of every window swap grows with 2**height.
    """
    return compose.Pipeline(
        SquashScaler(),
        anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed),
    )


def loda(n_bins: int = 10, n_random_cuts: int = 100, seed: int | None = 42) -> base.AnomalyDetector:
    """river LODA (lightweight on-line detector of anomalies) on standardised features."""
    return compose.Pipeline(
        preprocessing.StandardScaler(), anomaly.LODA(n_bins=n_bins, n_random_cuts=n_random_cuts, seed=seed)
    )


def one_class_svm(nu: float = 0.1, seed: int | None = None) -> base.AnomalyDetector:
    """river OneClassSVM (SGD) on standardised features."""
    del seed  # deterministic already
    return compose.Pipeline(preprocessing.StandardScaler(), anomaly.OneClassSVM(nu=nu))


def numpy_half_space_trees(
    n_trees: int = 25, height: int = 8, window_size: int = 250, seed: int | None = 42
) -> base.AnomalyDetector:
    """``half_space_trees`` in numpy (``streamimb.detectors.hst``): the same scores, a batch at a time.

    Also scores and learns a 2-D array of events at once (``score_learn_many``), which the Processor uses in
    batch mode; one event at a time it is slower than river's.
    """
    from streamimb.detectors.hst import ScaledHalfSpaceTrees

    return ScaledHalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)


DETECTORS: dict[str, Callable[..., base.AnomalyDetector]] = {
    "half_space_trees": half_space_trees,
    "loda": loda,
    "one_class_svm": one_class_svm,
    "numpy_half_space_trees": numpy_half_space_trees,
}


def build_detector(kind: str, **params: Any) -> base.AnomalyDetector:
    """A fresh detector by registry name; unknown names and parameters raise ValueError."""
    try:
        factory = DETECTORS[kind]
    except KeyError:
        raise ValueError(f"unknown anomaly detector {kind!r}; choose from {sorted(DETECTORS)}") from None
    try:
        return factory(**params)
    except TypeError as exc:
        raise ValueError(f"anomaly detector {kind!r}: {exc}") from None
