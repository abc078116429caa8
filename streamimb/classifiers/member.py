"""What a batch learner that gives class probabilities needs to be an imbalance strategy's member.

Strategies drive their base models through `NumpyHoeffdingTree`'s array API: ``learn_array``,
``vote_array``, ``predict_proba_array`` and ``version``. `ProbabilityMember` gives a model with
``predict_proba_array`` / ``learn_array`` the rest, and river's dict API over its own feature columns.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from river import base

from streamimb.classifiers.features import FeatureIndex

__all__ = ["ProbabilityMember"]


class ProbabilityMember(base.Classifier):
    """Mixin: ``vote_array``, ``version`` and river's dict API for a model with array forms.

    Subclasses set ``_features = FeatureIndex()``, ``_classes = []`` and ``_version = 0`` in ``__init__``,
    implement ``predict_proba_array`` and ``_learn_rows`` (rows of positive weight), bump ``_version``
    whenever their scores may change, and say in ``_trained`` whether they can vote.
    """

    _features: FeatureIndex
    _classes: list[Hashable]
    _version: int

    @property
    def _multiclass(self) -> bool:
        return True

    @property
    def version(self) -> int:
        """Changes whenever the scores may change: leaves or scores computed at one version stay valid."""
        return self._version

    def _trained(self) -> bool:
        raise NotImplementedError

    def predict_proba_array(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def learn_array(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, leaves: np.ndarray | None = None
    ) -> None:
        """Learn rows ``X`` with class indices ``y`` and weights ``w`` (default 1; rows of weight 0 are left
        out). ``X`` may have more columns than seen so far, ``y`` new classes; ``leaves`` is ignored (the
        array API's signature)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.intp)
        w = np.ones(len(X)) if w is None else np.asarray(w, dtype=np.float64)
        keep = w > 0
        if not keep.all():
            X, y, w = X[keep], y[keep], w[keep]
        if len(X):
            self._learn_rows(X, y, w)

    def _learn_rows(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        raise NotImplementedError

    def vote_array(
        self, X: np.ndarray, votes: np.ndarray, voters: np.ndarray, vote: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """An ensemble member's vote (`NumpyHoeffdingTree.vote_array`'s contract): once trained, with
        ``vote``, adds the rows' probabilities to ``votes`` and 1 to ``voters``. Returns no leaves (zeros)
        and each row's most probable class (-1 before training)."""
        n = len(X)
        if not self._trained():
            return np.zeros(n, dtype=np.int32), np.full(n, -1, dtype=np.intp)
        proba = self.predict_proba_array(X)
        if vote:
            votes[:, : proba.shape[1]] += proba
            voters += 1.0
        return np.zeros(n, dtype=np.int32), proba.argmax(axis=1)

    def learn_one(self, x: Mapping[str, float], y: Hashable, w: float = 1.0) -> None:
        if y not in self._classes:
            self._classes.append(y)
        c = self._classes.index(y)
        self.learn_array(self._features.rows([x], grow=True), np.array([c]), np.array([float(w)]))

    def predict_proba_one(self, x: Mapping[str, float], **kwargs: Any) -> dict[Hashable, float]:
        proba = self.predict_proba_array(self._features.rows([x]))
        if not self._trained() or not proba.shape[1]:
            return {}
        return dict(zip(self._classes, proba[0, : len(self._classes)].tolist(), strict=False))
