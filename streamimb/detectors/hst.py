"""Half-space trees in numpy: river's ``HalfSpaceTrees``, scored and learned a whole batch at a time.

:class:`HalfSpaceTrees` grows the same trees as ``river.anomaly.HalfSpaceTrees`` (same random draws for the
same ``seed`` and ``limits``, features taken in sorted order from the first event learned) and keeps the
masses in integer arrays, one row per tree, nodes in heap order. It reproduces river's scores exactly, event
by event, including the window swap (``r_mass <- l_mass`` every ``window_size`` learned events) and river's
rule for a feature missing from an event (follow the child with the larger ``l_mass`` *at that moment*).

Batch forms take a 2-D float array whose columns follow ``feature_names`` (NaN marks a missing value):

* ``score_many(X)``: score every row with the model as it is (nothing is learned);
* ``learn_many(X)``: learn the rows in order, as ``learn_one`` would one after the other;
* ``score_learn_many(X)``: test-then-train, row by row: each row is scored by the model that has learned every
  row before it and not itself. This is what a prequential loop of ``score_one``/``learn_one`` computes, so a
  batch gives the same scores as the per-event loop.

Every form runs the same compiled loop (numba, :mod:`streamimb.jit`): row by row, tree by tree, the scoring
walk and then the learning walk, so a missing feature's turn depends on exactly the rows learned before,
as in river, at a few microseconds per row for 25 trees.

:class:`ScaledHalfSpaceTrees` puts :class:`SquashScaler` (standardise, then a logistic squash into (0, 1),
as ``streamimb.detectors.anomaly.SquashScaler`` does) in front: the detector that
``anomaly.half_space_trees`` builds with river, batch-capable. The scaler's running mean and variance are
updated with batch formulas (Chan's parallel update) instead of river's one-at-a-time recurrence, so its
values can differ from river's in the last bits; the scores differ only if such a value lands within
rounding of a split threshold (never seen in the tests, which compare whole streams).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.random((600, 2))
>>> batch = HalfSpaceTrees(n_trees=5, height=4, window_size=50, seed=1, features=["a", "b"])
>>> scores = batch.score_learn_many(X)
>>> one = HalfSpaceTrees(n_trees=5, height=4, window_size=50, seed=1)
>>> each = []
>>> for a, b in X:
...     each.append(one.score_one({"a": a, "b": b}))
...     one.learn_one({"a": a, "b": b})
>>> bool(np.array_equal(scores, each)), batch.feature_names
(True, ['a', 'b'])
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Mapping, Sequence
from itertools import accumulate
from operator import sub
from typing import Any

import numpy as np
from river import base

from streamimb.features import dicts_to_rows
from streamimb.jit import jit

__all__ = ["HalfSpaceTrees", "ScaledHalfSpaceTrees", "SquashScaler"]

_PADDING = 0.15  # river's make_padded_tree padding


def _as_matrix(X: Any, n_features: int) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"expected a 2-D array with {n_features} columns, got shape {X.shape}")
    return X


def rows_of(xs: Sequence[Mapping[str, float]], features: Sequence[str]) -> np.ndarray:
    """Dicts -> a float array with one column per feature, in order; NaN where a feature is absent.

    >>> rows_of([{"a": 1.0}, {"b": 2.0, "c": 3.0}], ["a", "b"]).tolist()
    [[1.0, nan], [nan, 2.0]]
    """
    return dicts_to_rows(xs, {f: i for i, f in enumerate(features)}, np.full(len(features), np.nan))


class HalfSpaceTrees(base.AnomalyDetector):
    """Half-space trees with numpy masses; river's ``anomaly.HalfSpaceTrees`` with batch forms.

    Parameters
    ----------
    n_trees, height, window_size, limits, seed
        As in ``river.anomaly.HalfSpaceTrees``; the same values grow the same trees.
    features
        The feature names, in the column order of the arrays given to the batch methods. By default they are
        taken from the first event given to ``learn_one`` (sorted, as river does) or must be set before
        the first batch call.
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        limits: Mapping[str, tuple[float, float]] | None = None,
        seed: int | None = None,
        features: Sequence[str] | None = None,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.limits = dict(limits) if limits is not None else None
        self.seed = seed
        self.features = list(features) if features is not None else None
        self.counter = 0
        self._first_window = True
        self._names: list[str] | None = None
        self._index: dict[str, int] = {}
        self._feat: np.ndarray | None = None
        self._thr: np.ndarray | None = None
        self._l_mass: np.ndarray | None = None
        self._r_mass: np.ndarray | None = None
        if self.features is not None:
            self._build(self.features)

    # -- structure -----------------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str] | None:
        """Column order of the batch methods (None until the trees are grown)."""
        return None if self._names is None else list(self._names)

    @property
    def size_limit(self) -> float:
        """Below this reference mass the scoring walk stops (0.1 window, as in the paper)."""
        return 0.1 * self.window_size

    @property
    def _max_score(self) -> int:
        return self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)

    @property
    def _n_nodes(self) -> int:
        return 2 ** (self.height + 1) - 1

    def _build(self, names: Sequence[str]) -> None:
        """Grow the trees with river's random draws; nodes in heap order (children of k: 2k+1, 2k+2)."""
        names = list(names)
        if not names:
            raise ValueError("half-space trees need at least one feature")
        if len(set(names)) != len(names):
            raise ValueError("duplicate feature names")
        self._names = names
        self._index = {name: i for i, name in enumerate(names)}
        h, t_count = self.height, self.n_trees
        n_internal = 2**h - 1
        self._feat = np.zeros((t_count, max(n_internal, 1)), dtype=np.int64)
        self._thr = np.zeros((t_count, max(n_internal, 1)), dtype=np.float64)
        self._l_mass = np.zeros((t_count, self._n_nodes), dtype=np.int64)
        self._r_mass = np.zeros((t_count, self._n_nodes), dtype=np.int64)
        rng = random.Random(self.seed)
        user = self.limits or {}
        order = sorted(names)
        columns = [self._index[name] for name in order]
        for t in range(t_count):
            low = [float(user.get(name, (0.0, 1.0))[0]) for name in order]
            high = [float(user.get(name, (0.0, 1.0))[1]) for name in order]
            self._grow(self._feat[t], self._thr[t], 0, h, columns, low, high, rng.random)

    def _grow(
        self,
        feat: np.ndarray,
        thr: np.ndarray,
        node: int,
        height: int,
        columns: list[int],
        low: list[float],
        high: list[float],
        draw: Any,
    ) -> None:
        """One subtree, with river's draws (``make_padded_tree``: ``choices`` of a feature weighted by its
        range, then ``uniform`` inside the padded range), spelled out as the two ``random()`` calls those
        make, on the features in sorted order with their ranges in ``low``/``high``."""
        if height == 0:
            return
        cum = list(accumulate(map(sub, high, low)))
        j = bisect(cum, draw() * (cum[-1] + 0.0), 0, len(cum) - 1)
        a, b = low[j], high[j]
        start, stop = a + _PADDING * (b - a), b - _PADDING * (b - a)
        at = start + (stop - start) * draw()
        feat[node], thr[node] = columns[j], at
        high[j] = at
        self._grow(feat, thr, 2 * node + 1, height - 1, columns, low, high, draw)
        high[j], low[j] = b, at
        self._grow(feat, thr, 2 * node + 2, height - 1, columns, low, high, draw)
        low[j] = a

    def _require_built(self) -> None:
        if self._names is None:
            raise ValueError("the feature order is unknown: pass `features` or learn one event first")

    def row(self, x: Mapping[str, float]) -> np.ndarray:
        """One event as a 1-row array in ``feature_names`` order (NaN where absent)."""
        return self.rows([x])

    def rows(self, xs: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Events as an array in ``feature_names`` order (NaN where absent)."""
        self._require_built()
        return rows_of(xs, self._names)

    # -- river's per-event API -----------------------------------------------------------------------
    def learn_one(self, x: Mapping[str, float]) -> None:
        if self._names is None:
            if not x:
                return
            self._build(sorted(x))
        self.learn_row(self.row(x)[0])

    def score_one(self, x: Mapping[str, float]) -> float:
        if self._names is None or self._first_window:
            return 0.0
        return self.score_row(self.row(x)[0])

    # -- batch API -------------------------------------------------------------------------------------
    def score_many(self, X: Any) -> np.ndarray:
        """Scores of every row with the current model; learns nothing."""
        if self._names is None:
            return np.zeros(len(X))
        X = _as_matrix(X, len(self._names))
        return self._run(X, X, np.zeros(len(X), dtype=bool), score=True)

    def learn_many(self, X: Any) -> None:
        """Learn the rows in order (the same state as ``learn_one`` on each)."""
        self._require_built()
        X = _as_matrix(X, len(self._names))
        self._run(X, X, np.ones(len(X), dtype=bool), score=False)

    def score_learn_many(self, X: Any, X_learn: Any = None, learn: Any = None) -> np.ndarray:
        """Test-then-train over the rows: row i is scored after rows ``< i`` are learned, then learned.

        ``X_learn`` (default ``X``) holds the values each row is learned with, when they differ from the
        values it is scored with (a scaler that learns the row first). ``learn`` (boolean, default all)
        selects the rows that are learned; the others are only scored.
        """
        self._require_built()
        X = _as_matrix(X, len(self._names))
        X_learn = X if X_learn is None else _as_matrix(X_learn, len(self._names))
        mask = np.ones(len(X), dtype=bool) if learn is None else np.ascontiguousarray(learn, dtype=bool)
        return self._run(X, X_learn, mask, score=True)

    def score_row(self, xv: np.ndarray) -> float:
        """``score_one`` for a row already in ``feature_names`` order."""
        return float(self.score_many(xv[None, :])[0])

    def learn_row(self, xv: np.ndarray) -> None:
        """``learn_one`` for a row already in ``feature_names`` order."""
        self.learn_many(xv[None, :])

    def _run(self, X: np.ndarray, X_learn: np.ndarray, learn: np.ndarray, score: bool) -> np.ndarray:
        scores = np.zeros(len(X_learn))
        counter, first_window = _walk(
            X, X_learn, learn, score, self._feat, self._thr, self._l_mass, self._r_mass, self.height,
            self.size_limit, self.window_size, self.counter, self._first_window, self._max_score, scores,
        )  # fmt: skip
        self.counter, self._first_window = int(counter), bool(first_window)
        return scores


@jit
def _walk(
    X: np.ndarray,
    X_learn: np.ndarray,
    learn: np.ndarray,
    score: bool,
    feat: np.ndarray,
    thr: np.ndarray,
    l_mass: np.ndarray,
    r_mass: np.ndarray,
    height: int,
    size_limit: float,
    window: int,
    counter: int,
    first_window: bool,
    max_score: int,
    out: np.ndarray,
) -> tuple[int, bool]:
    """River's half-space trees, row by row: score row i (into ``out``, unless ``score`` is off or the
    first window is still filling), then learn it where ``learn`` says so; swap the windows every
    ``window`` learned rows. Returns the new window counter and first-window flag.

    A split whose feature is missing (NaN) sends the row to the child with the larger ``l_mass`` at that
    moment (river's rule), for scoring and for learning alike. The masses are read only for a missing
    value: loading both children's at every step cost a third of the loop's time.
    """
    n_trees = feat.shape[0]
    for i in range(X_learn.shape[0]):
        if score and not first_window:
            total = 0
            for t in range(n_trees):
                node = 0
                for depth in range(height + 1):
                    r = r_mass[t, node]
                    total += r << depth
                    if depth == height or r < size_limit:
                        break
                    v = X[i, feat[t, node]]  # missing (NaN): toward the child with more l_mass
                    right = l_mass[t, 2 * node + 2] > l_mass[t, 2 * node + 1] if v != v else v >= thr[t, node]
                    node = 2 * node + (2 if right else 1)
            out[i] = 1.0 - total / max_score
        if learn[i]:
            for t in range(n_trees):
                node = 0
                for _ in range(height):
                    v = X_learn[i, feat[t, node]]
                    right = l_mass[t, 2 * node + 2] > l_mass[t, 2 * node + 1] if v != v else v >= thr[t, node]
                    l_mass[t, node] += 1
                    node = 2 * node + (2 if right else 1)
                l_mass[t, node] += 1
            counter += 1
            if counter == window:
                r_mass[:, :] = l_mass
                l_mass[:, :] = 0
                first_window = False
                counter = 0
    return counter, first_window


class SquashScaler:
    """Running standardisation, then a logistic squash into (0, 1), over arrays (NaN = missing).

    The numbers of ``streamimb.detectors.anomaly.SquashScaler`` (river's ``StandardScaler`` inside): a value
    is standardised with the running mean and population variance of the values learned so far (0 when the
    variance is 0), divided by ``spread``, clipped to [-60, 60] and squashed with ``1 / (1 + exp(-v))``.

    >>> s = SquashScaler(n_features=1)
    >>> s.learn_many([[1.0], [2.0], [3.0]])
    >>> s.transform_many([[2.0], [1e6]]).round(3).ravel().tolist()
    [0.5, 1.0]
    """

    def __init__(self, n_features: int, spread: float = 2.0) -> None:
        self.n_features = n_features
        self.spread = spread
        self._n = np.zeros(n_features)
        self._mean = np.zeros(n_features)
        self._var = np.zeros(n_features)

    def _squash(self, X: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            z = np.where(var > 0, (X - mean) / np.sqrt(var), 0.0)
        z = np.clip(z / self.spread, -60.0, 60.0)
        out = 1.0 / (1.0 + np.exp(-z))
        out[np.isnan(X)] = np.nan
        return out

    def transform_row(self, xv: np.ndarray) -> np.ndarray:
        """One row (1-D) squashed with the statistics as they are."""
        return self._squash(xv, self._mean, self._var)

    def learn_row(self, xv: np.ndarray) -> None:
        """One row (1-D): the batch update for a batch of one."""
        present = ~np.isnan(xv)
        n0, mean0, var0 = self._n, self._mean, self._var
        shift = np.where(n0 > 0, mean0, np.where(present, xv, 0.0))
        n1 = n0 + present
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = np.where(present, xv - shift, 0.0)
            mean = np.where(present, shift + y / n1, mean0)
            m2 = n0 * var0 + y * y - y * y / n1
            var = np.where(present, np.maximum(m2, 0.0) / n1, var0)
        self._commit(n1.astype(np.float64), mean, var)

    def _commit(self, n: np.ndarray, mean: np.ndarray, var: np.ndarray) -> None:
        # Values near 1e154 and beyond overflow the variance, as they do river's StandardScaler (which then
        # scales everything to 0): no exception, so a batch behaves as the same events one by one.
        self._n, self._mean, self._var = n, mean, var

    def transform_many(self, X: Any) -> np.ndarray:
        """Squashed values with the statistics as they are."""
        X = _as_matrix(X, self.n_features)
        return self._squash(X, self._mean, self._var)

    def learn_many(self, X: Any) -> None:
        """Update the statistics with the rows (NaN values are skipped)."""
        self.transform_learn_many(X, transform=False)

    def transform_learn_many(
        self, X: Any, learn: Any = None, transform: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Prequential transform: (values with the stats before each row, values with the stats after it).

        Only rows selected by ``learn`` (default all) update the statistics. One compiled pass computes
        the running sums in row order (the numbers of a cumulative sum) and the standardised values; the
        squash itself stays in numpy, so each value is what :meth:`transform_row` gives with the same
        statistics, bit for bit.
        """
        X = _as_matrix(X, self.n_features)
        mask = np.ones(len(X), dtype=bool) if learn is None else np.ascontiguousarray(learn, dtype=bool)
        before = np.empty_like(X)
        after = np.empty_like(X)
        n, mean, var = self._n.copy(), self._mean.copy(), self._var.copy()
        _running_standardise(X, mask, n, mean, var, float(self.spread), before, after, transform)
        self._commit(n, mean, var)
        if not transform:
            return None
        return 1.0 / (1.0 + np.exp(-before)), 1.0 / (1.0 + np.exp(-after))  # values clipped: no overflow


@jit
def _running_standardise(
    X: np.ndarray,
    learn: np.ndarray,
    n: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    spread: float,
    before: np.ndarray,
    after: np.ndarray,
    transform: bool,
) -> None:
    """``SquashScaler.transform_learn_many``'s loop: updates ``n, mean, var`` in place (the rows ``learn``
    selects, NaN skipped) and writes each value standardised, divided by ``spread`` and clipped, with the
    statistics before its row (``before``) and after it (``after``); NaN stays NaN.

    The sums are shifted by the old mean (or a new feature's first value) to stay well conditioned, and
    accumulate in row order, as ``np.cumsum`` adds them.
    """
    rows, cols = X.shape
    for j in range(cols):
        n0, mean0, var0 = n[j], mean[j], var[j]
        shift = mean0
        if not n0 > 0:
            shift = 0.0
            for i in range(rows):
                if learn[i] and not np.isnan(X[i, j]):
                    shift = X[i, j]
                    break
        k = 0
        s1 = s2 = 0.0
        m, v = mean0, var0
        for i in range(rows):
            x = X[i, j]
            if transform:
                before[i, j] = _standardised(x, m, v, spread)
            if learn[i] and not np.isnan(x):
                y = x - shift
                if k == 0:
                    s1, s2 = y, y * y
                else:
                    s1 += y
                    s2 += y * y
                k += 1
                n_after = n0 + k
                m = shift + s1 / n_after
                m2 = n0 * var0 + s2 - s1 * s1 / n_after
                v = (0.0 if m2 < 0.0 else m2) / n_after
            if transform:
                after[i, j] = _standardised(x, m, v, spread)
        n[j], mean[j], var[j] = n0 + k, m, v


@jit
def _standardised(x: float, mean: float, var: float, spread: float) -> float:
    if np.isnan(x):
        return np.nan
    z = (x - mean) / np.sqrt(var) if var > 0 else 0.0
    z = z / spread
    return -60.0 if z < -60.0 else (60.0 if z > 60.0 else z)


class ScaledHalfSpaceTrees(base.AnomalyDetector):
    """:class:`SquashScaler` then :class:`HalfSpaceTrees`: ``anomaly.half_space_trees`` with batch forms.

    Per event it behaves like river's ``compose.Pipeline(SquashScaler(), HalfSpaceTrees(...))``:
    ``score_one`` scales with the statistics as they are; ``learn_one`` updates the statistics first, then
    the trees learn the event scaled with them. Features are fixed by the first event learned (sorted); later
    keys are ignored, as river's trees ignore them.

    >>> det = ScaledHalfSpaceTrees(n_trees=5, height=4, window_size=20, seed=3)
    >>> for i in range(100):
    ...     det.learn_one({"a": float(i % 10)})
    >>> det.score_one({"a": 5.0}) < det.score_one({"a": 500.0})
    True
    """

    def __init__(
        self,
        n_trees: int = 25,
        height: int = 8,
        window_size: int = 250,
        seed: int | None = 42,
        spread: float = 2.0,
        features: Sequence[str] | None = None,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.spread = spread
        self.features = list(features) if features is not None else None
        self._scaler: SquashScaler | None = None
        self._trees: HalfSpaceTrees | None = None
        if self.features is not None:
            self._setup(self.features)

    def _setup(self, names: Sequence[str]) -> None:
        names = list(names)
        self._trees = HalfSpaceTrees(
            self.n_trees, self.height, self.window_size, seed=self.seed, features=names
        )
        self._scaler = SquashScaler(len(names), self.spread)

    @property
    def feature_names(self) -> list[str] | None:
        """Column order of the batch methods (None until the first event is learned)."""
        return None if self._trees is None else self._trees.feature_names

    def rows(self, xs: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Events as an array in ``feature_names`` order."""
        if self._trees is None:
            raise ValueError("the feature order is unknown: pass `features` or learn one event first")
        return rows_of(xs, self._trees.feature_names)

    def learn_one(self, x: Mapping[str, float]) -> None:
        if self._trees is None:
            if not x:
                return
            self._setup(sorted(x))
        xv = self.rows([x])[0]
        self._scaler.learn_row(xv)
        self._trees.learn_row(self._scaler.transform_row(xv))

    def score_one(self, x: Mapping[str, float]) -> float:
        if self._trees is None:
            return 0.0
        return self._trees.score_row(self._scaler.transform_row(self.rows([x])[0]))

    def score_many(self, X: Any) -> np.ndarray:
        if self._trees is None:
            return np.zeros(len(X))
        return self._trees.score_many(self._scaler.transform_many(X))

    def learn_many(self, X: Any) -> None:
        _, after = self._scaler.transform_learn_many(X)
        self._trees.learn_many(after)

    def score_learn_many(self, X: Any, learn: Any = None) -> np.ndarray:
        """Test-then-train over the rows (see :meth:`HalfSpaceTrees.score_learn_many`)."""
        X = _as_matrix(X, self._scaler.n_features)
        before, after = self._scaler.transform_learn_many(X, learn)
        return self._trees.score_learn_many(before, after, learn)
