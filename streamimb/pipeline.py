"""Decode -> process -> alerts, for one batch of records; shared by `replay` and the Kafka service.

Bad records never raise: they come back as dead letters with a bounded reason and the raw bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streamimb.decoding import EventDecoder
from streamimb.errors import DecodeError
from streamimb.events import Alert, DeadLetter, DriftEvent, Event, Verdict
from streamimb.processor import Processor


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

    def handle(self, records: Iterable[InputRecord]) -> BatchResult:
        result = BatchResult()
        clock = time.perf_counter
        for rec in records:
            started = clock()
            try:
                if rec.error is not None:
                    raise rec.error
                if rec.record is not None:
                    event = self.decoder.decode(rec.record, row=rec.offset)
                else:
                    event = self.decoder.decode_json(rec.raw, row=rec.offset)
            except DecodeError as exc:
                result.dead_letters.append(
                    DeadLetter(
                        exc.reason, exc.detail, rec.raw, rec.source, rec.partition, rec.offset, rec.offset
                    )
                )
                continue
            event.source, event.partition, event.offset = rec.source, rec.partition, rec.offset
            verdict, drifts = self.processor.process_one(event)
            result.events.append(event)
            result.verdicts.append(verdict)
            result.drifts.extend(drifts)
            if verdict.alert:
                result.alerts.append(self.make_alert(event, verdict))
            result.latencies.append(clock() - started)
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
