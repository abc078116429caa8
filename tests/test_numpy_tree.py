"""The numpy Hoeffding tree: same model as river's one event at a time, batch forms, bounded size."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from river import tree
from river.datasets import synth

from streamimb.classifiers import FeatureIndex, NumpyHoeffdingTree


def agrawal(function: int, n: int, seed: int = 1) -> list[tuple[dict[str, float], int]]:
    stream = synth.Agrawal(classification_function=function, seed=seed)
    return [({k: float(v) for k, v in x.items()}, y) for x, y in stream.take(n)]


@pytest.mark.parametrize("function", [0, 2, 5, 9])
def test_one_event_at_a_time_it_predicts_what_rivers_tree_predicts(function):
    river_tree = tree.HoeffdingTreeClassifier(
        grace_period=50, delta=1e-3, split_criterion="gini", leaf_prediction="mc", max_share_to_split=1.0
    )
    ours = NumpyHoeffdingTree(
        grace_period=50, delta=1e-3, split_criterion="gini", adaptive=False, leaf_prediction="mc"
    )
    for x, y in agrawal(function, 4000):
        expected, got = river_tree.predict_proba_one(x), ours.predict_proba_one(x)
        assert set(got) >= {c for c, p in expected.items() if p > 0}
        assert all(abs(expected.get(c, 0.0) - p) < 1e-9 for c, p in got.items())
        river_tree.learn_one(x, y)
        ours.learn_one(x, y)
    assert ours.n_nodes == river_tree.n_nodes > 1


def test_batch_statistics_equal_one_at_a_time_statistics():
    data = agrawal(2, 3000)
    one = NumpyHoeffdingTree(grace_period=10**9)  # no split: compare the root's estimators
    batch = NumpyHoeffdingTree(grace_period=10**9)
    weights = np.random.default_rng(0).poisson(2.0, len(data)).astype(float)
    for (x, y), w in zip(data, weights, strict=True):
        one.learn_one(x, y, w=w)
    index = FeatureIndex()
    for k in range(0, len(data), 700):
        chunk = data[k : k + 700]
        X = index.rows([x for x, _ in chunk], grow=True)
        batch.learn_array(X, np.array([y for _, y in chunk]), weights[k : k + 700])
    assert index.names == one._features.names
    for name in ("_counts", "_weight", "_mean", "_m2", "_low", "_high"):
        np.testing.assert_allclose(getattr(batch, name)[:1], getattr(one, name)[:1], rtol=1e-9)


def test_a_batch_learns_the_same_concept_and_scores_rows_at_once():
    data = agrawal(2, 20_000)
    index, model = FeatureIndex(), NumpyHoeffdingTree()
    correct = 0
    for k in range(0, len(data), 500):
        chunk = data[k : k + 500]
        X = index.rows([x for x, _ in chunk], grow=True)
        y = np.array([y for _, y in chunk])
        if k:
            correct += int((model.predict_proba_array(X).argmax(axis=1) == y).sum())
        model.learn_array(X, y)
    assert correct / (len(data) - 500) > 0.9  # river's tree one event at a time: 0.94 on this stream
    assert model.n_nodes > 5


def test_size_is_bounded_by_max_nodes_and_max_depth():
    rng = random.Random(3)
    model = NumpyHoeffdingTree(grace_period=20, max_nodes=15, max_depth=3)
    index = FeatureIndex()
    for _ in range(40):
        xs = [{"a": rng.random(), "b": rng.random()} for _ in range(500)]
        ys = np.array([int((x["a"] * 7) % 2 > (x["b"] * 5) % 1) for x in xs])
        model.learn_array(index.rows(xs, grow=True), ys)
    assert model.n_nodes <= 15 and model.depth <= 3
    assert model._weight.shape[0] <= 15


def test_missing_values_follow_the_heavier_branch_and_absent_categories_are_zero():
    model = NumpyHoeffdingTree(grace_period=20)
    rng = random.Random(0)
    for _ in range(2000):
        card = rng.choice(["visa", "amex"])
        x = {"amount": rng.random(), f"card={card}": 1.0}
        model.learn_one(x, card == "amex" and x["amount"] > 0.5)
    assert model.predict_one({"amount": 0.9, "card=amex": 1.0}) is True
    assert model.predict_one({"amount": 0.9, "card=visa": 1.0}) is False
    assert model.predict_one({}) in (True, False)  # every feature missing: still a leaf's answer


def test_pickled_tree_predicts_the_same():
    model = NumpyHoeffdingTree()
    for x, y in agrawal(0, 3000):
        model.learn_one(x, y)
    clone = pickle.loads(pickle.dumps(model))
    probe = [x for x, _ in agrawal(0, 200, seed=9)]
    assert [model.predict_proba_one(x) for x in probe] == [clone.predict_proba_one(x) for x in probe]


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="split_criterion"):
        NumpyHoeffdingTree(split_criterion="hellinger")
    with pytest.raises(ValueError, match="max_nodes"):
        NumpyHoeffdingTree(max_nodes=0)
    with pytest.raises(ValueError, match="leaf_prediction"):
        NumpyHoeffdingTree(leaf_prediction="naive")


def test_information_gain_splits_too():
    model = NumpyHoeffdingTree(split_criterion="info_gain")
    for x, y in agrawal(0, 3000):
        model.learn_one(x, y)
    assert model.n_nodes > 1


def learn_in_batches(model, data, index, size=500):
    """Prequential accuracy per batch (scored before learned)."""
    accuracy = []
    for k in range(0, len(data), size):
        chunk = data[k : k + size]
        X = index.rows([x for x, _ in chunk], grow=True)
        y = np.array([y for _, y in chunk])
        proba = model.predict_proba_array(X)
        if proba.shape[1]:
            accuracy.append(float((proba.argmax(axis=1) == y).mean()))
        model.learn_array(X, y)
    return accuracy


def test_stale_subtrees_are_pruned_after_a_concept_change():
    before, after = agrawal(2, 15_000), agrawal(5, 10_000, seed=2)
    adaptive, frozen = NumpyHoeffdingTree(), NumpyHoeffdingTree(adaptive=False)
    got = {}
    for name, model in (("adaptive", adaptive), ("frozen", frozen)):
        index = FeatureIndex()
        learn_in_batches(model, before, index)
        got[name] = learn_in_batches(model, after, index)
    assert adaptive.n_pruned > 0 and frozen.n_pruned == 0
    assert np.mean(got["adaptive"][-10:]) > np.mean(got["frozen"][-10:]) + 0.02
    assert adaptive.n_nodes <= adaptive.max_nodes


def test_a_batch_grows_the_leaves_it_splits():
    data = agrawal(2, 1500)
    grown, one_level = NumpyHoeffdingTree(), NumpyHoeffdingTree(regrow=False)
    for model in (grown, one_level):
        learn_in_batches(model, data, FeatureIndex(), size=1500)
    assert one_level.depth == 1 and grown.depth > 1


def rare_blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A rare class (5%) shifted on two of three features: separable, but not by one threshold."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(np.intp)
    X = rng.normal(size=(n, 3))
    X[:, :2] += 2.0 * y[:, None]
    return X, y


def ranking_auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC: the chance that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[y == 1], scores[y == 0]
    return float((pos[:, None] > neg).mean() + 0.5 * (pos[:, None] == neg).mean())


@pytest.mark.parametrize("leaf_prediction", ["nb", "nba"])
def test_naive_bayes_leaves_rank_the_rows_of_one_leaf(leaf_prediction):
    X, y = rare_blobs(4000)
    test_X, test_y = rare_blobs(4000, seed=1)
    scores = {}
    for kind in ("mc", leaf_prediction):
        model = NumpyHoeffdingTree(grace_period=10**9, leaf_prediction=kind)  # a single leaf
        for k in range(0, len(X), 500):
            model.learn_array(X[k : k + 500], y[k : k + 500])
        assert model.n_nodes == 1
        scores[kind] = model.predict_proba_array(test_X)[:, 1]
    assert len(np.unique(scores["mc"])) == 1  # one leaf, one score: no ranking at all
    assert len(np.unique(scores[leaf_prediction])) > 3000
    assert ranking_auc(scores[leaf_prediction], test_y) > 0.95
    assert np.allclose(NumpyHoeffdingTree(leaf_prediction=leaf_prediction).predict_proba_array(X), 0.0)


def test_naive_bayes_leaves_split_like_majority_leaves_and_score_a_growing_tree():
    X, y = rare_blobs(20_000)
    test_X, test_y = rare_blobs(4000, seed=1)
    models = {kind: NumpyHoeffdingTree(leaf_prediction=kind) for kind in ("mc", "nb", "nba")}
    for model in models.values():
        for k in range(0, len(X), 500):
            model.learn_array(X[k : k + 500], y[k : k + 500])
    assert models["mc"].n_nodes == models["nb"].n_nodes == models["nba"].n_nodes > 1
    auc = {kind: ranking_auc(m.predict_proba_array(test_X)[:, 1], test_y) for kind, m in models.items()}
    assert auc["nb"] > auc["mc"] and auc["nb"] > 0.95 and auc["nba"] > 0.95
    proba = models["nb"].predict_proba_array(test_X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # a vote of one member is its probabilities
    votes, voters = np.zeros((len(test_X), 2)), np.zeros(len(test_X))
    models["nb"].vote_array(test_X, votes, voters)
    np.testing.assert_allclose(votes, proba)
    assert (voters == 1).all()


def test_naive_bayes_adaptive_leaves_fall_back_to_majority_where_it_is_more_often_right():
    rng = np.random.default_rng(2)
    y = (rng.random(3000) < 0.3).astype(np.intp)
    # twenty copies of one weak feature: naive Bayes counts its evidence twenty times and errs
    X = np.repeat(rng.normal(size=(3000, 1)) + 0.5 * y[:, None], 20, axis=1)
    model = NumpyHoeffdingTree(grace_period=10**9, leaf_prediction="nba")
    for k in range(0, len(X), 500):
        model.learn_array(X[k : k + 500], y[k : k + 500])
    assert model._mc_correct[0] > model._nb_correct[0] > 0
    np.testing.assert_allclose(model.predict_proba_array(X[:5]), [[0.7, 0.3]] * 5, atol=0.02)


def test_pickled_naive_bayes_tree_predicts_the_same_and_old_pickles_keep_majority_leaves():
    data = agrawal(2, 3000)
    model = NumpyHoeffdingTree(leaf_prediction="nba")
    for x, y in data:
        model.learn_one(x, y)
    probe = [x for x, _ in agrawal(2, 200, seed=9)]
    clone = pickle.loads(pickle.dumps(model))
    assert [model.predict_proba_one(x) for x in probe] == [clone.predict_proba_one(x) for x in probe]
    old_state = dict(model.__dict__)  # as pickled before leaf predictions existed
    for name in ("leaf_prediction", "_mc_correct", "_nb_correct"):
        del old_state[name]
    old = NumpyHoeffdingTree.__new__(NumpyHoeffdingTree)
    old.__setstate__(old_state)
    model.leaf_prediction = "mc"
    assert old.leaf_prediction == "mc"
    assert [old.predict_proba_one(x) for x in probe] == [model.predict_proba_one(x) for x in probe]
    old.learn_one(probe[0], True)  # and it still learns
