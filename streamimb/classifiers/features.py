"""Feature dicts to numpy rows, with a column order that only ever grows.

>>> index = FeatureIndex()
>>> index.rows([{"a": 1.0}, {"b": 2.0}], grow=True).tolist()
[[1.0, nan], [nan, 2.0]]
>>> index.names, index.rows([{"b": 3.0, "c": 4.0}]).tolist()
(['a', 'b'], [[nan, 3.0]])
>>> FeatureIndex().rows([{"card=visa": 1.0}, {"card=amex": 1.0}], grow=True).tolist()
[[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from streamimb.features import dicts_to_rows

__all__ = ["FeatureIndex"]


class FeatureIndex:
    """Column positions of feature names, in order of first appearance.

    An absent value is NaN (missing), except for a one-hot category column (``name=value``, as
    `streamimb.features.FeatureExtractor` writes them), where absent means 0.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self._known: set[str] = set()
        self._absent: list[float] = []
        self._position: dict[str, int] = {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._position = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def add(self, xs: Sequence[Mapping[str, float]]) -> None:
        """Give a column to every feature of ``xs`` not seen before."""
        known = self._known
        for x in xs:
            if not known.issuperset(x):
                for name in x:
                    if name not in known:
                        known.add(name)
                        self._position[name] = len(self.names)
                        self.names.append(name)
                        self._absent.append(0.0 if isinstance(name, str) and "=" in name else math.nan)

    def rows(self, xs: Sequence[Mapping[str, float]], grow: bool = False) -> np.ndarray:
        """``xs`` as a float array, one column per known feature (new ones added first with ``grow``)."""
        if grow:
            self.add(xs)
        return dicts_to_rows(xs, self._position, self._absent)
