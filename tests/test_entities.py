"""Entity features: point-in-time correct, bounded, checkpointed, the same in batches and event by event."""

from __future__ import annotations

import json
import math
import pickle
import random

import pytest

from streamimb.config import EventSchema, ModelConfig
from streamimb.decoding import EventDecoder
from streamimb.entities import EntityFeatures
from streamimb.events import Event
from streamimb.processor import Processor

HOUR = 3_600.0


def transactions(n: int, seed: int = 7, cards: int = 40) -> list[Event]:
    """Raw card transactions: card, merchant, amount, country; about 5% fraud, in bursts on a card."""
    rng = random.Random(seed)
    events, t = [], 0.0
    for i in range(n):
        t += rng.expovariate(1 / 120.0)
        card = f"c{rng.randrange(cards)}"
        fraud = rng.random() < 0.05
        features = {
            "card": card,
            "merchant": f"m{rng.randrange(15)}",
            "amount": round(rng.lognormvariate(5.0 if fraud else 3.0, 0.5), 2),
            "country": "XX" if fraud and rng.random() < 0.7 else rng.choice(["FR", "FR", "DE"]),
        }
        events.append(Event(str(i), t, features, "1" if fraud else "0"))
    return events


def entity_part(x: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in x.items() if ":" in k}


def test_features_come_from_earlier_events_only():
    events = transactions(400)
    streamed = EntityFeatures(["card", "merchant"])
    got = [streamed.transform(e.features, e.time) for e in events]
    for i in (0, 1, 57, 250, 399):
        fresh = EntityFeatures(["card", "merchant"])
        for e in events[:i]:
            fresh.transform(e.features, e.time)
        assert fresh.transform(events[i].features, events[i].time) == got[i]
    # a card's first event knows nothing of it; its second knows exactly the first
    first = next(i for i, e in enumerate(events) if e.features["card"] == "c3")
    second = next(i for i, e in enumerate(events) if e.features["card"] == "c3" and i > first)
    assert got[first]["card:first_seen"] == 1.0 and "card:mean_amount_1h" not in got[first]
    assert got[second]["card:mean_amount_30d"] == events[first].features["amount"]
    gap = events[second].time - events[first].time
    assert math.isclose(got[second]["card:count_1h"], math.exp(-gap / HOUR))
    assert math.isclose(got[second]["card:log_since_last"], math.log1p(gap))


def test_the_processor_gives_the_streamed_features_in_any_batching_and_after_a_checkpoint():
    events = [Event(e.id, e.time, e.features, None) for e in transactions(1500)]
    reference = EntityFeatures(["card"])
    expected = [reference.transform(e.features, e.time) for e in events]
    p = Processor(ModelConfig(), positive="1", classes=["0", "1"], entities=["card"])
    got = []
    for start, end in ((0, 1), (1, 300), (300, 301), (301, 900)):
        got += [entity_part(v.x) for v in p.process_many(events[start:end])[0]]
    p = pickle.loads(pickle.dumps(p))
    got += [entity_part(v.x) for v in p.process_many(events[900:])[0]]
    assert got == expected
    assert not any(k in v.x for k in ("card", "card=c1") for v in p.process_many(events[:5])[0])


def test_risk_counts_a_label_only_once_the_gap_has_passed_and_future_labels_change_nothing():
    events = transactions(3000, cards=10)
    day = 86_400.0

    def risks(labels: list[str], gap: float) -> list[float | None]:
        p = Processor(
            ModelConfig(features={"risk_gap": gap}), positive="1", classes=["0", "1"], entities=["card"]
        )
        out = []
        for start in range(0, len(events), 200):
            batch = [Event(e.id, e.time, e.features, y) for e, y in zip(events, labels, strict=True)]
            out += [v.x.get("card:risk_30d") for v in p.process_many(batch[start : start + 200])[0]]
        return out

    labels = [e.label for e in events]
    base = risks(labels, gap=0.5 * day)
    assert any(r is not None and r > 0 for r in base) and base[0] is None
    # permuting the labels of the last half-day before event k cannot change event k's risk
    k = 2500
    recent = [i for i, e in enumerate(events) if events[k].time - 0.5 * day < e.time < events[k].time]
    shuffled = list(labels)
    values = [shuffled[i] for i in recent]
    random.Random(3).shuffle(values)
    for i, y in zip(recent, values, strict=True):
        shuffled[i] = y
    assert risks(shuffled, gap=0.5 * day)[: k + 1] == base[: k + 1]
    # and with no gap the same permutation is seen (the labels counted as soon as they are learned)
    assert risks(shuffled, gap=0.0)[: k + 1] != risks(labels, gap=0.0)[: k + 1]


def test_keys_are_bounded_least_recently_seen_first():
    fx = EntityFeatures(["card"], max_keys=3)
    for i, card in enumerate(["a", "b", "c", "a", "d"]):
        fx.transform({"card": card, "amount": 1.0}, float(i))
    assert list(fx._state["card"]) == ["c", "a", "d"] and fx.evicted == 1
    assert fx.transform({"card": "b", "amount": 1.0}, 9.0)["card:first_seen"] == 1.0  # forgotten


def test_schema_entities_are_read_as_strings_and_are_not_features():
    schema = EventSchema(id="id", time="time", entities=["card"], numeric=["amount"])
    decoder = EventDecoder(schema)
    event = decoder.decode_json(json.dumps({"id": "a", "time": 5.0, "card": 1234, "amount": 3.0}).encode())
    assert event.features == {"amount": 3.0, "card": "1234"}
    p = Processor(ModelConfig(), positive="1", classes=["0", "1"], entities=schema.entities)
    verdict, _ = p.process_one(event)
    assert "amount" in verdict.x and not any(k.startswith("card=") or k == "card" for k in verdict.x)
    assert verdict.keys == {"card": "1234"} and verdict.x["card:first_seen"] == 1.0


def test_a_field_missing_from_the_first_events_is_aggregated_once_it_has_values():
    fx = EntityFeatures(["card"])
    fx.transform({"card": "a", "amount": None, "country": None}, 0.0)  # a decoded event with gaps
    fx.transform({"card": "a", "amount": 10.0, "country": "FR"}, 60.0)
    x = fx.transform({"card": "a", "amount": 30.0, "country": "US"}, 120.0)
    assert fx.numeric == ["amount"] and fx.categorical == ["country"]
    assert x["card:mean_amount_30d"] == pytest.approx(10.0 / 2, rel=1e-4)  # the first counts, with no amount
    assert x["card:amount_log_ratio"] == math.log(30.0 / 10.0) and x["card:new_country"] == 1.0
    assert x["card:distinct_country"] == 1.0
