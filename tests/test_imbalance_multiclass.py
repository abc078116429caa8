"""A rare class among three (70/25/5) gets non-trivial recall from every strategy."""

from __future__ import annotations

import random

import pytest
from river import tree

from streamimb.imbalance import STRATEGIES, PriorCorrection, build_strategy

CENTRES = {"big": (0.0, 0.0, 0.0), "mid": (2.0, 0.0, 1.0), "rare": (1.0, 2.2, -1.0)}


def three_class_stream(n: int, seed: int, dist=(0.70, 0.25, 0.05)):
    rng = random.Random(seed)
    for _ in range(n):
        r = rng.random()
        y = "big" if r < dist[0] else ("mid" if r < dist[0] + dist[1] else "rare")
        cx = CENTRES[y]
        yield {f"f{i}": rng.gauss(c, 1.0) for i, c in enumerate(cx)} | {"noise": rng.random()}, y


def _run(name: str, seed: int = 0) -> dict[str, tuple[float, float]]:
    params = {"seed": seed}
    if name in ("oob", "uob"):
        params["n_models"] = 3
    model = build_strategy(name, tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-3), **params)
    policy = PriorCorrection(tracker=model.prior_tracker)
    tp: dict[str, int] = {}
    pred_n: dict[str, int] = {}
    true_n: dict[str, int] = {}
    for i, (x, y) in enumerate(three_class_stream(8000, seed)):
        pred, _, _ = policy.decide(model.predict_proba_one(x))
        if i >= 3000:
            true_n[y] = true_n.get(y, 0) + 1
            pred_n[pred] = pred_n.get(pred, 0) + 1
            tp[y] = tp.get(y, 0) + (pred == y)
        model.learn_one(x, y)
    return {c: (tp.get(c, 0) / true_n[c], tp.get(c, 0) / max(pred_n.get(c, 0), 1)) for c in true_n}


@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - {"none"}))
def test_rare_class_recall_in_a_70_25_5_stream(name: str) -> None:
    scores = _run(name)
    recall, precision = scores["rare"]
    assert recall > 0.6, scores
    assert precision > 0.2, scores
    assert scores["big"][0] > 0.5 and scores["mid"][0] > 0.5, scores


def test_strategies_beat_plain_argmax_on_rare_recall() -> None:
    plain = _run("none")["rare"][0]
    assert _run("weighting")["rare"][0] > plain
