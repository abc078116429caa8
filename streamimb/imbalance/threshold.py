"""Threshold moving: turn class probabilities into a decision and an alert.

Every policy shares one interface:

- `decide(proba, t=None) -> (predicted_class, alert, reason)`: `alert` is True when the decision is the
  positive (rare) class given as `positive`; with `positive=None` the policy decides among all classes
  and never alerts.
- `update(y_true, proba)`: feed a label with the probabilities the event was scored with (policies that
  learn from labels use it, the others ignore it).
- `decide_many(probas, times)` / `update_many(ys, probas)`: the same over a batch. By default they are
  `decide` / `update` in a loop; the learned-threshold policies decide a batch as one array operation
  with the threshold and priors they have at its start, learn its labels at once and recompute the
  threshold at most once per batch. Their batch decisions give a reason only where they alert.

Policies: `ArgMax`, `PriorCorrection`, `MinCost`, `TargetPrecision`, `AlertBudget` and `BestThreshold`
(threshold that maximises G-mean or F1 on recent labels); registry `THRESHOLDS` (names "argmax",
"prior_correction", "min_cost", "target_precision", "budget", "max_gmean", "max_f1") and
`build_threshold(name, **params)`.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
from river import base

from streamimb.evaluation.metrics import pr_auc, roc_auc
from streamimb.imbalance.priors import PriorTracker
from streamimb.imbalance.weighting import CostMatrix, cost_of

__all__ = [
    "THRESHOLDS",
    "AlertBudget",
    "AlertGuard",
    "ArgMax",
    "BestThreshold",
    "LearnedThreshold",
    "MinCost",
    "PriorCorrection",
    "TargetPrecision",
    "ThresholdPolicy",
    "build_threshold",
]

Decision = tuple[Hashable | None, bool, str]


class ScoreWindow:
    """The last ``size`` scores in a numpy ring, and a sorted copy kept up to date cheaply.

    ``sorted()`` applies the scores appended and evicted since its last call to the sorted copy (a delete
    and an insert into an array) instead of sorting the whole window again.

    >>> w = ScoreWindow(3)
    >>> for v in (1.0, 2.0, 3.0, 4.0):
    ...     w.append(v)
    >>> len(w), sorted(w.values().tolist()), w.sorted().tolist()
    (3, [2.0, 3.0, 4.0], [2.0, 3.0, 4.0])
    """

    def __init__(self, size: int) -> None:
        self._data = np.empty(size)
        self._n = 0
        self._sorted = np.empty(0)
        self._added: list[float] = []
        self._evicted: list[float] = []
        self._stale = False  # the window turned over since the last sorted(): sort it afresh

    def __len__(self) -> int:
        return min(self._n, len(self._data))

    def append(self, value: float) -> None:
        slot = self._n % len(self._data)
        if not self._stale:
            if len(self._added) + 1 >= len(self._data):  # cheaper to sort the window afresh
                self._stale, self._added, self._evicted = True, [], []
            else:
                if self._n >= len(self._data):
                    self._evicted.append(float(self._data[slot]))
                self._added.append(value)
        self._data[slot] = value
        self._n += 1

    def extend(self, values: np.ndarray) -> None:
        """``append`` each of ``values`` in order.

        >>> w = ScoreWindow(3)
        >>> w.append(0.0)
        >>> w.extend(np.array([1.0, 2.0, 3.0]))
        >>> w.sorted().tolist(), len(w)
        ([1.0, 2.0, 3.0], 3)
        """
        n, size = len(values), len(self._data)
        if n == 0:
            return
        if n >= size or self._stale or len(self._added) + n >= size:
            self._stale, self._added, self._evicted = True, [], []
        else:
            positions = np.arange(self._n, self._n + n)
            old = positions[positions >= size] % size
            self._evicted.extend(self._data[old].tolist())
            self._added.extend(np.asarray(values, dtype=np.float64).tolist())
        slots = np.arange(self._n + n - min(n, size), self._n + n) % size
        self._data[slots] = values[-size:]
        self._n += n

    def values(self) -> np.ndarray:
        """The scores held, in no particular order."""
        return self._data[: len(self)]

    def sorted(self) -> np.ndarray:
        """The scores held, in ascending order."""
        if self._stale:
            self._sorted = np.sort(self.values())
        elif self._added:
            # Every score evicted since the last call was already in the sorted copy (fewer appends than the
            # window holds). Equal scores are removed from consecutive positions.
            current = self._sorted
            if self._evicted:
                gone = np.sort(np.asarray(self._evicted))
                ties = np.arange(len(gone)) - np.searchsorted(gone, gone, side="left")
                current = np.delete(current, np.searchsorted(current, gone, side="left") + ties)
            new = np.sort(np.asarray(self._added))
            self._sorted = np.insert(current, np.searchsorted(current, new), new)
        self._added, self._evicted, self._stale = [], [], False
        return self._sorted


def _argmax(proba: dict[Hashable, float]) -> Hashable | None:
    if not proba:
        return None
    return max(proba, key=lambda c: (proba[c], str(c)))


def _logit(p: float, eps: float = 1e-9) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


class ThresholdPolicy(base.Base):
    """Base class of decision policies (see the module docstring)."""

    def __init__(self, positive: Hashable | None = None) -> None:
        self.positive = positive

    def decide(self, proba: dict[Hashable, float], t: float | None = None) -> Decision:
        raise NotImplementedError

    def update(self, y_true: Hashable, proba: dict[Hashable, float]) -> None:
        """Learn from a label (no-op for policies that do not learn)."""

    def decide_many(
        self, probas: Sequence[dict[Hashable, float]], times: Sequence[float | None]
    ) -> list[Decision]:
        """`decide` for each event of a batch, in order."""
        decide = self.decide
        return [decide(proba, t) for proba, t in zip(probas, times, strict=True)]

    def update_many(self, ys: Sequence[Hashable], probas: Sequence[dict[Hashable, float]]) -> None:
        """`update` for each label of a batch, in order."""
        for y, proba in zip(ys, probas, strict=True):
            self.update(y, proba)

    def _verdict(self, pred: Hashable | None, reason: str) -> Decision:
        return pred, self.positive is not None and pred == self.positive, reason

    def _other(self, proba: dict[Hashable, float]) -> Hashable | None:
        """Most probable class other than the positive one."""
        if len(proba) == 2 and self.positive in proba:
            return next(c for c in proba if c != self.positive)
        rest = {c: p for c, p in proba.items() if c != self.positive}
        return _argmax(rest)


class ArgMax(ThresholdPolicy):
    """The most probable class (Bayes decision for accuracy).

    >>> ArgMax(positive="fraud").decide({"fraud": 0.7, "ok": 0.3})
    ('fraud', True, 'argmax: p(fraud)=0.700')
    """

    def decide(self, proba: dict[Hashable, float], t: float | None = None) -> Decision:
        pred = _argmax(proba)
        if pred is None:
            return None, False, "no prediction yet"
        return self._verdict(pred, f"argmax: p({pred})={proba[pred]:.3f}")


class PriorCorrection(ThresholdPolicy):
    """Argmax after re-weighting probabilities from the current priors to a target distribution.

    `p'(c) ∝ p(c) · (target_c / π_c) ** strength`. With the default uniform target and `strength=1`
    this is the balanced decision (in binary: alert when `p(positive) > π_positive`), which maximises
    G-mean-like criteria on calibrated probabilities; `strength=0` is plain argmax.

    Parameters
    ----------
    positive
        The class that raises alerts (None: multi-class, no alerts).
    target
        Target class distribution (default uniform over the classes in `proba`).
    strength
        How far to move from the current priors towards the target (0..1, or more).
    tracker
        A shared `PriorTracker` giving the current priors; it is not updated here. Without it the
        policy tracks priors itself from `update` labels with `half_life`.
    half_life
        Half-life of the policy's own tracker.

    Examples
    --------
    >>> policy = PriorCorrection(positive="fraud")
    >>> for i in range(1000):
    ...     policy.update("fraud" if i % 100 == 0 else "ok", {})
    >>> policy.decide({"fraud": 0.05, "ok": 0.95})[:2]
    ('fraud', True)
    >>> policy.decide({"fraud": 0.005, "ok": 0.995})[:2]
    ('ok', False)
    """

    def __init__(
        self,
        positive: Hashable | None = None,
        target: dict[Hashable, float] | None = None,
        strength: float = 1.0,
        tracker: PriorTracker | None = None,
        half_life: float = 2000.0,
    ) -> None:
        super().__init__(positive)
        self.target = target
        self.strength = strength
        self.tracker = tracker
        self.half_life = half_life
        self._tracker = tracker if tracker is not None else PriorTracker(half_life)

    def corrected(self, proba: dict[Hashable, float]) -> dict[Hashable, float]:
        """The re-weighted, normalised probabilities the decision is taken on."""
        priors = self._tracker.priors()
        if not proba:
            return {}
        k = len(proba)
        out = {}
        for c, p in proba.items():
            prior = priors.get(c)
            goal = self.target.get(c, 0.0) if self.target else 1.0 / k
            ratio = (goal / prior) ** self.strength if prior else 1.0
            out[c] = p * ratio
        total = sum(out.values())
        return {c: v / total for c, v in out.items()} if total > 0 else dict(proba)

    def decide(self, proba: dict[Hashable, float], t: float | None = None) -> Decision:
        adjusted = self.corrected(proba)
        pred = _argmax(adjusted)
        if pred is None:
            return None, False, "no prediction yet"
        prior = self._tracker.priors().get(pred, float("nan"))
        return self._verdict(
            pred, f"prior-corrected: p({pred})={proba[pred]:.3f} vs prior {prior:.4f} -> {adjusted[pred]:.3f}"
        )

    def update(self, y_true: Hashable, proba: dict[Hashable, float]) -> None:
        if self.tracker is None:
            self._tracker.update(y_true)


class MinCost(ThresholdPolicy):
    """The class with the smallest expected cost `Σ_j p(j) · cost[j][c]` (probabilities must be calibrated).

    Parameters
    ----------
    positive
        The class that raises alerts (None: no alerts).
    cost
        `cost[true][predicted]`; missing entries are 0 on the diagonal and 1 elsewhere.

    Examples
    --------
    >>> policy = MinCost(positive="fraud", cost={"fraud": {"ok": 100.0}, "ok": {"fraud": 1.0}})
    >>> policy.decide({"fraud": 0.02, "ok": 0.98})[:2]
    ('fraud', True)
    >>> policy.decide({"fraud": 0.005, "ok": 0.995})[:2]
    ('ok', False)
    """

    def __init__(self, positive: Hashable | None = None, cost: CostMatrix | None = None) -> None:
        super().__init__(positive)
        self.cost = cost

    def expected_costs(self, proba: dict[Hashable, float]) -> dict[Hashable, float]:
        """Expected cost of predicting each class."""
        return {c: sum(p * cost_of(self.cost, j, c) for j, p in proba.items()) for c in proba}

    def decide(self, proba: dict[Hashable, float], t: float | None = None) -> Decision:
        if not proba:
            return None, False, "no prediction yet"
        costs = self.expected_costs(proba)
        pred = min(costs, key=lambda c: (costs[c], str(c)))
        others = ", ".join(f"{c}={v:.3g}" for c, v in costs.items() if c != pred)
        return self._verdict(pred, f"min expected cost: {pred}={costs[pred]:.3g} < {others}")


class LearnedThreshold(ThresholdPolicy):
    """Base of policies that learn a score threshold for the positive class from labelled scores.

    Recent scores of labelled positives and negatives are kept in two bounded buffers. Scores are
    prior-free log-likelihood ratios `logit(p) - logit(π)` (with `prior_free=True`), so both buffers stay
    valid when the prevalence moves; metrics that depend on the prevalence (precision, F1) are estimated
    with the current prior from class-conditional rates, e.g. precision `π·TPR / (π·TPR + (1-π)·FPR)`.
    Until `min_positives` positives were seen the policy falls back to argmax. Subclasses choose the
    threshold in `_choose`.

    Parameters
    ----------
    positive
        The class to alert on (required).
    n_positives, n_negatives
        Sizes of the two score buffers (most recent labelled events of each kind).
    min_positives
        Positives needed before the learned threshold is used.
    refresh
        Recompute the threshold every `refresh` labels.
    prior_free
        Score with `logit(p) - logit(π)` rather than `p` (use False for scores that ignore priors).
    tracker, half_life
        Priors: a shared tracker (not updated here) or the policy's own.
    """

    def __init__(
        self,
        positive: Hashable | None = None,
        n_positives: int = 500,
        n_negatives: int = 20000,
        min_positives: int = 20,
        refresh: int = 100,
        prior_free: bool = True,
        tracker: PriorTracker | None = None,
        half_life: float = 2000.0,
    ) -> None:
        if positive is None:
            raise ValueError(f"{type(self).__name__} needs the positive class")
        super().__init__(positive)
        self.n_positives = n_positives
        self.n_negatives = n_negatives
        self.min_positives = min_positives
        self.refresh = refresh
        self.prior_free = prior_free
        self.tracker = tracker
        self.half_life = half_life
        self._tracker = tracker if tracker is not None else PriorTracker(half_life)
        self._pos = ScoreWindow(n_positives)
        self._neg = ScoreWindow(n_negatives)
        self._threshold: float | None = None
        self._achieved = float("nan")
        self._since = 0

    @property
    def threshold(self) -> float | None:
        """The current score threshold (None while falling back to argmax)."""
        return self._threshold

    def _prior(self) -> float:
        p = self._tracker.priors().get(self.positive, 0.0)
        return min(max(p, 1e-6), 1.0 - 1e-6)

    def _score(self, proba: dict[Hashable, float]) -> float:
        p = proba.get(self.positive, 0.0)
        if not self.prior_free:
            return p
        priors = self._tracker.priors()  # the same dict until the tracker's next update
        if priors is not self.__dict__.get("_logit_of"):
            self._logit_of, self._prior_logit = priors, _logit(self._prior())
        return _logit(p) - self._prior_logit

    def _choose(self, tpr: np.ndarray, fpr: np.ndarray, prior: float) -> tuple[int, float]:
        """Index of the chosen candidate (candidates are positive scores, descending) and its metric."""
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    def _recompute(self) -> None:
        if len(self._pos) < self.min_positives or not len(self._neg):
            self._threshold = None
            return
        pos = self._pos.sorted()[::-1]
        neg = self._neg.sorted()
        tpr = np.arange(1, len(pos) + 1) / len(pos)
        fpr = (len(neg) - np.searchsorted(neg, pos, side="left")) / len(neg)
        i, achieved = self._choose(tpr, fpr, self._prior())
        self._threshold, self._achieved = float(pos[i]), float(achieved)

    def decide(self, proba: dict[Hashable, float], t: float | None = None) -> Decision:
        if not proba:
            return None, False, "no prediction yet"
        if self._threshold is None:
            pred = _argmax(proba)
            return self._verdict(pred, f"argmax until {self.min_positives} positives are labelled")
        s = self._score(proba)
        if s >= self._threshold:
            return self._verdict(
                self.positive, f"score {s:.3g} >= {self._threshold:.3g} ({self._describe()})"
            )
        return self._verdict(self._other(proba), f"score {s:.3g} < {self._threshold:.3g}")

    def update(self, y_true: Hashable, proba: dict[Hashable, float]) -> None:
        if self.tracker is None:
            self._tracker.update(y_true)
        if proba:
            (self._pos if y_true == self.positive else self._neg).append(self._score(proba))
        self._since += 1
        self._maybe_recompute()

    def _maybe_recompute(self) -> None:
        if self._since >= self.refresh or (self._threshold is None and len(self._pos) >= self.min_positives):
            self._since = 0
            self._recompute()

    def _scores(self, probas: Sequence[dict[Hashable, float]]) -> np.ndarray:
        """`_score` of each probability dict, as one array operation."""
        positive = self.positive
        p = np.array([proba.get(positive, 0.0) for proba in probas], dtype=np.float64)
        if not self.prior_free:
            return p
        p = np.clip(p, 1e-9, 1.0 - 1e-9)
        return np.log(p / (1.0 - p)) - _logit(self._prior())

    def decide_many(
        self, probas: Sequence[dict[Hashable, float]], times: Sequence[float | None]
    ) -> list[Decision]:
        """`decide` over a batch at the current threshold and priors; reasons only where it alerts.

        >>> policy = BestThreshold(positive="1", min_positives=1, prior_free=False)
        >>> policy.update_many(["1", "0"], [{"1": 0.8, "0": 0.2}, {"1": 0.3, "0": 0.7}])
        >>> for decision in policy.decide_many([{"1": 0.9, "0": 0.1}, {"1": 0.2, "0": 0.8}, {}], [None] * 3):
        ...     print(decision)
        ('1', True, 'score 0.9 >= 0.8 (best est. gmean 1.00)')
        ('0', False, '')
        (None, False, 'no prediction yet')
        """
        if self._threshold is None or not probas:
            return super().decide_many(probas, times)
        threshold, positive = self._threshold, self.positive
        scores = self._scores(probas)
        alerts = (scores >= threshold).tolist()
        out: list[Decision] = []
        describe = None
        other = None  # the other class of a two-class batch (the same for every row that has both)
        for proba, s, alert in zip(probas, scores.tolist(), alerts, strict=True):
            if not proba:
                out.append((None, False, "no prediction yet"))
            elif alert:
                describe = describe or self._describe()
                out.append((positive, True, f"score {s:.3g} >= {threshold:.3g} ({describe})"))
            elif len(proba) == 2 and other in proba and positive in proba:
                out.append((other, False, ""))
            else:
                out.append((self._other(proba), False, ""))
                if len(proba) == 2 and positive in proba:
                    other = out[-1][0]
        return out

    def update_many(self, ys: Sequence[Hashable], probas: Sequence[dict[Hashable, float]]) -> None:
        """`update` over a batch's labels, scored at the priors after them; one recompute at most."""
        if self.tracker is None:
            for y in ys:
                self._tracker.update(y)
        scored = [i for i, proba in enumerate(probas) if proba]
        if scored:
            scores = self._scores([probas[i] for i in scored])
            is_positive = np.array([ys[i] == self.positive for i in scored], dtype=bool)
            self._pos.extend(scores[is_positive])
            self._neg.extend(scores[~is_positive])
        self._since += len(ys)
        self._maybe_recompute()


class TargetPrecision(LearnedThreshold):
    """Alert on the positive class at the loosest threshold whose estimated precision meets a target.

    If no threshold reaches the target, the one with the best estimated precision is used. See
    `LearnedThreshold` for the buffers and the other parameters.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(0)
    >>> policy = TargetPrecision(positive="fraud", precision=0.9, min_positives=20)
    >>> for _ in range(20000):
    ...     y = "fraud" if rng.random() < 0.05 else "ok"
    ...     s = min(max(rng.gauss(0.7 if y == "fraud" else 0.2, 0.15), 0.0), 1.0)
    ...     policy.update(y, {"fraud": s, "ok": 1 - s})
    >>> policy.decide({"fraud": 0.9, "ok": 0.1})[:2], policy.decide({"fraud": 0.4, "ok": 0.6})[:2]
    (('fraud', True), ('ok', False))
    """

    def __init__(
        self,
        positive: Hashable | None = None,
        precision: float = 0.9,
        n_positives: int = 500,
        n_negatives: int = 20000,
        min_positives: int = 20,
        refresh: int = 100,
        prior_free: bool = True,
        tracker: PriorTracker | None = None,
        half_life: float = 2000.0,
    ) -> None:
        if not 0.0 < precision <= 1.0:
            raise ValueError("precision must be in (0, 1]")
        super().__init__(
            positive, n_positives, n_negatives, min_positives, refresh, prior_free, tracker, half_life
        )
        self.precision = precision

    def _choose(self, tpr: np.ndarray, fpr: np.ndarray, prior: float) -> tuple[int, float]:
        prec = prior * tpr / (prior * tpr + (1.0 - prior) * fpr)
        ok = np.nonzero(prec >= self.precision)[0]
        i = int(ok[-1]) if len(ok) else int(np.argmax(prec))
        return i, float(prec[i])

    def _describe(self) -> str:
        return f"est. precision {self._achieved:.2f}, target {self.precision:.2f}"


class BestThreshold(LearnedThreshold):
    """Alert at the threshold that maximises a metric estimated on recent labelled scores.

    `metric="gmean"` maximises `sqrt(TPR · (1 - FPR))` (prior-free); `metric="f1"` maximises
    `2πTPR / (πTPR + π + (1-π)FPR)` at the current prior. See `LearnedThreshold` for the rest.

    >>> import random
    >>> rng = random.Random(0)
    >>> policy = BestThreshold(positive="fraud", metric="f1")
    >>> for _ in range(20000):
    ...     y = "fraud" if rng.random() < 0.05 else "ok"
    ...     s = min(max(rng.gauss(0.7 if y == "fraud" else 0.2, 0.15), 0.0), 1.0)
    ...     policy.update(y, {"fraud": s, "ok": 1 - s})
    >>> policy.decide({"fraud": 0.8, "ok": 0.2})[:2], policy.decide({"fraud": 0.3, "ok": 0.7})[:2]
    (('fraud', True), ('ok', False))
    """

    def __init__(
        self,
        positive: Hashable | None = None,
        metric: str = "gmean",
        n_positives: int = 500,
        n_negatives: int = 20000,
        min_positives: int = 20,
        refresh: int = 100,
        prior_free: bool = True,
        tracker: PriorTracker | None = None,
        half_life: float = 2000.0,
    ) -> None:
        if metric not in ("gmean", "f1"):
            raise ValueError(f"metric must be 'gmean' or 'f1', not {metric!r}")
        super().__init__(
            positive, n_positives, n_negatives, min_positives, refresh, prior_free, tracker, half_life
        )
        self.metric = metric

    def _choose(self, tpr: np.ndarray, fpr: np.ndarray, prior: float) -> tuple[int, float]:
        if self.metric == "gmean":
            value = np.sqrt(tpr * (1.0 - fpr))
        else:
            value = 2 * prior * tpr / (prior * tpr + prior + (1.0 - prior) * fpr)
        i = int(np.argmax(value))
        return i, float(value[i])

    def _describe(self) -> str:
        return f"best est. {self.metric} {self._achieved:.2f}"


# Partials (not wrapper functions) so that callers can read BestThreshold's parameters from the registry.
_max_gmean = functools.partial(BestThreshold, metric="gmean")
_max_f1 = functools.partial(BestThreshold, metric="f1")


class AlertBudget(ThresholdPolicy):
    """At most `max_alerts` alerts per `per_events` events, or per `per_seconds` of event time.

    A hard cap (the last `max_alerts` alert positions are kept, so the sliding-window guarantee is
    exact) plus a spreading rule: an event alerts only when its positive-class probability is at least
    `min_proba` and in the top `max_alerts / window` share of recent scores, so the budget goes to the
    most suspicious events rather than the first ones.

    Parameters
    ----------
    positive
        The class to alert on (required).
    max_alerts
        Alerts allowed per window.
    per_events
        Window length in scored events (ignored when `per_seconds` is set).
    per_seconds
        Window length in event time (seconds); `decide` then needs `t`.
    min_proba
        Never alert below this positive-class probability.
    n_scores, refresh
        Recent scores kept for the quantile, and how often (decisions) it is recomputed.

    Examples
    --------
    >>> policy = AlertBudget(positive="fraud", max_alerts=2, per_events=100)
    >>> alerts = [policy.decide({"fraud": 0.99, "ok": 0.01})[1] for _ in range(100)]
    >>> sum(alerts)
    2
    """

    def __init__(
        self,
        positive: Hashable | None = None,
        max_alerts: int = 10,
        per_events: int = 1000,
        per_seconds: float | None = None,
        min_proba: float = 0.0,
        n_scores: int = 5000,
        refresh: int = 50,
    ) -> None:
        if positive is None:
            raise ValueError("AlertBudget needs the positive class")
        if max_alerts < 1:
            raise ValueError("max_alerts must be >= 1")
        super().__init__(positive)
        self.max_alerts = max_alerts
        self.per_events = per_events
        self.per_seconds = per_seconds
        self.min_proba = min_proba
        self.n_scores = n_scores
        self.refresh = refresh
        self._alerts: deque[float] = deque(maxlen=max_alerts)
        self._scores: deque[float] = deque(maxlen=n_scores if per_seconds else min(n_scores, per_events))
        self._n = 0
        self._cut = -math.inf
        self._last_t: float | None = None
        self._gap = float("nan")

    def _window_events(self) -> float:
        if self.per_seconds is None:
            return float(self.per_events)
        if not math.isfinite(self._gap) or self._gap <= 0:
            return float("inf")
        return self.per_seconds / self._gap

    def _recompute(self) -> None:
        if len(self._scores) < 2 * self.max_alerts:
            self._cut = -math.inf
            return
        share = self.max_alerts / self._window_events()
        if share >= 1.0:
            self._cut = -math.inf
            return
        self._cut = float(np.quantile(np.fromiter(self._scores, float), 1.0 - share))

    def used(self, t: float | None = None) -> int:
        """Alerts raised within the window that ends now (or at event time `t`)."""
        return self._used(self._now(t) if self.per_seconds is not None else float(self._n - 1))

    def _used(self, now: float) -> int:
        span = self.per_seconds if self.per_seconds is not None else self.per_events
        return sum(1 for a in self._alerts if now - a < span)

    def _now(self, t: float | None) -> float:
        if self.per_seconds is None:
            return float(self._n)
        if t is None:
            if self._last_t is None:
                raise ValueError("AlertBudget(per_seconds=...) needs event time t")
            return self._last_t
        return float(t)

    def decide(self, proba: dict[Hashable, float], t: float | None = None) -> Decision:
        now = self._now(t)
        if self.per_seconds is not None:
            if self._last_t is not None and now > self._last_t:
                gap = now - self._last_t
                self._gap = gap if not math.isfinite(self._gap) else 0.99 * self._gap + 0.01 * gap
            self._last_t = now if self._last_t is None else max(self._last_t, now)
        self._n += 1
        if not proba:
            return None, False, "no prediction yet"
        p = proba.get(self.positive, 0.0)
        self._scores.append(p)
        if self._n % self.refresh == 0:
            self._recompute()
        other = self._other(proba)
        if p < self.min_proba or p < self._cut:
            return self._verdict(other, f"p({self.positive})={p:.3f} below the budget cut {self._cut:.3f}")
        used = self._used(now)
        unit = f"{self.per_seconds:g} s" if self.per_seconds is not None else f"{self.per_events} events"
        if used >= self.max_alerts:
            return self._verdict(other, f"budget exhausted: {used}/{self.max_alerts} alerts per {unit}")
        self._alerts.append(now)
        return self._verdict(
            self.positive,
            f"p({self.positive})={p:.3f} >= cut {self._cut:.3f}; {used + 1}/{self.max_alerts} per {unit}",
        )


class AlertGuard(base.Base):
    """Withholds a policy's alerts while the served score shows no skill, and caps the alert rate.

    *Skill*: over the last `window` labelled events, the PR AUC (average precision) of the positive-class
    probability each event was served with (`update` gets the probabilities of the decision) must beat the
    window's prevalence π by `skill_margin` of the smaller class's share, ``(PR AUC - π) / min(π, 1 - π) >=
    skill_margin`` (for a rare class: a lift of 1 + `skill_margin` over chance, which late labels and a young
    model reach long before a high absolute PR AUC), and not by chance: the score's ROC AUC must be `min_z`
    standard errors above 0.5 (Mann-Whitney). A score without skill has a PR AUC of about π, whatever
    threshold a policy picks on it (`max_f1` on such a score alerts on every event). One window for both
    classes: scores that drift over time do not pass for skill. Until the window holds `min_positives` scored
    positives the skill is unknown and alerts are withheld; it is measured again every `refresh` labels.

    *Rate cap*: at most ``rate * per_events`` alerts in any `per_events` consecutive events (an exact
    sliding window over event positions), where ``rate`` is `max_rate`, or `per_prevalence` times the
    positive class's prevalence in the skill window when that is larger: a class that is a quarter of the
    stream may raise more than 5% of alerts.

    Parameters
    ----------
    positive
        The class whose alerts are guarded; None: nothing to learn, every alert is withheld for no skill.
    skill_margin, min_z
        Required skill score and significance; `skill_margin=None`: no skill guard.
    max_rate, per_events, per_prevalence
        The alert-rate cap, its window in events, and its multiple of the measured prevalence;
        `max_rate=None`: no cap; `per_prevalence=None`: `max_rate` whatever the prevalence.
    min_positives, window, refresh
        Scored positives needed, labelled events the skill is measured on, labels between measurements.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(0)
    >>> def served(skill):
    ...     guard = AlertGuard(positive="1", max_rate=0.01, per_events=1000, per_prevalence=None)
    ...     for _ in range(5000):
    ...         y = "1" if rng.random() < 0.05 else "0"
    ...         guard.update(y, {"1": rng.gauss(0.3 + skill * (y == "1"), 0.15)})
    ...     return guard
    >>> guard = served(skill=0.0)
    >>> guard.skilled, guard.check(0)
    (False, 'no_skill')
    >>> guard = served(skill=0.4)
    >>> guard.skilled, [guard.check(i) for i in range(12)]
    (True, ['', '', '', '', '', '', '', '', '', '', 'rate_cap', 'rate_cap'])
    >>> guard.check(1000)  # the first alert left the window
    ''
    """

    #: Why `check` withholds an alert.
    REASONS: tuple[str, ...] = ("no_skill", "rate_cap")

    def __init__(
        self,
        positive: Hashable | None = None,
        skill_margin: float | None = 0.5,
        max_rate: float | None = 0.05,
        per_events: int = 10_000,
        min_positives: int = 20,
        min_z: float = 3.0,
        window: int = 20_000,
        refresh: int = 250,
        per_prevalence: float | None = 2.0,
    ) -> None:
        self.positive = positive
        self.skill_margin = skill_margin
        self.min_z = min_z
        self.max_rate = max_rate
        self.per_events = per_events
        self.min_positives = min_positives
        self.window = window
        self.refresh = refresh
        self.per_prevalence = per_prevalence
        self._prevalence = math.nan
        self._scores = np.zeros(window)
        self._hits = np.zeros(window, dtype=bool)
        self._n = 0  # scored labels seen
        self._skill = math.nan
        self._z = math.nan
        self._since = 0
        self._alerts: deque[int] = deque()  # positions of the alerts in the last `per_events` events

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "per_prevalence" not in state:  # a checkpoint from before the prevalence-aware cap
            self.per_prevalence, self._prevalence = 2.0, math.nan
            self._alerts = deque(self._alerts)

    @property
    def cap(self) -> int | None:
        """Alerts allowed in any `per_events` consecutive events now (None: no cap)."""
        if self.max_rate is None:
            return None
        rate = self.max_rate
        if self.per_prevalence is not None and self._prevalence == self._prevalence:
            rate = max(rate, min(1.0, self.per_prevalence * self._prevalence))
        return max(1, int(rate * self.per_events))

    @property
    def skill(self) -> float:
        """The last measured skill score ``(PR AUC - π) / min(π, 1 - π)``; NaN while unknown."""
        return self._skill

    @property
    def skill_z(self) -> float:
        """How many standard errors the last measured ROC AUC is above 0.5; NaN while unknown."""
        return self._z

    @property
    def skilled(self) -> bool:
        """Whether alerts may be raised as far as skill goes."""
        return self.skill_margin is None or (self._skill >= self.skill_margin and self._z >= self.min_z)

    def check(self, index: int, recent: deque[int] | None = None) -> str:
        """Why an alert at event position ``index`` is withheld ("no_skill", "rate_cap"), or "" when it may be
        raised; then it counts against the cap. Positions must not decrease. ``recent``: the positions of
        the alerts of another stream of positions (a partition's, where one guard serves several), in place
        of the guard's own."""
        if not self.skilled:
            return "no_skill"
        cap = self.cap
        if cap is not None:
            recent = self._alerts if recent is None else recent
            while recent and index - recent[0] >= self.per_events:
                recent.popleft()
            if len(recent) >= cap:
                return "rate_cap"
            recent.append(index)
        return ""

    def update(self, y_true: Hashable, proba: dict[Hashable, float]) -> None:
        """Learn a label with the probabilities its event was served with."""
        self.update_many([y_true], [proba])

    def update_many(self, ys: Sequence[Hashable], probas: Sequence[dict[Hashable, float]]) -> None:
        """`update` over a batch's labels; the skill is measured once at most."""
        if self.positive is None:
            return
        positive, size = self.positive, self.window
        unknown, new_positive = self._skill != self._skill, False
        for y, proba in zip(ys, probas, strict=True):
            if proba:  # events scored before the model learned anything carry no score
                slot = self._n % size
                self._scores[slot] = proba.get(positive, 0.0)
                self._hits[slot] = hit = y == positive
                new_positive |= hit
                self._n += 1
        self._since += len(ys)
        if self._since >= self.refresh or (unknown and new_positive):
            self._since = 0
            self._measure()

    def _measure(self) -> None:
        held = min(self._n, self.window)
        hits, scores = self._hits[:held], self._scores[:held]
        n_pos = int(hits.sum())
        n_neg = held - n_pos
        if n_pos < self.min_positives or not n_neg:
            self._skill = self._z = math.nan
            return
        prevalence = self._prevalence = n_pos / held
        self._skill = (pr_auc(hits, scores) - prevalence) / min(prevalence, 1.0 - prevalence)
        self._z = (roc_auc(hits, scores) - 0.5) / math.sqrt((held + 1) / (12.0 * n_pos * n_neg))


THRESHOLDS: dict[str, Callable[..., ThresholdPolicy]] = {
    "argmax": ArgMax,
    "prior_correction": PriorCorrection,
    "min_cost": MinCost,
    "target_precision": TargetPrecision,
    "budget": AlertBudget,
    "max_gmean": _max_gmean,
    "max_f1": _max_f1,
}


def build_threshold(name: str, **params: Any) -> ThresholdPolicy:
    """Build a threshold policy by name.

    >>> build_threshold("argmax", positive="fraud")
    ArgMax (
      positive="fraud"
    )
    >>> build_threshold("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown threshold policy 'nope'; choose one of: argmax, budget, max_f1, ...
    """
    try:
        factory = THRESHOLDS[name]
    except KeyError:
        choices = ", ".join(sorted(THRESHOLDS))
        raise ValueError(f"unknown threshold policy {name!r}; choose one of: {choices}") from None
    return factory(**params)
