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

import bisect
from collections import deque


class ScoreCalibrator:
    """Empirical p-values over a rolling window, and an alert rule on top of them.

    kind="quantile": alert when the score is above the window's ``quantile`` (p-value < 1 - quantile).
    kind="budget": alert when the p-value is below ``alerts / per_events`` and fewer than ``alerts`` alerts
    were raised in the last ``per_events`` events: a hard cap that holds even when scores shift wholesale.
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
        self.kind = kind
        self.quantile = quantile
        self.alerts = alerts
        self.per_events = per_events
        self.window = window
        self.warmup = warmup
        self._sorted: list[float] = []
        self._fifo: deque[float] = deque()
        self._alert_times: deque[int] = deque()
        self._n = 0

    @property
    def alpha(self) -> float:
        """The target share of alerts."""
        return 1.0 - self.quantile if self.kind == "quantile" else self.alerts / self.per_events

    def p_value(self, score: float) -> float:
        """Share of the window at or above ``score`` (with the +1 correction, so never 0)."""
        n = len(self._sorted)
        at_or_above = n - bisect.bisect_left(self._sorted, score)
        return (at_or_above + 1) / (n + 1)

    def threshold(self) -> float:
        """The score above which an event is alerted now (inf while warming up)."""
        n = len(self._sorted)
        if n == 0 or self._n < self.warmup:
            return float("inf")
        k = min(n - 1, max(0, int(n * (1.0 - self.alpha))))
        return self._sorted[k]

    def update(self, score: float) -> tuple[float, bool]:
        """Rank the score against the window, decide, then add it. Returns (p_value, alert)."""
        p = self.p_value(score)
        alert = self._n >= self.warmup and p < self.alpha
        if alert and self.kind == "budget":
            while self._alert_times and self._alert_times[0] <= self._n - self.per_events:
                self._alert_times.popleft()
            alert = len(self._alert_times) < self.alerts
            if alert:
                self._alert_times.append(self._n)
        self._add(score)
        return p, alert

    def update_many(self, scores: list[float]) -> tuple[list[float], list[bool]]:
        """``update`` on each score in order: the p-values and the alert decisions.

        >>> cal = ScoreCalibrator(quantile=0.9, window=100, warmup=10)
        >>> p, alerts = cal.update_many([float(i % 10) for i in range(50)] + [100.0])
        >>> sum(alerts), round(p[-1], 3)
        (1, 0.02)
        """
        window, alpha, warmup = self.window, self.alpha, self.warmup
        budget, per_events, alert_times = self.kind == "budget", self.per_events, self._alert_times
        ordered, fifo = self._sorted, self._fifo
        bisect_left, insort = bisect.bisect_left, bisect.insort
        p_values, alerts = [], []
        n = self._n
        for score in scores:
            size = len(ordered)
            p = (size - bisect_left(ordered, score) + 1) / (size + 1)
            p_values.append(p)
            alert = n >= warmup and p < alpha
            if alert and budget:  # as in `update`
                while alert_times and alert_times[0] <= n - per_events:
                    alert_times.popleft()
                alert = len(alert_times) < self.alerts
                if alert:
                    alert_times.append(n)
            alerts.append(alert)
            n += 1
            insort(ordered, score)
            fifo.append(score)
            if len(fifo) > window:
                del ordered[bisect_left(ordered, fifo.popleft())]
        self._n = n
        return p_values, alerts

    def _add(self, score: float) -> None:
        self._n += 1
        bisect.insort(self._sorted, score)
        self._fifo.append(score)
        if len(self._fifo) > self.window:
            old = self._fifo.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
