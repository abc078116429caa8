"""Imbalance strategies over a base learner with numpy batch forms: one event or a whole batch."""

from __future__ import annotations

import random

import numpy as np
import pytest

from streamimb.config import ModelConfig
from streamimb.events import Event
from streamimb.imbalance import build_strategy
from streamimb.imbalance.calibration import PriorShiftCalibrator
from streamimb.processor import Processor
from streamimb.registry import build_classifier


def rare_stream(n: int, seed: int = 0, rate: float = 0.03) -> list[tuple[dict[str, float], str]]:
    """The rare class lives in a corner of feature space; about ``rate`` of events are rare."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rare = rng.random() < rate
        a = rng.uniform(0.8, 1.0) if rare else rng.uniform(0.0, 0.85)
        out.append(({"a": a, "b": rng.random()}, "fraud" if rare else "ok"))
    return out


def batches(data, size=250):
    for k in range(0, len(data), size):
        chunk = data[k : k + size]
        yield [x for x, _ in chunk], [y for _, y in chunk]


@pytest.mark.parametrize("name", ["oob", "uob", "weighting", "none", "oversample", "undersample"])
def test_batch_strategies_learn_the_rare_class(name):
    model = build_strategy(name, build_classifier("numpy_hoeffding_tree"), seed=1)
    assert model.supports_batch
    found = missed = 0
    for i, (xs, ys) in enumerate(batches(rare_stream(12_000))):
        if i >= 24:
            for proba, y in zip(model.predict_proba_batch(xs), ys, strict=True):
                if y == "fraud":
                    hit = proba.get("fraud", 0.0) > model.priors()["fraud"]
                    found, missed = found + hit, missed + (not hit)
        model.learn_batch(xs, ys)
    assert found / (found + missed) > 0.8
    assert abs(sum(model.priors().values()) - 1.0) < 1e-9


def test_one_event_and_a_batch_of_one_agree():
    one = build_strategy("oob", build_classifier("numpy_hoeffding_tree"), n_models=3, seed=4)
    for x, y in rare_stream(3000):
        one.learn_one(x, y)
    probe = [x for x, _ in rare_stream(50, seed=9)]
    assert one.predict_proba_batch(probe) == [one.predict_proba_one(x) for x in probe]


def test_oob_balances_what_its_members_learn():
    model = build_strategy("oob", build_classifier("numpy_hoeffding_tree"), seed=2)
    for xs, ys in batches(rare_stream(8000)):
        model.predict_proba_batch(xs)
        model.learn_batch(xs, ys)
    assert abs(model.training_priors()["fraud"] - 0.5) < 0.1
    assert model.n_fits > 8000


def test_smote_has_no_batch_form_but_takes_batches():
    model = build_strategy("smote", build_classifier("numpy_hoeffding_tree"), seed=2)
    assert not model.supports_batch
    for xs, ys in batches(rare_stream(2000)):
        model.learn_batch(xs, ys)
    assert model.predict_proba_batch([{"a": 0.95, "b": 0.5}])[0]


def test_array_calibration_equals_the_dict_calibration():
    cal = PriorShiftCalibrator()
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    priors, train = np.array([0.7, 0.25, 0.05]), np.array([0.34, 0.33, 0.33])
    for _ in range(50):
        raw = rng.dirichlet([1, 1, 1], size=4)
        y = rng.integers(0, 3, size=1)
        as_dict = [dict(zip(classes, row, strict=True)) for row in raw.tolist()]
        prior_d, train_d = dict(zip(classes, priors, strict=True)), dict(zip(classes, train, strict=True))
        got = cal.transform_array(raw, priors, train, classes)
        for row, d in zip(got, as_dict, strict=True):
            expected = cal.transform(d, prior_d, train_d)
            assert np.allclose(row, [expected[c] for c in classes])
        twin = PriorShiftCalibrator()
        twin._a, twin._b = cal._a, dict(cal._b)
        cal.learn_array(raw[:1], priors, train, y, classes)
        twin.learn(as_dict[0], prior_d, train_d, classes[int(y[0])])
        assert cal._a == pytest.approx(twin._a) and cal._b == pytest.approx(twin._b)


def numpy_processor(**model) -> Processor:
    config = ModelConfig.model_validate({"classifier": {"kind": "numpy_hoeffding_tree"}, **model})
    return Processor(config, positive="fraud", classes=["ok", "fraud"])


def test_the_processor_learns_a_batch_classifier_batch_wise_and_late_labels_together():
    p = numpy_processor()
    assert p.classifier.supports_batch
    data = rare_stream(6000)
    events = [Event(str(i), float(i), x, y) for i, (x, y) in enumerate(data)]
    for k in range(0, 5000, 500):
        p.process_many(events[k : k + 500])
    assert p.n_learned == 5000 and p.classifier.n_fits > 5000
    late = [Event(e.id, e.time, e.features, None) for e in events[5000:]]
    verdicts, _ = p.process_many(late)
    fits = p.classifier.n_fits
    p.learn_many([(v, e.label) for v, e in zip(verdicts, events[5000:], strict=True)])
    assert p.n_learned == 6000 and p.classifier.n_fits > fits
    flagged = [v.alert for v, e in zip(verdicts, events[5000:], strict=True) if e.label == "fraud"]
    assert sum(flagged) / len(flagged) > 0.6


def test_per_event_mode_uses_rivers_adaptive_tree_for_the_numpy_tree():
    p = numpy_processor(batch=False)
    for i, (x, y) in enumerate(rare_stream(1500)):
        p.process_one(Event(str(i), float(i), x, y))
    assert not p.classifier.supports_batch
    member = p.classifier.models[0]
    assert type(member).__name__ == "HoeffdingAdaptiveTreeClassifier" and member.n_nodes > 1
    assert member.max_share_to_split == 1.0 and member.grace_period == 50


def shifted_concept(n: int, seed: int = 0) -> list[tuple[dict[str, float], str]]:
    """The rare corner moves from high ``a`` to low ``a`` (concept drift, same prevalence)."""
    return [({"a": 1.0 - x["a"], "b": x["b"]}, y) for x, y in rare_stream(n, seed)]


def test_oob_replaces_members_whose_errors_rise_and_recovers():
    def run(replace: bool) -> tuple[float, int]:
        model = build_strategy(
            "oob", build_classifier("numpy_hoeffding_tree", adaptive=False), seed=3, replace_drifted=replace
        )
        for xs, ys in batches(rare_stream(10_000, seed=1), 500):
            model.predict_proba_batch(xs)
            model.learn_batch(xs, ys)
        found = total = 0
        for i, (xs, ys) in enumerate(batches(shifted_concept(10_000, seed=2), 500)):
            probas = model.predict_proba_batch(xs)
            if i >= 10:
                for proba, y in zip(probas, ys, strict=True):
                    if y == "fraud":
                        total += 1
                        found += proba.get("fraud", 0.0) > model.priors()["fraud"]
            model.learn_batch(xs, ys)
        return found / total, model.n_replaced

    recall, replaced = run(True)
    kept_recall, none = run(False)
    assert replaced > 0 and none == 0
    # Oversampled leaves relearn this simple boundary quickly either way; replacing must not cost recall.
    assert recall > 0.9 and recall >= kept_recall - 0.02


def test_the_default_ensemble_keeps_its_members_and_recovers_from_concept_drift():
    """By default no member is replaced: the members' adaptive trees prune what the drift made stale."""
    model = build_strategy("oob", build_classifier("numpy_hoeffding_tree"), seed=3)
    found = total = 0
    stream = batches(rare_stream(10_000, seed=1) + shifted_concept(10_000, seed=2), 500)
    for i, (xs, ys) in enumerate(stream):
        probas = model.predict_proba_batch(xs)
        if i >= 30:  # from 5,000 events after the drift
            for proba, y in zip(probas, ys, strict=True):
                if y == "fraud":
                    total += 1
                    found += proba.get("fraud", 0.0) > model.priors()["fraud"]
        model.learn_batch(xs, ys)
    assert model.n_replaced == 0 and sum(m.n_pruned for m in model.models) > 0
    assert found / total > 0.9


def test_a_prevalence_shift_alone_replaces_no_member():
    model = build_strategy("oob", build_classifier("numpy_hoeffding_tree"), seed=5, replace_drifted=True)
    for rate, seed in ((0.03, 1), (0.15, 2), (0.01, 3)):
        for xs, ys in batches(rare_stream(8000, seed=seed, rate=rate), 500):
            model.predict_proba_batch(xs)
            model.learn_batch(xs, ys)
    assert model.n_replaced == 0


def test_late_labels_also_feed_the_drift_watch():
    model = build_strategy(
        "oob", build_classifier("numpy_hoeffding_tree", adaptive=False), seed=3, replace_drifted=True
    )
    pending: list[tuple[list[dict], list[str]]] = []
    stream = rare_stream(10_000, seed=1) + shifted_concept(10_000, seed=2)
    for xs, ys in batches(stream, 500):
        model.predict_proba_batch(xs)
        pending.append(([dict(x) for x in xs], ys))  # labels come back later, with copies of the events
        if len(pending) > 2:
            model.learn_batch(*pending.pop(0))
    assert model.n_replaced > 0


def test_a_strategy_with_only_a_per_event_hook_learns_event_by_event_in_batches():
    """Overriding ``_learn`` alone must not fall back to the parent's array form in batch mode."""
    from streamimb.imbalance.weighting import NoStrategy

    class DoubleFraud(NoStrategy):
        def _learn(self, x, y, w):
            super()._learn(x, y, w * (2.0 if y == "1" else 1.0))

    model = DoubleFraud(build_classifier("numpy_hoeffding_tree"))
    assert (
        not model.supports_batch
        and build_strategy("none", build_classifier("numpy_hoeffding_tree")).supports_batch
    )
    xs = [{"a": float(i % 7)} for i in range(40)]
    ys = ["1" if i % 7 == 6 else "0" for i in range(40)]
    model.learn_batch(xs, ys)
    frauds = sum(y == "1" for y in ys)
    assert model.training_priors()["1"] == pytest.approx(2 * frauds / (len(ys) + frauds), rel=0.05)
