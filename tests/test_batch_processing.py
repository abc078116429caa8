"""Batch mode (``model.batch``) against the per-event path: the same verdicts, alerts, drifts and reports."""

from __future__ import annotations

import copy
import json
import pickle
import random

import pytest

from streamimb.config import EventSchema, ModelConfig
from streamimb.decoding import EventDecoder
from streamimb.detectors.calibration import ScoreCalibrator
from streamimb.detectors.hst import ScaledHalfSpaceTrees
from streamimb.evaluation.prequential import PrequentialEvaluator
from streamimb.events import Event
from streamimb.model import SupervisedModel
from streamimb.pipeline import InputRecord, Pipeline
from streamimb.processor import Processor
from streamimb.simulate.cards import CardStream

SCHEMA = EventSchema(
    id="id",
    time="time",
    label="label",
    numeric=["amount", "log_ratio_to_typical", "hour", "foreign", "minutes_since_last"],
    categorical=["country", "category"],
)


def card_records(n: int, seed: int = 5, labelled_every: int = 1) -> list[bytes]:
    out = []
    for i, (tx, label) in enumerate(CardStream(seed=seed, schedule=[(1500, 0.01), (10**9, 0.06)])):
        if i >= n:
            break
        doc = {**tx, "label": label["label"]} if i % labelled_every == 0 else tx
        out.append(json.dumps(doc).encode())
    return out


# The per-event/batch equivalence holds for a classifier without batch forms (the default numpy tree scores a
# batch before learning it and runs as river's adaptive tree in per-event mode: see test_batch_strategies).
PER_EVENT_CLASSIFIER = {"classifier": {"kind": "hoeffding_adaptive_tree"}}


def verdict_key(v) -> tuple:
    return (v.event_id, v.index, v.anomaly_score, v.anomaly_alert, v.proba, v.predicted, v.classifier_alert,
            v.reason, v.scores, v.x)  # fmt: skip


def run_pipeline(records: list[bytes], config: ModelConfig, batch_size: int = 500):
    processor = Processor(config, positive="1", classes=["0", "1"])
    pipeline = Pipeline(processor, EventDecoder(SCHEMA))
    inputs = [InputRecord(r, None, None, "test", 0, i) for i, r in enumerate(records)]
    results = [pipeline.handle(inputs[k : k + batch_size]) for k in range(0, len(inputs), batch_size)]
    return processor, results


def flatten(results, attr):
    return [item for r in results for item in getattr(r, attr)]


@pytest.mark.parametrize(
    "model",
    [
        {},
        {"learn_detectors_on": "negatives", "calibration": {"kind": "budget", "warmup": 100}},
        {"detectors": [{"kind": "half_space_trees"}, {"kind": "loda"}], "drift": {"features": ["amount"]}},
    ],
    ids=["default", "negatives-budget", "two-detectors"],
)
def test_batch_mode_gives_the_per_event_results(model):
    records = card_records(3000, labelled_every=2)
    records[100] = b"{broken"
    records[2000] = b'{"id": "x", "amount": "lots"}'
    each_p, each = run_pipeline(records, ModelConfig(**model, **PER_EVENT_CLASSIFIER, batch=False))
    batch_p, batch = run_pipeline(records, ModelConfig(**model, **PER_EVENT_CLASSIFIER, batch=True))
    assert any(type(d).__name__ == "ScaledHalfSpaceTrees" for d in batch_p.detectors.values())
    assert not any(isinstance(d, ScaledHalfSpaceTrees) for d in each_p.detectors.values())
    assert [verdict_key(v) for v in flatten(each, "verdicts")] == [
        verdict_key(v) for v in flatten(batch, "verdicts")
    ]
    assert flatten(each, "alerts") == flatten(batch, "alerts")
    assert flatten(each, "dead_letters") == flatten(batch, "dead_letters")
    assert flatten(each, "drifts") == flatten(batch, "drifts")
    assert each_p.report() == batch_p.report()
    assert len(flatten(batch, "alerts")) > 10 and len(flatten(batch, "dead_letters")) == 2
    assert all(bool(v.reason) == v.alert for v in flatten(batch, "verdicts"))  # a reason where it alerts
    assert len(flatten(batch, "latencies")) == len(flatten(batch, "events")) == 2998


def test_process_many_matches_process_one_in_any_batching():
    rng = random.Random(3)
    events = []
    for i in range(2500):
        positive = rng.random() < 0.05
        x = {"a": rng.gauss(3.0 if positive else 0.0, 1.0), "b": rng.gauss(0, 1), "c": rng.choice("xyz")}
        label = None if i % 4 == 3 else ("1" if positive else "0")
        events.append(Event(id=str(i), time=float(i), features=x, label=label))
    reference = Processor(ModelConfig(**PER_EVENT_CLASSIFIER, batch=False), positive="1", classes=["0", "1"])
    expected = [verdict_key(reference.process_one(e)[0]) for e in events]
    p = Processor(ModelConfig(**PER_EVENT_CLASSIFIER, batch=True), positive="1", classes=["0", "1"])
    got, start = [], 0
    for size in [1, 3, 7, 8, 400, 1, 999, 2500]:  # single rows, small batches (row by row), large ones
        verdicts, _ = p.process_many(events[start : start + size])
        got += [verdict_key(v) for v in verdicts]
        start += size
    assert got == expected
    assert p.n_events == 2500 and p.n_learned == reference.n_learned


def test_batch_mode_survives_pickling_midway():
    records = card_records(2000)
    p, _ = run_pipeline(records[:1200], ModelConfig(batch=True))
    clone = pickle.loads(pickle.dumps(p))
    decoder = EventDecoder(SCHEMA)
    rest = [InputRecord(r, None, None, "t", 0, 1200 + i) for i, r in enumerate(records[1200:])]
    a = Pipeline(p, decoder).handle(rest)
    b = Pipeline(clone, decoder).handle(rest)
    assert [verdict_key(v) for v in a.verdicts] == [verdict_key(v) for v in b.verdicts]


def test_negatives_mode_without_a_positive_class_goes_event_by_event():
    events = [Event(str(i), None, {"a": float(i % 7)}, "1" if i % 10 == 0 else "0") for i in range(600)]
    config = ModelConfig(learn_detectors_on="negatives", min_positive_labels=5, **PER_EVENT_CLASSIFIER)
    reference = Processor(config.model_copy(update={"batch": False}))
    expected = [verdict_key(reference.process_one(e)[0]) for e in events]
    p = Processor(config)
    got = [verdict_key(v) for k in range(0, 600, 200) for v in p.process_many(events[k : k + 200])[0]]
    assert got == expected and p.positive == "1"


def trackers(p: Processor) -> list:
    """The prior trackers of a Processor's strategies (one, or one per portfolio candidate)."""
    models = getattr(p.classifier, "candidates", {"": p.classifier}).values()
    return [m.prior_tracker for m in models]


@pytest.mark.parametrize("classifier", [{}, {"kind": "numpy_hoeffding_tree"}])
def test_priors_are_tracked_once_with_the_same_results(monkeypatch, classifier):
    """Strategies and threshold read the Processor's tracker when theirs would be identical."""
    records = card_records(2500)
    config = ModelConfig(classifier=classifier)
    shared, shared_results = run_pipeline(records, config)
    assert all(t is shared.priors for t in trackers(shared)) and shared.threshold._tracker is shared.priors
    monkeypatch.setattr(SupervisedModel, "_share_priors", False)
    separate, separate_results = run_pipeline(records, config)
    assert not any(t is separate.priors for t in trackers(separate))
    assert [verdict_key(v) for v in flatten(shared_results, "verdicts")] == [
        verdict_key(v) for v in flatten(separate_results, "verdicts")
    ]
    assert shared.report() == separate.report()
    if not classifier:
        return
    different = Processor(ModelConfig(classifier=classifier, imbalance={"half_life": 500.0}))
    assert different.classifier.prior_tracker is not different.priors


class BatchClassifier:
    """A classifier with batch forms: records what it was asked, predicts its learned count."""

    supports_batch = True

    def __init__(self) -> None:
        self.learned: list[tuple[dict, str, float | None]] = []
        self.predicted_with: list[int] = []

    def predict_proba_one(self, x):  # pragma: no cover - batch mode never calls it
        raise AssertionError("per-event prediction in batch mode")

    def learn_one(self, x, y):  # pragma: no cover - batch mode never calls it
        raise AssertionError("per-event learning in batch mode")

    def predict_proba_batch(self, xs):
        self.predicted_with += [len(self.learned)] * len(xs)
        return [{"0": 0.9, "1": 0.1} for _ in xs]

    def learn_batch(self, xs, ys, ts):
        self.learned += list(zip(xs, ys, ts, strict=True))


def test_a_batch_classifier_scores_the_batch_before_learning_it():
    p = Processor(ModelConfig(), positive="1", classes=["0", "1"])
    p.classifier = clf = BatchClassifier()
    events = [Event(str(i), float(i), {"a": float(i)}, None if i % 3 == 0 else str(i % 2)) for i in range(20)]
    first, _ = p.process_many(events[:10])
    assert all(v.proba == {} for v in first)  # nothing learned before the first batch
    second, _ = p.process_many(events[10:])
    assert clf.predicted_with == [6] * 10  # the whole second batch scored by the model of the first
    assert [y for _, y, _ in clf.learned] == [e.label for e in events if e.label is not None]
    assert [t for _, _, t in clf.learned][:2] == [1.0, 2.0]
    assert all(v.proba == {"0": 0.9, "1": 0.1} for v in second)
    assert p.n_learned == 13 and p.report()["labelled"] == 13


def test_a_batch_classifier_batch_is_decided_at_its_start_and_its_anomaly_side_is_exact():
    records = card_records(3500)  # the last batch of 500 is learned whole (see batch_slice)
    unguarded = {
        "alerts": {"skill_margin": None, "max_rate": None}
    }  # the decisions as the threshold made them
    exact, exact_results = run_pipeline(records, ModelConfig(**PER_EVENT_CLASSIFIER, **unguarded))
    whole = {"learn_slice": 500}  # a labelled batch scored whole before it is learned
    columns, column_results = run_pipeline(records[:3000], ModelConfig(**unguarded, **whole))
    before = copy.deepcopy(columns)
    last = Pipeline(columns, EventDecoder(SCHEMA)).handle(
        [InputRecord(r, None, None, "test", 0, 3000 + i) for i, r in enumerate(records[3000:])]
    )
    column_results.append(last)
    # anomaly side (detectors, calibrators, decision mode): event by event, as in process_one
    anomaly = [
        (v.event_id, v.index, v.anomaly_score, v.anomaly_alert, v.scores)
        for v in flatten(exact_results, "verdicts")
    ]
    assert anomaly == [
        (v.event_id, v.index, v.anomaly_score, v.anomaly_alert, v.scores)
        for v in flatten(column_results, "verdicts")
    ]
    # classifier side: the last batch scored and decided by the models as they were at its start
    xs = [v.x for v in last.verdicts]
    probas = before.classifier.predict_proba_batch(xs)
    decisions = before.threshold.decide_many(probas, [v.time for v in last.verdicts])
    assert [v.proba for v in last.verdicts] == probas
    assert [(v.predicted, v.classifier_alert) for v in last.verdicts] == [d[:2] for d in decisions]
    assert sum(v.classifier_alert for v in last.verdicts) > 5
    assert columns.n_learned == exact.n_learned == 3500 and columns.class_counts == exact.class_counts
    report = columns.report()
    assert report["labelled"] == 3500 and report["metrics"]["recall"] > 0.4
    drifts = flatten(column_results, "drifts")
    assert [d.index for d in drifts] == sorted(d.index for d in drifts)


def test_calibrator_and_evaluator_batch_forms_equal_their_loops():
    rng = random.Random(2)
    scores = [rng.expovariate(1.0) for _ in range(3000)]
    for kind in ("quantile", "budget"):
        one = ScoreCalibrator(kind=kind, quantile=0.99, window=700, warmup=100)
        many = ScoreCalibrator(kind=kind, quantile=0.99, window=700, warmup=100)
        expected = [one.update(s) for s in scores]
        got = []
        for k in range(0, 3000, 450):
            p, alerts = many.update_many(scores[k : k + 450])
            got += list(zip(p, alerts, strict=True))
        assert got == expected and sum(a for _, a in got) > 5 and many.threshold() == one.threshold()
    one, many = PrequentialEvaluator(50, max_history=120), PrequentialEvaluator(50, max_history=120)
    rows = [
        (i, str(i % 7 == 0), "True", i % 3 == 0, {"True": rng.random()}, rng.random()) for i in range(200)
    ]
    for row in rows:
        one.update(*row)
    for k in range(0, 200, 70):
        many.update_many(*[list(column) for column in zip(*rows[k : k + 70], strict=True)])
    assert many.__dict__ == one.__dict__ and many.history_truncated


def test_the_batch_path_raises_the_anomaly_side_drifts_of_the_per_event_path_in_its_order():
    """Score and feature monitors run over a batch at once in batch mode: same drifts, same order."""
    records = []
    for i, raw in enumerate(card_records(4000)):
        doc = json.loads(raw)
        if i >= 2000:  # a sudden change of the amounts and of the scores with them
            doc["amount"] = doc["amount"] * 20 + 500.0
            doc["hour"] = (doc["hour"] + 12) % 24
        records.append(json.dumps(doc).encode())
    model = {"drift": {"features": ["amount", "hour"], "min_gap": 100}}
    exact, exact_results = run_pipeline(records, ModelConfig(**model, **PER_EVENT_CLASSIFIER))
    columns, column_results = run_pipeline(records, ModelConfig(**model))

    def anomaly_side(drifts):
        return [
            (d.index, d.signal, d.time) for d in drifts if not d.signal.startswith(("error", "prevalence"))
        ]

    expected = anomaly_side(flatten(exact_results, "drifts"))
    assert {s for _, s, _ in expected} >= {"feature:amount", "feature:hour"}
    assert anomaly_side(flatten(column_results, "drifts")) == expected
    assert anomaly_side(columns.drifts) == anomaly_side(exact.drifts) == expected
