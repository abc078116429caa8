"""Threshold policies: argmax, prior correction, minimum cost, target precision, alert budget."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamimb.imbalance import PriorTracker
from streamimb.imbalance.threshold import (
    THRESHOLDS,
    AlertBudget,
    ArgMax,
    MinCost,
    PriorCorrection,
    ScoreWindow,
    TargetPrecision,
    build_threshold,
)


def test_registry_and_unknown_name() -> None:
    assert set(THRESHOLDS) == {
        "argmax", "prior_correction", "min_cost", "target_precision", "budget", "max_gmean", "max_f1"
    }  # fmt: skip
    with pytest.raises(ValueError, match="argmax, budget, max_f1, max_gmean, min_cost, prior_correction"):
        build_threshold("median")
    assert isinstance(build_threshold("budget", positive="x", max_alerts=3), AlertBudget)


def test_every_policy_returns_the_triple() -> None:
    proba = {"fraud": 0.6, "ok": 0.4}
    for name in THRESHOLDS:
        policy = build_threshold(name, positive="fraud")
        pred, alert, reason = policy.decide(proba, t=0.0)
        assert pred in proba
        assert alert == (pred == "fraud")
        assert isinstance(reason, str) and reason
        policy.update("ok", proba)
        assert build_threshold(name, positive="fraud").decide({}, t=0.0)[:2] == (None, False)


def test_argmax_multiclass_never_alerts() -> None:
    pred, alert, _ = ArgMax().decide({"a": 0.2, "b": 0.5, "c": 0.3})
    assert (pred, alert) == ("b", False)


def test_prior_correction_threshold_is_the_prior() -> None:
    tracker = PriorTracker(half_life=1000)
    for i in range(5000):
        tracker.update("fraud" if i % 50 == 0 else "ok")
    policy = PriorCorrection(positive="fraud", tracker=tracker)
    # balanced decision: alert iff p(fraud) > prior (0.02)
    assert policy.decide({"fraud": 0.03, "ok": 0.97})[1]
    assert not policy.decide({"fraud": 0.01, "ok": 0.99})[1]
    # strength 0 is plain argmax
    plain = PriorCorrection(positive="fraud", tracker=tracker, strength=0.0)
    assert not plain.decide({"fraud": 0.3, "ok": 0.7})[1]
    # a shared tracker is not updated by the policy
    policy.update("fraud", {})
    assert tracker.n_labelled == 5000
    # multi-class: the rare class wins when its probability is high relative to its prior
    multi = PriorCorrection()
    for i in range(2000):
        multi.update("c" if i % 20 == 0 else ("a" if i % 4 else "b"), {})
    corrected = multi.corrected({"a": 0.6, "b": 0.3, "c": 0.1})
    assert abs(sum(corrected.values()) - 1.0) < 1e-9
    assert multi.decide({"a": 0.6, "b": 0.3, "c": 0.1})[:2] == ("c", False)
    assert multi.decide({"a": 0.9, "b": 0.08, "c": 0.02})[:2] == ("a", False)


def test_prior_correction_follows_a_prevalence_shift() -> None:
    policy = PriorCorrection(positive="fraud", half_life=500)
    proba = {"fraud": 0.03, "ok": 0.97}
    for i in range(3000):
        policy.update("fraud" if i % 100 == 0 else "ok", {})
    assert policy.decide(proba)[1]  # prior 1% -> 3% is suspicious
    for i in range(3000):
        policy.update("fraud" if i % 10 == 0 else "ok", {})
    assert not policy.decide(proba)[1]  # prior 10% -> 3% is not


def test_min_cost_uses_the_matrix() -> None:
    proba = {"fraud": 0.05, "ok": 0.95}
    assert not MinCost(positive="fraud").decide(proba)[1]
    expensive = MinCost(positive="fraud", cost={"fraud": {"ok": 50.0}, "ok": {"fraud": 1.0}})
    assert expensive.decide(proba)[1]
    costs = expensive.expected_costs(proba)
    assert costs["ok"] == pytest.approx(2.5) and costs["fraud"] == pytest.approx(0.95)
    three = MinCost(cost={"c": {"a": 100.0, "b": 100.0}})
    assert three.decide({"a": 0.5, "b": 0.45, "c": 0.05})[0] == "c"


def _scored_stream(n: int, prevalence: float, rng: random.Random):
    for _ in range(n):
        y = "fraud" if rng.random() < prevalence else "ok"
        s = min(max(rng.gauss(0.75 if y == "fraud" else 0.3, 0.15), 0.001), 0.999)
        yield y, {"fraud": s, "ok": 1.0 - s}


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_target_precision_meets_its_target(target: float) -> None:
    rng = random.Random(1)
    policy = TargetPrecision(positive="fraud", precision=target, prior_free=False)
    tp = fp = fn = 0
    for i, (y, proba) in enumerate(_scored_stream(60000, 0.05, rng)):
        _, alert, _ = policy.decide(proba)
        if i > 10000:
            tp += alert and y == "fraud"
            fp += alert and y != "fraud"
            fn += (not alert) and y == "fraud"
        policy.update(y, proba)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision == pytest.approx(target, abs=0.04)
    assert recall > 0.2
    assert policy.threshold is not None


def test_target_precision_needs_a_positive_class_and_falls_back_to_argmax() -> None:
    with pytest.raises(ValueError):
        TargetPrecision()
    policy = TargetPrecision(positive="fraud")
    assert "argmax" in policy.decide({"fraud": 0.9, "ok": 0.1})[2]


def test_budget_per_events_caps_alerts_in_every_window() -> None:
    rng = random.Random(2)
    policy = AlertBudget(positive="fraud", max_alerts=5, per_events=1000)
    alerts = []
    for _ in range(20000):
        s = rng.random()
        alerts.append(policy.decide({"fraud": s, "ok": 1 - s})[1])
    for start in range(0, 19000, 97):
        assert sum(alerts[start : start + 1000]) <= 5
    # the budget is spent on high scores and mostly used
    assert sum(alerts) >= 60


def test_budget_per_hour_of_event_time() -> None:
    policy = AlertBudget(positive="fraud", max_alerts=3, per_seconds=3600.0, min_proba=0.5)
    times = []
    for i in range(7200):  # one event per second for two hours, all suspicious
        _, alert, reason = policy.decide({"fraud": 0.9, "ok": 0.1}, t=float(i))
        if alert:
            times.append(i)
        elif i == 100:
            assert "budget exhausted" in reason or "cut" in reason
    for t0 in times:
        assert sum(1 for t in times if t0 <= t < t0 + 3600) <= 3
    assert len(times) >= 4
    assert not policy.decide({"fraud": 0.4, "ok": 0.6}, t=7200.0)[1]  # below min_proba
    with pytest.raises(ValueError):
        AlertBudget(positive="fraud", per_seconds=10.0).decide({"fraud": 1.0})


@pytest.mark.parametrize("metric", ["gmean", "f1"])
def test_best_threshold_is_near_the_best_on_the_stream(metric: str) -> None:
    rng = random.Random(4)
    policy = build_threshold(f"max_{metric}", positive="fraud", prior_free=False)
    data = list(_scored_stream(40000, 0.05, rng))
    for y, proba in data[:20000]:
        policy.update(y, proba)
    learned = policy.threshold
    # brute-force best threshold on fresh data from the same stream
    scores = sorted({round(p["fraud"], 2) for _, p in data[20000:]})

    def value(th: float) -> float:
        tp = sum(1 for y, p in data[20000:] if y == "fraud" and p["fraud"] >= th)
        fp = sum(1 for y, p in data[20000:] if y != "fraud" and p["fraud"] >= th)
        pos = sum(1 for y, _ in data[20000:] if y == "fraud")
        neg = len(data) - 20000 - pos
        if metric == "gmean":
            return ((tp / pos) * (1 - fp / neg)) ** 0.5
        return 2 * tp / (2 * tp + fp + (pos - tp))

    best = max(value(th) for th in scores)
    assert value(learned) >= best - 0.02
    with pytest.raises(ValueError):
        build_threshold("max_f1")


# -- batch forms --------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.lists(st.lists(st.floats(-5, 5), max_size=60), max_size=8))
def test_a_score_window_extended_in_chunks_equals_one_appended_value_by_value(size, chunks):
    one, many = ScoreWindow(size), ScoreWindow(size)
    for chunk in chunks:
        for v in chunk:
            one.append(v)
        many.extend(np.array(chunk, dtype=float))
        assert len(one) == len(many)
        assert many.sorted().tolist() == one.sorted().tolist() == sorted(one.values().tolist())


def labelled_scores(n: int, seed: int = 0) -> list[tuple[str, dict[str, float]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = "fraud" if rng.random() < 0.05 else "ok"
        s = min(max(rng.gauss(0.7 if y == "fraud" else 0.3, 0.15), 0.0), 1.0)
        out.append((y, {"fraud": s, "ok": 1.0 - s}))
    return out


@pytest.mark.parametrize("name", ["max_f1", "max_gmean", "target_precision"])
def test_learned_thresholds_decide_a_batch_as_they_decide_each_event(name):
    tracker = PriorTracker(half_life=2000)
    policy = build_threshold(name, positive="fraud", tracker=tracker)
    for y, proba in labelled_scores(3000):
        tracker.update(y)
        policy.update(y, proba)
    probas = [proba for _, proba in labelled_scores(500, seed=1)] + [{}]
    one = [policy.decide(p) for p in probas]
    many = policy.decide_many(probas, [None] * len(probas))
    assert [d[:2] for d in many] == [d[:2] for d in one] and any(d[1] for d in many)
    assert [d[2] for d in many if d[1] or d[0] is None] == [d[2] for d in one if d[1] or d[0] is None]


def test_learned_thresholds_learn_a_batch_as_its_labels_one_by_one():
    tracker = PriorTracker(half_life=2000)
    one = build_threshold("max_f1", positive="fraud", tracker=tracker)
    many = build_threshold("max_f1", positive="fraud", tracker=tracker)
    data = labelled_scores(3000)
    for y, _ in data:
        tracker.update(y)  # the priors are fixed while both learn: their scores agree
    for k in range(0, len(data), 500):
        for y, proba in data[k : k + 500]:
            one.update(y, proba)
        many.update_many([y for y, _ in data[k : k + 500]], [p for _, p in data[k : k + 500]])
        one._recompute()  # at the batch's end, where the batch form recomputes
        assert math.isclose(many.threshold, one.threshold, rel_tol=1e-12)
    assert np.allclose(many._neg.sorted(), one._neg.sorted()) and np.allclose(
        many._pos.sorted(), one._pos.sorted()
    )


def test_stateful_policies_decide_a_batch_event_by_event():
    one, many = (AlertBudget(positive="fraud", max_alerts=3, per_events=100) for _ in range(2))
    probas = [{"fraud": p, "ok": 1 - p} for p in np.linspace(0.0, 1.0, 250)]
    assert many.decide_many(probas, [None] * 250) == [one.decide(p) for p in probas]
