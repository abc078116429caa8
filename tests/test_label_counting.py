"""Label records have their own counter, and what waits in the label join is visible in /metrics."""

from __future__ import annotations

import json

from streamimb.config import ServiceConfig
from streamimb.io.kafka import RawRecord
from streamimb.labels import LabelJoiner
from streamimb.service.runner import ServiceRunner
from streamimb.service.telemetry import stream_telemetry


class NoLagSource:
    def lag(self):
        return {}


def test_consumed_counts_event_records_and_label_records_have_their_own_series():
    telemetry = stream_telemetry(("0", "1"))
    config = ServiceConfig.model_validate(
        {"schema": {"numeric": ["amount"], "classes": ["0", "1"]}, "kafka": {"labels_topic": "labels"}}
    )
    runner = ServiceRunner(config, telemetry=telemetry)
    telemetry.add_state_source(runner.partition_stats)
    events = [
        RawRecord("events", 0, i, None, json.dumps({"id": f"e{i}", "amount": i}).encode(), 0)
        for i in range(10)
    ]
    events.append(RawRecord("events", 0, 10, None, b"{broken", 0))
    labels = [
        RawRecord("labels", 0, i, None, json.dumps({"id": f"e{i}", "label": "0"}).encode(), 0)
        for i in range(4)
    ]
    labels += [
        RawRecord("labels", 0, 4 + i, None, json.dumps({"id": f"x{i}", "label": "1"}).encode(), 0)
        for i in range(3)
    ]
    labels.append(RawRecord("labels", 0, 7, None, b"[]", 0))
    records = events + labels
    outcome = runner.process_batch(records)
    runner._account(outcome, NoLagSource(), records)

    value = telemetry.registry.get_sample_value
    consumed = value("streamimb_events_consumed_total")
    assert consumed == len(events) == value("streamimb_events_processed_total") + 1  # + the broken record
    assert value("streamimb_label_records_consumed_total") == len(labels)
    assert value("streamimb_labels_total", {"outcome": "joined"}) == 4
    assert value("streamimb_pending_predictions", {"partition": "0"}) == 6
    assert value("streamimb_pending_early_labels", {"partition": "0"}) == 3  # labels for ids not seen yet


def test_a_flood_of_unknown_labels_is_counted_as_evictions():
    joiner: LabelJoiner[str] = LabelJoiner(ttl_seconds=1e9, max_pending=100)
    for i in range(50):
        joiner.add(f"e{i}", "prediction", now=0)
    for i in range(5000):
        joiner.match(f"unknown-{i}", "1", now=1)
    assert joiner.early_labels == 100
    assert joiner.counts["evicted"] == 4900 and joiner.counts["unknown"] == 0
    for i in range(150):
        joiner.add(f"f{i}", "prediction", now=2)
    assert len(joiner) == 100 and joiner.counts["evicted"] == 4900 + 100
