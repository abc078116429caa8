"""Concept-drift reset: class-conditional error rates trigger a fresh model; prevalence shifts do not."""

from __future__ import annotations

import pickle
import random

from river import tree

from streamimb.imbalance import build_strategy


def _stream(n: int, seed: int, flip_at: int | None, prevalence=lambda i: 0.1):
    rng = random.Random(seed)
    for i in range(n):
        rare = rng.random() < prevalence(i)
        flipped = flip_at is not None and i >= flip_at
        # before: rare in [0.9, 1), common in [0, 0.9); after: rare in [0, 0.1), common in [0.75, 1)
        if rare:
            v = rng.uniform(0.0, 0.1) if flipped else rng.uniform(0.9, 1.0)
        else:
            v = rng.uniform(0.75, 1.0) if flipped else rng.uniform(0.0, 0.9)
        yield {"v": v, "noise": rng.random()}, ("rare" if rare else "common")


def _model(name: str = "weighting"):
    base = tree.HoeffdingTreeClassifier(grace_period=30, delta=1e-3)
    return build_strategy(name, base, drift_reset=True, seed=3)


def test_concept_drift_resets_the_model_and_it_recovers() -> None:
    model = _model()
    hits = total = 0
    for i, (x, y) in enumerate(_stream(12000, 1, flip_at=6000)):
        pred = max((p := model.predict_proba_one(x)), key=p.get) if i else None
        if i >= 9000 and y == "rare":
            total += 1
            hits += pred == "rare"
        model.learn_one(x, y)
    assert len(model.resets) == 1, model.resets
    assert 6000 < model.resets[0] < 7000
    assert hits / total > 0.8


def test_prevalence_shift_alone_does_not_reset() -> None:
    for name in ("weighting", "oob"):
        model = _model(name)
        schedule = lambda i: 0.1 if i < 5000 else (0.01 if i < 10000 else 0.2)  # noqa: E731
        stream = _stream(15000, 2, flip_at=None, prevalence=schedule)
        for x, y in stream:
            model.predict_proba_one(x)
            model.learn_one(x, y)
        assert model.resets == [], (name, model.resets)
        assert len(model.prior_tracker.changes) >= 2


def test_drift_state_pickles() -> None:
    model = _model()
    data = list(_stream(8000, 4, flip_at=4000))
    for x, y in data[:5000]:
        model.predict_proba_one(x)
        model.learn_one(x, y)
    clone = pickle.loads(pickle.dumps(model))
    for x, y in data[5000:]:
        assert clone.predict_proba_one(x) == model.predict_proba_one(x)
        model.learn_one(x, y)
        clone.learn_one(x, y)
    assert clone.resets == model.resets
