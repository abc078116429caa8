"""Label values stay bounded: thousands of distinct labels leave a bounded model state and /metrics."""

from __future__ import annotations

import logging
import pickle
import random

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamimb.config import ModelConfig
from streamimb.events import Event
from streamimb.model import OTHER_CLASS
from streamimb.processor import Processor
from streamimb.service.telemetry import ProcessorStats, Telemetry

N_LABELS = 5000


def events(n: int, labels, seed: int = 0) -> list[Event]:
    rng = random.Random(seed)
    return [Event(str(i), None, {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}, labels(i)) for i in range(n)]


def series_per_family(telemetry: Telemetry) -> dict[str, list[dict[str, str]]]:
    text = generate_latest(telemetry.registry).decode()
    return {f.name: [s.labels for s in f.samples] for f in text_string_to_metric_families(text)}


def test_thousands_of_distinct_labels_fold_into_other(caplog):
    caplog.set_level(logging.WARNING, logger="streamimb.processor")
    cap = ModelConfig().max_classes
    p = Processor()  # defaults, no classes known: the case that exported one series per label value
    for k in range(0, N_LABELS, 500):
        p.process_many(events(N_LABELS, lambda i: f"c{i}")[k : k + 500])
    assert p.n_learned == N_LABELS
    assert len(p.classes) == cap + 1 and p.classes[-1] == OTHER_CLASS
    assert p.class_counts[OTHER_CLASS] == N_LABELS - cap
    assert len(p.priors.priors()) == cap + 1
    stats = p.stats()
    assert len(stats["prevalence_estimate"]) == len(stats["observed_prevalence"]) == cap + 1
    assert len(p.report()["classes"]) == cap + 1
    assert ["max_classes" in r.getMessage() for r in caplog.records].count(True) == 1  # warned once

    telemetry = Telemetry(CollectorRegistry())
    telemetry.add_state_source(lambda: {0: ProcessorStats.from_stats(p.stats())})
    families = series_per_family(telemetry)
    for name in ("streamimb_prevalence_estimate", "streamimb_observed_prevalence"):
        classes = [labels["class"] for labels in families[name]]
        assert len(classes) == cap + 1 and OTHER_CLASS in classes, name
    assert sum(len(samples) for samples in families.values()) < 300


def test_the_model_state_does_not_grow_with_the_number_of_label_values():
    def state_bytes(labels) -> int:
        p = Processor(ModelConfig(evaluation={"keep_history": False}))  # as the service runs it
        for k in range(0, N_LABELS, 500):
            p.process_many(events(N_LABELS, labels)[k : k + 500])
        return len(pickle.dumps(p))

    bounded = state_bytes(lambda i: f"c{i % 33}")  # 33 label values
    distinct = state_bytes(lambda i: f"c{i}")  # 5,000
    assert distinct < 1.5 * bounded, (distinct, bounded)


def test_folding_applies_to_every_way_labels_come_in():
    config = ModelConfig(max_classes=3, batch=False)
    p = Processor(config, positive="rare", classes=["a", "b"])
    p.process_one(Event("1", None, {"x": 1.0}, label="c"))  # fills the third place
    p.process_one(Event("2", None, {"x": 1.0}, label="d"))
    late, _ = p.process_one(Event("3", None, {"x": 2.0}))
    p.learn_one(late, "e")
    p.learn_many([(p.process_one(Event("4", None, {"x": 0.0}))[0], "f")])
    p.process_one(Event("5", None, {"x": 1.0}, label="rare"))  # the positive class always has its place
    assert p.classes == ["a", "b", "c", OTHER_CLASS, "rare"]
    assert p.class_counts == {"c": 1, OTHER_CLASS: 3, "rare": 1}

    batch = Processor(ModelConfig(max_classes=3), positive="rare", classes=["a", "b"])
    batch.process_many([Event(str(i), None, {"x": float(i)}, label=y) for i, y in enumerate("cdefab")])
    assert batch.class_counts == {"c": 1, OTHER_CLASS: 3, "a": 1, "b": 1}


def test_metric_label_sets_are_capped_across_partitions():
    """Partitions fold their own classes; the union over partitions is capped again at scrape time."""
    telemetry = Telemetry(CollectorRegistry(), max_label_values=8)

    def stats(offset: int) -> ProcessorStats:
        prevalence = {f"c{offset + i}": (i + 1) / 210 for i in range(20)}
        return ProcessorStats(10, prevalence_estimate=prevalence, observed_prevalence=prevalence)

    telemetry.add_state_source(lambda: {0: stats(0), 1: stats(100)})
    values = {
        s.labels["class"]: s.value
        for f in text_string_to_metric_families(generate_latest(telemetry.registry).decode())
        if f.name == "streamimb_prevalence_estimate"
        for s in f.samples
    }
    assert len(values) == 8 and OTHER_CLASS in values
    # what was folded is in `other` (each class is averaged over the partitions that have it: 2 x 1.0 here)
    assert abs(sum(values.values()) - 2.0) < 1e-9
