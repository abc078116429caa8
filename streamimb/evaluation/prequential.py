"""Prequential (test-then-train) evaluation: each labelled event is scored before the model learns it.

Two views: a bounded rolling window for live metrics (read at scrape time), and, when ``keep_history`` is
on (replay), the per-event outcomes needed for exact overall and per-segment ROC/PR AUC in the report.

>>> ev = PrequentialEvaluator(window=100)
>>> for i in range(40):
...     y = "1" if i % 10 == 0 else "0"
...     hit = y == "1"
...     ev.update(i, y, y_pred=y, alert=hit, proba={"1": 0.9 if hit else 0.1})
>>> r = ev.rolling("1")
>>> r["recall"], r["precision"], r["roc_auc"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from streamimb.evaluation.metrics import binary_metrics, multiclass_metrics, pr_auc, roc_auc


class PrequentialEvaluator:
    """Collects (truth, decision, scores) for labelled events; computes metric bundles on demand."""

    def __init__(self, window: int = 2000, keep_history: bool = True, max_history: int = 5_000_000) -> None:
        self.window = window
        self.keep_history = keep_history
        self.max_history = max_history
        self._recent: deque[tuple[str, str | None, bool, dict[str, float], float]] = deque(maxlen=window)
        self._index: list[int] = []
        self._y: list[str] = []
        self._pred: list[str | None] = []
        self._alert: list[bool] = []
        self._proba: list[dict[str, float]] = []
        self._anomaly: list[float] = []
        self.n_labelled = 0
        self.history_truncated = False

    def update(
        self,
        index: int,
        y_true: str,
        y_pred: str | None,
        alert: bool,
        proba: dict[str, float],
        anomaly_score: float = math.nan,
    ) -> None:
        self.n_labelled += 1
        self._recent.append((y_true, y_pred, alert, proba, anomaly_score))
        if not self.keep_history:
            return
        if len(self._y) >= self.max_history:
            self.history_truncated = True
            return
        self._index.append(index)
        self._y.append(y_true)
        self._pred.append(y_pred)
        self._alert.append(alert)
        self._proba.append(proba)
        self._anomaly.append(anomaly_score)

    def update_many(
        self,
        indices: list[int],
        ys: list[str],
        preds: list[str | None],
        alerts: list[bool],
        probas: list[dict[str, float]],
        anomaly_scores: list[float],
    ) -> None:
        """``update`` for each labelled event of a batch, in order."""
        self.n_labelled += len(ys)
        self._recent.extend(zip(ys, preds, alerts, probas, anomaly_scores, strict=True))
        if not self.keep_history:
            return
        room = max(0, self.max_history - len(self._y))
        if room < len(ys):
            self.history_truncated = True
        for kept, values in zip(
            (self._index, self._y, self._pred, self._alert, self._proba, self._anomaly),
            (indices, ys, preds, alerts, probas, anomaly_scores),
            strict=True,
        ):
            kept.extend(values[:room])

    # -- live view -------------------------------------------------------------------------------------
    def rolling(self, positive: str) -> dict[str, float]:
        """Rare-class metrics over the rolling window (for /metrics)."""
        if not self._recent:
            return {}
        y = [r[0] == positive for r in self._recent]
        alert = [r[2] for r in self._recent]
        scores = [r[3].get(positive, 0.0) for r in self._recent]
        out = binary_metrics(y, alert)
        out.pop("confusion_matrix")
        out["roc_auc"] = roc_auc(y, scores)
        out["prevalence"] = float(np.mean(y))
        return out

    def rolling_per_class(self, classes: list[str]) -> dict[str, dict[str, float]]:
        """Per-class precision/recall/F1 over the rolling window from the predicted class."""
        if not self._recent:
            return {}
        m = multiclass_metrics([r[0] for r in self._recent], [r[1] for r in self._recent], classes)
        return m["per_class"]

    # -- report ----------------------------------------------------------------------------------------
    def report(self, positive: str | None, classes: list[str], n_events: int, segments: int = 10) -> dict:
        """Overall and per-segment metrics. Segments cut the stream (all events) into equal index ranges."""
        out: dict[str, Any] = {"labelled": self.n_labelled, "history_truncated": self.history_truncated}
        if not self._y:
            return out
        idx = np.asarray(self._index)
        out["overall"] = self._bundle(np.arange(len(self._y)), positive, classes)
        seg_list = []
        edges = np.linspace(0, max(n_events, 1), segments + 1)
        for k in range(segments):
            lo, hi = int(edges[k]), int(edges[k + 1])
            sel = np.flatnonzero((idx >= lo) & (idx < hi))
            seg = {"segment": k, "from_index": lo, "to_index": hi, "labelled": int(sel.size)}
            if sel.size:
                seg.update(self._bundle(sel, positive, classes))
            seg_list.append(seg)
        out["segments"] = seg_list
        return out

    def _bundle(self, sel: np.ndarray, positive: str | None, classes: list[str]) -> dict:
        y = [self._y[i] for i in sel]
        pred = [self._pred[i] for i in sel]
        bundle: dict[str, Any] = {}
        if positive is not None:
            y_pos = np.array([v == positive for v in y])
            alert = np.array([self._alert[i] for i in sel])
            scores = np.array([self._proba[i].get(positive, 0.0) for i in sel])
            anomaly = np.array([self._anomaly[i] for i in sel])
            bundle.update(binary_metrics(y_pos, alert))
            bundle["prevalence"] = float(y_pos.mean())
            bundle["roc_auc"] = _nan_to_none(roc_auc(y_pos, scores))
            bundle["pr_auc"] = _nan_to_none(pr_auc(y_pos, scores))
            if np.isfinite(anomaly).all():
                bundle["anomaly_roc_auc"] = _nan_to_none(roc_auc(y_pos, anomaly))
                bundle["anomaly_pr_auc"] = _nan_to_none(pr_auc(y_pos, anomaly))
        if len(classes) > 2 or positive is None:
            mc = multiclass_metrics(y, pred, classes)
            bundle["per_class"] = mc["per_class"]
            bundle["macro_gmean"] = mc["macro_gmean"]
            bundle["multiclass_kappa"] = mc["kappa"]
            bundle["multiclass_confusion_matrix"] = mc["confusion_matrix"]
        return bundle


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
