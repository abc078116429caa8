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


def test_a_group_of_error_monitors_updates_as_each_one_alone() -> None:
    """`update_monitors` (the ensemble's members in one pass) gives each monitor's own answers and state,
    with members that know none of the rows, a class seen late and a member set up differently."""
    import numpy as np

    from streamimb.imbalance.monitor import ClassErrorMonitor, update_monitors

    rng = np.random.default_rng(5)
    for settings in ({}, {"margin": 0.05}):
        group = [ClassErrorMonitor(), ClassErrorMonitor(), ClassErrorMonitor(**settings)]
        alone = [ClassErrorMonitor(), ClassErrorMonitor(), ClassErrorMonitor(**settings)]
        rose_any = False
        for step in range(60):
            n = int(rng.integers(1, 400))
            y = rng.integers(0, 2 if step < 20 else 3, size=n)
            error_rate = 0.1 if step < 40 else 0.6  # the errors rise: some monitor must say so
            wrong = rng.random((3, n)) < error_rate
            known = rng.random((3, n)) < 0.8
            known[1] = step % 3 != 0 and known[1]  # member 1 knows nothing every third batch
            got = update_monitors(group, wrong, known, y)
            want = [
                bool(k.any()) and m.update(w[k], y[k]) for m, w, k in zip(alone, wrong, known, strict=True)
            ]
            assert got == want
            rose_any |= any(got)
            for a, b in zip(group, alone, strict=True):
                k = b._mass.shape[1]
                assert np.array_equal(a._mass[:, :k], b._mass) and not a._mass[:, k:].any()
                assert np.array_equal(a._errors[:, :k], b._errors)
        assert rose_any
