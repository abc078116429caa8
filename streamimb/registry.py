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

`COMPONENTS` names every kind of component the configuration picks by name, with its table; the config
validates names and parameters against it (`name_problem`, `params_problem`), so a typo fails at load time:

>>> print(name_problem("strategy", "oobb"))  # doctest: +ELLIPSIS
unknown imbalance strategy 'oobb' (did you mean 'oob'?); allowed: none, oob, oversample, ...
>>> print(params_problem("classifier", "hoeffding_tree", {"gracee_period": 5}))  # doctest: +ELLIPSIS
unknown parameter 'gracee_period' (did you mean 'grace_period'?) for classifier 'hoeffding_tree'; allowed: ...
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from river import base, compose, forest, linear_model, multiclass, naive_bayes, optim, preprocessing, tree

from streamimb.classifiers import NumpyHoeffdingTree
from streamimb.classifiers.boosting import WindowedBoosting
from streamimb.classifiers.linear import NumpyLogisticRegression
from streamimb.classifiers.portfolio import Portfolio
from streamimb.detectors.anomaly import DETECTORS, build_detector
from streamimb.detectors.drift import DRIFT_DETECTORS
from streamimb.detectors.timeseries import SeriesAnomalyDetector
from streamimb.imbalance import DEFAULT_STRATEGY, DEFAULT_THRESHOLD, STRATEGIES, THRESHOLDS, build_strategy

__all__ = [
    "CLASSIFIERS",
    "COMPONENTS",
    "DETECTORS",
    "Component",
    "accepted_params",
    "build_classifier",
    "build_detector",
    "name_problem",
    "params_problem",
]

_F = TypeVar("_F", bound=Callable[..., Any])
# Factory -> (the class its **params go to, the parameters the factory sets itself).
_FORWARDS: dict[Callable[..., Any], tuple[Callable[..., Any], frozenset[str]]] = {}


def parameter_names(factory: Any) -> set[str]:
    """Names of a factory's parameters (empty for None)."""
    return set(inspect.signature(factory).parameters) if factory is not None else set()


def _forwards(target: Callable[..., Any], *exclude: str) -> Callable[[_F], _F]:
    """Mark a factory whose ``**params`` go to ``target`` (less ``exclude``), for `accepted_params`."""

    def mark(factory: _F) -> _F:
        _FORWARDS[factory] = (target, frozenset(exclude))
        return factory

    return mark


@_forwards(tree.HoeffdingTreeClassifier)
def hoeffding_tree(grace_period: int = 100, delta: float = 1e-3, **params: Any) -> base.Classifier:
    return tree.HoeffdingTreeClassifier(grace_period=grace_period, delta=delta, **params)


@_forwards(tree.HoeffdingAdaptiveTreeClassifier)
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


@_forwards(linear_model.LogisticRegression, "optimizer")
def logistic_regression(lr: float = 0.05, l2: float = 0.0, **params: Any) -> base.Classifier:
    """Standardised logistic regression, one-vs-rest so that it takes any class labels (and many classes)."""
    model = linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2, **params)
    return compose.Pipeline(preprocessing.StandardScaler(), multiclass.OneVsRestClassifier(model))


def gaussian_nb() -> base.Classifier:
    return naive_bayes.GaussianNB()


@_forwards(forest.ARFClassifier)
def arf(
    n_models: int = 10, grace_period: int = 50, delta: float = 1e-3, seed: int | None = 42, **params: Any
):
    return forest.ARFClassifier(
        n_models=n_models, grace_period=grace_period, delta=delta, seed=seed, **params
    )


DEFAULT_CANDIDATES: dict[str, dict[str, Any]] = {
    "linear": {"kind": "numpy_logistic_regression", "strategy": "none"},
    "boosting": {"kind": "windowed_boosting", "strategy": "none"},
}
"""The default model's candidates: a linear model and windowed gradient boosting, with no resampling (the
threshold policy places the decision; reweighting costs ranking). Chosen by leave-one-stream-out over
portfolios with and without the numpy tree ensemble, and that ensemble alone
(benchmarks/results/default_choice.md)."""


def portfolio(
    candidates: Mapping[str, Mapping[str, Any]] | None = None,
    window: int = 5000,
    half_life: float = 2000.0,
    margin: float = 0.02,
    noise: float = 0.5,
    min_positives: int = 20,
    blend: bool = True,
    seed: int | None = 42,
    strategy: str | None = None,
    strategy_params: Mapping[str, Any] | None = None,
    tracker: Any = None,
) -> Portfolio:
    """A `Portfolio` from candidate specs ``name: {kind, params, strategy, strategy_params}``.

    ``strategy`` / ``strategy_params`` replace every candidate's treatment (the config's ``imbalance``);
    ``tracker``: a `PriorTracker` the candidates read rather than update (the Processor's).

    >>> model = portfolio({"lr": {"kind": "numpy_logistic_regression", "strategy": "weighting"}})
    >>> type(model.candidates["lr"]).__name__, type(model.candidates["lr"].classifier).__name__
    ('CostSensitive', 'NumpyLogisticRegression')
    """
    specs = DEFAULT_CANDIDATES if candidates is None else candidates
    built: dict[str, base.Classifier] = {}
    for i, (name, spec) in enumerate(specs.items()):
        unknown = set(spec) - {"kind", "params", "strategy", "strategy_params"}
        if unknown or "kind" not in spec:
            raise ValueError(
                f"candidate {name!r}: give kind, and optionally params, strategy, strategy_params"
                + (f" (not {sorted(unknown)})" if unknown else "")
            )
        params = dict(spec.get("params") or {})
        factory = CLASSIFIERS.get(spec["kind"])
        if factory is not None and "seed" in parameter_names(factory) and seed is not None:
            params.setdefault("seed", seed + i)
        model = build_classifier(spec["kind"], **params)
        treatment = strategy or spec.get("strategy") or "none"
        treatment_params = dict(
            strategy_params if strategy is not None else spec.get("strategy_params") or {}
        )
        if "seed" in parameter_names(STRATEGIES.get(treatment)) and seed is not None:
            treatment_params.setdefault("seed", seed + i)
        if tracker is not None and "tracker" not in treatment_params:
            treatment_params.update(tracker=tracker, update_tracker=False)
            treatment_params.setdefault("half_life", tracker.half_life)
        built[name] = build_strategy(treatment, model, **treatment_params)
    return Portfolio(built, window, half_life, margin, noise, min_positives, blend)


CLASSIFIERS: dict[str, Callable[..., base.Classifier]] = {
    "hoeffding_tree": hoeffding_tree,
    "hoeffding_adaptive_tree": hoeffding_adaptive_tree,
    "numpy_hoeffding_tree": NumpyHoeffdingTree,  # the default; its defaults are the tuned settings
    "logistic_regression": logistic_regression,
    "numpy_logistic_regression": NumpyLogisticRegression,
    "windowed_boosting": WindowedBoosting,
    "portfolio": portfolio,
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


@dataclass(frozen=True)
class Component:
    """A kind of component the configuration names: its registry table and how errors call it."""

    what: str  # e.g. "imbalance strategy"
    table: Mapping[str, Callable[..., Any]]
    fixed: frozenset[str] = frozenset()  # parameters its builder sets itself, not configurable
    default: str | None = None  # the name used when the configuration gives none


COMPONENTS: dict[str, Component] = {
    # the portfolio's treatments and prior tracker come from the imbalance section and the Processor
    "classifier": Component("classifier", CLASSIFIERS, frozenset({"strategy", "strategy_params", "tracker"})),
    "detector": Component("anomaly detector", DETECTORS),
    "strategy": Component(
        "imbalance strategy", STRATEGIES, frozenset({"classifier", "tracker"}), DEFAULT_STRATEGY
    ),
    "threshold": Component(
        "threshold policy", THRESHOLDS, frozenset({"positive", "tracker"}), DEFAULT_THRESHOLD
    ),
    "drift": Component("drift detector", DRIFT_DETECTORS),
    "series": Component("series detector", {"series": SeriesAnomalyDetector}, default="series"),
}


def accepted_params(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword parameters ``factory`` takes, in signature order; None when it takes any.

    ``**params`` count as the parameters of the class they are forwarded to (see `_forwards`).

    >>> accepted_params(DETECTORS["loda"])
    ['n_bins', 'n_random_cuts', 'seed']
    >>> accepted_params(CLASSIFIERS["hoeffding_tree"])[:3]  # then tree.HoeffdingTreeClassifier's
    ['grace_period', 'delta', 'max_depth']
    """
    bound = set(factory.keywords) if isinstance(factory, functools.partial) else set()
    names: list[str] = []
    takes_any = False
    for p in inspect.signature(factory).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            takes_any = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in bound:
            names.append(p.name)
    if takes_any:
        target, exclude = _FORWARDS.get(factory, (None, frozenset()))
        inner = accepted_params(target) if target is not None else None
        if inner is None:
            return None
        names += [n for n in inner if n not in names and n not in exclude]
    return names


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def name_problem(component: str, name: str) -> str | None:
    """Why ``name`` is no ``component`` (a `COMPONENTS` key) of the registry; None when it is one."""
    c = COMPONENTS[component]
    if name in c.table:
        return None
    choices = sorted(c.table)
    return f"unknown {c.what} {name!r}{_did_you_mean(name, choices)}; allowed: {', '.join(choices)}"


def params_problem(component: str, name: str | None, params: Mapping[str, Any]) -> str | None:
    """Why ``params`` do not fit the ``component`` called ``name`` (its default when None); None if they do.

    Unknown names are `name_problem`'s to report: their parameters pass here.
    """
    c = COMPONENTS[component]
    name = name if name is not None else c.default
    factory = c.table.get(name) if name is not None else None
    allowed = accepted_params(factory) if factory is not None else None
    if allowed is None:
        return None
    allowed = [p for p in allowed if p not in c.fixed]
    unknown = [
        f"{k!r} (set by streamimb itself)" if k in c.fixed else f"{k!r}{_did_you_mean(str(k), allowed)}"
        for k in params
        if k not in allowed
    ]
    if not unknown:
        return None
    plural = "s" if len(unknown) > 1 else ""
    return (
        f"unknown parameter{plural} {', '.join(unknown)} for {c.what} {name!r}; "
        f"allowed: {', '.join(allowed) or '(none)'}"
    )
