"""The Kafka service loop: poll -> decode -> process -> sinks -> checkpoint -> commit.

:class:`ServiceRunner` composes the parts, one module each:

* :mod:`streamimb.service.partitions` -- partition ownership: each events partition's state (a Processor, a
  LabelJoiner, the offsets both cover), acquired on assignment (from its checkpoint), dropped, fenced;
* :mod:`streamimb.service.joining` -- the label join, co-partitioned with the events;
* :mod:`streamimb.service.delivery` -- alerts and dead letters sent with their batch and acknowledged before a
  commit or checkpoint covers them; the offsets owed to the group;
* :mod:`streamimb.service.checkpoints` -- the consistency point with checkpoints on;
* :mod:`streamimb.service.batch` -- what a batch did, and the record-level conversions.

The consistency point, with ``checkpoint.directory`` set: every batch's outputs are acknowledged first; every
``checkpoint.every_events`` records or ``checkpoint.every_seconds``, on partition revoke and at shutdown, each
changed partition's state is written with the next offsets it covers, and only then are those offsets
committed. After a crash at any moment every event is learned exactly once. Alerts are at-least-once: events
after the last checkpoint are scored again and raise the same alerts with the same ``alert_id``.

Without a checkpoint directory the state lives in memory only, offsets are committed every
``kafka.commit_interval_ms`` (0: after every batch), when idle, on partition revoke and at shutdown, and a
restart begins with fresh models (and scores again what came after the last commit).

Bad input never stops the loop: every record that cannot be decoded or processed goes to the dead-letter
topic with its reason, so ``consumed == processed + dead-lettered`` for events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from streamimb import __version__
from streamimb.classifiers.portfolio import Portfolio
from streamimb.config import EventSchema, ServiceConfig
from streamimb.dead_letter_watch import DeadLetterWatch
from streamimb.decoding import EventDecoder, GuardedDecoder, describe_schema, service_schema
from streamimb.errors import BrokerAuthError, SourceError
from streamimb.events import Verdict
from streamimb.io.files import JsonlSink
from streamimb.io.interfaces import EventSource, Partition, RawRecord
from streamimb.io.kafka import KafkaSink, topic_partitions
from streamimb.io.sources import open_source
from streamimb.labels import LabelJoiner
from streamimb.pipeline import BatchResult, InputRecord, Pipeline, failed_batch, processing_error
from streamimb.processor import Processor
from streamimb.runtime import prepare_gc_for_streaming
from streamimb.service.batch import BatchOutcome, bounded, input_record, next_offsets
from streamimb.service.checkpoints import Checkpoints, build_store
from streamimb.service.delivery import AlertSinks, OffsetCommits, Outputs
from streamimb.service.inference import SchemaInference
from streamimb.service.joining import JoinerView, LabelDecoder, LabelJoin
from streamimb.service.partitions import PartitionOwnership, PartitionState
from streamimb.service.state import FileCheckpointStore

__all__ = ["AlertSinks", "BatchOutcome", "JoinerView", "LabelDecoder", "PartitionState", "ServiceRunner"]

log = logging.getLogger(__name__)


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
        self.source: EventSource | None = None
        self._stop = threading.Event()
        self._dead_letter_watch = DeadLetterWatch()
        store = build_store(config)
        self.partitions = PartitionOwnership(
            self.kafka, store, self._new_state, config.checkpoint.on_invalid, telemetry
        )
        self.outputs = Outputs(self._stop.is_set, self._set_ready)
        self.commits = OffsetCommits(lambda: self.source, self.kafka.commit_interval_ms)
        self.checkpoints = Checkpoints(
            config.checkpoint,
            self.kafka.events_topic,
            store,
            self.partitions,
            self.outputs,
            self.commits,
            telemetry,
        )
        self.labels = LabelJoin(
            config.labels, self.schema, self.kafka.max_message_bytes, self.partitions, self.checkpoints
        )
        self.consumed = 0
        self.labels_consumed = 0
        self.processed = 0
        self.dead_lettered = 0
        self.event_dead_letters = 0
        self.label_dead_letters = 0
        self.alerts_sent = 0

    # -- the parts' state, as the tests, the demo and the telemetry read it ----------------------------
    @property
    def states(self) -> dict[int, PartitionState]:
        """The state of every partition held now."""
        return self.partitions.states

    @property
    def store(self) -> FileCheckpointStore | None:
        return self.checkpoints.store

    @property
    def restored(self) -> dict[int, int]:
        return self.partitions.restored

    @property
    def checkpoints_written(self) -> int:
        return self.checkpoints.written

    @property
    def checkpoint_failures(self) -> int:
        return self.checkpoints.failures

    @property
    def checkpoint_seconds(self) -> float:
        return self.checkpoints.seconds

    @property
    def checkpoint_bytes(self) -> dict[int, int]:
        return self.checkpoints.bytes

    @property
    def label_counts(self) -> Counter[str]:
        return self.labels.counts

    @property
    def label_decoder(self) -> LabelDecoder:
        return self.labels.decoder

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
        return JoinerView(self.states, self.labels.counts)

    def pipeline(self, partition: int) -> Pipeline:
        return self.partitions.state(partition).pipeline

    def _new_state(self, partition: int, snapshot: dict[str, Any] | None = None) -> PartitionState:
        """A partition's state: fresh, or restored from a checkpoint's ``snapshot``."""
        schema = None if self._inference is not None else self.schema
        if snapshot is not None and snapshot.get("schema") is not None:
            schema = snapshot["schema"]  # the columns its model was trained on
            if self._inference is not None:
                self._inference.settle(schema)
        decoder = GuardedDecoder(EventDecoder(schema or self.schema, require_label=False))
        if snapshot is None:
            processor = self._new_processor()
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

    def _new_processor(self) -> Processor:
        """A fresh partition's Processor: the one place the service builds one."""
        # The service reports rolling metrics only: a per-event history would grow state without bound.
        model = self.config.model
        model = model.model_copy(
            update={"evaluation": model.evaluation.model_copy(update={"keep_history": False})}
        )
        return Processor(
            model,
            positive=self.schema.positive_class,
            classes=self.schema.classes,
            max_categories=self.schema.max_categories,
            entities=self.schema.entities,
        )

    def _adopt(self, schema: EventSchema) -> None:
        """Use an inferred (or restored) schema from now on, for the states that waited for it too."""
        self.schema = service_schema(schema)
        self.labels.decoder = LabelDecoder(self.schema)
        inference, self._inference = self._inference, None
        if inference is not None and inference.sampled:
            log.info("schema inferred from %d records: %s", inference.sampled, describe_schema(self.schema))
        for state in list(self.states.values()):
            if state.schema is None:
                state.schema = self.schema
                state.pipeline.decoder = GuardedDecoder(EventDecoder(self.schema, require_label=False))

    def run(self) -> dict[str, Any]:
        """The main loop; returns a summary of what it did."""
        cfg = self.config
        topics = [self.kafka.events_topic] + ([self.kafka.labels_topic] if self.kafka.labels_topic else [])
        self._check_broker()
        file_sink = JsonlSink(cfg.alerts_file.path) if cfg.alerts_file.path else None
        alerts = AlertSinks(KafkaSink(self.kafka, self.kafka.alerts_topic), file_sink, self.extra_sinks)
        dead = KafkaSink(self.kafka, self.kafka.dead_letter_topic)
        self.outputs.alert_sinks, self.outputs.dead_sink = alerts, dead
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
                self._set_ready(connected and not self.checkpoints.failing())
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
                    self.checkpoints.maybe()
                    if (self.commits.pending or self.outputs.unconfirmed) and connected:
                        self._confirm_and_commit()
                    if not connected or self.partitions.rebalancing or not source.assignment():
                        idle_since = time.monotonic()  # a broker outage or a rebalance is not idleness
                    elif idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                        log.info("idle for %.1fs: stopping", idle_timeout)
                        break
                    continue
                idle_since = time.monotonic()
                self.checkpoints.allowed = False  # until this batch's outputs are delivered
                outcome = self.process_batch(records)
                self.outputs.deliver(outcome.alerts, outcome.dead_letters)
                self.checkpoints.allowed = True
                if self.store is None:
                    self.commits.owe(next_offsets(records))
                    if self.commits.due():
                        self._confirm_and_commit()
                else:
                    self.checkpoints.maybe()
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
            self.checkpoints.allowed = (
                completed  # after a failure, revoke must not checkpoint undelivered work
            )
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
            self.labels.co_partitioned = False
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
        self.commits.keep(set(partitions))
        self.partitions.assign(partitions, self.source)

    def _on_revoke(self, partitions: list[Partition]) -> None:
        self._release(partitions, commit=True)

    def _on_lost(self, partitions: list[Partition]) -> None:
        self._release(
            partitions, commit=False
        )  # no longer a member: a commit would fail; fencing guards files

    def _release(self, partitions: list[Partition], commit: bool) -> None:
        """The consistency point for partitions about to move: outputs acknowledged (one try: a callback must
        not block), processed offsets committed, changed states checkpointed."""
        self.partitions.rebalancing = True
        if self._inference is not None:
            self._inference.forget(partitions)  # held back, never processed: the next owner reads them
        events = {p for t, p in partitions if t == self.kafka.events_topic}
        with self.partitions.lock:
            if self.checkpoints.allowed and self.outputs.confirm(once=True):
                if commit and self.store is None:  # what was processed, before the partitions move
                    self.commits.commit({})
                self.checkpoints.write("revoke", partitions=events, commit=commit)
            elif self.checkpoints.allowed:
                log.warning("revoke: the released partitions resume from their last commit or checkpoint")
            self.commits.forget(partitions)  # no longer ours: a late commit could rewind the next owner
            self.partitions.disown(events)

    # -- checkpoints and commits -----------------------------------------------------------------------
    def checkpoint(
        self, reason: str = "manual", partitions: Iterable[int] | None = None, commit: bool = True
    ) -> int:
        """Write the changed states (all, or ``partitions``), then commit the offsets they cover.

        Call only between batches, after the sinks were flushed. Returns the number of files written.
        """
        return self.checkpoints.write(reason, partitions, commit)

    def _confirm_and_commit(self) -> None:
        self.outputs.confirm()
        self.commits.commit({})

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
        partitions = self.partitions
        with partitions.lock:
            for partition, recs in by_partition.items():
                if partition in partitions.fenced:
                    continue
                state = partitions.state(partition)
                inputs = [input_record(r, limit) for r in recs]
                result = self._handle(state, recs, inputs)
                if result is None:  # the partition was rewound to its checkpoint: these records come again
                    recovered.add(partition)
                    continue
                outcome.consumed += len(recs)
                outcome.processed += len(result.events)
                outcome.alerts += result.alerts
                outcome.dead_letters += [bounded(d, limit) for d in result.dead_letters]
                outcome.event_dead_letters += len(result.dead_letters)
                outcome.drifts += result.drifts
                outcome.latencies += result.latencies
                times = [e.time for e in result.events if e.time is not None]
                if state.newest_event_time is not None:
                    times.append(state.newest_event_time)
                if times:
                    state.newest_event_time = max(times)
                if self.kafka.labels_topic:
                    self.labels.expect(outcome, state, result.events, result.verdicts)
                state.offsets[self.kafka.events_topic] = recs[-1].offset + 1
                state.dirty += len(recs)
                self.checkpoints.since += len(recs)
            self.labels.take(label_records, outcome, recovered | partitions.fenced)
            self.labels.learn(outcome)
        return outcome

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
        source = self.source
        if self.store is not None and source is not None and state.owned:
            topics = [self.kafka.events_topic]
            if self.labels.co_partitioned and self.kafka.labels_topic:
                topics.append(self.kafka.labels_topic)
            self.partitions.rewind(state, recs[-1].offset, source, topics)
            return None
        return failed_batch(inputs)

    def _account(self, outcome: BatchOutcome, source: EventSource, records: list[RawRecord]) -> None:
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
            "learned": self.partitions.learned(),
            "learned_total": {p: s.processor.n_learned for p, s in sorted(self.states.items())},
            "restored": dict(self.restored),
            "checkpoints": self.checkpoints_written,
            "checkpoint_failures": self.checkpoint_failures,
        }
