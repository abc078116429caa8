"""Cost-sensitive weights and the CostSensitive / NoStrategy wrappers."""

from __future__ import annotations

import random

import pytest
from river import base, linear_model, naive_bayes, preprocessing, tree

from streamimb.imbalance import CostSensitive, NoStrategy, build_strategy, class_weights
from streamimb.imbalance.strategy import accepts_weight, correct_priors


class Recorder(base.Classifier):
    """A base classifier that records the weights it was trained with."""

    def __init__(self) -> None:
        self.seen: list[tuple[object, float]] = []

    @property
    def _multiclass(self) -> bool:
        return True

    def learn_one(self, x, y, w=1.0):
        self.seen.append((y, w))

    def predict_proba_one(self, x):
        return {"rare": 0.5, "common": 0.5}


class NoWeightRecorder(Recorder):
    def learn_one(self, x, y):
        self.seen.append((y, 1.0))


def test_class_weights_balance_and_cost() -> None:
    w = class_weights({"a": 0.9, "b": 0.1})
    assert w["b"] / w["a"] == pytest.approx(9.0)
    assert 0.9 * w["a"] + 0.1 * w["b"] == pytest.approx(1.0)
    costly = class_weights({"a": 0.9, "b": 0.1}, cost={"b": {"a": 5.0}})
    assert costly["b"] / costly["a"] == pytest.approx(45.0)
    half = class_weights({"a": 0.9, "b": 0.1}, power=0.5)
    assert half["b"] / half["a"] == pytest.approx(3.0)
    capped = class_weights({"a": 0.999, "b": 0.001}, max_ratio=20)
    assert capped["b"] / capped["a"] == pytest.approx(20.0)
    three = class_weights({"a": 0.7, "b": 0.25, "c": 0.05})
    assert three["c"] > three["b"] > three["a"]
    assert class_weights({}) == {}


def test_weights_follow_the_priors_and_reach_the_base_model() -> None:
    model = CostSensitive(Recorder(), half_life=500, seed=0)
    rng = random.Random(0)
    for i in range(6000):
        p = 0.02 if i < 3000 else 0.2
        model.learn_one({"v": 1.0}, "rare" if rng.random() < p else "common")
    rec = model.models[0]
    early = [w for y, w in rec.seen[1000:3000] if y == "rare"]
    late = [w for y, w in rec.seen[5000:] if y == "rare"]
    # rare weight ~ 1/(2 * 0.02) = 25 before, ~ 1/(2 * 0.2) = 2.5 after
    assert 15 < sum(early) / len(early) < 40
    assert 1.8 < sum(late) / len(late) < 3.5
    # the model was trained on an (almost) balanced distribution
    assert 0.4 < model.training_priors()["rare"] < 0.6


def test_replication_fallback_for_models_without_w() -> None:
    assert not accepts_weight(NoWeightRecorder())
    model = CostSensitive(NoWeightRecorder(), seed=1)
    for i in range(2000):
        model.learn_one({"v": 1.0}, "rare" if i % 20 == 0 else "common")
    rec = model.models[0]
    n_rare = sum(1 for y, _ in rec.seen if y == "rare")
    n_common = sum(1 for y, _ in rec.seen if y == "common")
    assert 0.7 < n_rare / n_common < 1.4


def test_accepts_weight_sees_through_pipelines() -> None:
    assert accepts_weight(tree.HoeffdingTreeClassifier())
    assert accepts_weight(preprocessing.StandardScaler() | linear_model.LogisticRegression())
    assert not accepts_weight(naive_bayes.GaussianNB())


def test_prior_correction_maps_training_priors_to_current() -> None:
    out = correct_priors({"a": 0.5, "b": 0.5}, {"a": 0.99, "b": 0.01}, {"a": 0.5, "b": 0.5})
    assert out["b"] == pytest.approx(0.01)
    assert correct_priors({}, {"a": 1.0}, {}) == {"a": 1.0}


def test_binary_only_base_with_string_labels_is_wrapped() -> None:
    rng = random.Random(2)
    model = CostSensitive(preprocessing.StandardScaler() | linear_model.LogisticRegression(), seed=2)
    assert model.predict_proba_one({"v": 0.0}) == {}
    for _ in range(4000):
        v = rng.gauss(0, 1)
        model.learn_one({"v": v}, "rare" if v > 1.8 else "common")
    proba = model.predict_proba_one({"v": 3.0})
    assert set(proba) == {"rare", "common"}
    assert model.predict_one({"v": 3.0}) == "rare"
    assert model.predict_one({"v": -1.0}) == "common"


def test_bool_labels_keep_binary_models() -> None:
    model = CostSensitive(linear_model.LogisticRegression(), seed=0)
    for i in range(200):
        model.learn_one({"v": float(i % 7)}, i % 7 == 0)
    assert set(model.predict_proba_one({"v": 0.0})) == {False, True}


def test_none_strategy_is_a_passthrough_with_priors() -> None:
    inner = tree.HoeffdingTreeClassifier()
    model = build_strategy("none", inner)
    assert isinstance(model, NoStrategy)
    for i in range(300):
        model.learn_one({"v": float(i % 3)}, "a" if i % 3 else "b")
    assert model.priors()["b"] == pytest.approx(1 / 3, abs=0.02)
    assert model.predict_proba_one({"v": 0.0}) == model.predict_proba_raw({"v": 0.0})


def test_shared_tracker_is_not_updated_twice() -> None:
    from streamimb.imbalance import PriorTracker

    shared = PriorTracker(half_life=100)
    model = CostSensitive(Recorder(), tracker=shared, update_tracker=False)
    for _ in range(10):
        shared.update("common")
        model.learn_one({}, "common")
    assert shared.n_labelled == 10
    assert model.priors() == shared.priors()
