"""Entity features: what this card, customer or merchant did before the current event.

For every entity key field (``schema.entities``, e.g. ``card``), :class:`EntityFeatures` keeps a small state
per key value and turns each event into features computed from that entity's *earlier* events only (the
event itself is folded in after its features are taken), named ``<field>:<feature>``:

- ``count_<w>``: the entity's events in an exponentially weighted window of time constant ``w`` (an event
  ``t`` seconds old weighs ``exp(-t / w)``), and ``mean_<x>_<w>``: the weighted mean of each numeric field
  (a missing value counts as 0);
- ``log_since_last``: log(1 + seconds since the entity's last event); ``first_seen``: 1 for its first event;
- ``<x>_log_ratio`` and ``<x>_z``: the value against the entity's history (log of value over the long-window
  mean, and a z-score with the long-window variance);
- ``new_<c>``: 1 when a categorical field takes a value this entity has not shown before, and
  ``distinct_<c>``: how many distinct values it has shown (at most ``max_values`` tracked);
- ``risk_<w>``: with labels, the entity's share of the rare class among its labelled events in each window
  (weighted as above), counting a label once ``risk_gap`` seconds of event time have passed since its event
  (labels arrive late; a gap keeps the feature's meaning the same at learning and at scoring time), and
  ``risk_labels``: the weight of its labels in the longest window.

State is bounded: at most ``max_keys`` keys per field, the least recently seen evicted first. Without event
times, positions (events seen) stand in for seconds. The state is picklable (part of the checkpoint).

>>> fx = EntityFeatures(["card"], numeric=["amount"], categorical=["country"], windows=[3600.0])
>>> x = fx.transform({"card": "c1", "amount": 10.0, "country": "FR"}, time=0.0)
>>> x["card:first_seen"], x["card:count_1h"]
(1.0, 0.0)
>>> x = fx.transform({"card": "c1", "amount": 40.0, "country": "US"}, time=60.0)
>>> x["card:first_seen"], round(x["card:count_1h"], 3), x["card:mean_amount_1h"], x["card:new_country"]
(0.0, 0.983, 10.0, 1.0)
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

DAY = 86_400.0
DEFAULT_WINDOWS = (3_600.0, DAY, 7 * DAY, 30 * DAY)


def window_name(seconds: float) -> str:
    """A short name for a window length: ``1h``, ``1d``, ``7d``, ``90s``.

    >>> [window_name(s) for s in (3600, 86400, 604800, 90)]
    ['1h', '1d', '7d', '90s']
    """
    for unit, size in (("d", DAY), ("h", 3_600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class _Entity:
    """One key's state: last time, weighted counts and sums per window, long-run moments, values seen."""

    __slots__ = ("counts", "labels", "last", "mean", "pos", "seen", "sums", "var")

    def __init__(self, n_windows: int, n_numeric: int, n_categorical: int) -> None:
        self.last: float | None = None
        self.counts = [0.0] * n_windows
        self.sums = [[0.0] * n_numeric for _ in range(n_windows)]  # weighted sums (missing values: 0)
        self.mean = [math.nan] * n_numeric
        self.var = [0.0] * n_numeric
        self.seen: list[set[str]] = [set() for _ in range(n_categorical)]
        self.pos = [0.0] * n_windows  # weighted labels of the rare class per window (decaying from `last`)
        self.labels = [0.0] * n_windows  # weighted labels per window

    def widen(self, n_numeric: int, n_categorical: int) -> None:
        """Room for fields admitted since this entity was created (their sums start at 0)."""
        more = n_numeric - len(self.mean)
        for sums in self.sums:
            sums.extend([0.0] * more)
        self.mean.extend([math.nan] * more)
        self.var.extend([0.0] * more)
        self.seen.extend(set() for _ in range(n_categorical - len(self.seen)))

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


class EntityFeatures:
    """Per-entity features from earlier events and labels (see the module docstring).

    Parameters
    ----------
    keys
        Entity key fields; their values name the entities and are not features themselves.
    numeric, categorical
        Fields aggregated per entity; ``None``: every numeric (float) / categorical (str) field, from the
        first event with a value for it on.
    windows
        Time constants of the weighted windows, in seconds.
    risk_gap
        The event time a label waits before it counts towards the risk.
    max_keys, max_values
        Keys kept per field (least recently seen evicted), distinct values tracked per categorical field.
    """

    def __init__(
        self,
        keys: Sequence[str],
        numeric: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        windows: Sequence[float] = DEFAULT_WINDOWS,
        risk_gap: float = 0.0,
        max_keys: int = 100_000,
        max_values: int = 32,
    ) -> None:
        self.keys = list(keys)
        self.numeric = list(numeric or ())
        self.categorical = list(categorical or ())
        self._auto = (numeric is None, categorical is None)  # fields taken from the events as they come
        self._typed = set(self.keys)  # fields known to be a key, numeric or categorical
        self.windows = [float(w) for w in windows]
        self.risk_gap = float(risk_gap)
        self.max_keys = max_keys
        self.max_values = max_values
        self._names = [window_name(w) for w in self.windows]
        self._state: dict[str, OrderedDict[str, _Entity]] = {k: OrderedDict() for k in self.keys}
        self._pending: list[tuple[float, int, str, str, bool]] = []  # labels waiting out the gap (heap)
        self._n_pending = 0
        self._name_cache: dict[str, tuple] = {}
        self.evicted = 0

    # -- features ------------------------------------------------------------------------------------------
    def keys_of(self, features: Mapping[str, Any]) -> dict[str, str]:
        """The event's entity keys, as strings (an absent or null key is left out)."""
        return {field: str(key) for field in self.keys if (key := features.get(field)) is not None}

    def transform(
        self, features: Mapping[str, Any], time: float | None, keys: Mapping[str, str] | None = None
    ) -> dict[str, float]:
        """The event's entity features from the state before it; then the event joins its entities' state.
        ``keys``: its ``keys_of`` where the caller has them already."""
        if self._pending:
            self._apply_labels(time)
        if (self._auto[0] or self._auto[1]) and not self._typed.issuperset(features):
            self._admit(features)
        numeric = [v if type(v := features.get(k)) is float else None for k in self.numeric]
        categorical = [v if type(v := features.get(k)) is str else None for k in self.categorical]
        now = time or 0.0
        out: dict[str, float] = {}
        for field, key in (self.keys_of(features) if keys is None else keys).items():
            self._step(field, self._entity(field, key), numeric, categorical, now, out)
        return out

    def _admit(self, features: Mapping[str, Any]) -> None:
        """Fields not configured are aggregated from the first event that has a value for them on."""
        for k, v in features.items():
            if k in self._typed or v is None:
                continue
            self._typed.add(k)
            if type(v) is float and self._auto[0]:
                self.numeric.append(k)
            elif type(v) is str and self._auto[1]:
                self.categorical.append(k)
            self._name_cache.clear()

    def _entity(self, field: str, key: str) -> _Entity:
        table = self._state[field]
        entity = table.get(key)
        if entity is None:
            if len(table) >= self.max_keys:
                table.popitem(last=False)
                self.evicted += 1
            entity = table[key] = _Entity(len(self.windows), len(self.numeric), len(self.categorical))
        else:
            table.move_to_end(key)
        return entity

    def _names_of(self, field: str) -> tuple:
        """The feature names of one entity field, built once."""
        names = self._name_cache.get(field)
        if names is None:
            numeric, categorical = self.numeric, self.categorical
            names = self._name_cache[field] = (
                f"{field}:first_seen",
                f"{field}:log_since_last",
                [f"{field}:count_{w}" for w in self._names],
                [[f"{field}:mean_{x}_{w}" for x in numeric] for w in self._names],
                [f"{field}:{x}_log_ratio" for x in numeric],
                [f"{field}:{x}_z" for x in numeric],
                [f"{field}:new_{c}" for c in categorical],
                [f"{field}:distinct_{c}" for c in categorical],
                [f"{field}:risk_{w}" for w in self._names],
                f"{field}:risk_labels",
            )
        return names

    def _step(
        self,
        field: str,
        entity: _Entity,
        numeric: list[float | None],
        categorical: list[str | None],
        now: float,
        out: dict[str, float],
    ) -> None:
        """Describe the entity as it was before this event into ``out``, then fold the event in."""
        if len(entity.mean) < len(numeric) or len(entity.seen) < len(categorical):
            entity.widen(len(numeric), len(categorical))  # fields admitted after this entity was created
        (
            first,
            since,
            count_names,
            mean_names,
            ratio_names,
            z_names,
            new_names,
            distinct_names,
            risk,
            weight,
        ) = self._names_of(field)
        last = entity.last
        known = last is not None
        dt = now - last if known and now > last else 0.0
        out[first] = 0.0 if known else 1.0
        if known:
            out[since] = math.log1p(dt)
        counts, all_sums = entity.counts, entity.sums
        for w, window in enumerate(self.windows):
            decay = math.exp(-dt / window) if dt else 1.0
            count, sums = counts[w], all_sums[w]
            out[count_names[w]] = count * decay
            if known:
                for name, total in zip(mean_names[w], sums, strict=True):
                    out[name] = total / count
            counts[w] = count * decay + 1.0
            for j, value in enumerate(numeric):
                sums[j] = sums[j] * decay + (value or 0.0)
        alpha = max(1.0 - math.exp(-dt / self.windows[-1]), 1.0 / counts[-1])  # weight of the newest value
        means, variances = entity.mean, entity.var
        for j, value in enumerate(numeric):
            if value is None:
                continue
            mean, var = means[j], variances[j]
            if mean != mean:
                means[j] = value
                continue
            if mean > 0.0 and value > 0.0:
                out[ratio_names[j]] = math.log(value / mean)
            delta = value - mean
            out[z_names[j]] = delta / math.sqrt(var + 1e-12) if var > 0.0 else 0.0
            means[j] = mean + alpha * delta
            variances[j] = (1.0 - alpha) * (var + alpha * delta * delta)
        for j, value in enumerate(categorical):
            seen = entity.seen[j]
            if known:
                out[distinct_names[j]] = float(len(seen))
                if value is not None:
                    out[new_names[j]] = 0.0 if value in seen else 1.0
            if value is not None and len(seen) < self.max_values:
                seen.add(value)
        labels, positives = entity.labels, entity.pos
        if labels[-1] > 0.0:
            for w, window in enumerate(self.windows):
                if labels[w] > 1e-3:
                    out[risk[w]] = positives[w] / labels[w]
                if dt:
                    decay = math.exp(-dt / window)
                    positives[w] *= decay
                    labels[w] *= decay
            out[weight] = labels[-1]
        entity.last = now if last is None or now > last else last

    # -- labels --------------------------------------------------------------------------------------------
    def learn_label(self, features: Mapping[str, Any], time: float | None, positive: bool) -> None:
        """The label of an event with these ``features`` (event ``time``), rare class or not: it counts
        towards its entities' risk once ``risk_gap`` seconds of event time have passed since the event."""
        for field, key in self.keys_of(features).items():
            self._n_pending += 1
            due = (time or 0.0) + self.risk_gap
            heapq.heappush(self._pending, (due, self._n_pending, field, key, positive))
        if self.risk_gap <= 0.0:
            self._apply_labels(None)

    def _apply_labels(self, now: float | None) -> None:
        pending = self._pending
        while pending and (now is None or pending[0][0] <= now):
            _, _, field, key, positive = heapq.heappop(pending)
            entity = self._state[field].get(key)
            if entity is None:
                continue  # evicted (or never seen): its risk starts again
            for w in range(len(self.windows)):
                entity.labels[w] += 1.0
                entity.pos[w] += positive
