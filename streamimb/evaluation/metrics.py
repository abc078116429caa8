"""Exact metric bundles for rare classes.

river's ROCAUC is an approximation with a handful of thresholds; on rare-class streams it is badly off. These
functions are exact: ROC AUC from ranks (ties averaged), PR AUC as average precision.

>>> roc_auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
0.75
>>> round(pr_auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8]), 4)
0.8333
>>> m = binary_metrics([True, False, True, False], [True, False, False, False])
>>> m["precision"], m["recall"], m["confusion_matrix"]
(1.0, 0.5, [[2, 0], [1, 1]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[bool] | Sequence[float] | np.ndarray


def _safe_div(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Exact area under the ROC curve (Mann-Whitney U); NaN when only one class is present."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=float)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(s.size, dtype=float)
    # Average ranks over ties.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_auc(y_true: ArrayLike, scores: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Average precision (area under the precision-recall curve, step-wise, tied scores one threshold),
    optionally with a weight per event; NaN without positives.

    >>> y, s = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]
    >>> round(pr_auc(y, s), 4), round(pr_auc(y, s, weights=[1, 1, 3, 1]), 4)  # (1+2/3)/2; (1+3*0.8)/4
    (0.8333, 0.85)
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=float)
    w = np.ones(s.size) if weights is None else np.asarray(weights, dtype=float)
    positive_weight = float(w[y].sum())
    if not y.any() or positive_weight <= 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted, w_sorted = y[order], s[order], w[order]
    tp = np.cumsum(np.where(y_sorted, w_sorted, 0.0))
    seen = np.cumsum(w_sorted)
    # Evaluate only at the last index of each group of tied scores.
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tp, seen = tp[last_of_tie], seen[last_of_tie]
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    recall_steps = np.diff(np.r_[0.0, tp]) / positive_weight
    return float(np.sum(recall_steps * precision))


def _kappa(tn: int, fp: int, fn: int, tp: int) -> float:
    n = tn + fp + fn + tp
    if n == 0:
        return 0.0
    p_observed = (tp + tn) / n
    p_expected = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
    return _safe_div(p_observed - p_expected, 1.0 - p_expected)


def binary_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict:
    """Confusion-matrix metrics for the positive (rare) class. confusion_matrix is [[tn, fp], [fn, tp]]."""
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    tp = int(np.sum(y & p))
    fp = int(np.sum(~y & p))
    fn = int(np.sum(y & ~p))
    tn = int(np.sum(~y & ~p))
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    specificity = _safe_div(tn, tn + fp)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _safe_div(2 * precision * recall, precision + recall),
        "kappa": _kappa(tn, fp, fn, tp),
        "gmean": math.sqrt(recall * specificity),
        "balanced_accuracy": (recall + specificity) / 2.0,
        "specificity": specificity,
        "support": tp + fn,
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def multiclass_metrics(y_true: Sequence[str], y_pred: Sequence[str | None], classes: Sequence[str]) -> dict:
    """Per-class precision/recall/F1, macro G-mean (geometric mean of recalls) and Cohen's kappa.

    >>> m = multiclass_metrics(["a", "a", "b", "c"], ["a", "b", "b", "c"], ["a", "b", "c"])
    >>> m["per_class"]["a"]["recall"], round(m["macro_gmean"], 4)
    (0.5, 0.7937)
    """
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    n = cm.sum()
    per_class = {}
    recalls = []
    for c, i in index.items():
        tp = cm[i, i]
        precision = _safe_div(tp, cm[:, i].sum())
        recall = _safe_div(tp, cm[i, :].sum())
        recalls.append(recall)
        per_class[c] = {
            "precision": precision,
            "recall": recall,
            "f1": _safe_div(2 * precision * recall, precision + recall),
            "support": int(cm[i, :].sum()),
        }
    p_observed = _safe_div(np.trace(cm), n)
    p_expected = _safe_div(float(np.sum(cm.sum(axis=0) * cm.sum(axis=1))), float(n) * n)
    return {
        "per_class": per_class,
        "macro_gmean": float(np.prod(recalls) ** (1.0 / k)) if k else 0.0,
        "macro_recall": float(np.mean(recalls)) if k else 0.0,
        "kappa": _safe_div(p_observed - p_expected, 1.0 - p_expected),
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }
