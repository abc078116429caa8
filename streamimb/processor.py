"""The Processor: the whole detection logic for one stream (or one partition), with no I/O.

For each event, in this order (test-then-train):

1. features are extracted;
2. every anomaly detector scores the event, the scores are calibrated into p-values and an alert decision;
3. the imbalance-aware classifier gives class probabilities, the threshold policy a decision;
4. the detectors learn the event (unsupervised), and drift monitors watch the anomaly score;
5. when the label is known (now, or later through ``learn_one``), the evaluator records the outcome, the
   prior tracker, threshold policy and classifier learn, and drift monitors watch the error and prevalence.

The Processor is picklable: a checkpoint is a pickle of it.

Batch mode (``ModelConfig.batch``, on by default): :meth:`Processor.process_many` takes a whole poll batch.
Detectors that have batch forms (``numpy_half_space_trees``, which batch mode uses in place of river's
``half_space_trees``: same trees, same scores) score and learn the batch as one array, test-then-train row by
row, so their scores are those of the per-event path. A classifier with batch forms (``supports_batch``: the
imbalance strategies over the default ``numpy_hoeffding_tree``) scores the whole batch before it learns the
batch's labels, so within a batch an event is not scored by a model that has learned the events just before
it; its sampling weights are drawn at the priors after the batch. Once the rare class is known the threshold
policy also decides the batch at the priors and threshold of its start, then learns the batch's labels at
once (the prior tracker label by label); anomaly p-values, alert budgets, decision mode, metrics and drift
monitors stay event by event in the order of :meth:`Processor.process_one`. Late labels joined in one poll
batch are learned together (:meth:`Processor.learn_many`). A classifier without batch forms runs every step
event by event, with the results of ``process_one``.
With ``batch: false`` every event goes through :meth:`Processor.process_one` with river's models (river's
half-space trees, and river's Hoeffding adaptive tree in place of ``numpy_hoeffding_tree``).

>>> from streamimb.config import ModelConfig
>>> from streamimb.events import Event
>>> p = Processor(ModelConfig(), positive="1", classes=["0", "1"])
>>> verdict, drifts = p.process_one(Event(id="a", time=None, features={"x": 1.0}, label="0"))
>>> verdict.event_id, verdict.alert, p.n_events, p.n_learned
('a', False, 1, 1)
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from river import base

from streamimb.classifiers.portfolio import Portfolio
from streamimb.config import ModelConfig
from streamimb.detectors.calibration import ScoreCalibrator
from streamimb.detectors.drift import DriftMonitor
from streamimb.evaluation.prequential import PrequentialEvaluator
from streamimb.events import DriftEvent, Event, Verdict
from streamimb.features import FeatureExtractor
from streamimb.imbalance import DEFAULT_STRATEGY, DEFAULT_THRESHOLD, STRATEGIES, PriorTracker, build_strategy
from streamimb.imbalance.threshold import THRESHOLDS, AlertGuard, build_threshold
from streamimb.registry import (
    DETECTORS,
    build_classifier,
    build_detector,
    parameter_names,
    river_twin_of_numpy_tree,
)

# Detector kinds that batch mode replaces by a vectorised twin giving the same scores.
BATCH_TWINS = {"half_space_trees": "numpy_half_space_trees"}
# Classifier kinds that the per-event path (``batch: false``) replaces by a river model (the numpy tree
# learns a single row much more slowly than river's trees do; see ``river_twin_of_numpy_tree``).
PER_EVENT_TWINS = {"numpy_hoeffding_tree": river_twin_of_numpy_tree}
WARMUP_SLICE = 32  # smallest slice a young batch classifier learns from (see Processor.process_many)
OTHER_CLASS = "other"  # the class of labels beyond ``ModelConfig.max_classes``

log = logging.getLogger(__name__)


class Processor:
    """Scores, decides and learns; see the module docstring for the order of operations.

    Parameters
    ----------
    config
        The model section of the configuration.
    positive
        The rare class to flag. ``None``: multi-class argmax, or (binary) the rarer class once
        ``min_positive_labels`` labels of each of two classes have been seen.
    classes
        Known classes, if any; more are added as labels arrive, up to ``config.max_classes``: labels of
        further classes are counted as ``"other"`` (a warning is logged once), so that the model state and
        the metric series stay bounded.
    max_categories
        Distinct values kept per categorical feature.

    Classifier alerts pass an :class:`~streamimb.imbalance.threshold.AlertGuard` (``config.alerts``): none
    while the served score shows no skill, and at most ``max_rate`` of the events; the alerts it withholds are
    counted by reason in ``alerts_suppressed``.
    """

    _warned_classes = False  # the "too many classes" warning was logged

    def __init__(
        self,
        config: ModelConfig | None = None,
        positive: str | None = None,
        classes: Iterable[str] | None = None,
        max_categories: int = 64,
    ) -> None:
        self.config = config = config or ModelConfig()
        self.positive = positive
        self.classes: list[str] = list(classes or [])
        self.features = FeatureExtractor(max_categories=max_categories)
        self.detectors: dict[str, base.AnomalyDetector] = {}
        self.detector_calibrators: dict[str, ScoreCalibrator] = {}
        self.batch = bool(getattr(config, "batch", False))
        for i, d in enumerate(config.detectors):
            name = d.kind if d.kind not in self.detectors else f"{d.kind}_{i}"
            params = (
                {"seed": config.seed + i, **d.params}
                if "seed" in parameter_names(DETECTORS.get(d.kind))
                else dict(d.params)
            )
            kind = BATCH_TWINS.get(d.kind, d.kind) if self.batch else d.kind
            self.detectors[name] = build_detector(kind, **params)
            self.detector_calibrators[name] = ScoreCalibrator(
                kind="quantile", window=config.calibration.window, warmup=0
            )
        cal = config.calibration
        self.calibrator = ScoreCalibrator(
            kind=cal.kind,
            quantile=cal.quantile,
            alerts=cal.alerts,
            per_events=cal.per_events,
            window=cal.window,
            warmup=cal.warmup,
        )
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
        self.max_classes = config.max_classes
        self.guard = self._build_guard(positive)
        self.alerts_suppressed = dict.fromkeys(AlertGuard.REASONS, 0)
        drift = config.drift
        self.score_monitor = (
            DriftMonitor("score", drift.detector, drift.min_gap, drift.score_block, **drift.params)
            if drift.on_score
            else None
        )
        self.error_monitor = (
            DriftMonitor("error", drift.detector, drift.min_gap, **drift.params) if drift.on_error else None
        )
        self.feature_monitors = {
            f: DriftMonitor(f"feature:{f}", drift.detector, drift.min_gap, **drift.params)
            for f in drift.features
        }
        ev = config.evaluation
        self.evaluator = PrequentialEvaluator(ev.rolling_window, ev.keep_history, ev.max_history)
        self.drifts: list[DriftEvent] = []
        self.class_counts: dict[str, int] = {}
        self.n_events = 0
        self.n_learned = 0
        self.n_alerts = 0

    def _can_share_priors(self, factory: Any, params: dict[str, Any], *needs: str) -> bool:
        """Whether the tracker ``factory(**params)`` would build equals ``self.priors`` in every update.

        Both count the same labels in the same order (the Processor updates its tracker before the threshold
        and the classifier learn), with the same half-life and no time-based decay.
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

    _share_priors = True  # class switch (tests compare against separate trackers)

    # -- scoring -------------------------------------------------------------------------------------------
    def score_one(self, event: Event) -> Verdict:
        """Score and decide with the models as they are; learns nothing."""
        x = self.features.transform_one(event.features)
        raw_scores = {name: float(detector.score_one(x)) for name, detector in self.detectors.items()}
        return self._verdict(event, x, raw_scores)

    def _verdict(self, event: Event, x: dict[str, float], raw_scores: dict[str, float]) -> Verdict:
        """The verdict on an event from its detector scores (classifier and threshold applied here)."""
        proba = self.classifier.predict_proba_one(x) if self.n_learned else {}
        return self._decide(event, x, raw_scores, self._combine(raw_scores), proba)

    def _combine(self, raw_scores: dict[str, float]) -> float:
        """One detector: its score; several: -log10 of their smallest p-value, Bonferroni-corrected."""
        n_detectors = len(raw_scores)
        if n_detectors == 1:
            return next(iter(raw_scores.values()))
        if not n_detectors:
            return 0.0
        calibrators = self.detector_calibrators
        min_p = min(calibrators[name].p_value(s) for name, s in raw_scores.items())
        return -math.log10(min(min_p, 1.0) * n_detectors)

    def _decide(
        self,
        event: Event,
        x: dict[str, float],
        raw_scores: dict[str, float],
        anomaly_score: float,
        proba: dict[str, float],
    ) -> Verdict:
        predicted, classifier_alert, reason = (None, False, "")
        if proba:
            predicted, classifier_alert, reason = self.threshold.decide(proba, event.time)
        if not classifier_alert:
            reason = ""  # an anomaly alert gets its reason once decided (`_apply_decision_mode`)
        return Verdict(
            event_id=event.id,
            index=self.n_events,
            time=event.time,
            anomaly_score=anomaly_score,
            anomaly_alert=False,  # decided in observe_one, where the calibrator's budget is spent
            proba=proba,
            predicted=predicted,
            classifier_alert=classifier_alert,
            reason=reason,
            scores=raw_scores,
            x=x,
        )

    def observe_one(self, verdict: Verdict, label: str | None = None) -> list[DriftEvent]:
        """The unsupervised half of learning: decide on the anomaly, update detectors and monitors."""
        learn = not (
            self.config.learn_detectors_on == "negatives" and label is not None and label == self.positive
        )
        if learn:
            for detector in self.detectors.values():
                detector.learn_one(verdict.x)
        return self._observe(verdict)

    def _observe(self, verdict: Verdict, anomaly_alert: bool | None = None) -> list[DriftEvent]:
        """``observe_one`` less the detectors' learning (done already, or batch-wise).

        ``anomaly_alert``: the calibrator's decision when the caller has updated it already.
        """
        self._settle(verdict, anomaly_alert)
        drifts: list[DriftEvent] = []
        if self.score_monitor is not None:
            self._record(
                self.score_monitor.update(verdict.anomaly_score, verdict.index, verdict.time), drifts
            )
        for name, monitor in self.feature_monitors.items():
            value = verdict.x.get(name)
            if value is not None:
                self._record(monitor.update(value, verdict.index, verdict.time), drifts)
        self.n_events += 1
        return drifts

    def _settle(self, verdict: Verdict, anomaly_alert: bool | None) -> None:
        """The verdict's anomaly decision and decision mode; the per-detector calibrators learn its scores."""
        if anomaly_alert is None:
            _, anomaly_alert = self.calibrator.update(verdict.anomaly_score)
        verdict.anomaly_alert = anomaly_alert
        self._apply_decision_mode(verdict)
        if verdict.anomaly_alert or verdict.classifier_alert:
            self.n_alerts += 1
        if len(verdict.scores) > 1:  # per-detector p-values only combine several detectors
            calibrators = self.detector_calibrators
            for name, score in verdict.scores.items():
                calibrators[name].update(score)

    def _watch_signals(self, verdicts: list[Verdict]) -> list[DriftEvent]:
        """The score and feature monitors over a batch's verdicts (the part of ``_observe`` they do), with
        the drifts kept in the order ``_observe`` event by event would keep them."""
        found: list[tuple[int, int, DriftEvent]] = []
        indices, times = [v.index for v in verdicts], [v.time for v in verdicts]
        if self.score_monitor is not None:
            scores = [v.anomaly_score for v in verdicts]
            found += [(d.index, 0, d) for d in self.score_monitor.update_many(scores, indices, times)]
        for k, (name, monitor) in enumerate(self.feature_monitors.items(), start=1):
            present = [(v.x[name], v.index, v.time) for v in verdicts if v.x.get(name) is not None]
            if present:
                found += [(d.index, k, d) for d in monitor.update_many(*zip(*present, strict=True))]
        found.sort(key=lambda f: f[:2])
        return [self._keep(d) for _, _, d in found]

    def _apply_decision_mode(self, verdict: Verdict) -> None:
        mode = self._decision_mode()
        if mode == "classifier":
            verdict.anomaly_alert = False
        elif mode == "anomaly" and verdict.classifier_alert:
            if self.config.decision == "auto" and self._classifier_ready():
                self.alerts_suppressed["no_skill"] += 1  # the classifier would alert; its score has no skill
            verdict.classifier_alert = False
            verdict.reason = ""
        if verdict.classifier_alert:
            self._guard(verdict)
        if verdict.anomaly_alert and not verdict.classifier_alert:
            verdict.reason = f"anomaly score {verdict.anomaly_score:.4g} above calibrated threshold"

    def _guard(self, verdict: Verdict) -> None:
        """Withhold the verdict's classifier alert where the AlertGuard says so, and count why."""
        withheld = self.guard.check(verdict.index)
        if withheld:
            verdict.classifier_alert = False
            verdict.reason = ""
            self.alerts_suppressed[withheld] += 1

    # -- learning ------------------------------------------------------------------------------------------
    def _fold(self, label: str | None) -> str | None:
        """The label as tracked: a class beyond ``max_classes`` tracked ones counts as ``"other"``.

        >>> p = Processor(ModelConfig(max_classes=2))
        >>> [p._fold(y) for y in ("a", "b", "a", "c")], p.classes
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

    def _folded(self, event: Event) -> Event:
        label = self._fold(event.label)
        return event if label == event.label else dataclasses.replace(event, label=label)

    def learn_one(self, verdict: Verdict, label: str) -> list[DriftEvent]:
        """The supervised half: the label of an event scored earlier (now, or late through a LabelJoiner)."""
        label = self._fold(label)
        drifts = self._learn_label(verdict, label)
        self.classifier.learn_one(verdict.x, label)
        return drifts

    @property
    def _batch_classifier(self) -> bool:
        """Whether the classifier scores and learns whole batches (``supports_batch``)."""
        return bool(getattr(self.classifier, "supports_batch", False))

    def learn_many(self, labelled: Sequence[tuple[Verdict, str]]) -> list[DriftEvent]:
        """``learn_one`` over late labels; a classifier with batch forms learns them as one batch."""
        if not self._batch_classifier:
            return [drift for verdict, label in labelled for drift in self.learn_one(verdict, label)]
        labelled = [(verdict, self._fold(label)) for verdict, label in labelled]
        drifts: list[DriftEvent] = []
        for verdict, label in labelled:
            drifts += self._learn_label(verdict, label)
        if labelled:
            self.classifier.learn_batch(
                [v.x for v, _ in labelled], [y for _, y in labelled], [v.time for v, _ in labelled]
            )
        return drifts

    def _count(self, label: str, n: int = 1) -> None:
        if label not in self.class_counts:
            self.class_counts[label] = 0
            if label not in self.classes:
                self.classes.append(label)
        self.class_counts[label] += n

    def _decision_mode(self) -> str:
        """The decision mode in force: "auto" is "anomaly" until ``min_positive_labels`` labels of the rare
        class were counted and the alert guard has measured skill in the classifier's score, "classifier"
        while it has (the anomaly detectors keep alerting while the classifier has none)."""
        mode = self.config.decision
        if mode != "auto":
            return mode
        return "classifier" if self._classifier_ready() and self.guard.skilled else "anomaly"

    def _classifier_ready(self) -> bool:
        """``min_positive_labels`` labels of the rare class were counted (counts only grow)."""
        return self.positive is not None and (
            self.class_counts.get(self.positive, 0) >= self.config.min_positive_labels
        )

    def _learn_label(self, verdict: Verdict, label: str) -> list[DriftEvent]:
        """``learn_one`` less the classifier's update: counts, metrics, monitors, priors, threshold."""
        drifts: list[DriftEvent] = []
        self._count(label)
        if self.positive is None:
            self._maybe_fix_positive()
        self.evaluator.update(
            verdict.index, label, verdict.predicted, verdict.alert, verdict.proba, verdict.anomaly_score
        )
        if self.error_monitor is not None and verdict.predicted is not None:
            error = 0.0 if verdict.predicted == label else 1.0
            self._record(self.error_monitor.update(error, verdict.index, verdict.time), drifts)
        for cls in self.priors.update(label, verdict.time) or ():
            drifts.append(
                self._keep(DriftEvent(verdict.index, f"prevalence:{cls}", "prior_tracker", verdict.time))
            )
        self.threshold.update(label, verdict.proba)
        self.guard.update(label, verdict.proba)
        self.n_learned += 1
        return drifts

    def process_one(self, event: Event) -> tuple[Verdict, list[DriftEvent]]:
        """Score, observe, and learn the event's own label if it carries one."""
        event = self._folded(event)
        verdict = self.score_one(event)
        drifts = self.observe_one(verdict, event.label)
        if event.label is not None:
            drifts += self.learn_one(verdict, event.label)
        return verdict, drifts

    def process_many(self, events: Sequence[Event]) -> tuple[list[Verdict], list[DriftEvent]]:
        """``process_one`` over a batch, in order: the verdicts (one per event) and the drifts raised.

        In batch mode the detectors score and learn the whole batch at once (same scores); a classifier with
        batch forms scores the batch before learning it (see the module docstring). Otherwise, and when the
        detectors' learning depends on a positive class not known yet, it is ``process_one`` on each event.
        """
        events = [self._folded(e) for e in events]
        verdicts: list[Verdict] = []
        drifts: list[DriftEvent] = []
        negatives_only = self.config.learn_detectors_on == "negatives"
        if not self.batch or (negatives_only and self.positive is None):
            for event in events:
                verdict, raised = self.process_one(event)
                verdicts.append(verdict)
                drifts += raised
            return verdicts, drifts
        if not events:
            return verdicts, drifts
        if self._batch_classifier and any(e.label is not None for e in events):
            # A young batch classifier learns the batch's labels in smaller slices first (`batch_slice`).
            start = 0
            while start < len(events) and (size := self._slice(len(events))) < len(events):
                got, raised = self._process_batch(events[start : start + size])
                verdicts += got
                drifts += raised
                start += size
            events = events[start:]
            if not events:
                return verdicts, drifts
        got, raised = self._process_batch(events)
        return verdicts + got, drifts + raised

    def _slice(self, batch: int) -> int:
        """Events of a labelled batch to score before learning: `batch_slice`, at most ``learn_slice``."""
        return min(batch_slice(self.n_learned, batch), getattr(self.config, "learn_slice", batch))

    def _process_batch(self, events: list[Event]) -> tuple[list[Verdict], list[DriftEvent]]:
        """``process_many``'s batch path over one slice of the batch."""
        if self._batch_classifier and self.positive is not None:
            return self._process_columns(events)
        verdicts: list[Verdict] = []
        drifts: list[DriftEvent] = []
        xs, columns = self._score_detectors(events)
        classifier = self.classifier
        batch_classifier = self._batch_classifier
        probas: list[dict] | None = None
        if batch_classifier:
            probas = list(classifier.predict_proba_batch(xs)) if self.n_learned else [{}] * len(xs)
        decide, combine, observe, calibrate = (
            self._decide,
            self._combine,
            self._observe,
            self.calibrator.update,
        )
        learned: list[tuple[dict[str, float], str, float | None]] = []
        for i, event in enumerate(events):
            x = xs[i]
            raw = {name: scores[i] for name, scores in columns}
            if probas is None:
                proba = classifier.predict_proba_one(x) if self.n_learned else {}
            else:
                proba = probas[i]
            score = combine(raw)
            _, anomaly_alert = calibrate(score)  # ranked before it joins the window, as in score_one
            verdict = decide(event, x, raw, score, proba)
            raised = observe(verdict, anomaly_alert)
            label = event.label
            if label is not None:
                raised += self._learn_label(verdict, label)
                if batch_classifier:
                    learned.append((x, label, event.time))
                else:
                    classifier.learn_one(x, label)
            verdicts.append(verdict)
            if raised:
                drifts += raised
        if learned:
            classifier.learn_batch(
                [x for x, _, _ in learned], [y for _, y, _ in learned], [t for _, _, t in learned]
            )
        return verdicts, drifts

    def _score_detectors(self, events: list[Event]) -> tuple[list[dict[str, float]], list[tuple[str, list]]]:
        """The batch's feature dicts and each detector's scores (test-then-train, row by row)."""
        transform = self.features.transform_one
        xs = [transform(e.features) for e in events]
        learn = None
        if self.config.learn_detectors_on == "negatives":
            positive = self.positive
            learn = [e.label is None or e.label != positive for e in events]
        return xs, [(name, score_learn_many(det, xs, learn)) for name, det in self.detectors.items()]

    def _process_columns(self, events: list[Event]) -> tuple[list[Verdict], list[DriftEvent]]:
        """The batch path for a batch classifier once the rare class is known.

        The anomaly side is exact (detectors and calibrators event by event, as ``process_one``); the
        classifier side decides the whole batch as it stands at the batch's start (classifier, priors,
        threshold), then learns its labels at once: counts, metrics and monitors in event order, the prior
        tracker label by label, the threshold policy and the classifier as one batch each.
        """
        n = len(events)
        xs, columns = self._score_detectors(events)
        single = len(columns) == 1
        if single:  # its scores are the anomaly scores: calibrate them all at once (same results)
            name, combined = columns[0]
            raws = [{name: score} for score in combined]
            _, anomaly_alerts = self.calibrator.update_many(combined)
        else:
            raws = [{name: scores[i] for name, scores in columns} for i in range(n)]
        probas = self.classifier.predict_proba_batch(xs) if self.n_learned else [{}] * n
        times = [e.time for e in events]
        decisions = self.threshold.decide_many(probas, times)

        verdicts: list[Verdict] = []
        drifts: list[DriftEvent] = []
        labelled: list[int] = []
        if single and self._decision_mode() == "classifier":  # for the whole batch: no anomaly alerts
            at = self.n_events
            verdicts = [
                Verdict(e.id, at + i, e.time, combined[i], False, probas[i], *decision, raws[i], xs[i])
                for i, (e, decision) in enumerate(zip(events, decisions, strict=True))
            ]  # fmt: skip
            for verdict in verdicts:
                if verdict.classifier_alert:
                    self._guard(verdict)
            self.n_events += n
            self.n_alerts += sum(v.classifier_alert for v in verdicts)
            labelled = [i for i, event in enumerate(events) if event.label is not None]
            for label, seen in Counter(events[i].label for i in labelled).items():
                self._count(label, seen)
        else:
            for i, event in enumerate(events):
                raw = raws[i]
                if single:
                    score, anomaly_alert = combined[i], anomaly_alerts[i]
                else:
                    score = self._combine(raw)
                    _, anomaly_alert = self.calibrator.update(score)
                predicted, classifier_alert, reason = decisions[i]
                verdict = Verdict(
                    event.id, self.n_events, event.time, score, False, probas[i], predicted, classifier_alert,
                    reason, raw, xs[i],
                )  # fmt: skip
                self._settle(verdict, anomaly_alert)
                self.n_events += 1
                if event.label is not None:
                    labelled.append(i)
                    self._count(event.label)  # before the next verdict's decision mode, as in process_one
                verdicts.append(verdict)
        drifts += self._watch_signals(verdicts)
        if labelled:
            drifts += self._learn_columns(
                [verdicts[i] for i in labelled], [events[i].label for i in labelled]
            )
            self.classifier.learn_batch([xs[i] for i in labelled], [events[i].label for i in labelled],
                                        [times[i] for i in labelled])  # fmt: skip
        drifts.sort(key=lambda d: d.index)
        return verdicts, drifts

    def _learn_columns(self, verdicts: list[Verdict], ys: list[str]) -> list[DriftEvent]:
        """``_learn_label`` over a batch's labelled verdicts, with the batch forms (class counts done)."""
        drifts: list[DriftEvent] = []
        probas = [v.proba for v in verdicts]
        self.evaluator.update_many(
            [v.index for v in verdicts], ys, [v.predicted for v in verdicts],
            [v.alert for v in verdicts], probas, [v.anomaly_score for v in verdicts],
        )  # fmt: skip
        if self.error_monitor is not None:
            scored = [(v, y) for v, y in zip(verdicts, ys, strict=True) if v.predicted is not None]
            errors = [0.0 if v.predicted == y else 1.0 for v, y in scored]
            found = self.error_monitor.update_many(
                errors, [v.index for v, _ in scored], [v.time for v, _ in scored]
            )
            drifts += [self._keep(d) for d in found]
        for i, changed in self.priors.update_many(ys, [v.time for v in verdicts]):
            v = verdicts[i]
            drifts += [
                self._keep(DriftEvent(v.index, f"prevalence:{c}", "prior_tracker", v.time)) for c in changed
            ]
        self.threshold.update_many(ys, probas)
        self.guard.update_many(ys, probas)
        self.n_learned += len(ys)
        return drifts

    def _maybe_fix_positive(self) -> None:
        if self.positive is not None or len(self.class_counts) != 2:
            return
        if min(self.class_counts.values()) >= max(1, self.config.min_positive_labels):
            self.positive = min(self.class_counts, key=lambda c: (self.class_counts[c], c))
            self._select_on(self.positive)
            self.threshold = self._build_threshold(self.positive)
            self.guard = self._build_guard(self.positive)

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

    def _record(self, drift: DriftEvent | None, into: list[DriftEvent]) -> None:
        if drift is not None:
            into.append(self._keep(drift))

    def _keep(self, drift: DriftEvent) -> DriftEvent:
        if len(self.drifts) < 10_000:
            self.drifts.append(drift)
        return drift

    # -- state for telemetry and reports -------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Model state read at scrape time: priors, thresholds, rolling metrics, learned count."""
        rolling: dict[str, dict[str, float]] = {}
        if self.positive is not None:
            for metric, value in self.evaluator.rolling(self.positive).items():
                rolling.setdefault(metric, {})[self.positive] = value
        observed = {}
        total = sum(self.class_counts.values())
        if total:
            observed = {c: n / total for c, n in self.class_counts.items()}
        return {
            "learned_events": self.n_learned,
            "events": self.n_events,
            "prevalence_estimate": dict(self.priors.priors()),
            "observed_prevalence": observed,
            "thresholds": {"anomaly": self.calibrator.threshold(), **self._threshold_values()},
            "rolling": rolling,
            "alerts_suppressed": dict(self.alerts_suppressed),
            **self._model_stats(),
        }

    def _model_stats(self) -> dict[str, Any]:
        """A portfolio's served candidate, each candidate's rolling PR AUC and the switches so far."""
        if not isinstance(self.classifier, Portfolio):
            return {}
        summary = self.classifier.summary()
        return {
            "served": summary["served"],
            "candidates": {name: s["pr_auc"] for name, s in summary["candidates"].items()},
            "model_switches": len(summary["switches"]),
        }

    def _threshold_values(self) -> dict[str, float]:
        value = getattr(self.threshold, "threshold", None)
        value = value() if callable(value) else value
        return {"classifier": float(value)} if isinstance(value, int | float) else {}

    def report(self, n_events: int | None = None, segments: int | None = None) -> dict[str, Any]:
        """The evaluation part of a replay report."""
        n = self.n_events if n_events is None else n_events
        seg = self.config.evaluation.segments if segments is None else segments
        classes = sorted(self.classes)
        evaluation = self.evaluator.report(self.positive, classes, n, seg)
        return {
            "positive_class": self.positive,
            "classes": classes,
            "class_counts": dict(self.class_counts),
            "strategy": self.strategy_name,
            "threshold_policy": self.threshold_policy,
            "priors": dict(self.priors.priors()),
            "alerts_suppressed": dict(self.alerts_suppressed),
            "classifier_skill": _nan_to_none(self.guard.skill),
            "model": self._model_report(),
            "labelled": evaluation.pop("labelled"),
            "metrics": evaluation.pop("overall", {}),
            "segments": evaluation.pop("segments", []),
            "history_truncated": evaluation.pop("history_truncated"),
        }

    def _model_report(self) -> dict[str, Any] | None:
        """The portfolio's summary (NaN metrics as None), or None for a single classifier."""
        if not isinstance(self.classifier, Portfolio):
            return None
        summary = self.classifier.summary()
        summary["candidates"] = {
            name: {k: _nan_to_none(v) for k, v in s.items()} for name, s in summary["candidates"].items()
        }
        return summary


def batch_slice(n_learned: int, batch: int) -> int:
    """How many events of a batch a batch classifier scores before it learns, having learned ``n_learned``.

    A young model learns from slices of a quarter of what it has learned (at least ``WARMUP_SLICE``), so
    that it does not score whole batches blind while it starts; from ``4 * batch`` labels on, whole batches.

    >>> [batch_slice(n, 500) for n in (0, 400, 1000, 2000)]
    [32, 100, 250, 500]
    """
    return batch if n_learned >= 4 * batch else min(batch, max(WARMUP_SLICE, n_learned // 4))


def score_learn_many(
    detector: base.AnomalyDetector, xs: Sequence[Mapping[str, float]], learn: Sequence[bool] | None = None
) -> list[float]:
    """Test-then-train over ``xs``: each event scored, then learned (where ``learn`` says so, default all).

    Detectors with ``score_learn_many`` over arrays get the batch at once, once their feature order is known
    (it is fixed by the first event they learn); the others go event by event. The scores are the same.

    >>> from streamimb.registry import build_detector
    >>> xs = [{"a": (i % 10) / 10, "b": float(i % 3)} for i in range(600)]
    >>> one, many = build_detector("half_space_trees"), build_detector("numpy_half_space_trees")
    >>> score_learn_many(one, xs) == score_learn_many(many, xs)
    True
    """
    out: list[float] = []
    i, n = 0, len(xs)
    if hasattr(detector, "score_learn_many") and hasattr(detector, "feature_names"):
        while i < n and detector.feature_names is None:
            out.append(float(detector.score_one(xs[i])))
            if learn is None or learn[i]:
                detector.learn_one(xs[i])
            i += 1
        if i < n:
            mask = None if learn is None else np.asarray(learn[i:], dtype=bool)
            out.extend(detector.score_learn_many(detector.rows(xs[i:]), learn=mask).tolist())
        return out
    for i, x in enumerate(xs):
        out.append(float(detector.score_one(x)))
        if learn is None or learn[i]:
            detector.learn_one(x)
    return out


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
