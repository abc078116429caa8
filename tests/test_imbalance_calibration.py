"""PriorShiftCalibrator: learns to temper over-confident models and keeps following the priors."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from streamimb.imbalance.calibration import PriorShiftCalibrator

TRAIN = {"rare": 0.5, "common": 0.5}


def _overconfident(rng: random.Random, prevalence: float):
    """A balanced-trained model that is right 80% of the time but always says 0.99."""
    y = "rare" if rng.random() < prevalence else "common"
    right = rng.random() < 0.8
    said = y if right else ("common" if y == "rare" else "rare")
    q = {said: 0.99, ("common" if said == "rare" else "rare"): 0.01}
    return y, q


def _log_loss(cal: PriorShiftCalibrator, data, priors) -> float:
    return -sum(math.log(max(cal.transform(q, priors, TRAIN)[y], 1e-12)) for y, q in data) / len(data)


def test_identity_before_learning_is_the_bayes_correction() -> None:
    cal = PriorShiftCalibrator()
    out = cal.transform({"rare": 0.8, "common": 0.2}, {"rare": 0.1, "common": 0.9}, TRAIN)
    # odds 4 * prior odds 1/9
    assert out["rare"] == pytest.approx(4 / 9 / (1 + 4 / 9), rel=1e-2)  # up to the smoothing eps
    assert cal.transform({}, {"rare": 0.1, "common": 0.9}, TRAIN) == {}


def test_learns_a_temperature_and_improves_log_loss() -> None:
    rng = random.Random(0)
    priors = {"rare": 0.05, "common": 0.95}
    data = [_overconfident(rng, 0.05) for _ in range(20000)]
    cal = PriorShiftCalibrator()
    before = _log_loss(cal, data[10000:], priors)
    for y, q in data[:10000]:
        cal.learn(q, priors, TRAIN, y)
    after = _log_loss(cal, data[10000:], priors)
    assert cal.temperature < 0.6
    assert after < 0.7 * before


def test_prior_term_follows_a_prevalence_shift_without_relearning() -> None:
    rng = random.Random(1)
    cal = PriorShiftCalibrator()
    for _ in range(10000):
        y, q = _overconfident(rng, 0.05)
        cal.learn(q, {"rare": 0.05, "common": 0.95}, TRAIN, y)
    q = {"rare": 0.99, "common": 0.01}
    low = cal.transform(q, {"rare": 0.01, "common": 0.99}, TRAIN)["rare"]
    high = cal.transform(q, {"rare": 0.2, "common": 0.8}, TRAIN)["rare"]
    assert low < high
    restored = pickle.loads(pickle.dumps(cal))
    assert restored.transform(q, {"rare": 0.2, "common": 0.8}, TRAIN) == cal.transform(
        q, {"rare": 0.2, "common": 0.8}, TRAIN
    )
