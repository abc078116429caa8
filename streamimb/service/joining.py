"""The label join: label records decoded, matched to the predictions that wait for them, learned per batch.

Labels come on a labels topic that is *co-partitioned* with the events topic (same partition count, produced
with the event's key), so partition ``P`` of the labels topic belongs to the state of events partition ``P``
and the label offset is checkpointed with the model that learned the label. A label whose prediction waits
in another partition held here is learned there, and its offset is committed once every model is on disk.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from streamimb.config import EventSchema, LabelsConfig
from streamimb.decoding import MAX_ID_CHARS
from streamimb.errors import DecodeError
from streamimb.events import Event, Verdict
from streamimb.io.interfaces import RawRecord
from streamimb.labels import OUTCOMES, LabelJoiner
from streamimb.service.batch import BatchOutcome, bounded, dead_letter
from streamimb.service.checkpoints import Checkpoints
from streamimb.service.partitions import PartitionOwnership, PartitionState


class LabelDecoder:
    """Label records: a JSON object with the event id (``id`` or ``event_id``) and the label."""

    def __init__(self, schema: EventSchema) -> None:
        self.label_field = schema.label or "label"
        self.label_map = schema.label_map
        self.classes = set(schema.classes) if schema.classes else None

    def decode(self, raw: bytes | None) -> tuple[str, str, float | None]:
        """``(event_id, label, time)``; a DecodeError with a bounded reason for anything else.

        >>> LabelDecoder(EventSchema()).decode(b'{"id": 7, "label": 1.0}')
        ('7', '1', None)
        >>> LabelDecoder(EventSchema()).decode(b'{"id": 7, "label": 1, "time": 1e999}')
        Traceback (most recent call last):
        ...
        streamimb.errors.DecodeError: bad_time: label time is not a finite number
        """
        if not raw:
            raise DecodeError("malformed_json", "empty label record")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise DecodeError("malformed_json", str(exc)[:200]) from None
        if not isinstance(doc, dict):
            raise DecodeError("not_an_object", type(doc).__name__)
        event_id = doc.get("event_id", doc.get("id"))
        label = doc.get(self.label_field, doc.get("label"))
        if event_id is None or isinstance(event_id, dict | list):
            raise DecodeError("missing_label", "label record without an event id")
        if label is None or isinstance(label, dict | list) or label == "":
            raise DecodeError("missing_label", "label record without a label")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        event_id, label = _bounded_text("event id", event_id), _bounded_text("label", label)
        label = self.label_map.get(label, label)
        if self.classes is not None and label not in self.classes:
            raise DecodeError("unknown_label", f"label {label[:100]!r} not in {sorted(self.classes)}")
        t = doc.get("time")
        if t is None or isinstance(t, bool) or not isinstance(t, int | float):
            return event_id, label, None
        try:
            t = float(t)
        except OverflowError:
            t = math.inf
        if not math.isfinite(t):
            raise DecodeError("bad_time", "label time is not a finite number")
        return event_id, label, t


def _bounded_text(what: str, value: Any) -> str:
    text = str(value)  # JSON integers are under 4,300 digits (Python refuses longer ones)
    if len(text) > MAX_ID_CHARS:
        raise DecodeError("bad_type", f"{what} longer than {MAX_ID_CHARS} characters")
    return text


class LabelJoin:
    """Joins labels to the predictions waiting in the partitions' joiners; counts every join outcome.

    ``decoder`` reads label records (replaced when the schema is inferred); ``co_partitioned`` is False when
    the labels topic's partition count differs from the events topic's.
    """

    def __init__(
        self,
        config: LabelsConfig,
        schema: EventSchema,
        max_message_bytes: int,
        partitions: PartitionOwnership,
        checkpoints: Checkpoints,
    ) -> None:
        self.config = config
        self.decoder = LabelDecoder(schema)
        self.counts: Counter[str] = Counter()
        self.co_partitioned = True
        self._max_message_bytes = max_message_bytes
        self._partitions = partitions
        self._checkpoints = checkpoints

    def expect(
        self, outcome: BatchOutcome, state: PartitionState, events: list[Event], verdicts: list[Verdict]
    ) -> None:
        """Keep the predictions of unlabelled events for their labels (learning at once a label that came
        before its event)."""
        for event, verdict in zip(events, verdicts, strict=True):
            if event.label is None:
                early = self._join(outcome, state, state.joiner.add, event.id, _slim(verdict))
                if early is not None:
                    _to_learn(outcome, state, verdict, early)

    def take(self, records: list[RawRecord], outcome: BatchOutcome, skipped: set[int]) -> None:
        """Join a batch's label records, but those of ``skipped`` partitions (rewound or fenced: they come
        again) when labels are co-partitioned."""
        outcome.label_records = 0
        for r in records:
            if self.co_partitioned and r.partition in skipped:
                continue
            outcome.label_records += 1
            self._learn_label(r, outcome)

    @staticmethod
    def learn(outcome: BatchOutcome) -> None:
        """Each partition's Processor learns the batch's joined labels at once."""
        for state, labelled in outcome.to_learn.values():
            outcome.drifts += state.processor.learn_many(labelled)
        outcome.to_learn.clear()

    def _learn_label(self, record: RawRecord, outcome: BatchOutcome) -> None:
        states = self._partitions.states
        home = states.get(record.partition) if self.co_partitioned else None
        if home is not None and not home.owned:
            home = None
        if home is not None:
            home.offsets[record.topic] = record.offset + 1
            home.dirty += 1
        else:
            self._checkpoints.owe_label((record.topic, record.partition), record.offset + 1)
        self._checkpoints.since += 1
        if record.value is not None and len(record.value) > self._max_message_bytes:
            exc = DecodeError("oversized", f"{len(record.value)} bytes > max_message_bytes")
            self._dead_letter(outcome, record, exc)
            return
        try:
            event_id, label, label_time = self.decoder.decode(record.value)
        except DecodeError as exc:
            self._dead_letter(outcome, record, exc)
            return
        target = home
        if home is None or not _pending(home.joiner, event_id):
            holder = next((s for s in states.values() if s.owned and _pending(s.joiner, event_id)), None)
            if holder is not None:
                target = holder
            elif any(_joined(s.joiner, event_id) for s in states.values()):
                self._count(outcome, "duplicate")
                return
        if target is None:
            target = home or next((s for _, s in sorted(states.items()) if s.owned), None)
        if target is None:
            self._count(outcome, "unknown")  # no partition here to keep it for its event
            return
        if target is not home:
            target.dirty += 1
        since = label_time if self.config.clock == "event" else None  # an early label waits from its own time
        verdict = self._join(outcome, target, target.joiner.match, event_id, label, since=since)
        if verdict is not None:
            _to_learn(outcome, target, verdict, label)

    def _dead_letter(self, outcome: BatchOutcome, record: RawRecord, exc: DecodeError) -> None:
        outcome.dead_letters.append(bounded(dead_letter(record, exc), self._max_message_bytes))
        outcome.label_dead_letters += 1

    def _count(self, outcome: BatchOutcome, what: str, n: int = 1) -> None:
        outcome.labels[what] += n
        self.counts[what] += n

    def _join(
        self,
        outcome: BatchOutcome,
        state: PartitionState,
        step: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Run one joiner step (``add`` or ``match``) and add the outcome counts it caused to the batch's."""
        joiner = state.joiner
        before = dict(joiner.counts)
        result = step(*args, now=self._now(state), **kwargs)
        for k, v in joiner.counts.items():
            if v != before[k]:
                self._count(outcome, k, v - before[k])
        return result

    def _now(self, state: PartitionState) -> float:
        if self.config.clock == "event" and state.newest_event_time is not None:
            return state.newest_event_time
        return time.time()


class JoinerView:
    """Read-only totals over the per-partition joiners (``len``: pending predictions; ``early_labels``)."""

    def __init__(self, states: dict[int, PartitionState], counts: Counter[str]) -> None:
        self._states = states
        self._counts = counts

    def __len__(self) -> int:
        return sum(len(s.joiner) for s in list(self._states.values()))

    @property
    def early_labels(self) -> int:
        return sum(s.joiner.early_labels for s in list(self._states.values()))

    @property
    def counts(self) -> dict[str, int]:
        return {k: self._counts.get(k, 0) for k in OUTCOMES}


def _to_learn(outcome: BatchOutcome, state: PartitionState, verdict: Verdict, label: str) -> None:
    """Keep a joined label for its partition's Processor, which learns the poll batch's labels at once."""
    outcome.to_learn.setdefault(id(state), (state, []))[1].append((verdict, label))


def _pending(joiner: LabelJoiner, event_id: str) -> bool:
    return event_id in joiner._pending


def _joined(joiner: LabelJoiner, event_id: str) -> bool:
    return event_id in joiner._joined


def _slim(verdict: Verdict) -> Verdict:
    """What a pending prediction needs for learning later (drops per-detector scores and the reason)."""
    return Verdict(
        event_id=verdict.event_id,
        index=verdict.index,
        time=verdict.time,
        anomaly_score=verdict.anomaly_score,
        anomaly_alert=verdict.anomaly_alert,
        proba=verdict.proba,
        predicted=verdict.predicted,
        classifier_alert=verdict.classifier_alert,
        x=verdict.x,
        keys=verdict.keys,
    )
