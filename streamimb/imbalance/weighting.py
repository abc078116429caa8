"""Cost-sensitive learning: per-event sample weights from the current priors and a cost matrix."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from river import base

from streamimb.imbalance.priors import PriorTracker
from streamimb.imbalance.strategy import ImbalanceStrategy

__all__ = ["CostMatrix", "CostSensitive", "NoStrategy", "class_weights", "misclassification_costs"]

CostMatrix = Mapping[Hashable, Mapping[Hashable, float]]
"""`cost[true][predicted]`: cost of predicting `predicted` when the truth is `true`. Missing entries
default to 0 on the diagonal and 1 elsewhere."""


def cost_of(cost: CostMatrix | None, true: Hashable, pred: Hashable) -> float:
    """One entry of a cost matrix, with the 0/1 defaults."""
    default = 0.0 if true == pred else 1.0
    if cost is None:
        return default
    row = cost.get(true)
    if row is None:
        return default
    return float(row.get(pred, default))


def misclassification_costs(classes: list[Hashable], cost: CostMatrix | None) -> dict[Hashable, float]:
    """Mean cost of misclassifying each class (1 for every class without a cost matrix).

    >>> misclassification_costs(["fraud", "ok"], {"fraud": {"ok": 50.0}})
    {'fraud': 50.0, 'ok': 1.0}
    """
    out = {}
    for c in classes:
        others = [cost_of(cost, c, j) for j in classes if j != c]
        out[c] = sum(others) / len(others) if others else 1.0
    return out


def class_weights(
    priors: Mapping[Hashable, float],
    cost: CostMatrix | None = None,
    power: float = 1.0,
    max_ratio: float = 1000.0,
    scale: str = "mean",
) -> dict[Hashable, float]:
    """Per-class sample weights that balance the classes (to the power `power`) and apply costs.

    The raw weight of class `c` is `(1 / (K π_c)) ** power · m_c`, where `m_c` is its mean
    misclassification cost. Weights are capped at `max_ratio` times the smallest one, then scaled:
    `scale="mean"` makes the expected weight of an event, `Σ π_c w_c`, equal to 1; `scale="max"` makes
    the largest weight 1, so no example counts for more than one (learners whose confidence grows with
    the weight total, such as Hoeffding trees, are not misled by inflated minority evidence).

    >>> w = class_weights({"fraud": 0.01, "ok": 0.99})
    >>> round(w["fraud"] / w["ok"], 1), round(0.01 * w["fraud"] + 0.99 * w["ok"], 6)
    (99.0, 1.0)
    >>> w = class_weights({"fraud": 0.01, "ok": 0.99}, max_ratio=10)
    >>> round(w["fraud"] / w["ok"], 1)
    10.0
    >>> w = class_weights({"fraud": 0.01, "ok": 0.99}, scale="max")
    >>> w["fraud"], round(w["ok"], 4)
    (1.0, 0.0101)
    """
    if scale not in ("mean", "max"):
        raise ValueError(f"scale must be 'mean' or 'max', not {scale!r}")
    if not priors:
        return {}
    k = len(priors)
    floor = 1e-6
    costs = misclassification_costs(list(priors), cost)
    raw = {c: (1.0 / (k * max(p, floor))) ** power * costs[c] for c, p in priors.items()}
    low = min(raw.values())
    if low <= 0.0:
        low = min((v for v in raw.values() if v > 0.0), default=1.0)
    cap = low * max_ratio
    capped = {c: min(v, cap) for c, v in raw.items()}
    if scale == "max":
        top = max(capped.values())
        return {c: v / top for c, v in capped.items()}
    mean = sum(priors[c] * v for c, v in capped.items())
    if mean <= 0.0:
        return {c: 1.0 for c in priors}
    return {c: v / mean for c, v in capped.items()}


class NoStrategy(ImbalanceStrategy):
    """No rebalancing: the base classifier as it is, plus prior tracking ("none").

    Probabilities are the base model's own (`correct=False` by default).

    >>> from river import tree
    >>> model = NoStrategy(tree.HoeffdingTreeClassifier())
    >>> model.learn_one({"a": 1.0}, "ok")
    >>> model.priors()
    {'ok': 1.0}
    """

    def __init__(
        self,
        classifier: base.Classifier,
        half_life: float = 2000.0,
        time_based: bool = False,
        tracker: PriorTracker | None = None,
        update_tracker: bool = True,
        correct: bool = False,
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


class CostSensitive(ImbalanceStrategy):
    """Cost-sensitive learning ("weighting"): each event is learned with weight `w · class_weights[y]`.

    Weights follow the current priors (and the optional cost matrix), so a class that becomes rarer
    gets heavier at once. Base models that take `w` get it directly; others see the event replicated
    `floor(w)` times plus once with probability `frac(w)`.

    Parameters
    ----------
    classifier
        Any river classifier.
    cost
        Optional cost matrix `cost[true][predicted]` (see `CostMatrix`).
    power
        1 balances the classes fully, 0 leaves them as they are, values in between temper the weights.
    max_ratio
        Cap on the ratio between the largest and smallest class weight (keeps SGD learners stable).
    scale
        "mean" (expected event weight 1) or "max" (largest class weight 1), see `class_weights`.
    half_life, time_based, tracker, update_tracker, correct, drift_reset, drift_delta, calibrate, seed
        See `ImbalanceStrategy`.

    Examples
    --------
    >>> import random
    >>> from river import tree
    >>> rng = random.Random(0)
    >>> model = CostSensitive(tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3), seed=0)
    >>> for _ in range(3000):
    ...     x = {"v": rng.random()}
    ...     model.learn_one(x, "rare" if x["v"] > 0.97 else "common")
    >>> model.predict_one({"v": 0.99}), model.predict_one({"v": 0.2})
    ('rare', 'common')
    """

    def __init__(
        self,
        classifier: base.Classifier,
        cost: CostMatrix | None = None,
        power: float = 1.0,
        max_ratio: float = 1000.0,
        scale: str = "mean",
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
        self.cost = cost
        self.power = power
        self.max_ratio = max_ratio
        self.scale = scale

    def weights(self) -> dict[Hashable, float]:
        """The class weights the next event will be learned with."""
        return class_weights(self.priors(), self.cost, self.power, self.max_ratio, self.scale)

    def _learn(self, x: dict, y: Hashable, w: float) -> None:
        weight = w * self.weights().get(y, 1.0)
        super()._learn(x, y, weight)

    def _row_weights(self, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weight = w * self._label_rates(self.weights(), y)
        return weight[None, :], weight
