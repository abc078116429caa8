"""The common shape of every imbalance strategy: a river classifier wrapping a base classifier.

A strategy tracks the class priors of the labelled stream (`PriorTracker`), changes what the base model
learns from (weights, resampling, synthetic samples), and keeps a decayed record of the class mass it fed
the base model ("training priors"). `predict_proba_one` maps the base model's probabilities from the
training priors back to the current priors (`p(c|x) ∝ q(c|x) · π_c / π'_c`), so every strategy returns
probabilities calibrated to today's prevalence; threshold policies turn them into decisions.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Hashable
from typing import Any

from river import base, compose, drift, multiclass

from streamimb.imbalance.calibration import PriorShiftCalibrator
from streamimb.imbalance.priors import PriorTracker

__all__ = ["ImbalanceStrategy", "accepts_weight", "correct_priors", "learn_weighted"]


def accepts_weight(model: Any) -> bool:
    """Whether `model.learn_one` takes a sample weight `w` (looking through pipelines and one-vs-rest).

    >>> from river import linear_model, naive_bayes, preprocessing, tree
    >>> accepts_weight(tree.HoeffdingTreeClassifier())
    True
    >>> accepts_weight(preprocessing.StandardScaler() | linear_model.LogisticRegression())
    True
    >>> accepts_weight(naive_bayes.GaussianNB())
    False
    """
    if isinstance(model, compose.Pipeline):
        return accepts_weight(list(model.steps.values())[-1])
    if isinstance(model, multiclass.OneVsRestClassifier):
        return accepts_weight(model.classifier)
    try:
        params = inspect.signature(model.learn_one).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False
    return "w" in params


def learn_weighted(model: Any, x: dict, y: Hashable, w: float, use_w: bool, rng: random.Random) -> int:
    """Train `model` on (x, y) with weight `w`; return how many `learn_one` calls that took.

    With `use_w` the weight is passed as `w`. Otherwise the example is replicated `floor(w)` times plus
    once more with probability `w - floor(w)` (unbiased in expectation).
    """
    if w <= 0.0:
        return 0
    if use_w:
        model.learn_one(x, y, w=w)
        return 1
    k = int(w)
    if rng.random() < w - k:
        k += 1
    for _ in range(k):
        model.learn_one(x, y)
    return k


def correct_priors(
    proba: dict[Hashable, float], priors: dict[Hashable, float], train: dict[Hashable, float]
) -> dict[Hashable, float]:
    """Re-express probabilities learned under `train` priors for the current `priors`.

    Classes the model never saw keep probability 0; an empty or all-zero input gives the priors.

    >>> out = correct_priors({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}, {"a": 0.5, "b": 0.5})
    >>> {c: round(p, 2) for c, p in out.items()}
    {'a': 0.9, 'b': 0.1}
    """
    out: dict[Hashable, float] = {}
    for c, q in proba.items():
        t = train.get(c, 0.0)
        out[c] = q * priors.get(c, 0.0) / t if t > 0.0 else 0.0
    total = sum(out.values())
    if total <= 0.0 or not math.isfinite(total):
        return dict(priors) if priors else dict(proba)
    return {c: v / total for c, v in out.items()}


class ImbalanceStrategy(base.Wrapper, base.Classifier):
    """Base class: prior tracking, training-prior bookkeeping, prior-corrected probabilities.

    Parameters
    ----------
    classifier
        Any river classifier. Binary-only ones (e.g. `LogisticRegression`) are wrapped in
        `OneVsRestClassifier` automatically when the labels are not booleans.
    half_life
        Half-life of the prior tracker (labelled events, or event time with `time_based`).
    time_based
        Decay priors by event time `t` (pass `t` to `learn_one`).
    tracker
        A `PriorTracker` to use instead of building one (e.g. shared with the caller).
    update_tracker
        Whether `learn_one` feeds the tracker (set False when the caller updates a shared one).
    correct
        Map the base model's probabilities from its training priors to the current priors.
    drift_reset
        Watch each class's error rate (balanced decisions of the base model, one ADWIN per class) and
        replace the base model(s) with fresh ones when a model that was stable stops working: ADWIN
        detects a change in a class's error rate after a window of at least 300 examples of that class,
        and the rate rose by 0.1 or more; no sooner than 1,000 labels after the previous start.
        Class-conditional error rates do not move under a pure prevalence shift, only under concept drift.
    drift_delta
        ADWIN confidence for `drift_reset`.
    calibrate
        Learn a temperature and class offsets on top of the prior correction (`PriorShiftCalibrator`);
        only used with `correct`.
    seed
        Seed for every random draw the strategy makes.
    """

    def __init__(
        self,
        classifier: base.Classifier,
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
        self.classifier = classifier
        self.half_life = half_life
        self.time_based = time_based
        self.tracker = tracker
        self.update_tracker = update_tracker
        self.correct = correct
        self.drift_reset = drift_reset
        self.drift_delta = drift_delta
        self.calibrate = calibrate
        self.seed = seed
        self._calibrator = PriorShiftCalibrator()
        self._tracker = tracker if tracker is not None else PriorTracker(half_life, time_based)
        self._rng = random.Random(seed)
        self._fed: dict[Hashable, float] = {}
        self._fed_decay = 2.0 ** (-1.0 / half_life)
        self._wrap: bool | None = None
        self._use_w = accepts_weight(classifier)
        self._last_changes: list[Hashable] = []
        self._errors: dict[Hashable, drift.ADWIN] = {}
        self._cache: tuple[dict, dict] | None = None
        self._resets: list[int] = []
        self._trained_since = 0
        self.n_fits = 0

    # -- river plumbing ------------------------------------------------------------------------------
    @property
    def _wrapped_model(self) -> base.Classifier:
        return self.classifier

    @property
    def _multiclass(self) -> bool:
        return True

    @classmethod
    def _unit_test_params(cls):  # pragma: no cover - river's check suite
        from river import tree

        yield {"classifier": tree.HoeffdingTreeClassifier()}

    def _new_member(self, index: int = 0) -> base.Classifier:
        """A fresh copy of the base classifier (seeded per member when it takes a seed)."""
        params = {}
        if "seed" in self.classifier._get_params() and self.seed is not None:
            params["seed"] = self.seed * 1000 + index
        model = self.classifier.clone(params)
        if self._wrap:
            model = multiclass.OneVsRestClassifier(model)
        return model

    def _check_labels(self, y: Hashable) -> None:
        if self._wrap is None:
            self._wrap = not self.classifier._multiclass and not isinstance(y, bool)
            self._init_models()

    def _init_models(self) -> None:
        """Build the base models once the label type is known (subclasses override)."""
        self._model = self._new_member()

    # -- reading -------------------------------------------------------------------------------------
    @property
    def prior_tracker(self) -> PriorTracker:
        """The tracker behind `priors()`."""
        return self._tracker

    def priors(self) -> dict[Hashable, float]:
        """Current class-prevalence estimates."""
        return self._tracker.priors()

    def training_priors(self) -> dict[Hashable, float]:
        """Decayed class distribution of what the base model was trained on."""
        total = sum(self._fed.values())
        return {c: v / total for c, v in self._fed.items()} if total > 0 else {}

    @property
    def models(self) -> list[base.Classifier]:
        """The fitted base model(s) (empty before the first label)."""
        return [] if self._wrap is None else [self._model]

    @property
    def resets(self) -> list[int]:
        """Labelled-event counts at which concept drift replaced the base model(s)."""
        return list(self._resets)

    @property
    def last_changes(self) -> list[Hashable]:
        """Classes whose prevalence change was detected on the last `learn_one`."""
        return list(self._last_changes)

    def predict_proba_raw(self, x: dict) -> dict[Hashable, float]:
        """The base model's probabilities, under its training priors."""
        if self._wrap is None:
            return {}
        return self._model.predict_proba_one(x)

    def predict_proba_one(self, x: dict, **kwargs: Any) -> dict[Hashable, float]:
        raw = self.predict_proba_raw(x)
        self._cache = (x, raw)
        priors = self.priors()
        if not raw:
            return priors
        if not self.correct:
            return raw
        if self.calibrate:
            return self._calibrator.transform(raw, priors, self.training_priors()) or priors
        return correct_priors(raw, priors, self.training_priors())

    def _cached_raw(self, x: dict) -> dict[Hashable, float]:
        """The raw probabilities `predict_proba_one` just computed for this very `x`, or fresh ones."""
        cache, self._cache = self._cache, None
        return cache[1] if cache is not None and cache[0] is x else self.predict_proba_raw(x)

    # -- learning ------------------------------------------------------------------------------------
    def _record_fed(self, mass: dict[Hashable, float]) -> None:
        d = self._fed_decay
        for c in self._fed:
            self._fed[c] *= d
        for c, m in mass.items():
            self._fed[c] = self._fed.get(c, 0.0) + m

    def learn_one(self, x: dict, y: Hashable, w: float = 1.0, t: float | None = None, **kwargs: Any) -> None:
        """Update priors with `y` (at event time `t`), then train the base model the strategy's way."""
        self._check_labels(y)
        if self.update_tracker:
            self._last_changes = self._tracker.update(y, t)
        if self.drift_reset or (self.calibrate and self.correct):
            raw = self._cached_raw(x)
            if self.calibrate and self.correct and raw:
                self._calibrator.learn(raw, self.priors(), self.training_priors(), y)
            if self.drift_reset:
                self._watch_errors(raw, y)
        self._cache = None
        self._learn(x, y, w)

    def _watch_errors(self, raw: dict[Hashable, float], y: Hashable) -> None:
        """Feed the per-class error detectors; reset the model(s) when one error rate rises."""
        train = self.training_priors()
        if not raw or y not in train:
            return
        balanced = {c: q / train[c] for c, q in raw.items() if train.get(c, 0.0) > 0.0}
        if not balanced:
            return
        wrong = float(max(balanced, key=lambda c: (balanced[c], str(c))) != y)
        detector = self._errors.get(y)
        if detector is None:
            detector = self._errors[y] = drift.ADWIN(delta=self.drift_delta)
        before, width = detector.estimation, detector.width
        detector.update(wrong)
        if (
            detector.drift_detected
            and width >= 300
            and detector.estimation >= before + 0.1
            and self._tracker.n_labelled - self._trained_since >= 1000
        ):
            self._reset()

    def _reset(self) -> None:
        """Start the base model(s) afresh (concept drift); priors are kept."""
        self._resets.append(self._tracker.n_labelled)
        self._trained_since = self._tracker.n_labelled
        self._errors.clear()
        self._fed.clear()
        self._calibrator = PriorShiftCalibrator()
        self._init_models()
        self._on_reset()

    def _on_reset(self) -> None:
        """Hook for subclasses that keep example buffers."""

    def _learn(self, x: dict, y: Hashable, w: float) -> None:
        """Train the base model on one labelled example (subclasses override)."""
        self.n_fits += learn_weighted(self._model, x, y, w, self._use_w, self._rng)
        self._record_fed({y: w})
