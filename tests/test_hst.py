"""The numpy half-space trees against river's, event by event and a batch at a time."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import anomaly

from streamimb.detectors.anomaly import build_detector
from streamimb.detectors.hst import HalfSpaceTrees, ScaledHalfSpaceTrees, SquashScaler, rows_of


def unit_stream(n: int, d: int = 4, missing: float = 0.0, seed: int = 0) -> list[dict[str, float]]:
    """Features in [0, 1]; a share of values left out (the first event has them all)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {f"f{j}": rng.random() ** (1 + j) for j in range(d) if i == 0 or rng.random() >= missing}
        if i % 97 == 0:
            x = {k: min(1.0, v * 3.0) for k, v in x.items()}  # an occasional outlier
        out.append(x)
    return out


def card_like(n: int, seed: int = 1) -> list[dict[str, float]]:
    """Unscaled numbers plus one-hot categories (absent keys), as the Processor's feature extractor gives."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = {
            "amount": rng.lognormvariate(3.0, 1.0),
            "hour": rng.uniform(0, 24),
            "flag": float(rng.random() < 0.1),
        }
        x[f"country={rng.choice('ABCD')}"] = 1.0
        x[f"cat={rng.choice('xyz')}"] = 1.0
        out.append(x)
    return out


def river_prequential(model, xs):
    scores = []
    for x in xs:
        scores.append(float(model.score_one(x)))
        model.learn_one(x)
    return np.array(scores)


def heap_masses(river_hst: anomaly.HalfSpaceTrees) -> tuple[np.ndarray, np.ndarray]:
    """river's node masses laid out like ours: one row per tree, nodes in heap order."""
    rows_l, rows_r = [], []
    for root in river_hst.trees:
        level, lm, rm = [root], [], []
        while level:
            lm += [n.l_mass for n in level]
            rm += [n.r_mass for n in level]
            level = [c for n in level for c in getattr(n, "children", ())]
        rows_l.append(lm)
        rows_r.append(rm)
    return np.array(rows_l), np.array(rows_r)


@pytest.mark.parametrize(
    ("n_trees", "height", "window", "missing"),
    [(25, 8, 250, 0.0), (10, 6, 50, 0.3), (5, 3, 7, 0.6), (8, 5, 33, 0.1)],
)
def test_batches_reproduce_river_scores_and_masses(n_trees, height, window, missing):
    xs = unit_stream(2500, missing=missing, seed=n_trees)
    river_hst = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window, seed=7)
    expected = river_prequential(river_hst, xs)
    ours = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window, seed=7, features=sorted(xs[0]))
    X = rows_of(xs, ours.feature_names)
    got, start = [], 0
    for size in [1, 2, 5, 300, 17, 999, window, 500, 3000]:  # batches across window swaps, single rows
        got.extend(ours.score_learn_many(X[start : start + size]))
        start += size
    np.testing.assert_array_equal(np.array(got), expected)
    assert expected[window:].std() > 0  # the comparison is not vacuous
    l_mass, r_mass = heap_masses(river_hst)
    np.testing.assert_array_equal(ours._l_mass, l_mass)
    np.testing.assert_array_equal(ours._r_mass, r_mass)
    assert ours.counter == river_hst.counter


def test_per_event_api_matches_river_with_limits():
    rename = {"f0": ("a", 10.0, 0.0), "f1": ("b", 1.0, -0.5), "f2": ("c", 1.0, 0.0)}
    xs = [
        {rename[k][0]: rename[k][1] * v + rename[k][2] for k, v in x.items()}
        for x in unit_stream(1200, d=3, missing=0.2)
    ]
    limits = {"a": (0.0, 10.0), "b": (-0.5, 0.5)}
    river_hst = anomaly.HalfSpaceTrees(n_trees=6, height=5, window_size=40, limits=limits, seed=3)
    ours = HalfSpaceTrees(n_trees=6, height=5, window_size=40, limits=limits, seed=3)
    np.testing.assert_array_equal(river_prequential(ours, xs), river_prequential(river_hst, xs))
    assert ours.feature_names == ["a", "b", "c"]


def test_batch_forms_match_the_per_event_forms():
    xs = unit_stream(1500, missing=0.25, seed=4)
    a = HalfSpaceTrees(n_trees=7, height=6, window_size=100, seed=1)
    for x in xs[:700]:
        a.learn_one(x)
    b = HalfSpaceTrees(n_trees=7, height=6, window_size=100, seed=1, features=a.feature_names)
    b.learn_many(a.rows(xs[:700]))  # learn_many == learn_one in a loop
    np.testing.assert_array_equal(a._l_mass, b._l_mass)
    np.testing.assert_array_equal(a._r_mass, b._r_mass)
    X = a.rows(xs[700:])
    before = a._l_mass.copy()
    scores = b.score_many(X)  # scores with the model as it is, learns nothing
    np.testing.assert_array_equal(scores, [a.score_one(x) for x in xs[700:]])
    np.testing.assert_array_equal(b._l_mass, before)
    assert b.counter == a.counter


def test_unlearned_rows_are_scored_only():
    xs = unit_stream(1200, missing=0.3, seed=5)
    learn = np.array([i % 3 != 1 for i in range(len(xs))])  # river grows its trees on the first learned
    river_hst = anomaly.HalfSpaceTrees(n_trees=9, height=6, window_size=60, seed=2)
    expected = []
    for x, keep in zip(xs, learn, strict=True):
        expected.append(river_hst.score_one(x))
        if keep:
            river_hst.learn_one(x)
    ours = HalfSpaceTrees(n_trees=9, height=6, window_size=60, seed=2, features=sorted(xs[0]))
    X = ours.rows(xs)
    got = np.concatenate(
        [ours.score_learn_many(X[k : k + 250], learn=learn[k : k + 250]) for k in range(0, 1200, 250)]
    )
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    window=st.integers(2, 40),
    height=st.integers(1, 5),
    missing=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    cuts=st.lists(st.integers(1, 150), min_size=1, max_size=6),
)
def test_any_batching_reproduces_river(seed, window, height, missing, cuts):
    xs = unit_stream(300, d=3, missing=missing, seed=seed)
    expected = river_prequential(
        anomaly.HalfSpaceTrees(n_trees=4, height=height, window_size=window, seed=seed), xs
    )
    ours = HalfSpaceTrees(n_trees=4, height=height, window_size=window, seed=seed, features=sorted(xs[0]))
    X, got, start = ours.rows(xs), [], 0
    for size in [*cuts, 300]:
        got.extend(ours.score_learn_many(X[start : start + size]))
        start += size
    np.testing.assert_array_equal(np.array(got), expected)


def test_scaled_trees_match_the_river_pipeline():
    """Same scores as ``half_space_trees`` (river's trees behind the SquashScaler), in any batching."""
    xs = card_like(4000)
    expected = river_prequential(build_detector("half_space_trees", seed=11), xs)
    det = build_detector("numpy_half_space_trees", seed=11)
    assert isinstance(det, ScaledHalfSpaceTrees)
    got = [det.score_one(xs[0])]
    det.learn_one(xs[0])
    start = 1
    for size in [3, 500, 1, 250, 1000, 7, 4000]:
        got.extend(det.score_learn_many(det.rows(xs[start : start + size])))
        start += size
    np.testing.assert_array_equal(np.array(got), expected)
    one_by_one = build_detector("numpy_half_space_trees", seed=11)
    np.testing.assert_array_equal(river_prequential(one_by_one, xs[:1500]), expected[:1500])


def test_the_scaler_batch_matches_its_rows_one_by_one():
    """Prequential batches (a learn mask, missing values, a new feature) give the per-row values, to the
    last bits that the batch formula rounds differently; NaN where a value is missing."""
    rng = np.random.default_rng(5)
    X = rng.normal(3.0, 2.0, size=(900, 4)) * np.array([1.0, 1e-3, 1e3, 1.0])
    X[rng.random(X.shape) < 0.3] = np.nan
    X[:400, 3] = np.nan  # a feature first seen in the second batch
    learn = rng.random(900) < 0.8
    batch, alone = SquashScaler(4), SquashScaler(4)
    for start, stop in ((0, 1), (1, 350), (350, 900)):
        before, after = batch.transform_learn_many(X[start:stop], learn[start:stop])
        for i in range(start, stop):
            np.testing.assert_allclose(before[i - start], alone.transform_row(X[i]), rtol=1e-12)
            if learn[i]:
                alone.learn_row(X[i])
            np.testing.assert_allclose(after[i - start], alone.transform_row(X[i]), rtol=1e-12)
    np.testing.assert_allclose(batch._mean, alone._mean, rtol=1e-12)
    np.testing.assert_allclose(batch._var, alone._var, rtol=1e-9)


def test_scaled_trees_pickle_and_flag_outliers():
    xs = card_like(1500, seed=2)
    det = ScaledHalfSpaceTrees(n_trees=10, height=6, window_size=100, seed=1)
    det.learn_one(xs[0])
    det.score_learn_many(det.rows(xs[1:1000]))
    clone = pickle.loads(pickle.dumps(det))
    X = det.rows(xs[1000:])
    np.testing.assert_array_equal(det.score_learn_many(X), clone.score_learn_many(X))
    normal = det.score_one({**xs[5]})
    outlier = det.score_one({**xs[5], "amount": 1e6, "hour": -50.0})
    assert outlier > normal


def test_input_checks():
    trees = HalfSpaceTrees(n_trees=2, height=2, features=["a", "b"])
    with pytest.raises(ValueError, match="2 columns"):
        trees.score_learn_many(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="feature order"):
        HalfSpaceTrees().learn_many(np.zeros((1, 1)))
    fresh = ScaledHalfSpaceTrees()
    assert fresh.feature_names is None and fresh.score_one({"a": 1.0}) == 0.0
    fresh.learn_one({})  # nothing to learn from: the trees wait for a non-empty event
    assert fresh.feature_names is None
