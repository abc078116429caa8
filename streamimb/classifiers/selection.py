"""Prequential model selection: which candidate ranks the rare class best on recent labels.

`SelectionWindow` keeps, for the last ``size`` labelled events, every candidate's class probabilities as
they were before it learned the event (test-then-train) and the label. It scores each candidate by the
decayed average precision (PR AUC) of the target class and its decayed log loss; `Selector` serves the best
one and switches only when another beats it by a lead that the window's positives make unlikely to be noise.

>>> import numpy as np

from streamimb.evaluation.metrics import pr_auc
>>> window = SelectionWindow(["good", "bad"], size=1000, half_life=500)
>>> rng = np.random.default_rng(0)
>>> y = rng.random(600) < 0.05
>>> good = np.where(y, 0.6, 0.1) + rng.random(600) * 0.3
>>> window.add(np.stack([np.stack([1 - good, good], 1), rng.random((600, 2))]), y.astype(int), ["0", "1"])
>>> scores = window.scores("1")
>>> scores["good"]["pr_auc"] > 0.9 > 0.3 > scores["bad"]["pr_auc"]
True
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from streamimb.evaluation.metrics import pr_auc

__all__ = ["SelectionWindow", "Selector"]


class SelectionWindow:
    """The last ``size`` labelled events: each candidate's probabilities (before learning) and the label.

    Probabilities are kept per class in the order of the ``classes`` given to ``add`` (it may grow).
    """

    def __init__(self, names: Sequence[str], size: int = 5000, half_life: float = 2000.0) -> None:
        self.names = list(names)
        self.size = size
        self.half_life = half_life
        self._proba = np.zeros((len(self.names), size, 0))
        self._label = np.full(size, -1, dtype=np.intp)
        self._classes: list[Hashable] = []
        self._written = 0

    def __len__(self) -> int:
        return min(self._written, self.size)

    def add(self, proba: np.ndarray, y: np.ndarray, classes: Sequence[Hashable]) -> None:
        """Record a batch: ``proba`` (candidates x rows x classes, in the order of ``classes``) and ``y``
        (class indices into ``classes``)."""
        for c in classes:
            if c not in self._classes:
                self._classes.append(c)
        if self._proba.shape[2] < len(self._classes):
            grown = np.zeros((len(self.names), self.size, len(self._classes)))
            grown[:, :, : self._proba.shape[2]] = self._proba
            self._proba = grown
        columns = [self._classes.index(c) for c in classes]
        y = np.asarray(columns, dtype=np.intp)[np.asarray(y, dtype=np.intp)]
        n = len(y)
        if n > self.size:
            proba, y, n = proba[:, -self.size :], y[-self.size :], self.size
        at = (self._written + np.arange(n)) % self.size
        self._proba[:, at, :] = 0.0
        self._proba[np.ix_(range(len(self.names)), at, columns)] = proba
        self._label[at] = y
        self._written += n

    @property
    def classes(self) -> list[Hashable]:
        """Classes in the order of the probability columns."""
        return list(self._classes)

    def ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, labels and decay weights of the events kept, oldest first."""
        n = len(self)
        start = self._written - n
        at = (start + np.arange(n)) % self.size
        age = np.arange(n - 1, -1, -1, dtype=np.float64)
        return self._proba[:, at, :], self._label[at], 0.5 ** (age / self.half_life)

    def positives(self, target: Hashable) -> int:
        """Events of class ``target`` in the window."""
        if target not in self._classes:
            return 0
        return int(np.count_nonzero(self._label[: len(self)] == self._classes.index(target)))

    def rarest(self) -> Hashable | None:
        """The class with the fewest events in the window (None before any)."""
        counts = np.bincount(self._label[: len(self)], minlength=len(self._classes))
        seen = [(int(n), i) for i, n in enumerate(counts.tolist()) if n]
        return self._classes[min(seen)[1]] if seen else None

    def scores(self, target: Hashable) -> dict[str, dict[str, float]]:
        """Per candidate: the decayed PR AUC of class ``target`` and the decayed log loss over every class."""
        proba, label, weight = self.ordered()
        if not len(label) or target not in self._classes:
            return {}
        column = self._classes.index(target)
        y = label == column
        named = list(zip(self.names, proba, strict=True))
        out: dict[str, dict[str, float]] = {}
        rows = np.arange(len(label))
        for name, p in named:
            likelihood = np.clip(p[rows, label], 1e-6, 1.0)
            out[name] = {
                "pr_auc": pr_auc(y, p[:, column], weight),
                "log_loss": float(-(weight * np.log(likelihood)).sum() / weight.sum()),
            }
        return out


class Selector:
    """Which candidate to serve: the best by decayed PR AUC, switching only on evidence.

    Parameters
    ----------
    margin
        A challenger must beat the served candidate's PR AUC by this much.
    noise
        Scale of the PR AUC's sampling noise: the lead required grows by ``noise / sqrt(positives)``.
    min_positives
        Events of the target class the window must hold before any switch.
    """

    def __init__(self, first: str, margin: float = 0.02, noise: float = 0.5, min_positives: int = 20) -> None:
        self.margin = margin
        self.noise = noise
        self.min_positives = min_positives
        self.served = first
        self.switches: list[tuple[int, str, str]] = []  # (labels seen, from, to)

    def required(self, positives: int) -> float:
        """The PR AUC lead a challenger needs over ``positives`` rare events: ``margin`` plus
        ``noise / sqrt(positives)`` (PR AUC measured on few positives moves by about that much).

        >>> Selector("a").required(25), Selector("a").required(400)
        (0.12, 0.045)
        """
        return round(self.margin + self.noise / math.sqrt(max(positives, 1)), 12)

    def update(self, scores: dict[str, dict[str, float]], positives: int, at: int) -> bool:
        """Switch to the best candidate if it beats the served one by ``margin``; whether it switched."""
        if positives < self.min_positives or not scores:
            return False
        ranked = [
            (s["pr_auc"], -s["log_loss"], name) for name, s in scores.items() if not math.isnan(s["pr_auc"])
        ]
        if not ranked:
            return False
        best = max(ranked)[2]
        current = scores.get(self.served, {}).get("pr_auc", math.nan)
        if best == self.served:
            return False
        if not math.isnan(current) and scores[best]["pr_auc"] < current + self.required(positives):
            return False
        self.switches.append((at, self.served, best))
        self.served = best
        return True
