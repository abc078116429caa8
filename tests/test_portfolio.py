"""The portfolio of candidate models, its online selection and its batch candidates."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from river import linear_model

from streamimb.classifiers.boosting import WindowedBoosting
from streamimb.classifiers.linear import NumpyLogisticRegression
from streamimb.classifiers.portfolio import Portfolio
from streamimb.config import ModelConfig
from streamimb.evaluation.metrics import pr_auc
from streamimb.events import Event
from streamimb.processor import Processor
from streamimb.registry import build_classifier, params_problem
from streamimb.service.telemetry import Telemetry, processor_stats


def rare_rows(n: int, seed: int = 0, rate: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Two informative columns and one of noise; class 1 where a noisy sum is high (about ``rate``)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=n) > np.quantile(X[:, 0], 1 - rate) * 1.1).astype(
        int
    )
    return X, y


def prequential(model, X: np.ndarray, y: np.ndarray, batch: int = 250) -> np.ndarray:
    """Score each batch with the array API, then learn it; the class-1 scores."""
    scores = []
    for start in range(0, len(X), batch):
        part = slice(start, start + batch)
        proba = model.predict_proba_array(X[part])
        scores.append(proba[:, 1] if proba.shape[1] > 1 else np.zeros(len(proba)))
        model.learn_array(X[part], y[part])
    return np.concatenate(scores)


def test_linear_model_ranks_a_rare_class_and_survives_pickling():
    X, y = rare_rows(6000)
    model = NumpyLogisticRegression()
    scores = prequential(model, X, y)
    assert pr_auc(y[3000:], scores[3000:]) > 0.6
    clone = pickle.loads(pickle.dumps(model))
    assert np.array_equal(clone.predict_proba_array(X[:50]), model.predict_proba_array(X[:50]))


def test_linear_model_takes_new_columns_and_missing_values():
    model = NumpyLogisticRegression()
    model.learn_array(np.array([[1.0], [-1.0]]), np.array([1, 0]))
    model.learn_array(np.array([[1.0, np.nan], [np.nan, 2.0]]), np.array([1, 0]))
    proba = model.predict_proba_array(np.array([[np.nan, np.nan], [1.0, 0.0]]))
    assert proba.shape == (2, 2) and np.allclose(proba.sum(axis=1), 1.0) and not np.isnan(proba).any()


def test_windowed_boosting_keeps_the_rare_class_and_maps_back_to_the_stream_prevalence():
    X, y = rare_rows(20_000, seed=1, rate=0.01)
    model = WindowedBoosting(per_class=2000, refit_every=5000, background=False)
    scores = prequential(model, X, y)
    assert model.n_refits >= 3 and pr_auc(y[10_000:], scores[10_000:]) > 0.6
    # The window holds 2000 negatives but every positive: probabilities still average near the 1% prevalence.
    assert 0.003 < model.predict_proba_array(X[-5000:])[:, 1].mean() < 0.03


def test_background_refits_are_adopted_at_the_same_rows_whatever_the_timing():
    X, y = rare_rows(12_000, seed=2)
    runs = []
    for _ in range(2):
        model = WindowedBoosting(refit_every=3000, adopt_after=500)
        runs.append(prequential(model, X, y))
    assert np.array_equal(runs[0], runs[1])
    # A checkpoint taken while a refit is in flight restores to the same scores.
    model = WindowedBoosting(refit_every=3000, adopt_after=500)
    prequential(model, X[:6100], y[:6100], batch=100)
    assert model._in_flight()
    clone = pickle.loads(pickle.dumps(model))
    rest = slice(6100, 8000)
    assert np.array_equal(prequential(model, X[rest], y[rest]), prequential(clone, X[rest], y[rest]))


def test_portfolio_serves_the_candidate_that_ranks_best():
    rng = random.Random(0)
    informed = linear_model.LogisticRegression()

    class Noise(linear_model.LogisticRegression):
        def predict_proba_one(self, x):
            p = rng.random()
            return {False: 1 - p, True: p}

    portfolio = Portfolio({"noise": Noise(), "mine": informed}, window=3000, blend=False, check_every=100)
    assert portfolio.served == "noise"  # the first candidate, until the window holds evidence
    for _ in range(6000):
        x = {"a": rng.gauss(0, 1)}
        portfolio.predict_proba_one(x)
        portfolio.learn_one(x, x["a"] > 1.6)
    summary = portfolio.summary()
    assert portfolio.served == "mine" and summary["switches"][0][1:] == ["noise", "mine"]
    assert summary["candidates"]["mine"]["pr_auc"] > 0.9 > 0.2 > summary["candidates"]["noise"]["pr_auc"]


def card_events(n: int, seed: int = 3) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        fraud = rng.random() < 0.03
        amount = rng.lognormvariate(5 if fraud else 3, 1)
        country = rng.choice(["US", "NG"] if fraud else ["FR", "DE", "US"])
        features = {"amount": amount, "hour": float(rng.randrange(24)), "country": country}
        events.append(Event(id=str(i), time=None, features=features, label="1" if fraud else "0"))
    return events


def test_processor_with_a_portfolio_reports_and_exports_the_served_model():
    config = ModelConfig(
        classifier={"kind": "portfolio", "params": {"candidates": {
            "linear": {"kind": "numpy_logistic_regression"},
            "boosting": {"kind": "windowed_boosting", "params": {"refit_every": 2000, "background": False}},
        }}},
    )  # fmt: skip
    p = Processor(config, positive="1", classes=["0", "1"])
    events = card_events(6000)
    for start in range(0, len(events), 500):
        p.process_many(events[start : start + 500])
    report = p.report()
    assert report["strategy"] == "per candidate" and report["model"]["served"] in (
        "linear",
        "boosting",
        "blend",
    )
    assert set(report["model"]["candidates"]) == {"linear", "boosting", "blend"}
    assert report["model"]["candidates"]["boosting"]["pr_auc"] > 0.5
    assert report["metrics"]["pr_auc"] > 0.5

    stats = processor_stats(p)
    assert stats.served == report["model"]["served"] and set(stats.candidates) == {
        "linear",
        "boosting",
        "blend",
    }
    registry = CollectorRegistry()
    telemetry = Telemetry(registry=registry)
    telemetry.add_state_source(lambda: {0: stats})
    served = {
        c: registry.get_sample_value("streamimb_served_model", {"candidate": c})
        for c in ("linear", "boosting", "blend")
    }
    assert served[stats.served] == 1.0 and sum(served.values()) == 1.0
    assert registry.get_sample_value("streamimb_candidate_pr_auc", {"candidate": "boosting"}) > 0.5
    assert registry.get_sample_value("streamimb_model_switches_total") == len(report["model"]["switches"])

    restored = pickle.loads(pickle.dumps(p))
    more = card_events(1000, seed=4)
    assert [v.proba for v in restored.process_many(more)[0]] == [v.proba for v in p.process_many(more)[0]]


def test_portfolio_configuration_is_validated():
    assert params_problem("classifier", "portfolio", {"candidates": {}, "margin": 0.05}) is None
    assert "marginn" in params_problem("classifier", "portfolio", {"marginn": 0.05})
    with pytest.raises(ValueError, match="candidate 'x'"):
        build_classifier("portfolio", candidates={"x": {"kind": "numpy_logistic_regression", "lr": 1}})
    with pytest.raises(ValueError, match="blend"):
        Portfolio({"blend": linear_model.LogisticRegression()})


def test_a_users_river_estimator_is_a_candidate_by_registering_it(monkeypatch):
    from streamimb import registry

    monkeypatch.setitem(registry.CLASSIFIERS, "my_lr", lambda: linear_model.LogisticRegression())
    config = ModelConfig(
        classifier={"kind": "portfolio", "params": {"candidates": {"mine": {"kind": "my_lr"}}}},
    )
    p = Processor(config, positive="1", classes=["0", "1"])
    p.process_many(card_events(600))
    assert list(p.classifier.candidates) == ["mine"] and p.report()["model"]["served"] == "mine"


@pytest.mark.parametrize(("learn_slice", "calls"), [(100, 5), (500, 1)])
def test_labelled_batches_are_learned_in_slices_of_learn_slice(learn_slice, calls):
    """Each slice is scored by the model that learned the slices before it."""
    config = ModelConfig(
        learn_slice=learn_slice,
        classifier={"kind": "numpy_logistic_regression"},
        imbalance={"strategy": "none"},
    )
    p = Processor(config, positive="1", classes=["0", "1"])
    events = card_events(3000)
    for start in range(0, 2500, 500):
        p.process_many(events[start : start + 500])
    learned = []
    original = p.classifier.learn_batch
    p.classifier.learn_batch = lambda xs, ys, ts=None: (learned.append(len(xs)), original(xs, ys, ts))
    p.process_many(events[2500:])
    assert learned == [500 // calls] * calls
