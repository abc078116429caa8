import numpy as np
import pytest

from streamimb.evaluation.metrics import binary_metrics, multiclass_metrics, pr_auc, roc_auc


def brute_force_auc(y, s):
    pos = [si for yi, si in zip(y, s, strict=True) if yi]
    neg = [si for yi, si in zip(y, s, strict=True) if not yi]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def brute_force_ap(y, s):
    # precision at each positive, ties broken pessimistically-by-group as in the step definition
    thresholds = sorted(set(s), reverse=True)
    n_pos = sum(y)
    ap, prev_recall = 0.0, 0.0
    for t in thresholds:
        pred = [si >= t for si in s]
        tp = sum(p and yi for p, yi in zip(pred, y, strict=True))
        fp = sum(p and not yi for p, yi in zip(pred, y, strict=True))
        recall = tp / n_pos
        ap += (recall - prev_recall) * tp / (tp + fp)
        prev_recall = recall
    return ap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.1
    s = np.round(rng.random(300) + y * 0.3, 1)  # many ties
    assert roc_auc(y, s) == pytest.approx(brute_force_auc(y.tolist(), s.tolist()))
    assert pr_auc(y, s) == pytest.approx(brute_force_ap(y.tolist(), s.tolist()))


def test_auc_single_class_is_nan():
    assert np.isnan(roc_auc([True, True], [0.1, 0.2]))
    assert np.isnan(pr_auc([False, False], [0.1, 0.2]))


def test_accuracy_paradox_is_exposed():
    # 998 negatives, 2 positives, a model that never flags anything: 99.8% accurate, useless.
    y = [False] * 998 + [True] * 2
    m = binary_metrics(y, [False] * 1000)
    assert m["recall"] == 0.0 and m["gmean"] == 0.0 and m["kappa"] == 0.0 and m["f1"] == 0.0
    assert m["balanced_accuracy"] == 0.5


def test_binary_metrics_values():
    y = [True, True, True, False, False, False, False, False]
    p = [True, True, False, True, False, False, False, False]
    m = binary_metrics(y, p)
    assert m["confusion_matrix"] == [[4, 1], [1, 2]]
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["gmean"] == pytest.approx((2 / 3 * 4 / 5) ** 0.5)
    po, pe = 6 / 8, (3 * 3 + 5 * 5) / 64
    assert m["kappa"] == pytest.approx((po - pe) / (1 - pe))


def test_multiclass_rare_class():
    y = ["a"] * 70 + ["b"] * 25 + ["c"] * 5
    pred = ["a"] * 70 + ["b"] * 20 + ["a"] * 5 + ["c"] * 3 + ["b"] * 2
    m = multiclass_metrics(y, pred, ["a", "b", "c"])
    assert m["per_class"]["c"]["recall"] == pytest.approx(0.6)
    assert m["per_class"]["c"]["precision"] == 1.0
    assert m["macro_gmean"] == pytest.approx((1.0 * 0.8 * 0.6) ** (1 / 3))
