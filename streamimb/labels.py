"""LabelJoiner: joins labels that arrive late (chargebacks, churn outcomes) to the predictions they judge.

Pending predictions are kept by event id, bounded in number and age. Outcomes are counted: ``joined``,
``expired`` (the prediction aged out, or was evicted to respect the size bound), ``unknown`` (no
prediction with that id, e.g. after expiry) and ``duplicate`` (a second label for an already joined id).

>>> joiner = LabelJoiner(ttl_seconds=100, max_pending=2)
>>> joiner.add("a", "prediction-a", now=0)
>>> joiner.add("b", "prediction-b", now=1)
>>> joiner.match("a", now=5)
'prediction-a'
>>> joiner.match("a", now=6) is None, joiner.counts["duplicate"]
(True, 1)
>>> joiner.add("c", "prediction-c", now=200)   # "b" is older than the TTL
>>> joiner.counts["expired"], joiner.match("b", now=201), joiner.counts["unknown"]
(1, None, 1)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")

OUTCOMES = ("joined", "expired", "unknown", "duplicate")


class LabelJoiner(Generic[T]):
    """Pending predictions by id, evicted oldest-first by TTL (in the caller's clock) and by count."""

    def __init__(
        self, ttl_seconds: float = 7 * 86400.0, max_pending: int = 1_000_000, remember: int = 100_000
    ):
        self.ttl_seconds = ttl_seconds
        self.max_pending = max_pending
        self.remember = remember
        self._pending: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._joined: OrderedDict[str, None] = OrderedDict()
        self.counts = dict.fromkeys(OUTCOMES, 0)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, event_id: str, prediction: T, now: float) -> None:
        self._pending[event_id] = (now, prediction)
        self._pending.move_to_end(event_id)
        self.expire(now)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.counts["expired"] += 1

    def expire(self, now: float) -> list[T]:
        """Drop predictions older than the TTL; returns them (for callers that want to log them)."""
        dropped = []
        while self._pending:
            event_id, (added, prediction) = next(iter(self._pending.items()))
            if now - added <= self.ttl_seconds:
                break
            del self._pending[event_id]
            dropped.append(prediction)
        self.counts["expired"] += len(dropped)
        return dropped

    def match(self, event_id: str, now: float) -> T | None:
        """The pending prediction for this id, removed from the pending set; None if unknown/duplicate."""
        self.expire(now)
        entry = self._pending.pop(event_id, None)
        if entry is None:
            self.counts["duplicate" if event_id in self._joined else "unknown"] += 1
            return None
        self.counts["joined"] += 1
        self._joined[event_id] = None
        if len(self._joined) > self.remember:
            self._joined.popitem(last=False)
        return entry[1]
