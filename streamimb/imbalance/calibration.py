"""Prior-shift-aware online calibration of a rebalanced model's probabilities.

A model trained on rebalanced data (weights, resampling, synthetic samples) outputs `q(c|x)` under its
training priors `π'`. Bayes' rule maps it to the current priors `π` as `p(c|x) ∝ q(c|x) · π_c / π'_c`,
which is exact only if `q` is calibrated. Trees with majority-class leaves and small ensembles are not:
their log-ratios `log(q_c / π'_c)` are too extreme. `PriorShiftCalibrator` learns a temperature `a` and
per-class offsets `b_c` online (logistic loss, SGD) on top of the prior term:

    p(c|x) = softmax_c( a · clip(log(q_c / π'_c)) + b_c + log π_c )

With `a = 1, b = 0` it is exactly the Bayes correction. Because `log π_c` stays outside the learned part,
the calibration keeps following prevalence shifts as soon as the prior tracker does.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
from river import base

__all__ = ["PriorShiftCalibrator"]


class PriorShiftCalibrator(base.Base):
    """Temperature and offsets on top of the Bayes prior correction, learned online.

    Parameters
    ----------
    lr
        SGD step for the temperature and the offsets.
    clip
        Bound on each log-ratio `log(q_c / π'_c)` (pure leaves give 0 or 1).
    eps
        Smoothing of `q` before the logarithm.

    Examples
    --------
    >>> cal = PriorShiftCalibrator()
    >>> out = cal.transform({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}, {"a": 0.5, "b": 0.5})
    >>> {c: round(p, 2) for c, p in out.items()}
    {'a': 0.9, 'b': 0.1}
    """

    def __init__(self, lr: float = 0.01, clip: float = 8.0, eps: float = 1e-3) -> None:
        self.lr = lr
        self.clip = clip
        self.eps = eps
        self._a = 1.0
        self._b: dict[Hashable, float] = {}

    @property
    def temperature(self) -> float:
        """The learned slope `a` (1 = trust the model's log-ratios as they are)."""
        return self._a

    def _ratios(self, raw: dict[Hashable, float], train: dict[Hashable, float]) -> dict[Hashable, float]:
        k = max(len(raw), 1)
        total = sum(raw.values())
        out = {}
        for c, q in raw.items():
            t = train.get(c, 0.0)
            if t <= 0.0:
                continue
            q = (q / total if total > 0 else 1.0 / k) + self.eps
            r = math.log(q / (1.0 + k * self.eps) / t)
            out[c] = min(max(r, -self.clip), self.clip)
        return out

    def _logits(self, ratios: dict[Hashable, float], priors: dict[Hashable, float]) -> dict[Hashable, float]:
        return {
            c: self._a * r + self._b.get(c, 0.0) + math.log(max(priors.get(c, 0.0), 1e-9))
            for c, r in ratios.items()
        }

    @staticmethod
    def _softmax(z: dict[Hashable, float]) -> dict[Hashable, float]:
        top = max(z.values())
        e = {c: math.exp(v - top) for c, v in z.items()}
        s = sum(e.values())
        return {c: v / s for c, v in e.items()}

    def transform(
        self, raw: dict[Hashable, float], priors: dict[Hashable, float], train: dict[Hashable, float]
    ) -> dict[Hashable, float]:
        """Calibrated probabilities under the current priors (empty if nothing can be said)."""
        ratios = self._ratios(raw, train)
        if not ratios:
            return {}
        return self._softmax(self._logits(ratios, priors))

    def learn(
        self,
        raw: dict[Hashable, float],
        priors: dict[Hashable, float],
        train: dict[Hashable, float],
        y: Hashable,
    ) -> None:
        """One SGD step on the logistic loss of the labelled event."""
        ratios = self._ratios(raw, train)
        if len(ratios) < 2 or y not in ratios:
            return
        p = self._softmax(self._logits(ratios, priors))
        grad_a = 0.0
        for c, pc in p.items():
            g = pc - (1.0 if c == y else 0.0)
            grad_a += g * ratios[c]
            self._b[c] = self._b.get(c, 0.0) - self.lr * g
        self._a = min(max(self._a - self.lr * grad_a, 0.05), 2.0)

    # -- array forms: a batch of rows at once --------------------------------------------------------
    def _ratio_array(self, raw: np.ndarray, train: np.ndarray) -> np.ndarray:
        """``_ratios`` for rows of ``raw`` (columns = classes); NaN where a class has no training prior."""
        k = max(raw.shape[1], 1)
        total = raw.sum(axis=1, keepdims=True)
        q = np.divide(raw, total, out=np.full_like(raw, 1.0 / k), where=total > 0) + self.eps
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(q / (1.0 + k * self.eps) / train)
        return np.where(train > 0, np.clip(r, -self.clip, self.clip), np.nan)

    def _softmax_array(self, ratios: np.ndarray, priors: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        z = self._a * ratios + offsets + np.log(np.maximum(priors, 1e-9))
        z = np.where(np.isnan(ratios), -np.inf, z)
        top = z.max(axis=1, keepdims=True)
        e = np.exp(z - np.where(np.isfinite(top), top, 0.0))
        s = e.sum(axis=1, keepdims=True)
        return np.divide(e, s, out=np.zeros_like(e), where=s > 0)

    def transform_array(
        self, raw: np.ndarray, priors: np.ndarray, train: np.ndarray, classes: Sequence[Hashable]
    ) -> np.ndarray:
        """``transform`` for every row of ``raw`` (columns follow ``classes``); a class without training
        prior gets 0, a row where no class has one is all 0.

        >>> cal = PriorShiftCalibrator()
        >>> raw, priors, train = np.array([[0.5, 0.5]]), np.array([0.9, 0.1]), np.array([0.5, 0.5])
        >>> cal.transform_array(raw, priors, train, "ab").round(2).tolist()
        [[0.9, 0.1]]
        """
        offsets = np.array([self._b.get(c, 0.0) for c in classes])
        return self._softmax_array(self._ratio_array(raw, train), priors, offsets)

    def learn_array(
        self,
        raw: np.ndarray,
        priors: np.ndarray,
        train: np.ndarray,
        y: np.ndarray,
        classes: Sequence[Hashable],
    ) -> None:
        """One SGD step with the summed gradient of the batch's labelled rows (``y``: class indices).

        Rows with fewer than two classes with a training prior, or whose class has none, are skipped, as
        in ``learn``; for a small ``lr`` this is close to ``learn`` row after row.
        """
        ratios = self._ratio_array(raw, train)
        known = ~np.isnan(ratios)
        rows = np.arange(len(y))
        usable = (known.sum(axis=1) >= 2) & known[rows, y]
        if not usable.any():
            return
        ratios, y = ratios[usable], y[usable]
        offsets = np.array([self._b.get(c, 0.0) for c in classes])
        g = self._softmax_array(ratios, priors, offsets)
        g[np.arange(len(y)), y] -= 1.0
        g = np.where(np.isnan(ratios), 0.0, g)
        grad_a = float(np.sum(g * np.nan_to_num(ratios)))
        grad_b = g.sum(axis=0)
        touched = np.isfinite(ratios).any(axis=0)
        for j in np.flatnonzero(touched).tolist():
            self._b[classes[j]] = self._b.get(classes[j], 0.0) - self.lr * float(grad_b[j])
        self._a = min(max(self._a - self.lr * grad_a, 0.05), 2.0)
