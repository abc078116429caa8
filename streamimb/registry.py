"""Explicit name -> factory tables that turn configuration into river models.

Defaults are tuned for rare classes, not river's: a Hoeffding tree with ``delta=1e-7`` waits far too long
to split when one class is 1% of the stream, so ours splits at ``delta=1e-3``.

>>> model = build_classifier("numpy_hoeffding_tree")
>>> type(model).__name__
'NumpyHoeffdingTree'
>>> build_classifier("nope")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown classifier 'nope'; choose from ['arf', 'gaussian_nb', ...]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from river import base, compose, forest, linear_model, multiclass, naive_bayes, optim, preprocessing, tree

from streamimb.classifiers import NumpyHoeffdingTree
from streamimb.detectors.anomaly import DETECTORS, build_detector

__all__ = ["CLASSIFIERS", "DETECTORS", "build_classifier", "build_detector"]


def hoeffding_tree(grace_period: int = 100, delta: float = 1e-3, **params: Any) -> base.Classifier:
    return tree.HoeffdingTreeClassifier(grace_period=grace_period, delta=delta, **params)


def hoeffding_adaptive_tree(
    grace_period: int = 50,
    delta: float = 1e-3,
    split_criterion: str = "gini",
    leaf_prediction: str = "mc",
    max_share_to_split: float = 1.0,
    seed: int | None = 42,
    **params: Any,
) -> base.Classifier:
    """The base learner the prevalence-shift benchmark tuned and chose the default strategy with."""
    return tree.HoeffdingAdaptiveTreeClassifier(
        grace_period=grace_period,
        delta=delta,
        split_criterion=split_criterion,
        leaf_prediction=leaf_prediction,
        max_share_to_split=max_share_to_split,
        seed=seed,
        **params,
    )


# The settings river's adaptive tree shares with the numpy tree (the rest are numpy-only).
_SHARED_TREE_SETTINGS = (
    "grace_period",
    "delta",
    "tau",
    "split_criterion",
    "min_branch_fraction",
    "max_share_to_split",
    "max_depth",
)


def river_twin_of_numpy_tree(seed: int | None = 42, **params: Any) -> base.Classifier:
    """What the per-event path (``batch: false``) runs for ``numpy_hoeffding_tree``: river's Hoeffding
    adaptive tree with the numpy tree's split settings, defaults included (one row at a time the numpy tree
    is slow; river's adaptive tree is what its subtree pruning imitates). ``params`` are validated as the
    numpy tree's; its numpy-only settings do not apply."""
    try:
        settings = NumpyHoeffdingTree(**params)._get_params()
    except TypeError as exc:
        raise ValueError(f"classifier 'numpy_hoeffding_tree': {exc}") from None
    return hoeffding_adaptive_tree(seed=seed, **{k: settings[k] for k in _SHARED_TREE_SETTINGS})


def logistic_regression(lr: float = 0.05, l2: float = 0.0, **params: Any) -> base.Classifier:
    """Standardised logistic regression, one-vs-rest so that it takes any class labels (and many classes)."""
    model = linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2, **params)
    return compose.Pipeline(preprocessing.StandardScaler(), multiclass.OneVsRestClassifier(model))


def gaussian_nb() -> base.Classifier:
    return naive_bayes.GaussianNB()


def arf(
    n_models: int = 10, grace_period: int = 50, delta: float = 1e-3, seed: int | None = 42, **params: Any
):
    return forest.ARFClassifier(
        n_models=n_models, grace_period=grace_period, delta=delta, seed=seed, **params
    )


CLASSIFIERS: dict[str, Callable[..., base.Classifier]] = {
    "hoeffding_tree": hoeffding_tree,
    "hoeffding_adaptive_tree": hoeffding_adaptive_tree,
    "numpy_hoeffding_tree": NumpyHoeffdingTree,  # the default; its defaults are the tuned settings
    "logistic_regression": logistic_regression,
    "gaussian_nb": gaussian_nb,
    "arf": arf,
}


def build_classifier(kind: str, **params: Any) -> base.Classifier:
    """A fresh base classifier by registry name; unknown names and parameters raise ValueError."""
    try:
        factory = CLASSIFIERS[kind]
    except KeyError:
        raise ValueError(f"unknown classifier {kind!r}; choose from {sorted(CLASSIFIERS)}") from None
    try:
        return factory(**params)
    except TypeError as exc:
        raise ValueError(f"classifier {kind!r}: {exc}") from None
