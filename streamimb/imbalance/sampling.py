"""Adaptive online resampling and imbalance-aware online bagging.

Rates follow the current priors of the `PriorTracker`, so they move as soon as the prevalence moves
(river's `imblearn` samplers count classes cumulatively and never follow a shift).

- `OnlineOverSampler` ("oversample"): every class is learned `λ_c = max(1, ratio · π_max / π_c)` times.
- `OnlineUnderSampler` ("undersample"): every class is learned with probability
  `λ_c = min(1, π_min / (ratio · π_c))`.
- `OOB` / `UOB`: oversampling / undersampling online bagging of `n_models` base learners (Wang, Minku &
  Yao, "Resampling-based ensemble methods for online class imbalance learning", IEEE TKDE 2015): each
  member learns each event `k ~ Poisson(λ_y)` times.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from river import base

from streamimb.imbalance.monitor import ClassErrorMonitor, update_monitors
from streamimb.imbalance.priors import PriorTracker
from streamimb.imbalance.strategy import ImbalanceStrategy, learn_weighted

__all__ = ["OOB", "UOB", "ImbalancedBagging", "OnlineOverSampler", "OnlineUnderSampler", "sampling_rates"]


def sampling_rates(
    priors: Mapping[Hashable, float],
    mode: str = "over",
    ratio: float = 1.0,
    max_rate: float = 100.0,
    min_rate: float = 0.0,
) -> dict[Hashable, float]:
    """Expected number of times each class is learned per event, from the current priors.

    `mode="over"`: `λ_c = clip(ratio · π_max / π_c, 1, max_rate)` (no class is dropped).
    `mode="under"`: `λ_c = clip(π_min / (ratio · π_c), min_rate, 1)` (no class is replicated).
    `ratio` is the target mass of the smaller classes relative to the largest (1 = balanced).

    >>> sampling_rates({"fraud": 0.02, "ok": 0.98})
    {'fraud': 49.0, 'ok': 1.0}
    >>> r = sampling_rates({"fraud": 0.02, "ok": 0.98}, mode="under")
    >>> r["fraud"], round(r["ok"], 4)
    (1.0, 0.0204)
    """
    if not priors:
        return {}
    floor = 1e-6
    if mode == "over":
        top = max(priors.values())
        return {c: min(max(ratio * top / max(p, floor), 1.0), max_rate) for c, p in priors.items()}
    if mode == "under":
        low = min(priors.values())
        return {c: min(max(low / (ratio * max(p, floor)), min_rate), 1.0) for c, p in priors.items()}
    raise ValueError(f"mode must be 'over' or 'under', not {mode!r}")


def poisson(lam: float, rng: random.Random) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal approximation above 30)."""
    if lam <= 0.0:
        return 0
    if lam > 30.0:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class OnlineOverSampler(ImbalanceStrategy):
    """Online random over-sampling whose rates follow the current priors ("oversample").

    Each event is learned `floor(λ_y) + Bernoulli(frac(λ_y))` times (as one weighted update when the
    base model takes `w`). See `sampling_rates` for `ratio` and `max_rate`; the other parameters are
    those of `ImbalanceStrategy`.

    >>> from river import tree
    >>> model = OnlineOverSampler(tree.HoeffdingTreeClassifier(), seed=1)
    >>> for i in range(1000):
    ...     model.learn_one({"v": float(i % 10)}, "rare" if i % 10 == 0 else "common")
    >>> abs(model.training_priors()["rare"] - 0.5) < 0.05
    True
    """

    _mode = "over"

    def __init__(
        self,
        classifier: base.Classifier,
        ratio: float = 1.0,
        max_rate: float = 100.0,
        min_rate: float = 0.0,
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
        self.ratio = ratio
        self.max_rate = max_rate
        self.min_rate = min_rate

    def rates(self) -> dict[Hashable, float]:
        """Current expected learning rate of each class."""
        return sampling_rates(self.priors(), self._mode, self.ratio, self.max_rate, self.min_rate)

    def _copies(self, lam: float) -> int:
        k = int(lam)
        return k + (self._rng.random() < lam - k)

    def _learn(self, x: dict, y: Hashable, w: float) -> None:
        lam = self.rates().get(y, 1.0)
        k = self._copies(lam)
        if k:
            self.n_fits += learn_weighted(self._model, x, y, w * k, self._use_w, self._rng)
        self._record_fed({y: w * lam})

    def _row_weights(self, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lam = self._label_rates(self.rates(), y)
        whole = np.floor(lam)
        copies = whole + (self._np_rng.random(len(y)) < lam - whole)
        return (w * copies)[None, :], w * lam


class OnlineUnderSampler(OnlineOverSampler):
    """Online random under-sampling whose rates follow the current priors ("undersample").

    Each event is learned with probability `λ_y` (see `sampling_rates`, `mode="under"`; `min_rate`
    keeps a floor on the majority's rate).

    >>> from river import tree
    >>> model = OnlineUnderSampler(tree.HoeffdingTreeClassifier(), seed=1)
    >>> for i in range(1000):
    ...     model.learn_one({"v": float(i % 10)}, "rare" if i % 10 == 0 else "common")
    >>> round(model.rates()["common"], 2), model.n_fits < 300
    (0.11, True)
    """

    _mode = "under"


class ImbalancedBagging(ImbalanceStrategy):
    """Online bagging of `n_models` base learners with class-dependent Poisson rates (OOB / UOB).

    Parameters
    ----------
    classifier
        The base learner, cloned `n_models` times (seeded per member when it takes a seed).
    n_models
        Ensemble size.
    mode
        "over" (OOB) or "under" (UOB); see `sampling_rates`.
    ratio, max_rate, min_rate
        See `sampling_rates`.
    replace_drifted
        With a base learner that has array forms: watch each member's class-conditional error rates on
        every scored batch (`ClassErrorMonitor`) and replace a member whose errors rose (concept drift)
        by a fresh one, which votes once it has learned ``min_vote_age`` labelled events. Off by default:
        an oversampled member's own errors also move with its sampling rate (capped at ``max_rate``, so
        the rate follows the prevalence below 1%), fraud bursts and its own growth, and replacing members
        then costs more than it recovers; adaptive base trees prune their stale subtrees instead
        (``benchmarks/prevalence_shift.py`` compares both).
    min_vote_age
        Labelled events a replacement member learns before its probabilities count.
    half_life, time_based, tracker, update_tracker, correct, drift_reset, drift_delta, calibrate, seed
        See `ImbalanceStrategy`.
    """

    def __init__(
        self,
        classifier: base.Classifier,
        n_models: int = 10,
        mode: str = "over",
        ratio: float = 1.0,
        max_rate: float = 100.0,
        min_rate: float = 0.0,
        replace_drifted: bool = False,
        min_vote_age: int = 1000,
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
        if mode not in ("over", "under"):
            raise ValueError(f"mode must be 'over' or 'under', not {mode!r}")
        self.n_models = n_models
        self.mode = mode
        self.ratio = ratio
        self.max_rate = max_rate
        self.min_rate = min_rate
        self.replace_drifted = replace_drifted
        self.min_vote_age = min_vote_age
        self._models: list[base.Classifier] = []
        self._monitors: list[ClassErrorMonitor] = []
        self._ages: list[int] = []
        self.n_replaced = 0

    def _init_models(self) -> None:
        self._models = [self._new_member(i) for i in range(self.n_models)]
        self._monitors = [ClassErrorMonitor() for _ in range(self.n_models)]
        self._ages = [self.min_vote_age] * self.n_models  # the first members vote from the start

    def _voters(self) -> list[bool]:
        mature = [age >= self.min_vote_age for age in self._ages]
        return mature if any(mature) else [True] * len(mature)

    def _drifted_members(self, scores: Any, y: np.ndarray) -> list[int]:
        self._ages = [age + len(y) for age in self._ages]
        if not self.replace_drifted or not len(y):
            return []
        majority = np.vstack(scores.majority)
        rose = update_monitors(self._monitors, majority != y, majority >= 0, y)
        return [i for i, drifted in enumerate(rose) if drifted]

    def _replace_members(self, members: list[int]) -> None:
        for i in members:
            self.n_replaced += 1
            self._models[i] = self._new_member(self.n_models * self.n_replaced + i)
            self._monitors[i] = ClassErrorMonitor()
            self._ages[i] = 0

    def __len__(self) -> int:
        return len(self._models)

    @property
    def models(self) -> list[base.Classifier]:
        """The ensemble members (empty before the first label)."""
        return list(self._models)

    def rates(self) -> dict[Hashable, float]:
        """Current Poisson rate of each class."""
        return sampling_rates(self.priors(), self.mode, self.ratio, self.max_rate, self.min_rate)

    def _raw_one(self, x: dict) -> dict[Hashable, float]:
        votes: dict[Hashable, float] = {}
        n = 0
        for model in self._models:
            proba = model.predict_proba_one(x)
            total = sum(proba.values())
            if total <= 0.0:
                continue
            n += 1
            for c, p in proba.items():
                votes[c] = votes.get(c, 0.0) + p / total
        return {c: v / n for c, v in votes.items()} if n else {}

    def _learn(self, x: dict, y: Hashable, w: float) -> None:
        lam = self.rates().get(y, 1.0)
        for model in self._models:
            k = poisson(lam, self._rng)
            if k:
                self.n_fits += learn_weighted(model, x, y, w * k, self._use_w, self._rng)
        self._record_fed({y: w * lam})

    def _row_weights(self, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lam = self._label_rates(self.rates(), y)
        return w * self._np_rng.poisson(lam, size=(self.n_models, len(y))), w * lam


class OOB(ImbalancedBagging):
    """Oversampling-based online bagging ("oob"): minority classes get Poisson rate `π_max / π_c`.

    >>> import random
    >>> from river import tree
    >>> rng = random.Random(3)
    >>> model = OOB(tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3), n_models=3, seed=3)
    >>> for _ in range(3000):
    ...     x = {"v": rng.random()}
    ...     model.learn_one(x, "rare" if x["v"] > 0.97 else "common")
    >>> model.predict_one({"v": 0.99}), model.predict_one({"v": 0.3})
    ('rare', 'common')
    """

    def __init__(
        self,
        classifier: base.Classifier,
        n_models: int = 10,
        ratio: float = 1.0,
        max_rate: float = 100.0,
        replace_drifted: bool = False,
        min_vote_age: int = 1000,
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
            n_models=n_models,
            mode="over",
            ratio=ratio,
            max_rate=max_rate,
            min_rate=0.0,
            classifier=classifier,
            replace_drifted=replace_drifted,
            min_vote_age=min_vote_age,
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


class UOB(ImbalancedBagging):
    """Undersampling-based online bagging ("uob"): larger classes get Poisson rate `π_min / π_c`.

    >>> import random
    >>> from river import tree
    >>> rng = random.Random(3)
    >>> model = UOB(tree.HoeffdingTreeClassifier(grace_period=20, delta=1e-3), n_models=3, seed=3)
    >>> for _ in range(5000):
    ...     x = {"v": rng.random()}
    ...     model.learn_one(x, "rare" if x["v"] > 0.9 else "common")
    >>> model.predict_one({"v": 0.99}), model.predict_one({"v": 0.3})
    ('rare', 'common')
    """

    def __init__(
        self,
        classifier: base.Classifier,
        n_models: int = 10,
        ratio: float = 1.0,
        min_rate: float = 0.0,
        replace_drifted: bool = False,
        min_vote_age: int = 1000,
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
            n_models=n_models,
            mode="under",
            ratio=ratio,
            max_rate=100.0,
            min_rate=min_rate,
            classifier=classifier,
            replace_drifted=replace_drifted,
            min_vote_age=min_vote_age,
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
