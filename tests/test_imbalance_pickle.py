"""Pickling round-trips and determinism for every strategy and threshold policy."""

from __future__ import annotations

import pickle
import random

import pytest
from river import linear_model, preprocessing, tree

from streamimb.imbalance import STRATEGIES, THRESHOLDS, build_strategy, build_threshold


def _data(n: int, seed: int):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = 0.03 if i < n // 2 else 0.12
        y = "fraud" if rng.random() < p else "ok"
        out.append(({"a": rng.gauss(1.5 if y == "fraud" else 0.0, 1.0), "b": rng.random()}, y, float(i)))
    return out


def _base(kind: str):
    if kind == "tree":
        return tree.HoeffdingTreeClassifier(grace_period=30, delta=1e-3)
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _make(name: str, kind: str):
    params = {"seed": 7, "half_life": 300}
    if name in ("oob", "uob"):
        params["n_models"] = 3
    return build_strategy(name, _base(kind), **params)


@pytest.mark.parametrize("kind", ["tree", "linear"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_pickles_and_resumes_identically(name: str, kind: str) -> None:
    data = _data(1200, 1)
    model = _make(name, kind)
    for x, y, _ in data[:600]:
        model.learn_one(x, y)
    restored = pickle.loads(pickle.dumps(model))
    for x, y, _ in data[600:]:
        assert restored.predict_proba_one(x) == model.predict_proba_one(x)
        model.learn_one(x, y)
        restored.learn_one(x, y)
    assert restored.priors() == model.priors()
    assert restored.training_priors() == model.training_priors()
    # same seed, same data: same model
    again = _make(name, kind)
    for x, y, _ in data:
        again.learn_one(x, y)
    x = data[-1][0]
    assert again.predict_proba_one(x) == model.predict_proba_one(x)


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_threshold_pickles_and_resumes_identically(name: str) -> None:
    data = _data(3000, 2)
    policy = build_threshold(name, positive="fraud")
    rng = random.Random(0)
    scored = []
    for x, y, t in data:
        s = min(max(0.1 + 0.2 * x["a"] + rng.gauss(0, 0.05), 0.0), 1.0)
        scored.append(({"fraud": s, "ok": 1 - s}, y, t))
    for proba, y, t in scored[:1500]:
        policy.decide(proba, t)
        policy.update(y, proba)
    restored = pickle.loads(pickle.dumps(policy))
    for proba, y, t in scored[1500:]:
        assert restored.decide(proba, t) == policy.decide(proba, t)
        policy.update(y, proba)
        restored.update(y, proba)


def test_unknown_strategy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="none, oob, oversample, smote, undersample, uob, weighting"):
        build_strategy("magic", _base("tree"))
