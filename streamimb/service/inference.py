"""The service's schema when the config declares no feature columns: inferred from the first records.

The first poll batches are held back (not processed, not committed) until ``sample_records`` event records
are in, a poll comes back empty, or ``max_wait_s`` has passed; the schema is inferred from them as
``streamimb replay`` infers it from a file (:func:`streamimb.decoding.infer_schema`), and the held records
are then processed in order. A partition revoked meanwhile loses its held records (its new owner reads them
from the committed offset). A restored checkpoint carries the schema its model was trained with, which
settles the question at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from streamimb.config import EventSchema
from streamimb.decoding import infer_schema
from streamimb.io.interfaces import Partition, RawRecord


class SchemaInference:
    """Holds the first records of a stream back until a schema is inferred from them.

    >>> from streamimb.io.interfaces import RawRecord
    >>> rec = lambda i: RawRecord("events", 0, i, None, b'{"id": "e%d", "account": "a%d", "amount": %d.5, '
    ...                            b'"ts": %d, "label": 0}' % (i, i % 3, i, 1700000000 + i), 0)
    >>> inference = SchemaInference(EventSchema(), "events", sample_records=2)
    >>> inference.offer([rec(0)]), inference.holding
    ([], True)
    >>> [r.offset for r in inference.offer([rec(1)])]
    [0, 1]
    >>> s = inference.schema
    >>> s.id, s.time, s.label, s.numeric, s.categorical
    ('id', 'ts', 'label', ['amount'], ['account'])
    """

    def __init__(
        self,
        base: EventSchema,
        events_topic: str,
        sample_records: int = 1000,
        max_wait_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self.events_topic = events_topic
        self.sample_records = sample_records
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.schema: EventSchema | None = None
        self.sampled = 0
        self._held: list[RawRecord] = []
        self._events = 0
        self._since: float | None = None

    @property
    def holding(self) -> bool:
        """True while records are held back for the sample."""
        return bool(self._held) and self.schema is None

    def offer(self, records: list[RawRecord]) -> list[RawRecord]:
        """Records to process now: none while sampling, then every held record and these, in order."""
        if self.schema is not None:
            return self._release(records)
        if not records and not self._held:
            return []
        if self._since is None:
            self._since = self.clock()
        self._held += records
        self._events += sum(1 for r in records if r.topic == self.events_topic)
        enough = self._events >= self.sample_records
        if records and not enough and self.clock() - self._since < self.max_wait_s:
            return []
        self.schema = self._infer()
        return self._release([])

    def settle(self, schema: EventSchema) -> None:
        """Take ``schema`` (a restored checkpoint's) instead of inferring one."""
        if self.schema is None:
            self.schema = schema

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop the held records of partitions this process no longer owns."""
        gone = set(partitions)
        self._held = [r for r in self._held if (r.topic, r.partition) not in gone]
        self._events = sum(1 for r in self._held if r.topic == self.events_topic)

    def _infer(self) -> EventSchema:
        sample = []
        for r in self._held:
            if r.topic != self.events_topic or not r.value:
                continue
            try:
                doc = json.loads(r.value)
            except (ValueError, RecursionError):
                continue
            if isinstance(doc, dict):
                sample.append(doc)
        self.sampled = len(sample)
        schema = infer_schema(sample, self.base, max_categories=self.base.max_categories)
        # the rare class is fixed by the model from the labels it learns, not from a small first sample
        return schema.model_copy(update={"positive_class": self.base.positive_class})

    def _release(self, records: list[RawRecord]) -> list[RawRecord]:
        held, self._held = self._held, []
        return held + records if held else records
