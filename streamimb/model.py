"""The supervised model: what is learned from labels, apart from any one partition's events.

A :class:`SupervisedModel` holds the classifier (a portfolio of candidates, or one model under an imbalance
strategy), the class-prior tracker, the threshold policy, the alert guard's measure of skill and the class
bookkeeping (known classes, their counts, the rare class once inferred). A
:class:`~streamimb.processor.Processor` keeps what belongs to its events (features, anomaly detectors,
calibration, drift monitors, metrics, the positions of its alerts for the rate cap) and scores, decides and
learns through its model. Several Processors may share one model: then every labelled event
of every partition is learned by the same model, and each partition is scored by it.

>>> from streamimb.config import ModelConfig
>>> model = SupervisedModel(ModelConfig(), positive="1", classes=["0", "1"])
>>> model.predict([{"x": 1.0}])  # nothing learned yet
[{}]
>>> [model.count(y) for y in ("0", "1")]
[False, False]
>>> _ = model.learn([{"x": 0.0}, {"x": 5.0}], ["0", "1"], [None, None], [{}, {}])
>>> model.n_learned, model.version, sorted(model.predict([{"x": 5.0}])[0])
(2, 1, ['0', '1'])
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from streamimb.classifiers.portfolio import Portfolio
from streamimb.config import ModelConfig
from streamimb.imbalance import DEFAULT_STRATEGY, DEFAULT_THRESHOLD, STRATEGIES, PriorTracker, build_strategy
from streamimb.imbalance.threshold import THRESHOLDS, AlertGuard, Decision, build_threshold
from streamimb.registry import build_classifier, parameter_names, river_twin_of_numpy_tree

# Classifier kinds that the per-event path (``batch: false``) replaces by a river model (the numpy tree
# learns a single row much more slowly than river's trees do; see ``river_twin_of_numpy_tree``).
PER_EVENT_TWINS = {"numpy_hoeffding_tree": river_twin_of_numpy_tree}
OTHER_CLASS = "other"  # the class of labels beyond ``ModelConfig.max_classes``

log = logging.getLogger(__name__)


class SupervisedModel:
    """Classifier, class priors, threshold policy, alert guard and classes, learned from labelled rows.

    Parameters
    ----------
    config
        The model section of the configuration.
    positive
        The rare class to flag. ``None``: multi-class argmax, or (binary) the rarer class once
        ``min_positive_labels`` labels of each of two classes have been counted.
    classes
        Known classes, if any; more are added as labels arrive, up to ``config.max_classes``: labels of
        further classes are counted as ``"other"`` (a warning is logged once), so that the model state and
        the metric series stay bounded.

    ``version`` counts the learning steps: a verdict scored by version ``v`` was scored by the model that had
    learned ``n_learned`` labels at that version.
    """

    _warned_classes = False  # the "too many classes" warning was logged
    _share_priors = True  # class switch (tests compare against separate trackers)

    def __init__(
        self,
        config: ModelConfig | None = None,
        positive: str | None = None,
        classes: Iterable[str] | None = None,
    ) -> None:
        self.config = config = config or ModelConfig()
        self.positive = positive
        self.classes: list[str] = list(classes or [])
        self.class_counts: dict[str, int] = {}
        self.max_classes = config.max_classes
        self.batch = bool(getattr(config, "batch", False))
        self.threshold_policy = config.threshold.policy or DEFAULT_THRESHOLD
        self.priors = PriorTracker(half_life=config.imbalance.half_life)
        if config.classifier.kind == "portfolio":
            self.strategy_name = config.imbalance.strategy or "per candidate"
            self.classifier = self._build_portfolio()
        else:
            self.strategy_name = config.imbalance.strategy or DEFAULT_STRATEGY
            self.classifier = self._build_strategy()
        self._select_on(positive)
        self.threshold = self._build_threshold(positive)
        self.guard = self._build_guard(positive)
        self.n_learned = 0
        self.version = 0

    # -- scoring and deciding ------------------------------------------------------------------------------
    @property
    def supports_batch(self) -> bool:
        """Whether the classifier scores and learns whole slices (its ``supports_batch``)."""
        return bool(getattr(self.classifier, "supports_batch", False))

    def predict(self, xs: Sequence[dict[str, float]]) -> list[dict[str, float]]:
        """Class probabilities of each row; empty dicts while nothing is learned."""
        if not self.n_learned:
            return [{}] * len(xs)
        if self.supports_batch:
            return list(self.classifier.predict_proba_batch(xs))
        return [self.classifier.predict_proba_one(x) for x in xs]

    def decide(self, probas: Sequence[dict[str, float]], times: Sequence[float | None]) -> list[Decision]:
        """The threshold policy's decisions: (predicted class, alert, reason) per row."""
        return self.threshold.decide_many(probas, times)

    def ready(self) -> bool:
        """``min_positive_labels`` labels of the rare class were counted (counts only grow)."""
        return self.positive is not None and (
            self.class_counts.get(self.positive, 0) >= self.config.min_positive_labels
        )

    # -- labels --------------------------------------------------------------------------------------------
    def fold(self, label: str | None) -> str | None:
        """The label as tracked: a class beyond ``max_classes`` tracked ones counts as ``"other"``.

        >>> model = SupervisedModel(ModelConfig(max_classes=2))
        >>> [model.fold(y) for y in ("a", "b", "a", "c")], model.classes
        (['a', 'b', 'a', 'other'], ['a', 'b'])
        """
        if label is None or label in self.class_counts or label == self.positive or label in self.classes:
            return label
        if len(self.classes) < self.max_classes:
            self.classes.append(label)
            return label
        if not self._warned_classes:
            self._warned_classes = True
            log.warning(
                "more than %d classes: labels of further classes (e.g. %.50r) are counted as %r "
                "(model.max_classes)", self.max_classes, label, OTHER_CLASS,
            )  # fmt: skip
        return OTHER_CLASS

    def count(self, label: str) -> bool:
        """Count a (folded) label; True where it made the rare class known: once both classes of a binary
        stream have ``min_positive_labels`` labels, the rarer one (threshold policy and guard are rebuilt)."""
        if label not in self.class_counts:
            self.class_counts[label] = 0
            if label not in self.classes:
                self.classes.append(label)
        self.class_counts[label] += 1
        if self.positive is not None or len(self.class_counts) != 2:
            return False
        if min(self.class_counts.values()) < max(1, self.config.min_positive_labels):
            return False
        self.positive = min(self.class_counts, key=lambda c: (self.class_counts[c], c))
        self._select_on(self.positive)
        self.threshold = self._build_threshold(self.positive)
        self.guard = self._build_guard(self.positive)
        return True

    def learn(
        self,
        xs: Sequence[dict[str, float]],
        ys: Sequence[str],
        times: Sequence[float | None],
        probas: Sequence[dict[str, float]],
        fixed_at: int = 0,
    ) -> list[tuple[int, list[str]]]:
        """Learn counted labels: prior tracker, threshold policy and alert guard (from ``fixed_at`` on:
        earlier labels belong to those replaced when the rare class became known), classifier. ``probas``:
        what each row was served with. Returns the rows at which the prior tracker saw a class's prevalence
        change, and the classes."""
        changes = [(i, list(changed)) for i, changed in self.priors.update_many(ys, times)]
        self.threshold.update_many(ys[fixed_at:], probas[fixed_at:])
        self.guard.update_many(ys[fixed_at:], probas[fixed_at:])
        if self.supports_batch:
            self.classifier.learn_batch(list(xs), list(ys), list(times))
        else:
            for x, y in zip(xs, ys, strict=True):
                self.classifier.learn_one(x, y)
        self.n_learned += len(ys)
        self.version += 1
        return changes

    # -- construction --------------------------------------------------------------------------------------
    def _can_share_priors(self, factory: Any, params: dict[str, Any], *needs: str) -> bool:
        """Whether the tracker ``factory(**params)`` would build equals ``self.priors`` in every update.

        Both count the same labels in the same order (the model updates its tracker before the threshold and
        the classifier learn), with the same half-life and no time-based decay.
        """
        if factory is None or not self._share_priors:
            return False
        try:
            signature = inspect.signature(factory).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
            return False
        if not {"tracker", "half_life", *needs} <= signature.keys():
            return False
        if {"tracker", "update_tracker", "time_based"} & params.keys():
            return False
        time_based = signature.get("time_based")
        if time_based is not None and time_based.default is not False:
            return False
        return params.get("half_life", signature["half_life"].default) == self.priors.half_life

    def _build_strategy(self) -> Any:
        """The configured classifier wrapped in the configured imbalance strategy."""
        config = self.config
        twin = None if self.batch else PER_EVENT_TWINS.get(config.classifier.kind)
        base_classifier = (
            twin(**config.classifier.params)
            if twin is not None
            else build_classifier(config.classifier.kind, **config.classifier.params)
        )
        # The strategy and the threshold policy each track the priors of the same labels; where their own
        # tracker would be identical to this one, they read this one instead (same numbers, one update).
        strategy_params = dict(config.imbalance.params)
        if self._can_share_priors(STRATEGIES.get(self.strategy_name), strategy_params, "update_tracker"):
            strategy_params.update(tracker=self.priors, update_tracker=False)
        if "seed" in parameter_names(STRATEGIES.get(self.strategy_name)):
            strategy_params.setdefault("seed", config.seed)  # same data, same decisions, same alerts
        return build_strategy(self.strategy_name, base_classifier, **strategy_params)

    def _build_portfolio(self) -> Any:
        """The portfolio of candidates (``classifier.kind: portfolio``), each reading this prior tracker;
        an ``imbalance.strategy`` in the config replaces every candidate's own treatment."""
        config = self.config
        params = dict(config.classifier.params)
        params.setdefault("seed", config.seed)
        strategy = config.imbalance.strategy
        shared = self._share_priors and not {"tracker", "update_tracker", "time_based"} & set(
            config.imbalance.params
        )  # a candidate that reads this tracker decays its training priors at the same half-life
        tracker = self.priors if shared else None
        return build_classifier(
            "portfolio",
            **params,
            strategy=strategy,
            strategy_params=dict(config.imbalance.params) if strategy else None,
            tracker=tracker,
        )

    def _select_on(self, positive: str | None) -> None:
        """Tell a portfolio which class its selection ranks (the rarest in its window until known)."""
        if positive is not None and isinstance(self.classifier, Portfolio):
            self.classifier.positive = positive

    def _build_threshold(self, positive: str | None) -> Any:
        """The configured threshold policy; plain argmax while a policy that needs the rare class waits
        for it to be known (it is inferred once both classes have been seen often enough)."""
        policy = self.threshold_policy
        params = dict(self.config.threshold.params)
        if self._can_share_priors(THRESHOLDS.get(policy), params):
            params["tracker"] = self.priors
        try:
            return build_threshold(policy, positive=positive, **params)
        except ValueError:
            if positive is not None:
                raise
            return build_threshold("argmax", positive=None)

    def _build_guard(self, positive: str | None) -> AlertGuard:
        """The guard on classifier alerts (``config.alerts``)."""
        cfg = self.config.alerts
        return AlertGuard(
            positive, cfg.skill_margin, cfg.max_rate, cfg.per_events, cfg.min_positives,
            per_prevalence=cfg.per_prevalence,
        )  # fmt: skip
