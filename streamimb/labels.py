"""LabelJoiner: joins labels that arrive late (chargebacks, churn outcomes) to the predictions they judge.

A symmetric join with a time-to-live on both sides. Predictions wait for their label; a label that arrives
before its event was scored (a consumer catching up on both topics reads them in any order) waits for its
prediction. Both sides are bounded in number and age. Outcomes are counted:

- ``joined``: a label met its prediction;
- ``expired``: a prediction aged out without a label;
- ``unknown``: a label aged out without ever meeting a prediction (unknown id, or its prediction expired);
- ``duplicate``: a second label for an id that was already joined;
- ``evicted``: a prediction or an early label dropped by the size bound (``max_pending`` each side), e.g.
  by a flood of labels for unknown ids.

>>> joiner = LabelJoiner(ttl_seconds=100, max_pending=2)
>>> joiner.add("a", "prediction-a", now=0)
>>> joiner.match("a", "fraud", now=5)
'prediction-a'
>>> joiner.match("a", "fraud", now=6) is None, joiner.counts["duplicate"]
(True, 1)
>>> joiner.match("b", "ok", now=7)          # the label is early: it waits for its event
>>> joiner.add("b", "prediction-b", now=8)   # and is returned when the event is scored
'ok'
>>> joiner.match("d", "ok", now=9, since=400)  # read ahead: it waits from its own time
>>> joiner.add("c", "prediction-c", now=9)
>>> joiner.expire(now=450)
>>> joiner.early_labels, joiner.counts
(1, {'joined': 2, 'expired': 1, 'unknown': 0, 'duplicate': 1, 'evicted': 0})
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")

OUTCOMES = ("joined", "expired", "unknown", "duplicate", "evicted")


class LabelJoiner(Generic[T]):
    """Pending predictions and early labels by id, evicted oldest-first by TTL (caller's clock) and size."""

    def __init__(
        self, ttl_seconds: float = 7 * 86400.0, max_pending: int = 1_000_000, remember: int = 100_000
    ):
        self.ttl_seconds = ttl_seconds
        self.max_pending = max_pending
        self.remember = remember
        self._pending: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._early: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._joined: OrderedDict[str, None] = OrderedDict()
        self.counts = dict.fromkeys(OUTCOMES, 0)

    def __len__(self) -> int:
        """Predictions waiting for their label."""
        return len(self._pending)

    @property
    def early_labels(self) -> int:
        """Labels waiting for their prediction."""
        return len(self._early)

    def add(self, event_id: str, prediction: T, now: float) -> str | None:
        """Keep a prediction until its label arrives; returns the label at once if it came early."""
        self.expire(now)
        early = self._early.pop(event_id, None)
        if early is not None:
            self._mark_joined(event_id)
            return early[1]
        self._pending[event_id] = (now, prediction)
        self._pending.move_to_end(event_id)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.counts["evicted"] += 1
        return None

    def match(self, event_id: str, label: str, now: float, since: float | None = None) -> T | None:
        """The pending prediction for this id (removed); None if the label must wait or is a duplicate.

        A label that must wait for its event ages from ``since`` when that is later than ``now``: the label's
        own time on the joiner's clock (in event time, the event it judges cannot be later than its label),
        so that a label read far ahead of the events does not age out before its event comes.
        """
        self.expire(now)
        entry = self._pending.pop(event_id, None)
        if entry is not None:
            self._mark_joined(event_id)
            return entry[1]
        if event_id in self._joined:
            self.counts["duplicate"] += 1
            return None
        if event_id not in self._early:
            self._early[event_id] = (now if since is None else max(now, since), label)
            while len(self._early) > self.max_pending:
                self._early.popitem(last=False)
                self.counts["evicted"] += 1
        else:
            self.counts["duplicate"] += 1
        return None

    def expire(self, now: float) -> None:
        """Drop predictions and early labels older than the TTL."""
        self.counts["expired"] += _drop_older(self._pending, now - self.ttl_seconds)
        self.counts["unknown"] += _drop_older(self._early, now - self.ttl_seconds)

    def _mark_joined(self, event_id: str) -> None:
        self.counts["joined"] += 1
        self._joined[event_id] = None
        if len(self._joined) > self.remember:
            self._joined.popitem(last=False)


def _drop_older(entries: OrderedDict, cutoff: float) -> int:
    dropped = 0
    while entries:
        added = next(iter(entries.values()))[0]
        if added >= cutoff:
            break
        entries.popitem(last=False)
        dropped += 1
    return dropped
