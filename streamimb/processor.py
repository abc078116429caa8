"""The Processor: the whole detection logic for one stream (or one partition), with no I/O.

For each event, in this order (test-then-train):

1. features are extracted;
2. every anomaly detector scores the event, the scores are calibrated into p-values and an alert decision;
3. the imbalance-aware classifier gives class probabilities, the threshold policy a decision;
4. the detectors learn the event (unsupervised), and drift monitors watch the anomaly score;
5. when the label is known (now, or later through ``learn_one``), the evaluator records the outcome, the
   prior tracker, threshold policy and classifier learn, and drift monitors watch the error and prevalence.

The Processor is picklable: a checkpoint is a pickle of it.

>>> from streamimb.config import ModelConfig
>>> from streamimb.events import Event
>>> p = Processor(ModelConfig(), positive="1", classes=["0", "1"])
>>> verdict, drifts = p.process_one(Event(id="a", time=None, features={"x": 1.0}, label="0"))
>>> verdict.event_id, verdict.alert, p.n_events, p.n_learned
('a', False, 1, 1)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from river import base

from streamimb.config import ModelConfig
from streamimb.detectors.calibration import ScoreCalibrator
from streamimb.detectors.drift import DriftMonitor
from streamimb.evaluation.prequential import PrequentialEvaluator
from streamimb.events import DriftEvent, Event, Verdict
from streamimb.features import FeatureExtractor
from streamimb.imbalance import DEFAULT_STRATEGY, PriorTracker, build_strategy
from streamimb.imbalance.threshold import build_threshold
from streamimb.registry import build_classifier, build_detector


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
        Known classes, if any; more are added as labels arrive.
    max_categories
        Distinct values kept per categorical feature.
    """

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
        for i, d in enumerate(config.detectors):
            name = d.kind if d.kind not in self.detectors else f"{d.kind}_{i}"
            params = {"seed": config.seed + i, **d.params} if "seed" in _accepts(d.kind) else dict(d.params)
            self.detectors[name] = build_detector(d.kind, **params)
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
        base_classifier = build_classifier(config.classifier.kind, **config.classifier.params)
        self.strategy_name = config.imbalance.strategy or DEFAULT_STRATEGY
        self.classifier = build_strategy(self.strategy_name, base_classifier, **config.imbalance.params)
        self.priors = PriorTracker(half_life=config.imbalance.half_life)
        self.threshold = build_threshold(
            config.threshold.policy, positive=positive, **config.threshold.params
        )
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

    # -- scoring -------------------------------------------------------------------------------------------
    def score_one(self, event: Event) -> Verdict:
        """Score and decide with the models as they are; learns nothing."""
        x = self.features.transform_one(event.features)
        raw_scores: dict[str, float] = {}
        min_p = 1.0
        for name, detector in self.detectors.items():
            s = float(detector.score_one(x))
            raw_scores[name] = s
            min_p = min(min_p, self.detector_calibrators[name].p_value(s))
        if len(self.detectors) == 1:
            anomaly_score = next(iter(raw_scores.values()))
        else:
            anomaly_score = -math.log10(min_p * len(self.detectors)) if self.detectors else 0.0
        anomaly_p = self.calibrator.p_value(anomaly_score)
        proba = self.classifier.predict_proba_one(x) if self.n_learned else {}
        predicted, classifier_alert, reason = (None, False, "")
        if proba:
            predicted, classifier_alert, reason = self.threshold.decide(proba, event.time)
        return Verdict(
            event_id=event.id,
            index=self.n_events,
            time=event.time,
            anomaly_score=anomaly_score,
            anomaly_alert=False,  # decided in observe_one, where the calibrator's budget is spent
            proba=proba,
            predicted=predicted,
            classifier_alert=classifier_alert,
            reason=reason if classifier_alert else f"anomaly p={anomaly_p:.2g}",
            scores=raw_scores,
            x=x,
        )

    def observe_one(self, verdict: Verdict, label: str | None = None) -> list[DriftEvent]:
        """The unsupervised half of learning: decide on the anomaly, update detectors and monitors."""
        _, anomaly_alert = self.calibrator.update(verdict.anomaly_score)
        verdict.anomaly_alert = anomaly_alert
        self._apply_decision_mode(verdict)
        if verdict.alert:
            self.n_alerts += 1
        drifts: list[DriftEvent] = []
        learn_detectors = not (
            self.config.learn_detectors_on == "negatives" and label is not None and label == self.positive
        )
        for name, detector in self.detectors.items():
            self.detector_calibrators[name].update(verdict.scores[name])
            if learn_detectors:
                detector.learn_one(verdict.x)
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

    def _apply_decision_mode(self, verdict: Verdict) -> None:
        mode = self.config.decision
        if mode == "auto":
            ready = self.positive is not None and (
                self.class_counts.get(self.positive, 0) >= self.config.min_positive_labels
            )
            mode = "classifier" if ready else "anomaly"
        if mode == "classifier":
            verdict.anomaly_alert = False
        elif mode == "anomaly":
            verdict.classifier_alert = False
        if verdict.anomaly_alert and not verdict.classifier_alert:
            verdict.reason = f"anomaly score {verdict.anomaly_score:.4g} above calibrated threshold"

    # -- learning ------------------------------------------------------------------------------------------
    def learn_one(self, verdict: Verdict, label: str) -> list[DriftEvent]:
        """The supervised half: the label of an event scored earlier (now, or late through a LabelJoiner)."""
        drifts: list[DriftEvent] = []
        if label not in self.class_counts:
            self.class_counts[label] = 0
            if label not in self.classes:
                self.classes.append(label)
        self.class_counts[label] += 1
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
        self.classifier.learn_one(verdict.x, label)
        self.n_learned += 1
        return drifts

    def process_one(self, event: Event) -> tuple[Verdict, list[DriftEvent]]:
        """Score, observe, and learn the event's own label if it carries one."""
        verdict = self.score_one(event)
        drifts = self.observe_one(verdict, event.label)
        if event.label is not None:
            drifts += self.learn_one(verdict, event.label)
        return verdict, drifts

    def _maybe_fix_positive(self) -> None:
        if self.positive is not None or len(self.class_counts) != 2:
            return
        if min(self.class_counts.values()) >= max(1, self.config.min_positive_labels):
            self.positive = min(self.class_counts, key=lambda c: (self.class_counts[c], c))
            params = self.config.threshold.params
            self.threshold = build_threshold(self.config.threshold.policy, positive=self.positive, **params)

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
            "threshold_policy": self.config.threshold.policy,
            "priors": dict(self.priors.priors()),
            "labelled": evaluation.pop("labelled"),
            "metrics": evaluation.pop("overall", {}),
            "segments": evaluation.pop("segments", []),
            "history_truncated": evaluation.pop("history_truncated"),
        }


def _accepts(kind: str) -> set[str]:
    import inspect

    from streamimb.detectors.anomaly import DETECTORS

    factory = DETECTORS.get(kind)
    return set(inspect.signature(factory).parameters) if factory else set()
