"""A portfolio of candidate models that all learn the stream, and serve whichever ranks the rare class best.

Every candidate scores every event before it learns it (test-then-train, whenever its label arrives), and
`SelectionWindow` keeps those probabilities for the last labelled events. The served probabilities are
those of the candidate with the best decayed PR AUC of the rare class, or of ``"blend"`` (the mean of every
candidate's probabilities) when that ranks best; `Selector` switches only on evidence. Candidates are river
classifiers (an imbalance strategy over a base model, or any river estimator a user passes in Python);
those with batch forms (``predict_proba_batch`` / ``learn_batch``) score and learn a batch at a time.

>>> import random
>>> from river import linear_model
>>> portfolio = Portfolio({"mine": linear_model.LogisticRegression(), "other": linear_model.Perceptron()})
>>> rng = random.Random(0)
>>> for _ in range(3000):
...     x = {"amount": rng.random()}
...     proba = portfolio.predict_proba_one(x)
...     portfolio.learn_one(x, x["amount"] > 0.9)
>>> portfolio.served in ("mine", "other", "blend"), sorted(portfolio.summary()["candidates"])
(True, ['blend', 'mine', 'other'])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from river import base

from streamimb.classifiers.selection import SelectionWindow, Selector

__all__ = ["Portfolio"]


class Portfolio(base.Classifier):
    """Candidates side by side, one served (see the module docstring).

    Parameters
    ----------
    candidates
        Name -> river classifier. Their blend (or, without ``blend``, the first one) is served until the
        window holds ``min_positives`` events of the rare class.
    window
        Labelled events kept for selection.
    half_life
        Half-life, in labelled events, of the selection metrics' weights.
    margin, noise
        A challenger must beat the served candidate's PR AUC by ``margin + noise / sqrt(positives)``
        (`Selector`).
    min_positives
        Rare-class events in the window before the first switch.
    blend
        Whether the mean of the candidates competes as ``"blend"``.
    positive
        The rare class to select on; ``None``: the rarest class in the window.
    check_every
        Labelled events between selections (each sorts the window once per candidate).
    """

    def __init__(
        self,
        candidates: Mapping[str, base.Classifier],
        window: int = 5000,
        half_life: float = 2000.0,
        margin: float = 0.02,
        noise: float = 0.5,
        min_positives: int = 20,
        blend: bool = True,
        positive: Hashable | None = None,
        check_every: int = 250,
    ) -> None:
        if not candidates:
            raise ValueError("a portfolio needs at least one candidate")
        if "blend" in candidates:
            raise ValueError("'blend' is the name of the candidates' mean; name the candidate otherwise")
        self.candidates = dict(candidates)
        self.window = window
        self.half_life = half_life
        self.margin = margin
        self.noise = noise
        self.min_positives = min_positives
        self.blend = blend and len(self.candidates) > 1
        self.positive = positive
        self.check_every = check_every
        self._since_check = 0
        names = list(self.candidates)
        self._window = SelectionWindow(names + ["blend"] * self.blend, window, half_life)
        self._stack: np.ndarray | None = None  # the blend's weights: intercept, then one per candidate
        self._stack_classes: tuple[Hashable, Hashable] | None = None  # (rare class, other class)
        self._selector = Selector("blend" if self.blend else names[0], margin, noise, min_positives)
        self._scores: dict[str, dict[str, float]] = {}
        self._classes: list[Hashable] = []
        self._cache: tuple[list[dict], list[list[dict]]] | None = None
        self.n_learned = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    @classmethod
    def _unit_test_params(cls):  # pragma: no cover - river's check suite
        from river import linear_model

        yield {"candidates": {"lr": linear_model.LogisticRegression()}}

    @property
    def _multiclass(self) -> bool:
        return True

    @property
    def supports_batch(self) -> bool:
        return True

    @property
    def served(self) -> str:
        """The candidate (or ``"blend"``) whose probabilities are served."""
        return self._selector.served

    @property
    def switches(self) -> list[tuple[int, str, str]]:
        """(labelled events seen, from, to) for every switch of the served candidate."""
        return list(self._selector.switches)

    def summary(self) -> dict[str, Any]:
        """The served candidate, each candidate's decayed PR AUC and log loss, and the switches."""
        return {
            "served": self.served,
            "candidates": {name: dict(s) for name, s in self._scores.items()},
            "switches": [list(s) for s in self._selector.switches],
        }

    # -- scoring -------------------------------------------------------------------------------------
    def _score(self, xs: list[dict]) -> tuple[list[list[dict]], np.ndarray, list[Hashable]]:
        """Each candidate's probabilities for every event of ``xs``: as they return them (dicts), and with
        the blend's as an array (candidates, then the blend) x events x classes, NaN where a candidate knows
        nothing yet; and the classes of the array's columns."""
        dicts = []
        for model in self.candidates.values():
            if getattr(model, "supports_batch", False):
                dicts.append(list(model.predict_proba_batch(xs)))
            else:
                dicts.append([model.predict_proba_one(x) for x in xs])
        classes = list(self._classes)
        for rows in dicts:
            for c in rows[0] if rows else ():
                if c not in classes:
                    classes.append(c)
        unknown = [math.nan] * len(classes)
        P = np.array([[[d.get(c, 0.0) for c in classes] if d else unknown for d in rows] for rows in dicts])
        P = P.reshape(len(dicts), len(xs), len(classes))
        if self.blend:
            P = np.concatenate([P, self._blend(P, classes)[None]])
        return dicts, P, classes

    def _blend(self, P: np.ndarray, classes: list[Hashable]) -> np.ndarray:
        """The blend of the candidates' probabilities ``P``: stacked (a logistic regression on their log-odds
        of the rare class, fitted on the selection window) on a binary stream once fitted, their mean
        before (candidates that know nothing left out)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows no candidate can score yet
            mean = np.nanmean(P, axis=0)
        if self._stack is None or self._stack_classes is None or not set(self._stack_classes) <= set(classes):
            return mean
        rare, other = (classes.index(c) for c in self._stack_classes)
        odds = np.where(np.isnan(P[:, :, rare]), mean[:, rare], P[:, :, rare])
        p = _sigmoid(self._stack[0] + self._stack[1:] @ _logit(np.nan_to_num(odds, nan=0.5)))
        out = np.zeros_like(mean)
        out[:, rare], out[:, other] = p, 1.0 - p
        return out

    def predict_proba_batch(self, xs: list[dict]) -> list[dict[Hashable, float]]:
        """The served probabilities for every event of a batch (every candidate scores it)."""
        dicts, P, classes = self._score(xs)
        self._cache = (xs, P, classes)
        served = self.served
        if served != "blend":
            return dicts[list(self.candidates).index(served)]
        if len(classes) == 2:  # a dict display is much cheaper than dict(zip(...)) per row
            first, second = classes
            rows = [{first: a, second: b} for a, b in P[-1].tolist()]
        else:
            rows = [dict(zip(classes, row, strict=True)) for row in P[-1].tolist()]
        for i in np.flatnonzero(np.isnan(P[-1]).any(axis=1)).tolist():
            rows[i] = {}
        return rows

    def predict_proba_one(self, x: dict, **kwargs: Any) -> dict[Hashable, float]:
        return self.predict_proba_batch([x])[0]

    # -- learning ------------------------------------------------------------------------------------
    def _scored(self, xs: list[dict]) -> tuple[np.ndarray, list[Hashable]]:
        """The candidates' probabilities for ``xs`` as scored last, or fresh ones."""
        cache, self._cache = self._cache, None
        if cache is not None:
            scored_xs, P, classes = cache
            position = {id(x): i for i, x in enumerate(scored_xs)}
            rows = [position.get(id(x)) for x in xs]
            if None not in rows:
                return P[:, rows], classes
        _, P, classes = self._score(xs)
        return P, classes

    def learn_batch(
        self, xs: list[dict], ys: list[Hashable], ts: Sequence[float | None] | None = None
    ) -> None:
        """Record each candidate's probabilities for these events (before learning them), reselect, then
        let every candidate learn the batch."""
        if not xs:
            return
        if self.n_learned:  # the first labels meet models that know nothing
            self._record(*self._scored(xs), ys)
        else:
            self._cache = None
        for y in ys:
            if y not in self._classes:
                self._classes.append(y)
        self.n_learned += len(xs)
        self._since_check += len(xs)
        if self._since_check >= self.check_every:
            self._since_check = 0
            self._reselect()
        for model in self.candidates.values():
            if getattr(model, "supports_batch", False):
                model.learn_batch(xs, list(ys), None if ts is None else list(ts))
            else:
                for x, y in zip(xs, ys, strict=True):
                    model.learn_one(x, y)

    def _record(self, P: np.ndarray, classes: list[Hashable], ys: Sequence[Hashable]) -> None:
        """Add the candidates' probabilities for labelled events to the selection window (a candidate that
        knew nothing counts as 0 for every class)."""
        classes = list(classes) + [y for y in dict.fromkeys(ys) if y not in classes]
        if P.shape[2] < len(classes):
            P = np.concatenate([P, np.zeros((*P.shape[:2], len(classes) - P.shape[2]))], axis=2)
        index = {c: i for i, c in enumerate(classes)}
        self._window.add(np.nan_to_num(P, nan=0.0), np.array([index[y] for y in ys]), classes)

    def learn_one(self, x: dict, y: Hashable, **kwargs: Any) -> None:
        self.learn_batch([x], [y], [kwargs.get("t")])

    def _reselect(self) -> None:
        target = self.positive if self.positive is not None else self._window.rarest()
        if target is None:
            return
        self._scores = self._window.scores(target)
        self._selector.update(self._scores, self._window.positives(target), self.n_learned)
        if self.blend:
            self._fit_stack(target)

    def _fit_stack(self, target: Hashable) -> None:
        """Refit the blend's weights on the window (binary streams; the candidates' mean otherwise)."""
        classes = self._window.classes
        if len(classes) != 2 or self._window.positives(target) < self.min_positives:
            return
        proba, label, weight = self._window.ordered()
        column = classes.index(target)
        X = _logit(proba[: len(self.candidates), :, column]).T
        self._stack = fit_logistic(X, label == column, weight)
        self._stack_classes = (target, classes[1 - column])


def fit_logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1.0, steps: int = 8) -> np.ndarray:
    """Weighted L2-penalised logistic regression by Newton steps: intercept first, then one weight per
    column of ``X`` (the intercept is not penalised).

    >>> X = np.array([[-2.0], [-1.0], [1.0], [2.0], [0.5], [-0.5]])
    >>> bool(fit_logistic(X, np.array([0, 0, 1, 1, 0, 1], bool), np.ones(6))[1] > 0)
    True
    """
    A = np.hstack([np.ones((len(X), 1)), X])
    beta = np.zeros(A.shape[1])
    penalty = np.full(A.shape[1], l2)
    penalty[0] = 0.0
    target = y.astype(np.float64)
    for _ in range(steps):
        p = _sigmoid(A @ beta)
        gradient = A.T @ (w * (p - target)) + penalty * beta
        hessian = (A * (w * p * (1 - p))[:, None]).T @ A + np.diag(penalty + 1e-9)
        beta -= np.linalg.solve(hessian, gradient)
    return beta


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
