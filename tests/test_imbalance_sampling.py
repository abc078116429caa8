"""Online over/under-sampling and OOB/UOB: rates follow the priors."""

from __future__ import annotations

import random
import statistics

import pytest
from river import base, tree

from streamimb.imbalance import OOB, UOB, OnlineOverSampler, OnlineUnderSampler, build_strategy
from streamimb.imbalance.sampling import poisson, sampling_rates


class Counter(base.Classifier):
    """Counts weighted updates per class."""

    def __init__(self) -> None:
        self.mass: dict[object, float] = {}
        self.calls = 0

    @property
    def _multiclass(self) -> bool:
        return True

    def learn_one(self, x, y, w=1.0):
        self.mass[y] = self.mass.get(y, 0.0) + w
        self.calls += 1

    def predict_proba_one(self, x):
        return {}


def _labels(schedule, seed):
    rng = random.Random(seed)
    return ["rare" if rng.random() < p else "common" for n, p in schedule for _ in range(n)]


def test_sampling_rates() -> None:
    over = sampling_rates({"a": 0.7, "b": 0.25, "c": 0.05})
    assert over["a"] == 1.0 and over["b"] == pytest.approx(2.8) and over["c"] == pytest.approx(14.0)
    under = sampling_rates({"a": 0.7, "b": 0.25, "c": 0.05}, mode="under")
    assert under["c"] == 1.0 and under["a"] == pytest.approx(0.05 / 0.7)
    assert sampling_rates({"a": 0.999, "b": 0.001}, max_rate=50)["b"] == 50
    assert sampling_rates({"a": 0.999, "b": 0.001}, mode="under", min_rate=0.01)["a"] == 0.01
    with pytest.raises(ValueError):
        sampling_rates({"a": 1.0}, mode="sideways")


def test_poisson_mean_and_variance() -> None:
    rng = random.Random(0)
    for lam in (0.05, 1.0, 7.0, 60.0):
        draws = [poisson(lam, rng) for _ in range(20000)]
        assert statistics.fmean(draws) == pytest.approx(lam, rel=0.05, abs=0.01)
        assert statistics.pvariance(draws) == pytest.approx(lam, rel=0.1, abs=0.01)


@pytest.mark.parametrize("cls", [OOB, UOB])
def test_bagging_rates_follow_the_priors(cls) -> None:
    model = cls(Counter(), n_models=4, half_life=1000, seed=1)
    labels = _labels([(15000, 0.01), (15000, 0.05)], 2)
    rates_before = None
    for i, y in enumerate(labels):
        model.learn_one({"v": 1.0}, y)
        if i == 14999:
            rates_before = model.rates()
    rates_after = model.rates()
    if cls is OOB:
        assert rates_before["common"] == rates_after["common"] == 1.0
        assert 60 < rates_before["rare"] < 160  # ~ 0.99 / 0.01
        assert 12 < rates_after["rare"] < 30  # ~ 0.95 / 0.05
    else:
        assert rates_before["rare"] == rates_after["rare"] == 1.0
        assert 0.006 < rates_before["common"] < 0.017
        assert 0.035 < rates_after["common"] < 0.08
    # every member saw a roughly balanced stream over the last segment
    assert len(model.models) == 4
    for member in model.models:
        share = member.mass["rare"] / sum(member.mass.values())
        assert 0.3 < share < 0.7
    assert 0.4 < model.training_priors()["rare"] < 0.6


def test_uob_skips_most_majority_updates() -> None:
    model = UOB(Counter(), n_models=5, seed=0)
    for y in _labels([(20000, 0.02)], 3):
        model.learn_one({"v": 1.0}, y)
    calls = sum(m.calls for m in model.models)
    assert calls < 0.1 * 20000 * 5


@pytest.mark.parametrize("cls", [OnlineOverSampler, OnlineUnderSampler])
def test_single_model_resampling_balances(cls) -> None:
    model = cls(Counter(), half_life=1000, max_rate=1000, seed=3)
    capped = cls(Counter(), half_life=1000, max_rate=50, seed=3)
    for y in _labels([(10000, 0.03), (10000, 0.003)], 4):
        model.learn_one({"v": 1.0}, y)
        capped.learn_one({"v": 1.0}, y)
    assert 0.35 < model.training_priors()["rare"] < 0.65
    if cls is OnlineOverSampler:  # capped at 50 copies: 0.003 * 50 / (0.997 + 0.15) ~ 0.13
        assert 0.06 < capped.training_priors()["rare"] < 0.25
    mass = model.models[0].mass
    assert mass["rare"] > 0 and mass["common"] > 0


def test_members_get_distinct_seeds() -> None:
    from river import forest

    model = build_strategy("oob", forest.ARFClassifier(n_models=2), n_models=3, seed=5)
    model.learn_one({"v": 1.0}, "a")
    seeds = [m.seed for m in model.models]
    assert len(set(seeds)) == 3


def test_oob_learns_a_rare_region() -> None:
    rng = random.Random(8)
    model = OOB(tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3), n_models=5, seed=8)
    hits = total = 0
    for i in range(20000):
        x = {"a": rng.random(), "b": rng.random()}
        y = "rare" if x["a"] > 0.9 and x["b"] > 0.8 else "common"
        if i > 10000 and y == "rare":
            total += 1
            hits += model.predict_one(x) == "rare"
        model.learn_one(x, y)
    assert hits / total > 0.8
