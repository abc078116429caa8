"""Logistic regression with numpy batch forms: standardised numbers, one-hot categories, mini-batch updates.

Multinomial (softmax) over every class seen, so it takes any labels. Each column is standardised with its
running mean and variance (a missing value then counts as the mean, and standardised values are clipped to
``clip`` so that one extreme amount cannot swamp a step); weights follow Adam on mini-batches of
``batch_size`` rows. It has the array API of `NumpyHoeffdingTree` (``learn_array``, ``vote_array``,
``predict_proba_array``, ``version``), so every imbalance strategy drives it a batch at a time.

>>> import random
>>> rng = random.Random(0)
>>> model = NumpyLogisticRegression()
>>> for _ in range(4000):
...     x = {"amount": rng.gauss(0, 1)}
...     model.learn_one(x, "fraud" if x["amount"] > 1.5 else "ok")
>>> low, high = model.predict_proba_one({"amount": -1.0}), model.predict_proba_one({"amount": 3.0})
>>> low["fraud"] < 0.05 < 0.95 < high["fraud"]
True
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from streamimb.classifiers.features import FeatureIndex
from streamimb.classifiers.member import ProbabilityMember

__all__ = ["NumpyLogisticRegression"]


class NumpyLogisticRegression(ProbabilityMember):
    """Softmax regression on standardised columns, learned a mini-batch at a time (see the module docstring).

    Parameters
    ----------
    lr
        Adam step size.
    l2
        L2 penalty on the weights (not the intercepts).
    batch_size
        Rows per update: a batch given to ``learn_array`` is learned in slices of this size, in order.
    clip
        Standardised values are clipped to ``[-clip, clip]``.
    """

    def __init__(self, lr: float = 0.01, l2: float = 1e-4, batch_size: int = 16, clip: float = 6.0) -> None:
        if lr <= 0 or l2 < 0 or batch_size < 1 or clip <= 0:
            raise ValueError("lr and clip must be > 0, l2 >= 0 and batch_size >= 1")
        self.lr = lr
        self.l2 = l2
        self.batch_size = batch_size
        self.clip = clip
        self._features = FeatureIndex()  # the dict API's columns (the array API gets columns from its caller)
        self._classes: list[Hashable] = []
        self._n_seen = np.zeros(0)  # weight seen per column (values present)
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)
        self._coef = np.zeros((0, 0))  # features x classes
        self._intercept = np.zeros(0)
        self._moments = (np.zeros((0, 0)), np.zeros((0, 0)), np.zeros(0), np.zeros(0))  # Adam m, v (coef, b)
        self._steps = 0
        self._version = 0

    @property
    def classes(self) -> list[Hashable]:
        """Class labels of the dict API, in column order."""
        return list(self._classes)

    def _trained(self) -> bool:
        return bool(self._steps)

    # -- array API -----------------------------------------------------------------------------------
    def _grow(self, n_features: int, n_classes: int) -> None:
        f0, c0 = self._coef.shape
        if n_features <= f0 and n_classes <= c0:
            return
        f, c = max(f0, n_features), max(c0, n_classes)

        def pad(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            out = np.zeros(shape)
            out[tuple(slice(0, s) for s in a.shape)] = a
            return out

        self._coef = pad(self._coef, (f, c))
        self._intercept = pad(self._intercept, (c,))
        m, v, mb, vb = self._moments
        self._moments = (pad(m, (f, c)), pad(v, (f, c)), pad(mb, (c,)), pad(vb, (c,)))
        self._n_seen, self._mean, self._m2 = (pad(a, (f,)) for a in (self._n_seen, self._mean, self._m2))

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        """``X`` (its first columns, as many as the model knows) standardised, clipped, missing as 0."""
        f = len(self._mean)
        X = X[:, :f]
        if X.shape[1] < f:
            X = np.hstack([X, np.full((len(X), f - X.shape[1]), np.nan)])
        std = np.sqrt(np.divide(self._m2, self._n_seen, out=np.ones(f), where=self._n_seen > 1))
        std[std < 1e-12] = 1.0
        Z = (X - self._mean) / std
        np.clip(Z, -self.clip, self.clip, out=Z)
        Z[np.isnan(Z)] = 0.0
        return Z

    def _update_scaler(self, X: np.ndarray, w: np.ndarray) -> None:
        """Weighted running mean and variance per column over the values present (Chan et al.)."""
        present = ~np.isnan(X)
        wp = np.where(present, w[:, None], 0.0)
        n_b = wp.sum(axis=0)
        seen = n_b > 0
        if not seen.any():
            return
        Xz = np.where(present, X, 0.0)
        mean_b = np.divide((wp * Xz).sum(axis=0), n_b, out=np.zeros_like(n_b), where=seen)
        m2_b = (wp * (Xz - mean_b) ** 2).sum(axis=0)
        n_a = self._n_seen
        n = n_a + n_b
        delta = mean_b - self._mean
        ratio = np.divide(n_b, n, out=np.zeros_like(n), where=n > 0)
        self._mean = self._mean + delta * ratio
        self._m2 = self._m2 + m2_b + delta**2 * n_a * ratio
        self._n_seen = n

    def _logits(self, Z: np.ndarray) -> np.ndarray:
        return Z @ self._coef + self._intercept

    def predict_proba_array(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, one row per row of ``X`` (all 0 before anything was learned)."""
        if not self._coef.shape[1]:
            return np.zeros((len(X), 0))
        return _softmax(self._logits(self._standardise(np.asarray(X, dtype=np.float64))))

    def _learn_rows(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """Learn the rows in slices of ``batch_size``."""
        self._grow(X.shape[1], int(y.max()) + 1)
        self._version += 1
        for start in range(0, len(X), self.batch_size):
            part = slice(start, start + self.batch_size)
            self._step(X[part], y[part], w[part])

    def _step(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """One Adam step on the weighted mean log-loss gradient of a slice."""
        self._update_scaler(X, w)
        Z = self._standardise(X)
        proba = _softmax(self._logits(Z))
        proba[np.arange(len(y)), y] -= 1.0  # d loss / d logits
        g = proba * (w / w.sum())[:, None]
        grad_coef = Z.T @ g + self.l2 * self._coef
        grad_b = g.sum(axis=0)
        self._steps += 1
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        m, v, mb, vb = self._moments
        for param, grad, mom, sq in ((self._coef, grad_coef, m, v), (self._intercept, grad_b, mb, vb)):
            mom *= beta1
            mom += (1 - beta1) * grad
            sq *= beta2
            sq += (1 - beta2) * grad * grad
            m_hat = mom / (1 - beta1**self._steps)
            v_hat = sq / (1 - beta2**self._steps)
            param -= self.lr * m_hat / (np.sqrt(v_hat) + eps)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
