"""`streamimb replay`: run a CSV or JSONL file through exactly the code the Kafka service runs."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import river

from streamimb import __version__
from streamimb.config import EventSchema, ServiceConfig
from streamimb.dead_letter_watch import DeadLetterWatch
from streamimb.decoding import (
    LABEL_CANDIDATES,
    EventDecoder,
    GuardedDecoder,
    describe_schema,
    infer_schema,
    service_schema,
)
from streamimb.events import DeadLetter
from streamimb.io.files import FileRecord, JsonlSink, parsed, read_records
from streamimb.pipeline import BatchResult, InputRecord, Pipeline
from streamimb.processor import Processor
from streamimb.runtime import prepare_gc_for_streaming
from streamimb.service.telemetry import Telemetry, processor_stats

log = logging.getLogger(__name__)

BATCH_SIZE = 500
SAMPLE_ROWS = 5000
MAX_DEAD_LETTERS_LISTED = 1000


def resolve_schema(
    schema: EventSchema, records: Callable[[], Iterable[FileRecord]], label: str | None
) -> EventSchema:
    """Complete a schema from the data: columns from a sample, the positive class from all labels."""
    if label is not None:
        schema = schema.model_copy(update={"label": label})
    sample = [r for r in map(parsed, islice(records(), SAMPLE_ROWS)) if r is not None]
    if schema.numeric is None and schema.categorical is None:
        schema = infer_schema(sample, schema, max_categories=schema.max_categories)
    elif schema.label is None:
        found = next((c for c in LABEL_CANDIDATES if sample and c in sample[0]), None)
        schema = schema.model_copy(update={"label": found})
    if schema.label is not None and schema.positive_class is None:
        counts: Counter[str] = Counter()
        for r in map(parsed, records()):
            if r is not None and r.get(schema.label) not in (None, ""):
                value = str(r[schema.label]).strip()
                counts[schema.label_map.get(value, value)] += 1
        if len(counts) >= 2:
            rarest = min(counts, key=lambda c: (counts[c], c))
            schema = schema.model_copy(update={"positive_class": rarest})
    return schema


class ReplaySummary:
    """Accumulates batch results into the report."""

    def __init__(self) -> None:
        self.events = 0
        self.alerts = 0
        self.alerts_by_rule: Counter[str] = Counter()
        self.dead_letters: list[DeadLetter] = []
        self.dead_letter_reasons: Counter[str] = Counter()
        self.n_dead = 0
        self.latency_total = 0.0

    def add(self, result: BatchResult) -> None:
        self.events += len(result.events)
        self.alerts += len(result.alerts)
        self.alerts_by_rule.update(a.rule for a in result.alerts)
        self.n_dead += len(result.dead_letters)
        self.dead_letter_reasons.update(d.reason for d in result.dead_letters)
        room = MAX_DEAD_LETTERS_LISTED - len(self.dead_letters)
        self.dead_letters.extend(result.dead_letters[: max(room, 0)])
        self.latency_total += sum(result.latencies)


def replay(
    path: str | Path | None,
    config: ServiceConfig,
    label: str | None = None,
    alerts_path: str | Path | None = None,
    records: Iterable[FileRecord] | None = None,
    progress: bool = True,
    on_batch: Callable[[Pipeline, BatchResult], None] | None = None,
    telemetry: Telemetry | None = None,
) -> dict[str, Any]:
    """Replay a file (or ``records``) through a fresh Processor; returns the JSON-ready report.

    Records are decoded and guarded as the service does (same limits, same dead-letter reasons), and a
    batch that fails in processing is dead-lettered, as in a service without checkpoints. With
    ``telemetry`` its instruments count what the service's would (served by ``streamimb replay
    --metrics-address``).
    """
    if records is None:
        if path is None:
            raise ValueError("replay needs a path or records")
        src = config.source

        def records_factory() -> Iterator[FileRecord]:
            return read_records(path, src.format, src.delimiter, src.max_record_bytes)
    else:
        materialised = list(records)

        def records_factory() -> Iterator[FileRecord]:
            return iter(materialised)

    schema = service_schema(resolve_schema(config.event_schema, records_factory, label))
    processor = Processor(
        config.model,
        positive=schema.positive_class,
        classes=schema.classes,
        max_categories=schema.max_categories,
        entities=schema.entities,
    )
    decoder = GuardedDecoder(EventDecoder(schema))  # a row without a label is scored, as in the service
    pipeline = Pipeline(processor, decoder, model_version=f"streamimb-{__version__}")
    log.info("schema: %s", describe_schema(schema))
    if telemetry is not None:
        telemetry.add_state_source(lambda: {0: processor_stats(processor)})
        telemetry.set_ready(True)
    watch = DeadLetterWatch()
    sink = JsonlSink(alerts_path) if alerts_path else None
    source_name = Path(path).name if path is not None else "memory"
    summary = ReplaySummary()
    bar = _progress_bar(progress, path)
    prepare_gc_for_streaming()
    started = time.perf_counter()
    try:
        for batch in _batches(records_factory(), BATCH_SIZE):
            inputs = [InputRecord(r.raw, r.record, r.error, source_name, 0, r.row) for r in batch]
            result = pipeline.handle_or_dead_letter(inputs)
            summary.add(result)
            watch.observe(len(batch), result.dead_letters)
            if telemetry is not None:
                record_result(telemetry, len(batch), result)
            if sink is not None:
                for alert in result.alerts:
                    sink.send(alert.to_json())
            if on_batch is not None:
                on_batch(pipeline, result)
            if bar is not None:
                bar.update(len(batch))
        if sink is not None:
            sink.flush()
    finally:
        if sink is not None:
            sink.close()
        if bar is not None:
            bar.close()
        if telemetry is not None:
            telemetry.set_ready(False)
    elapsed = time.perf_counter() - started
    return build_report(processor, summary, schema, elapsed, source_name)


def build_report(
    processor: Processor, summary: ReplaySummary, schema: EventSchema, elapsed: float, source: str
) -> dict[str, Any]:
    evaluation = processor.report(n_events=processor.n_events)
    consumed = summary.events + summary.n_dead
    return {
        "source": source,
        "streamimb_version": __version__,
        "river_version": river.__version__,
        "events": summary.events,
        "consumed": consumed,
        "labelled": evaluation.pop("labelled"),
        "alerts": summary.alerts,
        "alerts_by_rule": dict(summary.alerts_by_rule),
        "dead_letters": summary.n_dead,
        "dead_letter_reasons": dict(summary.dead_letter_reasons),
        "dead_letter_rows": [
            {"row": d.row, "reason": d.reason, "detail": d.detail} for d in summary.dead_letters
        ],
        "drifts": [d.to_dict() for d in processor.drifts],
        "elapsed_seconds": elapsed,
        "throughput_eps": consumed / elapsed if elapsed > 0 else 0.0,
        "schema": {
            "label": schema.label,
            "id": schema.id,
            "time": schema.time,
            "numeric": schema.numeric,
            "categorical": schema.categorical,
            "dropped": schema.drop,
            "positive_class": schema.positive_class,
        },
        **evaluation,
    }


def record_result(telemetry: Telemetry, records: int, result: BatchResult) -> None:
    """Count one replayed batch in the service's instruments."""
    telemetry.record_batch(
        consumed=records,
        processed=len(result.events),
        latencies_seconds=result.latencies,
        dead_letters=result.dead_letter_counts(),
        alerts=result.alert_counts(),
        drifts=result.drift_counts(),
    )


def _batches(records: Iterable[FileRecord], size: int) -> Iterator[list[FileRecord]]:
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


def _progress_bar(enabled: bool, path: str | Path | None) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(desc=f"replay {Path(path).name if path else ''}", unit=" events", file=sys.stderr)


def format_summary(report: dict[str, Any]) -> str:
    """A fixed-width summary table for the terminal."""
    m = report.get("metrics", {})
    s = report["schema"]
    lines = [
        f"source            {report['source']}",
        f"schema            label {s['label']!r}, event time {s['time']!r}, {len(s['numeric'] or [])} "
        f"numeric, {len(s['categorical'] or [])} categorical, left out {s['dropped']}",
        f"events            {report['events']:,} processed, {report['dead_letters']:,} dead letters "
        f"({', '.join(f'{k} {v}' for k, v in report['dead_letter_reasons'].items()) or 'none'})",
        f"labelled          {report['labelled']:,}  positive class {report.get('positive_class')!r}",
        f"alerts            {report['alerts']:,}  {report['alerts_by_rule']}",
        f"drifts            {len(report['drifts'])}  {dict(Counter(d['signal'] for d in report['drifts']))}",
        f"throughput        {report['throughput_eps']:,.0f} events/s",
        f"strategy          {report.get('strategy')} / threshold {report.get('threshold_policy')}",
    ]
    model = report.get("model")
    if model:
        ranked = sorted(model["candidates"].items(), key=lambda kv: -(kv[1]["pr_auc"] or 0.0))
        lines.append(
            f"served model      {model['served']}  ({len(model['switches'])} switches; rolling PR AUC "
            + ", ".join(f"{name} {_fmt(s['pr_auc'])}" for name, s in ranked)
            + ")"
        )
    if m:
        lines.append("")
        lines.append(
            f"{'metric':<18}{'overall':>9}  "
            + " ".join(f"{'s' + str(s['segment']):>6}" for s in report["segments"])
        )
        for key in (
            "prevalence",
            "precision",
            "recall",
            "f1",
            "kappa",
            "gmean",
            "balanced_accuracy",
            "roc_auc",
            "pr_auc",
        ):
            if key not in m:
                continue
            row = f"{key:<18}{_fmt(m.get(key)):>9}  "
            row += " ".join(f"{_fmt(s.get(key)):>6}" for s in report["segments"])
            lines.append(row)
        cm = m.get("confusion_matrix")
        if cm:
            lines.append(
                f"confusion matrix  [[tn {cm[0][0]}, fp {cm[0][1]}], [fn {cm[1][0]}, tp {cm[1][1]}]]"
            )
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
