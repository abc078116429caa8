"""Decode -> process -> alerts, for one batch of records; shared by `replay` and the Kafka service.

Bad records never raise: they come back as dead letters with a bounded reason and the raw bytes.

The whole batch is decoded first and then processed by ``Processor.process_many``; every event's latency is
the time from the start of ``handle`` to the end of processing: an event's verdict is ready when its batch is.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streamimb.decoding import EventDecoder
from streamimb.errors import DecodeError
from streamimb.events import Alert, DeadLetter, DriftEvent, Event, Verdict
from streamimb.processor import Processor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class InputRecord:
    """A record as a source hands it in: parsed (CSV row) or raw JSON bytes, with where it came from."""

    raw: bytes
    record: dict[str, Any] | None = None
    error: DecodeError | None = None
    source: str = ""
    partition: int = 0
    offset: int = -1
    key: bytes | None = None
    fallback_id: str | None = None  # the event's id when the record has none (default: the offset)


@dataclass
class BatchResult:
    events: list[Event] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    drifts: list[DriftEvent] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def dead_letter_counts(self) -> Counter[str]:
        return Counter(d.reason for d in self.dead_letters)

    def alert_counts(self) -> Counter[tuple[str, str]]:
        return Counter((a.rule, a.predicted or "") for a in self.alerts)

    def drift_counts(self) -> Counter[str]:
        return Counter(d.signal.split(":", 1)[0] for d in self.drifts)


class Pipeline:
    """Holds a decoder and a Processor; ``handle`` runs one batch through them in order."""

    def __init__(self, processor: Processor, decoder: EventDecoder, model_version: str = "") -> None:
        self.processor = processor
        self.decoder = decoder
        self.model_version = model_version

    def _decode(self, rec: InputRecord, result: BatchResult) -> Event | None:
        try:
            if rec.error is not None:
                raise rec.error
            row = rec.offset if rec.fallback_id is None else rec.fallback_id
            if rec.record is not None:
                event = self.decoder.decode(rec.record, row=row)
            else:
                event = self.decoder.decode_json(rec.raw, row=row)
        except DecodeError as exc:
            result.dead_letters.append(
                DeadLetter(exc.reason, exc.detail, rec.raw, rec.source, rec.partition, rec.offset, rec.offset)
            )
            return None
        event.source, event.partition, event.offset = rec.source, rec.partition, rec.offset
        return event

    def handle_or_dead_letter(self, records: list[InputRecord]) -> BatchResult:
        """``handle``, and when processing raises all the same, the batch's records as dead letters.

        The model may have learned part of such a batch: the service rewinds to its checkpoint when it has
        one (``ServiceRunner``); without one (and in replay) the batch is dead-lettered whole, and the
        stream goes on.
        """
        try:
            return self.handle(records)
        except Exception:
            log.exception("processing a batch of %d records failed: dead-lettered", len(records))
            return failed_batch(records)

    def handle(self, records: Iterable[InputRecord]) -> BatchResult:
        """Decode every record, then ``process_many`` on the events, then the alerts."""
        result = BatchResult()
        started = time.perf_counter()
        decode = self._decode
        events = [event for rec in records if (event := decode(rec, result)) is not None]
        if not events:
            return result
        verdicts, drifts = self.processor.process_many(events)
        result.events = events
        result.verdicts = verdicts
        result.drifts = drifts
        make_alert = self.make_alert
        result.alerts = [make_alert(e, v) for e, v in zip(events, verdicts, strict=True) if v.alert]
        result.latencies = [time.perf_counter() - started] * len(events)
        return result

    def make_alert(self, event: Event, verdict: Verdict) -> Alert:
        rule = "classifier" if verdict.classifier_alert else "anomaly"
        return Alert(
            alert_id=f"{event.source}-{event.partition}-{event.offset}-{rule}",
            event_id=event.id,
            time=event.time,
            rule=rule,
            reason=verdict.reason,
            anomaly_score=verdict.anomaly_score,
            proba=verdict.proba,
            predicted=verdict.predicted if verdict.classifier_alert else self.processor.positive,
            model_version=self.model_version,
            source=event.source,
            partition=event.partition,
            offset=event.offset,
        )


def processing_error(rec: InputRecord, exc: BaseException) -> DeadLetter:
    """The dead letter of a record whose processing raised ``exc``."""
    detail = f"{type(exc).__name__}: {str(exc)[:300]}"
    return DeadLetter("processing_error", detail, rec.raw, rec.source, rec.partition, rec.offset, rec.offset)


def failed_batch(records: Iterable[InputRecord]) -> BatchResult:
    """A batch that raised during processing: every record a ``processing_error`` dead letter."""
    exc = RuntimeError("the batch failed; the model may have learned part of it")
    return BatchResult(dead_letters=[processing_error(rec, exc) for rec in records])
