"""A Hoeffding tree on numpy arrays that learns a whole batch of weighted examples at once.

It is river's ``HoeffdingTreeClassifier`` as the prevalence-shift benchmark tuned it (Gaussian estimators
per class and feature, ``n_splits`` candidate thresholds between the observed extremes, Gini or
information-gain merit, Hoeffding bound with tie-break ``tau``, majority-class leaves, or naive-Bayes
leaves with ``leaf_prediction``), with its state in arrays so that routing, statistics and split
evaluation are vectorised:

* ``predict_proba_array(X)`` routes every row of a batch down the tree in one pass per level;
* ``learn_array(X, y, w)`` adds the batch to the leaves' class counts and per-class Gaussian estimators
  (merged with Chan's parallel update, so the estimators equal those built one example at a time), then
  tries to split the leaves that have seen ``grace_period`` more weight. A leaf splits after the whole
  batch is counted (the per-event tree may split in the middle of it); with ``regrow`` the batch's rows
  then go on down to its children, which may split in turn.

With ``adaptive`` (default) a node whose class-conditional error rate rises is pruned back to a leaf, so
the tree is not river's plain Hoeffding tree any more; ``adaptive=False``, one row at a time, is (tested).
The size is capped by ``max_depth`` and ``max_nodes``, so memory is bounded however long the stream runs
(river's own cap is only checked at multiples of its memory period, which fractional sample weights
never hit). The dict API (``learn_one``/``predict_proba_one``) is the same model, one row at a time.

>>> import random
>>> rng = random.Random(1)
>>> tree = NumpyHoeffdingTree(grace_period=50)
>>> for _ in range(2000):
...     x = {"a": rng.random(), "b": rng.random()}
...     tree.learn_one(x, x["a"] > 0.7)
>>> tree.predict_one({"a": 0.9, "b": 0.5}), tree.predict_one({"a": 0.2, "b": 0.5}), tree.n_nodes > 1
(True, False, True)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from river import base

from streamimb.classifiers.features import FeatureIndex
from streamimb.imbalance.monitor import FAST, MARGIN, MIN_MASS, SLOW, Z, watch_errors
from streamimb.jit import jit

__all__ = ["NumpyHoeffdingTree"]

_LEAF = -1
LEAF_PREDICTIONS = ("mc", "nb", "nba")


class NumpyHoeffdingTree(base.Classifier):
    """Hoeffding tree with numpy statistics and batch forms (see the module docstring).

    Parameters
    ----------
    grace_period
        Weight a leaf must see between split attempts.
    delta
        Split confidence of the Hoeffding bound (MOA's 1e-3; river's default 1e-7 waits far too long).
    tau
        Tie-break: split anyway once the bound is below it.
    split_criterion
        "gini" or "info_gain".
    n_splits
        Candidate thresholds per feature between the smallest and largest value seen at the leaf.
    min_branch_fraction
        A split must send more than this fraction of the leaf's weight down at least two branches.
    max_share_to_split
        Do not try to split a leaf where the majority class holds more than this share of the weight.
    max_depth
        Depth of the deepest leaf (the root is depth 0).
    max_nodes
        Node budget; once spent, leaves keep counting but no longer split. Each node slot holds five
        float64 estimators per class and feature (40 bytes x classes x features), so the budget bounds
        memory: 1,023 nodes, 2 classes and 50 features take at most 4 MiB.
    adaptive
        Watch every node's class-conditional error rate on the batches given to ``learn_array``
        (`ClassErrorMonitor`'s test, per node) and prune a node whose errors rose back to a fresh leaf
        (concept drift): the subtree regrows from the new data while the rest of the tree stays, as
        river's adaptive tree replaces stale subtrees.
    regrow
        Let a batch keep growing the leaves it split (see ``_regrow``); without it a tree grows at most
        one level per batch.
    leaf_prediction
        How a leaf turns what it has seen into class probabilities, as river's ``leaf_prediction``: "mc",
        the class shares of its weight (every row of a leaf gets the same score); "nb", Gaussian naive
        Bayes from the leaf's per-class estimators (`_leaf_proba`), so that rows of one leaf are ranked
        too; "nba", whichever of the two has been right on more of the weight the leaf learned since it
        was made. A leaf whose estimators know too little (just split, or a class unseen since) falls back
        to its class shares. "mc" stays the default: naive-Bayes leaves rank better for a single tree on
        three of four benchmark streams (card, Agrawal, ULB card fraud) but much worse on bank marketing,
        and under the default oob ensemble they were no better anywhere.
    """

    def __init__(
        self,
        grace_period: int = 50,
        delta: float = 1e-3,
        tau: float = 0.05,
        split_criterion: str = "gini",
        n_splits: int = 10,
        min_branch_fraction: float = 0.01,
        max_share_to_split: float = 1.0,
        max_depth: int = 20,
        max_nodes: int = 1023,
        adaptive: bool = True,
        regrow: bool = True,
        leaf_prediction: str = "mc",
    ) -> None:
        if split_criterion not in ("gini", "info_gain"):
            raise ValueError(f"split_criterion must be 'gini' or 'info_gain', not {split_criterion!r}")
        if leaf_prediction not in LEAF_PREDICTIONS:
            raise ValueError(f"leaf_prediction must be one of {LEAF_PREDICTIONS}, not {leaf_prediction!r}")
        if max_nodes < 1 or max_depth < 0 or grace_period <= 0:
            raise ValueError("max_nodes must be >= 1, max_depth >= 0 and grace_period > 0")
        self.grace_period = grace_period
        self.delta = delta
        self.tau = tau
        self.split_criterion = split_criterion
        self.n_splits = n_splits
        self.min_branch_fraction = min_branch_fraction
        self.max_share_to_split = max_share_to_split
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.adaptive = adaptive
        self.regrow = regrow
        self.leaf_prediction = leaf_prediction
        self._features = FeatureIndex()
        self._classes: list[Hashable] = []
        self._n_nodes = 1  # slots used (node 0 and pairs of children), freed pairs included
        self._free: list[int] = []  # first slots of pairs freed by pruning, reused by splits
        self._version = 0
        self.n_pruned = 0
        self._allocate(capacity=min(15, max_nodes), n_classes=0, n_features=0)

    # -- storage -------------------------------------------------------------------------------------
    def _allocate(self, capacity: int, n_classes: int, n_features: int) -> None:
        self._feature = np.full(capacity, _LEAF, dtype=np.int32)
        self._threshold = np.zeros(capacity)
        self._left = np.zeros(capacity, dtype=np.int32)  # the right child is left + 1
        self._nan_left = np.zeros(capacity, dtype=bool)
        self._depth = np.zeros(capacity, dtype=np.int32)
        self._parent = np.zeros(capacity, dtype=np.int32)
        self._alive = np.zeros(capacity, dtype=bool)
        self._alive[0] = True
        self._last_attempt = np.zeros(capacity)
        self._counts = np.zeros((capacity, n_classes))
        # per node: weight the majority class and naive Bayes predicted right ("nba" leaves)
        self._mc_correct = np.zeros(capacity)
        self._nb_correct = np.zeros(capacity)
        # per node and class: decayed [fast, slow] row and error mass (drift watch, see ``adaptive``)
        self._watch_mass = np.zeros((2, capacity, n_classes))
        self._watch_errors = np.zeros((2, capacity, n_classes))
        shape = (capacity, n_classes, n_features)
        self._weight = np.zeros(shape)
        self._mean = np.zeros(shape)
        self._m2 = np.zeros(shape)
        self._low = np.full(shape, np.inf)
        self._high = np.full(shape, -np.inf)

    def _resize(self, capacity: int, n_classes: int, n_features: int) -> None:
        """Grow the arrays (never shrinks): more nodes, classes or features."""
        old_cap, old_c, old_f = self._weight.shape
        if (capacity, n_classes, n_features) == (old_cap, old_c, old_f):
            return
        names = ("_feature", "_threshold", "_left", "_nan_left", "_depth", "_parent", "_alive")
        old = {k: getattr(self, k) for k in names}
        old.update(_last_attempt=self._last_attempt, _counts=self._counts, _mc_correct=self._mc_correct,
                   _nb_correct=self._nb_correct)  # fmt: skip
        watch = {k: getattr(self, k) for k in ("_watch_mass", "_watch_errors")}
        stats = {k: getattr(self, k) for k in ("_weight", "_mean", "_m2", "_low", "_high")}
        self._allocate(capacity, n_classes, n_features)
        for k, a in old.items():
            target = getattr(self, k)
            if a.ndim == 1:
                target[:old_cap] = a
            else:
                target[:old_cap, :old_c] = a
        for k, a in watch.items():
            getattr(self, k)[:, :old_cap, :old_c] = a
        for k, a in stats.items():
            getattr(self, k)[:old_cap, :old_c, :old_f] = a

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "leaf_prediction" not in state:  # pickled before leaf predictions: majority-class leaves
            self.leaf_prediction = "mc"
            self._mc_correct = np.zeros(len(self._feature))
            self._nb_correct = np.zeros(len(self._feature))

    @property
    def _estimators(self) -> tuple[np.ndarray, ...]:
        """Per node, class and feature: weight, mean, M2, min and max (the compiled kernels' ``stats``)."""
        return self._weight, self._mean, self._m2, self._low, self._high

    @property
    def _watch_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Per node and class: the drift watch's decayed row and error masses."""
        return self._watch_mass, self._watch_errors

    @property
    def n_nodes(self) -> int:
        """Nodes in the tree (branches and leaves)."""
        return self._n_nodes - 2 * len(self._free)

    @property
    def n_leaves(self) -> int:
        live = self._alive[: self._n_nodes]
        return int(np.sum(live & (self._feature[: self._n_nodes] == _LEAF)))

    @property
    def depth(self) -> int:
        return int(self._depth[: self._n_nodes][self._alive[: self._n_nodes]].max())

    @property
    def classes(self) -> list[Hashable]:
        """Class labels in the column order of ``predict_proba_array``."""
        return list(self._classes)

    @property
    def _multiclass(self) -> bool:
        return True

    # -- array API -----------------------------------------------------------------------------------
    def leaves(self, X: np.ndarray, start: int = 0) -> np.ndarray:
        """The leaf each row of ``X`` falls into from node ``start`` (the root by default); a missing
        value follows the heavier branch."""
        out = np.empty(len(X), dtype=np.int32)
        _route(np.ascontiguousarray(X, dtype=np.float64), start, self._feature, self._threshold, self._left,
               self._nan_left, out)  # fmt: skip
        return out

    @property
    def version(self) -> int:
        """Changes whenever the tree learns: leaves computed at the same version are still valid."""
        return self._version

    def predict_proba_array(self, X: np.ndarray, leaves: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities (rows sum to 1, or are all 0 at a leaf that has seen nothing).

        ``leaves``: ``leaves(X)`` if already computed at this ``version``.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        leaves = self.leaves(X) if leaves is None else leaves
        if self.leaf_prediction == "mc":
            counts = self._counts[leaves]
            total = counts.sum(axis=1, keepdims=True)
            return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
        out = np.empty((len(X), self._counts.shape[1]))
        _leaf_proba(X, np.ascontiguousarray(leaves, dtype=np.int32), self._counts, self._estimators,
                    self._naive_bayes_nodes(), out)  # fmt: skip
        return out

    def _naive_bayes_nodes(self) -> np.ndarray:
        """Per node slot: whether its leaf predicts with naive Bayes (``leaf_prediction``)."""
        if self.leaf_prediction == "nb":
            return np.ones(len(self._feature), dtype=np.bool_)
        if self.leaf_prediction == "nba":
            return self._nb_correct >= self._mc_correct
        return np.zeros(len(self._feature), dtype=np.bool_)

    def vote_array(
        self, X: np.ndarray, votes: np.ndarray, voters: np.ndarray, vote: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """One member's part of an ensemble vote, in one compiled pass: with ``vote``, each row's class
        probabilities (normalised) are added to ``votes`` (rows x classes, at least this tree's classes)
        and 1 to ``voters`` where its leaf has seen something. Returns the rows' leaves and their
        majority class index (-1 where the leaf has seen nothing)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        leaves = np.empty(len(X), dtype=np.int32)
        majority = np.empty(len(X), dtype=np.intp)
        mc = self.leaf_prediction == "mc"
        _vote(X, self._feature, self._threshold, self._left, self._nan_left, self._counts, vote and mc,
              leaves, majority, votes, voters)  # fmt: skip
        if vote and not mc:
            proba = self.predict_proba_array(X, leaves)
            known = majority >= 0
            votes[known, : proba.shape[1]] += proba[known]
            voters[known] += 1.0
        return leaves, majority

    def learn_array(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, leaves: np.ndarray | None = None
    ) -> None:
        """Learn rows ``X`` with class indices ``y`` (into ``classes``) and weights ``w`` (default 1).

        ``X`` may have more columns than the tree has seen (new features are appended) and ``y`` new class
        indices; rows with weight 0 are skipped. ``leaves``: ``leaves(X)`` if already computed at this
        ``version``.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.intp)
        w = np.ones(len(X)) if w is None else np.asarray(w, dtype=np.float64)
        rows = np.flatnonzero(w > 0)  # the rows learned (X itself is not copied)
        if len(rows) < len(w):
            y, w = y[rows], w[rows]
            leaves = None if leaves is None else leaves[rows]
        n_classes = max(self._counts.shape[1], int(y.max()) + 1 if len(y) else 0)
        self._resize(len(self._feature), n_classes, max(self._weight.shape[2], X.shape[1]))
        if not len(rows):
            return
        if X.shape[1] < self._weight.shape[2]:
            X = np.hstack([X, np.full((len(X), self._weight.shape[2] - X.shape[1]), np.nan)])
        self._version += 1
        leaf = np.ascontiguousarray(self.leaves(X)[rows] if leaves is None else leaves, dtype=np.int32)
        if not self.adaptive:
            drifted = []
        elif len(rows) == 1:
            drifted = self._watch_one(int(leaf[0]), int(y[0]))
        else:
            drifted = self._watch(leaf, y)
        if self.leaf_prediction == "nba":
            _score_leaves(X, rows, leaf, y, w, self._counts, self._estimators, self._mc_correct,
                          self._nb_correct)  # fmt: skip
        due = np.empty(len(rows), dtype=np.intp)
        n_due = _count_rows(
            X, rows, leaf, y, w, self._counts, self._weight, self._mean, self._m2, self._low, self._high,
            self._last_attempt, float(self.grace_period), due,
        )  # fmt: skip
        split = self._attempt_splits(due[:n_due])
        if (
            self.regrow and len(rows) > 1
        ):  # one row at a time, a split already hands on the rest of the stream
            self._regrow(split, X, rows, leaf, y, w)
        for node in drifted:
            self._prune(node)

    def _regrow(
        self,
        split: list[int],
        X: np.ndarray,
        rows: np.ndarray,
        leaf: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
    ) -> None:
        """Let the batch keep growing the nodes it split: the batch's rows of a node that split go down to
        its children's estimators, and a child that got ``grace_period`` weight from them may split in turn.

        One event at a time, a leaf that splits hands the rest of the stream to its children at once; a
        batch splits a leaf only after all of its rows are counted, so without this step a tree could grow
        at most one level per batch. The Hoeffding bound of such a split counts only the batch's rows.
        ``rows``: the rows of ``X`` that ``leaf``, ``y`` and ``w`` describe.
        """
        if not (self._weight.shape[1] and self._weight.shape[2]):
            return
        while split:
            ready, seen = np.empty(2 * len(split), dtype=np.intp), np.empty(2 * len(split))
            n_ready = _hand_down(
                np.asarray(split, dtype=np.intp), X, rows, leaf, y, w, self._feature, self._threshold,
                self._left, self._nan_left, self._estimators, float(self.grace_period), ready, seen,
            )  # fmt: skip
            split = self._attempt_splits(ready[:n_ready], seen[:n_ready].tolist())

    # -- drift watch ---------------------------------------------------------------------------------
    def _watch(self, leaf: np.ndarray, y: np.ndarray) -> list[int]:
        """Update every node's error watch with the batch (predictions before learning it); return the
        topmost nodes whose class-conditional error rate rose."""
        used = self._n_nodes
        flagged = np.zeros(used, dtype=np.bool_)
        _watch_nodes(
            leaf, y, self._counts, self._depth, self._parent, self._alive, self._feature, used,
            self._watch_mass, self._watch_errors, FAST, SLOW, MARGIN, Z, MIN_MASS, flagged,
        )  # fmt: skip
        if not flagged.any():
            return []
        nodes = set(np.flatnonzero(flagged).tolist())
        return [n for n in nodes if not self._ancestors(n) & nodes]

    def _watch_one(self, leaf: int, y: int) -> list[int]:
        """``_watch`` for a single row: only the nodes on its path change."""
        counts = self._counts[leaf]
        if not counts.any():
            return []
        wrong = float(int(counts.argmax()) != y)
        path = [leaf, *sorted(self._ancestors(leaf), reverse=True)]
        one = np.ones((len(path), 1))
        mass, err = self._watch_mass[:, path, y][..., None], self._watch_errors[:, path, y][..., None]
        flagged = np.zeros(len(path), dtype=bool)
        watch_errors(mass, err, one, wrong * one, FAST, SLOW, MARGIN, Z, MIN_MASS, flagged)
        self._watch_mass[:, path, y], self._watch_errors[:, path, y] = mass[..., 0], err[..., 0]
        nodes = [
            n for n, hit in zip(path, flagged.tolist(), strict=True) if hit and self._feature[n] != _LEAF
        ]
        return nodes[-1:]  # the topmost: the path runs from the leaf up to the root

    def _ancestors(self, node: int) -> set[int]:
        out = set()
        while node:
            node = int(self._parent[node])
            out.add(node)
        return out

    def _prune(self, node: int) -> None:
        """Turn ``node`` back into an empty leaf and free its subtree's slots."""
        stack = [node]
        while stack:
            n = stack.pop()
            if self._feature[n] != _LEAF:
                child = int(self._left[n])
                stack += [child, child + 1]
                self._free.append(child)
                self._alive[child : child + 2] = False
            self._reset_slot(n)
        self._alive[node] = True
        self._last_attempt[node] = 0.0
        self._version += 1
        self.n_pruned += 1

    def _reset_slot(self, n: int) -> None:
        _reset_node(n, self._feature, self._counts, self._watch_state, self._estimators)
        self._mc_correct[n] = self._nb_correct[n] = 0.0

    # -- splitting -----------------------------------------------------------------------------------
    def _merit_range(self, n_classes: int) -> float:
        return 1.0 if self.split_criterion == "gini" else math.log2(max(n_classes, 2))

    def _attempt_splits(self, nodes: np.ndarray, evidence: list[float] | None = None) -> list[int]:
        """Split each of ``nodes`` the Hoeffding bound (over its ``evidence`` weight, default the node's
        total) allows, in order, within the node budget; the nodes that split.

        The candidate split points of all the nodes are evaluated in one compiled pass (`_choose_splits`);
        the splits are then made one by one.
        """
        if not len(nodes) or not self._weight.shape[2]:
            return []
        nodes = np.ascontiguousarray(nodes, dtype=np.intp)
        n_classes = self._weight.shape[1]
        feature = np.empty(len(nodes), dtype=np.intp)
        point = np.empty(len(nodes))
        left = np.zeros((len(nodes), n_classes))
        evidence_at = (
            np.full(len(nodes), np.nan) if evidence is None else np.asarray(evidence, dtype=np.float64)
        )
        spread = self._merit_range(n_classes) ** 2 * math.log(1.0 / self.delta)
        _choose_splits(
            nodes, evidence_at, self._counts, self._depth, self._weight, self._mean, self._m2, self._low,
            self._high, self.n_splits, self.split_criterion == "gini", self.min_branch_fraction,
            self.max_share_to_split, self.max_depth, spread, self.tau, feature, point, left,
        )  # fmt: skip
        split = []
        for i in np.flatnonzero(feature >= 0).tolist():
            if not self._free and self._n_nodes + 2 > self.max_nodes:
                break
            node, f = int(nodes[i]), int(feature[i])
            dist = left[i]
            self._split(node, f, float(point[i]), dist, self._weight[node, :, f] - dist)
            split.append(node)
        return split

    def _split(self, node: int, feature: int, threshold: float, left: np.ndarray, right: np.ndarray) -> None:
        if self._free:
            child = self._free.pop()
        else:
            child = self._n_nodes
            if child + 2 > len(self._feature):
                capacity = min(self.max_nodes, 2 * len(self._feature) + 1)
                self._resize(capacity, self._counts.shape[1], self._weight.shape[2])
            self._n_nodes += 2
        tree = (self._feature, self._threshold, self._left, self._nan_left, self._depth, self._parent,
                self._alive, self._last_attempt)  # fmt: skip
        _make_split(node, child, feature, threshold, left, right, tree, self._counts, self._watch_state,
                    self._estimators)  # fmt: skip
        self._mc_correct[child : child + 2] = self._nb_correct[child : child + 2] = 0.0

    # -- dict API ------------------------------------------------------------------------------------
    def _class_index(self, y: Hashable) -> int:
        try:
            return self._classes.index(y)
        except ValueError:
            self._classes.append(y)
            return len(self._classes) - 1

    def learn_one(self, x: Mapping[str, float], y: Hashable, w: float = 1.0) -> None:
        X = self._features.rows([x], grow=True)
        self.learn_array(X, np.array([self._class_index(y)]), np.array([float(w)]))

    def learn_many_dicts(
        self, xs: Sequence[Mapping[str, float]], ys: Sequence[Hashable], w: Any = None
    ) -> None:
        """``learn_one`` over a batch at once (split decisions after the batch)."""
        X = self._features.rows(xs, grow=True)
        self.learn_array(X, np.array([self._class_index(y) for y in ys], dtype=np.intp), w)

    def predict_proba_one(self, x: Mapping[str, float], **kwargs: Any) -> dict[Hashable, float]:
        if not self._classes:
            return {}
        proba = self.predict_proba_array(self._features.rows([x]))[0]
        return {c: float(p) for c, p in zip(self._classes, proba, strict=False)}


@jit
def _route(
    X: np.ndarray,
    start: int,
    feature: np.ndarray,
    threshold: np.ndarray,
    left: np.ndarray,
    nan_left: np.ndarray,
    out: np.ndarray,
) -> None:
    """``NumpyHoeffdingTree.leaves``: each row walked down from ``start`` (a feature the rows do not have,
    or NaN, takes the branch ``nan_left`` says)."""
    n_features = X.shape[1]
    for i in range(X.shape[0]):
        node = start
        while feature[node] != _LEAF:
            f = feature[node]
            value = X[i, f] if f < n_features else np.nan
            go_left = nan_left[node] if value != value else value <= threshold[node]
            node = left[node] + (0 if go_left else 1)
        out[i] = node


@jit
def _add_to_estimators(
    X: np.ndarray,
    rows: np.ndarray,
    leaf: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    weight: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> None:
    """Welford's weighted update of each row ``X[rows[i]]``'s leaf and class, feature by feature (NaN
    skipped), in row order: a batch leaves the same estimators as its rows one at a time."""
    for i in range(len(rows)):
        _add_row(X, rows[i], leaf[i], y[i], w[i], (weight, mean, m2, low, high))


@jit
def _add_row(X: np.ndarray, row: int, node: int, c: int, wi: float, stats: tuple) -> None:
    """``_add_to_estimators`` for the one row ``X[row]`` of class ``c`` and weight ``wi`` at ``node``;
    ``stats``: the estimators (weight, mean, m2, low, high)."""
    weight, mean, m2, low, high = stats
    for f in range(X.shape[1]):
        x = X[row, f]
        if x != x:
            continue
        n = weight[node, c, f] + wi
        delta = x - mean[node, c, f]
        new_mean = mean[node, c, f] + (wi * delta / n if n > 0 else 0.0)
        m2[node, c, f] += wi * delta * (x - new_mean)
        mean[node, c, f] = new_mean
        weight[node, c, f] = n
        low[node, c, f] = min(low[node, c, f], x)
        high[node, c, f] = max(high[node, c, f], x)


@jit
def _hand_down(
    split: np.ndarray,
    X: np.ndarray,
    rows: np.ndarray,
    leaf: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    left: np.ndarray,
    nan_left: np.ndarray,
    stats: tuple,
    grace_period: float,
    ready: np.ndarray,
    seen: np.ndarray,
) -> int:
    """``NumpyHoeffdingTree._regrow``'s step: the rows ``X[rows]`` whose ``leaf`` has just split go down
    to its children (``leaf`` updated), whose estimators learn them in row order; then the children, in
    the order of ``split``, that now hold ``grace_period`` weight in some feature go into ``ready`` with
    that weight in ``seen``. Returns how many are ready. ``stats``: the estimators (weight, mean, m2, low,
    high)."""
    weight = stats[0]
    n_classes, n_features = weight.shape[1], weight.shape[2]
    reached = np.zeros(len(feature), dtype=np.bool_)
    for i in range(len(rows)):
        node = leaf[i]
        if feature[node] == _LEAF:
            continue
        # `_route`'s step, written out: as a compiled helper it made the routing loops 2-3x slower
        f = feature[node]
        value = X[rows[i], f] if f < X.shape[1] else np.nan
        go_left = nan_left[node] if value != value else value <= threshold[node]
        child = left[node] + (0 if go_left else 1)
        leaf[i] = child
        reached[child] = True
        _add_row(X, rows[i], child, y[i], w[i], stats)
    n_ready = 0
    for k in range(len(split)):
        for side in range(2):
            child = left[split[k]] + side
            if not reached[child]:
                continue
            most = 0.0
            for f in range(n_features):
                total = 0.0
                for c in range(n_classes):
                    total += weight[child, c, f]
                most = max(most, total)
            if n_features and most >= grace_period:
                ready[n_ready] = child
                seen[n_ready] = most
                n_ready += 1
    return n_ready


@jit
def _reset_node(n: int, feature: np.ndarray, counts: np.ndarray, watch: tuple, stats: tuple) -> None:
    """Node ``n`` as a fresh leaf: no class counts, drift watch (``watch``: mass, errors) or estimators
    (``stats``: weight, mean, m2, low, high)."""
    feature[n] = _LEAF
    counts[n] = 0.0
    for a in watch:
        a[:, n] = 0.0
    _clear_estimators(n, stats)


@jit
def _clear_estimators(n: int, stats: tuple) -> None:
    weight, mean, m2, low, high = stats
    weight[n] = 0.0
    mean[n] = 0.0
    m2[n] = 0.0
    low[n] = np.inf
    high[n] = -np.inf


@jit
def _make_split(
    node: int,
    child: int,
    f: int,
    at: float,
    left_weight: np.ndarray,
    right_weight: np.ndarray,
    tree: tuple,
    counts: np.ndarray,
    watch: tuple,
    stats: tuple,
) -> None:
    """Leaf ``node`` becomes a branch on feature ``f`` at ``at``, with fresh leaves ``child`` (left) and
    ``child + 1`` that start from the class weights its estimators put on each side; a missing value goes
    to the heavier side. ``tree``: feature, threshold, left, nan_left, depth, parent, alive, last_attempt."""
    feature, threshold, left, nan_left, depth, parent, alive, last_attempt = tree
    feature[node] = f
    threshold[node] = at
    left[node] = child
    nan_left[node] = left_weight.sum() >= right_weight.sum()
    for k in range(2):
        slot, dist = child + k, left_weight if k == 0 else right_weight
        _reset_node(slot, feature, counts, watch, stats)
        counts[slot] = dist
        last_attempt[slot] = dist.sum()
        depth[slot] = depth[node] + 1
        parent[slot] = node
        alive[slot] = True
    _clear_estimators(node, stats)


_SQRT2 = math.sqrt(2.0)


@jit
def _best_splits(
    weight: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    n_splits: int,
    gini: bool,
    min_fraction: float,
    point: np.ndarray,
    merit: np.ndarray,
    left: np.ndarray,
) -> None:
    """For each node and feature (estimators shaped nodes x classes x features): the best of ``n_splits``
    points evenly spaced between the extremes seen, its merit (-inf if none is usable) and the class
    weight its left side gets, from each class's Gaussian (all of it above the class's maximum, none
    below its minimum)."""
    n_nodes, n_classes, n_features = weight.shape
    share = np.empty(n_classes)
    rest = np.empty(n_classes)
    for k in range(n_nodes):
        for f in range(n_features):
            lo, hi = np.inf, -np.inf
            for c in range(n_classes):
                lo = min(lo, low[k, c, f])
                hi = max(hi, high[k, c, f])
            merit[k, f], point[k, f] = -np.inf, np.nan
            for s in range(1, n_splits + 1):
                at = lo + (hi - lo) * (s / (n_splits + 1.0))
                if not (np.isfinite(at) and lo < at < hi):
                    continue
                for c in range(n_classes):
                    w = weight[k, c, f]
                    if not w > 0 or at < low[k, c, f]:
                        share[c] = 0.0
                    elif at >= high[k, c, f]:
                        share[c] = w
                    else:
                        sigma = math.sqrt(max(m2[k, c, f] / (w - 1.0), 0.0)) if w > 1.0 else 0.0
                        mu = mean[k, c, f]
                        if sigma > 0:
                            share[c] = 0.5 * (1.0 + math.erf((at - mu) / (sigma * _SQRT2))) * w  # river's cdf
                        else:
                            share[c] = w if at >= mu else 0.0
                    rest[c] = w - share[c]
                value = _split_merit(share, rest, gini, min_fraction)
                if value > merit[k, f]:
                    merit[k, f], point[k, f] = value, at
                    left[k, f, :] = share


@jit
def _split_merit(left: np.ndarray, right: np.ndarray, gini: bool, min_fraction: float) -> float:
    """Gini or information-gain (bits) merit of a binary split of class weights; -inf when a side gets
    no more than ``min_fraction`` of the weight."""
    wl, wr = left.sum(), right.sum()
    total = wl + wr
    if not (total > 0 and wl / total > min_fraction and wr / total > min_fraction):
        return -np.inf
    if gini:
        gl, gr = 1.0, 1.0
        for c in range(len(left)):
            gl -= (left[c] / wl) ** 2
            gr -= (right[c] / wr) ** 2
        return 1.0 - (wl * gl + wr * gr) / total
    before, h_left, h_right = 0.0, 0.0, 0.0
    for c in range(len(left)):
        before -= _plogp((left[c] + right[c]) / total)
        h_left -= _plogp(left[c] / wl)
        h_right -= _plogp(right[c] / wr)
    return before - (wl * h_left + wr * h_right) / total


@jit
def _plogp(p: float) -> float:
    return p * math.log2(p) if p > 0 else 0.0


@jit
def _add_subtrees(
    rows: np.ndarray, errors: np.ndarray, depth: np.ndarray, parent: np.ndarray, live: np.ndarray
) -> None:
    """Turn per-node counts into subtree sums: each live node's counts added to its parent's, deepest
    level first."""
    deepest = 0
    for node in range(len(depth)):
        if live[node]:
            deepest = max(deepest, depth[node])
    for level in range(deepest, 0, -1):
        for node in range(len(depth)):
            if live[node] and depth[node] == level:
                rows[parent[node]] += rows[node]
                errors[parent[node]] += errors[node]


@jit
def _count_rows(
    X: np.ndarray,
    rows: np.ndarray,
    leaf: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    counts: np.ndarray,
    weight: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    last_attempt: np.ndarray,
    grace_period: float,
    due: np.ndarray,
) -> int:
    """Add rows ``X[rows]`` (leaf, class index, weight) to their leaves' class counts and estimators, in
    order; then write into ``due`` the leaves they reached that have seen ``grace_period`` more weight
    since their last split attempt (ascending, their attempt recorded now). Returns how many are due."""
    for i in range(len(rows)):
        counts[leaf[i], y[i]] += w[i]
    _add_to_estimators(X, rows, leaf, y, w, weight, mean, m2, low, high)
    reached = np.zeros(counts.shape[0], dtype=np.bool_)
    for i in range(len(rows)):
        reached[leaf[i]] = True
    n_due = 0
    for node in range(counts.shape[0]):
        if reached[node]:
            total = 0.0
            for c in range(counts.shape[1]):
                total += counts[node, c]
            if total - last_attempt[node] >= grace_period:
                last_attempt[node] = total
                due[n_due] = node
                n_due += 1
    return n_due


@jit
def _choose_splits(
    nodes: np.ndarray,
    evidence: np.ndarray,
    counts: np.ndarray,
    depth: np.ndarray,
    weight: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    n_splits: int,
    gini: bool,
    min_fraction: float,
    max_share: float,
    max_depth: int,
    spread: float,
    tau: float,
    feature: np.ndarray,
    point: np.ndarray,
    left: np.ndarray,
) -> None:
    """For each candidate node: the feature to split on (-1: none), its point and the class weight the left
    side gets. A node qualifies with two classes present, no class above ``max_share`` of its weight and
    room below ``max_depth``; it splits on its best feature when the best merit beats the second best by
    the Hoeffding bound over its ``evidence`` weight (NaN: its total), or the bound is below ``tau``. Among
    features of equal merit the last one is best, as a stable sort of the merits ranks them."""
    n_classes, n_features = weight.shape[1], weight.shape[2]
    best_point = np.empty((1, n_features))
    merit = np.empty((1, n_features))
    best_left = np.zeros((1, n_features, n_classes))
    for i in range(len(nodes)):
        k = nodes[i]
        feature[i] = -1
        total, largest, present = 0.0, -np.inf, 0
        for c in range(n_classes):
            total += counts[k, c]
            largest = max(largest, counts[k, c])
            present += counts[k, c] != 0
        if present < 2 or largest / total > max_share or depth[k] >= max_depth:
            continue
        n = total if evidence[i] != evidence[i] else evidence[i]
        best_left[:] = 0.0
        _best_splits(
            weight[k : k + 1], mean[k : k + 1], m2[k : k + 1], low[k : k + 1], high[k : k + 1], n_splits,
            gini, min_fraction, best_point, merit, best_left,
        )  # fmt: skip
        best = 0
        for f in range(1, n_features):
            if merit[0, f] >= merit[0, best]:
                best = f
        if not np.isfinite(merit[0, best]):
            continue
        second = -np.inf
        for f in range(n_features):
            if f != best:
                second = max(second, merit[0, f])
        bound = math.sqrt(spread / (2.0 * n))
        if merit[0, best] - second > bound or bound < tau:
            feature[i] = best
            point[i] = best_point[0, best]
            left[i, :] = best_left[0, best]


@jit
def _watch_nodes(
    leaf: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray,
    depth: np.ndarray,
    parent: np.ndarray,
    alive: np.ndarray,
    feature: np.ndarray,
    used: int,
    mass: np.ndarray,
    errors: np.ndarray,
    fast: float,
    slow: float,
    margin: float,
    z: float,
    min_mass: float,
    flagged: np.ndarray,
) -> None:
    """``NumpyHoeffdingTree._watch``: each row's prediction before learning (its leaf's majority class,
    where the leaf has seen something) counted at its leaf and every node above, by class; the nodes'
    decayed error watch updated (`watch_errors`); ``flagged``: the live branch nodes whose error rate rose."""
    n_classes = counts.shape[1]
    rows = np.zeros((used, n_classes))
    wrong = np.zeros((used, n_classes))
    known = False
    for i in range(len(leaf)):
        node = leaf[i]
        total, best = _majority(counts, node)
        if total > 0:
            known = True
            rows[node, y[i]] += 1.0
            if best != y[i]:
                wrong[node, y[i]] += 1.0
    if not known:
        return
    _add_subtrees(rows, wrong, depth[:used], parent[:used], alive[:used])
    rose = np.zeros(used, dtype=np.bool_)
    watch_errors(mass[:, :used], errors[:, :used], rows, wrong, fast, slow, margin, z, min_mass, rose)
    for node in range(used):
        flagged[node] = rose[node] and alive[node] and feature[node] != _LEAF


@jit
def _vote(
    X: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    left: np.ndarray,
    nan_left: np.ndarray,
    counts: np.ndarray,
    vote: bool,
    leaves: np.ndarray,
    majority: np.ndarray,
    votes: np.ndarray,
    voters: np.ndarray,
) -> None:
    """``NumpyHoeffdingTree.vote_array``: route each row (as ``_route``), read its leaf's class counts."""
    _route(X, 0, feature, threshold, left, nan_left, leaves)
    n_classes = counts.shape[1]
    for i in range(X.shape[0]):
        node = leaves[i]
        total, best = _majority(counts, node)
        if not total > 0:
            majority[i] = -1
            continue
        majority[i] = best
        if not vote:
            continue
        mass = 0.0
        for c in range(n_classes):
            mass += counts[node, c] / total
        if mass > 0:
            for c in range(n_classes):
                votes[i, c] += counts[node, c] / total / mass
            voters[i] += 1.0


@jit
def _majority(counts: np.ndarray, node: int) -> tuple[float, int]:
    """A leaf's total class weight and its majority class (the first of equal counts, as argmax)."""
    total, best = 0.0, 0
    for c in range(counts.shape[1]):
        total += counts[node, c]
        if counts[node, c] > counts[node, best]:
            best = c
    return total, best


@jit
def _naive_bayes(x: np.ndarray, node: int, counts: np.ndarray, stats: tuple, ll: np.ndarray) -> bool:
    """Gaussian naive Bayes at leaf ``node`` for the row ``x``: ``ll`` gets each class's log prior (its
    share of the leaf's weight) plus the log densities of the row's features (up to a constant; -inf for
    a class the leaf has not seen). Returns whether some feature was used.

    A feature counts where the row has it and every class seen at the leaf has estimator weight on it.
    Each class's variance is shrunk towards the feature's variance at the leaf (all classes pooled) by one
    example's worth, ``(M2_c + v) / (w_c + 1)``: a class seen once, or always at one value, still gets a
    finite density, and a feature constant at the leaf says nothing."""
    weight, mean, m2 = stats[0], stats[1], stats[2]
    n_classes, n_features = counts.shape[1], weight.shape[2]
    total = 0.0
    for c in range(n_classes):
        total += counts[node, c]
    for c in range(n_classes):
        ll[c] = math.log(counts[node, c] / total) if counts[node, c] > 0 else -np.inf
    used = False
    for f in range(min(n_features, len(x))):
        value = x[f]
        if value != value:
            continue
        w_all, first = 0.0, 0.0
        usable = True
        for c in range(n_classes):
            if counts[node, c] > 0:
                if not weight[node, c, f] > 0:
                    usable = False
                w_all += weight[node, c, f]
                first += weight[node, c, f] * mean[node, c, f]
        if not (usable and w_all > 0):
            continue
        centre = first / w_all
        pooled = 0.0
        for c in range(n_classes):
            if counts[node, c] > 0:
                d = mean[node, c, f] - centre
                pooled += m2[node, c, f] + weight[node, c, f] * d * d
        pooled /= w_all
        if not pooled > 0:
            continue
        used = True
        for c in range(n_classes):
            if counts[node, c] > 0:
                var = (m2[node, c, f] + pooled) / (weight[node, c, f] + 1.0)
                d = value - mean[node, c, f]
                ll[c] -= 0.5 * (d * d / var + math.log(var))
    return used


@jit
def _leaf_proba(
    X: np.ndarray, leaves: np.ndarray, counts: np.ndarray, stats: tuple, use_nb: np.ndarray, out: np.ndarray
) -> None:
    """Each row's class probabilities at its leaf: naive Bayes (`_naive_bayes`) where ``use_nb`` says so
    and the leaf's estimators allow it, else the leaf's class shares; all 0 at a leaf that has seen
    nothing."""
    n_classes = counts.shape[1]
    ll = np.empty(n_classes)
    for i in range(X.shape[0]):
        node = leaves[i]
        total = 0.0
        for c in range(n_classes):
            total += counts[node, c]
        if not total > 0:
            out[i] = 0.0
            continue
        if not (use_nb[node] and _naive_bayes(X[i], node, counts, stats, ll)):
            for c in range(n_classes):
                out[i, c] = counts[node, c] / total
            continue
        top = -np.inf
        for c in range(n_classes):
            top = max(top, ll[c])
        norm = 0.0
        for c in range(n_classes):
            out[i, c] = math.exp(ll[c] - top)
            norm += out[i, c]
        for c in range(n_classes):
            out[i, c] /= norm


@jit
def _score_leaves(
    X: np.ndarray,
    rows: np.ndarray,
    leaf: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    counts: np.ndarray,
    stats: tuple,
    mc_correct: np.ndarray,
    nb_correct: np.ndarray,
) -> None:
    """The "nba" bookkeeping before a batch is learned: each row's weight goes to its leaf's ``mc_correct``
    where the majority class is its class and to ``nb_correct`` where naive Bayes predicts its class. Rows
    at a leaf that has seen nothing count for neither (river counts one such row for the majority class; a
    batch may bring hundreds)."""
    ll = np.empty(counts.shape[1])
    for i in range(len(rows)):
        node = leaf[i]
        total, best = _majority(counts, node)
        if not total > 0:
            continue
        if best == y[i]:
            mc_correct[node] += w[i]
        _naive_bayes(X[rows[i]], node, counts, stats, ll)
        if np.argmax(ll) == y[i]:
            nb_correct[node] += w[i]
