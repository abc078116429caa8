"""Drift monitors: a named signal fed to a river drift detector, reported as DriftEvents.

>>> monitor = DriftMonitor("error", "adwin")
>>> events = [monitor.update(0.0 if i < 1000 else 1.0, index=i) for i in range(2000)]
>>> [e.signal for e in events if e is not None][:1]
['error']
"""

from __future__ import annotations

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
        if self.block > 1:
            self._sum += value
            self._count += 1
            if self._count < self.block:
                return None
            value, self._sum, self._count = self._sum / self._count, 0.0, 0
        self._detector.update(value)
        if self._detector.drift_detected and index - self._last >= self.min_gap:
            self._last = index
            self.n_drifts += 1
            return DriftEvent(index=index, signal=self.signal, detector=self.detector, time=time)
        return None
