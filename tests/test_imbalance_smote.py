"""Online SMOTE: samples on segments between buffered minority points, bounded buffers, adaptive rate."""

from __future__ import annotations

import random

import numpy as np
import pytest
from river import base

from streamimb.imbalance import OnlineSMOTE
from streamimb.imbalance.smote import MinorityBuffer, interpolate


class Sink(base.Classifier):
    def __init__(self) -> None:
        self.seen: list[tuple[dict, object]] = []

    @property
    def _multiclass(self) -> bool:
        return True

    def learn_one(self, x, y, w=1.0):
        self.seen.append((x, y))

    def predict_proba_one(self, x):
        return {}


def _on_segment(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    d = b - a
    if not np.any(d):
        return bool(np.allclose(z, a))
    u = float(np.dot(z - a, d) / np.dot(d, d))
    return -1e-9 <= u <= 1 + 1e-9 and np.allclose(a + u * d, z, atol=1e-9)


def test_synthetic_samples_lie_between_the_new_point_and_a_buffered_neighbour() -> None:
    rng = random.Random(0)
    model = OnlineSMOTE(Sink(), k_neighbors=3, buffer_size=50, seed=0)
    real: list[dict] = []
    for _ in range(5000):
        rare = rng.random() < 0.05
        x = {
            "a": rng.gauss(5 if rare else 0, 1),
            "b": rng.gauss(2 if rare else 0, 3),
            "cat": rng.choice("xyz"),
        }
        y = "rare" if rare else "common"
        n_before = len(model.models[0].seen) if model.models else 0
        model.learn_one(x, y)
        seen = model.models[0].seen
        new = seen[n_before:]
        assert new[0] == (x, y)
        synthetic = new[1:]
        if y == "common":
            assert synthetic == []
        buffered = [p for p, lab in zip(real, ["rare"] * len(real), strict=True)][-50:]
        for z, lab in synthetic:
            assert lab == "rare"
            zv = np.array([z["a"], z["b"]])
            xv = np.array([x["a"], x["b"]])
            assert any(_on_segment(zv, xv, np.array([p["a"], p["b"]])) for p in buffered)
            assert z["cat"] in {x["cat"]} | {p["cat"] for p in buffered}
        if rare:
            real.append(x)
    assert model.n_synthetic > 1000
    assert len(model.buffer("rare")) == 50
    assert model.buffer("common") is not None and len(model.buffer("common")) == 0


def test_rate_follows_the_imbalance() -> None:
    model = OnlineSMOTE(Sink(), max_rate=50, half_life=500, seed=1)
    rng = random.Random(1)
    for i in range(4000):
        p = 0.02 if i < 2000 else 0.2
        model.learn_one({"v": rng.random()}, "rare" if rng.random() < p else "common")
        if i == 1999:
            assert 25 < model.synthetic_rate("rare") <= 50
    assert 2 < model.synthetic_rate("rare") < 6
    assert model.synthetic_rate("common") == 0.0
    assert 0.35 < model.training_priors()["rare"] < 0.65


def test_buffer_is_bounded_and_finds_neighbours() -> None:
    buf = MinorityBuffer(capacity=10)
    for i in range(100):
        buf.add({"x": float(i), "y": float(i % 3), "name": "n"})
    assert len(buf) == 10
    assert sorted(p["x"] for p in buf.points) == [float(i) for i in range(90, 100)]
    near = buf.neighbours({"x": 95.2, "y": 2.0}, k=3)
    assert len(near) == 3 and near[0]["x"] == 95.0
    buf.add({"x": 1.0, "z": 7.0})  # a new numeric feature widens the matrix
    assert len(buf.neighbours({"z": 7.0}, k=1)) == 1


def test_interpolate_handles_missing_and_categorical() -> None:
    z = interpolate({"a": 1.0, "c": "u"}, {"a": 3.0, "b": 4.0, "c": "v"}, 0.75)
    assert z == {"a": 2.5, "c": "v", "b": 4.0}


@pytest.mark.parametrize("k", [1, 5])
def test_multiclass_smote_oversamples_every_smaller_class(k: int) -> None:
    model = OnlineSMOTE(Sink(), k_neighbors=k, seed=2)
    rng = random.Random(2)
    for _ in range(3000):
        r = rng.random()
        y = "a" if r < 0.7 else ("b" if r < 0.95 else "c")
        model.learn_one({"v": rng.random()}, y)
    counts: dict[object, int] = {}
    for _, y in model.models[0].seen:
        counts[y] = counts.get(y, 0) + 1
    assert counts["b"] > 1.5 * 0.25 * 3000 and counts["c"] > 5 * 0.05 * 3000
