"""The Kafka service loop: poll -> decode -> process -> sinks -> checkpoint -> commit.

Each events partition has its own state (a :class:`PartitionState`: a Processor, a LabelJoiner of the
predictions that wait for their label, and the offsets both cover); the state moves with its partition when
the consumer group rebalances. Labels come on a labels topic that is *co-partitioned* with the events topic
(same partition count, produced with the event's key), so partition ``P`` of the labels topic belongs to the
state of events partition ``P`` and the label offset is checkpointed with the model that learned the label.

Every batch's alerts and dead letters are sent at once (the alerts file and the other sinks are flushed
with the batch); the Kafka topics' acknowledgements are awaited only before offsets are committed or a
checkpoint is written, so that no commit ever covers an output not yet delivered, while the round trips
stay off the per-batch path.

The consistency point, with ``checkpoint.directory`` set (see :mod:`streamimb.service.state`): every
batch's outputs are acknowledged first; every ``checkpoint.every_events`` records or
``checkpoint.every_seconds``, on partition revoke and at shutdown, each changed partition's state is written
as one signed file together with the next offsets it covers, and only then are those offsets committed. On
assignment the checkpoint is loaded and the consumer seeks to its offsets (they win over the group's committed
ones), so after a crash at any moment every event is learned exactly once. Alerts are at-least-once: events
after the last checkpoint are scored again and raise the same alerts with the same ``alert_id``.

Without a checkpoint directory the state lives in memory only, offsets are committed every
``kafka.commit_interval_ms`` (0: after every batch), when idle, on partition revoke and at shutdown, and a
restart begins with fresh models (and scores again what came after the last commit).

Bad input never stops the loop: every record that cannot be decoded or processed goes to the dead-letter
topic with its reason, so ``consumed == processed + dead-lettered`` for events.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamimb import __version__
from streamimb.classifiers.portfolio import Portfolio
from streamimb.config import EventSchema, ServiceConfig
from streamimb.dead_letter_watch import DeadLetterWatch
from streamimb.decoding import MAX_ID_CHARS, EventDecoder, GuardedDecoder, describe_schema, service_schema
from streamimb.errors import BrokerAuthError, CheckpointError, DecodeError, SinkError, SourceError
from streamimb.events import Alert, DeadLetter, DriftEvent, Verdict
from streamimb.io.files import JsonlSink
from streamimb.io.kafka import KafkaSink, KafkaSource, Partition, RawRecord, open_source, topic_partitions
from streamimb.labels import OUTCOMES, LabelJoiner
from streamimb.pipeline import BatchResult, InputRecord, Pipeline, failed_batch, processing_error
from streamimb.processor import Processor
from streamimb.runtime import prepare_gc_for_streaming
from streamimb.service.inference import SchemaInference
from streamimb.service.state import (
    CheckpointFenced,
    CheckpointRefused,
    FileCheckpointStore,
    SnapshotCodec,
    config_hash,
    load_key,
)

if TYPE_CHECKING:
    from streamimb.io.confluent import ConfluentSource

log = logging.getLogger(__name__)

MAX_UNCONFIRMED_OUTPUTS = 10_000  # alerts and dead letters sent but not acknowledged: confirmed at once

#: Checkpoint writes may fail this long before the service reports itself not ready (/readyz 503).
CHECKPOINT_GRACE_S = 60.0
#: Dead letters keep at most this share of ``max_message_bytes`` of the raw record (base64 grows it by 4/3).
_DEAD_LETTER_RAW_SHARE = 0.5


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
    event_dead_letters: int = 0
    label_dead_letters: int = 0
    # joined labels waiting for their partition's Processor, learned together at the end of the batch
    to_learn: dict[int, tuple[Any, list[tuple[Verdict, str]]]] = field(default_factory=dict)


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
        self._to_kafka(alert, document)
        if self.file is not None:
            self.file.send(document)
        for sink in self.others:
            sink.send(alert)

    def send_to_kafka(self, alert: Alert) -> None:
        """Send the alert to the Kafka topic alone (again, after a failed delivery)."""
        self._to_kafka(alert, alert.to_json())

    def _to_kafka(self, alert: Alert, document: str) -> None:
        if self.kafka is not None:
            self.kafka.send(document.encode(), key=alert.event_id.encode())

    def flush(self) -> None:
        self.flush_kafka()
        self.flush_others()

    def flush_kafka(self) -> None:
        """Wait for the Kafka topic's acknowledgements of every alert sent so far."""
        if self.kafka is not None:
            self.kafka.flush()

    def flush_others(self) -> None:
        """Flush the alerts file and the other sinks (Alertmanager, ...)."""
        for sink in (self.file, *self.others):
            if sink is not None:
                sink.flush()

    def close(self) -> None:
        for sink in (self.kafka, self.file, *self.others):
            if sink is not None:
                sink.close()


@dataclass
class PartitionState:
    """Everything one events partition owns: its pipeline (Processor), joiner, and the offsets they cover.

    ``offsets`` maps a topic to the next offset the state has *not* seen (events topic, and the labels topic
    when co-partitioned). ``checkpoint_id`` is the checkpoint the state descends from (fencing lineage),
    ``generation`` the consumer-group generation that acquired the partition.
    """

    partition: int
    pipeline: Pipeline
    joiner: LabelJoiner[Verdict]
    newest_event_time: float | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    checkpoint_id: str | None = None
    generation: int = -1
    schema: EventSchema | None = None  # None: the service's, still being inferred
    learned_at_start: int = 0
    learned_checkpointed: int = 0
    dirty: int = 0
    owned: bool = True
    careful_until: int | None = None

    @property
    def processor(self) -> Processor:
        return self.pipeline.processor

    def snapshot(self) -> dict[str, Any]:
        """The picklable part of the state (the decoder is rebuilt from the config)."""
        return {
            "processor": self.pipeline.processor,
            "joiner": self.joiner,
            "newest_event_time": self.newest_event_time,
            "schema": self.schema,
        }


class JoinerView:
    """Read-only totals over the per-partition joiners (``len``: pending predictions; ``early_labels``)."""

    def __init__(self, runner: ServiceRunner) -> None:
        self._runner = runner

    def __len__(self) -> int:
        return sum(len(s.joiner) for s in list(self._runner.states.values()))

    @property
    def early_labels(self) -> int:
        return sum(s.joiner.early_labels for s in list(self._runner.states.values()))

    @property
    def counts(self) -> dict[str, int]:
        return {k: self._runner.label_counts.get(k, 0) for k in OUTCOMES}


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
        declared = config.event_schema.numeric is not None or config.event_schema.categorical is not None
        self._inference = None if declared else SchemaInference(config.event_schema, self.kafka.events_topic)
        self.telemetry = telemetry
        self.on_batch = on_batch
        self.extra_sinks = list(extra_sinks)
        self.model_version = f"streamimb-{__version__}"
        self.states: dict[int, PartitionState] = {}
        self.label_decoder = LabelDecoder(self.schema)
        self._dead_letter_watch = DeadLetterWatch()
        self.label_counts: Counter[str] = Counter()
        self.store = _build_store(config)
        self._stop = threading.Event()
        self._state_lock = threading.RLock()
        self._learned_dropped: Counter[int] = Counter()
        self._loose_label_offsets: dict[Partition, int] = {}
        self._pending_commit: dict[Partition, int] = {}
        self._last_commit = time.monotonic()
        self._alert_sinks: AlertSinks | None = None
        self._dead_sink: KafkaSink | None = None
        self._unconfirmed_alerts: list[Alert] = []  # sent to Kafka, not acknowledged yet
        self._unconfirmed_dead: list[DeadLetter] = []
        self._resend: set[str] = set()  # topics whose deliveries failed: send their unconfirmed outputs again
        self._fenced: set[int] = set()
        self._co_partitioned = True
        self._can_checkpoint = True
        self._rebalancing = False
        self._last_checkpoint = time.monotonic()
        self._since_checkpoint = 0
        self.consumed = 0
        self.labels_consumed = 0
        self.processed = 0
        self.dead_lettered = 0
        self.event_dead_letters = 0
        self.label_dead_letters = 0
        self.alerts_sent = 0
        self.checkpoints_written = 0
        self.checkpoint_failures = 0
        self._checkpoint_failing_since: float | None = None
        self.checkpoint_seconds = 0.0
        self.checkpoint_bytes: dict[int, int] = {}
        self.restored: dict[int, int] = {}
        self.source: KafkaSource | ConfluentSource | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, flush, checkpoint, commit and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def pipelines(self) -> dict[int, Pipeline]:
        """The pipeline of every partition state held now."""
        return {p: s.pipeline for p, s in list(self.states.items())}

    @property
    def joiner(self) -> JoinerView:
        return JoinerView(self)

    def pipeline(self, partition: int) -> Pipeline:
        return self._state(partition).pipeline

    def _new_state(self, partition: int, snapshot: dict[str, Any] | None = None) -> PartitionState:
        schema = None if self._inference is not None else self.schema
        if snapshot is not None and snapshot.get("schema") is not None:
            schema = snapshot["schema"]  # the columns its model was trained on
            if self._inference is not None:
                self._inference.settle(schema)
        decoder = GuardedDecoder(EventDecoder(schema or self.schema, require_label=False))
        if snapshot is None:
            # The service reports rolling metrics only: a per-event history would grow state without bound.
            model = self.config.model
            model = model.model_copy(
                update={"evaluation": model.evaluation.model_copy(update={"keep_history": False})}
            )
            processor = Processor(
                model,
                positive=self.schema.positive_class,
                classes=self.schema.classes,
                max_categories=self.schema.max_categories,
            )
            joiner: LabelJoiner[Verdict] = LabelJoiner(
                self.config.labels.ttl_seconds, self.config.labels.max_pending
            )
            newest = None
        else:
            processor, joiner, newest = (
                snapshot["processor"],
                snapshot["joiner"],
                snapshot.get("newest_event_time"),
            )
        pipeline = Pipeline(processor, decoder, self.model_version)
        n = processor.n_learned
        return PartitionState(
            partition, pipeline, joiner, newest, learned_at_start=n, learned_checkpointed=n, schema=schema
        )

    def _adopt(self, schema: EventSchema) -> None:
        """Use an inferred (or restored) schema from now on, for the states that waited for it too."""
        self.schema = service_schema(schema)
        self.label_decoder = LabelDecoder(self.schema)
        inference, self._inference = self._inference, None
        if inference is not None and inference.sampled:
            log.info("schema inferred from %d records: %s", inference.sampled, describe_schema(self.schema))
        for state in list(self.states.values()):
            if state.schema is None:
                state.schema = self.schema
                state.pipeline.decoder = GuardedDecoder(EventDecoder(self.schema, require_label=False))

    def _state(self, partition: int) -> PartitionState:
        state = self.states.get(partition)
        if state is None:
            state = self.states[partition] = self._new_state(partition)
        return state

    def run(self) -> dict[str, Any]:
        """The main loop; returns a summary of what it did."""
        cfg = self.config
        topics = [self.kafka.events_topic] + ([self.kafka.labels_topic] if self.kafka.labels_topic else [])
        self._check_broker()
        file_sink = JsonlSink(cfg.alerts_file.path) if cfg.alerts_file.path else None
        alerts = AlertSinks(KafkaSink(self.kafka, self.kafka.alerts_topic), file_sink, self.extra_sinks)
        dead = KafkaSink(self.kafka, self.kafka.dead_letter_topic)
        self._alert_sinks, self._dead_sink = alerts, dead
        self.source = source = open_source(
            self.kafka, topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        if self.telemetry is not None:
            self.telemetry.add_state_source(self.partition_stats)
        idle_since = time.monotonic()
        last_status = time.monotonic()
        started = time.monotonic()
        max_events, idle_timeout = cfg.service.max_events, cfg.service.idle_timeout
        log.info(
            "consuming %s as group %r from %s; checkpoints %s",
            topics,
            self.kafka.group_id,
            self.kafka.bootstrap_servers,
            self.store.directory if self.store is not None else "off (state is lost on restart)",
        )
        completed = False
        prepare_gc_for_streaming()
        try:
            held: list[RawRecord] = []  # records held back for schema inference, released poll batch by batch
            while not self._stop.is_set():
                records = source.poll() if not held else []
                connected = source.connected
                self._set_ready(connected and not self._checkpoints_failing())
                if self._inference is not None:
                    held = self._inference.offer(records)
                    if self._inference.schema is not None:
                        self._adopt(self._inference.schema)
                    elif self._inference.holding:
                        idle_since = time.monotonic()
                        continue
                if held:
                    records, held = held[: self.kafka.max_poll_records], held[self.kafka.max_poll_records :]
                if not records:
                    self._maybe_checkpoint()
                    if (self._pending_commit or self._unconfirmed) and connected:
                        self._confirm_and_commit()
                    if not connected or self._rebalancing or not source.assignment():
                        idle_since = time.monotonic()  # a broker outage or a rebalance is not idleness
                    elif idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                        log.info("idle for %.1fs: stopping", idle_timeout)
                        break
                    continue
                idle_since = time.monotonic()
                self._can_checkpoint = False  # until this batch's outputs are delivered
                outcome = self.process_batch(records)
                self._deliver(outcome)
                self._can_checkpoint = True
                if self.store is None:
                    self._owe(_next_offsets(records))
                    if self._commit_due():
                        self._confirm_and_commit()
                else:
                    self._maybe_checkpoint()
                self._account(outcome, source, records)
                if self.on_batch is not None:
                    self.on_batch(self, outcome)
                if time.monotonic() - last_status >= cfg.service.status_interval:
                    last_status = time.monotonic()
                    log.info(self.status_line(time.monotonic() - started))
                if max_events is not None and self.consumed >= max_events:
                    log.info("consumed %d event records: stopping", self.consumed)
                    break
            self.checkpoint("shutdown")
            self._confirm_and_commit()
            completed = True
        finally:
            self._can_checkpoint = completed  # after a failure, revoke must not checkpoint undelivered work
            self._set_ready(False)
            try:
                source.close()
            finally:
                alerts.close()
                dead.close()
        return self.summary()

    def _check_broker(self) -> None:
        """Read the partition counts at start. Refused credentials or permissions stop the service with
        their reason; a broker that is unreachable or does not answer is waited for."""
        labels = self.kafka.labels_topic
        try:
            counts = topic_partitions(self.kafka)
        except BrokerAuthError:
            raise  # retrying will not help: `streamimb run` says why and exits 2
        except SourceError as exc:
            log.warning(
                "cannot read partition counts (%s); consuming as soon as the broker answers (/readyz says "
                "503 until then)%s",
                exc,
                "; labels are taken to be co-partitioned" if labels else "",
            )
            return
        if not labels:
            return
        n_events, n_labels = counts.get(self.kafka.events_topic), counts.get(labels)
        if n_events is not None and n_labels is not None and n_events != n_labels:
            self._co_partitioned = False
            log.warning(
                "labels topic %r has %d partitions, events topic %r has %d: labels are not co-partitioned, "
                "so they are matched across the partitions this process owns and their offsets are "
                "committed at checkpoints; produce labels with the event's key to a topic with the same "
                "partition count for joins that survive rebalances",
                labels,
                n_labels,
                self.kafka.events_topic,
                n_events,
            )

    # -- rebalance callbacks (run while the loop is blocked in poll(), between batches) ---------------
    def _on_assign(self, partitions: list[Partition]) -> None:
        source = self.source
        generation = source.generation() if source is not None else -1
        events = {p for t, p in partitions if t == self.kafka.events_topic}
        labels = {p for t, p in partitions if t == self.kafka.labels_topic}
        self._rebalancing = False
        owned = set(partitions)
        self._pending_commit = {k: v for k, v in self._pending_commit.items() if k in owned}
        with self._state_lock:
            self._fenced.clear()
            for p in [p for p in self.states if p not in events]:
                self._drop(p)
            for p in sorted(events):
                state = self._acquire(p, generation)
                state.generation, state.owned = generation, True
                if source is None:
                    continue
                for topic, offset in state.offsets.items():
                    if topic == self.kafka.events_topic or (topic == self.kafka.labels_topic and p in labels):
                        source.seek(topic, p, offset)
        log.info(
            "assigned %s (generation %d): %s",
            sorted(partitions),
            generation,
            {p: self.states[p].processor.n_learned for p in sorted(events)},
        )

    def _acquire(self, partition: int, generation: int) -> PartitionState:
        """A newly assigned partition's state: the one in memory if still current, else its checkpoint's."""
        held = self.states.get(partition)
        if self.store is None:
            return held if held is not None else self._state(partition)
        topic = self.kafka.events_topic
        try:
            header = self.store.read_header(topic, partition)
            current = header.checkpoint_id if header is not None else None
        except CheckpointRefused:
            current = "refused"  # load() below raises the full reason
        if held is not None and current == held.checkpoint_id:
            return held  # nobody wrote since this process's last checkpoint of it: keep the live state
        if held is not None:
            self._drop(partition)
        try:
            ckpt = self.store.load(topic, partition)
        except CheckpointRefused as exc:
            path = self.store.path(topic, partition)
            if self.config.checkpoint.on_invalid == "fail":
                raise CheckpointError(
                    f"checkpoint {path} refused ({exc}); it was not loaded. Move it away, or set "
                    "checkpoint.on_invalid=fresh to start that partition with a fresh model"
                ) from None
            aside = path.with_name(f"{path.name}.refused-{int(time.time())}")
            try:
                path.replace(aside)
            except OSError as err:
                raise CheckpointError(
                    f"checkpoint {path} refused ({exc}) and cannot be moved aside: {err.strerror or err}"
                ) from None
            log.error("checkpoint %s refused (%s); moved to %s, starting a fresh model", path, exc, aside)
            ckpt = None
        if ckpt is None:
            state = self.states[partition] = self._new_state(partition)
            log.info("%s[%d]: no checkpoint, fresh model from the group's committed offset", topic, partition)
            return state
        state = self._new_state(partition, ckpt.state)
        state.offsets = dict(ckpt.header.offsets)
        state.checkpoint_id = ckpt.header.checkpoint_id
        self.states[partition] = state
        self.restored[partition] = ckpt.header.learned
        if self.telemetry is not None:
            self.telemetry.set_checkpoint(partition, ckpt.header.created)
        log.info(
            "%s[%d]: restored checkpoint of generation %d (%d learned events, offsets %s)",
            topic,
            partition,
            ckpt.header.generation,
            ckpt.header.learned,
            ckpt.header.offsets,
        )
        return state

    def _on_revoke(self, partitions: list[Partition]) -> None:
        self._release(partitions, commit=True)

    def _on_lost(self, partitions: list[Partition]) -> None:
        self._release(
            partitions, commit=False
        )  # no longer a member: a commit would fail; fencing guards files

    def _release(self, partitions: list[Partition], commit: bool) -> None:
        self._rebalancing = True
        if self._inference is not None:
            self._inference.forget(partitions)  # held back, never processed: the next owner reads them
        events = {p for t, p in partitions if t == self.kafka.events_topic}
        with self._state_lock:
            if self._can_checkpoint and self._confirm(once=True):
                if commit and self.store is None:  # what was processed, before the partitions move
                    self._commit({})
                self.checkpoint("revoke", partitions=events, commit=commit)
            elif self._can_checkpoint:
                log.warning("revoke: the released partitions resume from their last commit or checkpoint")
            for key in partitions:  # no longer ours: a late commit could rewind the next owner
                self._pending_commit.pop(key, None)
            for p in events:
                if p in self.states:
                    self.states[p].owned = False

    def _drop(self, partition: int, discard: bool = False) -> None:
        """Forget a partition's state; ``discard``: its work since the last checkpoint is thrown away."""
        state = self.states.pop(partition, None)
        if state is None:
            return
        kept = state.learned_checkpointed if discard else state.processor.n_learned
        self._learned_dropped[partition] += kept - state.learned_at_start
        if self.telemetry is not None:
            self.telemetry.remove_partition(partition)

    # -- checkpoints -----------------------------------------------------------------------------------
    def _maybe_checkpoint(self) -> None:
        if self.store is None or not self._can_checkpoint:
            return
        cfg = self.config.checkpoint
        due = self._since_checkpoint >= cfg.every_events
        if not due and time.monotonic() - self._last_checkpoint >= cfg.every_seconds:
            due = any(s.dirty for s in self.states.values()) or bool(self._loose_label_offsets)
            if not due:
                self._last_checkpoint = time.monotonic()
        if due:
            self.checkpoint("interval")

    def checkpoint(
        self, reason: str = "manual", partitions: Iterable[int] | None = None, commit: bool = True
    ) -> int:
        """Write the changed states (all, or ``partitions``), then commit the offsets they cover.

        Call only between batches, after the sinks were flushed. Returns the number of files written.
        """
        if self.store is None:
            return 0
        self._confirm()  # no checkpoint covers an output that is not delivered
        wanted = set(self.states) if partitions is None else set(partitions)
        offsets: dict[Partition, int] = {}
        written = 0
        started = time.perf_counter()
        with self._state_lock:
            for p in sorted(wanted):
                state = self.states.get(p)
                if state is None or not state.owned or not state.dirty:
                    continue
                try:
                    header = self.store.save(
                        self.kafka.events_topic,
                        p,
                        state.snapshot(),
                        offsets=state.offsets,
                        learned=state.processor.n_learned,
                        generation=state.generation,
                        parent_id=state.checkpoint_id,
                        extra={"events": state.processor.n_events, "pending_labels": len(state.joiner)},
                    )
                except CheckpointFenced as exc:
                    log.warning("%s; dropping this process's copy of partition %d", exc, p)
                    self._drop(p, discard=True)
                    self._fenced.add(p)
                    continue
                except (OSError, CheckpointError) as exc:
                    self._checkpoint_failed(p, exc)
                    continue  # still dirty: its offsets are not committed past the last good checkpoint
                state.checkpoint_id, state.dirty = header.checkpoint_id, 0
                state.learned_checkpointed = header.learned
                written += 1
                self.checkpoint_bytes[p] = header.payload_bytes
                for topic, offset in state.offsets.items():
                    offsets[(topic, p)] = offset
                if self.telemetry is not None:
                    self.telemetry.set_checkpoint(p, header.created)
            if not any(s.dirty for s in self.states.values() if s.owned):
                # labels matched outside their own partition: safe to commit once every model is on disk
                offsets.update(self._loose_label_offsets)
                self._loose_label_offsets = {}
            if partitions is None:
                self._since_checkpoint = 0
                self._last_checkpoint = time.monotonic()
        elapsed = time.perf_counter() - started
        if written and not any(s.dirty for s in self.states.values() if s.owned):
            self._checkpoint_failing_since = None
        self.checkpoints_written += written
        self.checkpoint_seconds += elapsed
        if written:
            log.debug("checkpoint (%s): %d partition(s) in %.3fs", reason, written, elapsed)
        if commit and offsets:
            self._commit(offsets)
        return written

    def _checkpoint_failed(self, partition: int, exc: BaseException) -> None:
        """A checkpoint write failed (disk full, permissions): keep consuming, commit nothing past the last
        good checkpoint, count it, and report not ready once it has failed for ``CHECKPOINT_GRACE_S``."""
        self.checkpoint_failures += 1
        if self._checkpoint_failing_since is None:
            self._checkpoint_failing_since = time.monotonic()
        log.error(
            "checkpoint of partition %d failed (%s); offsets stay at the last good checkpoint", partition, exc
        )

    def _checkpoints_failing(self) -> bool:
        since = self._checkpoint_failing_since
        return since is not None and time.monotonic() - since >= CHECKPOINT_GRACE_S

    def _owe(self, offsets: dict[Partition, int]) -> None:
        """Offsets processed, to be committed with the next commit."""
        pending = self._pending_commit
        for key, offset in offsets.items():
            pending[key] = max(pending.get(key, 0), offset)

    def _commit_due(self) -> bool:
        """Without checkpoints: whether the processed offsets are to be committed now."""
        return time.monotonic() - self._last_commit >= self.kafka.commit_interval_ms / 1000.0

    def _confirm_and_commit(self) -> None:
        self._confirm()
        self._commit({})

    def _commit(self, offsets: dict[Partition, int]) -> None:
        """Commit ``offsets`` and any that could not be committed before; never while disconnected.

        A failed commit is kept and retried later (a checkpoint, when on, is authoritative anyway), so a
        broker outage never blocks the loop in commit retries. Call after `_confirm`.
        """
        self._owe(offsets)
        pending = self._pending_commit
        self._last_commit = time.monotonic()
        if self.source is None or not pending or not self.source.connected:
            return
        try:
            self.source.commit(pending)
        except SourceError as exc:
            log.warning("offset commit failed (%s); it is retried with the next batch or checkpoint", exc)
            return
        self._pending_commit = {}

    # -- one batch ---------------------------------------------------------------------------------
    def process_batch(self, records: list[RawRecord]) -> BatchOutcome:
        """Decode and process a poll batch: events first (per partition, in offset order), then labels."""
        outcome = BatchOutcome()
        by_partition: dict[int, list[RawRecord]] = defaultdict(list)
        label_records: list[RawRecord] = []
        for r in records:
            (by_partition[r.partition] if r.topic == self.kafka.events_topic else label_records).append(r)
        limit = self.kafka.max_message_bytes
        recovered: set[int] = set()
        with self._state_lock:
            for partition, recs in by_partition.items():
                if partition in self._fenced:
                    continue
                state = self._state(partition)
                inputs = [_input_record(r, limit) for r in recs]
                result = self._handle(state, recs, inputs)
                if result is None:  # the partition was rewound to its checkpoint: these records come again
                    recovered.add(partition)
                    continue
                outcome.consumed += len(recs)
                outcome.processed += len(result.events)
                outcome.alerts += result.alerts
                outcome.dead_letters += [self._bounded(d) for d in result.dead_letters]
                outcome.event_dead_letters += len(result.dead_letters)
                outcome.drifts += result.drifts
                outcome.latencies += result.latencies
                times = [e.time for e in result.events if e.time is not None]
                if state.newest_event_time is not None:
                    times.append(state.newest_event_time)
                if times:
                    state.newest_event_time = max(times)
                if self.kafka.labels_topic:
                    for event, verdict in zip(result.events, result.verdicts, strict=True):
                        if event.label is None:
                            early = self._join(outcome, state, state.joiner.add, event.id, _slim(verdict))
                            if early is not None:
                                self._to_learn(outcome, state, verdict, early)
                state.offsets[self.kafka.events_topic] = recs[-1].offset + 1
                state.dirty += len(recs)
                self._since_checkpoint += len(recs)
            outcome.label_records = 0
            for r in label_records:
                if self._co_partitioned and r.partition in recovered | self._fenced:
                    continue  # rewound with its events partition (or not ours): it comes again
                outcome.label_records += 1
                self._learn_label(r, outcome)
            for state, labelled in outcome.to_learn.values():
                outcome.drifts += state.processor.learn_many(labelled)
            outcome.to_learn.clear()
        return outcome

    @staticmethod
    def _to_learn(outcome: BatchOutcome, state: PartitionState, verdict: Verdict, label: str) -> None:
        """Keep a joined label for its partition's Processor, which learns the poll batch's labels at once."""
        outcome.to_learn.setdefault(id(state), (state, []))[1].append((verdict, label))

    def _handle(
        self, state: PartitionState, recs: list[RawRecord], inputs: list[InputRecord]
    ) -> BatchResult | None:
        """Run the pipeline; a failure the decoder did not catch is isolated to its record (see below)."""
        careful = state.careful_until is not None and recs[0].offset <= state.careful_until
        if not careful:
            try:
                return state.pipeline.handle(inputs)
            except Exception:
                log.exception("processing a batch of partition %d failed", state.partition)
                return self._recover(state, recs, inputs)
        result = BatchResult()
        for rec in inputs:  # one at a time: the record that fails is dead-lettered, the others are processed
            try:
                one = state.pipeline.handle([rec])
            except Exception as exc:
                log.exception("processing %s[%d]@%d failed", rec.source, rec.partition, rec.offset)
                one = BatchResult(dead_letters=[processing_error(rec, exc)])
            for name in ("events", "verdicts", "alerts", "dead_letters", "drifts", "latencies"):
                getattr(result, name).extend(getattr(one, name))
        if recs[-1].offset >= (state.careful_until or -1):
            state.careful_until = None
        return result

    def _recover(
        self, state: PartitionState, recs: list[RawRecord], inputs: list[InputRecord]
    ) -> BatchResult | None:
        """After an unexpected processing error the partition's model may hold part of the batch.

        With checkpoints: reload the partition from its checkpoint, seek back, and process the records up to
        the failed batch's end one at a time (the failing one is dead-lettered). Without: the batch's records
        go to the dead-letter topic (the model may have learned some of them).
        """
        p = state.partition
        source = self.source
        if self.store is not None and source is not None and state.owned:
            self._drop(p, discard=True)
            fresh = self._acquire(p, state.generation)
            fresh.generation, fresh.careful_until = state.generation, recs[-1].offset
            topics = [self.kafka.events_topic]
            if self._co_partitioned and self.kafka.labels_topic:
                topics.append(self.kafka.labels_topic)
            owned = set(source.assignment())
            for topic in topics:
                if (topic, p) not in owned:
                    continue
                offset = fresh.offsets.get(topic)
                if offset is None:  # no checkpoint yet: back to the group's committed offset
                    offset = source.committed([(topic, p)]).get((topic, p)) or 0
                source.seek(topic, p, offset)
            log.error(
                "partition %d rewound to its checkpoint; replaying up to offset %d one record at a time",
                p,
                recs[-1].offset,
            )
            return None
        return failed_batch(inputs)

    def _learn_label(self, record: RawRecord, outcome: BatchOutcome) -> None:
        home = self.states.get(record.partition) if self._co_partitioned else None
        if home is not None and not home.owned:
            home = None
        if home is not None:
            home.offsets[record.topic] = record.offset + 1
            home.dirty += 1
        else:
            key = (record.topic, record.partition)
            self._loose_label_offsets[key] = max(self._loose_label_offsets.get(key, 0), record.offset + 1)
        self._since_checkpoint += 1
        if record.value is not None and len(record.value) > self.kafka.max_message_bytes:
            exc = DecodeError("oversized", f"{len(record.value)} bytes > max_message_bytes")
            outcome.dead_letters.append(self._bounded(_dead_letter(record, exc)))
            outcome.label_dead_letters += 1
            return
        try:
            event_id, label, _ = self.label_decoder.decode(record.value)
        except DecodeError as exc:
            outcome.dead_letters.append(self._bounded(_dead_letter(record, exc)))
            outcome.label_dead_letters += 1
            return
        target = home
        if home is None or not _pending(home.joiner, event_id):
            holder = next((s for s in self.states.values() if s.owned and _pending(s.joiner, event_id)), None)
            if holder is not None:
                target = holder
            elif any(_joined(s.joiner, event_id) for s in self.states.values()):
                outcome.labels["duplicate"] += 1
                self.label_counts["duplicate"] += 1
                return
        if target is None:
            target = home or next((s for _, s in sorted(self.states.items()) if s.owned), None)
        if target is None:
            outcome.labels["unknown"] += 1  # no partition here to keep it for its event
            self.label_counts["unknown"] += 1
            return
        if target is not home:
            target.dirty += 1
        verdict = self._join(outcome, target, target.joiner.match, event_id, label)
        if verdict is not None:
            self._to_learn(outcome, target, verdict, label)

    def _join(
        self, outcome: BatchOutcome, state: PartitionState, step: Callable[..., Any], *args: Any
    ) -> Any:
        """Run one joiner step (``add`` or ``match``) and add the outcome counts it caused to the batch's."""
        joiner = state.joiner
        before = dict(joiner.counts)
        result = step(*args, now=self._now(state))
        for k, v in joiner.counts.items():
            if v != before[k]:
                outcome.labels[k] += v - before[k]
                self.label_counts[k] += v - before[k]
        return result

    def _now(self, state: PartitionState) -> float:
        if self.config.labels.clock == "event" and state.newest_event_time is not None:
            return state.newest_event_time
        return time.time()

    def _bounded(self, letter: DeadLetter) -> DeadLetter:
        """Cut a dead letter's raw bytes so that its JSON (base64) fits the dead-letter record limit."""
        cap = max(1024, int(self.kafka.max_message_bytes * _DEAD_LETTER_RAW_SHARE))
        if len(letter.raw) <= cap and len(letter.detail) <= 1000:
            return letter
        detail = letter.detail[:1000]
        if len(letter.raw) > cap:
            detail += f" (raw cut to {cap} of {len(letter.raw)} bytes)"
        return DeadLetter(
            letter.reason,
            detail,
            letter.raw[:cap],
            letter.source,
            letter.partition,
            letter.offset,
            letter.row,
        )

    def _deliver(self, outcome: BatchOutcome) -> None:
        """Send the batch's alerts and dead letters and flush the alerts file and the other sinks; the Kafka
        topics' acknowledgements are awaited by `_confirm`, before a commit or checkpoint covers them."""
        alerts = self._alert_sinks
        assert alerts is not None

        def send() -> None:
            for alert in outcome.alerts:
                alerts.send(alert)
            self._send_dead_letters(outcome.dead_letters)
            alerts.flush_others()

        self._until_delivered(send)
        self._unconfirmed_alerts += outcome.alerts
        self._unconfirmed_dead += outcome.dead_letters
        if self._unconfirmed >= MAX_UNCONFIRMED_OUTPUTS:  # bounded, checkpoints on or off
            self._confirm()

    @property
    def _unconfirmed(self) -> int:
        """Alerts and dead letters sent to Kafka and not acknowledged yet."""
        return len(self._unconfirmed_alerts) + len(self._unconfirmed_dead)

    def _send_dead_letters(self, letters: list[DeadLetter]) -> None:
        assert self._dead_sink is not None
        for letter in letters:
            self._dead_sink.send(letter.to_json().encode())

    def _confirm(self, once: bool = False) -> bool:
        """Wait until the Kafka topics acknowledged every alert and dead letter sent so far. After a failed
        delivery every unacknowledged output is sent again (alert ids are deterministic: duplicates can
        be dropped downstream), until the topics take them, or once with ``once`` (inside a rebalance
        callback, which must not block). Returns whether everything is acknowledged."""
        if not self._unconfirmed and not self._resend:
            return True
        if once:
            try:
                self._confirm_attempt()
            except SinkError as exc:
                log.warning("outputs not acknowledged (%s)", exc)
                return False
        else:
            self._until_delivered(self._confirm_attempt)
        self._unconfirmed_alerts, self._unconfirmed_dead = [], []
        return True

    def _confirm_attempt(self) -> None:
        alerts, dead = self._alert_sinks, self._dead_sink
        assert alerts is not None and dead is not None
        if "alerts" in self._resend:
            for alert in self._unconfirmed_alerts:
                alerts.send_to_kafka(alert)
        if "dead" in self._resend:
            self._send_dead_letters(self._unconfirmed_dead)
        self._resend = set()
        errors = []
        for topic, flush in (("alerts", alerts.flush_kafka), ("dead", dead.flush)):
            try:
                flush()
            except SinkError as exc:
                self._resend.add(topic)
                errors.append(exc)
        if errors:
            raise errors[0]

    def _until_delivered(self, attempt: Callable[[], None]) -> None:
        """Run ``attempt`` until no sink raises, backing off between tries."""
        delay = 0.2
        while True:
            try:
                attempt()
                return
            except SinkError as exc:
                self._set_ready(False)
                if self._stop.is_set() and delay > 5:
                    raise
                log.warning("delivery failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _account(self, outcome: BatchOutcome, source: KafkaSource, records: list[RawRecord]) -> None:
        self._dead_letter_watch.observe(outcome.consumed + outcome.label_records, outcome.dead_letters)
        self.consumed += outcome.consumed
        self.labels_consumed += outcome.label_records
        self.processed += outcome.processed
        self.dead_lettered += len(outcome.dead_letters)
        self.event_dead_letters += outcome.event_dead_letters
        self.label_dead_letters += outcome.label_dead_letters
        self.alerts_sent += len(outcome.alerts)
        if self.telemetry is None:
            return
        self.telemetry.record_batch(
            consumed=outcome.consumed,
            label_records=outcome.label_records,
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
        try:
            lags = source.lag()
        except SourceError as exc:
            log.debug("lag unavailable: %s", exc)
            return
        for (topic, partition), lag in lags.items():
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
        from streamimb.service.telemetry import processor_stats

        out = {}
        for partition, state in list(self.states.items()):
            stats = out[partition] = processor_stats(state.processor)
            stats.pending_predictions, stats.early_labels = len(state.joiner), state.joiner.early_labels
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
        served = Counter(
            s.processor.classifier.served
            for s in list(self.states.values())
            if isinstance(s.processor.classifier, Portfolio)
        )
        if served:
            parts.append(
                "model " + " ".join(f"{name}" + (f" x{n}" if n > 1 else "") for name, n in served.items())
            )
        if self._inference is None:
            numeric, categorical = self.schema.numeric, self.schema.categorical
            parts.append(f"schema {len(numeric or [])} numeric, {len(categorical or [])} categorical")
        return ", ".join(parts)

    def totals(self) -> dict[str, Any]:
        """Precision and recall of alerts so far, summed over partitions; mean estimated prevalence."""
        tp = fp = fn = 0
        drifts = 0
        positive = None
        prevalences = []
        for state in list(self.states.values()):
            p = state.processor
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
        """Counts of this run. ``learned``: events learned by this process per partition; ``learned_total``:
        what each model held now has learned in all (restored checkpoints included)."""
        learned = Counter(self._learned_dropped)
        for p, s in list(self.states.items()):
            learned[p] += s.processor.n_learned - s.learned_at_start
        return {
            "consumed": self.consumed,
            "processed": self.processed,
            "labels_consumed": self.labels_consumed,
            "dead_letters": self.dead_lettered,
            "event_dead_letters": self.event_dead_letters,
            "label_dead_letters": self.label_dead_letters,
            "alerts": self.alerts_sent,
            "partitions": sorted(self.states),
            "labels": self.joiner.counts,
            "learned": {p: n for p, n in sorted(learned.items())},
            "learned_total": {p: s.processor.n_learned for p, s in sorted(self.states.items())},
            "restored": dict(self.restored),
            "checkpoints": self.checkpoints_written,
            "checkpoint_failures": self.checkpoint_failures,
        }


def _build_store(config: ServiceConfig) -> FileCheckpointStore | None:
    cp = config.checkpoint
    if cp.directory is None:
        return None
    key = load_key(cp.key, cp.key_file)
    codec = SnapshotCodec(
        key,
        schema=config_hash(config.model, config.event_schema),
        max_bytes=cp.max_bytes,
        chunk_bytes=cp.chunk_bytes,
        compression_level=cp.compression_level,
    )
    return FileCheckpointStore(Path(cp.directory), codec, group=config.kafka.group_id)


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
    )


def _input_record(r: RawRecord, limit: int) -> InputRecord:
    if r.value is None:
        return InputRecord(
            b"", None, DecodeError("malformed_json", "empty record"), r.topic, r.partition, r.offset
        )
    if len(r.value) > limit:
        error = DecodeError("oversized", f"{len(r.value)} bytes > max_message_bytes={limit}")
        return InputRecord(r.value[:1024], None, error, r.topic, r.partition, r.offset)
    # an event without an id is known by where it was read: offsets repeat across partitions
    return InputRecord(
        r.value, None, None, r.topic, r.partition, r.offset, r.key, f"{r.topic}-{r.partition}-{r.offset}"
    )


def _dead_letter(record: RawRecord, exc: DecodeError) -> DeadLetter:
    raw = (record.value or b"")[:1024] if exc.reason == "oversized" else (record.value or b"")
    return DeadLetter(exc.reason, exc.detail, raw, record.topic, record.partition, record.offset)


def _next_offsets(records: list[RawRecord]) -> dict[Partition, int]:
    out: dict[Partition, int] = {}
    for r in records:
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return out
