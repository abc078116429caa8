"""Feature extraction: decoded event features -> the numeric dict that river models take.

Numbers pass through; missing values are left out (river models treat an absent key as unknown, and a
standardised linear model then sees the mean). Categories become one-hot indicators ``name=value``; each
column keeps at most ``max_categories`` distinct values, later newcomers share ``name=__other__`` so that
the feature space (and memory) stays bounded.

>>> fx = FeatureExtractor(max_categories=2)
>>> fx.transform_one({"amount": 12.0, "country": "FR", "mcc": None})
{'amount': 12.0, 'country=FR': 1.0}
>>> _ = fx.transform_one({"country": "DE"})
>>> fx.transform_one({"country": "US"})
{'country=__other__': 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain, repeat

import numpy as np

from streamimb.events import FeatureValue


class FeatureExtractor:
    """Stateless for numbers, bounded-state for categories. Picklable."""

    def __init__(self, max_categories: int = 64) -> None:
        self.max_categories = max_categories
        self._seen: dict[str, set[str]] = {}
        self._keys: dict[tuple[str, str], str] = {}  # (name, value) -> "name=value", admitted values only

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_keys" not in state:  # a checkpoint from before the key cache
            self._keys = {(name, v): f"{name}={v}" for name, values in self._seen.items() for v in values}

    def transform_one(self, features: Mapping[str, FeatureValue]) -> dict[str, float]:
        x: dict[str, float] = {}
        keys = self._keys
        for name, value in features.items():
            if type(value) is float:  # most values: tested first
                x[name] = value
            elif isinstance(value, str):
                key = keys.get((name, value))
                x[self._category_key(name, value) if key is None else key] = 1.0
            elif value is not None:
                x[name] = value
        return x

    def _category_key(self, name: str, value: str) -> str:
        seen = self._seen.get(name)
        if seen is None:
            seen = self._seen[name] = set()
        if value not in seen:
            if len(seen) >= self.max_categories:
                return f"{name}=__other__"
            seen.add(value)
        key = self._keys[(name, value)] = f"{name}={value}"
        return key


def dicts_to_rows(
    xs: Sequence[Mapping[str, float]], position: Mapping[str, int], absent: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Feature dicts as a float array with one column per name in ``position`` (name -> column); a name
    missing from a dict takes that column's ``absent`` value, and names without a column are ignored.

    One pass over the values present (a few per row), run by C iterators rather than a lookup per column.

    >>> dicts_to_rows([{"a": 1.0}, {"b": 2.0, "c": 3.0}], {"a": 0, "b": 1}, [np.nan, 0.0]).tolist()
    [[1.0, 0.0], [nan, 2.0]]
    """
    n, width = len(xs), len(absent)
    out = np.empty((n, width))
    out[:] = absent
    if not n or not width:
        return out
    names = chain.from_iterable(xs)
    columns = np.fromiter(map(position.get, names, repeat(-1)), dtype=np.intp)
    values = np.fromiter(chain.from_iterable(x.values() for x in xs), dtype=np.float64, count=len(columns))
    rows = np.repeat(np.arange(n), np.fromiter(map(len, xs), dtype=np.intp, count=n))
    known = columns >= 0
    out[rows[known], columns[known]] = values[known]
    return out
