"""One supervised model shared by the Processors of several partitions."""

from __future__ import annotations

import pickle
import random
import zlib

from streamimb.config import ModelConfig
from streamimb.events import Event
from streamimb.model import SupervisedModel
from streamimb.processor import Processor
from streamimb.simulate.cards import CardStream

FEATURES = ("amount", "log_ratio_to_typical", "hour", "foreign", "minutes_since_last", "country", "category")


def card_events(n: int, seed: int = 4) -> list[tuple[str, Event]]:
    """(card, event) pairs of the demo's card simulator, labels with the events."""
    out = []
    for i, (tx, label) in enumerate(CardStream(seed=seed, schedule=[(10**9, 0.02)])):
        if i >= n:
            return out
        features = {k: tx[k] for k in FEATURES}
        out.append((tx["card"], Event(str(i), tx["time"], features, label["label"])))
    return out


def split(pairs: list[tuple[str, Event]], partitions: int, batch: int = 300):
    """Polls of ``batch`` events, each split by card over ``partitions`` (as a keyed topic splits them)."""
    for start in range(0, len(pairs), batch):
        polled = pairs[start : start + batch]
        yield [
            [e for card, e in polled if zlib.crc32(card.encode()) % partitions == p]
            for p in range(partitions)
        ]


def test_every_partition_is_learned_by_one_model_and_scored_by_it():
    config = ModelConfig()
    model = SupervisedModel(config, positive="1", classes=["0", "1"])
    processors = [Processor(config, model=model) for _ in range(4)]
    for poll in split(card_events(4000), 4):
        for processor, events in zip(processors, poll, strict=True):
            processor.process_many(events)
    assert model.n_learned == 4000 == sum(p.n_learned for p in processors)
    assert all(p.classifier is model.classifier and p.positive == "1" for p in processors)
    assert all(0 < p.n_learned < 4000 for p in processors)
    assert model.class_counts["1"] == sum(p.report()["metrics"]["support"] for p in processors)
    # the partitions' metrics are their own; the model's priors and threshold are common
    reports = [p.report() for p in processors]
    assert len({r["labelled"] for r in reports}) > 1 and len({str(r["priors"]) for r in reports}) == 1
    # pickled together, they still share it; pickled alone, a partition takes a copy along
    restored = pickle.loads(pickle.dumps(processors))
    assert len({id(p.model) for p in restored}) == 1


def test_a_model_shared_by_twelve_partitions_finds_what_one_partition_finds():
    pairs = card_events(12_000)
    one = Processor(ModelConfig(), positive="1", classes=["0", "1"])
    model = SupervisedModel(ModelConfig(), positive="1", classes=["0", "1"])
    shared = [Processor(ModelConfig(), model=model) for _ in range(12)]
    alone = [Processor(ModelConfig(), positive="1", classes=["0", "1"]) for _ in range(12)]
    caught = {"one": 0, "shared": 0, "alone": 0}
    for poll in split(pairs, 12):
        for processors, name in ((shared, "shared"), (alone, "alone")):
            for processor, events in zip(processors, poll, strict=True):
                verdicts, _ = processor.process_many(events)
                caught[name] += sum(v.alert and e.label == "1" for v, e in zip(verdicts, events, strict=True))
    verdicts, _ = one.process_many([e for _, e in pairs])
    caught["one"] = sum(v.alert and e.label == "1" for v, (_, e) in zip(verdicts, pairs, strict=True))
    assert caught["shared"] >= 0.8 * caught["one"] > 0
    assert caught["shared"] > 2 * caught["alone"]  # twelve models, each with a twelfth of the frauds


def test_the_alert_rate_cap_counts_each_partitions_alerts_in_its_own_positions():
    config = ModelConfig(alerts={"max_rate": 0.01, "per_events": 1000, "per_prevalence": None})
    model = SupervisedModel(config, positive="1", classes=["0", "1"])
    a, b = Processor(config, model=model), Processor(config, model=model)
    rng = random.Random(1)
    for i in range(6000):
        y = "1" if rng.random() < 0.05 else "0"
        event = Event(str(i), float(i), {"x": rng.gauss(3.0 if y == "1" else 0.0, 1.0)}, y)
        (a if i % 2 else b).process_many([event])
    assert model.guard.skilled
    assert a.recent_alerts is not b.recent_alerts and len(a.recent_alerts) <= model.guard.cap
    assert a.recent_alerts and b.recent_alerts


def test_a_checkpoint_from_before_the_model_had_its_own_object_restores():
    events = [e for _, e in card_events(3000)]
    p = Processor(ModelConfig(), positive="1", classes=["0", "1"])
    p.process_many(events[:2000])
    old = pickle.loads(pickle.dumps(p))
    state = dict(old.__dict__)
    model = state.pop("model")
    state.pop("recent_alerts")
    state.update({k: v for k, v in model.__dict__.items() if k not in ("config", "version", "n_learned")})
    legacy = Processor.__new__(Processor)
    legacy.__setstate__(state)
    expected = [(v.proba, v.alert) for v in p.process_many(events[2000:])[0]]
    assert [(v.proba, v.alert) for v in legacy.process_many(events[2000:])[0]] == expected
    assert legacy.model.n_learned == p.model.n_learned and legacy.report() == p.report()
