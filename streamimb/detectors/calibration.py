"""Score calibration: raw anomaly scores -> empirical p-values -> alert decisions.

A raw score means little on its own (HalfSpaceTrees, LODA and a one-class SVM live on different scales), so
each score is ranked against a bounded window of recent scores. The decision uses the window *before* the
score joins it (test-then-train).

>>> cal = ScoreCalibrator(kind="quantile", quantile=0.9, window=100, warmup=10)
>>> decisions = [cal.update(float(i % 10)) for i in range(50)]
>>> [alert for p, alert in decisions[-10:]]
[False, False, False, False, False, False, False, False, False, False]
>>> round(cal.p_value(9.0), 3), round(cal.p_value(100.0), 3)  # 5 of 50 scores are 9
(0.118, 0.02)
>>> cal.update(100.0)[1]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamimb.jit import jit


class ScoreCalibrator:
    """Empirical p-values over a rolling window, and an alert rule on top of them.

    kind="quantile": alert when the score is above the window's ``quantile`` (p-value < 1 - quantile).
    kind="budget": alert when the p-value is below ``alerts / per_events`` and fewer than ``alerts`` alerts
    were raised in the last ``per_events`` events: a hard cap that holds even when scores shift wholesale.

    The window is kept sorted in an array (and in arrival order in a ring), and a batch of scores is ranked
    and added in compiled loops (`_rank_each`, `_rank_batch`).
    """

    def __init__(
        self,
        kind: str = "quantile",
        quantile: float = 0.995,
        alerts: int = 5,
        per_events: int = 1000,
        window: int = 5000,
        warmup: int = 500,
    ) -> None:
        if kind not in ("quantile", "budget"):
            raise ValueError(f"unknown calibration kind {kind!r}: use 'quantile' or 'budget'")
        if window < 1 or alerts < 1:
            raise ValueError("window and alerts must be >= 1")
        self.kind = kind
        self.quantile = quantile
        self.alerts = alerts
        self.per_events = per_events
        self.window = window
        self.warmup = warmup
        self._sorted = np.empty(window)  # the window's scores, ascending, in [:_state[0]]
        self._ring = np.empty(window)  # the same scores in arrival order, oldest at _state[1]
        self._alert_ring = np.empty(alerts, dtype=np.int64)  # event numbers of the alerts in the budget
        # size, ring start, events seen, alert ring start, alerts in the ring
        self._state = np.zeros(5, dtype=np.int64)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_fifo" in state:  # a checkpoint of the list-based calibrator: the same window, as arrays
            fifo, times = list(state.pop("_fifo")), list(state.pop("_alert_times"))
            n = state.pop("_n")
            del state["_sorted"]
            self.__dict__.update(state)
            self._sorted, self._ring = np.empty(self.window), np.empty(self.window)
            self._sorted[: len(fifo)] = sorted(fifo)
            self._ring[: len(fifo)] = fifo
            self._alert_ring = np.empty(self.alerts, dtype=np.int64)
            self._alert_ring[: len(times)] = times
            self._state = np.array([len(fifo), 0, n, 0, len(times)], dtype=np.int64)
            return
        self.__dict__.update(state)

    def __len__(self) -> int:
        """Scores in the window."""
        return int(self._state[0])

    @property
    def _n(self) -> int:
        """Scores seen so far."""
        return int(self._state[2])

    @property
    def alpha(self) -> float:
        """The target share of alerts."""
        return 1.0 - self.quantile if self.kind == "quantile" else self.alerts / self.per_events

    def p_value(self, score: float) -> float:
        """Share of the window at or above ``score`` (with the +1 correction, so never 0)."""
        n = int(self._state[0])
        at_or_above = n - int(np.searchsorted(self._sorted[:n], score, side="left"))
        return (at_or_above + 1) / (n + 1)

    def threshold(self) -> float:
        """The score above which an event is alerted now (inf while warming up)."""
        n = int(self._state[0])
        if n == 0 or self._n < self.warmup:
            return float("inf")
        k = min(n - 1, max(0, int(n * (1.0 - self.alpha))))
        return float(self._sorted[k])

    def update(self, score: float) -> tuple[float, bool]:
        """Rank the score against the window, decide, then add it. Returns (p_value, alert)."""
        p, alerts = self.update_many([score])
        return p[0], alerts[0]

    def update_many(self, scores: Sequence[float]) -> tuple[list[float], list[bool]]:
        """``update`` on each score in order: the p-values and the alert decisions.

        A batch of at least ``_BATCH_RANK`` scores is ranked in one pass against the window as it stood
        before the batch, corrected for the scores that left it and the batch's own earlier scores, and the
        window is sorted once after it; fewer go into the sorted window one by one. Same p-values either way.

        >>> cal = ScoreCalibrator(quantile=0.9, window=100, warmup=10)
        >>> p, alerts = cal.update_many([float(i % 10) for i in range(50)] + [100.0])
        >>> sum(alerts), round(p[-1], 3)
        (1, 0.02)
        """
        values = np.asarray(scores, dtype=np.float64)
        p_values = np.empty(len(values))
        for lo in range(0, len(values), _MAX_BATCH_RANK):
            chunk, out = values[lo : lo + _MAX_BATCH_RANK], p_values[lo : lo + _MAX_BATCH_RANK]
            if len(chunk) >= _BATCH_RANK:
                _rank_batch(chunk, self._sorted, self._ring, self._state, out)
                size = int(self._state[0])
                self._sorted[:size] = np.sort(self._ring[:size])
            else:
                _rank_each(chunk, self._sorted, self._ring, self._state, out)
        alerts = np.empty(len(values), dtype=np.bool_)
        _decide(p_values, self._alert_ring, self._state, self.warmup, self.alpha, self.kind == "budget",
                self.per_events, alerts)  # fmt: skip
        return p_values.tolist(), alerts.tolist()


_BATCH_RANK = 64  # scores from which a batch is ranked at once and the window sorted after it
_MAX_BATCH_RANK = 256  # largest batch ranked at once (its correction loops grow with its square)


@jit
def _rank_each(
    scores: np.ndarray, ordered: np.ndarray, ring: np.ndarray, state: np.ndarray, p_values: np.ndarray
) -> None:
    """Each score ranked against the window before it joins (its p-value), then added; once the window
    is full the oldest score leaves as the new one joins, in one shift of the sorted array between their
    two places."""
    size, start = state[0], state[1]
    window = len(ordered)
    for k in range(len(scores)):
        score = scores[k]
        p_values[k] = (size - np.searchsorted(ordered[:size], score, side="left") + 1) / (size + 1)
        i = np.searchsorted(ordered[:size], score, side="right")
        if size < window:  # insert (numba copies overlapping slices correctly)
            ordered[i + 1 : size + 1] = ordered[i:size]
            ordered[i] = score
            ring[(start + size) % window] = score
            size += 1
            continue
        j = np.searchsorted(ordered[:size], ring[start], side="left")  # the oldest score leaves
        if i <= j:
            ordered[i + 1 : j + 1] = ordered[i:j]
            ordered[i] = score
        else:
            ordered[j : i - 1] = ordered[j + 1 : i]
            ordered[i - 1] = score
        ring[start] = score
        start = (start + 1) % window
    state[0], state[1] = size, start


@jit
def _rank_batch(
    scores: np.ndarray, ordered: np.ndarray, ring: np.ndarray, state: np.ndarray, p_values: np.ndarray
) -> None:
    """``_rank_each``'s p-values for a whole batch, and the window after it in arrival order from the
    ring's start (sorting it is the caller's).

    Score k is ranked against the window before the batch (a binary search of the sorted array), less the
    window's scores that have left by then (the oldest), plus the batch's earlier scores still in it."""
    size, start = state[0], state[1]
    window, n = len(ordered), len(scores)
    for k in range(n):
        score = scores[k]
        gone = max(0, size + k - window)  # scores of the sequence (ring, then batch) that have left
        count = size - np.searchsorted(ordered[:size], score, side="left")
        left = min(gone, size)  # the window's oldest scores: ring[start:], then ring[:start]
        for i in range(start, min(start + left, window)):
            if ring[i] >= score:
                count -= 1
        for i in range(max(0, start + left - window)):
            if ring[i] >= score:
                count -= 1
        for j in range(max(0, gone - size), k):
            if scores[j] >= score:
                count += 1
        held = min(window, size + k)
        p_values[k] = (count + 1) / (held + 1)
    total = size + n
    kept = min(window, total)
    fresh = np.empty(kept)
    for i in range(kept):
        at = total - kept + i
        fresh[i] = ring[(start + at) % window] if at < size else scores[at - size]
    ring[:kept] = fresh
    state[0], state[1] = kept, 0


@jit
def _decide(
    p_values: np.ndarray,
    alert_ring: np.ndarray,
    state: np.ndarray,
    warmup: int,
    alpha: float,
    budget: bool,
    per_events: int,
    alerts: np.ndarray,
) -> None:
    """The alert decision on each p-value in order: below ``alpha`` after ``warmup`` scores and, for a
    budget, fewer than ``len(alert_ring)`` alerts in the last ``per_events`` scores."""
    n, a_start, a_len = state[2], state[3], state[4]
    max_alerts = len(alert_ring)
    for k in range(len(p_values)):
        alert = n >= warmup and p_values[k] < alpha
        if alert and budget:  # the alerts of the last per_events events
            while a_len and alert_ring[a_start] <= n - per_events:
                a_start, a_len = (a_start + 1) % max_alerts, a_len - 1
            alert = a_len < max_alerts
            if alert:
                alert_ring[(a_start + a_len) % max_alerts] = n
                a_len += 1
        alerts[k] = alert
        n += 1
    state[2], state[3], state[4] = n, a_start, a_len
