"""The Processor: the whole detection logic for one stream (or one partition), with no I/O.

Events take one path, :meth:`Processor.process_many`, as columns (one list per quantity), stage by stage:

1. **features**: each event's feature dict;
2. **detectors**: every anomaly detector scores, then learns, each event in order (test-then-train; a detector
   with batch forms does the whole batch over one array, with the same scores);
3. **calibration**: the detectors' scores are combined into one anomaly score and calibrated into an alert
   decision; drift monitors watch the anomaly score and the chosen features;
4. **candidates and selection**: the classifier (a portfolio of candidates that serves its best one or their
   blend, or one model under an imbalance strategy) gives class probabilities;
5. **decision**: the threshold policy decides; the decision mode keeps the classifier's or the detectors'
   alerts; the alert guard withholds those of a classifier without skill or beyond the alert budget;
6. **learning**, from labels that come with the events or late (:meth:`Processor.learn_many`): metrics, error
   and prevalence monitors, prior tracker, threshold policy, alert guard, classifier.

Stages 1-3 need no labels and run over the whole batch. Stages 4-6 run over slices of it: a slice is scored
and decided by the models as they stand at its start, then its labels are learned. A classifier without batch
forms (``supports_batch``) takes slices that end at each labelled event, so its results are those of learning
event by event; one with batch forms takes slices of ``model.learn_slice`` events (fewer while it is young:
see :func:`batch_slice`). :meth:`Processor.process_one` is a batch of one. Where detectors learn from
negatives only (``learn_detectors_on: negatives``) and the rare class is not known yet, stages 1-3 go event
by event too, as which events they learn depends on it.

``model.batch: false`` runs river's models on the same path: river's half-space trees, and river's Hoeffding
adaptive tree in place of ``numpy_hoeffding_tree``.

The Processor is picklable: a checkpoint is a pickle of it.

>>> from streamimb.config import ModelConfig
>>> from streamimb.events import Event
>>> p = Processor(ModelConfig(), positive="1", classes=["0", "1"])
>>> verdict, drifts = p.process_one(Event(id="a", time=None, features={"x": 1.0}, label="0"))
>>> verdict.event_id, verdict.alert, p.n_events, p.n_learned
('a', False, 1, 1)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from river import base

from streamimb.classifiers.portfolio import Portfolio
from streamimb.config import ModelConfig
from streamimb.detectors.calibration import ScoreCalibrator
from streamimb.detectors.drift import DriftMonitor
from streamimb.entities import EntityFeatures
from streamimb.evaluation.prequential import PrequentialEvaluator
from streamimb.events import DriftEvent, Event, Verdict
from streamimb.features import FeatureExtractor
from streamimb.imbalance import PriorTracker
from streamimb.imbalance.threshold import AlertGuard
from streamimb.model import SupervisedModel
from streamimb.registry import DETECTORS, build_detector, parameter_names

# Detector kinds that batch mode replaces by a vectorised twin giving the same scores.
BATCH_TWINS = {"half_space_trees": "numpy_half_space_trees"}
WARMUP_SLICE = 32  # smallest slice a young batch classifier learns from (see Processor.process_many)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Columns:
    """A chunk of events as columns, as stages 1-3 leave it for the slices of stages 4-6."""

    events: list[Event]
    start: int  # the index of the chunk's first event
    xs: list[dict[str, float]]  # features
    keys: list[dict[str, str] | None]  # entity keys
    scores: list[dict[str, float]]  # each detector's score
    anomaly_scores: list[float]
    anomaly_alerts: list[bool]  # the calibrator's decisions, before the decision mode


class Processor:
    """Scores, decides and learns; see the module docstring for the order of operations.

    Parameters
    ----------
    config
        The model section of the configuration.
    positive, classes
        The rare class and the known classes, for a model of its own (see
        :class:`~streamimb.model.SupervisedModel`).
    max_categories
        Distinct values kept per categorical feature.
    entities
        Entity key fields (``schema.entities``), with ``config.features.entities``: each event gets features
        from its entities' earlier events and labels (:class:`~streamimb.entities.EntityFeatures`).
    model
        A supervised model shared with other Processors (other partitions of the stream): it learns the
        labels of all of them and scores each. ``positive`` and ``classes`` are then the model's.

    Classifier alerts pass an :class:`~streamimb.imbalance.threshold.AlertGuard` (``config.alerts``): none
    while the served score shows no skill, and at most ``max_rate`` of the events; the alerts it withholds are
    counted by reason in ``alerts_suppressed``.
    """

    def __init__(
        self,
        config: ModelConfig | None = None,
        positive: str | None = None,
        classes: Iterable[str] | None = None,
        max_categories: int = 64,
        model: SupervisedModel | None = None,
        entities: Sequence[str] = (),
    ) -> None:
        self.config = config = config or ModelConfig()
        self.model = model if model is not None else SupervisedModel(config, positive, classes)
        self.features = FeatureExtractor(max_categories=max_categories)
        self.entities = self._build_entities([*config.features.entities, *entities])
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
        self.recent_alerts: deque[int] = deque()  # positions of this Processor's alerts for the rate cap
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
        self.n_events = 0
        self.n_learned = 0
        self.n_alerts = 0

    def _build_entities(self, keys: Sequence[str]) -> EntityFeatures | None:
        if not keys:
            return None
        cfg = self.config.features
        return EntityFeatures(
            list(dict.fromkeys(keys)), cfg.numeric, cfg.categorical, cfg.windows, cfg.risk_gap,
            cfg.max_keys,
        )  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("entities", None)  # a checkpoint from before entity features
        if "model" not in state:  # a checkpoint from before the supervised model had an object of its own
            model = SupervisedModel.__new__(SupervisedModel)
            moved = ("positive", "classes", "class_counts", "max_classes", "threshold_policy", "priors")
            moved += ("strategy_name", "classifier", "threshold", "guard")
            model.__dict__.update({k: state.pop(k) for k in moved if k in state})
            model.__dict__.update(config=state["config"], batch=state.get("batch", True), version=0)
            model.n_learned = state["n_learned"]
            state["recent_alerts"] = model.guard._alerts
            state["model"] = model
        self.__dict__.update(state)

    # -- the model's state, as this Processor serves it ------------------------------------------------------
    @property
    def positive(self) -> str | None:
        return self.model.positive

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    @property
    def class_counts(self) -> dict[str, int]:
        return self.model.class_counts

    @property
    def priors(self) -> PriorTracker:
        return self.model.priors

    @property
    def classifier(self) -> Any:
        return self.model.classifier

    @classifier.setter
    def classifier(self, classifier: Any) -> None:
        self.model.classifier = classifier

    @property
    def threshold(self) -> Any:
        return self.model.threshold

    @property
    def guard(self) -> AlertGuard:
        return self.model.guard

    @property
    def strategy_name(self) -> str:
        return self.model.strategy_name

    @property
    def threshold_policy(self) -> str:
        return self.model.threshold_policy

    # -- one path: stages over columns ---------------------------------------------------------------------
    def process_one(self, event: Event) -> tuple[Verdict, list[DriftEvent]]:
        """:meth:`process_many` over a batch of one."""
        verdicts, drifts = self.process_many([event])
        return verdicts[0], drifts

    def process_many(self, events: Sequence[Event]) -> tuple[list[Verdict], list[DriftEvent]]:
        """Score, decide and learn a batch in order (see the module docstring): one verdict per event, and the
        drifts raised, in event order."""
        events = [self._folded(e) for e in events]
        verdicts: list[Verdict] = []
        drifts: list[DriftEvent] = []
        for chunk in self._chunks(events):
            columns = self._score_anomalies(chunk)
            raised = self._watch_signals(columns)
            labelled = any(e.label is not None for e in chunk)
            start = 0
            while start < len(chunk):
                end = self._slice_end(chunk, start, labelled)
                decided, fixed_at = self._decide(columns, start, end)
                learned = [
                    (v, e.label)
                    for v, e in zip(decided, chunk[start:end], strict=True)
                    if e.label is not None
                ]
                if learned:
                    raised += self._learn([v for v, _ in learned], [y for _, y in learned], fixed_at)
                verdicts += decided
                start = end
            raised.sort(key=lambda d: d.index)  # stable: anomaly-side drifts first, as they are raised first
            drifts += [self._keep(d) for d in raised]
        return verdicts, drifts

    def learn_one(self, verdict: Verdict, label: str) -> list[DriftEvent]:
        """:meth:`learn_many` over one label."""
        return self.learn_many([(verdict, label)])

    def learn_many(self, labelled: Sequence[tuple[Verdict, str]]) -> list[DriftEvent]:
        """Stage 6 over labels of events scored earlier (late labels, joined to their verdicts)."""
        pairs = [(verdict, self.model.fold(label)) for verdict, label in labelled]
        groups = [pairs] if self.model.supports_batch else [[pair] for pair in pairs]
        drifts: list[DriftEvent] = []
        for group in groups:
            verdicts, ys = [v for v, _ in group], [y for _, y in group]
            fixed_at = 0
            for k, y in enumerate(ys):
                if self.model.count(y):
                    fixed_at = k
            drifts += self._learn(verdicts, ys, fixed_at)
        return [self._keep(d) for d in drifts]

    def _chunks(self, events: list[Event]) -> Iterator[list[Event]]:
        """The batch for stages 1-3: whole, or one event at a time while the detectors learn negatives only
        and the rare class is not known yet."""
        start = 0
        while start < len(events):
            if self.config.learn_detectors_on == "negatives" and self.positive is None:
                yield events[start : start + 1]
                start += 1
            else:
                yield events[start:]
                return

    def _slice_end(self, events: list[Event], start: int, labelled: bool) -> int:
        """Where the slice for stages 4-6 that begins at ``start`` ends (see the module docstring)."""
        n = len(events)
        if self.model.supports_batch:
            return min(n, start + self._slice(n)) if labelled else n
        for i in range(start, n):
            if events[i].label is not None:
                return i + 1
        return n

    def _slice(self, batch: int) -> int:
        """Events of a labelled batch to score before learning: `batch_slice`, at most ``learn_slice``."""
        return min(batch_slice(self.model.n_learned, batch), getattr(self.config, "learn_slice", batch))

    # stages 1-3 ------------------------------------------------------------------------------------------
    def _score_anomalies(self, events: list[Event]) -> Columns:
        """Features, detectors (test-then-train) and calibration over a chunk of events."""
        xs, keys = self._featurise(events)
        learn = None
        if self.config.learn_detectors_on == "negatives":
            positive = self.positive
            learn = [e.label is None or e.label != positive for e in events]
        columns = [(name, score_learn_many(det, xs, learn)) for name, det in self.detectors.items()]
        if len(columns) == 1:
            name, scores = columns[0]
            per_event = [{name: score} for score in scores]
        else:
            per_event = [{name: scores[i] for name, scores in columns} for i in range(len(events))]
            scores = [self._combine(raw) for raw in per_event]
        _, alerts = self.calibrator.update_many(scores)
        return Columns(events, self.n_events, xs, keys, per_event, list(scores), list(alerts))

    def _featurise(self, events: list[Event]) -> tuple[list[dict[str, float]], list[dict[str, str] | None]]:
        """Stage 1: each event's features, and its entity keys with their features from earlier events."""
        transform = self.features.transform_one
        if self.entities is None:
            return [transform(e.features) for e in events], [None] * len(events)
        entities = self.entities
        fields = set(entities.keys)
        xs, keys = [], []
        for i, event in enumerate(events, start=self.n_events):
            raw = event.features
            own = entities.keys_of(raw)
            x = transform({k: v for k, v in raw.items() if k not in fields})
            x.update(entities.transform(raw, _entity_time(event.time, i), own))
            xs.append(x)
            keys.append(own)
        return xs, keys

    def _combine(self, raw_scores: dict[str, float]) -> float:
        """One event's anomaly score from several detectors: -log10 of their smallest p-value,
        Bonferroni-corrected (0 without detectors); each detector's calibrator then learns its score."""
        if not raw_scores:
            return 0.0
        calibrators = self.detector_calibrators
        min_p = min(calibrators[name].p_value(s) for name, s in raw_scores.items())
        for name, s in raw_scores.items():
            calibrators[name].update(s)
        return -math.log10(min(min_p, 1.0) * len(raw_scores))

    def _watch_signals(self, columns: Columns) -> list[DriftEvent]:
        """The score and feature monitors over a chunk, their drifts in the order of the events."""
        found: list[tuple[int, int, DriftEvent]] = []
        indices = range(columns.start, columns.start + len(columns.events))
        times = [e.time for e in columns.events]
        if self.score_monitor is not None:
            found += [
                (d.index, 0, d)
                for d in self.score_monitor.update_many(columns.anomaly_scores, indices, times)
            ]
        for k, (name, monitor) in enumerate(self.feature_monitors.items(), start=1):
            present = [
                (x[name], i, t)
                for x, i, t in zip(columns.xs, indices, times, strict=True)
                if x.get(name) is not None
            ]
            if present:
                found += [(d.index, k, d) for d in monitor.update_many(*zip(*present, strict=True))]
        found.sort(key=lambda f: f[:2])
        return [d for _, _, d in found]

    # stages 4-5 ------------------------------------------------------------------------------------------
    def _decide(self, columns: Columns, start: int, end: int) -> tuple[list[Verdict], int]:
        """Candidates, selection and decision over one slice, at the models' state at its start; the slice's
        labels are counted. Returns the verdicts and the position among the slice's labels from which the
        current threshold policy and guard learn (where the rare class became known within the slice)."""
        events, xs = columns.events[start:end], columns.xs[start:end]
        model = self.model
        probas = model.predict(xs)
        decisions = model.decide(probas, [e.time for e in events])
        verdicts: list[Verdict] = []
        fixed_at, n_labels = 0, 0
        mode = self._decision_mode()
        for i, event in enumerate(events, start=start):
            predicted, classifier_alert, reason = decisions[i - start]
            verdict = Verdict(
                event.id, self.n_events, event.time, columns.anomaly_scores[i], columns.anomaly_alerts[i],
                probas[i - start], predicted, classifier_alert, reason if classifier_alert else "",
                columns.scores[i], xs[i - start], columns.keys[i],
            )  # fmt: skip
            self._apply_decision_mode(verdict, mode)
            self.n_alerts += verdict.alert
            self.n_events += 1
            if event.label is not None:
                if model.count(event.label):
                    fixed_at = n_labels
                n_labels += 1
                if mode != "classifier":  # counts only grow: "classifier" stays until the guard learns
                    mode = self._decision_mode()
            verdicts.append(verdict)
        return verdicts, fixed_at

    def _apply_decision_mode(self, verdict: Verdict, mode: str) -> None:
        if mode == "classifier":
            verdict.anomaly_alert = False
        elif mode == "anomaly" and verdict.classifier_alert:
            if self.config.decision == "auto" and self._classifier_ready():
                self.alerts_suppressed["no_skill"] += 1  # the classifier would alert; its score has no skill
            verdict.classifier_alert = False
            verdict.reason = ""
        if verdict.classifier_alert:
            withheld = self.guard.check(verdict.index, self.recent_alerts)
            if withheld:
                verdict.classifier_alert = False
                verdict.reason = ""
                self.alerts_suppressed[withheld] += 1
        if verdict.anomaly_alert and not verdict.classifier_alert:
            verdict.reason = f"anomaly score {verdict.anomaly_score:.4g} above calibrated threshold"

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
        return self.model.ready()

    # stage 6 ---------------------------------------------------------------------------------------------
    def _learn(self, verdicts: list[Verdict], ys: list[str], fixed_at: int = 0) -> list[DriftEvent]:
        """Learning from counted labels: metrics, monitors, priors, threshold policy, guard, classifier.

        ``fixed_at``: see :meth:`~streamimb.model.SupervisedModel.learn`."""
        drifts: list[DriftEvent] = []
        probas = [v.proba for v in verdicts]
        indices, times = [v.index for v in verdicts], [v.time for v in verdicts]
        self.evaluator.update_many(
            indices, ys, [v.predicted for v in verdicts], [v.alert for v in verdicts], probas,
            [v.anomaly_score for v in verdicts],
        )  # fmt: skip
        if self.error_monitor is not None:
            scored = [(v, y) for v, y in zip(verdicts, ys, strict=True) if v.predicted is not None]
            errors = [0.0 if v.predicted == y else 1.0 for v, y in scored]
            drifts += self.error_monitor.update_many(
                errors, [v.index for v, _ in scored], [v.time for v, _ in scored]
            )
        if self.entities is not None:
            positive = self.model.positive
            for v, y in zip(verdicts, ys, strict=True):
                if v.keys:
                    self.entities.learn_label(v.keys, _entity_time(v.time, v.index), y == positive)
        for i, changed in self.model.learn([v.x for v in verdicts], ys, times, probas, fixed_at):
            drifts += [DriftEvent(indices[i], f"prevalence:{c}", "prior_tracker", times[i]) for c in changed]
        self.n_learned += len(ys)
        drifts.sort(key=lambda d: d.index)  # stable: an event's error drift before its prevalence drifts
        return drifts

    # -- labels --------------------------------------------------------------------------------------------
    def _folded(self, event: Event) -> Event:
        label = self.model.fold(event.label)
        return event if label == event.label else dataclasses.replace(event, label=label)

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


def _entity_time(time: float | None, index: int) -> float:
    """An event's time for its entity features: its event time, or its position where it has none."""
    return time if time is not None else float(index)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
