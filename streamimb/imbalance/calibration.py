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

from streamimb.jit import jit

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

    # -- array forms: a batch of rows at once (compiled loops) ---------------------------------------
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
        raw, priors, train = _floats(raw), _floats(priors), _floats(train)
        out = np.empty_like(raw)
        _calibrate_rows(raw, priors, train, self._offsets(classes), self._a, self.eps, self.clip, out)
        return out

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
        grad_b = np.zeros(len(classes))
        touched = np.zeros(len(classes), dtype=np.bool_)
        grad_a = _gradient(
            _floats(raw), _floats(priors), _floats(train), np.ascontiguousarray(y, dtype=np.intp),
            self._offsets(classes), self._a, self.eps, self.clip, grad_b, touched,
        )  # fmt: skip
        if not touched.any():
            return
        for j in np.flatnonzero(touched).tolist():
            self._b[classes[j]] = self._b.get(classes[j], 0.0) - self.lr * float(grad_b[j])
        self._a = min(max(self._a - self.lr * grad_a, 0.05), 2.0)

    def _offsets(self, classes: Sequence[Hashable]) -> np.ndarray:
        return np.array([self._b.get(c, 0.0) for c in classes], dtype=np.float64)


def _floats(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


@jit
def _row_ratios(raw: np.ndarray, i: int, train: np.ndarray, eps: float, clip: float, out: np.ndarray) -> int:
    """``PriorShiftCalibrator._ratios`` of row ``i`` into ``out`` (NaN where a class has no training
    prior); returns how many classes have one."""
    k = raw.shape[1]
    total = 0.0
    for j in range(k):
        total += raw[i, j]
    known = 0
    for j in range(k):
        if not train[j] > 0:
            out[j] = np.nan
            continue
        q = (raw[i, j] / total if total > 0 else 1.0 / max(k, 1)) + eps
        out[j] = min(max(math.log(q / (1.0 + k * eps) / train[j]), -clip), clip)
        known += 1
    return known


@jit
def _row_softmax(
    ratios: np.ndarray, log_priors: np.ndarray, offsets: np.ndarray, a: float, out: np.ndarray
) -> None:
    """``softmax(a * ratio + offset + log prior)`` over the classes with a ratio (0 for the others)."""
    k = len(ratios)
    top = -np.inf
    for j in range(k):
        if ratios[j] == ratios[j]:
            out[j] = a * ratios[j] + offsets[j] + log_priors[j]
            top = max(top, out[j])
    total = 0.0
    for j in range(k):
        out[j] = math.exp(out[j] - top) if ratios[j] == ratios[j] and top > -np.inf else 0.0
        total += out[j]
    for j in range(k):
        out[j] = out[j] / total if total > 0 else 0.0


@jit
def _calibrate_rows(
    raw: np.ndarray,
    priors: np.ndarray,
    train: np.ndarray,
    offsets: np.ndarray,
    a: float,
    eps: float,
    clip: float,
    out: np.ndarray,
) -> None:
    """``PriorShiftCalibrator.transform_array``: each row's calibrated probabilities into ``out``."""
    ratios, log_priors = np.empty(raw.shape[1]), np.log(np.maximum(priors, 1e-9))
    for i in range(raw.shape[0]):
        _row_ratios(raw, i, train, eps, clip, ratios)
        _row_softmax(ratios, log_priors, offsets, a, out[i])


@jit
def _gradient(
    raw: np.ndarray,
    priors: np.ndarray,
    train: np.ndarray,
    y: np.ndarray,
    offsets: np.ndarray,
    a: float,
    eps: float,
    clip: float,
    grad_b: np.ndarray,
    touched: np.ndarray,
) -> float:
    """The logistic loss's gradient summed over the usable rows (two classes with a training prior, its
    own among them): the offsets' into ``grad_b`` and the classes they touch into ``touched``; returns
    the temperature's."""
    k = raw.shape[1]
    ratios, p, log_priors = np.empty(k), np.empty(k), np.log(np.maximum(priors, 1e-9))
    grad_a = 0.0
    for i in range(raw.shape[0]):
        if _row_ratios(raw, i, train, eps, clip, ratios) < 2 or ratios[y[i]] != ratios[y[i]]:
            continue
        _row_softmax(ratios, log_priors, offsets, a, p)
        p[y[i]] -= 1.0
        for j in range(k):
            if ratios[j] == ratios[j]:
                grad_a += p[j] * ratios[j]
                grad_b[j] += p[j]
                touched[j] = True
    return grad_a
