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

The batch is cut where the window swaps; inside a piece every path is computed for all rows and trees at once.
A missing feature makes a row's path depend on the rows learned before it; those steps are solved by a
vectorised fixed-point iteration over the rows that share a node (exact; it converges in at most as many
passes as there are missing rows at one node, usually two or three).

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

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from river import base

__all__ = ["HalfSpaceTrees", "ScaledHalfSpaceTrees", "SquashScaler"]

_PADDING = 0.15  # river's make_padded_tree padding
_MAX_PASSES = 64  # fixed-point passes before the missing-value scan falls back to a plain loop
_SMALL_BATCH = 8  # fewer rows than this go row by row


def _as_matrix(X: Any, n_features: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"expected a 2-D array with {n_features} columns, got shape {X.shape}")
    return X


def rows_of(xs: Sequence[Mapping[str, float]], features: Sequence[str]) -> np.ndarray:
    """Dicts -> a float array with one column per feature, in order; NaN where a feature is absent.

    >>> rows_of([{"a": 1.0}, {"b": 2.0, "c": 3.0}], ["a", "b"]).tolist()
    [[1.0, nan], [nan, 2.0]]
    """
    nan = math.nan
    if not xs:
        return np.empty((0, len(features)))
    return np.array([[x.get(f, nan) for f in features] for x in xs], dtype=np.float64)


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
        tr = np.arange(t_count, dtype=np.int64)
        self._off_mass, self._off_split = tr * self._n_nodes, tr * self._feat.shape[1]
        self._depth_weights = (1 << np.arange(h + 1, dtype=np.int64))[:, None]
        rng = random.Random(self.seed)
        user = self.limits or {}
        for t in range(t_count):
            limits = {name: tuple(user.get(name, (0.0, 1.0))) for name in sorted(names)}
            self._grow(t, 0, h, limits, rng)

    def _grow(self, t: int, node: int, height: int, limits: dict, rng: random.Random) -> None:
        # Mirrors river.tree.padded.make_padded_tree draw for draw: feature, split point, left, right.
        if height == 0:
            return
        on = rng.choices(
            population=list(limits.keys()), weights=[limits[i][1] - limits[i][0] for i in limits]
        )[0]
        a, b = limits[on]
        at = rng.uniform(a + _PADDING * (b - a), b - _PADDING * (b - a))
        self._feat[t, node] = self._index[on]
        self._thr[t, node] = at
        tmp = limits[on]
        limits[on] = (tmp[0], at)
        self._grow(t, 2 * node + 1, height - 1, limits, rng)
        limits[on] = tmp
        limits[on] = (at, tmp[1])
        self._grow(t, 2 * node + 2, height - 1, limits, rng)
        limits[on] = tmp

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
        if self._first_window:
            return np.zeros(len(X))
        return self._score_rows(X, 0, None, None)

    def learn_many(self, X: Any) -> None:
        """Learn the rows in order (the same state as ``learn_one`` on each)."""
        self._require_built()
        self._run(None, _as_matrix(X, len(self._names)), None, score=False)

    def score_learn_many(self, X: Any, X_learn: Any = None, learn: Any = None) -> np.ndarray:
        """Test-then-train over the rows: row i is scored after rows ``< i`` are learned, then learned.

        ``X_learn`` (default ``X``) holds the values each row is learned with, when they differ from the
        values it is scored with (a scaler that learns the row first). ``learn`` (boolean, default all)
        selects the rows that are learned; the others are only scored.
        """
        self._require_built()
        X = _as_matrix(X, len(self._names))
        X_learn = X if X_learn is None else _as_matrix(X_learn, len(self._names))
        mask = None if learn is None else np.asarray(learn, dtype=bool)
        return self._run(X, X_learn, mask, score=True)

    # -- the engine ------------------------------------------------------------------------------------
    def _run(self, X: np.ndarray | None, X_learn: np.ndarray, mask: np.ndarray | None, score: bool):
        n = len(X_learn)
        scores = np.zeros(n)
        learned = np.arange(n) if mask is None else np.flatnonzero(mask)
        start, li = 0, 0
        while start < n:
            room = self.window_size - self.counter
            seg = learned[li : li + room]
            swap = len(seg) == room
            end = int(seg[-1]) + 1 if swap else n
            info = self._learn_paths(X_learn[seg], seg, n + 1) if len(seg) else None
            if score and not self._first_window:
                pos = np.full(end - start, -1, dtype=np.int64)
                pos[seg - start] = np.arange(len(seg))
                scores[start:end] = self._score_rows(X[start:end], start, pos, info)
            if info is not None:
                self._apply(info["paths"])
                self.counter += len(seg)
            if swap:
                self._swap()
            li += len(seg)
            start = end
        return scores

    def _offsets(self) -> tuple[np.ndarray, np.ndarray]:
        return self._off_mass, self._off_split

    def _swap(self) -> None:
        self._r_mass = self._l_mass
        self._l_mass = np.zeros_like(self._r_mass)
        self._first_window = False
        self.counter = 0

    # One row at a time: the same walks, vectorised over the trees only (cheaper than a batch of one).
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_row_tables", None)  # derived from the splits; rebuilt on demand
        return state

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Per node (flat mass index): its flat split index and its left child's flat mass index."""
        tables = getattr(self, "_row_tables", None)
        if tables is None:
            n_int = self._feat.shape[1]
            local = np.arange(self._n_nodes, dtype=np.int64)
            split = np.minimum(local, n_int - 1)[None, :] + self._off_split[:, None]
            left = np.minimum(2 * local + 1, self._n_nodes - 1)[None, :] + self._off_mass[:, None]
            tables = self._row_tables = (split.ravel(), left.ravel())
        return tables

    def _walk_row(self, xv: np.ndarray) -> list[np.ndarray]:
        """Flat mass index of the node at every depth of every tree for one row (masses as they are)."""
        split_of, left_of = self._tables()
        v = xv.take(self._feat)
        right_all = (v >= self._thr).ravel()
        missing_all = np.isnan(v).ravel() if np.isnan(xv).any() else None
        lm = self._l_mass.ravel()
        m = self._off_mass
        path = [m]
        for _ in range(self.height):
            k = split_of.take(m)
            right = right_all.take(k)
            left = left_of.take(m)
            if missing_all is not None:
                missing = missing_all.take(k)
                if missing.any():
                    right = np.where(missing, lm.take(left + 1) > lm.take(left), right)
            m = left + right
            path.append(m)
        return path

    def score_row(self, xv: np.ndarray) -> float:
        """``score_one`` for a row already in ``feature_names`` order."""
        if self._first_window:
            return 0.0
        r = self._r_mass.ravel().take(np.stack(self._walk_row(xv)))
        alive = np.ones(r.shape, dtype=bool)
        np.logical_and.accumulate(r[:-1] >= self.size_limit, axis=0, out=alive[1:])
        total = int((r * self._depth_weights)[alive].sum())
        return 1.0 - total / self._max_score

    def learn_row(self, xv: np.ndarray) -> None:
        """``learn_one`` for a row already in ``feature_names`` order."""
        path = np.concatenate(self._walk_row(xv))
        lm = self._l_mass.ravel()
        lm[path] += 1  # one node per depth and tree: no index repeats
        self.counter += 1
        if self.counter == self.window_size:
            self._swap()

    def _learn_paths(self, X: np.ndarray, rows: np.ndarray, width: int) -> dict:
        """Paths of learned rows through every tree (rows in order), given the masses at segment start.

        Returns the node at every depth, the direction taken, and where a feature was missing, the mass
        difference the direction was decided on (reused by the scoring walk of the same row).
        """
        m, t_count = len(X), self.n_trees
        _, off_split = self._offsets()
        feat, thr, xf = self._feat.ravel(), self._thr.ravel(), X.ravel()
        row_base = (np.arange(m, dtype=np.int64) * X.shape[1])[:, None]
        node = np.zeros((m, t_count), dtype=np.int64)
        paths, steps, diffs = [node], [], []
        for depth in range(self.height):
            k = node + off_split
            v = xf.take(row_base + feat.take(k))
            right = v >= thr.take(k)
            missing = np.isnan(v)
            diff = None
            if missing.any():
                right, diff = self._solve_missing(depth, node, right, missing)
            steps.append(right)
            diffs.append(diff)
            node = 2 * node + 1 + right
            paths.append(node)
        return {"paths": paths, "steps": steps, "diffs": diffs, "rows": rows, "width": width, "index": {}}

    def _solve_missing(
        self, depth: int, node: np.ndarray, right: np.ndarray, missing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Directions at one level when some rows miss the split feature (river: larger ``l_mass`` child).

        Rows visiting the same node, in order, each add one to the child they enter; a row missing the
        feature enters the right child iff ``d = l_mass(right) - l_mass(left) > 0`` just before it. The
        fixed point of "guess every missing row, recompute d, re-decide" is the sequential answer (row k is
        right once the rows before it are), so iterating to a fixed point is exact.
        """
        m, t_count = node.shape
        level = 1 << depth
        key = (np.arange(t_count, dtype=np.int64) * level + (node - (level - 1))).ravel()
        missing_flat = missing.ravel()
        # Only nodes visited by some row missing their feature need the scan (and a sort of their visits).
        involved = np.bincount(key, weights=missing_flat, minlength=t_count * level) > 0
        picked = np.flatnonzero(involved.take(key))
        small = np.uint16 if t_count * level <= 65536 else np.int64
        order = picked.take(np.argsort(key.take(picked).astype(small), kind="stable"))
        ks = key.take(order)
        step = np.where(right.ravel().take(order), 1, -1).astype(np.int64)
        miss = np.flatnonzero(missing_flat.take(order))
        starts = np.ones(len(ks), dtype=bool)
        starts[1:] = ks[1:] != ks[:-1]
        gid = (np.cumsum(starts) - 1)[miss]
        start_pos = np.flatnonzero(starts)
        tree = ks[miss] // level
        child = 2 * (ks[miss] - tree * level + level - 1) + tree * self._n_nodes
        lm = self._l_mass.ravel()
        d0 = lm.take(child + 2) - lm.take(child + 1)
        step[miss] = np.where(d0 > 0, 1, -1)
        for _ in range(_MAX_PASSES):
            excl = np.cumsum(step) - step
            d = d0 + excl[miss] - excl[start_pos][gid]
            want = np.where(d > 0, 1, -1)
            if np.array_equal(want, step[miss]):
                break
            step[miss] = want
        else:  # more than _MAX_PASSES missing rows flipping at one node: finish with a plain scan
            step, d = self._scan_loop(ks, step, miss, d0, level)
        out = right.ravel().copy()
        out[order] = step > 0
        diff = np.zeros(m * t_count, dtype=np.int64)
        diff[order[miss]] = d
        return out.reshape(m, t_count), diff.reshape(m, t_count)

    @staticmethod
    def _scan_loop(
        ks: np.ndarray, step: np.ndarray, miss: np.ndarray, d0: np.ndarray, level: int
    ) -> tuple[np.ndarray, np.ndarray]:
        start_d = dict(zip(ks[miss].tolist(), d0.tolist(), strict=True))
        is_miss = np.zeros(len(ks), dtype=bool)
        is_miss[miss] = True
        out, d_out, running = step.copy(), [], {}
        for k in range(len(ks)):
            g = int(ks[k])
            if g not in start_d:
                continue
            d = running.get(g, start_d[g])
            if is_miss[k]:
                out[k] = 1 if d > 0 else -1
                d_out.append(d)
            running[g] = d + int(out[k])
        return out, np.array(d_out, dtype=np.int64)

    def _apply(self, paths: list[np.ndarray]) -> None:
        off_mass, _ = self._offsets()
        flat = np.concatenate([(p + off_mass).ravel() for p in paths])
        self._l_mass += np.bincount(flat, minlength=self._l_mass.size).reshape(self._l_mass.shape)

    def _score_rows(self, X: np.ndarray, start: int, pos: np.ndarray | None, info: dict | None) -> np.ndarray:
        """River's scoring walk for every row and tree.

        ``start``: batch position of the first row; ``pos``: each row's index among the segment's learned
        rows (-1: not learned); ``info``: the segment's learned paths (None when nothing is learned).
        """
        n, t_count, h = len(X), self.n_trees, self.height
        off_mass, off_split = self._offsets()
        feat, thr, xf = self._feat.ravel(), self._thr.ravel(), X.ravel()
        r_mass = self._r_mass.ravel()
        row_base = (np.arange(n, dtype=np.int64) * X.shape[1])[:, None]
        node = np.zeros((n, t_count), dtype=np.int64)
        total = np.zeros((n, t_count), dtype=np.int64)
        alive = np.ones((n, t_count), dtype=bool)
        limit = self.size_limit
        for depth in range(h):
            r = r_mass.take(node + off_mass)
            total += np.where(alive, r << depth, 0)
            alive &= r >= limit
            if not alive.any():
                break
            k = node + off_split
            v = xf.take(row_base + feat.take(k))
            right = v >= thr.take(k)
            missing = np.isnan(v) & alive
            if missing.any():
                right[missing] = self._mass_difference(depth, node, start, pos, missing, info) > 0
            node = 2 * node + 1 + right
        else:
            total += np.where(alive, r_mass.take(node + off_mass) << h, 0)
        return 1.0 - total.sum(axis=1) / self._max_score

    def _mass_difference(
        self,
        depth: int,
        node: np.ndarray,
        start: int,
        pos: np.ndarray | None,
        missing: np.ndarray,
        info: dict | None,
    ) -> np.ndarray:
        """``l_mass(right) - l_mass(left)`` under each missing (row, tree), just before the row is learned."""
        i_idx, t_idx = np.nonzero(missing)
        nodes = node[i_idx, t_idx]
        lm = self._l_mass
        d = lm[t_idx, 2 * nodes + 2] - lm[t_idx, 2 * nodes + 1]
        if info is None:
            return d
        # A learned row whose learning walk reached the same node decided there on the same difference.
        known = np.zeros(len(i_idx), dtype=bool)
        diffs = info["diffs"][depth]
        if diffs is not None and pos is not None:
            li = pos[i_idx]
            learned = li >= 0
            same = np.zeros(len(i_idx), dtype=bool)
            same[learned] = info["paths"][depth][li[learned], t_idx[learned]] == nodes[learned]
            known = same
            d[known] = diffs[li[known], t_idx[known]]
        rest = ~known
        if rest.any():
            keys, prefix, width = self._query_index(depth, info)
            g = t_idx[rest] * self._n_nodes + nodes[rest]
            hi = np.searchsorted(keys, g * width + start + i_idx[rest], side="left")
            lo = np.searchsorted(keys, g * width, side="left")
            d[rest] += prefix[hi] - prefix[lo]
        return d

    def _query_index(self, depth: int, info: dict) -> tuple[np.ndarray, np.ndarray, int]:
        """Learned visits at one depth sorted by (node, row), with the running sum of their directions."""
        cached = info["index"].get(depth)
        if cached is not None:
            return cached
        node, right, rows, width = info["paths"][depth], info["steps"][depth], info["rows"], info["width"]
        g = node + np.arange(self.n_trees) * self._n_nodes
        keys = (g * width + rows[:, None]).ravel()
        order = np.argsort(keys, kind="stable")
        prefix = np.concatenate(([0], np.cumsum(np.where(right.ravel()[order], 1, -1))))
        cached = info["index"][depth] = (keys[order], prefix, width)
        return cached


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

        Only rows selected by ``learn`` (default all) update the statistics.
        """
        X = _as_matrix(X, self.n_features)
        present = ~np.isnan(X)
        if learn is not None:
            present &= np.asarray(learn, dtype=bool)[:, None]
        n0, mean0, var0 = self._n, self._mean, self._var
        # Shift by the old mean (or the first value of a new feature) to keep the sums well conditioned.
        first = np.where(present.any(axis=0), X[present.argmax(axis=0), np.arange(self.n_features)], 0.0)
        shift = np.where(n0 > 0, mean0, first)
        y = np.where(present, X - shift, 0.0)
        k = np.cumsum(present, axis=0)
        n_after = n0 + k
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s1 = np.cumsum(y, axis=0)
            s2 = np.cumsum(y * y, axis=0)
            mean_after = np.where(k > 0, shift + s1 / n_after, mean0)
            m2 = n0 * var0 + s2 - s1 * s1 / n_after
            var_after = np.where(k > 0, np.maximum(m2, 0.0) / n_after, var0)
        if len(X):
            self._commit(n_after[-1].copy(), mean_after[-1].copy(), var_after[-1].copy())
        if not transform:
            return None
        mean_before = np.vstack([mean0[None, :], mean_after[:-1]])
        var_before = np.vstack([var0[None, :], var_after[:-1]])
        return self._squash(X, mean_before, var_before), self._squash(X, mean_after, var_after)


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
        if len(X) < _SMALL_BATCH:  # a few rows: row by row is cheaper than the batch machinery
            scores = np.zeros(len(X))
            for i, xv in enumerate(X):
                scores[i] = self._trees.score_row(self._scaler.transform_row(xv))
                if learn is None or learn[i]:
                    self._scaler.learn_row(xv)
                    self._trees.learn_row(self._scaler.transform_row(xv))
            return scores
        before, after = self._scaler.transform_learn_many(X, learn)
        return self._trees.score_learn_many(before, after, learn)
