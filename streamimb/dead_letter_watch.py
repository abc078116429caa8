"""Warn when a large share of the records is dead-lettered: a misconfiguration should be seen in seconds.

>>> clock = iter(range(0, 1000, 5)).__next__
>>> watch = DeadLetterWatch(max_share=0.05, min_records=100, clock=clock)
>>> letter = DeadLetter("bad_number", "field 'account': 'a2' is not a number", b"{}")
>>> print(watch.observe(100, [letter] * 60))
60 of 100 records (60%) were dead-lettered: bad_number 60 (field 'account': 'a2' is not a number)
>>> watch.observe(100, [letter] * 60) is None  # rate-limited: once per interval
True
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from streamimb.events import DeadLetter

log = logging.getLogger(__name__)


class DeadLetterWatch:
    """Counts records and dead letters over windows of ``window_records`` records or ``window_seconds``;
    once a window holds ``min_records`` of which more than ``max_share`` were dead-lettered, logs a warning
    with the top reasons, at most once per ``min_interval_s``. ``observe`` returns the warning it logged.
    """

    def __init__(
        self,
        max_share: float = 0.05,
        window_records: int = 10_000,
        window_seconds: float = 60.0,
        min_records: int = 100,
        min_interval_s: float = 60.0,
        top: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_share = max_share
        self.window_records = window_records
        self.window_seconds = window_seconds
        self.min_records = min_records
        self.min_interval_s = min_interval_s
        self.top = top
        self.clock = clock
        self._records = 0
        self._reasons: Counter[str] = Counter()
        self._details: dict[str, str] = {}
        self._opened = clock()
        self._last_warning: float | None = None

    def observe(self, records: int, dead_letters: Sequence[DeadLetter]) -> str | None:
        """Count a batch of ``records`` of which ``dead_letters`` were dead-lettered."""
        self._records += records
        for letter in dead_letters:
            self._reasons[letter.reason] += 1
            self._details.setdefault(letter.reason, letter.detail)
        now = self.clock()
        dead, seen = sum(self._reasons.values()), self._records
        quiet = self._last_warning is not None and now - self._last_warning < self.min_interval_s
        message = None
        if seen >= self.min_records and dead > self.max_share * seen and not quiet:
            top = self._reasons.most_common(self.top)
            reasons = ", ".join(f"{reason} {n} ({self._details[reason][:120]})" for reason, n in top)
            message = f"{dead} of {seen} records ({dead / seen:.0%}) were dead-lettered: {reasons}"
            log.warning(message)
            self._last_warning = now
        if message or seen >= self.window_records or now - self._opened >= self.window_seconds:
            self._records, self._opened = 0, now
            self._reasons.clear()
            self._details.clear()
        return message
