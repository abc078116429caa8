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
    def _candidate_probas(self, xs: list[dict]) -> list[list[dict]]:
        """Each candidate's probabilities for every event of ``xs`` (and the blend's, last)."""
        out = []
        for model in self.candidates.values():
            if getattr(model, "supports_batch", False):
                out.append(list(model.predict_proba_batch(xs)))
            else:
                out.append([model.predict_proba_one(x) for x in xs])
        if self.blend:
            out.append(self._blend(out))
        return out

    def _blend(self, probas: list[list[dict]]) -> list[dict[Hashable, float]]:
        """The blend of the candidates: stacked (a logistic regression on their log-odds of the rare class,
        fitted on the selection window) once two classes were seen, their mean before."""
        means = [_mean(rows) for rows in zip(*probas, strict=True)]
        if self._stack is None or self._stack_classes is None:
            return means
        rare, other = self._stack_classes
        odds = np.array(
            [[p.get(rare, m.get(rare, 0.5)) for p, m in zip(rows, means, strict=True)] for rows in probas]
        )
        p = _sigmoid(self._stack[0] + self._stack[1:] @ _logit(odds))
        return [{rare: q, other: 1.0 - q} for q in p.tolist()]

    def predict_proba_batch(self, xs: list[dict]) -> list[dict[Hashable, float]]:
        """The served probabilities for every event of a batch (every candidate scores it)."""
        probas = self._candidate_probas(xs)
        self._cache = (xs, probas)
        served = self.served
        if served == "blend":
            return probas[-1]
        return probas[list(self.candidates).index(served)]

    def predict_proba_one(self, x: dict, **kwargs: Any) -> dict[Hashable, float]:
        return self.predict_proba_batch([x])[0]

    # -- learning ------------------------------------------------------------------------------------
    def _scored(self, xs: list[dict]) -> list[list[dict]]:
        """The candidates' probabilities for ``xs`` as scored last (the same dicts), or fresh ones."""
        cache, self._cache = self._cache, None
        if cache is not None:
            scored_xs, probas = cache
            position = {id(x): i for i, x in enumerate(scored_xs)}
            rows = [position.get(id(x)) for x in xs]
            if None not in rows:
                return [[p[i] for i in rows] for p in probas]
        return self._candidate_probas(xs)

    def learn_batch(
        self, xs: list[dict], ys: list[Hashable], ts: Sequence[float | None] | None = None
    ) -> None:
        """Record each candidate's probabilities for these events (before learning them), reselect, then
        let every candidate learn the batch."""
        if not xs:
            return
        probas = (
            self._scored(xs) if self.n_learned else None
        )  # the first labels meet models that know nothing
        self._record(probas, ys)
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

    def _record(self, probas: list[list[dict]] | None, ys: Sequence[Hashable]) -> None:
        """Add the candidates' probabilities for labelled events to the selection window."""
        for y in ys:
            if y not in self._classes:
                self._classes.append(y)
        if probas is None:
            self._cache = None
            return
        classes = self._classes
        matrix = np.array([[[p.get(c, 0.0) for c in classes] for p in rows] for rows in probas])
        index = {c: i for i, c in enumerate(classes)}
        self._window.add(matrix, np.array([index[y] for y in ys]), classes)

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


def _mean(rows: Sequence[dict[Hashable, float]]) -> dict[Hashable, float]:
    """The mean of probability dicts (a candidate that knows nothing yet is left out)."""
    known = [r for r in rows if r]
    if not known:
        return {}
    out: dict[Hashable, float] = {}
    for r in known:
        for c, p in r.items():
            out[c] = out.get(c, 0.0) + p
    return {c: p / len(known) for c, p in out.items() if not math.isnan(p)}
