"""Gradient boosting refitted on a bounded, prevalence-aware window of recent labelled rows.

scikit-learn's `HistGradientBoostingClassifier` is a batch learner: this wrapper keeps the last
``per_class`` rows of every class (so the rare class is remembered far longer than the common one), refits
a fresh booster every ``refit_every`` labelled rows, and scores with the latest fitted one. With
``background`` the refit runs on a worker thread and the new booster is adopted once it is ready, so
scoring never waits for a refit; without it the refit runs in ``learn_array`` (reproducible: the same rows
give the same scores, which replays and tests rely on).

The window over-represents rare classes, so the booster's probabilities are mapped back to the class
shares of the rows given to it, decayed with ``half_life`` (``p(c|x) ∝ q(c|x) · π_c / π'_c``).

It has the array API of `NumpyHoeffdingTree` (``learn_array``, ``vote_array``, ``predict_proba_array``,
``version``), so imbalance strategies can drive it.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(3000, 2))
>>> y = (X[:, 0] + X[:, 1] > 2.5).astype(int)
>>> model = WindowedBoosting(background=False)
>>> model.learn_array(X, y)
>>> proba = model.predict_proba_array(np.array([[2.0, 2.0], [-1.0, 0.0]]))
>>> bool(proba[0, 1] > 0.5 > proba[1, 1]), model.n_refits
(True, 1)
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Hashable
from typing import Any

import numpy as np

from streamimb.classifiers.features import FeatureIndex
from streamimb.classifiers.member import ProbabilityMember

__all__ = ["WindowedBoosting"]


class WindowedBoosting(ProbabilityMember):
    """A booster refitted on recent rows (see the module docstring).

    Parameters
    ----------
    per_class
        Rows kept per class (the most recent ones).
    refit_every
        Labelled rows between refits.
    min_rows
        Rows before the first fit (and at least two classes with ``min_class_rows`` rows each).
    min_class_rows
        Rows of the rarest class before the first fit.
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization, max_bins
        The booster's settings (scikit-learn's names).
    half_life
        Half-life, in rows, of the class shares the probabilities are mapped back to.
    background
        Refit on a worker thread, adopted ``adopt_after`` rows later (True), or in ``learn_array`` (False).
    adopt_after
        Rows given between the start of a background refit and its adoption.
    seed
        The booster's random state.
    """

    def __init__(
        self,
        per_class: int = 5000,
        refit_every: int = 10_000,
        min_rows: int = 500,
        min_class_rows: int = 10,
        max_iter: int = 50,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 20,
        l2_regularization: float = 1.0,
        max_bins: int = 63,
        half_life: float = 2000.0,
        background: bool = True,
        adopt_after: int = 1000,
        seed: int | None = 42,
    ) -> None:
        if per_class < 1 or refit_every < 1 or min_rows < 1:
            raise ValueError("per_class, refit_every and min_rows must be >= 1")
        self.per_class = per_class
        self.refit_every = refit_every
        self.min_rows = min_rows
        self.min_class_rows = min_class_rows
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_bins = max_bins
        self.half_life = half_life
        self.background = background
        self.adopt_after = adopt_after
        self.seed = seed
        self._features = FeatureIndex()  # the dict API's columns
        self._classes: list[Hashable] = []
        self._rows: list[np.ndarray] = []  # per class: ring buffer of rows (per_class x width)
        self._weights: list[np.ndarray] = []
        self._filled: list[int] = []  # rows written per class (ever)
        self._width = 0
        self._shares = np.zeros(0)  # decayed class mass of the rows given
        self._decay = 2.0 ** (-1.0 / half_life)
        self._seen = 0  # rows given
        self._since_fit = 0
        self._launched_at = 0  # rows given when the refit in flight started
        self._rarest_at_fit = 0  # rows of the rarest class at the last refit
        self._model: Any = None  # the fitted booster in use
        self._model_classes = np.zeros(0, dtype=np.intp)  # class indices of its columns
        self._model_width = 0
        self._window_shares = np.zeros(0)  # class shares of the window it was fitted on
        self._pending: Any = None  # a finished refit not adopted yet (kept by pickling)
        self._future: concurrent.futures.Future | None = None
        self._version = 0
        self.n_refits = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        future = state.pop("_future", None)
        if future is not None:  # a refit in flight is finished, and adopted after a restore
            state["_pending"] = future.result()
        state["_future"] = None
        return state

    # -- window --------------------------------------------------------------------------------------
    def _grow(self, width: int, n_classes: int) -> None:
        if width > self._width:
            pad = width - self._width
            self._rows = [np.hstack([r, np.full((len(r), pad), np.nan)]) for r in self._rows]
            self._width = width
        while len(self._rows) < n_classes:
            self._rows.append(np.full((self.per_class, self._width), np.nan))
            self._weights.append(np.zeros(self.per_class))
            self._filled.append(0)
        if len(self._shares) < n_classes:
            self._shares = np.concatenate([self._shares, np.zeros(n_classes - len(self._shares))])

    def _store(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        for c in np.unique(y).tolist():
            rows, weights = X[y == c], w[y == c]
            rows, weights = rows[-self.per_class :], weights[-self.per_class :]
            at = (self._filled[c] + np.arange(len(rows))) % self.per_class
            self._rows[c][at, : rows.shape[1]] = rows
            self._weights[c][at] = weights
            self._filled[c] += len(rows)
        n = len(y)
        decayed = w * self._decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
        self._shares = self._shares * self._decay**n + np.bincount(y, decayed, len(self._shares))

    def _window(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows kept, their class indices and weights."""
        parts = [(c, min(n, self.per_class)) for c, n in enumerate(self._filled) if n]
        X = np.vstack([self._rows[c][:k] for c, k in parts])
        y = np.concatenate([np.full(k, c, dtype=np.intp) for c, k in parts])
        w = np.concatenate([self._weights[c][:k] for c, k in parts])
        return X, y, w

    def _ready(self) -> bool:
        counts = [min(n, self.per_class) for n in self._filled if n]
        return len(counts) >= 2 and sum(counts) >= self.min_rows and min(counts) >= self.min_class_rows

    # -- refits --------------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[Any, np.ndarray, int, np.ndarray]:
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_bins=self.max_bins,
            early_stopping=False,
            random_state=self.seed,
        )
        with _one_thread():
            model.fit(X, y, sample_weight=w)
        counts = np.bincount(y, weights=w, minlength=len(self._filled))
        return model, model.classes_.astype(np.intp), X.shape[1], counts / counts.sum()

    def _adopt(self, fitted: tuple[Any, np.ndarray, int, np.ndarray]) -> None:
        self._model, self._model_classes, self._model_width, self._window_shares = fitted
        self._version += 1
        self.n_refits += 1

    def _collect(self) -> None:
        """Adopt the refit in flight once ``adopt_after`` rows were given since it started (waiting for it if
        it has not finished: only when the stream outruns the refit, as in a replay)."""
        if not self._in_flight() or self._seen < self._launched_at + self.adopt_after:
            return
        fitted = self._pending if self._pending is not None else self._future.result()
        self._pending = self._future = None
        self._adopt(fitted)

    def _in_flight(self) -> bool:
        """Whether a background refit was started and not adopted yet (finished or not)."""
        return self._future is not None or self._pending is not None

    def _refit(self) -> None:
        X, y, w = self._window()
        if self.background:
            self._launched_at = self._seen
            self._future = _executor().submit(self._fit, X, y, w)
        else:
            self._adopt(self._fit(X, y, w))

    def _trained(self) -> bool:
        return self._model is not None

    # -- array API -----------------------------------------------------------------------------------
    def predict_proba_array(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities mapped to the recent class shares (all 0 before the first fit)."""
        n_classes = len(self._filled)
        out = np.zeros((len(X), n_classes))
        if self._model is None:
            return out
        X = np.asarray(X, dtype=np.float64)[:, : self._model_width]
        if X.shape[1] < self._model_width:
            X = np.hstack([X, np.full((len(X), self._model_width - X.shape[1]), np.nan)])
        with _one_thread():
            q = self._model.predict_proba(X)
        shares = self._shares / self._shares.sum()
        ratio = shares[self._model_classes] / np.maximum(self._window_shares[self._model_classes], 1e-12)
        q = q * ratio
        out[:, self._model_classes] = q / q.sum(axis=1, keepdims=True)
        return out

    def _learn_rows(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """Add the rows to the window; refit when due."""
        self._grow(X.shape[1], int(y.max()) + 1)
        self._store(X, y, w)
        self._seen += len(X)
        self._since_fit += len(X)
        self._collect()
        if not self._in_flight() and self._due() and self._ready():
            self._since_fit = 0
            self._rarest_at_fit = self._rarest()
            self._refit()

    def _rarest(self) -> int:
        """Rows of the rarest class in the window."""
        return min(min(n, self.per_class) for n in self._filled) if len(self._filled) > 1 else 0

    def _due(self) -> bool:
        """A refit is due every ``refit_every`` rows, and sooner while the rarest class is young: whenever
        its rows in the window doubled since the last fit."""
        if self._since_fit >= self.refit_every:
            return True
        return self._rarest() >= 2 * self._rarest_at_fit


_CONTROLLER: Any = None


def _one_thread() -> Any:
    """Limit OpenMP to one thread: a booster's parallel loops over a few hundred rows spend more time
    waiting for cores (busy with the stream, other partitions, the refit) than they save."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="openmp")


_EXECUTOR: concurrent.futures.ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """One worker thread for every booster of the process: refits queue rather than compete for cores."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="streamimb-refit")
        return _EXECUTOR
