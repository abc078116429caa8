"""The Kafka service loop: poll -> decode -> process -> sinks -> commit.

One Processor per events partition (state follows the partition when the group rebalances). Labels that
arrive later on the labels topic are joined to their predictions by a LabelJoiner and learned by the
partition that scored the event. Offsets are committed only after the batch's alerts and dead letters are
acknowledged by their sinks, so an alert is never lost (it may be delivered twice after a crash; its
``alert_id`` is stable so duplicates can be dropped downstream).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streamimb import __version__
from streamimb.config import EventSchema, ServiceConfig
from streamimb.decoding import EventDecoder
from streamimb.errors import DecodeError, SinkError
from streamimb.events import Alert, DeadLetter, DriftEvent, Verdict
from streamimb.io.files import JsonlSink
from streamimb.io.kafka import KafkaSink, KafkaSource, Partition, RawRecord
from streamimb.labels import LabelJoiner
from streamimb.pipeline import InputRecord, Pipeline
from streamimb.processor import Processor

log = logging.getLogger(__name__)

SERVICE_SCHEMA_DEFAULTS = {"id": "id", "time": "time", "label": "label"}


def service_schema(schema: EventSchema) -> EventSchema:
    """Default field names for JSON events when the config names none: ``id``, ``time``, ``label``."""
    update = {k: v for k, v in SERVICE_SCHEMA_DEFAULTS.items() if getattr(schema, k) is None}
    return schema.model_copy(update=update) if update else schema


@dataclass
class BatchOutcome:
    """What one poll batch did (for telemetry, status lines and the demo's display)."""

    consumed: int = 0
    processed: int = 0
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    drifts: list[DriftEvent] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    labels: Counter[str] = field(default_factory=Counter)
    label_records: int = 0


class LabelDecoder:
    """Label records: a JSON object with the event id (``id`` or ``event_id``) and the label."""

    def __init__(self, schema: EventSchema) -> None:
        self.label_field = schema.label or "label"
        self.label_map = schema.label_map
        self.classes = set(schema.classes) if schema.classes else None

    def decode(self, raw: bytes | None) -> tuple[str, str, float | None]:
        if not raw:
            raise DecodeError("malformed_json", "empty label record")
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
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
        label = self.label_map.get(str(label), str(label))
        if self.classes is not None and label not in self.classes:
            raise DecodeError("unknown_label", f"label {label!r} not in {sorted(self.classes)}")
        t = doc.get("time")
        return (
            str(event_id),
            label,
            float(t) if isinstance(t, int | float) and not isinstance(t, bool) else None,
        )


class AlertSinks:
    """Fans alerts out to the configured sinks; ``flush`` raises SinkError if any delivery failed."""

    def __init__(
        self, kafka: KafkaSink | None = None, file: JsonlSink | None = None, others: Iterable[Any] = ()
    ):
        self.kafka = kafka
        self.file = file
        self.others = list(others)

    def send(self, alert: Alert) -> None:
        document = alert.to_json()
        if self.kafka is not None:
            self.kafka.send(document.encode(), key=alert.event_id.encode())
        if self.file is not None:
            self.file.send(document)
        for sink in self.others:
            sink.send(alert)

    def flush(self) -> None:
        for sink in (self.kafka, self.file, *self.others):
            if sink is not None:
                sink.flush()

    def close(self) -> None:
        for sink in (self.kafka, self.file, *self.others):
            if sink is not None:
                sink.close()


class ServiceRunner:
    """Runs the service until stopped, ``max_events`` event records, or ``idle_timeout`` seconds idle."""

    def __init__(
        self,
        config: ServiceConfig,
        telemetry: Any = None,
        on_batch: Callable[[ServiceRunner, BatchOutcome], None] | None = None,
        extra_sinks: Iterable[Any] = (),
    ) -> None:
        self.config = config
        self.kafka = config.kafka
        self.schema = service_schema(config.event_schema)
        self.telemetry = telemetry
        self.on_batch = on_batch
        self.extra_sinks = list(extra_sinks)
        self.model_version = f"streamimb-{__version__}"
        self.pipelines: dict[int, Pipeline] = {}
        self.joiner: LabelJoiner[tuple[int, Verdict]] = LabelJoiner(
            config.labels.ttl_seconds, config.labels.max_pending
        )
        self.label_decoder = LabelDecoder(self.schema)
        self._stop = threading.Event()
        self._newest_event_time: float | None = None
        self.consumed = 0
        self.labels_consumed = 0
        self.processed = 0
        self.dead_lettered = 0
        self.alerts_sent = 0
        self.source: KafkaSource | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, flush, commit and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def pipeline(self, partition: int) -> Pipeline:
        pipeline = self.pipelines.get(partition)
        if pipeline is None:
            processor = Processor(
                self.config.model,
                positive=self.schema.positive_class,
                classes=self.schema.classes,
                max_categories=self.schema.max_categories,
            )
            decoder = EventDecoder(self.schema, require_label=False)
            pipeline = self.pipelines[partition] = Pipeline(processor, decoder, self.model_version)
        return pipeline

    def run(self) -> dict[str, Any]:
        """The main loop; returns a summary of what it did."""
        cfg = self.config
        topics = [self.kafka.events_topic] + ([self.kafka.labels_topic] if self.kafka.labels_topic else [])
        file_sink = JsonlSink(cfg.alerts_file.path) if cfg.alerts_file.path else None
        alerts = AlertSinks(KafkaSink(self.kafka, self.kafka.alerts_topic), file_sink, self.extra_sinks)
        dead = KafkaSink(self.kafka, self.kafka.dead_letter_topic)
        self.source = source = KafkaSource(self.kafka, topics)
        if self.telemetry is not None:
            self.telemetry.add_state_source(self.partition_stats)
        idle_since = time.monotonic()
        last_status = time.monotonic()
        started = time.monotonic()
        max_events, idle_timeout = cfg.service.max_events, cfg.service.idle_timeout
        log.info(
            "consuming %s as group %r from %s", topics, self.kafka.group_id, self.kafka.bootstrap_servers
        )
        try:
            while not self._stop.is_set():
                records = source.poll()
                self._set_ready(source.connected)
                if not records:
                    if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                        log.info("idle for %.1fs: stopping", idle_timeout)
                        break
                    continue
                idle_since = time.monotonic()
                outcome = self.process_batch(records)
                self._deliver(outcome, alerts, dead)
                source.commit(_next_offsets(records))
                self._account(outcome, source, records)
                if self.on_batch is not None:
                    self.on_batch(self, outcome)
                if time.monotonic() - last_status >= cfg.service.status_interval:
                    last_status = time.monotonic()
                    log.info(self.status_line(time.monotonic() - started))
                if max_events is not None and self.consumed >= max_events:
                    log.info("consumed %d event records: stopping", self.consumed)
                    break
        finally:
            self._set_ready(False)
            source.close()
            alerts.close()
            dead.close()
        return self.summary()

    # -- one batch ---------------------------------------------------------------------------------
    def process_batch(self, records: list[RawRecord]) -> BatchOutcome:
        """Decode and process a poll batch: events first (per partition, in offset order), then labels."""
        outcome = BatchOutcome()
        by_partition: dict[int, list[RawRecord]] = defaultdict(list)
        label_records: list[RawRecord] = []
        for r in records:
            (by_partition[r.partition] if r.topic == self.kafka.events_topic else label_records).append(r)
        limit = self.kafka.max_message_bytes
        for partition, recs in by_partition.items():
            pipeline = self.pipeline(partition)
            inputs = [_input_record(r, limit) for r in recs]
            result = pipeline.handle(inputs)
            outcome.consumed += len(recs)
            outcome.processed += len(result.events)
            outcome.alerts += result.alerts
            outcome.dead_letters += result.dead_letters
            outcome.drifts += result.drifts
            outcome.latencies += result.latencies
            for event, verdict in zip(result.events, result.verdicts, strict=True):
                if event.time is not None:
                    self._newest_event_time = max(self._newest_event_time or event.time, event.time)
                if event.label is None and self.kafka.labels_topic:
                    early = self._joined_label(outcome, self.joiner.add, event.id, (partition, verdict))
                    if early is not None:
                        outcome.drifts += pipeline.processor.learn_one(verdict, early)
        outcome.label_records = len(label_records)
        for r in label_records:
            self._learn_label(r, outcome)
        return outcome

    def _learn_label(self, record: RawRecord, outcome: BatchOutcome) -> None:
        try:
            event_id, label, _ = self.label_decoder.decode(record.value)
        except DecodeError as exc:
            outcome.dead_letters.append(_dead_letter(record, exc))
            return
        match = self._joined_label(outcome, self.joiner.match, event_id, label)
        if match is None:
            return
        partition, verdict = match
        outcome.drifts += self.pipeline(partition).processor.learn_one(verdict, label)

    def _joined_label(self, outcome: BatchOutcome, step: Callable[..., Any], *args: Any) -> Any:
        """Run one joiner step (``add`` or ``match``) and add the outcome counts it caused to the batch's."""
        before = dict(self.joiner.counts)
        result = step(*args, now=self._now())
        for k, v in self.joiner.counts.items():
            if v != before[k]:
                outcome.labels[k] += v - before[k]
        return result

    def _now(self) -> float:
        if self.config.labels.clock == "event" and self._newest_event_time is not None:
            return self._newest_event_time
        return time.time()

    def _deliver(self, outcome: BatchOutcome, alerts: AlertSinks, dead: KafkaSink) -> None:
        """Send and flush until every sink acknowledged (retrying with backoff); offsets wait for this."""
        delay = 0.2
        while True:
            try:
                for alert in outcome.alerts:
                    alerts.send(alert)
                for letter in outcome.dead_letters:
                    dead.send(letter.to_json().encode())
                alerts.flush()
                dead.flush()
                return
            except SinkError as exc:
                self._set_ready(False)
                if self._stop.is_set() and delay > 5:
                    raise
                log.warning("delivery failed (%s); retrying the batch's outputs in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _account(self, outcome: BatchOutcome, source: KafkaSource, records: list[RawRecord]) -> None:
        self.consumed += outcome.consumed
        self.labels_consumed += outcome.label_records
        self.processed += outcome.processed
        self.dead_lettered += len(outcome.dead_letters)
        self.alerts_sent += len(outcome.alerts)
        if self.telemetry is None:
            return
        self.telemetry.record_batch(
            consumed=outcome.consumed + outcome.label_records,
            processed=outcome.processed,
            latencies_seconds=outcome.latencies,
            dead_letters=Counter(d.reason for d in outcome.dead_letters),
            alerts=Counter((a.rule, a.predicted or "") for a in outcome.alerts),
            drifts=Counter(d.signal.split(":", 1)[0] for d in outcome.drifts),
            labels=outcome.labels,
        )
        newest: dict[Partition, int] = {}
        for r in records:
            newest[(r.topic, r.partition)] = r.timestamp_ms
        now = time.time()
        for (topic, partition), lag in source.lag().items():
            if topic != self.kafka.events_topic:
                continue
            ts = newest.get((topic, partition))
            seconds = max(0.0, now - ts / 1000.0) if lag and ts and ts > 0 else 0.0
            self.telemetry.set_lag(partition, lag, seconds)

    def _set_ready(self, ready: bool) -> None:
        if self.telemetry is not None:
            self.telemetry.set_ready(ready)

    # -- state for telemetry and status --------------------------------------------------------------
    def partition_stats(self) -> dict[int, Any]:
        from streamimb.service.telemetry import ProcessorStats

        out = {}
        for partition, pipeline in list(self.pipelines.items()):
            s = pipeline.processor.stats()
            out[partition] = ProcessorStats(
                learned_events=s["learned_events"],
                prevalence_estimate={str(k): v for k, v in s["prevalence_estimate"].items()},
                observed_prevalence=s["observed_prevalence"],
                thresholds=s["thresholds"],
                rolling=s["rolling"],
            )
        return out

    def status_line(self, elapsed: float) -> str:
        rate = self.consumed / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.consumed} events ({rate:.0f}/s)", f"{self.alerts_sent} alerts"]
        parts.append(f"{self.dead_lettered} dead letters")
        totals = self.totals()
        if totals["positive"] is not None:
            parts.append(f"est. {totals['positive']} rate {totals['prevalence']:.3%}")
            parts.append(f"precision {totals['precision']:.2f} recall {totals['recall']:.2f}")
        parts.append(f"{totals['drifts']} drifts")
        return ", ".join(parts)

    def totals(self) -> dict[str, Any]:
        """Precision and recall of alerts so far, summed over partitions; mean estimated prevalence."""
        tp = fp = fn = 0
        drifts = 0
        positive = None
        prevalences = []
        for pipeline in self.pipelines.values():
            p = pipeline.processor
            drifts += len(p.drifts)
            if p.positive is None:
                continue
            positive = p.positive
            prevalences.append(p.priors.priors().get(p.positive, 0.0))
            m = p.evaluator.rolling(p.positive) if p.evaluator.n_labelled else {}
            n = len(p.evaluator._recent)
            if m:
                tp_i = m["recall"] * m["prevalence"] * n
                tp += tp_i
                fn += m["prevalence"] * n - tp_i
                fp += tp_i / m["precision"] - tp_i if m["precision"] else 0
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        prevalence = sum(prevalences) / len(prevalences) if prevalences else 0.0
        return {
            "positive": positive,
            "prevalence": prevalence,
            "precision": precision,
            "recall": recall,
            "drifts": drifts,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "processed": self.processed,
            "labels_consumed": self.labels_consumed,
            "dead_letters": self.dead_lettered,
            "alerts": self.alerts_sent,
            "partitions": sorted(self.pipelines),
            "labels": dict(self.joiner.counts),
            "learned": {p: pl.processor.n_learned for p, pl in self.pipelines.items()},
        }


def _input_record(r: RawRecord, limit: int) -> InputRecord:
    if r.value is None:
        return InputRecord(
            b"", None, DecodeError("malformed_json", "empty record"), r.topic, r.partition, r.offset
        )
    if len(r.value) > limit:
        error = DecodeError("oversized", f"{len(r.value)} bytes > max_message_bytes={limit}")
        return InputRecord(r.value[:1024], None, error, r.topic, r.partition, r.offset)
    return InputRecord(r.value, None, None, r.topic, r.partition, r.offset, r.key)


def _dead_letter(record: RawRecord, exc: DecodeError) -> DeadLetter:
    raw = (record.value or b"")[:1024] if exc.reason == "oversized" else (record.value or b"")
    return DeadLetter(exc.reason, exc.detail, raw, record.topic, record.partition, record.offset)


def _next_offsets(records: list[RawRecord]) -> dict[Partition, int]:
    out: dict[Partition, int] = {}
    for r in records:
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return out
