"""Streaming anomaly detection for operational metrics: one value per timestamp (CPU, latency, request rate).

:class:`SeriesAnomalyDetector` is an ensemble of cheap scorers, each normalised so that ``1.0`` is its own
alarm level, combined by their maximum:

* **novelty** -- the value leaves the range seen over a long window by more than ``novelty_margin`` of that
  range (a new extreme: a spike or a level shift nothing in the history resembles);
* **level change** -- the mean of the last ``change_window`` (and ``2 * change_window``) values moves away
  from the long-run distribution of such means (z-score over an exponentially forgotten history);
* **seasonal change** -- the same on the residual from a per-phase baseline (hour of the day, or hour of the
  week once two weeks are seen and it fits better), switched on only while that baseline explains the series
  (residual mean square below ``seasonality_gate`` times the raw variance);
* **seasonal novelty** -- while the series is seasonal, the daily residual leaving its own long-window range
  by ``seasonal_novelty_margin`` of that range (the daily peak that never came, a plateau at the wrong
  hour);
* **likelihood** -- HTM-style anomaly likelihood: the short average of a bounded prediction error (the
  better of a slow baseline and the previous value) against the long-run distribution of that average, as a
  Gaussian tail surprise ``-log P``.

After a point crosses the alarm level the output is damped for ``rest`` points: one alert per incident.

The combined level ``S`` (``1`` = alarm) becomes a score in ``[0, 1)`` with ``u / (1 + u)``, ``u = S`` below
1 and ``1 + ln S`` above: ``0.5`` is the alarm level on every series, the extreme tail keeps its order, and
no finite input reaches ``1.0``. Memory is bounded (a few short windows, 24 + 168 seasonal cells and 2 x 16
range blocks per series: about 10 KB pickled); a point costs about 10 us in CPython.

:class:`SeriesRegistry` keeps one detector per series key (e.g. a Prometheus label set) with an LRU cap.

>>> import math
>>> det = SeriesAnomalyDetector()
>>> scores = []
>>> for i in range(2000):
...     v = 50 + 10 * math.sin(2 * math.pi * i / 288) + (i * 7919 % 13) / 13
...     scores.append(det.score_one(v, t=300.0 * i))
...     det.learn_one(v, t=300.0 * i)
>>> max(scores[200:]) < 0.5
True
>>> det.score_one(95.0, t=300.0 * 2000) > 0.5  # far above anything seen
True
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from river import base

__all__ = ["SeriesAnomalyDetector", "SeriesRegistry", "level_to_score"]

_DAY = 86400.0
_WEEK = 7 * _DAY
_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def level_to_score(level: float) -> float:
    """Map an alarm level (``1`` = alarm) to a score in ``[0, 1)``: ``u / (1 + u)``, log-compressed tail.

    >>> level_to_score(0.0), level_to_score(1.0), round(level_to_score(math.e), 4)
    (0.0, 0.5, 0.6667)
    >>> level_to_score(1e300) < level_to_score(math.inf) < 1.0
    True
    """
    if not level > 0.0:  # also NaN
        return 0.0
    u = level if level <= 1.0 else 1.0 + math.log(min(level, 1e300))
    if level == math.inf:
        u += 1.0
    return u / (1.0 + u)


def _gauss_surprise(z: float) -> float:
    """``-log P(Z > z)`` for a standard normal, accurate in the far tail; 0 for ``z <= 0``."""
    if z <= 0.0:
        return 0.0
    if z < 8.0:
        return -math.log(0.5 * math.erfc(z / _SQRT2))
    return 0.5 * z * z + math.log(z) + _LOG_SQRT_2PI + math.log1p(1.0 / (z * z))


class _EWStats:
    """Mean and variance with exponential forgetting (plain averages while fewer than ``span`` values)."""

    __slots__ = ("m", "n", "span", "v")

    def __init__(self, span: float) -> None:
        self.span = span
        self.n = 0
        self.m = 0.0
        self.v = 0.0

    def update(self, x: float) -> None:
        self.n += 1
        a = max(1.0 / self.n, 1.0 / self.span)
        d = x - self.m
        self.m += a * d
        self.v = (1.0 - a) * (self.v + a * d * d)


class _Window:
    """Running sum over the last ``size`` values (re-summed now and then so rounding cannot drift)."""

    __slots__ = ("buf", "pushes", "size", "total")

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf: deque[float] = deque()
        self.total = 0.0
        self.pushes = 0

    def mean_with(self, x: float) -> float | None:
        """Mean of the window after appending ``x`` (without appending); None until the window can fill."""
        n = len(self.buf)
        if n + 1 < self.size:
            return None
        total = self.total + x - (self.buf[0] if n >= self.size else 0.0)
        return total / self.size

    def push(self, x: float) -> float | None:
        self.buf.append(x)
        self.total += x
        if len(self.buf) > self.size:
            self.total -= self.buf.popleft()
        self.pushes += 1
        if self.pushes % 4096 == 0:
            self.total = math.fsum(self.buf)
        if len(self.buf) < self.size:
            return None
        return self.total / self.size


class _BlockRange:
    """Min and max over ~the last ``window`` values, kept as ``blocks`` block extremes (O(blocks) memory)."""

    __slots__ = ("block", "blocks", "cur_hi", "cur_lo", "cur_n", "hi", "lo", "past")

    def __init__(self, window: int, blocks: int = 16) -> None:
        self.blocks = blocks
        self.block = max(1, window // blocks)
        self.past: deque[tuple[float, float]] = deque()
        self.lo = math.inf  # extremes of the completed blocks
        self.hi = -math.inf
        self.cur_lo = math.inf
        self.cur_hi = -math.inf
        self.cur_n = 0

    def bounds(self) -> tuple[float, float]:
        return min(self.lo, self.cur_lo), max(self.hi, self.cur_hi)

    def push(self, x: float) -> None:
        if x < self.cur_lo:
            self.cur_lo = x
        if x > self.cur_hi:
            self.cur_hi = x
        self.cur_n += 1
        if self.cur_n >= self.block:
            self.past.append((self.cur_lo, self.cur_hi))
            if len(self.past) > self.blocks:
                self.past.popleft()
            self.lo = min(b[0] for b in self.past)
            self.hi = max(b[1] for b in self.past)
            self.cur_lo, self.cur_hi, self.cur_n = math.inf, -math.inf, 0


class _Seasonal:
    """Per-phase baseline: the mean of each phase cell, forgetting over about ``days`` periods."""

    __slots__ = ("bins", "cells", "days", "period")

    def __init__(self, period: float, bins: int, days: float) -> None:
        self.period = period
        self.bins = bins
        self.days = days
        self.cells: dict[int, list[float]] = {}

    def cell(self, t: float) -> int:
        return int((t % self.period) / self.period * self.bins)

    def baseline(self, t: float) -> float | None:
        c = self.cells.get(self.cell(t))
        if c is None or c[1] < 3:
            return None
        return c[0]

    def update(self, t: float, x: float, dt: float) -> None:
        c = self.cells.get(self.cell(t))
        if c is None:
            self.cells[self.cell(t)] = [x, 1.0]
            return
        c[1] += 1.0
        cap = max(1.0, self.days * self.period / self.bins / dt)
        c[0] += (x - c[0]) / min(c[1], cap)


def _as_value(x: Any, key: str | None) -> float:
    if isinstance(x, dict):
        if key is not None:
            return float(x[key])
        if len(x) != 1:
            raise ValueError(f"expected one value per point, got keys {sorted(map(str, x))}; set value_key")
        return float(next(iter(x.values())))
    return float(x)


def _as_seconds(t: Any) -> float | None:
    if t is None:
        return None
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        return t.timestamp()
    return float(t)


class SeriesAnomalyDetector(base.AnomalyDetector):
    """Univariate streaming anomaly detector for one operational metric; scores in ``[0, 1)``, 0.5 = alarm.

    Score, then learn: ``score_one(x, t)`` does not change the state; ``learn_one(x, t)`` does (it reuses the
    work of a ``score_one`` call on the same point). ``score_learn_one`` does both at once.

    Parameters
    ----------
    value_key
        Key of the value when points come as dicts (not needed for one-key dicts or plain floats).
    novelty_margin
        A value beyond the long-window range by this fraction of the range is an alarm.
    range_window
        Points over which the range is remembered.
    change_window
        Short window (points) of the level-change scorer; a second one twice as long runs beside it.
    change_z
        z-score of a short-window mean (against the history of such means) that is an alarm.
    likelihood_window
        Points averaged by the likelihood scorer.
    likelihood_surprise
        Gaussian tail surprise ``-log P`` of the averaged prediction error that is an alarm (12 ~ P = 6e-6).
    history
        Span (points) of the forgotten distributions that the change and likelihood scorers compare to.
    baseline_span
        Span (points) of the slow level baseline and of the error scales.
    seasonal_bins
        Phase cells per day (the weekly profile uses seven times as many).
    seasonal_days
        Periods over which each cell forgets.
    seasonality_gate
        Seasonal scorers run only while the residual mean square is below this fraction of the raw variance.
    seasonal_novelty_margin
        A daily residual beyond its long-window range by this fraction of the range is an alarm.
    warmup
        Points learned before anything is scored (scores are 0 until then).
    rest
        Points damped after an alarm (one alert per incident); 0 disables.
    rest_level
        Level (``1`` = alarm) that starts a rest period.
    rest_factor
        Factor applied to the level during a rest period.
    """

    def __init__(
        self,
        value_key: str | None = None,
        novelty_margin: float = 0.05,
        range_window: int = 10_000,
        change_window: int = 12,
        change_z: float = 7.0,
        likelihood_window: int = 10,
        likelihood_surprise: float = 12.0,
        history: int = 4000,
        baseline_span: int = 500,
        seasonal_bins: int = 24,
        seasonal_days: float = 3.0,
        seasonality_gate: float = 0.5,
        seasonal_novelty_margin: float = 0.1,
        warmup: int = 100,
        rest: int = 30,
        rest_level: float = 0.95,
        rest_factor: float = 0.0,
    ) -> None:
        self.value_key = value_key
        self.novelty_margin = novelty_margin
        self.range_window = range_window
        self.change_window = change_window
        self.change_z = change_z
        self.likelihood_window = likelihood_window
        self.likelihood_surprise = likelihood_surprise
        self.history = history
        self.baseline_span = baseline_span
        self.seasonal_bins = seasonal_bins
        self.seasonal_days = seasonal_days
        self.seasonality_gate = seasonality_gate
        self.seasonal_novelty_margin = seasonal_novelty_margin
        self.warmup = warmup
        self.rest = rest
        self.rest_level = rest_level
        self.rest_factor = rest_factor
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._range = _BlockRange(self.range_window)
        self._win_short = _Window(self.change_window)
        self._win_long = _Window(2 * self.change_window)
        self._range_daily = _BlockRange(self.range_window)
        self._win_daily = _Window(self.change_window)
        self._win_weekly = _Window(self.change_window)
        self._win_err = _Window(self.likelihood_window)
        self._h_short = _EWStats(self.history)
        self._h_long = _EWStats(self.history)
        self._h_daily = _EWStats(self.history)
        self._h_weekly = _EWStats(self.history)
        self._h_err = _EWStats(self.history)
        self._daily = _Seasonal(_DAY, self.seasonal_bins, self.seasonal_days)
        self._weekly = _Seasonal(_WEEK, 7 * self.seasonal_bins, self.seasonal_days)
        # mean squares of the seasonal residuals and of the deviation from a slow mean (seasonality gate)
        self._var_daily = _EWStats(self.baseline_span)
        self._var_weekly = _EWStats(self.baseline_span)
        self._var_raw = _EWStats(self.baseline_span)
        self._slow = _EWStats(self.baseline_span)
        self._level: float | None = None
        self._mae_level: float | None = None
        self._mae_last: float | None = None
        self._prev: float | None = None
        self._t0: float | None = None
        self._prev_t: float | None = None
        self._dt: float | None = None
        self._cool = 0
        self._pending: tuple | None = None
        self.last_components: dict[str, float] = {}

    # ------------------------------------------------------------------ scoring
    def _scale_floor(self, ref: float) -> float:
        return 1e-5 * abs(ref) + 1e-12

    def _seasonal_residual(self, x: float, t: float | None) -> tuple[float | None, float | None, str | None]:
        """Daily and weekly residuals, and which one the scorers use (None: not seasonal)."""
        if t is None or self._dt is None:
            return None, None, None
        bd = self._daily.baseline(t)
        rd = None if bd is None else x - bd
        rw = None
        if self._t0 is not None and t - self._t0 >= 2 * _WEEK:
            bw = self._weekly.baseline(t)
            rw = None if bw is None else x - bw
        if rw is not None and self._var_weekly.m < self._var_daily.m:
            use, best = "weekly", self._var_weekly.m
        elif rd is not None:
            use, best = "daily", self._var_daily.m
        else:
            return rd, rw, None
        if self._var_raw.n < self.warmup or not best < self.seasonality_gate * self._var_raw.m:
            use = None
        return rd, rw, use

    def _evaluate(self, x: float, t: float | None) -> tuple:
        comp: dict[str, float] = {}
        ready = self._n >= self.warmup
        # novelty against the long-window range
        if ready:
            lo, hi = self._range.bounds()
            span = max(hi - lo, 1e-9 * max(abs(hi), abs(lo)) + 1e-12)
            comp["novelty"] = max(x - hi, lo - x) / span / self.novelty_margin
        # level change, two window lengths
        m_short = self._win_short.mean_with(x)
        m_long = self._win_long.mean_with(x)
        for name, m, h in (("change", m_short, self._h_short), ("change_long", m_long, self._h_long)):
            if m is not None and h.n >= self.warmup:
                sd = math.sqrt(h.v) + self._scale_floor(h.m)
                comp[name] = abs(m - h.m) / sd / self.change_z
        # seasonal change
        rd, rw, use = self._seasonal_residual(x, t)
        if use is not None:
            if rd is not None:  # novelty of the daily residual (its range matures first)
                lo, hi = self._range_daily.bounds()
                if hi > lo:
                    comp["seasonal_novelty"] = (
                        max(rd - hi, lo - rd) / (hi - lo) / self.seasonal_novelty_margin
                    )
            r, win, h = (
                (rd, self._win_daily, self._h_daily)
                if use == "daily"
                else (rw, self._win_weekly, self._h_weekly)
            )
            m_seas = win.mean_with(r)
            if m_seas is not None and h.n >= self.warmup:
                sd = math.sqrt(h.v) + self._scale_floor(h.m) + 1e-9 * abs(x)
                comp["seasonal"] = abs(m_seas - h.m) / sd / self.change_z
        # likelihood of the averaged bounded prediction error
        err = 0.0
        if self._level is not None and self._mae_level is not None:
            fl = self._scale_floor(self._level)
            e = abs(x - self._level) / (self._mae_level + fl)
            if self._prev is not None and self._mae_last is not None:
                e = min(e, abs(x - self._prev) / (self._mae_last + fl))
            err = e / (e + 1.0)
        m_err = self._win_err.mean_with(err) if len(self._win_err.buf) >= self.likelihood_window else None
        if m_err is None and self._win_err.buf:
            m_err = (self._win_err.total + err) / (len(self._win_err.buf) + 1)
        if m_err is not None and self._h_err.n >= self.warmup:
            z = (m_err - self._h_err.m) / (math.sqrt(self._h_err.v) + 1e-4)
            comp["likelihood"] = _gauss_surprise(z) / self.likelihood_surprise
        level = max(comp.values()) if comp else 0.0
        if level != level:  # NaN input
            level = 0.0
        raw_level = level
        if self._cool > 0:
            level *= self.rest_factor
        return level_to_score(level), raw_level, comp, (rd, rw, use, err)

    def _point(self, x: Any, t: Any) -> tuple[float, float | None]:
        return _as_value(x, self.value_key), _as_seconds(t)

    def score_one(self, x: Any, t: Any = None) -> float:  # type: ignore[override]
        """Anomaly score of the point in ``[0, 1)`` (0.5 = alarm level); does not change the state."""
        v, ts = self._point(x, t)
        if not math.isfinite(v):
            return 0.0
        out = self._evaluate(v, ts)
        self._pending = (v, ts, out)
        self.last_components = out[2]
        return out[0]

    def learn_one(self, x: Any, t: Any = None) -> None:  # type: ignore[override]
        """Update the state with the point (call after ``score_one`` for test-then-train)."""
        v, ts = self._point(x, t)
        if not math.isfinite(v):
            return
        p = self._pending
        out = p[2] if p is not None and p[0] == v and p[1] == ts else self._evaluate(v, ts)
        self._pending = None
        self._learn(v, ts, out)

    def score_learn_one(self, x: Any, t: Any = None) -> float:
        """Score the point, then learn it; returns the score."""
        v, ts = self._point(x, t)
        if not math.isfinite(v):
            return 0.0
        out = self._evaluate(v, ts)
        self.last_components = out[2]
        self._learn(v, ts, out)
        return out[0]

    # ----------------------------------------------------------------- learning
    def _learn(self, x: float, t: float | None, out: tuple) -> None:
        _, raw_level, _, (rd, rw, _use, err) = out
        if self._cool > 0:
            self._cool -= 1
        elif self.rest and raw_level > self.rest_level:
            self._cool = self.rest
        # change windows and their histories
        m = self._win_short.push(x)
        if m is not None:
            self._h_short.update(m)
        m = self._win_long.push(x)
        if m is not None:
            self._h_long.update(m)
        if rd is not None:
            self._range_daily.push(rd)
            m = self._win_daily.push(rd)
            if m is not None:
                self._h_daily.update(m)
        if rw is not None:
            m = self._win_weekly.push(rw)
            if m is not None:
                self._h_weekly.update(m)
        self._win_err.push(err)
        self._h_err.update(self._win_err.total / len(self._win_err.buf))
        self._range.push(x)
        # seasonal baselines and the variances of the gate
        if t is not None:
            if self._t0 is None:
                self._t0 = t
            if self._prev_t is not None and t > self._prev_t:
                d = t - self._prev_t
                self._dt = d if self._dt is None else self._dt + 0.01 * (d - self._dt)
            if self._dt is not None:
                self._daily.update(t, x, self._dt)
                self._weekly.update(t, x, self._dt)
            self._prev_t = t
        if rd is not None:
            self._var_daily.update(rd * rd)
            if self._slow.n:
                d = x - self._slow.m
                self._var_raw.update(d * d)
        if rw is not None:
            self._var_weekly.update(rw * rw)
        self._slow.update(x)
        # slow level and error scales
        k = min(self._n + 1, self.baseline_span)
        if self._level is not None:
            d = abs(x - self._level)
            self._mae_level = d if self._mae_level is None else self._mae_level + (d - self._mae_level) / k
        if self._prev is not None:
            d = abs(x - self._prev)
            self._mae_last = d if self._mae_last is None else self._mae_last + (d - self._mae_last) / k
        self._level = x if self._level is None else self._level + (x - self._level) / k
        self._prev = x
        self._n += 1

    @property
    def n_seen(self) -> int:
        """Number of points learned."""
        return self._n

    def score_many(self, values, times=None) -> list[float]:
        """Score-then-learn a whole series in order; returns the scores."""
        if times is None:
            return [self.score_learn_one(v) for v in values]
        return [self.score_learn_one(v, t) for v, t in zip(values, times, strict=True)]


class SeriesRegistry:
    """One :class:`SeriesAnomalyDetector` state per series key, at most ``max_series`` of them (LRU eviction).

    ``factory`` builds the detector of a new series (default: ``SeriesAnomalyDetector()``); a detector
    instance is accepted too and cloned. ``evictions`` counts the states dropped to respect the cap.

    >>> reg = SeriesRegistry(max_series=2)
    >>> for i in range(300):
    ...     for key in ("a", "b"):
    ...         _ = reg.score_learn(key, float(i % 7), t=60.0 * i)
    >>> reg.score_learn("c", 1.0, t=0.0), len(reg), reg.evictions, "a" in reg
    (0.0, 2, 1, False)
    """

    def __init__(
        self,
        factory: Callable[[], SeriesAnomalyDetector] | SeriesAnomalyDetector | None = None,
        max_series: int = 10_000,
    ) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.factory = factory
        self.max_series = max_series
        self.evictions = 0
        self._states: OrderedDict[Hashable, SeriesAnomalyDetector] = OrderedDict()

    def _new(self) -> SeriesAnomalyDetector:
        f = self.factory
        if f is None:
            return SeriesAnomalyDetector()
        if isinstance(f, SeriesAnomalyDetector):
            return f.clone()
        return f()

    def _get(self, key: Hashable, create: bool) -> SeriesAnomalyDetector | None:
        det = self._states.get(key)
        if det is not None:
            self._states.move_to_end(key)
            return det
        if not create:
            return None
        det = self._new()
        self._states[key] = det
        while len(self._states) > self.max_series:
            self._states.popitem(last=False)
            self.evictions += 1
        return det

    def score_one(self, key: Hashable, value: float, t: Any = None) -> float:
        """Score without learning (0.0 for an unknown series)."""
        det = self._get(key, create=False)
        return 0.0 if det is None else det.score_one(value, t)

    def learn_one(self, key: Hashable, value: float, t: Any = None) -> None:
        self._get(key, create=True).learn_one(value, t)  # type: ignore[union-attr]

    def score_learn(self, key: Hashable, value: float, t: Any = None) -> float:
        """Score the point of series ``key``, then learn it; creates the state of a new series."""
        return self._get(key, create=True).score_learn_one(value, t)  # type: ignore[union-attr]

    def score_learn_many(self, points) -> list[float]:
        """``score_learn`` over an iterable of ``(key, value, t)`` in stream order."""
        return [self.score_learn(k, v, t) for k, v, t in points]

    def forget(self, key: Hashable) -> bool:
        """Drop the state of a series; True if it existed."""
        return self._states.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._states

    def keys(self) -> Iterator[Hashable]:
        return iter(self._states)

    def get(self, key: Hashable) -> SeriesAnomalyDetector | None:
        """The detector of a series, without touching its LRU position."""
        return self._states.get(key)
