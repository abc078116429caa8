"""Drift monitors: a named signal fed to a river drift detector, reported as DriftEvents.

>>> monitor = DriftMonitor("error", "adwin")
>>> events = [monitor.update(0.0 if i < 1000 else 1.0, index=i) for i in range(2000)]
>>> [e.signal for e in events if e is not None][:1]
['error']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from river import drift

from streamimb.events import DriftEvent

DRIFT_DETECTORS = {
    "adwin": drift.ADWIN,
    "page_hinkley": drift.PageHinkley,
    "kswin": drift.KSWIN,
}


def build_drift_detector(kind: str, **params: Any) -> Any:
    try:
        factory = DRIFT_DETECTORS[kind]
    except KeyError:
        raise ValueError(f"unknown drift detector {kind!r}; choose from {sorted(DRIFT_DETECTORS)}") from None
    return factory(**params)


class DriftMonitor:
    """Watches one signal; reports a drift at most once every ``min_gap`` updates.

    With ``block > 1`` the detector sees the mean of each block of ``block`` values: the noise it compares
    against is then the block-to-block variation, which suits signals with a structure of their own (the
    scores of half-space trees rescale at every window swap, so ADWIN on raw scores fires all the time).
    """

    def __init__(
        self, signal: str, detector: str = "adwin", min_gap: int = 500, block: int = 1, **params: Any
    ) -> None:
        self.signal = signal
        self.detector = detector
        self.min_gap = min_gap
        self.block = block
        self.params = params
        self._detector = build_drift_detector(detector, **params)
        self._last = -(10**12)
        self._sum = 0.0
        self._count = 0
        self.n_drifts = 0

    def update(self, value: float, index: int, time: float | None = None) -> DriftEvent | None:
        """Feed one value (of the event at ``index``); the drift it reveals, if any."""
        drifts = self.update_many((value,), (index,), (time,))
        return drifts[0] if drifts else None

    def update_many(
        self, values: Sequence[float], indices: Sequence[int], times: Sequence[float | None]
    ) -> list[DriftEvent]:
        """``update`` over values in order; the drifts they reveal.

        >>> one, many = DriftMonitor("score", block=10), DriftMonitor("score", block=10)
        >>> values = [0.1] * 3000 + [0.9] * 3000
        >>> each = [d for i, v in enumerate(values) if (d := one.update(v, i))]
        >>> many.update_many(values, range(6000), [None] * 6000) == each, len(each) > 0
        (True, True)
        """
        drifts = []
        detector, block, min_gap = self._detector, self.block, self.min_gap
        total, count = self._sum, self._count
        for value, index, time in zip(values, indices, times, strict=True):
            if block > 1:
                total += value
                count += 1
                if count < block:
                    continue
                value, total, count = total / count, 0.0, 0
            detector.update(value)
            if detector.drift_detected and index - self._last >= min_gap:
                self._last = index
                self.n_drifts += 1
                drifts.append(DriftEvent(index=index, signal=self.signal, detector=self.detector, time=time))
        self._sum, self._count = total, count
        return drifts
