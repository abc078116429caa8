"""Imbalance engine: prior tracking, cost-sensitive learning, resampling, SMOTE and threshold moving.

Every strategy is a river classifier wrapping any base classifier. It tracks the class priors
(`PriorTracker`, with a prevalence-change detector), trains the base model on rebalanced data, and returns
probabilities calibrated to the *current* priors. A threshold policy then turns them into a decision:

>>> import random
>>> from river import tree
>>> base = tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3)
>>> model = build_strategy("oob", base, n_models=3, seed=1)
>>> policy = build_threshold("prior_correction", positive="fraud", tracker=model.prior_tracker)
>>> rng = random.Random(1)
>>> for _ in range(3000):
...     x = {"amount": rng.random()}
...     proba = model.predict_proba_one(x)          # score first ...
...     label, alert, reason = policy.decide(proba)
...     y = "fraud" if x["amount"] > 0.97 else "ok"
...     model.learn_one(x, y)                       # ... then learn
...     policy.update(y, proba)
>>> policy.decide(model.predict_proba_one({"amount": 0.99}))[:2]
('fraud', True)
>>> round(model.priors()["fraud"], 2), model.prior_tracker.changes
(0.03, [])

`STRATEGIES` / `build_strategy` and `THRESHOLDS` / `build_threshold` map config names to classes;
unknown names raise `ValueError` listing the valid ones:

>>> build_strategy("bogus", tree.HoeffdingTreeClassifier())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown imbalance strategy 'bogus'; choose one of: none, oob, oversample, ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from river import base as river_base

from streamimb.imbalance.calibration import PriorShiftCalibrator
from streamimb.imbalance.priors import PrevalenceChange, PrevalenceChangeDetector, PriorTracker
from streamimb.imbalance.sampling import OOB, UOB, ImbalancedBagging, OnlineOverSampler, OnlineUnderSampler
from streamimb.imbalance.smote import OnlineSMOTE
from streamimb.imbalance.strategy import ImbalanceStrategy, correct_priors
from streamimb.imbalance.threshold import (
    THRESHOLDS,
    AlertBudget,
    ArgMax,
    BestThreshold,
    LearnedThreshold,
    MinCost,
    PriorCorrection,
    TargetPrecision,
    ThresholdPolicy,
    build_threshold,
)
from streamimb.imbalance.weighting import CostSensitive, NoStrategy, class_weights

__all__ = [
    "DEFAULT_STRATEGY",
    "DEFAULT_THRESHOLD",
    "OOB",
    "STRATEGIES",
    "THRESHOLDS",
    "UOB",
    "AlertBudget",
    "ArgMax",
    "BestThreshold",
    "CostSensitive",
    "ImbalanceStrategy",
    "ImbalancedBagging",
    "LearnedThreshold",
    "MinCost",
    "NoStrategy",
    "OnlineOverSampler",
    "OnlineSMOTE",
    "OnlineUnderSampler",
    "PrevalenceChange",
    "PrevalenceChangeDetector",
    "PriorCorrection",
    "PriorShiftCalibrator",
    "PriorTracker",
    "TargetPrecision",
    "ThresholdPolicy",
    "build_strategy",
    "build_threshold",
    "class_weights",
    "correct_priors",
]

STRATEGIES: dict[str, Callable[..., river_base.Classifier]] = {
    "none": NoStrategy,
    "weighting": CostSensitive,
    "oversample": OnlineOverSampler,
    "undersample": OnlineUnderSampler,
    "oob": OOB,
    "uob": UOB,
    "smote": OnlineSMOTE,
}

DEFAULT_STRATEGY: str = "oob"
"""What `replay` and `run` use with no imbalance settings (chosen from benchmarks/prevalence_shift.py)."""

DEFAULT_THRESHOLD: str = "max_f1"
"""The decision policy paired with the default strategy in the benchmark."""


def build_strategy(name: str, base: river_base.Classifier, **params: Any) -> river_base.Classifier:
    """Wrap `base` in the imbalance strategy called `name` (see `STRATEGIES`)."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        choices = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown imbalance strategy {name!r}; choose one of: {choices}") from None
    return factory(base, **params)
