"""Imbalance engine: prior tracking, cost-sensitive learning, resampling, SMOTE and threshold moving.

Every strategy is a river classifier wrapping a base classifier; build one by name:

>>> from river import tree
>>> model = build_strategy("weighting", tree.HoeffdingTreeClassifier())
>>> type(model).__name__
'CostSensitive'
>>> build_strategy("bogus", tree.HoeffdingTreeClassifier())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown imbalance strategy 'bogus'; choose one of: none, oob, oversample, ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from river import base as river_base

from streamimb.imbalance.priors import PrevalenceChange, PrevalenceChangeDetector, PriorTracker
from streamimb.imbalance.sampling import OOB, UOB, ImbalancedBagging, OnlineOverSampler, OnlineUnderSampler
from streamimb.imbalance.smote import OnlineSMOTE
from streamimb.imbalance.strategy import ImbalanceStrategy, correct_priors
from streamimb.imbalance.threshold import (
    THRESHOLDS,
    AlertBudget,
    ArgMax,
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
    "CostSensitive",
    "ImbalanceStrategy",
    "ImbalancedBagging",
    "MinCost",
    "NoStrategy",
    "OnlineOverSampler",
    "OnlineSMOTE",
    "OnlineUnderSampler",
    "PrevalenceChange",
    "PrevalenceChangeDetector",
    "PriorCorrection",
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

DEFAULT_STRATEGY: str = "weighting"
"""What `replay` and `run` use with no imbalance settings (chosen from benchmarks/prevalence_shift.py)."""

DEFAULT_THRESHOLD: str = "prior_correction"
"""The decision policy paired with the default strategy in the benchmark."""


def build_strategy(name: str, base: river_base.Classifier, **params: Any) -> river_base.Classifier:
    """Wrap `base` in the imbalance strategy called `name` (see `STRATEGIES`)."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        choices = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown imbalance strategy {name!r}; choose one of: {choices}") from None
    return factory(base, **params)
