"""The common shape of every imbalance strategy: a river classifier wrapping a base classifier.

A strategy tracks the class priors of the labelled stream (`PriorTracker`), changes what the base model
learns from (weights, resampling, synthetic samples), and keeps a decayed record of the class mass it fed
the base model ("training priors"). `predict_proba_one` maps the base model's probabilities from the
training priors back to the current priors (`p(c|x) ∝ q(c|x) · π_c / π'_c`), so every strategy returns
probabilities calibrated to today's prevalence; threshold policies turn them into decisions.

A base classifier with numpy batch forms (``learn_array`` / ``predict_proba_array``, e.g.
`NumpyHoeffdingTree`) is driven through them, one event or a whole batch at a time: the strategy then keeps
the feature columns and class indices, and `predict_proba_batch` / `learn_batch` score and learn a batch
with array operations (sampling weights drawn for the batch at the priors after its labels).
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
import random
from collections.abc import Hashable
from typing import Any

import numpy as np
from river import base, compose, drift, multiclass

from streamimb.classifiers.features import FeatureIndex
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
        self._arrays = self._batch_form and hasattr(classifier, "learn_array")
        self._index = FeatureIndex()
        self._labels: list[Hashable] = []
        self._np_rng = np.random.default_rng(seed)
        self._batch_cache: _BatchScores | None = None

    _batch_form = True  # whether the strategy has an array form (`_row_weights`)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A strategy that changes how one event is learned (``_learn``) without its array form
        (``_row_weights``) learns one event at a time: batches would silently learn the parent's way."""
        super().__init_subclass__(**kwargs)
        if (
            "_learn" in cls.__dict__
            and "_row_weights" not in cls.__dict__
            and "_batch_form" not in cls.__dict__
        ):
            cls._batch_form = False

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
        if self._arrays:
            return dict(zip(self._labels, self._raw_array(self._index.rows([x]))[0].tolist(), strict=True))
        return self._raw_one(x)

    def _raw_one(self, x: dict) -> dict[Hashable, float]:
        """The base model's probabilities through its dict API (strategies with several models override)."""
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
        if self._arrays:
            self._learn_rows([x], [y], np.array([float(w)]))
        else:
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

    # -- array path ----------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_batch_cache"] = None  # a scored batch's arrays: not state worth a checkpoint
        return state

    @property
    def supports_batch(self) -> bool:
        """Whether `predict_proba_batch` / `learn_batch` work on arrays (the base model has array forms)."""
        return self._arrays

    def _label_indices(self, ys: list[Hashable]) -> np.ndarray:
        labels = self._labels
        for y in ys:
            if y not in labels:
                labels.append(y)
        position = {c: i for i, c in enumerate(labels)}
        return np.array([position[y] for y in ys], dtype=np.intp)

    def _vector(self, values: dict[Hashable, float]) -> np.ndarray:
        return np.array([values.get(c, 0.0) for c in self._labels])

    def _raw_array(self, X: np.ndarray) -> np.ndarray:
        """Mean of the members' normalised class probabilities (members that know nothing are left out)."""
        return self._score_rows(X)[0]

    def _score_rows(self, X: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """``_raw_array``, the leaf each row reached in each member and each member's majority class
        index there (-1 where the leaf has seen nothing)."""
        votes, n = np.zeros((len(X), len(self._labels))), np.zeros((len(X), 1))
        reached, majority = [], []
        for model, votes_now in zip(self.models, self._voters(), strict=True):
            leaves, predicted = model.vote_array(X, votes, n[:, 0], votes_now)
            reached.append(leaves)
            majority.append(predicted)
        return np.divide(votes, n, out=np.zeros_like(votes), where=n > 0), reached, majority

    def _score_batch(self, xs: list[dict]) -> _BatchScores:
        """The members' view of a batch: its rows, raw probabilities, leaves and majority classes, at the
        current versions."""
        X = self._index.rows(xs)
        raw, leaves, majority = self._score_rows(X)
        return _BatchScores(xs, X, raw, leaves, majority, _versions(self.models))

    def predict_proba_batch(self, xs: list[dict]) -> list[dict[Hashable, float]]:
        """`predict_proba_one` for every event of a batch, with one array pass per member."""
        if not self._arrays or self._wrap is None:
            return [self.predict_proba_one(x) for x in xs]
        self._batch_cache = scores = self._score_batch(xs)
        raw = scores.raw
        labels = self._labels
        priors = self.priors()
        if not self.correct:
            out = raw
        else:
            train = self._vector(self.training_priors())
            prior = self._vector(priors)
            if self.calibrate:
                out = self._calibrator.transform_array(raw, prior, train, labels)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    out = np.where(train > 0, raw * prior / train, 0.0)
                total = out.sum(axis=1, keepdims=True)
                out = np.divide(out, total, out=np.zeros_like(out), where=total > 0)
            keep = [j for j, t in enumerate(train.tolist()) if t > 0]
            if len(keep) < len(labels):
                out, labels = out[:, keep], [labels[j] for j in keep]
        empty = ~(out.sum(axis=1) > 0)
        if len(labels) == 2:  # a dict display is much cheaper than dict(zip(...)) per row
            first, second = labels
            rows = [{first: a, second: b} for a, b in out.tolist()]
        else:
            rows = [dict(zip(labels, row, strict=True)) for row in out.tolist()]
        for i in np.flatnonzero(empty).tolist():
            rows[i] = dict(priors)
        return rows

    def learn_batch(self, xs: list[dict], ys: list[Hashable], ts: list[float | None] | None = None) -> None:
        """`learn_one` for every labelled event of a batch, the base model(s) learning it as arrays.

        The priors are updated event by event; the sampling weights and the calibrator's step use the
        priors after the batch.
        """
        if not self._arrays:
            for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
                self.learn_one(x, y, t=None if ts is None else ts[i])
            return
        if not xs:
            return
        self._check_labels(ys[0])
        if self.update_tracker:
            for i, y in enumerate(ys):
                self._last_changes = self._tracker.update(y, None if ts is None else ts[i])
        y_idx = self._label_indices(list(ys))
        self._index.add(xs)
        scores = self._cached_scores(xs)
        self._batch_cache = None
        if scores is None or not scores.valid_for(self.models, len(self._index)):
            # labels of events scored in an earlier batch (late labels): score them with the model as it is
            scores = self._score_batch(xs)
        if self.drift_reset or (self.calibrate and self.correct):
            raw = scores.raw
            priors, train = self._vector(self.priors()), self._vector(self.training_priors())
            if raw.shape[1] < len(self._labels):
                raw = np.hstack([raw, np.zeros((len(raw), len(self._labels) - raw.shape[1]))])
            if self.calibrate and self.correct and raw.any():
                self._calibrator.learn_array(raw, priors, train, y_idx, self._labels)
            if self.drift_reset:
                for row, y in zip(raw.tolist(), ys, strict=True):
                    self._watch_errors(dict(zip(self._labels, row, strict=True)), y)
        replace = self._drifted_members(scores, y_idx)
        self._learn_rows(xs, list(ys), np.ones(len(xs)), y_idx, scores)
        self._replace_members(replace)

    def _voters(self) -> list[bool]:
        """Which members' probabilities count (ensembles leave out members too young to vote)."""
        return [True] * len(self.models)

    def _drifted_members(self, scores: _BatchScores, y: np.ndarray) -> list[int]:
        """Members whose errors on this scored batch show concept drift (ensembles override)."""
        return []

    def _replace_members(self, members: list[int]) -> None:
        """Start these members afresh (ensembles override)."""

    def _cached_scores(self, xs: list[dict]) -> _BatchScores | None:
        """What `predict_proba_batch` computed for these very events, in their order (None if not all)."""
        cache = self._batch_cache
        if cache is None:
            return None
        if len(xs) == len(cache.xs) and all(map(operator.is_, xs, cache.xs)):  # the whole batch, in order
            return cache
        found = [cache.position.get(id(x)) for x in xs]
        if None in found:
            return None
        return cache.take(np.asarray(found, dtype=np.intp))

    def _learn_rows(
        self,
        xs: list[dict],
        ys: list[Hashable],
        w: np.ndarray,
        y_idx: np.ndarray | None = None,
        scores: _BatchScores | None = None,
    ) -> None:
        """Train the member(s) on a batch with the strategy's weights, and record the mass fed."""
        if scores is None:
            X, leaves = self._index.rows(xs, grow=True), [None] * len(self.models)
        else:
            X, leaves = scores.X, scores.leaves
        if y_idx is None:
            y_idx = self._label_indices(ys)
        weights, fed = self._row_weights(y_idx, w)
        for model, row_weights, reached in zip(self.models, weights, leaves, strict=True):
            model.learn_array(X, y_idx, row_weights, reached)
            self.n_fits += int(np.count_nonzero(row_weights))
        self._record_fed_rows(y_idx, fed)

    def _row_weights(self, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights of each row for each member (members x rows) and the class mass each row feeds."""
        return w[None, :], w

    def _label_rates(self, rates: dict[Hashable, float], y: np.ndarray) -> np.ndarray:
        """A per-class rate for each row (1 for a class without one)."""
        return np.array([rates.get(c, 1.0) for c in self._labels])[y]

    def _record_fed_rows(self, y: np.ndarray, mass: np.ndarray) -> None:
        """`_record_fed` row after row, at once: row i's mass decays over the rows after it."""
        n = len(y)
        d = self._fed_decay
        decayed = mass * d ** np.arange(n - 1, -1, -1, dtype=np.float64)
        sums = np.bincount(y, weights=decayed, minlength=len(self._labels))
        scale = d**n
        for c in self._fed:
            self._fed[c] *= scale
        for j in np.flatnonzero(np.bincount(y, minlength=len(self._labels))).tolist():
            c = self._labels[j]
            self._fed[c] = self._fed.get(c, 0.0) + float(sums[j])


class _BatchScores:
    """What scoring a batch computed (rows, raw probabilities, leaves per member), kept for its learning."""

    def __init__(
        self,
        xs: list[dict],
        X: np.ndarray,
        raw: np.ndarray,
        leaves: list[np.ndarray],
        majority: list[np.ndarray],
        versions: list[tuple[int, int]],
    ) -> None:
        self.xs = xs  # held, so that the ids in `position` stay theirs
        self.X = X
        self.raw = raw
        self.leaves = leaves
        self.majority = majority
        self.versions = versions

    @functools.cached_property
    def position(self) -> dict[int, int]:
        """Row of each event of the batch, by the id of its feature dict."""
        return {id(x): i for i, x in enumerate(self.xs)}

    def take(self, rows: np.ndarray) -> _BatchScores:
        """The same scores for a subset of the rows, in the order given."""
        if len(rows) == len(self.X) and np.array_equal(rows, np.arange(len(rows))):
            return self
        leaves = [lv[rows] for lv in self.leaves]
        majority = [m[rows] for m in self.majority]
        return _BatchScores(
            [self.xs[i] for i in rows.tolist()], self.X[rows], self.raw[rows], leaves, majority, self.versions
        )

    def valid_for(self, models: list[Any], n_features: int) -> bool:
        """Whether the leaves still hold: same members, none has learned since, no new feature."""
        return self.X.shape[1] == n_features and self.versions == _versions(models)


def _versions(models: list[Any]) -> list[tuple[int, int]]:
    """Which members, at which learning step: leaves computed at these versions are still valid."""
    return [(id(m), m.version) for m in models]
